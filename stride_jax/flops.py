"""Analytic FLOP counts of the DSTFormer (forward, training step, test-time training).

XLA's ``cost_analysis`` counts the body of a ``scan`` / ``lax.map`` once, so it
undercounts chunked attention and whole TTT runs; these counts follow the model's
matmuls instead (2 FLOPs per multiply-add; softmax, LayerNorm and elementwise work left
out, as is usual for roofline figures).  A training step is 3x the forward pass
(backward = 2x forward); the recomputation of attention scores in our backward pass is
not counted (it is our implementation's cost, not the model's).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def forward_flops(model_config: Mapping[str, Any], frames: int, windows: int = 1) -> float:
    """FLOPs of one forward pass over ``windows`` windows of ``frames`` frames.

    Per depth: two streams, each a spatial and a temporal (attention + MLP) pair; then the
    stream fusion, the final ``pre_logits`` (when ``dim_rep``) and the 3-D head.
    """
    c = int(model_config["dim_feat"])
    rep = int(model_config.get("dim_rep", 0))
    depth = int(model_config["depth"])
    joints = int(model_config.get("num_joints", 17))
    dim_in = int(model_config.get("dim_in", 3))
    hidden = int(c * float(model_config.get("mlp_ratio", 2.0)))
    tokens = frames * joints
    dense_per_pair = 4 * c * c + 2 * c * hidden  # qkv, proj, fc1, fc2 (MACs per token)
    spatial = 2 * frames * joints * joints * c  # q k^T and p v over the joints of a frame
    temporal = 2 * joints * frames * frames * c  # ... over the frames of a joint
    per_depth = (4 * dense_per_pair * tokens + 2 * (spatial + temporal)
                 + (2 * c * 2 * tokens if model_config.get("att_fuse", True) else 0))
    macs = (dim_in * c * tokens + depth * per_depth
            + (c * rep + rep * 3 if rep else c * 3) * tokens)
    return 2.0 * macs * windows


def train_step_flops(model_config: Mapping[str, Any], frames: int, batch: int = 1) -> float:
    """FLOPs of one optimisation step (forward + backward) on ``batch`` clips."""
    return 3.0 * forward_flops(model_config, frames, batch)


def ttt_flops(model_config: Mapping[str, Any], frames: int, windows: int, epochs: int, *,
              flip_average: bool = False) -> float:
    """FLOPs of one video's test-time training: ``epochs`` steps on its windows and the
    final prediction (twice with flip averaging)."""
    predict = forward_flops(model_config, frames, windows) * (2 if flip_average else 1)
    return epochs * train_step_flops(model_config, frames, windows) + predict
