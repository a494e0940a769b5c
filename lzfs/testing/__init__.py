"""Helpers shared by the tests, `scripts/demo` and `scripts/bench`: a model-server-like workload
process and a thin CRIU runner. Not used by the filesystem itself."""
