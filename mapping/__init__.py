"""The canonical incident and the admin-written mappings (see DESIGN.md §3)."""
