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
from typing import Any, NamedTuple


def forward_flops(model_config: Mapping[str, Any], frames: int, windows: int = 1) -> float:
    """FLOPs of one forward pass over ``windows`` windows of ``frames`` frames: the sum
    over ``forward_matmuls`` (per depth two streams, each a spatial and a temporal
    attention + MLP pair; then the stream fusion, ``pre_logits`` when ``dim_rep`` and the
    3-D head)."""
    return sum(op.flops for op in forward_matmuls(model_config, frames, windows))


def train_step_flops(model_config: Mapping[str, Any], frames: int, batch: int = 1) -> float:
    """FLOPs of one optimisation step (forward + backward) on ``batch`` clips."""
    return 3.0 * forward_flops(model_config, frames, batch)


def ttt_flops(model_config: Mapping[str, Any], frames: int, windows: int, epochs: int, *,
              flip_average: bool = False) -> float:
    """FLOPs of one video's test-time training: ``epochs`` steps on its windows and the
    final prediction (twice with flip averaging)."""
    predict = forward_flops(model_config, frames, windows) * (2 if flip_average else 1)
    return epochs * train_step_flops(model_config, frames, windows) + predict


class Matmul(NamedTuple):
    """``count`` batched matmuls of ``batch`` x ``[m, k] @ [k, n]``.

    ``layout`` says which operand is stored transposed, as the model's autodiff runs it:
    ``"nn"`` (``a [m, k]``, ``b [k, n]``), ``"nt"`` (``b`` stored ``[n, k]``: ``x @ w.T``,
    ``q @ k.T``) or ``"tn"`` (``a`` stored ``[k, m]``: ``x.T @ dy``, a weight gradient).
    """

    name: str
    layout: str
    batch: int
    m: int
    k: int
    n: int
    count: int

    @property
    def flops(self) -> float:
        """``2 * batch * m * k * n * count``."""
        return 2.0 * self.batch * self.m * self.k * self.n * self.count

    def operand_shapes(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Shapes of the two operands as stored for ``layout`` (batch axis only if > 1)."""
        lead = (self.batch,) if self.batch > 1 else ()
        a = (self.k, self.m) if self.layout == "tn" else (self.m, self.k)
        b = (self.n, self.k) if self.layout == "nt" else (self.k, self.n)
        return lead + a, lead + b


TEMPORAL_SCORES = "temporal q k^T"  # the op whose backward is stride_jax.attention's own


def forward_matmuls(model_config: Mapping[str, Any], frames: int,
                    windows: int = 1) -> list[Matmul]:
    """Every matmul of one forward pass, grouped by shape (``forward_flops`` sums them).

    q, k and v are three ``[rows, C] @ [C, C]`` matmuls, as ``stride_jax.model`` runs them;
    the dense shapes of the spatial and temporal halves are the same and share a row.
    """
    c = int(model_config["dim_feat"])
    rep = int(model_config.get("dim_rep", 0))
    depth = int(model_config["depth"])
    heads = int(model_config.get("num_heads", 8))
    joints = int(model_config.get("num_joints", 17))
    dim_in = int(model_config.get("dim_in", 3))
    dim_out = int(model_config.get("dim_out", 3))
    hidden = int(c * float(model_config.get("mlp_ratio", 2.0)))
    rows, d = windows * frames * joints, c // heads
    pairs = 2 * 2 * depth  # 2 streams x (spatial, temporal) per depth
    ops = [Matmul("joints_embed", "nn", 1, rows, dim_in, c, 1),
           Matmul("q / k / v", "nn", 1, rows, c, c, 3 * pairs),
           Matmul("attention proj", "nn", 1, rows, c, c, pairs),
           Matmul("mlp fc1", "nn", 1, rows, c, hidden, pairs),
           Matmul("mlp fc2", "nn", 1, rows, hidden, c, pairs),
           Matmul("spatial q k^T", "nt", windows * frames * heads, joints, d, joints, 2 * depth),
           Matmul("spatial p v", "nn", windows * frames * heads, joints, joints, d, 2 * depth),
           Matmul(TEMPORAL_SCORES, "nt", windows * joints * heads, frames, d, frames,
                  2 * depth),
           Matmul("temporal p v", "nn", windows * joints * heads, frames, frames, d, 2 * depth)]
    if model_config.get("att_fuse", True):
        ops.append(Matmul("stream fusion", "nn", 1, rows, 2 * c, 2, depth))
    if rep:
        ops.append(Matmul("pre_logits", "nn", 1, rows, c, rep, 1))
    ops.append(Matmul("head", "nn", 1, rows, rep or c, dim_out, 1))
    return ops


def backward_matmuls(forward: list[Matmul]) -> list[Matmul]:
    """The two matmuls autodiff runs for each forward ``a @ b``: ``d_a`` and ``d_b``.

    For ``nn``: ``d_a = g @ b.T`` (``nt``), ``d_b = a.T @ g`` (``tn``); for ``nt``
    (``a @ b.T``, ``b`` stored ``[n, k]``): ``d_a = g @ b`` (``nn``), ``d_b = g.T @ a``
    (``tn``).  Each has the forward matmul's FLOPs.  (For a dense layer ``a`` is the input
    and ``b`` the weight.)
    """
    out = []
    for op in forward:
        if op.layout == "nn":
            out += [op._replace(name=f"{op.name} (d lhs)", layout="nt", k=op.n, n=op.k),
                    op._replace(name=f"{op.name} (d rhs)", layout="tn", m=op.k, k=op.m)]
        elif op.layout == "nt":
            out += [op._replace(name=f"{op.name} (d lhs)", layout="nn", k=op.n, n=op.k),
                    op._replace(name=f"{op.name} (d rhs)", layout="tn", m=op.n, k=op.m,
                                n=op.k)]
        else:
            raise ValueError(f"no backward rule for layout {op.layout!r}")
    return out


def attention_backward_matmuls(scores: Matmul) -> list[Matmul]:
    """The five matmuls of ``stride_jax.attention``'s recomputing backward pass.

    ``scores`` is the forward ``q k^T`` (``batch`` x ``[N, D] @ [D, N]``).  The backward
    works on the transposed scores: ``s^T = k q^T`` recomputed (``nt``), ``dv = p^T g``
    (``nn``), ``dp^T = v g^T`` (``nt``), ``dq = (ds^T)^T k`` (``tn``), ``dk = ds^T q``
    (``nn``).
    """
    n, d = scores.m, scores.k
    name = scores.name.split(" ")[0] + " attention backward"
    return [scores._replace(name=f"{name}: s^T recomputed", layout="nt", m=n, k=d, n=n),
            scores._replace(name=f"{name}: dv", layout="nn", m=n, k=n, n=d),
            scores._replace(name=f"{name}: dp^T", layout="nt", m=n, k=d, n=n),
            scores._replace(name=f"{name}: dq", layout="tn", m=n, k=n, n=d),
            scores._replace(name=f"{name}: dk", layout="nn", m=n, k=n, n=d)]


def train_step_matmuls(model_config: Mapping[str, Any], frames: int,
                       batch: int = 1) -> list[Matmul]:
    """Every matmul one training step of ``stride_jax.model`` runs on ``batch`` clips.

    The forward pass, autodiff's backward of every plain matmul (not the input layer's
    ``d lhs``: the input is not differentiated) and the five matmuls of the temporal
    attention's recomputing backward (``attention_backward_matmuls``).  Its FLOPs are
    ``train_step_flops`` (3x forward, by convention) minus the input layer's forward FLOPs
    plus one recomputed score matmul per temporal attention.
    """
    forward = forward_matmuls(model_config, frames, batch)
    temporal = [op for op in forward if op.name.startswith("temporal ")]
    plain = [op for op in forward if op not in temporal]
    backward = [op for op in backward_matmuls(plain) if op.name != "joints_embed (d lhs)"]
    scores = next(op for op in temporal if op.name == TEMPORAL_SCORES)
    return forward + backward + attention_backward_matmuls(scores)
