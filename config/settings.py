"""Typed settings (pydantic-settings).

Settings are passed in, never read at import time: call :func:`get_settings` (cached) or
:func:`load_settings` (explicit file) from the composition root. Secrets are ``SecretStr`` so
they never show up in reprs, logs or error messages.

Precedence, highest first: init arguments, environment (``ITSM_SYNC_...``, nested with ``__``),
``.env``, the config file (YAML, ``ITSM_SYNC_CONFIG_FILE`` or ``--config``), defaults.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

CONFIG_FILE_ENV = "ITSM_SYNC_CONFIG_FILE"


class ServiceNowSettings(BaseModel):
    """A ServiceNow instance. The URL defaults to the local simulator; no secret has a default
    (the simulator's are in the simulator profile: ``service.harness.settings_for``)."""

    model_config = ConfigDict(extra="forbid")

    url: str = "http://127.0.0.1:8701"
    username: str = "admin"
    password: SecretStr | None = None
    # What the business rule sends in X-ServiceNow-Secret; required while `webhooks` is on.
    webhook_secret: SecretStr | None = None
    webhooks: bool = True  # False: POST /webhooks/servicenow answers 404 (poll only)
    # While rotating: the old secret, still accepted until every sender has the new one.
    webhook_secret_previous: SecretStr | None = None
    timeout_seconds: float = Field(default=30.0, gt=0)
    incident_query: str = Field(
        default="", description="encoded query that selects the incidents to sync"
    )
    change_request_query: str = ""
    requests_per_second: float | None = Field(default=None, gt=0)
    # Calls in flight at once (workers beyond it wait for a slot; rate stays the buckets' job).
    max_concurrency: int = Field(default=16, ge=1, le=256)
    ca_bundle: str | None = None  # a CA file for a private certificate (the --tls simulator)
    # TLS and proxy: a client certificate (PEM with the key, or with client_key beside it) for
    # mutual TLS, and an HTTP(S) proxy for this system only (HTTPS_PROXY applies otherwise).
    client_cert: str | None = None
    client_key: str | None = None
    proxy: str | None = None
    # basic: username + password. oauth: a token from /oauth_token.do (refreshed before it
    # expires) for the OAuth client (System OAuth > Application Registry): oauth_grant
    # "password" (username + password + client) or "client_credentials" (the client only).
    auth: Literal["basic", "oauth"] = "basic"
    oauth_grant: Literal["password", "client_credentials"] = "password"
    client_id: str = ""
    client_secret: SecretStr | None = None


class JiraSettings(BaseModel):
    """A Jira Cloud site. The URL defaults to the local simulator; no secret has a default."""

    model_config = ConfigDict(extra="forbid")

    url: str = "http://127.0.0.1:8702"
    email: str = "admin@example.com"
    api_token: SecretStr | None = None
    project: str = "OPS"
    jql: str = Field(default="", description="extra JQL ANDed to 'project = <project>'")
    webhook_secret: SecretStr | None = None  # the HMAC key of X-Hub-Signature
    webhooks: bool = True
    # While rotating: the old secret, still accepted until every sender has the new one.
    webhook_secret_previous: SecretStr | None = None
    timeout_seconds: float = Field(default=30.0, gt=0)
    requests_per_second: float | None = Field(default=None, gt=0)
    # Jira refuses more than 20 writes to one issue in 2 s: burst 10 + 5/s * 2 s stays at 20.
    issue_writes_per_second: float = Field(default=5.0, gt=0)
    issue_write_burst: float = Field(default=10.0, ge=1)
    max_concurrency: int = Field(default=16, ge=1, le=256)  # calls in flight at once
    ca_bundle: str | None = None
    # TLS and proxy: a client certificate (PEM with the key, or with client_key beside it) for
    # mutual TLS, and an HTTP(S) proxy for this system only (HTTPS_PROXY applies otherwise).
    client_cert: str | None = None
    client_key: str | None = None
    proxy: str | None = None
    # basic: Cloud's email + API token. bearer: api_token is a Data Center personal access
    # token (Authorization: Bearer), email unused.
    auth: Literal["basic", "bearer"] = "basic"
    # A custom field (customfield_NNNNN) where people keep the ServiceNow incident number: an
    # issue that names one is linked to that incident, never given a second one.
    servicenow_field: str | None = None


class StatuspageSettings(BaseModel):
    """A Statuspage page. The URL defaults to the local simulator; no secret has a default."""

    model_config = ConfigDict(extra="forbid")

    url: str = "http://127.0.0.1:8703/v1"
    api_key: SecretStr | None = None
    page_id: str = "simpage0001"
    # Statuspage signs nothing: the webhook URL we register carries ?token=<this>.
    webhook_secret: SecretStr | None = None
    webhooks: bool = True
    # While rotating: the old secret, still accepted until every sender has the new one.
    webhook_secret_previous: SecretStr | None = None
    timeout_seconds: float = Field(default=30.0, gt=0)
    requests_per_second: float = Field(default=1.0, gt=0)  # the documented budget
    burst: float = Field(default=1.0, ge=1)
    # At 1 request/s more than two in flight only queue behind the bucket.
    max_concurrency: int = Field(default=2, ge=1, le=256)
    ca_bundle: str | None = None
    # TLS and proxy: a client certificate (PEM with the key, or with client_key beside it) for
    # mutual TLS, and an HTTP(S) proxy for this system only (HTTPS_PROXY applies otherwise).
    client_cert: str | None = None
    client_key: str | None = None
    proxy: str | None = None


class SyncSettings(BaseModel):
    """How the engine runs and which incidents get records where."""

    model_config = ConfigDict(extra="forbid")

    poll_interval_seconds: float = Field(default=60.0, gt=0)
    workers: int = Field(default=4, ge=1, le=64)
    coalesce_seconds: float = Field(default=0.2, ge=0)  # edits within this window: one reconcile
    lease_seconds: float = Field(default=120.0, gt=0)
    # PostgreSQL: after each commit that queues work a NOTIFY is sent (from a thread of its
    # own, never inside the webhook's transaction) and idle workers LISTEN, so the workers of
    # every instance (any machine) wake at once rather than within 0.5 s. Workers of the same
    # `run` wake either way (docs/performance.md §3).
    pg_notify: bool = True
    # `itsm-sync run`'s worker process runs at this niceness (added to the service's): under
    # CPU contention the HTTP process, which must answer webhooks within milliseconds, comes
    # first; an idle machine gives the workers all they want either way. 0: the same.
    worker_process_nice: int = Field(default=10, ge=0, le=19)
    # How many worker processes `itsm-sync run` starts; `workers` threads are shared between
    # them, and the first also runs the poller. One worker process is bound by its
    # interpreter's lock at roughly one core: on a machine with cores to spare, give it
    # as many as the work needs (at most the cores). `--role workers` runs its own one.
    worker_processes: int = Field(default=1, ge=1, le=16)
    # Lifecycle rules (conditions over canonical fields, as in mapping files):
    create_jira_when: str = 'severity in ["SEV1", "SEV2"]'
    create_servicenow_for_jira: bool = True  # incidents born in Jira get a ServiceNow incident
    jira_issue_type: str = "Incident"
    # Per-field last-writer-wins: changes are compared to the second (ServiceNow's precision);
    # within one second this system wins, unless the mapping names the field's owner.
    tie_winner: Literal["servicenow", "jira"] = "servicenow"
    # An incident resolved within this long of being opened still gets its records (created,
    # then resolved); one resolved longer ago (a backfill) gets none.
    quick_resolve_seconds: float = Field(default=3600.0, ge=0)
    # Resolving a parent resolves its duplicates (on every system they have records on).
    duplicates_follow_parent: bool = True

    @model_validator(mode="after")
    def _threads_for_each_process(self) -> SyncSettings:
        if self.worker_processes > self.workers:
            raise ValueError(
                f"worker_processes ({self.worker_processes}) is more than workers "
                f"({self.workers}): each worker process needs at least one worker thread"
            )
        return self

    def threads_of(self, index: int) -> int:
        """How many of the ``workers`` threads worker process ``index`` (from 0) runs."""
        share, extra = divmod(self.workers, self.worker_processes)
        return share + (1 if index < extra else 0)


class IntakeSettings(BaseModel):
    """What unauthenticated callers of the webhook routes can cost (docs/operations.md)."""

    model_config = ConfigDict(extra="forbid")

    # Rejected and malformed deliveries are kept for diagnosis, the oldest dropped beyond
    # either cap (itsm_sync_rejected_deliveries_dropped counts them); each body cut to a size.
    rejected_keep: int = Field(default=200, ge=0)
    rejected_max_bytes: int = Field(default=2 * 1024 * 1024, ge=0)
    rejected_body_bytes: int = Field(default=16 * 1024, ge=0)
    # Per source address and route: every delivery, and (much fewer) the ones refused for a
    # bad signature or body; beyond either, 429 with Retry-After.
    requests_per_second: float = Field(default=200.0, gt=0)
    burst: float = Field(default=400.0, ge=1)
    rejections_per_minute: float = Field(default=6.0, gt=0)
    rejection_burst: float = Field(default=10.0, ge=1)
    # Behind a reverse proxy: the source is the last address the proxy appended to
    # X-Forwarded-For (only trust this when the proxy sets it), not the proxy's own.
    forwarded_for: bool = False


class HealthSettings(BaseModel):
    """What ``/readyz`` calls ready (docs/operations.md, Health)."""

    model_config = ConfigDict(extra="forbid")

    # Not ready when the oldest due change has waited longer than this.
    max_queue_age_seconds: float = Field(default=600.0, gt=0)
    # Each system's sign-in is checked at most this often (answers are cached between).
    remote_check_seconds: float = Field(default=60.0, gt=0)


class RetentionSettings(BaseModel):
    """How long the store keeps what only explains the past (``itsm-sync prune``)."""

    model_config = ConfigDict(extra="forbid")

    # Webhook deliveries (duplicate detection; Jira redelivers up to a few hours late) and
    # refused deliveries kept for diagnosis.
    events_days: float = Field(default=14.0, gt=0)
    # The audit log (every remote write, conflict, park, gate decision) and resolved parked
    # items: kept longer, for reviews and audits.
    audit_days: float = Field(default=400.0, gt=0)
    # `itsm-sync run` prunes this often (its worker side); 0: never (prune from cron instead).
    every_hours: float = Field(default=6.0, ge=0)


SeverityName = Literal["SEV1", "SEV2", "SEV3", "SEV4"]


class CommsSettings(BaseModel):
    """The communication rhythm a major incident owes (docs/communications.md)."""

    model_config = ConfigDict(extra="forbid")

    # Minutes between updates an incident owes, per severity; a severity not listed owes none.
    cadence_minutes: dict[SeverityName, float] = Field(
        default_factory=lambda: dict[SeverityName, float]({"SEV1": 15.0, "SEV2": 30.0})
    )
    # Whether an internal comment (a work note, a restricted Jira comment) counts as an
    # update; a public one (a status page update, a customer-visible comment) always does.
    internal_updates_count: bool = False
    # Who hears of two missed updates in a row: a group or a person (a name or an email).
    escalate_to: str = "the incident manager on call"
    check_seconds: float = Field(default=60.0, gt=0)  # how often `run` checks what is due


class PostmortemSettings(BaseModel):
    """The postmortem tracker: which incidents need one, where action items come from."""

    model_config = ConfigDict(extra="forbid")

    required_when: str = 'severity in ["SEV1", "SEV2"]'
    # A Jira issue of this type is the postmortem (linked to the incident's issue); it is
    # complete when it reaches a done status. "" : no Jira issue, complete it with the CLI.
    review_issue_type: str = "Post-incident review"
    action_link_type: str = "Relates"  # issues linked so to the incident's or review's issue
    action_label: str = "postmortem-action"  # ... or linked and carrying this label
    change_type: str = "normal"
    reminder_hours: float = Field(default=24.0, ge=0)  # overdue reminder period; 0: none
    # A change request closed (state 3) with one of these close codes implements its item:
    # the item is done. Closed with another code, or in one of change_failed_states
    # (Canceled), it re-opens the item, which gets a new change request.
    change_done_codes: tuple[str, ...] = ("successful", "successful_issues")
    change_failed_states: tuple[str, ...] = ("4",)
    # Where an action item's issue goes when its change is done, with what fields.
    action_done_status: str = "Resolved"
    action_done_fields: dict[str, Any] = Field(
        default_factory=lambda: {"resolution": {"name": "Done"}}
    )
    # A resolved incident that needs a postmortem gets a ServiceNow problem; its change
    # requests name the problem as well as the incident.
    problem_record: bool = False


# What a token may do is decided in service.domain.roles; comms may publish and read only.
TokenRole = Literal["viewer", "comms", "change-manager", "admin"]


class ApiToken(BaseModel):
    """A bearer token for the HTTP API and the role it grants."""

    model_config = ConfigDict(extra="forbid")

    name: str
    token: SecretStr
    role: TokenRole


class Instances(BaseModel):
    """More instances of a system, by name (the top-level sections are the ``default`` ones).

    ``ITSM_SYNC_INSTANCES__JIRA__EU__URL=https://eu.atlassian.net`` adds a Jira site named
    ``eu``; in the config file, ``instances: {jira: {eu: {url: ...}}}``.
    """

    model_config = ConfigDict(extra="forbid")

    servicenow: dict[str, ServiceNowSettings] = Field(default_factory=dict)
    jira: dict[str, JiraSettings] = Field(default_factory=dict)
    statuspage: dict[str, StatuspageSettings] = Field(default_factory=dict)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="ITSM_SYNC_",
        env_nested_delimiter="__",
        env_file=".env",
        extra="forbid",
    )

    servicenow: ServiceNowSettings = Field(default_factory=ServiceNowSettings)
    jira: JiraSettings = Field(default_factory=JiraSettings)
    statuspage: StatuspageSettings = Field(default_factory=StatuspageSettings)
    instances: Instances = Field(default_factory=Instances)
    sync: SyncSettings = Field(default_factory=SyncSettings)
    postmortem: PostmortemSettings = Field(default_factory=PostmortemSettings)
    comms: CommsSettings = Field(default_factory=CommsSettings)
    intake: IntakeSettings = Field(default_factory=IntakeSettings)
    health: HealthSettings = Field(default_factory=HealthSettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    # ITSM_SYNC_API_TOKENS='[{"name": "desk", "token": "...", "role": "viewer"}]'
    api_tokens: list[ApiToken] = Field(default_factory=list)
    database_url: str = "sqlite:///./itsm-sync.db"
    # Admin-written mapping files (*.yaml); each replaces the shipped default for its
    # (system, instance). None: the shipped defaults in mapping/defaults/.
    mappings_dir: str | None = None
    log_level: str = "INFO"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings, dotenv_settings]
        config_file = os.environ.get(CONFIG_FILE_ENV)
        if config_file:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=config_file))
        sources.append(file_secret_settings)
        return tuple(sources)


def reveal(secret: SecretStr | None) -> str:
    """A secret's value, "" when it is not set (for the one place that sends or compares it)."""
    return "" if secret is None else secret.get_secret_value()


_System = TypeVar("_System", ServiceNowSettings, JiraSettings, StatuspageSettings)


def worker_share(settings: Settings, index: int) -> Settings:
    """The settings of worker process ``index`` of ``sync.worker_processes``: its share of
    the worker threads and of every system's budget.

    Each process has its own token buckets, so N processes at the configured rates would call
    a system N times as fast as its limit: each gets rates and ``max_concurrency`` divided by
    N (bursts too, but never under one token, so N processes may burst N calls at most)."""
    parts = settings.sync.worker_processes
    if parts == 1:
        return settings

    def share(section: _System) -> _System:
        update: dict[str, Any] = {}
        for name in ("requests_per_second", "issue_writes_per_second"):
            value = getattr(section, name, None)
            if value is not None:
                update[name] = value / parts
        for name in ("burst", "issue_write_burst"):
            value = getattr(section, name, None)
            if value is not None:
                update[name] = max(1.0, value / parts)
        update["max_concurrency"] = max(1, section.max_concurrency // parts)
        return section.model_copy(update=update)

    instances = settings.instances
    return settings.model_copy(
        update={
            "sync": settings.sync.model_copy(update={"workers": settings.sync.threads_of(index)}),
            "servicenow": share(settings.servicenow),
            "jira": share(settings.jira),
            "statuspage": share(settings.statuspage),
            "instances": instances.model_copy(
                update={
                    "servicenow": {k: share(v) for k, v in instances.servicenow.items()},
                    "jira": {k: share(v) for k, v in instances.jira.items()},
                    "statuspage": {k: share(v) for k, v in instances.statuspage.items()},
                }
            ),
        }
    )


def env_prefix(system: str, instance: str = "default") -> str:
    """The environment name prefix of one system instance's settings."""
    if instance == "default":
        return f"ITSM_SYNC_{system.upper()}__"
    return f"ITSM_SYNC_INSTANCES__{system.upper()}__{instance.upper()}__"


def webhook_secrets(section: ServiceNowSettings | JiraSettings | StatuspageSettings) -> list[bytes]:
    """The webhook secrets a delivery may prove itself with: the current one and, while a
    rotation is under way, the previous one (never an empty one)."""
    values = (reveal(section.webhook_secret), reveal(section.webhook_secret_previous))
    return [v.encode() for v in values if v]


# The credential each system cannot work without (webhook secrets are checked apart).
_CREDENTIAL = {"servicenow": "password", "jira": "api_token", "statuspage": "api_key"}


def missing_for_run(settings: Settings) -> list[str]:
    """The settings ``itsm-sync run`` refuses to start without, as environment variable names:
    each configured system's credential, the webhook secret of each system whose webhook route
    is on, and at least one API token (the JSON API is never open)."""
    missing: list[str] = []
    systems: list[tuple[str, str, ServiceNowSettings | JiraSettings | StatuspageSettings]] = [
        ("servicenow", "default", settings.servicenow),
        ("jira", "default", settings.jira),
        ("statuspage", "default", settings.statuspage),
    ]
    for system in ("servicenow", "jira", "statuspage"):
        for name, section in getattr(settings.instances, system).items():
            systems.append((system, name, section))
    for system, instance, section in systems:
        head = env_prefix(system, instance)
        oauth = isinstance(section, ServiceNowSettings) and section.auth == "oauth"
        client_only = isinstance(section, ServiceNowSettings) and (
            oauth and section.oauth_grant == "client_credentials"
        )
        if not client_only and not reveal(getattr(section, _CREDENTIAL[system])):
            missing.append(f"{head}{_CREDENTIAL[system].upper()}")
        if isinstance(section, ServiceNowSettings) and oauth:
            if not section.client_id:
                missing.append(f"{head}CLIENT_ID")
            if not reveal(section.client_secret):
                missing.append(f"{head}CLIENT_SECRET")
        if section.webhooks and not reveal(section.webhook_secret):
            missing.append(f"{head}WEBHOOK_SECRET")
    if not settings.api_tokens:
        missing.append("ITSM_SYNC_API_TOKENS")
    return missing


class ConfigFileError(ValueError):
    """The config file is missing, unreadable or invalid; the message names file, line, field."""


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Build settings, optionally from a YAML config file (environment still wins)."""
    if config_file is None:
        return Settings(**overrides)
    path = Path(config_file)
    if not path.is_file():
        raise ConfigFileError(f"{path}: config file not found")
    try:
        document = yaml.compose(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigFileError(f"{path}: not valid YAML: {exc}") from exc
    previous = os.environ.get(CONFIG_FILE_ENV)
    os.environ[CONFIG_FILE_ENV] = str(path)
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            location = [str(part) for part in error["loc"]]
            line = _line_of(document, location)
            where = f"{path}:{line}" if line else str(path)
            problems.append(f"{where} {'.'.join(location)}: {error['msg']}")
        raise ConfigFileError("\n".join(problems)) from exc
    finally:
        if previous is None:
            os.environ.pop(CONFIG_FILE_ENV, None)
        else:
            os.environ[CONFIG_FILE_ENV] = previous


def _line_of(node: yaml.Node | None, location: list[str]) -> int | None:
    """1-based line of the YAML key at ``location`` (or of its closest existing parent)."""
    line = None
    for key in location:
        if not isinstance(node, yaml.MappingNode):
            break
        for key_node, value_node in node.value:
            if key_node.value == key:
                line, node = key_node.start_mark.line + 1, value_node
                break
        else:
            break
    return line


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, built once on first use."""
    return Settings()
