"""The one optimisation step shared by pretraining and test-time alignment.

``make_step`` builds ``step(state, batch, rng) -> (state, metrics)`` where ``state`` is a
plain ``{"params", "opt"}`` pytree and ``batch`` holds ``inputs`` (what the model sees:
``model_input.make_input`` of poses and, with ``model.dim_in = 4``, their validity),
``targets`` (clean poses in pretraining, pseudo-labels at test time), optionally ``mask``
(loss weight per frame ``[B,T]`` or joint ``[B,T,J]``) and ``frame_mask`` (bool ``[B,T]``,
False on padding, which the model's temporal attention then ignores).  Pretraining jits it
over a batch of clips; alignment runs the very same function in ``lax.scan`` under
``vmap`` (one state per video).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax

from stride_jax import losses, model_input
from stride_jax.data import augment
from stride_jax.model import DSTFormer

State = dict[str, Any]
Batch = dict[str, jax.Array]
StepFn = Callable[[State, Batch, jax.Array], tuple[State, dict[str, jax.Array]]]


def make_optimizer(learning_rate: float | optax.Schedule, *, weight_decay: float,
                   grad_clip: float | None = None, b1: float = 0.9) -> optax.GradientTransformation:
    """AdamW (b2 0.999, eps 1e-8; ``b1`` 0.9 by default: PyTorch's) with optional
    global-norm clip."""
    if not 0.0 <= b1 < 1.0:
        raise ValueError(f"Adam b1={b1} must be in [0, 1)")
    adamw = optax.adamw(learning_rate, b1=b1, b2=0.999, eps=1e-8, weight_decay=weight_decay)
    if grad_clip:
        return optax.chain(optax.clip_by_global_norm(grad_clip), adamw)
    return adamw


def init_state(params: Any, optimizer: optax.GradientTransformation) -> State:
    """Training state pytree ``{"params", "opt"}``."""
    return {"params": params, "opt": optimizer.init(params)}


def make_step(model: DSTFormer, loss_weights: Mapping[str, float],
              optimizer: optax.GradientTransformation, *, train: bool = False,
              forward: Callable[[Any, Batch, jax.Array], jax.Array] | None = None) -> StepFn:
    """Builds the pure update ``step(state, batch, rng) -> (state, metrics)``.

    Args:
      model: the DSTFormer.
      loss_weights: term -> weight for ``losses.weighted_loss``.
      optimizer: optax transformation whose state is ``state["opt"]``.
      train: run dropout / drop-path (needs the ``rng``); off for alignment.
      forward: ``forward(params, batch, rng) -> pred`` in place of the whole model on
        ``batch["inputs"]`` (e.g. only the top blocks, from frozen features).

    The step's metrics are scalars: ``loss``, each loss term, and ``grad_norm``.
    """
    weights = {k: float(v) for k, v in loss_weights.items()}

    def whole_model(params: Any, batch: Batch, rng: jax.Array) -> jax.Array:
        return model.apply({"params": params}, batch["inputs"], deterministic=not train,
                           frame_mask=batch.get("frame_mask"),
                           rngs={"dropout": rng} if train else None)

    apply = forward or whole_model

    def loss_fn(params: Any, batch: Batch, rng: jax.Array):
        pred = apply(params, batch, rng)
        total, terms = losses.weighted_loss(pred, batch["targets"], batch.get("mask"), weights)
        return total, terms

    def step(state: State, batch: Batch, rng: jax.Array):
        (total, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state["params"], batch, rng)
        updates, opt = optimizer.update(grads, state["opt"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        metrics = {"loss": total, "grad_norm": optax.global_norm(grads), **terms}
        return {"params": params, "opt": opt}, metrics

    return step


def reverse_real_frames(x: jax.Array, frame_mask: jax.Array | None) -> jax.Array:
    """``x [..., W, ...]`` (time on axis ``frame_mask.ndim - 1``) with each window's real
    frames (``frame_mask [..., W]``: real first, then padding) in reverse order and its
    padding left in place; an involution.  Without a mask every frame is reversed."""
    if frame_mask is None:
        return jnp.flip(x, axis=-3)
    width = frame_mask.shape[-1]
    n = jnp.sum(frame_mask, axis=-1, keepdims=True).astype(jnp.int32)  # [..., 1]
    t = jnp.arange(width)
    idx = jnp.where(t < n, n - 1 - t, t)  # [..., W]
    idx = idx.reshape(idx.shape + (1,) * (x.ndim - idx.ndim))
    return jnp.take_along_axis(x, idx, axis=frame_mask.ndim - 1)


def predict(model: DSTFormer, params: Any, inputs: jax.Array, *,
            frame_mask: jax.Array | None = None, flip_average: bool = False,
            reverse_average: bool = False) -> jax.Array:
    """Model prediction ``[B,T,J,C] -> [B,T,J,3]``, optionally averaged over test-time
    augmentations.

    ``inputs`` come from ``model_input.make_input`` (C = ``model.dim_in``).
    ``flip_average``: mirroring (``augment.mirror``: x -> -x, left/right joints swapped; a
    validity channel follows its joints) on the way in and again on the way out, as
    MotionBERT's flip test-time augmentation.  ``reverse_average``: the real frames played
    backwards on the way in and put back in order on the way out
    (:func:`reverse_real_frames`; the prior is pretrained on reversed clips too).  Both:
    the mean of the four.
    """
    def one(x: jax.Array) -> jax.Array:
        pred = model.apply({"params": params}, x, frame_mask=frame_mask)
        if not flip_average:
            return pred
        flipped = model.apply({"params": params}, model_input.mirror_input(x),
                              frame_mask=frame_mask)
        return 0.5 * (pred + augment.mirror(flipped))

    pred = one(inputs)
    if not reverse_average:
        return pred
    back = one(reverse_real_frames(inputs, frame_mask))
    return 0.5 * (pred + reverse_real_frames(back, frame_mask))
