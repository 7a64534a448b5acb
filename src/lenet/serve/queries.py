"""Query parameters of the routes, read by hand: FastAPI's per-request validation
costs about as much as classifying one image, so the hot routes take the bare request
and these few checks (the same 400 answer); schema.py describes them for /docs."""

from __future__ import annotations

from collections.abc import Mapping

from .limits import bad_request

TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _whole_number(name: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise bad_request(f"{name}: expected a whole number, got {text!r}") from None


def number(query: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    text = query.get(name)
    if text is None:
        return default
    value = _whole_number(name, text)
    if not low <= value <= high:
        raise bad_request(f"{name}: must be between {low} and {high}, got {value}")
    return value


def choice(query: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str:
    """One of `choices`; the first when not given."""
    value = query.get(name, choices[0])
    if value not in choices:
        raise bad_request(f"{name}: choose from {', '.join(choices)}, got {value!r}")
    return value


def flag(query: Mapping[str, str], name: str, default: bool | None) -> bool | None:
    text = query.get(name)
    if text is None:
        return default
    if text.lower() in TRUE:
        return True
    if text.lower() in FALSE:
        return False
    raise bad_request(f"{name}: expected true or false, got {text!r}")


def optional_number(query: Mapping[str, str], name: str, low: int) -> int | None:
    """A whole number >= `low` (however large), or None when not given."""
    text = query.get(name)
    if text is None:
        return None
    value = _whole_number(name, text)
    if value < low:
        raise bad_request(f"{name}: must be at least {low}, got {value}")
    return value
