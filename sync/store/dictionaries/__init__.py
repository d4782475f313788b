"""Preset zlib dictionaries for :mod:`sync.store.packed` (``v<N>.zdict``) and how v1 was made.

A value packed with a dictionary names it by Adler-32 in its zlib header, so a shipped file
never changes and is never removed (values packed with it stay readable); a better one is a
new ``v<N+1>.zdict``, which new values then use. ``python -m sync.store.dictionaries.build``
(in a checkout, beside ``../shared/api-contracts``) remakes v1 and checks it is unchanged.
"""
