"""Start-up checks for data config values; every message names the ``data.*`` key at fault."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def require_int(key: str, value: Any, *, minimum: int) -> int:
    """Return ``value`` if it is an integer ``>= minimum`` (bools rejected), else raise ValueError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{key} must be an integer >= {minimum}, got {value!r}")
    return value


def require_float(key: str, value: Any, *, low: float, high: float = float("inf")) -> float:
    """Return ``float(value)`` if it is a real number in ``[low, high]``, else raise ValueError."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        upper = "" if high == float("inf") else f", {high}]"
        interval = f"[{low}{upper}" if upper else f">= {low}"
        raise ValueError(f"{key} must be a number in {interval}, got {value!r}")
    return float(value)


def require_choice(key: str, value: Any, choices: Sequence[Any]) -> Any:
    """Return ``value`` if it is one of ``choices``, else raise ValueError listing them."""
    if value not in choices:
        raise ValueError(f"{key} must be one of {list(choices)}, got {value!r}")
    return value
