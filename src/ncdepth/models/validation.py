"""Checks for model knobs: each raises a ValueError that names the config key and what is allowed."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from numbers import Integral, Real


def check_int(key: str, value: object, *, minimum: int) -> int:
    """Return ``value`` as an int if it is an integer (not a bool) ``>= minimum``, else raise."""
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        raise ValueError(f"{key} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_number(key: str, value: object, *, minimum: float, inclusive: bool) -> float:
    """Return ``value`` as a float if it is a real number ``>= minimum`` (``> minimum`` when not
    ``inclusive``), else raise."""
    relation = ">=" if inclusive else ">"
    valid = isinstance(value, Real) and not isinstance(value, bool)
    if valid:
        valid = value >= minimum if inclusive else value > minimum
    if not valid:
        raise ValueError(f"{key} must be a number {relation} {minimum}, got {value!r}")
    return float(value)


def check_bool(key: str, value: object) -> bool:
    """Return ``value`` if it is a bool, else raise."""
    if not isinstance(value, bool):
        raise ValueError(f"{key} must be a bool (true or false), got {value!r}")
    return value


def check_choice(key: str, value: object, allowed: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``allowed``, else raise listing the allowed values."""
    allowed = sorted(allowed)
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{key} must be one of {allowed}, got {value!r}")
    return value


def check_int_list(key: str, value: object, *, minimum: int) -> list[int]:
    """Return ``value`` as a list of ints if it is a non-empty sequence of integers ``>= minimum``."""
    items = list(value) if isinstance(value, Sequence) and not isinstance(value, str) else None
    if not items or any(
        isinstance(item, bool) or not isinstance(item, Integral) or item < minimum for item in items
    ):
        raise ValueError(f"{key} must be a non-empty list of integers >= {minimum}, got {_plain(value)!r}")
    return [int(item) for item in items]


def _plain(value: object) -> object:
    """A Hydra ``ListConfig`` or tuple as a plain list, so error messages read like the config."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        return list(value)
    return value
