"""The sync engine (see DESIGN.md §2)."""
