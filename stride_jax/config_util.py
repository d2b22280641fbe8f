"""Small config helpers: parsing ``get_config(arg)`` strings; model flags vs a prior."""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import ml_collections

MODEL_FLAG = "--config.model"


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


def with_overrides(section: ml_collections.ConfigDict,
                   overrides: Mapping) -> ml_collections.ConfigDict:
    """A copy of a config ``section`` (e.g. ``config.ttt``) with ``overrides`` applied;
    dict-valued fields (e.g. ``loss``) are merged key by key.  An unknown key is a
    ``KeyError`` naming it (nothing the caller passes is ignored)."""
    out = copy.deepcopy(section.to_dict())
    for key, value in overrides.items():
        if key not in out:
            raise KeyError(f"unknown setting {key!r}; known: {sorted(out)}")
        if isinstance(out[key], dict):
            unknown = set(value) - set(out[key])
            if unknown:
                raise KeyError(f"unknown key(s) {sorted(unknown)} in {key}; known: "
                               f"{sorted(out[key])}")
            out[key].update(value)
        else:
            out[key] = value
    return ml_collections.ConfigDict(out)


def model_overrides(argv: Sequence[str]) -> list[str]:
    """The ``--config.model.*`` flags in a command line (``=value`` forms and bare names)."""
    return [a.split("=", 1)[0] for a in argv
            if a.startswith(MODEL_FLAG + ".") or a.split("=", 1)[0] == MODEL_FLAG]


def reject_model_overrides(argv: Sequence[str], prior_dir: str | os.PathLike) -> None:
    """Raises ``ValueError`` when ``argv`` sets ``--config.model.*``: a trained prior's
    model is fixed by its ``prior.json``, so such flags would be silently ignored."""
    given = model_overrides(argv)
    if given:
        raise ValueError(
            f"{', '.join(given)}: the model of a trained prior cannot be changed; it comes "
            f"from {Path(prior_dir) / 'prior.json'}.  Drop the flag, or pretrain a prior "
            "with that model (python -m stride_jax.pretrain) and pass it with --checkpoint")
