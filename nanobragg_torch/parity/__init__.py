"""C-parity library: trace schema, parsers of the C's stdout and printout, drift comparison, goldens.

Modules: ``schema`` (the canonical per-pixel factors in pipeline order), ``printout`` (C -printout_pixel
blocks and our TRACE_PY lines as Trace objects), ``cstdout`` (the C's stdout as a dict), ``compare``
(factor-by-factor and image comparisons), ``fingerprint`` (text fingerprints for syrupy snapshots),
``goldens`` (case matrix and verified golden access), ``regen`` (rendering goldens with a C binary).
See docs/golden.md.
"""
