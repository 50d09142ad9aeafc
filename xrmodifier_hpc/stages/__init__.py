"""One module per CLI verb, in pipeline order.

init, check, fit, simulate, merge, train, mock, invert, apply, report, tabulate. A stage never
imports another stage (import-linter checks it).
"""
