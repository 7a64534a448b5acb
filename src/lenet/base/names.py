"""Names that become one path component: a run, a sweep, a sweep's trial.

A name from the command line or from a file someone else wrote must not reach
outside its folder: path separators, `..`, NUL and control characters are
refused with a message that says which name and why.
"""

from __future__ import annotations

from ..errors import ConfigError

MAX_BYTES = 200  # under every common file system's 255, with room for suffixes


def check_name(name: object, what: str = "name") -> str:
    """`name` if it is a safe single path component, else a ConfigError naming `what`."""
    if not isinstance(name, str):
        raise ConfigError(f"{what} must be text, got {name!r}")
    why = None
    if not name.strip():
        why = "it is empty"
    elif "/" in name or "\\" in name:
        why = "it holds a path separator"
    elif ".." in name:
        why = "it holds '..'"
    elif name == ".":
        why = "it is '.'"
    elif any(ord(c) < 32 or ord(c) == 127 for c in name):
        why = "it holds a control character"
    elif len(name.encode("utf-8", "surrogatepass")) > MAX_BYTES:
        why = f"it is longer than {MAX_BYTES} bytes"
    if why:
        raise ConfigError(f"{what} {name!r} is refused: {why}; use a plain name such as "
                          "'lenet5-relu'")
    return name
