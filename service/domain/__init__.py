"""The service layer: what people can ask of itsm-sync, once, for every front end.

Keyword-only functions per domain (:mod:`.incidents`, :mod:`.parked`, :mod:`.postmortems`)
take a session (or the engine, where they open their own scopes) and return plain data; the
CLI, the JSON API and the console all call them. They raise :class:`.errors.ServiceError`
subclasses that name the field and the reason, which each front end turns into its own kind
of answer (an HTTP status, an exit code). Who may do what is decided in :mod:`.roles`.
"""
