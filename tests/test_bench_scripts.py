"""Speed benchmark scripts: each runs once at a tiny size and writes the expected JSON.

No timing asserts: only that every number is there, finite where measured, and that the
derived quantities (per-video times, ratios, roofline fractions) follow from the raw ones.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stride_jax import flops

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts"


def _load(name: str):
    """Imports ``scripts/<name>.py`` by path (registered so the scripts import each other)."""
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


bench_common = _load("bench_common")
bench_align = _load("bench_align")
bench_pretrain = _load("bench_pretrain")

try:
    import torch  # noqa: F401

    HAS_TORCH = True
except ImportError:
    HAS_TORCH = False
TORCH_FLAG = ["--torch", "--torch_threads", "1"] if HAS_TORCH else ["--no-torch"]
TINY = ["--sizes", "tiny", "--repeats", "1", "--matmul_n", "64"]


def _has_gpu() -> bool:
    try:
        return bool(jax.devices("gpu"))
    except RuntimeError:
        return False


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


@pytest.fixture(scope="module")
def align_result(tmp_path_factory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("bench_align")
    argv = TINY + ["--K", "1,2", "--T", "27", "--epochs", "2", "--T_sweep", "27",
                   "--sweep_k", "1", "--torch_max_k", "1", "--out", str(out)] + TORCH_FLAG
    assert bench_align.main(argv) == 0
    return json.loads((out / "bench_align.json").read_text()), out


@pytest.fixture(scope="module")
def pretrain_result(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("bench_pretrain")
    argv = TINY + ["--batch", "2", "--clip_len", "27", "--steps", "2", "--warmup", "1",
                   "--out", str(out)] + TORCH_FLAG
    assert bench_pretrain.main(argv) == 0
    return json.loads((out / "bench_pretrain.json").read_text())


class TestBenchAlign:
    def test_files_and_machine(self, align_result):
        result, out = align_result
        assert (out / "bench_align.png").stat().st_size > 0
        machine = result["machine"]
        for key in ("jax", "torch", "cpu_model", "cores", "device_kind", "platform"):
            assert key in machine
        assert _positive(machine["peak_matmul_gflops"])
        assert result["setup"]["epochs"] == 2 and result["setup"]["T"] == 27

    def test_k_sweep_rows(self, align_result):
        result, _ = align_result
        rows = result["k_sweep"]
        assert [r["K"] for r in rows] == [1, 2]
        for row in rows:
            assert (row["N"], row["W"]) == (1, 27)
            for key in ("compile_s", "vmap_s", "loop_s", "loop_first_call_s", "flops",
                        "vmap_gflops_per_s", "vmap_roofline_fraction", "loop_roofline_fraction"):
                assert _positive(row[key]), key
            assert row["vmap_per_video_s"] == pytest.approx(row["vmap_s"] / row["K"])
            assert row["loop_over_vmap"] == pytest.approx(row["loop_s"] / row["vmap_s"])
            assert row["vmap_roofline_fraction"] == pytest.approx(
                row["vmap_gflops_per_s"] / result["machine"]["peak_matmul_gflops"])
        assert rows[1]["flops"] == pytest.approx(2 * rows[0]["flops"])
        # CPU: the K-video call trains one video at a time; K=2 also times vmap of both
        assert [r["width"] for r in rows] == [1, 1]
        assert "full_vmap_s" not in rows[0] and _positive(rows[1]["full_vmap_s"])
        assert rows[1]["loop_over_full_vmap"] == pytest.approx(
            rows[1]["loop_s"] / rows[1]["full_vmap_s"])

    @pytest.mark.skipif(not HAS_TORCH, reason="torch not installed")
    def test_torch_columns(self, align_result):
        result, _ = align_result
        one, two = result["k_sweep"]
        assert not one["torch_extrapolated"] and two["torch_extrapolated"]
        assert two["torch_measured_videos"] == 1
        assert two["torch_s"] == pytest.approx(2 * two["torch_measured_s"])
        for row in (one, two):
            for key in ("torch_s", "torch_per_video_s", "vmap_over_torch", "loop_over_torch",
                        "torch_roofline_fraction"):
                assert _positive(row[key]), key
            assert row["vmap_over_torch"] == pytest.approx(row["vmap_s"] / row["torch_s"])

    def test_t_sweep_reuses_the_matching_row(self, align_result):
        result, _ = align_result
        assert result["t_sweep"] == [result["k_sweep"][0]]


class TestBenchPretrain:
    def test_jax_fields(self, pretrain_result):
        jax_row = pretrain_result["results"]["jax"]
        for key in ("compile_s", "step_s", "steps_per_s", "clips_per_s", "flops_per_step",
                    "gflops_per_s", "roofline_fraction"):
            assert _positive(jax_row[key]), key
        assert jax_row["steps_per_s"] == pytest.approx(1.0 / jax_row["step_s"])
        assert math.isfinite(jax_row["final_loss"])
        assert pretrain_result["setup"]["batch"] == 2
        assert _positive(pretrain_result["machine"]["peak_matmul_gflops"])

    @pytest.mark.skipif(not HAS_TORCH, reason="torch not installed")
    def test_torch_fields(self, pretrain_result):
        results = pretrain_result["results"]
        torch_row = results["torch"]
        for key in ("step_s", "steps_per_s", "gflops_per_s", "roofline_fraction"):
            assert _positive(torch_row[key]), key
        assert torch_row["flops_per_step"] == results["jax"]["flops_per_step"]
        assert results["jax"]["speedup_vs_torch"] == pytest.approx(
            torch_row["step_s"] / results["jax"]["step_s"])


@pytest.mark.skipif(_has_gpu(), reason="a GPU is present")
@pytest.mark.parametrize("script", ["bench_align.py", "bench_pretrain.py"])
def test_missing_gpu_exits_2(script, tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPTS / script), "--device", "gpu",
                           "--out", str(tmp_path)], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert "gpu" in proc.stderr.lower()


class TestCommon:
    def test_make_videos_windows(self):
        config, _ = bench_common.apply_sizes(bench_common.load_config("configs/cpu.py:runlocal"),
                                             "config")
        inputs, weights, mask = bench_align.make_videos(2, 36, config.ttt, seed=0)
        assert inputs.shape == (2, 2, 27, 17, 3)  # window 27, stride 9: starts 0 and 9
        assert weights.shape == mask.shape == (2, 2, 27) and mask.all()
        assert np.isfinite(inputs).all()
        np.testing.assert_allclose(inputs[..., 0, :], 0.0)  # root-relative

    def test_apply_sizes_copies_and_rejects_unknown(self):
        config = bench_common.load_config("configs/cpu.py")
        small, frames = bench_common.apply_sizes(config, "small")
        assert (small.model.dim_feat, small.model.depth, frames) == (64, 2, 81)
        assert config.model.dim_feat == 128
        with pytest.raises(ValueError, match="unknown --sizes"):
            bench_common.apply_sizes(config, "huge")

    def test_cost_flops_of_a_matmul(self):
        x = jnp.ones((32, 32))
        lowered = jax.jit(lambda a: a @ a).lower(x)
        assert bench_common.cost_flops(lowered.compile()) == pytest.approx(2 * 32**3)

    def test_format_table(self):
        table = bench_common.format_table([{"a": 1, "b": 0.123456}, {"a": 10, "b": None}],
                                          [("a", "A"), ("b", "B")])
        assert table.splitlines() == [" A      B", " 1  0.123", "10      -"]


def test_call_vs_loop_pairs_the_runs(capsys):
    bench = _load("bench_call_vs_loop")
    out = bench.main(["--sizes", "tiny", "--K", "2", "--epochs", "2", "--repeats", "2"])
    assert len(out["call"]) == len(out["loop"]) == 2
    assert all(t > 0 for t in out["call"] + out["loop"])
    assert out["ratio"] == pytest.approx(np.median(out["call"]) / np.median(out["loop"]))
    assert "call / loop (medians)" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        bench.main(["--K", "0"])


def test_matmul_bound_times_every_listed_matmul(tmp_path, capsys):
    bench = _load("bench_matmul_bound")
    argv = ["--sizes", "tiny", "--repeats", "1", "--min_time", "0.001", "--matmul_n", "64",
            "--steps", "1", "--step_repeats", "1", "--out", str(tmp_path)] + TORCH_FLAG
    assert bench.main(argv) == 0
    result = json.loads((tmp_path / "bench_matmul_bound.json").read_text())
    rows, totals = result["matmuls"], result["totals"]
    ops = flops.train_step_matmuls(result["setup"]["model"], result["setup"]["frames"], 1)
    assert [(r["name"], r["layout"], r["m"], r["k"], r["n"], r["count"]) for r in rows] == [
        (o.name, o.layout, o.m, o.k, o.n, o.count) for o in ops]
    assert totals["flops"] == pytest.approx(sum(o.flops for o in ops))
    sides = ("xla", "blas", "torch") if HAS_TORCH else ("xla", "blas")
    for side in sides:
        assert all(_positive(r[f"{side}_s"]) for r in rows)
        assert totals[f"{side}_matmul_step_s"] == pytest.approx(
            sum(r[f"{side}_s"] * r["count"] for r in rows))
        assert sum(r[f"{side}_step_share"] for r in rows) == pytest.approx(1.0)
    assert _positive(result["steps"]["jax_step_s"])
    if HAS_TORCH:
        bound = totals["xla_matmul_step_s"] / result["steps"]["torch_step_s"]
        out = capsys.readouterr().out
        assert f"XLA matmuls alone = {bound:.2f} x the PyTorch step" in out
        steps = result["steps"]
        parity = (steps["jax_step_s"] - totals["xla_matmul_step_s"]
                  + totals["torch_matmul_step_s"]) / steps["torch_step_s"]
        assert result["parity_ratios"]["parity"] == pytest.approx(parity)
        assert f"other work as measured: {parity:.2f} x the PyTorch step" in out
        blas = parity + (totals["blas_matmul_step_s"] - totals["torch_matmul_step_s"]) / steps[
            "torch_step_s"]
        assert result["parity_ratios"]["blas_parity"] == pytest.approx(blas)
        assert f"JAX's other work as measured: {blas:.2f} x the PyTorch step" in out
        best = max(r["flops"] / r["count"] / r[f"{side}_s"] for r in rows for side in sides)
        assert totals["best_gflops_per_s"] == pytest.approx(best / 1e9)
        floor = totals["flops"] / best / steps["torch_step_s"]
        assert result["parity_ratios"]["best_rate_only"] == pytest.approx(floor)
        assert floor <= result["parity_ratios"]["matmuls_only"] * (1 + 1e-9)
        assert f"{floor:.2f} x the PyTorch step alone" in out
    else:
        assert result["parity_ratios"] == {}


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("layout", ["nn", "nt", "tn"])
def test_matmul_bound_operands_give_the_product(layout, batch):
    bench = _load("bench_matmul_bound")
    op = flops.Matmul("x", layout, batch, 4, 5, 6, 1)
    shape_a, shape_b = op.operand_shapes()
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(shape_a), rng.standard_normal(shape_b)
    want = {"nn": lambda: a @ b, "nt": lambda: a @ b.swapaxes(-1, -2),
            "tn": lambda: a.swapaxes(-1, -2) @ b}[layout]()
    assert want.shape == ((batch,) if batch > 1 else ()) + (4, 6)
    np.testing.assert_allclose(bench.xla_matmul(op)(jnp.asarray(a, jnp.float32),
                                                    jnp.asarray(b, jnp.float32)),
                               want, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(bench.blas_matmul(op)(a, b), want, rtol=1e-12)
    if HAS_TORCH:
        got = bench.torch_matmul(torch, op)(torch.from_numpy(a), torch.from_numpy(b))
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-6, atol=1e-6)


def test_gpu_check_dry_run_writes_its_summary(tmp_path):
    """``scripts/gpu_check.sh --dry-run``: the GPU check's whole path at tiny sizes on CPU."""
    pytest.importorskip("torch")
    out = tmp_path / "gpu"
    proc = subprocess.run(["bash", str(SCRIPTS / "gpu_check.sh"), "--dry-run"], cwd=REPO,
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OUT": str(out)})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    summary = json.loads((out / "gpu_check.json").read_text())
    assert summary["dry_run"] is True and summary["size"] == "tiny"
    official = summary["official_recipe"]["s_per_video"]
    assert _positive(official)
    (row,) = summary["align"]
    assert row["K"] == 1 and _positive(row["s_per_video"]) and _positive(row["compile_s"])
    assert row["x_official"] == pytest.approx(row["s_per_video"] / official)
    assert _positive(summary["pretrain"]["jax"]["step_s"])
    assert (out / "align" / "bench_align.json").is_file()


def test_pareto_front_keeps_only_undominated_points():
    tta = _load("bench_time_to_accuracy")
    points = {"fast_bad": (1.0, 50.0), "slow_good": (10.0, 40.0), "dominated": (10.0, 45.0),
              "tie_slower": (2.0, 50.0), "best": (1.0, 40.0)}
    assert tta.pareto(points) == {"best"}
    del points["best"]
    assert tta.pareto(points) == {"fast_bad", "slow_good"}
