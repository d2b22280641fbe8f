"""Pretraining recipe switches: validity channel, init_from, hidden_weight."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import cpu
from stride_jax import checkpoint, model_input, pretrain
from stride_jax.data.dataset import Sequence, load_demo
from stride_jax.model import build_model, init_params

REPO = Path(__file__).resolve().parent.parent


def _tiny_config(**model):
    config = cpu.get_config("runlocal")
    config.model.update(model)
    return config


def _poses(key: int, *shape: int) -> jax.Array:
    return 0.3 * jax.random.normal(jax.random.key(key), shape + (17, 3))


def test_widened_prior_equals_the_three_channel_one():
    config = _tiny_config(residual=True)
    model3 = build_model(config.model)
    params3 = init_params(model3, jax.random.key(0))
    model4 = build_model(dict(config.model, dim_in=4))
    params4 = model_input.widen_params(params3, 4)
    assert params4["joints_embed"]["kernel"].shape == (4, config.model.dim_feat)
    np.testing.assert_array_equal(params4["joints_embed"]["kernel"][3], 0.0)
    poses = _poses(1, 2, 27)
    valid = jax.random.bernoulli(jax.random.key(2), 0.5, (2, 27))
    out3 = model3.apply({"params": params3}, poses)
    out4 = model4.apply({"params": params4}, model_input.make_input(poses, valid, 4))
    assert out4.shape == (2, 27, 17, 3)
    np.testing.assert_allclose(out4, out3, rtol=1e-6, atol=1e-6)
    # Once the validity row is non-zero the channel matters (the residual stays 3-channel).
    params4["joints_embed"]["kernel"][3] = np.linspace(-1.0, 1.0, config.model.dim_feat)
    moved = model4.apply({"params": params4}, model_input.make_input(poses, valid, 4))
    assert moved.shape == (2, 27, 17, 3) and not np.allclose(moved, out3, atol=1e-4)


def test_make_input_mirror_and_hide():
    poses = _poses(3, 2, 5)
    assert model_input.make_input(poses, None, 3) is poses
    frame_valid = jnp.array([[1, 1, 0, 0, 1], [0, 1, 1, 1, 1]], bool)
    x = model_input.make_input(poses, frame_valid, 4)
    assert x.shape == (2, 5, 17, 4)
    np.testing.assert_array_equal(x[..., :3], poses)
    np.testing.assert_array_equal(x[..., 3], np.repeat(frame_valid[..., None], 17, -1))
    joint_valid = jnp.zeros((2, 5, 17), bool).at[:, :, 4].set(True)  # l_hip only
    m = model_input.mirror_input(model_input.make_input(poses, joint_valid, 4))
    np.testing.assert_array_equal(m[..., 3] == 1, jnp.zeros((2, 5, 17), bool).at[:, :, 1]
                                  .set(True))  # follows its joint to r_hip
    np.testing.assert_allclose(model_input.mirror_input(m), model_input.make_input(
        poses, joint_valid, 4))
    hidden = jnp.array([[0, 1, 0, 0, 0], [0, 0, 0, 0, 1]], bool)
    h = model_input.hide(x, 2 * poses, hidden)
    np.testing.assert_array_equal(h[..., :3], 2 * poses)
    np.testing.assert_array_equal(h[..., 0, 3], frame_valid & ~hidden)
    with pytest.raises(ValueError, match="dim_in must be 3"):
        model_input.make_input(poses, None, 5)
    with pytest.raises(ValueError, match="fits neither"):
        model_input.make_input(poses, jnp.ones((2, 4), bool), 4)
    with pytest.raises(ValueError, match="dim_in must be 3"):
        build_model(dict(_tiny_config().model, dim_in=2))


def test_adapt_params_names_both_shapes():
    small = init_params(build_model(_tiny_config().model), jax.random.key(0))
    big = jax.eval_shape(lambda: init_params(build_model(_tiny_config(dim_feat=32).model),
                                             jax.random.key(0)))
    with pytest.raises(ValueError, match=r"P parameter blocks_st_0/\S+ has shape \(16,\), "
                                         r"the model expects \(32,\)"):
        model_input.adapt_params(small, big, source="P")
    deeper = jax.eval_shape(lambda: init_params(build_model(_tiny_config(depth=2).model),
                                                jax.random.key(0)))
    with pytest.raises(ValueError, match="blocks_st_1"):
        model_input.adapt_params(small, deeper)


def test_batch_carries_validity_and_hidden_weight():
    config = _tiny_config(dim_in=4)
    config.pretrain.hidden_weight = 3.0
    config.pretrain.corrupt.update(gap_prob=1.0, gap_s=(0.2, 0.3))
    world, _ = load_demo()
    world = jnp.asarray(world[:, :27])
    keys = jax.random.key(5), jax.random.key(6)
    batch = jax.jit(pretrain.make_batch_fn(config, 4))(*keys, world)
    valid = np.asarray(batch["inputs"][..., 3])
    assert set(np.unique(valid)) == {0.0, 1.0}
    assert 0.1 < (valid == 0).mean() < 0.7  # whole-frame gaps plus joint masks
    np.testing.assert_array_equal(batch["mask"], np.where(valid == 1, 1.0, 3.0))
    config.pretrain.hidden_weight = 1.0
    plain = jax.jit(pretrain.make_batch_fn(config, 3))(*keys, world)
    assert "mask" not in plain and plain["inputs"].shape == (2, 27, 17, 3)
    np.testing.assert_allclose(plain["inputs"], batch["inputs"][..., :3], atol=1e-6)
    np.testing.assert_allclose(plain["targets"], batch["targets"], atol=1e-6)
    config.pretrain.hidden_weight = -1.0
    with pytest.raises(ValueError, match="hidden_weight"):
        pretrain.make_batch_fn(config, 4)


def _demo_sequences() -> tuple[list[Sequence], list[Sequence]]:
    world, fps = load_demo()
    return ([Sequence("demo_0", "b", world[0], fps, "climb")],
            [Sequence("demo_1", "b", world[1][:120], fps, "climb")])


@pytest.fixture(scope="module")
def tiny_prior(tmp_path_factory) -> Path:
    """A 3-channel runlocal prior from a 2-step run."""
    work = tmp_path_factory.mktemp("prior3")
    config = _tiny_config()
    config.pretrain.num_steps = 2
    train, val = _demo_sequences()
    pretrain.train_and_evaluate(config, work, train_sequences=train, val_sequences=val)
    return work / "prior"


def test_init_from_warm_starts_fresh_runs_only(tiny_prior, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    prior = checkpoint.load_prior(tiny_prior)
    config = _tiny_config(dim_in=4)
    config.pretrain.update(num_steps=4, init_from=str(tiny_prior))
    model = build_model(config.model)
    abstract = jax.eval_shape(lambda: init_params(model, jax.random.key(0)))
    mesh_sh = jax.tree_util.tree_map(
        lambda _: jax.sharding.SingleDeviceSharding(jax.devices()[0]), abstract)
    warm = pretrain.warm_start_params(tiny_prior, abstract, mesh_sh)
    expected = model_input.widen_params(prior.params, 4)
    chex.assert_trees_all_equal(warm, expected)

    train, val = _demo_sequences()
    pretrain.train_and_evaluate(config, tmp_path, train_sequences=train, val_sequences=val,
                                stop_after=2)
    assert any("warm-started from the prior" in r.getMessage() for r in caplog.records)
    caplog.clear()
    pretrain.train_and_evaluate(config, tmp_path, train_sequences=train, val_sequences=val)
    msgs = [r.getMessage() for r in caplog.records]
    assert any("resumed from step 2" in m and "init_from" in m and "ignored" in m
               for m in msgs), msgs
    assert not any("warm-started" in m for m in msgs)
    assert checkpoint.load_prior(tmp_path / "prior").model["dim_in"] == 4

    bad = _tiny_config(dim_feat=32)
    bad.pretrain.update(num_steps=1, init_from=str(tiny_prior))
    with pytest.raises(ValueError, match=r"init_from prior .* has shape \(16,\), the "
                                         r"model expects \(32,\)"):
        pretrain.train_and_evaluate(bad, tmp_path / "bad", train_sequences=train,
                                    val_sequences=val)


def test_cli_dim_in_4_with_init_from(prepared_data_root, tiny_prior, tmp_path):
    """The command the lead runs, on the tiny model: real data, 2 steps."""
    cmd = [sys.executable, "-m", "stride_jax.pretrain", "--config",
           str(REPO / "configs" / "cpu.py") + ":runlocal", "--workdir", str(tmp_path),
           "--config.model.dim_in=4", f"--config.pretrain.init_from={tiny_prior}",
           "--config.pretrain.num_steps=2"]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "warm-started from the prior" in done.stderr
    prior = checkpoint.load_prior(tmp_path / "prior")
    assert prior.model["dim_in"] == 4
    assert prior.params["joints_embed"]["kernel"].shape == (4, 16)


def test_alignment_feeds_detections_to_a_four_channel_prior():
    from stride_jax import aligner
    from stride_jax.checkpoint import Prior

    config = _tiny_config()
    params3 = init_params(build_model(config.model), jax.random.key(0))
    model4 = dict(config.model.to_dict(), dim_in=4)
    params4 = model_input.widen_params(params3, 4)
    world, _ = load_demo()
    rng = np.random.default_rng(0)
    videos = []
    for n in (20, 40):  # one padded window; several overlapping windows
        valid = rng.random(n) > 0.4
        valid[0] = True
        videos.append(aligner.Video(np.asarray(world[0, :n], np.float32), valid, f"v{n}"))
    prep = aligner._prepare(0, videos[0], config.ttt, 4)
    assert prep.windows.shape == (1, 27, 17, 4)
    np.testing.assert_array_equal(prep.windows[0, :20, 0, 3], videos[0].valid)
    np.testing.assert_array_equal(prep.windows[0, 20:, :, 3], 0.0)  # padding
    prep = aligner._prepare(1, videos[1], config.ttt, 4)
    for win, start in zip(prep.windows, prep.starts):
        np.testing.assert_array_equal(win[:, 5, 3], videos[1].valid[start:start + 27])
    # The widened prior aligns exactly like the 3-channel one (prior alone, flip average),
    # and masked test-time training runs on 4 channels.
    ttt_cfg = config.ttt.copy_and_resolve_references()
    ttt_cfg.update(epochs=0, flip_average=True)
    res3, _ = aligner.align_videos(videos, Prior(params3, config.model.to_dict()), ttt_cfg)
    res4, _ = aligner.align_videos(videos, Prior(params4, model4), ttt_cfg)
    for a, b in zip(res3, res4):
        assert a.ok and b.ok
        np.testing.assert_allclose(b.refined, a.refined, atol=1e-5)
    ttt_cfg.update(epochs=2, mask_ratio=0.3, mask_span=(2, 6))
    res, _ = aligner.align_videos(videos, Prior(params4, model4), ttt_cfg)
    assert all(r.ok and np.isfinite(r.refined).all() for r in res)
