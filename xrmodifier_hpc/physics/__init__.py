"""Physics and statistics as pure functions: source models, ARF modifier families, C-stat
kernels and profile fits. No file or network I/O."""
