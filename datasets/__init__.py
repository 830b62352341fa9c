"""Datasets of the MLPerf vision benchmarks: listing, pre-processing, cache, scoring.

Note: Hugging Face's `datasets` package has the same top-level name. This marker lets the CLI
tell the two apart and refuse to run with the wrong one instead of failing obscurely.
"""

IS_RAY_SUT_DATASETS = True
