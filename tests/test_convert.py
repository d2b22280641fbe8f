"""MotionBERT checkpoint conversion: Flax output equals the PyTorch DSTformer's."""

from __future__ import annotations

import gc
import importlib.util
import shutil
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from stride_jax import checkpoint, convert, losses
from stride_jax import model as model_lib

torch = pytest.importorskip("torch")

TESTS = Path(__file__).resolve().parent
SCRIPTS = TESTS.parent / "scripts"
CONFIG = dict(dim_feat=32, dim_rep=48, depth=2, num_heads=4, mlp_ratio=2.0, maxlen=27)


def _import_script(name: str, directory: Path = SCRIPTS):
    spec = importlib.util.spec_from_file_location(name, directory / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


td = _import_script("torch_dstformer", TESTS)
converter = _import_script("convert_motionbert_checkpoint")


@pytest.fixture(scope="module")
def torch_model():
    """Small DSTformer with random weights everywhere, fusion layers included."""
    model = td.randomize_(td.build_from_config(CONFIG), seed=0).eval()
    fuse = model.ts_attn[0].weight.detach().numpy()
    assert np.abs(fuse).max() > 0.05, "fusion weights must be random, not 0"
    return model


def _save_fake_motionbert(model, path: Path, state_dict: dict | None = None) -> Path:
    sd = model.state_dict() if state_dict is None else state_dict
    torch.save({"model_pos": {"module." + k: v for k, v in sd.items()},
                "epoch": np.int64(3), "lr": 1e-4}, path)
    return path


@pytest.fixture(scope="module")
def prior_dir(torch_model, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("convert")
    ckpt = _save_fake_motionbert(torch_model, tmp / "latest_epoch.bin")
    out = tmp / "prior"
    assert converter.main([str(ckpt), str(out), "--num_heads", "4"]) == 0
    return out


@pytest.mark.parametrize("frames", [27, 11])
def test_converted_prior_matches_torch(torch_model, prior_dir, frames):
    loaded = checkpoint.load_prior(prior_dir)
    params, model_config, meta = loaded.params, loaded.model, loaded.meta
    assert model_config == {**CONFIG, "num_joints": 17}
    assert meta["epoch"] == 3 and len(meta["sha256"]) == 64
    x = np.random.default_rng(frames).normal(scale=0.3, size=(2, frames, 17, 3))
    x = x.astype(np.float32)
    with torch.no_grad():
        want = torch_model(torch.from_numpy(x)).numpy()
    model = model_lib.build_model(model_config)
    got = np.asarray(jax.jit(model.apply)({"params": params}, x))
    assert got.shape == want.shape == (2, frames, 17, 3)
    assert np.abs(want).max() > 0.1  # a non-trivial output
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


def test_state_dict_keys_are_motionbert(torch_model):
    keys = set(torch_model.state_dict())
    assert {"joints_embed.weight", "pos_embed", "temp_embed", "blocks_st.0.norm1_s.weight",
            "blocks_ts.1.attn_t.qkv.weight", "blocks_st.1.mlp_t.fc2.bias", "ts_attn.1.weight",
            "norm.weight", "pre_logits.fc.weight", "head.weight"} <= keys
    assert keys == set(convert.expected_shapes(CONFIG))
    ln = torch_model.blocks_st[0].norm1_s
    assert ln.eps == 1e-6 and td.DSTformer(depth=1).ts_attn[0].bias.tolist() == [0.5, 0.5]


def test_params_round_trip(torch_model):
    sd = td.state_dict_numpy(torch_model)
    params, config = convert.state_dict_to_params(sd, num_heads=4)
    back = convert.params_to_state_dict(params)
    assert set(back) == set(sd)
    for key, value in sd.items():
        np.testing.assert_array_equal(back[key], value, err_msg=key)
    assert params["blocks_st_0"]["attn_s"]["qkv"]["kernel"].shape == (32, 96)
    assert config["depth"] == 2


def test_wrong_keys_give_clear_error(torch_model):
    sd = td.state_dict_numpy(torch_model)
    del sd["blocks_ts.1.mlp_s.fc1.bias"]
    sd["blocks_st.0.attn_s.rel_bias"] = np.zeros(3, np.float32)
    sd["norm.bias"] = np.zeros(5, np.float32)
    with pytest.raises(ValueError) as err:
        convert.state_dict_to_params(sd, num_heads=4)
    msg = str(err.value)
    assert "missing keys (1): blocks_ts.1.mlp_s.fc1.bias" in msg
    assert "unexpected keys (1): blocks_st.0.attn_s.rel_bias" in msg
    assert "norm.bias (5,) (expected (32,))" in msg


def test_not_a_dstformer_and_bad_heads():
    with pytest.raises(ValueError, match="not a MotionBERT DSTformer state dict"):
        convert.state_dict_to_params({"fc.weight": np.zeros((2, 2))})
    sd = td.state_dict_numpy(td.build_from_config({**CONFIG, "depth": 1}))
    with pytest.raises(ValueError, match="num_heads=5 does not divide dim_feat=32"):
        convert.state_dict_to_params(sd, num_heads=5)


def test_script_errors(torch_model, tmp_path, capsys):
    out = tmp_path / "prior"
    assert converter.main([str(tmp_path / "missing.bin"), str(out)]) == 1
    assert "checkpoint not found" in capsys.readouterr().err
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"this is not a checkpoint")
    assert converter.main([str(garbage), str(out)]) == 1
    assert "not a readable PyTorch checkpoint" in capsys.readouterr().err
    other = tmp_path / "other.bin"
    torch.save({"optimizer": {}, "epoch": 1}, other)
    assert converter.main([str(other), str(out)]) == 1
    assert "no 'model_pos' state dict" in capsys.readouterr().err
    sd = dict(torch_model.state_dict())
    sd.pop("head.bias")
    bad = _save_fake_motionbert(torch_model, tmp_path / "bad.bin", sd)
    assert converter.main([str(bad), str(out), "--num_heads", "4"]) == 1
    assert "missing keys (1): head.bias" in capsys.readouterr().err
    assert not out.exists()


def test_bare_state_dict_is_accepted(torch_model, tmp_path):
    path = tmp_path / "bare.pt"
    torch.save(torch_model.state_dict(), path)
    out = converter.convert_checkpoint(path, tmp_path / "prior", num_heads=4)
    assert checkpoint.read_prior_config(out)[0]["depth"] == 2


# Orbax's aborted async reads leave closed-event-loop callbacks behind; they are harmless.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("damage", ["truncate", "delete"])
def test_damaged_prior_raises(prior_dir, tmp_path, damage):
    copy = tmp_path / "prior"
    shutil.copytree(prior_dir, copy)
    data = max((p for p in (copy / "params").rglob("*") if p.is_file()),
               key=lambda p: p.stat().st_size)
    if damage == "truncate":
        data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    else:
        data.unlink()
    with pytest.raises(checkpoint.CheckpointError):
        checkpoint.load_prior(copy)
    gc.collect()


def test_torch_losses_match_jax():
    rng = np.random.default_rng(0)
    pred, target = (rng.normal(scale=0.3, size=(2, 9, 17, 3)).astype(np.float32)
                    for _ in range(2))
    for name, fn in td.LOSSES.items():
        want = float(getattr(losses, name)(pred, target))
        got = float(fn(torch.from_numpy(pred), torch.from_numpy(target)))
        assert got == pytest.approx(want, rel=1e-5), name


def test_ttt_and_pretrain_references_run(torch_model):
    poses = np.random.default_rng(1).normal(scale=0.2, size=(1, 11, 17, 3))
    before = {k: v.clone() for k, v in torch_model.state_dict().items()}
    weights = dict(mpjpe=1.0, n_mpjpe=0.5, velocity=20.0, limb_var=200.0)
    pred, history = td.ttt_reference(torch_model, poses, steps=3, lr=1e-3,
                                     weight_decay=0.01, loss_weights=weights)
    assert pred.shape == (1, 11, 17, 3) and np.isfinite(pred).all()
    assert len(history) == 3 and history[-1] < history[0]
    assert all(torch.equal(v, torch_model.state_dict()[k]) for k, v in before.items())
    model = td.build_from_config({**CONFIG, "depth": 1})
    opt = td.make_optimizer(model, lr=1e-3, weight_decay=0.01)
    x = torch.from_numpy(poses.astype(np.float32))
    loss = td.pretrain_step_reference(model, opt, x, x, {"mpjpe": 1.0}, grad_clip=1.0)
    assert np.isfinite(loss)
