"""The two kinds of failure the harness reports to a user."""


class ConfigError(Exception):
    """Bad input found before LoadGen starts: the message names the file or flag and the fix."""


class RunFailed(Exception):
    """A run that started could not finish correctly (for example, no worker left)."""
