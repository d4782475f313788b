"""Composition root: the itsm-sync CLI and HTTP service."""
