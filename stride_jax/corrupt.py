"""Synthetic corruption of clean pose sequences.

* :func:`corrupt_for_pretraining` — BERT-style corruption used to pretrain the
  motion prior (paper Sec. 3.2): occlusion spans, joint masks, noise, scale
  errors and outliers, with masked entries filled by linear interpolation
  exactly like the test-time pseudo-labels (Sec. 3.3).
* :func:`simulate_estimator` — a noisy off-the-shelf 3D pose estimator on an
  "Occluded Human3.6M"-style video (Sec. 4.1): in every 3.2 s window the
  person is undetected for a contiguous 1.6 s span.

Both take an explicit ``jax.random`` key, keyword-only hyperparameters (so
``fn(key, x, **config_dict)`` works) and are jit-able when the hyperparameters
are Python constants (close over them or mark them static).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from stride_jax import skeleton
from stride_jax.interpolate import fill_missing

# Id of the left/right pair of each joint (its lower index): one swap draw per pair.
_PAIR_ID = np.minimum(np.arange(skeleton.NUM_JOINTS), skeleton.MIRROR)


def _check_nonneg(**values: float) -> None:
    for name, value in values.items():
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")


def _check_prob(**values: float) -> None:
    for name, value in values.items():
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {value}")


def _scale_root_relative(poses: jax.Array, factor: jax.Array) -> jax.Array:
    """Scales ``[..., T, J, 3]`` about joint 0 by ``factor [..., T]``."""
    root = poses[..., :1, :]
    return root + (poses - root) * factor[..., None, None]


def _outliers(key: jax.Array, poses: jax.Array, prob: float, std: float) -> jax.Array:
    """Adds N(0, std) offsets to a random ``prob`` fraction of joints."""
    k_hit, k_off = jax.random.split(key)
    hit = jax.random.bernoulli(k_hit, prob, poses.shape[:-1])
    offset = std * jax.random.normal(k_off, poses.shape, poses.dtype)
    return poses + jnp.where(hit[..., None], offset, 0.0)


def _span_mask(
    key: jax.Array, n_frames: int, n_masked: int, span_min: int, span_max: int
) -> jax.Array:
    """Random non-overlapping spans covering exactly ``n_masked`` frames.

    Span lengths are uniform integers in ``[span_min, span_max]`` (capped at the
    sequence length); the last span is truncated so the total is exact.  The
    free frames are split into random gaps around the spans.

    Returns:
      bool ``[n_frames]``, True where masked.
    """
    if n_masked == 0:
        return jnp.zeros((n_frames,), bool)
    hi = max(min(span_max, n_masked), 1)
    lo = min(span_min, hi)
    n_spans = -(-n_masked // lo) + 1  # static upper bound on the span count
    k_len, k_gap = jax.random.split(key)
    lengths = jax.random.randint(k_len, (n_spans,), lo, hi + 1)
    before = jnp.cumsum(lengths) - lengths
    lengths = jnp.clip(n_masked - before, 0, lengths)  # truncate to the exact total
    before = jnp.cumsum(lengths) - lengths
    # Gap k precedes span k; gap n_spans trails.  Unused spans get no gap.
    gaps = jax.random.exponential(k_gap, (n_spans + 1,))
    gaps = gaps * jnp.concatenate([lengths > 0, jnp.ones((1,), bool)])
    frac = jnp.cumsum(gaps)[:-1] / jnp.sum(gaps)
    n_free = n_frames - n_masked
    starts = jnp.clip(jnp.floor(n_free * frac).astype(jnp.int32), 0, n_free) + before
    t = jnp.arange(n_frames)[:, None]
    return jnp.any((t >= starts) & (t < starts + lengths), axis=-1)


def hidden_spans(key: jax.Array, n_windows: int, n_frames: int, *, ratio: float,
                 span_min: int, span_max: int, max_frames: int | None = None) -> jax.Array:
    """Random spans to hide from the input during masked test-time training.

    Span starts are independent per frame (rate chosen so that a fraction ``ratio`` of the
    frames is covered on average) with lengths uniform in ``[span_min, span_max]``; window
    ``w`` draws from ``fold_in(key, w)`` over ``max_frames`` frames and keeps the first
    ``n_frames``, so a frame's draw does not depend on how much padding follows it.

    Returns:
      bool ``[n_windows, n_frames]``, True where hidden.
    """
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"ratio must be in [0, 1), got {ratio}")
    if not 1 <= span_min <= span_max:
        raise ValueError(f"need 1 <= span_min <= span_max, got {span_min}, {span_max}")
    total = max(n_frames, max_frames or 0)
    rate = -np.log1p(-ratio) / (0.5 * (span_min + span_max))  # 1 - exp(-rate * E[len])
    t = jnp.arange(total)

    def one(w: jax.Array) -> jax.Array:
        k_start, k_len = jax.random.split(jax.random.fold_in(key, w))
        starts = jax.random.bernoulli(k_start, min(rate, 1.0), (total,))
        lengths = jax.random.randint(k_len, (total,), span_min, span_max + 1)
        reach = jax.lax.cummax(jnp.where(starts, t + lengths, 0))
        return (reach > t)[:n_frames]

    return jax.vmap(one)(jnp.arange(n_windows))


def gap_mask(key: jax.Array, batch_shape: tuple[int, ...], n_frames: int, *, gap_min: int,
             gap_max: int, duty_min: float, duty_max: float) -> jax.Array:
    """Validity with repeated whole-frame gaps, drawn per sequence (what users send).

    Each sequence draws a gap length ``L`` uniform in ``[gap_min, gap_max]`` frames and a
    duty ``d`` uniform in ``[duty_min, duty_max]``; its frames (from a random phase) are
    cut into windows of ``P = max(L + 1, round(L / d))`` frames and each window hides one
    run of ``L`` frames at a uniform offset, so about ``d`` of the frames are missing.
    :func:`occlusion_mask` (the evaluation protocol) is the case of fixed ``L`` and ``P``.

    Returns:
      bool ``batch_shape + (n_frames,)``, False inside the gaps.
    """
    if not 1 <= gap_min <= gap_max:
        raise ValueError(f"need 1 <= gap_min <= gap_max (frames), got {gap_min}, {gap_max}")
    if not 0.0 < duty_min <= duty_max < 1.0:
        raise ValueError(f"need 0 < duty_min <= duty_max < 1, got {duty_min}, {duty_max}")
    k_len, k_duty, k_phase, k_off = jax.random.split(key, 4)
    length = jax.random.randint(k_len, batch_shape, gap_min, gap_max + 1)
    duty = jax.random.uniform(k_duty, batch_shape, minval=duty_min, maxval=duty_max)
    period = jnp.maximum(length + 1, jnp.round(length / duty).astype(length.dtype))
    phase = jnp.floor(jax.random.uniform(k_phase, batch_shape) * period).astype(length.dtype)
    u = jnp.arange(n_frames) + phase[..., None]
    window, pos = u // period[..., None], u % period[..., None]
    n_windows = n_frames // (gap_min + 1) + 2  # static bound: P >= gap_min + 1, phase < P
    frac = jax.random.uniform(k_off, batch_shape + (n_windows,))
    offsets = jnp.floor(frac * (period - length + 1)[..., None]).astype(length.dtype)
    offset_t = jnp.take_along_axis(offsets, window, axis=-1)
    return ~((pos >= offset_t) & (pos < offset_t + length[..., None]))


def corrupt_for_pretraining(
    key: jax.Array,
    clean: jax.Array,
    *,
    joint_mask_ratio: float = 0.05,
    frame_mask_ratio: float = 0.3,
    span_min: int = 5,
    span_max: int = 60,
    noise_std: float = 0.02,
    scale_std: float = 0.03,
    outlier_prob: float = 0.005,
    outlier_std: float = 0.15,
    gap_prob: float = 0.0,
    protocol_prob: float = 0.0,
    gap_s: tuple[float, float] = (0.5, 2.0),
    gap_duty: tuple[float, float] = (0.25, 0.6),
    depth_std: float = 0.0,
    swap_prob: float = 0.0,
    noise_level: tuple[float, float] = (1.0, 1.0),
    visible_prob: float = 0.0,
    fps: float = 30.0,
    protocol_s: tuple[float, float] = (3.2, 1.6),
    per_joint: bool = False,
) -> tuple[jax.Array, jax.Array]:
    """BERT-style corruption of clean clips, filled like test-time pseudo-labels.

    Steps: per-frame scale error of the root-relative pose (factor
    ``1 + N(0, scale_std)``), per-joint Gaussian noise, rare outliers, then
    masking — contiguous occlusion spans covering ``round(frame_mask_ratio*T)``
    frames of every sequence (lengths uniform in ``[span_min, span_max]``, the
    last span truncated to hit the total; spans may touch; at least one frame
    stays visible) and independent joint masks (each joint of each frame with
    probability ``joint_mask_ratio``) — and finally :func:`fill_missing` over the masked
    entries, so the prior learns to map interpolated noisy input to clean motion.

    Occlusion pattern, drawn per sequence: with probability ``protocol_prob`` the
    evaluation protocol (:func:`occlusion_mask`: one ``protocol_s[1]`` s gap in every
    ``protocol_s[0]`` s window, ``config.simulator``), with probability ``gap_prob``
    repeated whole-frame gaps of ``gap_s`` seconds hiding a ``gap_duty`` fraction of the
    frames (:func:`gap_mask`), with probability ``visible_prob`` no hidden frame (the
    input a prior meets on well-detected video, e.g. the clean-input check), otherwise
    the random spans above (``frame_mask_ratio``).  Joint masks and noise apply in every
    case.  A sequence left with no visible frame (gaps longer than a short clip) gets its
    first frame back.  Estimator-like errors
    (as :func:`simulate_estimator`): left/right swaps (``swap_prob``) before the scale
    error and a per-frame depth shift (``depth_std``) after it.  ``noise_level``
    ``(lo, hi)``: each sequence's noise, scale and depth errors are multiplied by one factor
    drawn uniformly from ``[lo, hi]`` (estimators differ in how noisy they are; ``lo = 0``
    shows the prior near-clean input too).  With every new option at its default the
    output is bit-identical to the spans-only corruption.

    Args:
      key: PRNG key.
      clean: ``[..., T, 17, 3]`` clean poses (metres, camera axes).
      joint_mask_ratio: probability that a single joint of a frame is masked.
      frame_mask_ratio: fraction of frames hidden in occlusion spans, in [0, 1).
      span_min: shortest occlusion span (frames, >= 1).
      span_max: longest occlusion span (frames, >= span_min).
      noise_std: per-coordinate Gaussian noise std (metres).
      scale_std: std of the per-frame relative scale error.
      outlier_prob: probability that a joint gets an outlier offset.
      outlier_std: per-coordinate std of outlier offsets (metres).
      gap_prob: probability of the repeated-gaps pattern for a sequence.
      protocol_prob: probability of the evaluation-protocol pattern for a sequence
        (``gap_prob + protocol_prob + visible_prob <= 1``).
      gap_s: ``(shortest, longest)`` gap of the repeated-gaps pattern (seconds).
      gap_duty: ``(lowest, highest)`` fraction of frames the repeated gaps hide.
      depth_std: std of the per-frame depth (z) shift of the whole pose (metres).
      swap_prob: per-pair, per-frame left/right swap probability.
      noise_level: ``(lo, hi)`` range of the per-sequence factor on ``noise_std``,
        ``scale_std`` and ``depth_std`` (``0 <= lo <= hi``).
      visible_prob: probability that a sequence has no hidden frame.
      fps: frame rate of ``clean`` (converts ``gap_s`` and ``protocol_s`` to frames).
      protocol_s: ``(occ_window_s, occ_span_s)`` of the evaluation protocol.
      per_joint: return joint validity ``[..., T, 17]`` (joint masks included).

    Returns:
      ``(noisy, valid)``: filled noisy poses ``[..., T, 17, 3]`` and the frame
      validity ``bool [..., T]`` (False on hidden frames; joint masks are not
      reported), or with ``per_joint`` the joint validity ``bool [..., T, 17]``
      (False on every in-filled entry).
    """
    clean = jnp.asarray(clean)
    skeleton.check_poses(clean, "clean", min_frames=1)
    _check_nonneg(noise_std=noise_std, scale_std=scale_std, outlier_std=outlier_std,
                  depth_std=depth_std)
    _check_prob(joint_mask_ratio=joint_mask_ratio, outlier_prob=outlier_prob,
                gap_prob=gap_prob, protocol_prob=protocol_prob, swap_prob=swap_prob,
                visible_prob=visible_prob)
    if gap_prob + protocol_prob + visible_prob > 1.0:
        raise ValueError(f"gap_prob + protocol_prob + visible_prob must be <= 1, got "
                         f"{gap_prob} + {protocol_prob} + {visible_prob}")
    if fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    level_lo, level_hi = (float(v) for v in noise_level)
    if not 0.0 <= level_lo <= level_hi:
        raise ValueError(f"noise_level must be (lo, hi) with 0 <= lo <= hi, got {noise_level}")
    if not 0.0 <= frame_mask_ratio < 1.0:
        raise ValueError(f"frame_mask_ratio must be in [0, 1), got {frame_mask_ratio}")
    if not 1 <= span_min <= span_max:
        raise ValueError(f"need 1 <= span_min <= span_max, got {span_min}, {span_max}")
    batch, n_frames = clean.shape[:-3], clean.shape[-3]
    n_masked = min(int(round(frame_mask_ratio * n_frames)), n_frames - 1)
    k_scale, k_noise, k_out, k_span, k_joint = jax.random.split(key, 5)

    # Keys of the options added later derive from fold_in, so the defaults draw as before.
    k_mode, k_gap, k_proto, k_swap, k_depth = jax.random.split(jax.random.fold_in(key, 1), 5)
    frame_shape = batch + (n_frames,)
    # Per-sequence factor [..., 1] (exactly 1 for the default (1, 1): u * 0 + 1).
    level = jax.random.uniform(jax.random.fold_in(key, 2), batch + (1,), clean.dtype,
                               level_lo, level_hi)

    noisy = swap_left_right(k_swap, clean, swap_prob) if swap_prob > 0 else clean
    scale = 1.0 + level * scale_std * jax.random.normal(k_scale, frame_shape, clean.dtype)
    noisy = _scale_root_relative(noisy, scale)
    if depth_std > 0:
        depth = level * depth_std * jax.random.normal(k_depth, frame_shape, clean.dtype)
        noisy = noisy.at[..., 2].add(depth[..., None])
    noisy = noisy + level[..., None, None] * noise_std * jax.random.normal(
        k_noise, clean.shape, clean.dtype)
    noisy = _outliers(k_out, noisy, outlier_prob, outlier_std)

    span_keys = jax.random.split(k_span, batch)
    span_fn = functools.partial(_span_mask, n_frames=n_frames, n_masked=n_masked,
                                span_min=span_min, span_max=span_max)
    for _ in batch:
        span_fn = jax.vmap(span_fn)
    valid = ~span_fn(span_keys)
    if gap_prob > 0 or protocol_prob > 0 or visible_prob > 0:
        mode = jax.random.uniform(k_mode, batch)[..., None]
        if visible_prob > 0:  # mode in [protocol + gap, protocol + gap + visible)
            valid = jnp.where(mode < protocol_prob + gap_prob + visible_prob, True, valid)
        if gap_prob > 0:
            lo, hi = (max(1, int(round(s * fps))) for s in gap_s)
            gaps = gap_mask(k_gap, batch, n_frames, gap_min=lo, gap_max=hi,
                            duty_min=gap_duty[0], duty_max=gap_duty[1])
            valid = jnp.where(mode < protocol_prob + gap_prob, gaps, valid)
        if protocol_prob > 0:
            window, span = (int(round(s * fps)) for s in protocol_s)
            proto = occlusion_mask(k_proto, batch, n_frames, window=window, span=span)
            valid = jnp.where(mode < protocol_prob, proto, valid)
        first = jnp.arange(n_frames) == 0
        valid = valid | (first & ~valid.any(axis=-1, keepdims=True))
    joint_masked = jax.random.bernoulli(k_joint, joint_mask_ratio, clean.shape[:-1])
    joint_valid = valid[..., None] & ~joint_masked
    return fill_missing(noisy, joint_valid), joint_valid if per_joint else valid


def occlusion_mask(
    key: jax.Array, batch_shape: tuple[int, ...], n_frames: int, *, window: int, span: int
) -> jax.Array:
    """Validity with one undetected span of ``span`` frames per ``window`` frames.

    Windows start at frame 0; in window ``i`` frames ``[i*window + o_i,
    i*window + o_i + span)`` are invalid, with ``o_i`` uniform in
    ``[0, window - span]``.  A trailing partial window is cut at the sequence end.

    Returns:
      bool ``batch_shape + (n_frames,)``, False where undetected.
    """
    if not 0 <= span <= window or window < 1:
        raise ValueError(f"need 0 <= span <= window and window >= 1, got {span}, {window}")
    n_windows = -(-n_frames // window)
    offsets = jax.random.randint(key, batch_shape + (n_windows,), 0, window - span + 1)
    t = jnp.arange(n_frames)
    offset_t = jnp.take(offsets, t // window, axis=-1)
    pos = t % window
    return ~((pos >= offset_t) & (pos < offset_t + span))


def swap_left_right(key: jax.Array, poses: jax.Array, prob: float) -> jax.Array:
    """Swaps each left/right joint pair (skeleton.MIRROR) of each frame with ``prob``.

    Models an estimator confusing the sides: labels swap, coordinates do not
    change sign.  ``poses`` is ``[..., T, 17, 3]``.
    """
    draws = jax.random.bernoulli(key, prob, poses.shape[:-1])
    swap = jnp.take(draws, jnp.asarray(_PAIR_ID), axis=-1)
    src = jnp.where(swap, jnp.asarray(skeleton.MIRROR), jnp.arange(skeleton.NUM_JOINTS))
    return jnp.take_along_axis(poses, src[..., None], axis=-2)


def simulate_estimator(
    key: jax.Array,
    clean_cam: jax.Array,
    *,
    fps: float,
    occ_window_s: float = 3.2,
    occ_span_s: float = 1.6,
    jitter_std: float = 0.02,
    depth_std: float = 0.03,
    scale_std: float = 0.03,
    swap_prob: float = 0.01,
    outlier_prob: float = 0.005,
    outlier_std: float = 0.15,
) -> tuple[jax.Array, jax.Array]:
    """Noisy, occluded estimates of clean camera-space poses (Occluded Human3.6M).

    Occlusion: the video is cut into consecutive windows of
    ``round(occ_window_s * fps)`` frames starting at frame 0; in each, a
    contiguous span of ``round(occ_span_s * fps)`` frames at a uniformly random
    offset is undetected (``valid`` False, poses set to 0).  Defaults (3.2 s
    windows, 1.6 s spans) follow the paper, i.e. ~50 % of frames missing.

    Estimator errors on detected frames, applied in this order: left/right pair
    swaps (each pair, each frame, probability ``swap_prob``), per-frame scale
    error of the root-relative pose (factor ``1 + N(0, scale_std)``), per-frame
    depth shift of the whole pose (z += ``N(0, depth_std)`` m), per-joint
    Gaussian jitter (``jitter_std`` m per coordinate) and outliers (probability
    ``outlier_prob`` per joint, ``N(0, outlier_std)`` m per coordinate).
    Deterministic given ``key``.

    Args:
      key: PRNG key.
      clean_cam: ``[..., T, 17, 3]`` clean poses, camera axes (x right, y down,
        z forward), metres.
      fps: frame rate of the sequence (Hz).
      occ_window_s: occlusion window length (s).
      occ_span_s: occluded span per window (s), ``0 <= occ_span_s <= occ_window_s``.
      jitter_std: per-coordinate jitter std (m).
      depth_std: per-frame depth shift std (m).
      scale_std: per-frame relative scale error std.
      swap_prob: per-pair, per-frame left/right swap probability.
      outlier_prob: per-joint outlier probability.
      outlier_std: per-coordinate outlier std (m).

    Returns:
      ``(observed, valid)``: ``[..., T, 17, 3]`` estimates (0 where invalid) and
      ``bool [..., T]``.
    """
    clean_cam = jnp.asarray(clean_cam)
    skeleton.check_poses(clean_cam, "clean_cam", min_frames=1)
    _check_nonneg(jitter_std=jitter_std, depth_std=depth_std, scale_std=scale_std,
                  outlier_std=outlier_std)
    _check_prob(swap_prob=swap_prob, outlier_prob=outlier_prob)
    if fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    window = int(round(occ_window_s * fps))
    span = int(round(occ_span_s * fps))
    if window < 1 or not 0 <= span <= window:
        raise ValueError(
            f"need occ_window_s * fps >= 1 and 0 <= occ_span_s <= occ_window_s, "
            f"got {occ_window_s} s, {occ_span_s} s at {fps} fps")
    batch, n_frames = clean_cam.shape[:-3], clean_cam.shape[-3]
    k_occ, k_swap, k_scale, k_depth, k_jit, k_out = jax.random.split(key, 6)
    frame_shape = batch + (n_frames,)

    valid = occlusion_mask(k_occ, batch, n_frames, window=window, span=span)
    obs = swap_left_right(k_swap, clean_cam, swap_prob)
    scale = 1.0 + scale_std * jax.random.normal(k_scale, frame_shape, clean_cam.dtype)
    obs = _scale_root_relative(obs, scale)
    depth = depth_std * jax.random.normal(k_depth, frame_shape, clean_cam.dtype)
    obs = obs.at[..., 2].add(depth[..., None])
    obs = obs + jitter_std * jax.random.normal(k_jit, obs.shape, obs.dtype)
    obs = _outliers(k_out, obs, outlier_prob, outlier_std)
    return jnp.where(valid[..., None, None], obs, 0.0), valid
