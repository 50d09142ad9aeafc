"""Physics and statistics as pure functions.

Source models, ARF modifier families, C-stat kernels and profile fits. No file or network
I/O (import-linter checks it).
"""
