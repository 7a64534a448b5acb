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


class ReportedElsewhere(LenetError):
    """A failure another process reports: under several processes rank 0 says what went
    wrong, and the other ranks raise this to end with the same status, silently."""


class LenetWarning(UserWarning):
    """Something worth knowing that is no error: a fallback taken, a step skipped.

    The library warns; `lenet` shows each as one `lenet: note: ...` line, and Python
    code sees an ordinary warning it may filter.
    """


def note(text: str) -> None:
    """Tell the user, without stopping: a `LenetWarning` (the caller's caller's line)."""
    import warnings

    warnings.warn(text, LenetWarning, stacklevel=3)
