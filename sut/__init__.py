"""Driver side of the Ray MLPerf vision SUT: CLI, configuration, LoadGen, dispatch, reports."""

__version__ = "0.1.0"
