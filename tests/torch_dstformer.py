"""PyTorch reference: MotionBERT's DSTformer, the STRIDE losses and eager STRIDE training.

Used by ``tests/test_convert.py`` (Flax vs. PyTorch equivalence of converted weights) and
by the speed benchmark as the PyTorch baseline.  ``DSTformer.state_dict()`` has exactly
MotionBERT's keys (``joints_embed.weight``, ``blocks_st.0.attn_s.qkv.weight``,
``ts_attn.0.weight``, ``pre_logits.fc.weight`` ...) and the computation follows
MotionBERT's layout: tokens are ``[B*T, J, C]``; temporal attention regroups them per joint.

Shapes: poses ``[B, T, 17, 3]`` (root-relative metres).  Losses match ``stride_jax.losses``
without masks.  Importing this module needs ``torch`` and the installed package
(``pip install -e .``).
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from stride_jax import skeleton

LN_EPS = 1e-6  # MotionBERT's load_backbone uses LayerNorm(eps=1e-6).
_INIT_STD = 0.02


class Mlp(nn.Module):
    """fc1 -> exact GELU -> dropout -> fc2 -> dropout."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()  # exact (erf) GELU, torch's default
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class Attention(nn.Module):
    """Multi-head attention over the joints of a frame or the frames of a joint."""

    def __init__(self, dim: int, num_heads: int, mode: str, attn_drop: float = 0.0,
                 proj_drop: float = 0.0):
        super().__init__()
        if mode not in ("spatial", "temporal"):
            raise ValueError(f"unknown attention mode {mode!r}")
        self.num_heads, self.mode = num_heads, mode
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        """``x [B*T, J, C]`` with ``frames = T`` -> ``[B*T, J, C]``."""
        rows, joints, dim = x.shape
        heads = self.num_heads
        head_dim = dim // heads
        qkv = self.qkv(x).reshape(rows, joints, 3, heads, head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each [B*T, H, J, D]
        if self.mode == "temporal":  # -> [B, H, J, T, D]: attend across frames per joint
            q, k, v = (t.reshape(-1, frames, heads, joints, head_dim).permute(0, 2, 3, 1, 4)
                       for t in (q, k, v))
        attn = self.attn_drop(((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1))
        out = attn @ v
        if self.mode == "temporal":
            out = out.permute(0, 3, 2, 1, 4)  # [B, T, J, H, D]
        else:
            out = out.transpose(1, 2)  # [B*T, J, H, D]
        return self.proj_drop(self.proj(out.reshape(rows, joints, dim)))


class DropPath(nn.Module):
    """Stochastic depth per row of ``[B*T, J, C]`` (i.e. per sample and frame), as MotionBERT."""

    def __init__(self, rate: float):
        super().__init__()
        self.rate = rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        mask = torch.rand((x.shape[0],) + (1,) * (x.ndim - 1), device=x.device) < keep
        return x * mask.to(x.dtype) / keep


class Block(nn.Module):
    """One stream of one depth: ``order='st'`` (spatial pair first) or ``'ts'``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, order: str,
                 drop: float = 0.0, attn_drop: float = 0.0, drop_path: float = 0.0):
        super().__init__()
        if order not in ("st", "ts"):
            raise ValueError(f"unknown block order {order!r}")
        self.order = order
        hidden = int(dim * mlp_ratio)
        # Registration order matches MotionBERT so state_dict() lists keys identically.
        self.norm1_s = nn.LayerNorm(dim, eps=LN_EPS)
        self.norm1_t = nn.LayerNorm(dim, eps=LN_EPS)
        self.attn_s = Attention(dim, num_heads, "spatial", attn_drop, drop)
        self.attn_t = Attention(dim, num_heads, "temporal", attn_drop, drop)
        self.drop_path = DropPath(drop_path)
        self.norm2_s = nn.LayerNorm(dim, eps=LN_EPS)
        self.norm2_t = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp_s = Mlp(dim, hidden, drop)
        self.mlp_t = Mlp(dim, hidden, drop)

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        for kind in self.order:
            norm1, attn = getattr(self, f"norm1_{kind}"), getattr(self, f"attn_{kind}")
            norm2, mlp = getattr(self, f"norm2_{kind}"), getattr(self, f"mlp_{kind}")
            x = x + self.drop_path(attn(norm1(x), frames))
            x = x + self.drop_path(mlp(norm2(x)))
        return x


class DSTformer(nn.Module):
    """MotionBERT's dual-stream spatio-temporal transformer, ``[B,T,J,3] -> [B,T,J,3]``."""

    def __init__(self, dim_in: int = 3, dim_out: int = 3, dim_feat: int = 256,
                 dim_rep: int = 512, depth: int = 5, num_heads: int = 8,
                 mlp_ratio: float = 4.0, num_joints: int = 17, maxlen: int = 243,
                 drop_rate: float = 0.0, attn_drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0, att_fuse: bool = True, residual: bool = False):
        super().__init__()
        self.maxlen, self.num_joints, self.att_fuse = maxlen, num_joints, att_fuse
        self.residual = residual  # stride_jax's optional input + correction output
        self.joints_embed = nn.Linear(dim_in, dim_feat)
        self.pos_drop = nn.Dropout(drop_rate)
        rates = torch.linspace(0, drop_path_rate, depth).tolist()

        def stream(order: str) -> nn.ModuleList:
            return nn.ModuleList(Block(dim_feat, num_heads, mlp_ratio, order, drop_rate,
                                       attn_drop_rate, rates[i]) for i in range(depth))

        self.blocks_st = stream("st")
        self.blocks_ts = stream("ts")
        self.norm = nn.LayerNorm(dim_feat, eps=LN_EPS)
        self.pre_logits = nn.Sequential(OrderedDict(
            fc=nn.Linear(dim_feat, dim_rep), act=nn.Tanh()))
        self.head = nn.Linear(dim_rep, dim_out)
        self.temp_embed = nn.Parameter(torch.zeros(1, maxlen, 1, dim_feat))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_joints, dim_feat))
        if att_fuse:
            self.ts_attn = nn.ModuleList(nn.Linear(2 * dim_feat, 2) for _ in range(depth))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """MotionBERT's init: trunc-normal(0.02) weights and embeddings, fusion 0 / 0.5."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=_INIT_STD)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.trunc_normal_(self.temp_embed, std=_INIT_STD)
        nn.init.trunc_normal_(self.pos_embed, std=_INIT_STD)
        if self.att_fuse:
            for fuse in self.ts_attn:
                fuse.weight.fill_(0.0)
                fuse.bias.fill_(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, T, J, dim_in]`` -> ``[B, T, J, dim_out]`` for any ``T <= maxlen``."""
        batch, frames, joints, _ = x.shape
        if frames > self.maxlen:
            raise ValueError(f"sequence of {frames} frames exceeds maxlen {self.maxlen}")
        if joints != self.num_joints:
            raise ValueError(f"expected {self.num_joints} joints, got {joints}")
        h = self.joints_embed(x) + self.pos_embed + self.temp_embed[:, :frames]
        h = self.pos_drop(h.reshape(batch * frames, joints, -1))
        for i, (block_st, block_ts) in enumerate(zip(self.blocks_st, self.blocks_ts)):
            x_st, x_ts = block_st(h, frames), block_ts(h, frames)
            if self.att_fuse:
                alpha = self.ts_attn[i](torch.cat([x_st, x_ts], dim=-1)).softmax(dim=-1)
                h = x_st * alpha[..., 0:1] + x_ts * alpha[..., 1:2]
            else:
                h = (x_st + x_ts) * 0.5
        h = self.pre_logits(self.norm(h).reshape(batch, frames, joints, -1))
        out = self.head(h)
        return out + x if self.residual else out


def build_from_config(model_config: Mapping[str, Any]) -> DSTformer:
    """A DSTformer from a ``stride_jax`` ``config.model`` dict (``dtype`` is ignored)."""
    cfg = {k: v for k, v in dict(model_config).items() if k != "dtype"}
    return DSTformer(**cfg)


@torch.no_grad()
def randomize_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Fills every parameter (fusion layers included) with random values, in place.

    Matrices get ``N(0, 1/fan_in)``, LayerNorm scales ``1 + N(0, 0.1^2)``, biases and
    embeddings ``N(0, 0.1^2)``: unlike MotionBERT's init, this makes every layer matter.
    """
    gen = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        noise = torch.randn(p.shape, generator=gen)
        if p.ndim == 2:
            p.copy_(noise / p.shape[1] ** 0.5)
        elif name.endswith("weight"):
            p.copy_(1.0 + 0.1 * noise)
        else:
            p.copy_(0.1 * noise)
    return model


def state_dict_numpy(model: nn.Module) -> dict[str, np.ndarray]:
    """``model.state_dict()`` as float32 numpy arrays (MotionBERT keys, no prefix)."""
    return {k: v.detach().cpu().float().numpy() for k, v in model.state_dict().items()}


def load_numpy_state_dict(model: nn.Module, state_dict: Mapping[str, np.ndarray]) -> nn.Module:
    """Loads numpy arrays (e.g. ``stride_jax.convert.params_to_state_dict``) strictly."""
    model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in state_dict.items()},
                          strict=True)
    return model


def mpjpe(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean per-joint L2 distance, ``[..., T, J, 3] x2 -> []``."""
    return torch.linalg.vector_norm(pred - target, dim=-1).mean()


def n_mpjpe(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MPJPE after the least-squares scale of ``pred`` per sample and frame."""
    num = (pred * target).sum(dim=(-2, -1), keepdim=True)
    den = (pred * pred).sum(dim=(-2, -1), keepdim=True).clamp_min(1e-8)
    return mpjpe(num / den * pred, target)


def velocity(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean L2 error of first temporal differences (frames on axis -3)."""
    return mpjpe(torch.diff(pred, dim=-3), torch.diff(target, dim=-3))


def limb_var(pred: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    """Unbiased variance over time of each bone length, mean over bones and samples."""
    del target
    parent = torch.as_tensor(skeleton.BONES[:, 0], dtype=torch.long)
    child = torch.as_tensor(skeleton.BONES[:, 1], dtype=torch.long)
    lengths = torch.linalg.vector_norm(pred[..., child, :] - pred[..., parent, :], dim=-1)
    return lengths.var(dim=-2).mean()


LOSSES = {"mpjpe": mpjpe, "n_mpjpe": n_mpjpe, "velocity": velocity, "limb_var": limb_var}


def weighted_loss(pred: torch.Tensor, target: torch.Tensor,
                  weights: Mapping[str, float]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``sum_k weights[k] * LOSSES[k](pred, target)`` over non-zero weights."""
    unknown = set(weights) - set(LOSSES)
    if unknown:
        raise ValueError(f"unknown loss terms {sorted(unknown)}; known: {sorted(LOSSES)}")
    terms = {k: LOSSES[k](pred, target) for k, w in weights.items() if float(w) != 0.0}
    if not terms:
        raise ValueError("all loss weights are zero")
    total = sum(float(weights[k]) * v for k, v in terms.items())
    return total, terms


def make_optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW over the trainable parameters (STRIDE's optimizer; torch default betas/eps)."""
    return torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr,
                             weight_decay=weight_decay)


def pretrain_step_reference(model: nn.Module, optimizer: torch.optim.Optimizer,
                            inputs: torch.Tensor, targets: torch.Tensor,
                            loss_weights: Mapping[str, float],
                            grad_clip: float | None = None) -> float:
    """One eager training step: forward, weighted loss, backward, (clip), AdamW step.

    Args:
      inputs, targets: ``[B, T, 17, 3]`` corrupted input and clean target clips, metres.

    Returns:
      The total loss before the update, as a Python float.
    """
    model.train()
    optimizer.zero_grad(set_to_none=True)
    loss, _ = weighted_loss(model(inputs), targets, loss_weights)
    loss.backward()
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    return float(loss.detach())


def ttt_reference(model: nn.Module, poses_root_rel: torch.Tensor | np.ndarray, steps: int,
                  lr: float, weight_decay: float,
                  loss_weights: Mapping[str, float]) -> tuple[np.ndarray, list[float]]:
    """STRIDE test-time training of one window, eagerly in PyTorch.

    A copy of ``model`` is fitted to the pseudo-labels (input and target are the same
    estimated poses): ``steps`` times AdamW on forward + weighted loss + backward; then the
    adapted copy predicts the window.  ``model`` itself is left unchanged.

    Args:
      poses_root_rel: ``[1, T, 17, 3]`` root-relative pseudo-labels, metres.

    Returns:
      ``(prediction [1, T, 17, 3] float32 numpy, per-step total losses)``.
    """
    adapted = copy.deepcopy(model)
    if isinstance(poses_root_rel, torch.Tensor):
        poses = poses_root_rel.detach().float()
    else:
        poses = torch.from_numpy(np.asarray(poses_root_rel, dtype=np.float32))
    poses = poses.to(next(adapted.parameters()).device)  # the model's device (CPU or GPU)
    optimizer = make_optimizer(adapted, lr, weight_decay)
    losses = [pretrain_step_reference(adapted, optimizer, poses, poses, loss_weights)
              for _ in range(steps)]
    adapted.eval()
    with torch.no_grad():
        prediction = adapted(poses)
    return prediction.cpu().numpy(), losses
