"""Shared helpers of ``scripts/bench_align.py`` and ``scripts/bench_pretrain.py``.

Timing (median of repeats, ``block_until_ready``), the measured dense fp32 matmul peak of
the device (the roofline reference), XLA ``cost_analysis`` FLOPs, model size presets,
synthetic-but-real motion from the embedded demo clips, machine info and JSON / table
output, and the PyTorch reference model (``tests/torch_dstformer.py``).  Needs the
package installed (``pip install -e .``).
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from stride_jax.data import augment
from stride_jax.data.dataset import load_demo

_REPO = Path(__file__).resolve().parents[1]


def torch_reference() -> Any:
    """The PyTorch DSTFormer reference (``tests/torch_dstformer.py``), imported by path."""
    if "torch_dstformer" not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            "torch_dstformer", _REPO / "tests" / "torch_dstformer.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["torch_dstformer"] = module
        spec.loader.exec_module(module)
    return sys.modules["torch_dstformer"]


# Model size presets (``--sizes``); ``config`` keeps the config file's model.  ``frames``
# is the default video / clip length of the preset.
SIZES: dict[str, dict[str, Any]] = {
    "paper": dict(model=dict(dim_feat=512, dim_rep=512, depth=5, num_heads=8, mlp_ratio=2.0,
                             maxlen=243), frames=243),
    "cpu": dict(model=dict(dim_feat=128, dim_rep=256, depth=3, num_heads=8, mlp_ratio=2.0,
                           maxlen=243), frames=243),
    "small": dict(model=dict(dim_feat=64, dim_rep=128, depth=2, num_heads=8, mlp_ratio=2.0,
                             maxlen=243), frames=81),
    "tiny": dict(model=dict(dim_feat=16, dim_rep=16, depth=1, num_heads=2, mlp_ratio=2.0,
                            maxlen=243), frames=27),
}
DEFAULT_CONFIG = str(_REPO / "configs" / "cpu.py")
EXIT_NO_DEVICE = 2


class NoDeviceError(RuntimeError):
    """The requested accelerator is not available."""


def load_config(spec: str) -> ml_collections.ConfigDict:
    """``"configs/cpu.py"`` or ``"configs/cpu.py:runlocal"`` -> ``get_config(arg)``."""
    path, _, arg = spec.partition(":")
    file = Path(path) if Path(path).is_absolute() else Path.cwd() / path
    if not file.is_file() and (_REPO / path).is_file():
        file = _REPO / path
    if not file.is_file():
        raise FileNotFoundError(f"config file {path} not found")
    module_spec = importlib.util.spec_from_file_location(f"_bench_config_{file.stem}", file)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(arg or None)


def apply_sizes(config: ml_collections.ConfigDict, sizes: str) -> tuple[ml_collections.ConfigDict,
                                                                      int | None]:
    """A copy of ``config`` with the model of preset ``sizes`` and the preset's frames.

    ``sizes='config'`` keeps the config's model and returns ``frames=None``.
    """
    out = copy.deepcopy(config)
    if sizes == "config":
        return out, None
    if sizes not in SIZES:
        raise ValueError(f"unknown --sizes {sizes!r}; known: config, {', '.join(SIZES)}")
    out.model.update(SIZES[sizes]["model"])
    return out, SIZES[sizes]["frames"]


def model_summary(model_config: Any) -> str:
    """``dim 128 / rep 256 / depth 3 / heads 8`` for printing."""
    m = dict(model_config)
    return (f"dim {m['dim_feat']} / rep {m['dim_rep']} / depth {m['depth']} / "
            f"heads {m['num_heads']} / mlp x{m['mlp_ratio']} / maxlen {m['maxlen']}")


def select_device(kind: str) -> jax.Device:
    """The first JAX device of ``kind`` (``cpu`` or ``gpu``); raises ``NoDeviceError``."""
    if kind not in ("cpu", "gpu"):
        raise ValueError(f"device must be cpu or gpu, got {kind!r}")
    try:
        devices = jax.devices(kind)
    except RuntimeError as err:
        raise NoDeviceError(f"no JAX {kind} device: {err}") from err
    if not devices:
        raise NoDeviceError(f"no JAX {kind} device")
    return devices[0]


def num_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def import_torch(threads: int) -> Any | None:
    """``torch`` with ``threads`` intra-op threads, or None when it is not installed."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(threads)
    return torch


def block(tree: Any) -> Any:
    """Waits for every array in ``tree``."""
    return jax.block_until_ready(tree)


def median_time(fn: Callable[[], Any], repeats: int,
                setup: Callable[[], Any] | None = None) -> tuple[float, list[float]]:
    """Median wall seconds of ``fn(*setup())`` (``setup`` untimed) over ``repeats`` calls.

    ``fn``'s result is passed through ``block_until_ready`` inside the timed region.
    """
    times = []
    for _ in range(max(repeats, 1)):
        args = setup() if setup is not None else ()
        t0 = time.perf_counter()
        block(fn(*args))
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def cost_flops(compiled: Any) -> float | None:
    """FLOPs from XLA's ``cost_analysis`` of a compiled function (None if unavailable).

    Note that XLA counts the body of a ``while`` / ``scan`` loop once, not per trip.
    """
    try:
        analysis = compiled.cost_analysis()
    except Exception:  # noqa: BLE001 - some backends do not implement it
        return None
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0] if analysis else None
    if not analysis or "flops" not in analysis:
        return None
    return float(analysis["flops"])


def matmul_peak_gflops(device: jax.Device, *, n: int = 4096, repeats: int = 5,
                       precision: str = "default") -> float:
    """Measured dense fp32 ``[n,n] @ [n,n]`` GF/s of ``device`` (jitted, median of repeats).

    ``precision="default"`` is what the model's matmuls use (on NVIDIA GPUs XLA may then
    run fp32 matmuls as TF32); ``"highest"`` forces full fp32.
    """
    a = jax.device_put(jax.random.normal(jax.random.key(0), (n, n), jnp.float32), device)
    b = jax.device_put(jax.random.normal(jax.random.key(1), (n, n), jnp.float32), device)
    prec = {"default": None, "highest": jax.lax.Precision.HIGHEST}[precision]
    matmul = jax.jit(lambda x, y: jnp.matmul(x, y, precision=prec))
    block(matmul(a, b))
    seconds, _ = median_time(lambda: matmul(a, b), repeats)
    return 2.0 * n**3 / seconds / 1e9


def achieved(flops: float | None, seconds: float | None, peak_gflops: float) -> dict[str, Any]:
    """``{"gflops_per_s", "roofline_fraction"}`` for ``flops`` done in ``seconds``."""
    if not flops or not seconds:
        return {"gflops_per_s": None, "roofline_fraction": None}
    rate = flops / seconds / 1e9
    return {"gflops_per_s": rate, "roofline_fraction": rate / peak_gflops}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> float | None:
    """1-minute load average (None where unknown)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def warn_if_busy() -> float | None:
    """Prints a warning when other processes keep the CPU busy; returns the load average.

    Competing processes make timings noisy, PyTorch's multi-threaded eager mode most of all.
    """
    load = load_average()
    if load is not None and load > 0.5:
        print(f"warning: 1-minute load average is {load:.1f} before the benchmark; other "
              "processes are using the CPU and timings will be noisy", flush=True)
    return load


def machine_info(device: jax.Device, torch: Any | None) -> dict[str, Any]:
    """Versions, CPU model, core count, load and the JAX device the benchmark ran on."""
    return {
        "load_average_1min": load_average(),
        "jax": jax.__version__,
        "jaxlib": _jaxlib_version(),
        "torch": torch.__version__ if torch is not None else None,
        "torch_threads": torch.get_num_threads() if torch is not None else None,
        "python": platform.python_version(),
        "cpu_model": _cpu_model(),
        "cores": num_cores(),
        "platform": device.platform,
        "device_kind": device.device_kind,
        "device": str(device),
    }


def _jaxlib_version() -> str | None:
    try:
        import jaxlib

        return jaxlib.__version__
    except (ImportError, AttributeError):
        return None


def demo_world_clips(num: int, frames: int, *, seed: int = 0) -> np.ndarray:
    """``num`` world-space clips ``[num, frames, 17, 3]`` (metres, Y up) of real motion.

    The embedded demo clips are played forwards and backwards (smooth at the turns) as
    often as needed; every clip starts at a different random frame.
    """
    demo, _ = load_demo()
    pingpong = np.concatenate([demo, demo[:, ::-1][:, 1:-1]], axis=1)
    period = pingpong.shape[1]
    rng = np.random.default_rng(seed)
    out = np.empty((num, frames) + demo.shape[2:], np.float32)
    for i in range(num):
        start = int(rng.integers(period))
        out[i] = pingpong[i % demo.shape[0], (start + np.arange(frames)) % period]
    return out


def demo_root_relative(num: int, frames: int, *, seed: int = 0) -> np.ndarray:
    """Root-relative camera-space poses ``[num, frames, 17, 3]`` (see ``demo_world_clips``)."""
    world = demo_world_clips(num, frames, seed=seed)
    return np.asarray(augment.root_relative(augment.world_to_camera(world)), np.float32)


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]]) -> str:
    """Fixed-width table; ``columns`` are ``(key, header)``; floats with 3 significant digits."""

    def cell(value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:.3g}"
        return str(value)

    cells = [[header for _, header in columns]]
    cells += [[cell(row.get(key)) for key, _ in columns] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in cells)


def run_main(parse_args: Callable[[Sequence[str] | None], Any], run: Callable[[Any], Any],
             argv: Sequence[str] | None) -> int:
    """A bench script's ``main``: parse, run, and turn a missing device into exit code
    ``EXIT_NO_DEVICE`` with one error line."""
    args = parse_args(argv)
    try:
        run(args)
    except NoDeviceError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_NO_DEVICE
    return 0


def write_json(path: Path, data: dict[str, Any]) -> Path:
    """Writes ``data`` as indented JSON (creating the directory); returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=_jsonable))
    return path


def _jsonable(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def official_ttt_seconds(torch: Any, model_config: dict, clips: Sequence[np.ndarray],
                         epochs: int, device: str = "cpu") -> float:
    """Seconds per clip of the official STRIDE recipe in eager PyTorch.

    ``tests/torch_dstformer.ttt_reference``: the DSTformer of ``model_config`` with the
    official code's 3 input channels (random weights: timing does not depend on them),
    ``epochs`` AdamW steps at the paper's lr on one window per clip, then its prediction,
    on ``device`` ("cpu" or "cuda").  One untimed 1-step clip first.  Clips are
    ``[T, 17, 3]`` root-relative poses (metres).
    """
    from configs import cpu

    ref = torch_reference()
    paper = cpu.get_config("ttt=paper").ttt
    model = ref.build_from_config({**dict(model_config), "dim_in": 3})
    ref.randomize_(model, seed=0)
    model = model.to(device)
    tensors = [torch.from_numpy(np.asarray(c, np.float32)[None]) for c in clips]
    loss = dict(paper.loss)
    ref.ttt_reference(model, tensors[0], 1, paper.lr, paper.weight_decay, loss)
    t0 = time.perf_counter()
    for clip in tensors:  # each returns a host array: the device work is finished
        ref.ttt_reference(model, clip, epochs, paper.lr, paper.weight_decay, loss)
    return (time.perf_counter() - t0) / len(tensors)
