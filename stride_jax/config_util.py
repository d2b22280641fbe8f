"""Small helpers for ``configs/*.py``: parsing the ``get_config(arg)`` string."""

from __future__ import annotations

import ml_collections


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
    """Parses ``"key=value,flag"`` strings against typed defaults.

    ``get_config("runlocal")`` sets the boolean ``runlocal``; ``"variant=b"`` sets a string.
    Unknown keys raise ``ValueError``.
    """
    out = ml_collections.ConfigDict(defaults)
    for item in filter(None, (arg or "").split(",")):
        key, _, value = item.partition("=")
        key = key.strip()
        if key not in defaults:
            raise ValueError(f"unknown config argument {key!r}; known: {sorted(defaults)}")
        default = defaults[key]
        if isinstance(default, bool):
            out[key] = value.lower() in ("", "1", "true", "yes") if value else True
        else:
            out[key] = type(default)(value)
    return out
