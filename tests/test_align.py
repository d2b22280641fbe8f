"""Batched test-time alignment: vmap == alone, padding is invisible, failures are isolated."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from configs import cpu
from stride_jax import checkpoint, pipeline, ttt
from stride_jax.aligner import Video, align_videos
from stride_jax.checkpoint import Prior
from stride_jax.data import augment
from stride_jax.data.dataset import load_demo
from stride_jax.model import build_model, init_params

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def tiny():
    config = cpu.get_config("runlocal")
    model = build_model(config.model)
    params = init_params(model, jax.random.key(0))
    return config, model, params


def _videos(lengths, seed=0):
    """Real climbing motion (camera view) with random missing frames."""
    world, _ = load_demo()
    cam = np.asarray(augment.world_to_camera(world))
    rng = np.random.default_rng(seed)
    out = []
    for i, n in enumerate(lengths):
        start = int(rng.integers(0, cam.shape[1] - n))
        poses = cam[i % 2, start:start + n] + rng.normal(0, 0.01, (n, 17, 3)).astype(np.float32)
        valid = rng.random(n) > 0.3
        valid[n // 2] = True
        out.append(Video(poses.astype(np.float32), valid, f"v{i}"))
    return out


def test_batched_equals_alone_and_loss_decreases(tiny):
    config, _, params = tiny
    videos = _videos([40, 40, 18, 50])  # two share a bucket, one is padded, one is longer
    side_by_side = config.ttt.copy_and_resolve_references()
    side_by_side.vmap_width = 2  # CPU's auto width is 1 (tests/test_progress.py: same result)
    batched, timing = align_videos(videos, Prior(params, config.model.to_dict()), side_by_side,
                                   max_batch=4)
    assert all(b["compile_s"] > 0 for b in timing.buckets) and len(timing.buckets) >= 2
    assert max(b["shape"][0] for b in timing.buckets) == 2  # the two 40-frame videos: vmap
    again, timing_again = align_videos(videos, Prior(params, config.model.to_dict()),
                                       side_by_side, max_batch=4)
    assert timing_again.compile_s == 0  # same settings and shapes: nothing compiled again
    assert not any(b["compiled_now"] for b in timing_again.buckets)
    for a, b in zip(batched, again):
        np.testing.assert_array_equal(a.refined, b.refined)
    other = config.ttt.copy_and_resolve_references()
    other.epochs, other.lr = 8, 1e-3  # other settings: a program of their own
    res_other, timing_other = align_videos(videos[:1], Prior(params, config.model.to_dict()),
                                           other)
    assert timing_other.compile_s > 0 and timing_other.buckets[0]["compiled_now"]
    assert res_other[0].loss_curve[-1] < res_other[0].loss_curve[0]  # it trains
    for video, res in zip(videos, batched):
        alone, _ = align_videos([video], Prior(params, config.model.to_dict()), config.ttt)
        np.testing.assert_allclose(res.refined, alone[0].refined, atol=2e-5)
        assert res.ok and res.refined.shape == video.poses.shape
        assert res.loss_curve.shape == (config.ttt.epochs,)


def test_length_buckets_do_not_change_results(tiny):
    """Short videos get the smallest bucket window that holds them; the result equals
    the same video padded to the full window (masked attention and losses)."""
    config, _, params = tiny
    prior = Prior(params, config.model.to_dict())
    videos = _videos([8, 15, 40])
    bucketed = config.ttt.copy_and_resolve_references()
    bucketed.length_buckets = (9, 18, 81)  # 81 > window 27: never used
    full = config.ttt.copy_and_resolve_references()
    full.length_buckets = ()
    res_b, timing_b = align_videos(videos, prior, bucketed)
    res_f, timing_f = align_videos(videos, prior, full)
    assert sorted(b["shape"][1:] for b in timing_b.buckets) == [(1, 9), (1, 18), (3, 27)]
    assert sorted(b["shape"][1:] for b in timing_f.buckets) == [(1, 27)] * 2 + [(3, 27)]
    for b, f in zip(res_b, res_f):
        assert b.ok and f.ok
        np.testing.assert_allclose(b.refined, f.refined, atol=2e-5)


def test_videos_per_call_follows_device_and_memory_budget():
    from stride_jax.aligner import videos_per_call

    ttt_cfg = cpu.get_config().ttt
    assert videos_per_call(ttt_cfg, 1, "cpu") == 1  # auto on CPU: one video per call
    assert videos_per_call(ttt_cfg, 2, "cpu") == 2
    assert videos_per_call(ttt_cfg, 1, "gpu") == 16
    # 10 GiB per video on an 80 GiB device: 7 fit with 10 % headroom
    assert videos_per_call(ttt_cfg, 1, "gpu", 10 * 2**30, 80 * 2**30) == 7
    ttt_cfg.max_memory_gb = 25.0  # the user's budget wins over the device's
    assert videos_per_call(ttt_cfg, 1, "gpu", 10 * 2**30, 80 * 2**30) == 2
    ttt_cfg.max_batch = 1
    assert videos_per_call(ttt_cfg, 1, "gpu", 10 * 2**30, 80 * 2**30) == 1
    assert videos_per_call(ttt_cfg, 4, "gpu", 10 * 2**30, 80 * 2**30) == 4  # >= devices


def test_vmap_width_divides_the_videos_per_device():
    ttt_cfg = cpu.get_config().ttt
    assert ttt.vmap_width(ttt_cfg, 8, 1, "cpu") == 1  # auto on CPU: one video at a time
    assert ttt.vmap_width(ttt_cfg, 8, 2, "gpu") == 4  # auto elsewhere: all of a device's
    ttt_cfg.vmap_width = 3
    assert ttt.vmap_width(ttt_cfg, 8, 1, "cpu") == 2  # the largest width <= 3 dividing 8
    assert ttt.vmap_width(ttt_cfg, 2, 1, "gpu") == 2  # capped at the videos per device
    ttt_cfg.vmap_width = -1
    with pytest.raises(ValueError, match="vmap_width=-1"):
        ttt.vmap_width(ttt_cfg, 8, 1, "cpu")


@pytest.mark.parametrize("mask_ratio", [0.0, 0.3])
def test_padding_does_not_change_result(tiny, mask_ratio):
    config, model, params = tiny
    cfg = config.ttt.copy_and_resolve_references()
    cfg.mask_ratio, cfg.mask_span = mask_ratio, (2, 6)
    run = jax.jit(ttt.make_run_one_video(model, cfg))
    video = _videos([20])[0]
    from stride_jax.interpolate import fill_missing
    pseudo = np.asarray(fill_missing(video.poses, video.valid))
    rr = pseudo - pseudo[:, :1]
    weights = np.where(video.valid, 1.0, config.ttt.interp_weight).astype(np.float32)
    key = jax.random.key(3)
    exact, curve_a, _ = run(params, rr[None], weights[None], np.ones((1, 20), bool), key)
    pad = 7
    rr_p = np.concatenate([rr, np.full((pad, 17, 3), 5.0, np.float32)])
    w_p = np.concatenate([weights, np.zeros(pad, np.float32)])
    m_p = np.arange(20 + pad) < 20
    padded, curve_b, _ = run(params, rr_p[None], w_p[None], m_p[None], key)
    np.testing.assert_allclose(np.asarray(padded)[0, :20], np.asarray(exact)[0], atol=2e-5)
    np.testing.assert_allclose(curve_a, curve_b, rtol=1e-4)


def test_masked_ttt_hides_input_spans(tiny):
    """With ``mask_ratio`` the loss is computed on inputs with spans refilled by
    interpolation: the first loss differs from the unmasked one, and masking the loss on
    visible frames (``unmasked_weight=0``) changes it again; seeds are reproducible."""
    config, model, params = tiny
    video = _videos([27])[0]
    from stride_jax.interpolate import fill_missing
    pseudo = np.asarray(fill_missing(video.poses, video.valid))
    args = ((pseudo - pseudo[:, :1])[None], np.ones((1, 27), np.float32),
            np.ones((1, 27), bool), jax.random.key(1))
    curves = {}
    for name, upd in {"plain": {}, "masked": dict(mask_ratio=0.4, mask_span=(3, 8)),
                      "blind": dict(mask_ratio=0.4, mask_span=(3, 8), unmasked_weight=0.0)
                      }.items():
        cfg = config.ttt.copy_and_resolve_references()
        cfg.update(upd)
        run = jax.jit(ttt.make_run_one_video(model, cfg))
        pred, curve, ok = run(params, *args)
        again = run(params, *args)[1]  # the same program run again: the same curve
        np.testing.assert_array_equal(np.asarray(curve), np.asarray(again))
        assert bool(ok) and np.isfinite(np.asarray(pred)).all()
        curves[name] = np.asarray(curve)
    assert abs(curves["masked"][0] - curves["plain"][0]) > 1e-4
    assert abs(curves["blind"][0] - curves["masked"][0]) > 1e-4


def test_no_valid_frame_and_divergence_do_not_stop_the_batch(tiny):
    config, _, params = tiny
    good, bad = _videos([30, 30])
    empty = Video(np.zeros((30, 17, 3), np.float32), np.zeros(30, bool), "empty")
    huge = Video(bad.poses * np.float32(1e19), bad.valid, "huge")
    results, _ = align_videos([good, empty, huge], Prior(params, config.model.to_dict()),
                              config.ttt)
    assert results[0].ok and np.isfinite(results[0].refined).all()
    assert not results[1].ok and "no valid frame" in results[1].error
    assert not results[2].ok and "diverged" in results[2].error
    np.testing.assert_allclose(results[2].refined, results[2].pseudo)  # interpolation back


def test_sharded_over_4_cpu_devices_matches_one_device(tiny, tmp_path):
    config, _, params = tiny
    prior = checkpoint.save_prior(tmp_path / "prior", params, config.model.to_dict())
    videos = _videos([30] * 5)
    np.savez(tmp_path / "videos.npz", *[v.poses for v in videos],
             valid=np.stack([v.valid for v in videos]))
    script = (  # 5 videos in one call: K = 8, two per device, one after the other (CPU)
        "import chex\n"
        "chex.set_n_cpu_devices(4)  # before JAX starts its backends\n"
        "import sys, numpy as np, jax\n"
        "from configs import cpu\n"
        "from stride_jax import Video, align_videos, load_prior\n"
        f"d = np.load(r'{tmp_path / 'videos.npz'}')\n"
        "vs = [Video(d[f'arr_{i}'], d['valid'][i], str(i)) for i in range(5)]\n"
        f"res, t = align_videos(vs, load_prior(r'{prior}'), cpu.get_config('runlocal').ttt,\n"
        "                       max_batch=8)\n"
        "assert len(jax.devices()) == 4, jax.devices()\n"
        "assert t.buckets[0]['shape'][0] == 8  # K padded to a multiple of the mesh size\n"
        f"np.save(r'{tmp_path / 'sharded.npy'}', np.stack([r.refined for r in res]))\n")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    subprocess.run([sys.executable, "-c", script], check=True, env=env, cwd=REPO,
                   capture_output=True)
    single, _ = align_videos(videos, Prior(params, config.model.to_dict()), config.ttt)
    np.testing.assert_allclose(np.load(tmp_path / "sharded.npy"),
                               np.stack([r.refined for r in single]), atol=2e-5)


def test_cli_writes_outputs_and_resumes(tiny, tmp_path):
    config, _, params = tiny
    prior = checkpoint.save_prior(tmp_path / "prior", params, config.model.to_dict())
    video = _videos([30])[0]
    inputs = tmp_path / "in"
    inputs.mkdir()
    np.savez(inputs / "clip.npz", poses=video.poses * 1000.0, valid=video.valid)  # millimetres
    code = pipeline.align_files([str(inputs)], tmp_path / "out", config, checkpoint_dir=prior)
    assert code == 0
    out = np.load(tmp_path / "out" / "clip.npz")
    assert out["refined"].shape == (30, 17, 3) and bool(out["ok"])
    assert np.abs(out["pseudo"][video.valid] - video.poses[video.valid]).max() < 1e-4  # in metres
    stamp = (tmp_path / "out" / "clip.npz").stat().st_mtime_ns
    assert pipeline.align_files([str(inputs)], tmp_path / "out", config, checkpoint_dir=prior) == 0
    assert (tmp_path / "out" / "clip.npz").stat().st_mtime_ns == stamp  # skipped: resumed


def test_window_longer_than_prior_is_rejected(tiny):
    config, _, params = tiny
    ttt_cfg = config.ttt.copy_and_resolve_references()
    ttt_cfg.window = config.model.maxlen + 1
    with pytest.raises(ValueError, match="exceeds the prior's maxlen"):
        align_videos(_videos([20]), Prior(params, config.model.to_dict()), ttt_cfg)
