"""Query parameters of the POST routes, read by hand: FastAPI's per-request validation
costs about as much as classifying one image, so the hot routes take the bare request
and these few checks (the same 400 answer), and list their parameters for /docs here."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .limits import bad_request

TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def number(query: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    text = query.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise bad_request(f"{name}: expected a whole number, got {text!r}") from None
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
    if text is None or text == "":
        return default
    if text.lower() in TRUE:
        return True
    if text.lower() in FALSE:
        return False
    raise bad_request(f"{name}: expected true or false, got {text!r}")


def documented(**params: tuple[str, Any, str]) -> list[dict[str, Any]]:
    """OpenAPI entries for query parameters: name=(type, default, description)."""
    return [{"name": name, "in": "query", "required": False, "description": text,
             "schema": {"type": kind, **({"default": default} if default is not None else {})}}
            for name, (kind, default, text) in params.items()]


TOP_K = ("integer", 5, "how many classes to list, most likely first")
PREPARE = ("string", "auto", "auto (the rule lenet predict follows): a 28x28 grayscale image on "
           "a dark background is taken as it is, another 28x28 image made grayscale (a light "
           "background inverted), anything else made to look like the training data "
           "(grayscale, a light background inverted, cropped, padded, resized); full: always "
           "that; none: a 28x28 image as it is")
INVERT = ("boolean", None, "invert the image (default: when its border is light)")
OOD = ("boolean", True, "check whether the image looks like the training data")
