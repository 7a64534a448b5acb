"""Errors that carry a message meant for the user.

The CLI prints these as one clear line (or a short block) instead of a traceback;
anything else that escapes is a bug.
"""


class LenetError(Exception):
    """Base class for expected, user-facing failures."""


class DataError(LenetError):
    """A dataset file is missing, corrupt, truncated or inconsistent."""


class ConfigError(LenetError, ValueError):
    """An option, model configuration or path is invalid."""


class TrainingError(LenetError):
    """Training could not go on (for example, the loss stopped being finite)."""
