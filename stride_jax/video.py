"""Video frames in, side-by-side renderings out.

* :class:`FrameReader`: RGB frames of a video file (OpenCV) or of a directory of images
  (Pillow, natural name order).
* :func:`render_side_by_side`: left the input frame with the estimator's 2D skeleton, right
  the refined 3D skeleton (orthographic view turned by ``yaw_deg`` about the vertical
  axis, the raw estimate in grey behind it).  ``.gif`` (Pillow) or ``.mp4`` (OpenCV).

The video -> estimate -> alignment -> rendering pipeline is
``stride_jax.pipeline.align_video_file``.

Only Pillow and numpy are imported at module level; OpenCV, MediaPipe and JAX are imported
where they are needed (the estimator is an optional extra: ``requirements-video.txt``).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from absl import logging
from PIL import Image, ImageDraw

from stride_jax import skeleton

DEFAULT_FPS: float = 30.0
IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
INSTALL_HINT = "install the video extra: pip install -r requirements-video.txt"
GIF_MAX_FRAMES: int = 120  # "auto" renders longer clips as .mp4 (a GIF is held in memory and
# a 230-frame photo-realistic GIF is ~26 MB); without OpenCV it stays .gif

_LEFT_RGB, _RIGHT_RGB, _MID_RGB = (66, 133, 244), (234, 67, 53), (250, 200, 40)
_GREY, _BACKGROUND = (120, 120, 120), (24, 24, 28)
_SIDE_RGB = {"left": _LEFT_RGB, "right": _RIGHT_RGB, "mid": _MID_RGB}


class VideoError(ValueError):
    """A video or image directory is missing or unreadable, or the estimator is not
    installed; the message says how to fix it."""


def _import_cv2() -> Any:
    try:
        import cv2
    except ImportError as err:
        raise VideoError(f"reading and writing video files needs OpenCV ({err}); "
                         f"{INSTALL_HINT}") from err
    return cv2


def _natural_key(path: Path) -> list:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path.name)]


class FrameReader:
    """Iterates ``(H, W, 3)`` uint8 RGB frames of a video file or an image directory.

    Attributes:
      path: the source; ``name``: a video's stem or a directory's name (output names).
      fps: frames per second (``fps`` argument, else the video's, else ``DEFAULT_FPS``).
      num_frames: number of frames (a video's header count may be approximate; 0 unknown).

    Raises:
      VideoError: no such path, a directory without images, a file OpenCV cannot decode
        or that holds no frame, or missing OpenCV for a video file.
    """

    def __init__(self, source: str | os.PathLike, *, fps: float | None = None):
        self.path = Path(source)
        self.name = self.path.name if self.path.is_dir() else self.path.stem
        if fps is not None and not (math.isfinite(fps) and fps > 0):
            raise VideoError(f"fps must be a positive number, got {fps}")
        if not self.path.exists():
            raise VideoError(f"{self.path}: no such video file or image directory")
        self._files: list[Path] = []
        if self.path.is_dir():
            self._files = sorted((f for f in self.path.iterdir() if f.is_file()
                                  and not f.name.startswith(".")
                                  and f.suffix.lower() in IMAGE_SUFFIXES), key=_natural_key)
            if not self._files:
                raise VideoError(f"{self.path}: directory holds no images "
                                 f"({', '.join(IMAGE_SUFFIXES)})")
            self.num_frames = len(self._files)
            self.fps = float(fps or DEFAULT_FPS)
            return
        if self.path.suffix.lower() in IMAGE_SUFFIXES:
            raise VideoError(f"{self.path}: a single image; put the frames of a clip in a "
                             "directory and pass the directory")
        cv2 = _import_cv2()
        cap = cv2.VideoCapture(str(self.path))
        try:
            if not cap.isOpened():
                raise VideoError(f"{self.path}: cannot be opened as a video (not a video, "
                                 "or a codec OpenCV cannot decode); convert it, e.g. "
                                 "ffmpeg -i IN -c:v libx264 OUT.mp4, or pass a directory "
                                 "of frame images")
            ok, _ = cap.read()
            if not ok:
                raise VideoError(f"{self.path}: holds no readable video frame")
            native = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
            self.num_frames = max(int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0), 0)
        finally:
            cap.release()
        if fps is None and not (math.isfinite(native) and 0 < native <= 1000):
            logging.warning("%s: the video gives no usable frame rate (%s); using %g fps "
                            "(set --fps)", self.path, native, DEFAULT_FPS)
            native = DEFAULT_FPS
        self.fps = float(fps or native)

    def __iter__(self) -> Iterator[np.ndarray]:
        if self._files:
            for f in self._files:
                try:
                    with Image.open(f) as im:
                        yield np.asarray(im.convert("RGB"))
                except OSError as err:  # PIL.UnidentifiedImageError included
                    raise VideoError(f"{f}: not a readable image ({err})") from err
            return
        cv2 = _import_cv2()
        cap = cv2.VideoCapture(str(self.path))
        try:
            while True:
                ok, bgr = cap.read()
                if not ok:
                    break
                yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        finally:
            cap.release()


def _draw_skeleton(draw: ImageDraw.ImageDraw, pts: np.ndarray, *, width: int,
                   confidence: np.ndarray | None = None, colour: tuple | None = None) -> None:
    """Draws the 16 bones of ``pts`` (17, 2) pixels; bones with a joint of confidence < 0.5
    are grey."""
    for parent, child in skeleton.BONES:
        a, b = pts[parent], pts[child]
        if not (np.isfinite(a).all() and np.isfinite(b).all()):
            continue
        c = colour or _SIDE_RGB[skeleton.bone_side(int(child))]
        if confidence is not None and min(confidence[parent], confidence[child]) < 0.5:
            c = _GREY
        draw.line([tuple(a), tuple(b)], fill=c, width=width)
    r = max(width, 2)
    for p in pts:
        if np.isfinite(p).all():
            draw.ellipse([p[0] - r, p[1] - r, p[0] + r, p[1] + r], fill=(255, 255, 255))


def _view(poses: np.ndarray, yaw_deg: float) -> np.ndarray:
    """Root-relative ``(T, 17, 3)`` camera-axes poses -> ``(T, 17, 2)`` orthographic view
    after turning the body by ``yaw_deg`` about the vertical (y) axis."""
    rel = skeleton.root_relative(poses)
    c, s = math.cos(math.radians(yaw_deg)), math.sin(math.radians(yaw_deg))
    return np.stack([c * rel[..., 0] + s * rel[..., 2], rel[..., 1]], axis=-1)


def _fit(views: np.ndarray, size: int) -> tuple[float, np.ndarray]:
    """Scale and offset mapping metres to a ``size`` x ``size`` panel, from robust extents."""
    pts = views.reshape(-1, 2)
    pts = pts[np.isfinite(pts).all(axis=1)]
    if pts.size == 0:
        return 1.0, np.array([size / 2, size / 2])
    lo, hi = np.percentile(pts, 1, axis=0), np.percentile(pts, 99, axis=0)
    scale = 0.85 * size / max(float((hi - lo).max()), 0.3)
    return scale, size / 2 - scale * (lo + hi) / 2


class _Writer:
    """Collects RGB frames into a GIF (Pillow) or streams them into an MP4 (OpenCV)."""

    def __init__(self, path: Path, fps: float):
        self.path, self.fps = path, fps
        self._gif: list[Image.Image] = []
        self._mp4 = None
        if path.suffix.lower() not in (".gif", ".mp4"):
            raise VideoError(f"{path}: rendering must be .gif or .mp4")

    def add(self, im: Image.Image) -> None:
        if self.path.suffix.lower() == ".gif":
            self._gif.append(im.convert("P", palette=Image.Palette.ADAPTIVE, colors=255))
            return
        cv2 = _import_cv2()
        if self._mp4 is None:
            self._mp4 = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"),
                                        self.fps, im.size)
            if not self._mp4.isOpened():
                raise VideoError(f"{self.path}: OpenCV cannot write an mp4v video here; "
                                 "render a .gif instead")
        self._mp4.write(cv2.cvtColor(np.asarray(im), cv2.COLOR_RGB2BGR))

    def close(self) -> None:
        if self._gif:
            self._gif[0].save(self.path, save_all=True, append_images=self._gif[1:],
                              duration=max(int(round(1000.0 / self.fps)), 20), loop=0)
        if self._mp4 is not None:
            self._mp4.release()


def render_side_by_side(frames: Iterable[np.ndarray], output: str | os.PathLike, *,
                        joints_2d: np.ndarray, confidence_2d: np.ndarray,
                        refined: np.ndarray, valid: np.ndarray, fps: float,
                        estimate_3d: np.ndarray | None = None, height: int = 320,
                        yaw_deg: float = 35.0) -> Path:
    """Writes the input frames beside the refined 3D skeleton.

    Args:
      frames: ``(H, W, 3)`` uint8 RGB frames (the video again).
      output: ``.gif`` or ``.mp4`` path.
      joints_2d: ``(T, 17, 2)`` estimator joints in normalised image coordinates.
      confidence_2d: ``(T, 17)`` their confidences (bones below 0.5 are drawn grey).
      refined: ``(T, 17, 3)`` refined poses, metres, camera axes.
      valid: ``(T,)`` frames with a detection (others say "no detection").
      fps: playback rate.
      estimate_3d: optional ``(T, 17, 3)`` raw estimate, drawn in grey behind ``refined``.
      height: panel height in pixels (frames are scaled to it).
      yaw_deg: view angle of the 3D panel about the vertical axis (0 = camera view).

    Returns:
      The output path.
    """
    path = Path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = refined.shape[0]
    if joints_2d.shape != (n, skeleton.NUM_JOINTS, 2) or valid.shape != (n,):
        raise ValueError(f"joints_2d {joints_2d.shape} / valid {valid.shape} do not match "
                         f"refined {refined.shape}")
    view = _view(refined, yaw_deg)
    raw = None if estimate_3d is None else _view(estimate_3d, yaw_deg)
    scale, offset = _fit(view, height)
    width = max(2, height // 120)
    writer = _Writer(path, fps)
    try:
        for t, frame in enumerate(frames):
            if t >= n:
                break
            h, w = frame.shape[:2]
            left = Image.fromarray(frame).resize((max(1, round(w * height / h)), height))
            draw = ImageDraw.Draw(left)
            if valid[t]:
                _draw_skeleton(draw, joints_2d[t] * np.array(left.size), width=width,
                               confidence=confidence_2d[t])
            else:
                draw.text((8, 8), "no detection", fill=_RIGHT_RGB)
            right = Image.new("RGB", (height, height), _BACKGROUND)
            draw = ImageDraw.Draw(right)
            if raw is not None and valid[t]:
                _draw_skeleton(draw, raw[t] * scale + offset, width=1, colour=_GREY)
            _draw_skeleton(draw, view[t] * scale + offset, width=width)
            draw.text((8, 8), f"refined 3D (yaw {yaw_deg:g} deg)  frame {t}",
                      fill=(230, 230, 230))
            canvas = Image.new("RGB", (left.width + height, height))
            canvas.paste(left, (0, 0))
            canvas.paste(right, (left.width, 0))
            writer.add(canvas)
    finally:
        writer.close()
    return path


def has_cv2() -> bool:
    """Whether OpenCV (the video extra) imports."""
    try:
        _import_cv2()
    except VideoError:
        return False
    return True
