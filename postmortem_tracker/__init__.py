"""Postmortems, action items, change requests and the closure gate (see DESIGN.md §4)."""
