"""Per-frame 3D poses from a video with MediaPipe BlazePose (CLI: ``stride_jax.estimate``).

The estimator is an optional extra (``pip install -r requirements-video.txt``): MediaPipe's
legacy Pose solution with the "full" landmark model (``model_complexity=1``, shipped inside
the wheel; the other complexities download a model at run time and are not used).  It
returns 33 BlazePose *world* landmarks per frame, metres, centred between the hips, with a
per-landmark visibility in [0, 1].  The output ``.npz`` is the pose-file format of
``stride_jax.io`` (``poses`` (T,17,3) m, ``valid`` (T,), ``confidence`` (T,17), ``fps``), so
``python -m stride_jax.align --input OUT.npz`` refines it.  It also keeps the raw
landmarks: ``landmarks_world`` (T,33,3) m, ``landmarks_image`` (T,33,2) normalised image
coordinates (x / width, y / height), ``landmark_visibility`` (T,33), ``image_size`` (T,2)
(width, height px), ``estimator`` (a string), ``frame_track`` (T,) the track index of each
frame (-1: no detection).  Frames without a detection have ``valid=False``, NaN coordinates
and zero confidence.

Tracks: the legacy Pose solution follows one person and, when that person leaves, jumps to
another one (the Sports2D demo clip goes from a man on a wall to a woman walking by).  Poses
of two people must not be aligned as one motion, so :func:`split_tracks` cuts the sequence
where the image position of the hip centre jumps (more than ``max_jump`` frame heights
between consecutive detections, plus a growing allowance across undetected frames).  With
one track the file holds ``poses`` (T,17,3) as above; with P > 1 it holds the multi-track
layout ``poses`` (P,T,17,3), ``valid`` (P,T), ``confidence`` (P,T,17), ``track_ids``
(``"0"``, ``"1"``, ...), each track valid only on its own frames, and ``align`` refines each
track separately.  A person lost and re-found at the same place stays one track; a gradual
drift onto another person or a false detection cannot be seen this way.

Axes: BlazePose world landmarks use the image axes, x to the right of the image, y down,
z away from the camera (smaller z = closer; e.g. the nose of a person facing the camera
has a smaller z than the hips).  That is exactly our camera convention (x right, y down,
z forward, right-handed; ``stride_jax.data.augment.world_to_camera``), so the coordinates
are kept as they are; only the origin differs (hip centre instead of the camera centre),
which alignment ignores because it works on root-relative poses.

BlazePose-33 -> Human3.6M-17 (``mid`` = midpoint; every joint is an affine combination of
landmarks, so the same weights map the 2D image landmarks for drawing):

==============  =====================================================================
H36M joint      from BlazePose landmarks
==============  =====================================================================
0 pelvis        mid(left_hip 23, right_hip 24)
1-3 right leg   right_hip 24, right_knee 26, right_ankle 28
4-6 left leg    left_hip 23, left_knee 25, left_ankle 27
7 spine         mid(pelvis, thorax) = mean of the two hips and the two shoulders
8 thorax        mid(left_shoulder 11, right_shoulder 12)
9 neck/nose     mid(nose 0, mid(left_ear 7, right_ear 8)): the H36M joint lies inside the
                head at nose height; the nose landmark is on the face surface, the ears at
                the back, so their midpoint is nearer the H36M location than either
10 head top     mid_ear + 0.5 * (mid_ear - thorax): the head continues the neck axis; the
                skull vertex is ~11-13 cm above the ear canals, about half the ear-to-
                shoulder-line distance (no landmark marks the top of the head)
11-13 left arm  left_shoulder 11, left_elbow 13, left_wrist 15
14-16 right arm right_shoulder 12, right_elbow 14, right_wrist 16
==============  =====================================================================

Confidence of an H36M joint: the visibility of its landmarks averaged with weights
``|w|`` of the mapping (e.g. the pelvis gets the mean of the two hips).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from stride_jax import files, skeleton
from stride_jax.video import INSTALL_HINT, FrameReader, VideoError

BLAZEPOSE_NAMES: tuple[str, ...] = (
    "nose", "left_eye_inner", "left_eye", "left_eye_outer", "right_eye_inner", "right_eye",
    "right_eye_outer", "left_ear", "right_ear", "mouth_left", "mouth_right", "left_shoulder",
    "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_pinky",
    "right_pinky", "left_index", "right_index", "left_thumb", "right_thumb", "left_hip",
    "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle", "left_heel",
    "right_heel", "left_foot_index", "right_foot_index",
)
NUM_LANDMARKS: int = len(BLAZEPOSE_NAMES)
ESTIMATOR: str = "MediaPipe Pose (BlazePose full, model_complexity=1), world landmarks"

_INDEX = {name: i for i, name in enumerate(BLAZEPOSE_NAMES)}
_HIPS = {"left_hip": 0.5, "right_hip": 0.5}
_SHOULDERS = {"left_shoulder": 0.5, "right_shoulder": 0.5}
_EARS = {"left_ear": 0.5, "right_ear": 0.5}


def _scaled(weights: dict[str, float], s: float) -> dict[str, float]:
    return {k: s * v for k, v in weights.items()}


def _add(*terms: dict[str, float]) -> dict[str, float]:
    out: dict[str, float] = {}
    for term in terms:
        for k, v in term.items():
            out[k] = out.get(k, 0.0) + v
    return out


# H36M joint -> {BlazePose landmark: weight}; every row sums to 1 (see the module table).
_MAPPING: dict[str, dict[str, float]] = {
    "pelvis": _HIPS,
    "r_hip": {"right_hip": 1.0},
    "r_knee": {"right_knee": 1.0},
    "r_ankle": {"right_ankle": 1.0},
    "l_hip": {"left_hip": 1.0},
    "l_knee": {"left_knee": 1.0},
    "l_ankle": {"left_ankle": 1.0},
    "spine": _add(_scaled(_HIPS, 0.5), _scaled(_SHOULDERS, 0.5)),
    "thorax": _SHOULDERS,
    "neck": _add({"nose": 0.5}, _scaled(_EARS, 0.5)),
    "head": _add(_scaled(_EARS, 1.5), _scaled(_SHOULDERS, -0.5)),
    "l_shoulder": {"left_shoulder": 1.0},
    "l_elbow": {"left_elbow": 1.0},
    "l_wrist": {"left_wrist": 1.0},
    "r_shoulder": {"right_shoulder": 1.0},
    "r_elbow": {"right_elbow": 1.0},
    "r_wrist": {"right_wrist": 1.0},
}


def _weight_matrix() -> np.ndarray:
    index = {name: i for i, name in enumerate(BLAZEPOSE_NAMES)}
    w = np.zeros((skeleton.NUM_JOINTS, NUM_LANDMARKS), np.float64)
    for joint, terms in _MAPPING.items():
        for name, value in terms.items():
            w[skeleton.JOINT_INDEX[joint], index[name]] = value
    assert np.allclose(w.sum(axis=1), 1.0), "every H36M joint is an affine combination"
    return w


H36M_FROM_BLAZEPOSE: np.ndarray = _weight_matrix()  # (17, 33)


def blazepose_to_h36m(landmarks: np.ndarray, visibility: np.ndarray | None = None
                      ) -> tuple[np.ndarray, np.ndarray | None]:
    """Maps BlazePose-33 landmarks to Human3.6M-17 joints (module docstring table).

    Args:
      landmarks: ``[..., 33, D]`` points (D = 3 world metres, or D = 2 image coordinates);
        the axes are kept (BlazePose world axes = our camera axes).
      visibility: optional ``[..., 33]`` visibilities in [0, 1].

    Returns:
      ``([..., 17, D] float32 joints, [..., 17] float32 confidences or None)``.

    Raises:
      ValueError: ``landmarks`` is not ``[..., 33, D]`` or ``visibility`` does not match.
    """
    landmarks = np.asarray(landmarks, np.float64)
    if landmarks.ndim < 2 or landmarks.shape[-2] != NUM_LANDMARKS:
        raise ValueError(f"landmarks must be [..., {NUM_LANDMARKS}, D], got {landmarks.shape}")
    joints = np.einsum("jl,...ld->...jd", H36M_FROM_BLAZEPOSE, landmarks).astype(np.float32)
    if visibility is None:
        return joints, None
    visibility = np.clip(np.asarray(visibility, np.float64), 0.0, 1.0)
    if visibility.shape != landmarks.shape[:-1]:
        raise ValueError(f"visibility has shape {visibility.shape}; expected "
                         f"{landmarks.shape[:-1]}")
    absw = np.abs(H36M_FROM_BLAZEPOSE)
    conf = np.einsum("jl,...l->...j", absw / absw.sum(axis=1, keepdims=True), visibility)
    return joints, conf.astype(np.float32)


@dataclasses.dataclass
class Detection:
    """BlazePose output for one frame: ``world`` (33,3) m, ``image`` (33,2) normalised
    image coordinates, ``visibility`` (33,) in [0, 1]."""

    world: np.ndarray
    image: np.ndarray
    visibility: np.ndarray


class PoseEstimator:
    """MediaPipe's legacy Pose solution (BlazePose full) on RGB frames; a context manager.

    ``static_image_mode=False`` tracks the person from frame to frame (faster, temporally
    smoothed); ``True`` runs the person detector on every frame independently.
    """

    def __init__(self, *, static_image_mode: bool = False,
                 min_detection_confidence: float = 0.5, min_tracking_confidence: float = 0.5):
        try:
            from mediapipe.python.solutions import pose as mp_pose
        except ImportError as err:
            raise VideoError(f"the pose estimator needs MediaPipe, which failed to import "
                             f"({err}); {INSTALL_HINT}") from err
        self._pose = mp_pose.Pose(static_image_mode=static_image_mode, model_complexity=1,
                                  smooth_landmarks=True, enable_segmentation=False,
                                  min_detection_confidence=min_detection_confidence,
                                  min_tracking_confidence=min_tracking_confidence)

    def __enter__(self) -> PoseEstimator:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._pose.close()

    def __call__(self, rgb: np.ndarray) -> Detection | None:
        """``rgb``: ``(H, W, 3)`` uint8; returns None when no person is found."""
        result = self._pose.process(np.ascontiguousarray(rgb))
        if result.pose_world_landmarks is None or result.pose_landmarks is None:
            return None
        world = np.array([(p.x, p.y, p.z) for p in result.pose_world_landmarks.landmark])
        image = np.array([(p.x, p.y) for p in result.pose_landmarks.landmark])
        vis = np.array([p.visibility for p in result.pose_world_landmarks.landmark])
        return Detection(world, image, np.clip(vis, 0.0, 1.0))


@dataclasses.dataclass
class EstimateSummary:
    """What :func:`estimate_video` did; ``*_fps`` are frames per second of wall time."""

    output: Path
    frames: int
    detected: int  # frames on a kept track
    fps: float
    tracks: int
    estimator_fps: float  # BlazePose calls only
    total_fps: float  # decoding + estimation + mapping

    def line(self) -> str:
        missed = self.frames - self.detected
        ms = 1000.0 / self.estimator_fps if self.estimator_fps > 0 else float("nan")
        split = (f" in {self.tracks} tracks (the tracker switched person)"
                 if self.tracks > 1 else "")
        return (f"{self.output}: {self.frames} frames at {self.fps:g} fps, {self.detected} "
                f"detected{split}, {missed} without a person; estimator {self.estimator_fps:.1f} "
                f"frames/s ({ms:.1f} ms/frame), {self.total_fps:.1f} frames/s with decoding")


def estimate_video(video: str | os.PathLike, output: str | os.PathLike, *,
                   fps: float | None = None, static_image_mode: bool = False,
                   min_detection_confidence: float = 0.5,
                   progress: Callable[[str], None] | None = None,
                   progress_every_s: float = 5.0) -> EstimateSummary:
    """Runs BlazePose on every frame and writes a Human3.6M-17 pose file (atomically).

    Args:
      video: a video file (anything OpenCV decodes) or a directory of images (frames in
        natural name order: ``f2.png`` before ``f10.png``).
      output: ``.npz`` path (module docstring lists the fields).
      fps: frame rate; default the video's own, or 30 for an image directory.
      static_image_mode: detect independently in every frame instead of tracking.
      min_detection_confidence: BlazePose person-detection threshold.
      progress: optional callback for one-line progress messages.
      progress_every_s: seconds between progress messages.

    Returns:
      An :class:`EstimateSummary` (frame counts and throughput).

    Raises:
      VideoError: unreadable video, empty directory, unreadable image or missing MediaPipe.
    """
    reader = FrameReader(video, fps=fps)
    world, image, vis, sizes = [], [], [], []
    nan33 = np.full((NUM_LANDMARKS, 3), np.nan)
    t_model = 0.0
    t0 = last = time.perf_counter()
    with PoseEstimator(static_image_mode=static_image_mode,
                       min_detection_confidence=min_detection_confidence) as estimator:
        for i, frame in enumerate(reader):
            ts = time.perf_counter()
            det = estimator(frame)
            t_model += time.perf_counter() - ts
            world.append(nan33 if det is None else det.world)
            image.append(nan33[:, :2] if det is None else det.image)
            vis.append(np.zeros(NUM_LANDMARKS) if det is None else det.visibility)
            sizes.append((frame.shape[1], frame.shape[0]))
            now = time.perf_counter()
            if progress is not None and now - last >= progress_every_s:
                last = now
                total = f"/{reader.num_frames}" if reader.num_frames else ""
                found = sum(np.isfinite(w[0, 0]) for w in world)
                progress(f"{reader.name}: frame {i + 1}{total}, {found} detected, "
                         f"{(i + 1) / t_model:.1f} frames/s (estimator)")
    elapsed = time.perf_counter() - t0
    world_a = np.stack(world).astype(np.float32)
    vis_a = np.stack(vis).astype(np.float32)
    image_a = np.stack(image).astype(np.float32)
    detected = np.isfinite(world_a).all(axis=(1, 2))
    size = np.asarray(sizes, np.int32)
    frame_track = split_tracks(image_a, detected, float(size[0, 0]) / float(size[0, 1]))
    poses, conf = blazepose_to_h36m(world_a, vis_a)
    n_tracks = int(frame_track.max()) + 1
    if n_tracks > 1:
        on = frame_track[None] == np.arange(n_tracks)[:, None]  # (P, T)
        per_track = dict(poses=np.where(on[..., None, None], poses[None], np.nan),
                         valid=on, confidence=np.where(on[..., None], conf[None], 0.0),
                         track_ids=np.array([str(k) for k in range(n_tracks)]))
    else:
        valid = frame_track == 0
        poses[~valid] = np.nan
        conf[~valid] = 0.0
        per_track = dict(poses=poses, valid=valid, confidence=conf)
    path = files.save_npz_atomic(
        output, **per_track, fps=np.float64(reader.fps), frame_track=frame_track,
        landmarks_world=world_a, landmarks_image=image_a, landmark_visibility=vis_a,
        image_size=size, estimator=np.str_(ESTIMATOR), source=np.str_(str(video)))
    n = len(world)
    return EstimateSummary(output=path, frames=n, detected=int((frame_track >= 0).sum()),
                           fps=reader.fps, tracks=n_tracks,
                           estimator_fps=n / t_model if t_model > 0 else 0.0,
                           total_fps=n / elapsed if elapsed > 0 else 0.0)


def split_tracks(image_xy: np.ndarray, valid: np.ndarray, aspect: float = 1.0, *,
                 max_jump: float = 0.12, gap_allowance: float = 0.03,
                 min_frames: int = 5) -> np.ndarray:
    """Cuts a single-person tracker's detections into tracks at identity switches.

    Args:
      image_xy: ``(T, 33, 2)`` normalised image landmarks (x / width, y / height).
      valid: ``(T,)`` frames with a detection.
      aspect: width / height of the frames (distances are measured in frame heights).
      max_jump: a hip-centre move larger than this (frame heights) between consecutive
        frames starts a new track.
      gap_allowance: added to ``max_jump`` per undetected frame in between.
      min_frames: tracks with fewer detections are dropped (their frames get -1).

    Returns:
      ``(T,)`` int track index per frame (0, 1, ... in order of appearance), -1 where there
      is no detection or the track was too short.
    """
    image_xy = np.asarray(image_xy, np.float64)
    valid = np.asarray(valid, bool)
    if image_xy.ndim != 3 or image_xy.shape[1:] != (NUM_LANDMARKS, 2) or \
            valid.shape != image_xy.shape[:1]:
        raise ValueError(f"image_xy must be (T, {NUM_LANDMARKS}, 2) and valid (T,), got "
                         f"{image_xy.shape} and {valid.shape}")
    hips = image_xy[:, [_INDEX["left_hip"], _INDEX["right_hip"]]].mean(axis=1) * [aspect, 1.0]
    track = np.full(valid.shape, -1, np.int64)
    current, last = -1, None
    for t in np.flatnonzero(valid):
        if last is None or np.linalg.norm(hips[t] - hips[last]) > \
                max_jump + gap_allowance * (t - last - 1):
            current += 1
        track[t], last = current, t
    kept = [k for k in range(current + 1) if (track == k).sum() >= min_frames]
    renumber = {k: i for i, k in enumerate(kept)}
    return np.array([renumber.get(int(k), -1) for k in track], np.int64)
