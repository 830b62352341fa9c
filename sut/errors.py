"""The two kinds of failure the harness reports to a user."""


class ConfigError(Exception):
    """Bad input found before LoadGen starts: the message names the file or flag and the fix."""


class RunFailed(Exception):
    """A run that started could not finish correctly (for example, no worker left)."""


def first_line(message: object) -> str:
    """The first line of an error's text, for one-line reports ('' for an empty message, which
    some frameworks raise)."""
    lines = str(message).strip().splitlines()
    return lines[0] if lines else ""
