"""The matplotlib skeleton drawer (``scripts/visualize.py``, ``data.prepare.plot_sources``).

The Pillow drawer of video frames is ``stride_jax.video``; both take bone sides from
:func:`stride_jax.skeleton.bone_side`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from stride_jax import skeleton

SIDE_COLOURS = {"left": "tab:blue", "right": "tab:red", "mid": "k"}


def draw_skeleton(ax: Any, pts: np.ndarray, colour: Any = None, *, lw: float = 2.0,
                  alpha: float = 1.0, zorder: int = 2, dashed_left: bool = False,
                  marker_size: float = 0.0) -> None:
    """Draws the bones of ``pts`` ``(17, 2)`` (plot coordinates) on a matplotlib ``ax``.

    ``colour`` None colours bones by side (:data:`SIDE_COLOURS`); ``dashed_left`` draws
    left bones dashed and a little fainter (for one-colour skeletons); ``marker_size`` > 0
    marks the joints.
    """
    for parent, child in skeleton.BONES:
        side = skeleton.bone_side(child)
        left = dashed_left and side == "left"
        ax.plot(pts[[parent, child], 0], pts[[parent, child], 1],
                color=SIDE_COLOURS[side] if colour is None else colour, lw=lw,
                alpha=alpha * (0.75 if left else 1.0), ls="--" if left else "-",
                marker="o" if marker_size else None, ms=marker_size,
                solid_capstyle="round", zorder=zorder)
