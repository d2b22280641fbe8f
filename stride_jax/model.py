"""Flax DSTFormer (MotionBERT's dual-stream spatio-temporal transformer), used seq2seq 3D -> 3D.

Faithful to MotionBERT's ``lib/model/DSTformer.py`` so that its PyTorch weights can be
imported (see ``scripts/convert_motionbert_checkpoint.py``): sub-module and parameter
names follow the PyTorch ones (``joints_embed``, ``pos_embed``, ``temp_embed``,
``blocks_st_<i>/attn_s/qkv`` ... ``ts_attn_<i>``, ``norm``, ``pre_logits_fc``, ``head``).

Shapes: input ``[B, T, J, 3]`` (root-relative metres), output ``[B, T, J, 3]``, any
``T <= maxlen``.  Internally tokens are ``[B, T, J, C]``; spatial attention mixes the J
joints of one frame, temporal attention mixes the T frames of one joint (bidirectional).
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from stride_jax.attention import attention
from stride_jax.model_input import check_dim_in

_LN_EPS = 1e-6  # MotionBERT builds every LayerNorm with eps=1e-6.
_dense_init = nn.initializers.truncated_normal(stddev=0.02)


class _FlatDense(nn.Dense):
    """``nn.Dense`` applied to ``[-1, C]`` rows: same params, and XLA's CPU backward pass
    runs ~1.5x faster on 2-D operands than on ``[B, T, J, C]`` ones."""

    def __call__(self, inputs: jax.Array) -> jax.Array:
        out = super().__call__(inputs.reshape(-1, inputs.shape[-1]))
        return out.reshape(inputs.shape[:-1] + (self.features,))


def _dense(features: int, name: str, dtype: Any) -> nn.Dense:
    return _FlatDense(
        features,
        kernel_init=_dense_init,
        bias_init=nn.initializers.zeros,
        dtype=dtype,
        param_dtype=jnp.float32,
        name=name,
    )


def _layer_norm(name: str, dtype: Any) -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=_LN_EPS, dtype=dtype, param_dtype=jnp.float32, name=name)


def gelu(x: jax.Array) -> jax.Array:
    """Exact (erf) GELU, as PyTorch's default ``nn.GELU``.

    Written with ``erf``: ``jax.nn.gelu(approximate=False)`` lowers to ``erfc`` on XLA CPU,
    which is ~2.8x slower on ``[4131, 256]`` (same values to float rounding).
    """
    return 0.5 * x * (1.0 + jax.lax.erf(x * jnp.asarray(0.7071067811865476, x.dtype)))


class _QKV(nn.Module):
    """MotionBERT's fused ``qkv`` Linear (params ``kernel [C, 3C]``, ``bias [3C]``), applied
    as three ``[rows, C] x [C, C]`` matmuls so q, k and v come out as separate arrays
    (no ``[..., 3, H, D]`` intermediate to pad, transpose and slice)."""

    features: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        dim = x.shape[-1]
        kernel = self.param("kernel", _dense_init, (dim, 3 * self.features), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (3 * self.features,), jnp.float32)
        rows = x.reshape(-1, dim).astype(self.dtype)
        kernel, bias = kernel.astype(self.dtype), bias.astype(self.dtype)
        c = self.features
        return tuple((rows @ kernel[:, i * c:(i + 1) * c] + bias[i * c:(i + 1) * c])
                     .reshape(x.shape[:-1] + (c,)) for i in range(3))


def _attention_probs(q: jax.Array, k: jax.Array, bias: jax.Array | None,
                     dtype: Any) -> jax.Array:
    """``softmax(q k^T + bias)`` (float32 softmax) with autodiff's own backward."""
    logits = q @ k.swapaxes(-1, -2)
    if bias is not None:
        logits = logits + bias
    return jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(dtype)


class Attention(nn.Module):
    """Multi-head self-attention over joints (``mode='spatial'``) or frames (``'temporal'``)."""

    dim: int
    num_heads: int
    mode: str
    attn_drop: float = 0.0
    proj_drop: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool = True,
                 frame_mask: jax.Array | None = None) -> jax.Array:
        batch, frames, joints, dim = x.shape
        if dim % self.num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {self.num_heads}")
        if self.mode not in ("spatial", "temporal"):
            raise ValueError(f"unknown attention mode {self.mode!r}")
        heads, head_dim = self.num_heads, dim // self.num_heads
        # Heads-major layouts make both attentions plain batched matmuls over contiguous
        # [N, D] blocks, which XLA's CPU backend runs ~3x faster than mixed-axis einsums.
        perm = (0, 1, 3, 2, 4) if self.mode == "spatial" else (0, 2, 3, 1, 4)
        q, k, v = (a.reshape(batch, frames, joints, heads, head_dim).transpose(perm)
                   for a in _QKV(dim, self.dtype, name="qkv")(x))
        q = q * jnp.asarray(head_dim**-0.5, q.dtype)
        bias = None
        if frame_mask is not None and self.mode == "temporal":  # padded frames: never attended
            bias = jnp.where(frame_mask, 0.0, -1e9)[:, None, None, None, :]
        if self.attn_drop and not deterministic:  # dropout on the probabilities: plain path
            attn = _attention_probs(q, k, bias, v.dtype)
            out = nn.Dropout(self.attn_drop)(attn, deterministic=False) @ v
        elif self.mode == "spatial":  # 17 x 17 scores: the plain path is faster
            out = _attention_probs(q, k, bias, v.dtype) @ v
        else:
            out = attention(q, k, v, bias)
        out = out.transpose(0, 1, 3, 2, 4) if self.mode == "spatial" else out.transpose(
            0, 3, 1, 2, 4)  # [B, T, J, H, D]
        out = out.reshape(batch, frames, joints, dim)  # heads merge as (H, D)
        out = _dense(dim, "proj", self.dtype)(out)
        return nn.Dropout(self.proj_drop)(out, deterministic=deterministic)


class Mlp(nn.Module):
    """Linear -> exact (erf) GELU -> Linear, as MotionBERT's MLP."""

    dim: int
    hidden: int
    drop: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool = True) -> jax.Array:
        x = _dense(self.hidden, "fc1", self.dtype)(x)
        x = gelu(x)
        x = nn.Dropout(self.drop)(x, deterministic=deterministic)
        x = _dense(self.dim, "fc2", self.dtype)(x)
        return nn.Dropout(self.drop)(x, deterministic=deterministic)


class DropPath(nn.Module):
    """Stochastic depth: drops the residual branch per sample and frame (``[B, T, J, C]``)."""

    rate: float

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool = True) -> jax.Array:
        if deterministic or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        rng = self.make_rng("dropout")
        # MotionBERT drops per token row of [B*T, J, C], i.e. per sample and frame.
        mask = jax.random.bernoulli(rng, keep, x.shape[:2] + (1,) * (x.ndim - 2))
        return jnp.where(mask, x / keep, 0.0).astype(x.dtype)


class Block(nn.Module):
    """One stream of one depth: ``order='st'`` (spatial then temporal) or ``'ts'``."""

    dim: int
    num_heads: int
    mlp_ratio: float
    order: str
    drop: float = 0.0
    attn_drop: float = 0.0
    drop_path: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool = True,
                 frame_mask: jax.Array | None = None) -> jax.Array:
        hidden = int(self.dim * self.mlp_ratio)
        drop_path = DropPath(self.drop_path)

        def pair(h: jax.Array, kind: str) -> jax.Array:
            mode = "spatial" if kind == "s" else "temporal"
            attn = Attention(self.dim, self.num_heads, mode, self.attn_drop, self.drop,
                             self.dtype, name=f"attn_{kind}")
            mlp = Mlp(self.dim, hidden, self.drop, self.dtype, name=f"mlp_{kind}")
            h = h + drop_path(attn(_layer_norm(f"norm1_{kind}", self.dtype)(h), deterministic,
                                   frame_mask), deterministic)
            return h + drop_path(mlp(_layer_norm(f"norm2_{kind}", self.dtype)(h), deterministic),
                                 deterministic)

        if self.order not in ("st", "ts"):
            raise ValueError(f"unknown block order {self.order!r}")
        for kind in self.order:
            x = pair(x, kind)
        return x


class DSTFormer(nn.Module):
    """Dual-stream spatio-temporal transformer, ``[B,T,J,3] -> [B,T,J,3]``.

    ``residual=True`` (our CPU prior; MotionBERT has no such option) adds the input to
    the head's output, so the untrained model starts at the identity and learns
    corrections: it reaches a useful denoiser with far less data and compute.
    ``dim_in=4`` takes a validity channel after the 3 pose channels
    (``stride_jax.model_input``); the output and the residual stay the 3 pose channels.
    """

    dim_in: int = 3
    dim_out: int = 3
    dim_feat: int = 128
    dim_rep: int = 256
    depth: int = 3
    num_heads: int = 8
    mlp_ratio: float = 2.0
    num_joints: int = 17
    maxlen: int = 243
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    att_fuse: bool = True
    residual: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool = True,
                 frame_mask: jax.Array | None = None, *, features: jax.Array | None = None,
                 first_block: int = 0, last_block: int | None = None) -> jax.Array:
        """``x [B,T,J,dim_in]`` -> ``[B,T,J,3]``; ``frame_mask [B,T]`` hides padded frames.

        With a ``frame_mask`` no frame attends to a masked frame, so the outputs at
        unmasked frames equal those of the unpadded sequence (up to the temporal
        positional embedding, which is indexed from the window start either way).

        The network can run in two parts (test-time training of the top blocks only,
        ``ttt.adapt_blocks``): ``last_block=s`` returns the features ``[B,T,J,dim_feat]``
        after the first ``s`` block pairs; ``features=h, first_block=s`` continues from
        them (``x`` still gives the residual's input).  Both parts together equal one call.
        """
        if x.ndim != 4 or x.shape[-2:] != (self.num_joints, self.dim_in):
            raise ValueError(
                f"DSTFormer expects [B, T, {self.num_joints}, {self.dim_in}], got {x.shape}")
        frames = x.shape[1]
        if frames > self.maxlen:
            raise ValueError(
                f"sequence of {frames} frames exceeds maxlen {self.maxlen}: cut it into windows")
        c = self.dim_feat
        last = self.depth if last_block is None else last_block
        if not 0 <= first_block <= last <= self.depth:
            raise ValueError(f"blocks {first_block}..{last} outside the model's "
                             f"0..{self.depth}")
        if (features is None) != (first_block == 0):
            raise ValueError("features are needed exactly when first_block > 0")
        if features is None:
            pos_embed = self.param("pos_embed", _dense_init, (1, self.num_joints, c),
                                   jnp.float32)
            temp_embed = self.param("temp_embed", _dense_init, (1, self.maxlen, 1, c),
                                    jnp.float32)
            h = _dense(c, "joints_embed", self.dtype)(x.astype(self.dtype))
            h = h + pos_embed.astype(self.dtype) + temp_embed[:, :frames].astype(self.dtype)
            h = nn.Dropout(self.drop_rate)(h, deterministic=deterministic)
        else:
            h = features.astype(self.dtype)
        rates = [self.drop_path_rate * i / max(self.depth - 1, 1) for i in range(self.depth)]
        block = functools.partial(Block, c, self.num_heads, self.mlp_ratio, drop=self.drop_rate,
                                  attn_drop=self.attn_drop_rate, dtype=self.dtype)
        for i in range(first_block, last):
            x_st = block("st", drop_path=rates[i], name=f"blocks_st_{i}")(h, deterministic,
                                                                            frame_mask)
            x_ts = block("ts", drop_path=rates[i], name=f"blocks_ts_{i}")(h, deterministic,
                                                                            frame_mask)
            if self.att_fuse:
                fuse = nn.Dense(2, kernel_init=nn.initializers.zeros,
                                bias_init=nn.initializers.constant(0.5), dtype=self.dtype,
                                param_dtype=jnp.float32, name=f"ts_attn_{i}")
                alpha = jax.nn.softmax(
                    fuse(jnp.concatenate([x_st, x_ts], axis=-1)).astype(jnp.float32), axis=-1)
                alpha = alpha.astype(x_st.dtype)
                h = x_st * alpha[..., 0:1] + x_ts * alpha[..., 1:2]
            else:
                h = (x_st + x_ts) * 0.5
        if last < self.depth:
            return h
        h = _layer_norm("norm", self.dtype)(h)
        if self.dim_rep:
            h = jnp.tanh(_dense(self.dim_rep, "pre_logits_fc", self.dtype)(h))
        out = _dense(self.dim_out, "head", self.dtype)(h).astype(jnp.float32)
        if self.residual:  # predict a correction of the input (not in MotionBERT)
            out = out + x[..., :self.dim_out].astype(jnp.float32)  # pose channels only
        return out


_BLOCK_PREFIXES = ("blocks_st_", "blocks_ts_", "ts_attn_")


def block_index(name: str) -> int | None:
    """The block pair a top-level DSTFormer parameter belongs to (``blocks_st_<i>``,
    ``blocks_ts_<i>``, ``ts_attn_<i>``: ``i``); None for the embeddings, norm and head."""
    return int(name.rsplit("_", 1)[1]) if name.startswith(_BLOCK_PREFIXES) else None


def build_model(model_config: ml_collections.ConfigDict | dict) -> DSTFormer:
    """Builds a DSTFormer from ``config.model`` (fields as in ``configs/*.py``).

    Args:
      model_config: mapping with ``dim_feat, dim_rep, depth, num_heads, mlp_ratio, maxlen``
        and optionally ``num_joints, drop_rate, attn_drop_rate, drop_path_rate, att_fuse,
        dtype`` (``'float32'`` or ``'bfloat16'``: compute dtype; params stay float32).
    """
    cfg = dict(model_config)
    dtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[cfg.pop("dtype", "float32")]
    allowed = {f for f in DSTFormer.__dataclass_fields__ if f not in ("parent", "name")}
    unknown = set(cfg) - allowed
    if unknown:
        raise ValueError(f"unknown model config fields: {sorted(unknown)}")
    check_dim_in(cfg.get("dim_in", 3))
    return DSTFormer(dtype=dtype, **cfg)


def init_params(model: DSTFormer, key: jax.Array, frames: int | None = None) -> Any:
    """Initialises parameters with a dummy ``[1, frames, J, 3]`` input (default: 1 frame)."""
    dummy = jnp.zeros((1, frames or 1, model.num_joints, model.dim_in), jnp.float32)
    return model.init({"params": key}, dummy)["params"]


def count_params(params: Any) -> int:
    """Total number of scalar parameters in a pytree."""
    return int(sum(p.size for p in jax.tree_util.tree_leaves(params)))
