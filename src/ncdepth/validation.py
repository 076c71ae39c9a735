"""Start-up checks of config values, shared by every app: a wrong value raises a ``ValueError`` whose
message names the config key and what it allows, before anything is computed or written.

* the value checks (:func:`check_int`, :func:`check_number`, :func:`check_bool`, :func:`check_choice`,
  :func:`check_int_list`) return the value, normalised (``int``, ``float``, ``list``); :func:`is_list`
  tells a config list (plain or OmegaConf) from a scalar;
* :func:`check_keys` is the one unknown/missing-key check of a config node (an unknown key is
  named with its close matches, :func:`did_you_mean`);
* :func:`from_node` builds a frozen settings dataclass from its config node: the node's keys are
  checked against the dataclass's fields (those without a default are required), and the
  dataclass checks and normalises its values in ``__post_init__``.

Standard library only, so that every package (``models``, ``data``, ``theory``, ``training``, ``cli``)
may import it. ``ncdepth.metrics`` keeps its own checks: it imports nothing of ncdepth.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Collection, Iterable, Mapping, Sequence
from numbers import Integral, Real
from typing import TypeVar

Settings = TypeVar("Settings")


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
    items = list(value) if is_list(value) else None
    if not items or any(
        isinstance(item, bool) or not isinstance(item, Integral) or item < minimum for item in items
    ):
        raise ValueError(f"{key} must be a non-empty list of integers >= {minimum}, got {_plain(value)!r}")
    return [int(item) for item in items]


def is_list(value: object) -> bool:
    """Whether ``value`` is a config list: a ``list``, ``tuple`` or OmegaConf ``ListConfig`` (any
    sequence but a string)."""
    return isinstance(value, Sequence) and not isinstance(value, str)


def check_keys(
    section: str, keys: Iterable[str], allowed: Collection[str], required: Collection[str] = ()
) -> None:
    """Raise naming the first of ``keys`` not in ``allowed`` (and listing ``allowed``), else the first
    of ``required`` not in ``keys``. ``section`` is the node's dotted key (``"train"``, ``"trainer"``;
    ``""`` for the top level), which prefixes the key in the message."""
    prefix, where = (f"{section}.", section) if section else ("", "the config")
    keys = list(keys)
    unknown = [key for key in keys if key not in allowed]
    if unknown:
        raise ValueError(
            f"unknown key {prefix}{unknown[0]}{did_you_mean(unknown[0], allowed, prefix)}; "
            f"allowed keys of {where}: {sorted(allowed)}"
        )
    missing = [key for key in required if key not in keys]
    if missing:
        raise ValueError(f"missing key {prefix}{missing[0]} in {where}")


def did_you_mean(name: str, known: Iterable[str], prefix: str = "") -> str:
    """``" (did you mean PREFIX+match?)"`` for the entries of ``known`` closest to ``name``
    (``difflib``), or ``""`` when none is close."""
    matches = difflib.get_close_matches(str(name), [str(entry) for entry in known], n=3, cutoff=0.6)
    if not matches:
        return ""
    return f" (did you mean {' or '.join(prefix + match for match in matches)}?)"


def from_node(settings_type: type[Settings], section: str, node: object) -> Settings:
    """``settings_type(**node)`` for the dataclass ``settings_type`` and the mapping ``node`` found at
    ``section`` (``""``: the whole config). Keys are checked by :func:`check_keys` against the
    dataclass's fields, those without a default being required; the values are passed as they are, for
    ``__post_init__`` to check. Raises ``ValueError`` naming the key."""
    if not isinstance(node, Mapping):
        raise ValueError(f"{section or 'the config'} must be a mapping, got {node!r}")
    fields = dataclasses.fields(settings_type)
    required = [
        field.name
        for field in fields
        if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
    ]
    check_keys(section, node, [field.name for field in fields], required)
    return settings_type(**{key: node[key] for key in node})


def _plain(value: object) -> object:
    """A Hydra ``ListConfig`` or tuple as a plain list, so error messages read like the config."""
    return list(value) if is_list(value) else value
