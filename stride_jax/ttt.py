"""Batched test-time training: one compiled ``jit(vmap(scan(step)))`` for K videos.

Each video arrives as ``N`` windows of ``W`` frames of root-relative pseudo-labels
(``inputs [K, N, W, 17, 3]``), loss weights (``weights [K, N, W]``: 1 on detected frames,
``ttt.interp_weight`` on interpolated ones, 0 on padding) and ``frame_mask [K, N, W]``
(False on padding, which the model never attends to).  Every video gets its own copy of
the prior's parameters and AdamW state; ``lax.scan`` runs ``ttt.epochs`` optimisation
steps (one step = all windows of the video = one epoch, lr x ``lr_decay`` per epoch) and
ends with the fine-tuned prior's prediction.  With ``ttt.mask_ratio > 0`` every step hides
random spans of the input (refilled by interpolation, as in pretraining) and weights the
loss on the visible frames by ``ttt.unmasked_weight`` (our addition, not in the paper: the
prior then learns the video from context instead of copying the noisy input).  Padding
videos and windows to a common shape does not change any real video's result (masked
losses, masked attention).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from stride_jax import corrupt, distributed, model_input, progress, smoothing, train_step
from stride_jax.interpolate import fill_missing
from stride_jax.model import DSTFormer, block_index

TTTFn = Callable[..., tuple[jax.Array, jax.Array, jax.Array]]


SCHEDULES = ("exponential", "cosine")


def lr_schedule(ttt: ml_collections.ConfigDict) -> optax.Schedule:
    """The per-epoch learning rate of ``ttt.schedule``.

    ``"exponential"`` (the paper's): ``ttt.lr`` x ``ttt.lr_decay`` after every epoch.
    ``"cosine"``: linear warm-up over ``ttt.warmup_epochs`` from 0 to ``ttt.lr``, then a
    cosine decay to 0 at epoch ``ttt.epochs``.  ``lr_decay`` belongs to the exponential
    schedule only.
    """
    kind = ttt.get("schedule", "exponential")
    if kind not in SCHEDULES:
        raise ValueError(f"ttt.schedule={kind!r}: choose one of {SCHEDULES}")
    if kind == "exponential":
        return optax.exponential_decay(ttt.lr, transition_steps=1, decay_rate=ttt.lr_decay,
                                       staircase=True)
    warmup, epochs = int(ttt.get("warmup_epochs", 0)), int(ttt.epochs)
    if not 0 <= warmup < max(epochs, 1):
        raise ValueError(f"ttt.warmup_epochs={warmup} must be in [0, epochs={epochs})")
    return optax.warmup_cosine_decay_schedule(
        0.0 if warmup else ttt.lr, ttt.lr, max(warmup, 1), max(epochs, 2), 0.0)


def make_optimizer(ttt: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """AdamW, one step per epoch, at :func:`lr_schedule`, first-moment decay
    ``ttt.adam_b1`` (0.9, PyTorch's, when the config lacks it)."""
    return train_step.make_optimizer(lr_schedule(ttt), weight_decay=ttt.weight_decay,
                                     b1=float(ttt.get("adam_b1", 0.9)))


def smoothing_choice(ttt: ml_collections.ConfigDict) -> tuple[int, tuple[int, ...]]:
    """``(window, candidates)`` of the targets' Savitzky-Golay smoothing.

    ``ttt.target_smoothing`` > 0 smooths every video with that window (frames);
    ``ttt.smoothing_candidates`` (non-empty; 0 = raw) picks one per window of frames: the
    candidate whose smoothed detections lie closest to the prior's own prediction before
    TTT on detected joints, so fast motion keeps its detail and slow motion loses its
    jitter.  Setting both is an error.
    """
    window = smoothing.check_window(ttt.get("target_smoothing", 0))
    candidates = tuple(smoothing.check_window(c) for c in ttt.get("smoothing_candidates", ()))
    if window and candidates:
        raise ValueError(f"ttt.target_smoothing={window} and ttt.smoothing_candidates="
                         f"{candidates}: set one (for one fixed window also pass "
                         f"--config.ttt.smoothing_candidates='()'; target_smoothing=0 to "
                         f"pick per window)")
    return window, candidates


def pick_smoothing(poses: jax.Array, frame_mask: jax.Array, detected: jax.Array,
                   reference: jax.Array, candidates: tuple[int, ...]) -> jax.Array:
    """``poses [..., W, J, 3]`` smoothed per window with the candidate window whose result
    is closest (mean joint distance over ``detected [..., W, J]``) to ``reference``."""
    smoothed = jnp.stack([smoothing.savgol(poses, frame_mask, c) for c in candidates])
    dist = jnp.linalg.norm(smoothed - reference, axis=-1)  # [C, ..., W, J]
    w = detected.astype(poses.dtype)
    err = jnp.sum(dist * w, axis=(-2, -1)) / jnp.maximum(jnp.sum(w, axis=(-2, -1)), 1.0)
    best = jnp.argmin(err, axis=0)  # [...]
    onehot = jax.nn.one_hot(best, len(candidates), axis=0, dtype=poses.dtype)
    return jnp.einsum("c...,c...tjk->...tjk", onehot, smoothed)


def make_run_one_video(model: DSTFormer, ttt: ml_collections.ConfigDict) -> Callable:
    """``run(params, inputs [N,W,J,C], weights [N,W], frame_mask [N,W], key)``.

    ``inputs`` are the model inputs (``model_input.make_input``: pseudo-label poses, and
    with ``model.dim_in = 4`` the detection channel, 0 on padding); the pseudo-labels are
    their pose channels (smoothed along time with ``ttt.target_smoothing``, a
    Savitzky-Golay window in frames, when it is > 0: our addition).  With
    ``ttt.gap_target = "prior"`` (our addition; needs ``model.dim_in = 4``) the
    pseudo-labels of joints the detection channel marks as undetected are the prior's own
    prediction before any TTT step instead of the interpolation, weighted by
    ``ttt.interp_weight`` as usual.  Returns
    ``(pred [N,W,J,3], loss_curve [epochs], ok [])``: ``ok`` is False when a loss or the
    prediction is not finite; then ``pred`` is the input (the interpolation) and the
    parameters stop at the last finite step.  Each finished epoch is reported to
    ``stride_jax.progress`` from inside the loop unless ``ttt.progress`` is False, as
    ``epoch_offset + epoch`` (a call that trains its videos in groups counts on).
    """
    optimizer = make_optimizer(ttt)
    split = frozen_blocks(model, ttt)
    mask_ratio = float(ttt.get("mask_ratio", 0.0))
    span_min, span_max = (int(x) for x in ttt.get("mask_span", (5, 30)))
    unmasked_weight = float(ttt.get("unmasked_weight", 1.0))
    report_progress = bool(ttt.get("progress", True))
    smooth, candidates = smoothing_choice(ttt)
    prior_gaps = gap_targets_from_prior(model, ttt)
    ramp = gap_output_ramp(ttt)
    blend, blend_ramp = output_blend(ttt), max(ramp, 1)
    if int(ttt.epochs) == 0:  # the prior alone: no fine-tuning, so no gap targets or fade
        prior_gaps, ramp = False, 0
        if not blend:  # nor targets
            smooth, candidates = 0, ()
    tta = dict(flip_average=bool(ttt.flip_average),
               reverse_average=bool(ttt.get("reverse_average", False)))

    def run(params: Any, inputs: jax.Array, weights: jax.Array, frame_mask: jax.Array,
            key: jax.Array, epoch_offset: jax.Array | int = 0):
        poses = model_input.poses_of(inputs)
        detected = _detected(model, inputs, weights)  # [N, W, J]
        targets = smoothing.savgol(poses, frame_mask, smooth)  # poses unless smoothing
        if prior_gaps or candidates or ramp or not int(ttt.epochs):
            # the prior's prediction before TTT
            before = jax.lax.stop_gradient(train_step.predict(
                model, params, inputs, frame_mask=frame_mask, **tta))
        if candidates:
            targets = pick_smoothing(poses, frame_mask, detected, before, candidates)
        if prior_gaps:  # the prior's in-fill, not the interpolation, on undetected joints
            targets = jnp.where(detected[..., None], targets, before)
        adapted, frozen = split_params(params, split)

        def frozen_features(x: jax.Array) -> jax.Array:
            """The lower blocks' output: the same at every step, so computed once."""
            return jax.lax.stop_gradient(model.apply({"params": params}, x,
                                                     frame_mask=frame_mask, last_block=split))

        def top_blocks(p: Any, b: dict, _rng: jax.Array) -> jax.Array:
            return model.apply({"params": {**frozen, **p}}, b["inputs"],
                               frame_mask=b["frame_mask"], features=b["features"],
                               first_block=split)

        step = train_step.make_step(model, ttt.loss, optimizer,
                                    forward=top_blocks if split else None)
        batch = {"inputs": inputs, "targets": targets, "mask": weights,
                 "frame_mask": frame_mask}
        if split and mask_ratio <= 0:  # masked TTT computes them per step (masked_batch)
            batch["features"] = frozen_features(inputs)

        def masked_batch(k: jax.Array) -> dict:
            """Hides random spans of the input and refills them by interpolation (the
            pretraining corruption), so the prior must predict those pseudo-labels from
            the rest of the video instead of copying them."""
            hidden = corrupt.hidden_spans(k, inputs.shape[0], inputs.shape[1],
                                          ratio=mask_ratio, span_min=span_min,
                                          span_max=span_max, max_frames=model.maxlen)
            hidden = hidden & frame_mask
            filled = fill_missing(poses, frame_mask & ~hidden)
            masked = model_input.hide(inputs, filled, hidden)
            out = {**batch, "inputs": masked,
                   "mask": weights * jnp.where(hidden, 1.0, unmasked_weight)}
            if split:
                out["features"] = frozen_features(masked)
            return out

        def body(state, i):
            k = jax.random.fold_in(key, i)
            b = masked_batch(jax.random.fold_in(k, 1)) if mask_ratio > 0 else batch
            new_state, m = step(state, b, k)
            finite = jnp.isfinite(m["loss"])
            state = jax.tree_util.tree_map(lambda n, o: jnp.where(finite, n, o), new_state,
                                           state)
            if report_progress:  # host-side per-epoch progress (stride_jax.progress)
                jax.debug.callback(progress.report_epoch, epoch_offset + i)
            return state, m["loss"]

        if int(ttt.epochs):
            state, curve = jax.lax.scan(body, train_step.init_state(adapted, optimizer),
                                        jnp.arange(ttt.epochs))
            pred = train_step.predict(model, {**frozen, **state["params"]}, inputs,
                                      frame_mask=frame_mask, **tta)
        else:
            curve, pred = jnp.zeros((0,), inputs.dtype), before
        if ramp:  # undetected joints keep the prior's in-fill, blended in over ``ramp``
            keep = detection_ramp(detected, frame_mask, ramp)
            pred = keep[..., None] * pred + (1.0 - keep[..., None]) * before
        if blend:  # detected joints: part of the way to their (smoothed) detections
            near = detection_ramp(detected, frame_mask, blend_ramp)
            pred = pred + blend * near[..., None] * (targets - pred)
        ok = jnp.all(jnp.isfinite(curve)) & jnp.all(jnp.isfinite(pred))
        return jnp.where(ok, pred, poses), curve, ok

    return run


def _detected(model: DSTFormer, inputs: jax.Array, weights: jax.Array) -> jax.Array:
    """``[N, W, J]`` joints the estimator detected: the detection channel with
    ``dim_in = 4``, else the frames of full loss weight."""
    if model.dim_in == 4:
        return model_input.validity_of(inputs) > 0.5
    return jnp.broadcast_to((weights >= 1.0)[..., None], inputs.shape[:-1])


GAP_OUTPUTS = ("ttt", "prior")


def gap_output_ramp(ttt: ml_collections.ConfigDict) -> int:
    """Frames over which the output fades from the fine-tuned prediction (detected joints)
    to the prior's own before TTT (undetected joints), or 0 when ``ttt.gap_output`` is
    "ttt" (the fine-tuned prediction everywhere, the paper's).

    ``ttt.gap_output = "prior"`` (our addition): TTT fits detections, and on undetected
    joints its targets are at best the prior's in-fill (``gap_target``), so there it can
    only drift from it (docs/evaluate.md measures the drift); the output keeps the prior's
    in-fill there and fades over ``ttt.gap_ramp`` frames (>= 1) next to each gap.
    """
    choice = ttt.get("gap_output", "ttt")
    if choice not in GAP_OUTPUTS:
        raise ValueError(f"ttt.gap_output={choice!r}: choose one of {GAP_OUTPUTS}")
    ramp = int(ttt.get("gap_ramp", 5))
    if choice == "prior" and ramp < 1:
        raise ValueError(f"ttt.gap_ramp={ramp} must be >= 1 frame")
    return ramp if choice == "prior" else 0


def detection_ramp(detected: jax.Array, frame_mask: jax.Array, ramp: int) -> jax.Array:
    """``[..., W, J]`` weight of the fine-tuned prediction: ``min(d, ramp) / ramp`` where
    ``d`` is a joint's distance in frames to its nearest undetected frame (0 on undetected
    ones; padding and the window's ends count as detected, so they make no gap)."""
    ok = detected | ~frame_mask[..., None]
    width = ok.shape[-2]
    run = ok
    total = ok.astype(jnp.float32)
    for k in range(1, ramp):  # run: detected for every frame within k of this one
        pad = jnp.ones_like(ok[..., :k, :])
        later = jnp.concatenate([ok[..., k:, :], pad], axis=-2)[..., :width, :]
        earlier = jnp.concatenate([pad, ok[..., :-k, :]], axis=-2)[..., :width, :]
        run = run & later & earlier
        total = total + run
    return total / ramp


def output_blend(ttt: ml_collections.ConfigDict) -> float:
    """Weight of the targets (the smoothed detections) in the output on detected joints
    (our addition; 0 = the fine-tuned prediction, the paper's).

    ``ttt.output_blend = b`` in [0, 1) outputs ``(1 - b) * pred + b * target`` there, faded
    in over ``ttt.gap_ramp`` frames next to each gap (at once with ``gap_output="ttt"``);
    undetected joints are untouched.  The prediction and the smoothed detections err
    differently (the prior shrinks fast limbs, the smoothing keeps part of the jitter), so
    their mean is closer than either; with ``ttt.epochs = 0`` it applies to the prior's.
    """
    blend = float(ttt.get("output_blend", 0.0))
    if not 0.0 <= blend < 1.0:
        raise ValueError(f"ttt.output_blend={blend} must be in [0, 1)")
    return blend


GAP_TARGETS = ("auto", "interp", "prior")


def gap_targets_from_prior(model: DSTFormer, ttt: ml_collections.ConfigDict) -> bool:
    """Whether undetected joints' pseudo-labels are the prior's own prediction.

    ``ttt.gap_target``: "prior" (needs the detection channel, ``model.dim_in = 4``),
    "interp" (the paper's linear interpolation) or "auto" (the default: "prior" when the
    prior has the detection channel, else "interp").
    """
    choice = ttt.get("gap_target", "auto")
    if choice not in GAP_TARGETS:
        raise ValueError(f"ttt.gap_target={choice!r}: choose one of {GAP_TARGETS}")
    if choice == "prior" and model.dim_in != 4:
        raise ValueError(f"ttt.gap_target='prior' needs the detection channel "
                         f"(model.dim_in=4) to know which joints were undetected; this "
                         f"prior has dim_in={model.dim_in} (use 'interp' or 'auto')")
    return choice == "prior" or (choice == "auto" and model.dim_in == 4)


def frozen_blocks(model: DSTFormer, ttt: ml_collections.ConfigDict) -> int:
    """How many lower block pairs stay frozen: ``model.depth - ttt.adapt_blocks``, or 0
    when ``ttt.adapt_blocks`` is 0 (every parameter adapts, the paper's recipe)."""
    adapt = int(ttt.get("adapt_blocks", 0))
    if not 0 <= adapt <= model.depth:
        raise ValueError(f"ttt.adapt_blocks={adapt}: the prior has {model.depth} block "
                         f"pairs (0 adapts every parameter)")
    return model.depth - adapt if adapt else 0


def split_params(params: Any, first_adapted: int) -> tuple[dict, dict]:
    """``(adapted, frozen)`` top-level entries of a DSTFormer's params: with
    ``first_adapted = s > 0`` the block pairs ``>= s`` (and their fusion), the final norm
    and the head adapt, the embeddings and lower blocks are frozen; with 0 all adapt."""
    if not first_adapted:
        return dict(params), {}

    def adapts(name: str) -> bool:
        block = block_index(name)
        if block is not None:
            return block >= first_adapted
        return name in ("norm", "pre_logits_fc", "head")

    adapted = {k: v for k, v in params.items() if adapts(k)}
    return adapted, {k: v for k, v in params.items() if not adapts(k)}


def vmap_width(ttt: ml_collections.ConfigDict, k: int, devices: int = 1,
               platform: str | None = None) -> int:
    """Videos trained side by side (vmapped) on one device in a call of ``k`` videos.

    ``ttt.vmap_width > 0`` sets it (capped at the videos per device); 0 (auto) is 1 on
    CPU, where one video already keeps the cores busy and a vmapped group is slower per
    video than one video at a time (``scripts/bench_align.py`` measures both), and every
    video of the device elsewhere.  The width always divides the videos per device.
    """
    per_device = max(1, k // max(1, devices))
    platform = platform or jax.default_backend()
    width = int(ttt.get("vmap_width", 0)) or (1 if platform == "cpu" else per_device)
    if width < 0:
        raise ValueError(f"ttt.vmap_width={width} must be >= 0 (0: auto)")
    width = min(width, per_device)
    while per_device % width:
        width -= 1
    return width


def _donated_inputs(model: DSTFormer) -> tuple[int, ...]:
    """``donate_argnums`` of a TTT call: the inputs' buffer can hold the prediction only
    when both have 3 channels (with a validity channel XLA could not use it and JAX would
    warn on every call)."""
    return (1,) if model.dim_in == model.dim_out else ()


def _on_batch_of_one(run: Callable) -> Callable:
    """``run`` (one video) applied to ``[1, ...]`` arrays: the batch axis dropped on the way
    in and restored on the way out."""
    def one(params, inputs, weights, frame_mask, keys, epoch_offset):
        out = run(params, inputs[0], weights[0], frame_mask[0], keys[0], epoch_offset)
        return tuple(o[None] for o in out)
    return one


def make_batched_ttt(model: DSTFormer, ttt: ml_collections.ConfigDict, width: int | None = None,
                     devices: int = 1) -> TTTFn:
    """One jitted call for K videos: params shared (broadcast), everything else per video.

    The K videos (K/``devices`` per device) run in groups of ``width`` (default:
    :func:`vmap_width`): each group is one ``vmap`` of the per-video TTT, and the groups
    of a device follow one another in a ``lax.scan`` inside the same compiled call, so a
    call holds the activations of one group only.  ``width`` = K per device is plain
    ``jit(vmap(run))``.
    """
    run = make_run_one_video(model, ttt)
    vmapped = jax.vmap(run, in_axes=(None, 0, 0, 0, 0, None))
    one = _on_batch_of_one(run)

    def in_groups(params: Any, w: int, inputs, weights, frame_mask, keys):
        """One device's ``[k, ...]`` videos as a ``lax.scan`` over groups of ``w``."""
        k = inputs.shape[0]

        def group(xs: tuple, offset: jax.Array) -> tuple:
            if w > 1:
                return vmapped(params, *xs, offset)
            return one(params, *xs, offset)  # width 1: no batch axis at all

        grouped = tuple(x.reshape((k // w, w) + x.shape[1:])
                        for x in (inputs, weights, frame_mask, keys))
        _, outs = jax.lax.scan(lambda _, xs: (None, group(xs[1], xs[0] * ttt.epochs)), None,
                               (jnp.arange(k // w), grouped))
        return tuple(o.reshape((k,) + o.shape[2:]) for o in outs)

    def batched(params: Any, inputs, weights, frame_mask, keys):
        k = inputs.shape[0]  # a multiple of ``devices`` (compile_ttt checks it)
        w = width or vmap_width(ttt, k, devices)
        if (k // devices) % w:
            raise ValueError(f"vmap width {w} does not divide the {k // devices} videos "
                             f"per device")
        if 1 < w == k // devices:  # every video of a device at once: plain vmap
            return vmapped(params, inputs, weights, frame_mask, keys, 0)
        if devices == 1:
            return in_groups(params, w, inputs, weights, frame_mask, keys)
        split = [x.reshape((devices, -1) + x.shape[1:])  # [devices, K / devices, ...]
                 for x in (inputs, weights, frame_mask, keys)]
        outs = jax.vmap(functools.partial(in_groups, params, w))(*split)
        return tuple(o.reshape((-1,) + o.shape[2:]) for o in outs)

    return jax.jit(batched, donate_argnums=_donated_inputs(model))


def make_one_video_call(model: DSTFormer, ttt: ml_collections.ConfigDict) -> Callable:
    """``call(params, inputs [1,...], weights, frame_mask, keys [1], epoch_offset)``: the
    per-video TTT on a batch of one, jitted, the inputs' buffer donated as in
    :func:`make_batched_ttt`; ``epoch_offset`` counts progress on across videos."""
    return jax.jit(_on_batch_of_one(make_run_one_video(model, ttt)),
                   donate_argnums=_donated_inputs(model))


class OneByOne:
    """A K-video TTT call that runs one compiled one-video program K times.

    Used for vmap width 1 on one device (CPU's default): a ``lax.scan`` over the videos
    inside one program measured 1.07x slower per video than calling the one-video program
    once per video (small size, K=4, paired medians of 4 runs,
    ``scripts/bench_call_vs_loop.py``), so the width-1 call *is* that loop.
    ``cost_analysis`` is that of the one-video program.
    """

    def __init__(self, program: Any, epochs: int):
        self.program, self.epochs = program, epochs

    def __call__(self, params, inputs, weights, frame_mask, keys):
        outs = [self.program(params, inputs[i:i + 1], weights[i:i + 1], frame_mask[i:i + 1],
                             keys[i:i + 1], np.int32(i * self.epochs))
                for i in range(inputs.shape[0])]
        return tuple(jnp.concatenate(x) for x in zip(*outs))

    def cost_analysis(self) -> Any:
        """XLA's cost analysis of the one-video program."""
        return self.program.cost_analysis()

    def memory_analysis(self) -> Any:
        """XLA's memory analysis of the one-video program (what one call holds)."""
        return self.program.memory_analysis()


def make_looped_ttt(model: DSTFormer, ttt: ml_collections.ConfigDict) -> TTTFn:
    """The same per-video computation, jitted once and looped over videos in Python.

    The baseline that ``scripts/bench_align.py`` compares vmap against.
    """
    one = jax.jit(make_run_one_video(model, ttt))

    def looped(params, inputs, weights, frame_mask, keys):
        outs = [one(params, inputs[k], weights[k], frame_mask[k], keys[k])
                for k in range(inputs.shape[0])]
        return tuple(jnp.stack(x) for x in zip(*outs))

    return looped


@dataclasses.dataclass
class CompiledTTT:
    """A TTT function compiled for one ``(K, N, W)`` shape, with its compile time."""

    fn: Any
    compile_s: float
    shape: tuple[int, int, int]
    sharding: NamedSharding | None = None
    bytes: int = 0  # peak device memory of one call per device (memory_analysis)
    width: int = 1  # videos vmapped side by side per device (vmap_width)
    groups: int = 1  # groups of ``width`` videos run one after another per device
    epochs: int = 0  # ttt.epochs

    @property
    def reported_epochs(self) -> int:
        """Epochs the call reports to ``stride_jax.progress`` (epochs x groups)."""
        return self.epochs * self.groups


def video_mesh() -> Mesh | None:
    """A 1-D mesh over this process's devices (axis ``'videos'``), or None for one device
    (multi-host: each process aligns its own videos on its own devices)."""
    return distributed.local_mesh("videos")


def compile_ttt(model: DSTFormer, ttt: ml_collections.ConfigDict, params: Any,
                shape: tuple[int, int, int], mesh: Mesh | None = None,
                width: int | None = None) -> CompiledTTT:
    """Lowers and compiles the batched TTT for ``K`` videos of ``N`` windows of ``W`` frames.

    With a ``mesh`` the video axis ``K`` (a multiple of the mesh size) is sharded over
    devices and the params are replicated.  ``width``: videos vmapped side by side per
    device (default :func:`vmap_width` for the devices' platform); the rest of a device's
    videos run group after group in the same call.  Width 1 on one device (CPU's default)
    compiles the one-video program once and runs it per video (:class:`OneByOne`).
    """
    k, n, w = shape
    devices = 1 if mesh is None else mesh.size
    platform = (jax.default_backend() if mesh is None
                else next(iter(mesh.devices.flat)).platform)
    width = width or vmap_width(ttt, k, devices, platform)
    joints = model.num_joints
    sds = jax.ShapeDtypeStruct
    sharding = None
    if mesh is not None:
        if k % mesh.size:
            raise ValueError(f"K={k} videos is not a multiple of the {mesh.size} devices")
        sharding = NamedSharding(mesh, PartitionSpec("videos"))
    args = (
        jax.tree_util.tree_map(lambda p: sds(p.shape, p.dtype), params),
        sds((k, n, w, joints, model.dim_in), jnp.float32, sharding=sharding),
        sds((k, n, w), jnp.float32, sharding=sharding),
        sds((k, n, w), jnp.bool_, sharding=sharding),
        sds((k,), jax.random.key(0).dtype, sharding=sharding),
    )
    t0 = time.perf_counter()
    if width == 1 and mesh is None:  # one video after another: K calls of one program
        one = tuple(sds((1,) + a.shape[1:], a.dtype) for a in args[1:])
        program = make_one_video_call(model, ttt).lower(
            args[0], *one, sds((), jnp.int32)).compile()
        compiled = OneByOne(program, int(ttt.epochs))
    else:
        compiled = make_batched_ttt(model, ttt, width, devices).lower(*args).compile()
    return CompiledTTT(compiled, time.perf_counter() - t0, shape, sharding,
                       peak_bytes(compiled), width, k // devices // width, int(ttt.epochs))


_COMPILED: collections.OrderedDict = collections.OrderedDict()
_COMPILED_MAX = 32


def compile_ttt_cached(model: DSTFormer, ttt: ml_collections.ConfigDict, params: Any,
                       shape: tuple[int, int, int], mesh: Mesh | None = None,
                       ) -> tuple[CompiledTTT, bool]:
    """:func:`compile_ttt` with a per-process cache of the last 32 programs (keyed by the
    model's fields, the ``ttt`` settings, the params' shapes, ``shape`` and the mesh):
    another seed, method or call with the same settings and shape is not compiled
    again.  Returns ``(compiled, cache_hit)``."""
    fields = tuple((f, str(getattr(model, f))) for f in sorted(model.__dataclass_fields__)
                   if f not in ("parent", "name"))
    struct = tuple((jax.tree_util.keystr(path), leaf.shape, str(leaf.dtype)) for path, leaf
                   in jax.tree_util.tree_flatten_with_path(params)[0])
    devices = None if mesh is None else (tuple(d.id for d in mesh.devices.flat),
                                          mesh.axis_names)
    key = (fields, ttt.to_json(sort_keys=True), struct, tuple(shape), devices)
    if key in _COMPILED:
        _COMPILED.move_to_end(key)
        return _COMPILED[key], True
    compiled = compile_ttt(model, ttt, params, shape, mesh)
    _COMPILED[key] = compiled
    while len(_COMPILED) > _COMPILED_MAX:
        _COMPILED.popitem(last=False)
    return compiled, False


def peak_bytes(compiled: Any) -> int:
    """Device memory of one call of a compiled function (``memory_analysis``: arguments,
    outputs not aliased to donated arguments, and XLA's temporary buffers), per device."""
    mem = compiled.memory_analysis()
    if mem is None:
        return 0
    return int(mem.argument_size_in_bytes + mem.output_size_in_bytes
               - mem.alias_size_in_bytes + mem.temp_size_in_bytes)


def run_compiled(compiled: CompiledTTT, params: Any, inputs: np.ndarray, weights: np.ndarray,
                 frame_mask: np.ndarray, keys: jax.Array, *,
                 on_epoch: Callable[[int], None] | None = None,
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Runs a compiled TTT and returns host arrays ``(pred, loss_curves, ok)``;
    ``on_epoch(epoch)`` is called as epochs finish (e.g. a ``progress.EpochProgress``)."""
    put = (lambda x: jax.device_put(x, compiled.sharding)) if compiled.sharding else jnp.asarray
    with progress.reporting(on_epoch):
        out = compiled.fn(params, put(np.asarray(inputs, np.float32)),
                          put(np.asarray(weights, np.float32)),
                          put(np.asarray(frame_mask, bool)),
                          put(keys) if compiled.sharding else keys)
        host = tuple(np.asarray(x) for x in jax.device_get(out))
        jax.effects_barrier()  # every epoch reported before the sink is removed
    return host
