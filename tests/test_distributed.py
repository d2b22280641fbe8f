"""Data-parallel pretraining and the distributed plumbing.

The multi-device checks run in a subprocess that forces 4 CPU devices with
``chex.set_n_cpu_devices`` before JAX starts its backends (the count is fixed then): one
sharded step equals the 1-device step on the same global batch, with replicated and with
FSDP-sharded parameters; an FSDP state saved with Orbax and restored sharded continues
exactly as the uninterrupted one; the whole pretraining loop runs on 4 devices.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from jax.sharding import PartitionSpec

from stride_jax import distributed
from stride_jax.data import windows

REPO = Path(__file__).resolve().parent.parent


def test_split_for_process_is_a_disjoint_cover():
    items = [f"f{i}.npz" for i in range(7)]
    shares = [distributed.split_for_process(items, p, 3) for p in range(3)]
    assert shares == [["f0.npz", "f3.npz", "f6.npz"], ["f1.npz", "f4.npz"], ["f2.npz", "f5.npz"]]
    assert distributed.split_for_process(items) == items  # one process: everything
    with pytest.raises(ValueError, match="process_index 3 is out of range"):
        distributed.split_for_process(items, 3, 3)


def test_process_batch_slice_and_errors():
    assert distributed.process_batch_slice(8, 1, 2) == slice(4, 8)
    assert distributed.process_batch_slice(8) == slice(0, 8)
    with pytest.raises(ValueError, match="global batch 6 is not divisible by the 4"):
        distributed.process_batch_slice(6, 0, 4)
    with pytest.raises(ValueError, match="process_index 2 is out of range"):
        distributed.process_batch_slice(8, 2, 2)


def test_initialize_rejects_bad_flags_before_starting():
    with pytest.raises(ValueError, match="process_id 2 is out of range for num_processes=2"):
        distributed.initialize("127.0.0.1:1234", 2, 2)
    with pytest.raises(ValueError, match="num_processes must be >= 1"):
        distributed.initialize("127.0.0.1:1234", 0, 0)
    with pytest.raises(ValueError, match="process_id must be >= 0"):
        distributed.initialize("127.0.0.1:1234", 2, -1)


def test_fsdp_spec_splits_largest_divisible_axis():
    assert distributed._fsdp_spec((256, 1024), 4, "data", 1) == PartitionSpec(None, "data")
    assert distributed._fsdp_spec((1024, 6), 4, "data", 1) == PartitionSpec("data", None)
    assert distributed._fsdp_spec((1022, 6), 4, "data", 1) == PartitionSpec()  # none divides
    assert distributed._fsdp_spec((8, 8), 4, "data", 100) == PartitionSpec()  # too small
    assert distributed._fsdp_spec((256, 1024), 1, "data", 1) == PartitionSpec()


def test_clip_sampler_shards_concatenate_to_the_global_batch():
    rng = np.random.default_rng(0)
    seqs = [rng.normal(size=(n, 17, 3)).astype(np.float32) for n in (90, 130, 61)]
    kw = dict(length=27, stride=20, batch_size=6, seed=3, speed_range=(0.8, 1.25))
    whole = windows.ClipSampler(seqs, **kw)
    parts = [windows.ClipSampler(seqs, **kw, shard=(i, 3)) for i in range(3)]
    for _ in range(4):  # crosses an epoch boundary (12 clips per epoch)
        expected = next(whole)
        got = np.concatenate([next(p) for p in parts])
        np.testing.assert_array_equal(got, expected)
        assert all(p.state_dict() == whole.state_dict() for p in parts)
    with pytest.raises(ValueError, match="batch_size 6 is not divisible by the shard count 4"):
        windows.ClipSampler(seqs, **kw, shard=(0, 4))
    with pytest.raises(ValueError, match="0 <= index < count"):
        windows.ClipSampler(seqs, **kw, shard=(3, 3))


_FOUR_DEVICES = textwrap.dedent("""
    import sys
    import chex
    chex.set_n_cpu_devices(4)  # before any JAX operation starts the backends
    import jax
    import numpy as np
    from jax.sharding import Mesh, PartitionSpec

    from configs import cpu
    from stride_jax import checkpoint, distributed, logs, pretrain
    from stride_jax.data import windows
    from stride_jax.data.dataset import Sequence, load_demo
    from stride_jax.model import build_model

    logs.setup()
    assert jax.device_count() == 4, jax.devices()
    world, fps = load_demo()
    mesh4, mesh1 = distributed.data_mesh(), Mesh(np.array(jax.devices()[:1]), ("data",))

    def setup(config, mesh):
        model = build_model(config.model)
        optimizer = pretrain.make_optimizer(config.pretrain)
        state, abstract, shardings = pretrain.init_sharded_state(config, model, optimizer,
                                                                 mesh)
        update = pretrain.make_sharded_update(config, model, optimizer, mesh, shardings)
        return state, abstract, shardings, update

    def check_equal(a, b, what):
        print(f"checking {what}")
        chex.assert_trees_all_close(distributed.to_host(a, mesh4), distributed.to_host(b, mesh4),
                                    rtol=1e-5, atol=1e-7)

    config = cpu.get_config("runlocal")  # per-device batch 2: global batch 8 on 4 devices
    config.pretrain.fsdp = False
    sampler = windows.ClipSampler([world[0]], length=27, stride=9, batch_size=8, seed=0)
    batches = [next(sampler) for _ in range(2)]
    put = lambda mesh, b: distributed.host_to_global(b, distributed.batch_sharding(mesh), 8)

    state1, _, _, update1 = setup(config, mesh1)
    ref1, m1 = update1(state1, put(mesh1, batches[0]), np.int32(1))
    ref1 = distributed.to_host(ref1, mesh1)
    distributed.FSDP_MIN_SIZE = 64  # the tiny model: shard its larger leaves too
    for fsdp in (False, True):
        config.pretrain.fsdp = fsdp
        state, abstract, shardings, update = setup(config, mesh4)
        state, m = update(state, put(mesh4, batches[0]), np.int32(1))
        sharded = [x for x in jax.tree_util.tree_leaves(state)
                   if x.sharding.spec != PartitionSpec()]
        assert bool(sharded) == fsdp and all(
            x.sharding.mesh.size == 4 for x in jax.tree_util.tree_leaves(state))
        np.testing.assert_allclose(float(m["loss"]), float(m1["loss"]), rtol=1e-5)
        check_equal(state, ref1, f"fsdp={fsdp} step 1")
        print(f"fsdp={fsdp}: 4-device step == 1-device step (loss {float(m['loss']):.6f}, "
              f"{len(sharded)} sharded state leaves)")

    # FSDP state after step 1 -> Orbax -> restored sharded -> step 2 == uninterrupted step 2.
    ckpts = checkpoint.TrainCheckpoints(sys.argv[1] + "/ckpt")
    ckpts.save(1, state, {"step": 1})
    restored_step, restored, _ = ckpts.restore_latest(
        distributed.with_shardings(abstract, shardings))
    ckpts.close()
    assert restored_step == 1
    assert all(x.sharding == s for x, s in zip(jax.tree_util.tree_leaves(restored),
                                               jax.tree_util.tree_leaves(shardings)))
    straight, _ = update(state, put(mesh4, batches[1]), np.int32(2))
    resumed, _ = update(restored, put(mesh4, batches[1]), np.int32(2))
    check_equal(resumed, straight, "restored step 2")
    print("restored 4-device checkpoint continues identically")

    # The whole loop on 4 devices (eval, checkpoints, prior) logs devices and global batch.
    config.pretrain.update(num_steps=2, eval_every_steps=2, checkpoint_every_steps=2)
    train = [Sequence("demo_0", "b", world[0], fps, "climb")]
    val = [Sequence("demo_1", "b", world[1][:120], fps, "climb")]
    summary = pretrain.train_and_evaluate(config, sys.argv[1] + "/run", train_sequences=train,
                                          val_sequences=val)
    assert summary["step"] == 2 and np.isfinite(summary["val_mpjpe_occluded_input"])
    print("train_and_evaluate on 4 devices: done")
""")


def test_four_device_step_and_resume_match_one_device(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
    done = subprocess.run([sys.executable, "-c", _FOUR_DEVICES, str(tmp_path)], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=3600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    assert "fsdp=True: 4-device step == 1-device step" in done.stdout
    assert "restored 4-device checkpoint continues identically" in done.stdout
    assert "train_and_evaluate on 4 devices: done" in done.stdout
    assert ("data parallel: 4 device(s) in 1 process(es), per-device batch 2, global batch 8"
            in done.stderr)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _align_cli(inputs: Path, out: Path, prior: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "stride_jax.align", "--config",
            str(REPO / "configs" / "cpu.py") + ":runlocal", "--input", str(inputs),
            "--output", str(out), "--checkpoint", str(prior), *extra]


def _run_two_processes(inputs: Path, out: Path, prior: Path) -> list[str]:
    """Runs align as 2 jax.distributed processes on localhost; returns their logs."""
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
    procs = [subprocess.Popen(
        _align_cli(inputs, out, prior, "--coordinator_address", f"127.0.0.1:{port}",
                   "--num_processes", "2", "--process_id", str(p),
                   "--heartbeat_timeout_s", "600"),
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for p in range(2)]
    logs = [p.communicate(timeout=3600)[0] for p in procs]
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log[-4000:]
    return logs


def test_two_process_align_equals_one_process(tmp_path):
    import jax

    from configs import cpu
    from stride_jax import checkpoint
    from stride_jax.data import augment
    from stride_jax.data.dataset import load_demo
    from stride_jax.model import build_model, init_params

    config = cpu.get_config("runlocal")
    prior = checkpoint.save_prior(tmp_path / "prior",
                                  init_params(build_model(config.model), jax.random.key(0)),
                                  config.model.to_dict())
    world, _ = load_demo()
    cam = np.asarray(augment.world_to_camera(world))
    rng = np.random.default_rng(0)
    inputs = tmp_path / "in"
    inputs.mkdir()
    names = [f"clip{i}.npz" for i in range(6)]
    for i, n in enumerate([20, 27, 22, 26, 24, 25]):  # one window each: one compile
        valid = rng.random(n) > 0.3
        valid[0] = True
        np.savez(inputs / names[i], poses=cam[i % 2, 5 * i:5 * i + n], valid=valid)
    env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")

    bad = subprocess.run(_align_cli(inputs, tmp_path / "bad", prior, "--coordinator_address",
                                    "127.0.0.1:1", "--num_processes", "2", "--process_id", "2"),
                         cwd=REPO, env=env, capture_output=True, text=True)
    assert bad.returncode == 2
    assert "process_id 2 is out of range for num_processes=2" in bad.stderr

    one = subprocess.run(_align_cli(inputs, tmp_path / "one", prior), cwd=REPO, env=env,
                         capture_output=True, text=True)
    assert one.returncode == 0, one.stderr[-4000:]
    assert "run: 6 input file(s) over 1 process(es), 1 device(s): 6 video(s) aligned" in one.stderr

    out = tmp_path / "two"
    logs = _run_two_processes(inputs, out, prior)
    assert sorted(p.name for p in out.iterdir()) == names  # no temporaries, no extras
    for name in names:  # each output written by exactly one process, the round-robin one
        writers = [p for p, log in enumerate(logs) if f"-> {out / name}" in log]
        assert writers == [names.index(name) % 2], (name, writers)
        a, b = np.load(out / name), np.load(tmp_path / "one" / name)
        assert bool(a["ok"]) and bool(b["ok"])
        for key in ("refined", "pseudo", "valid", "loss_curve"):
            np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-6, err_msg=key)
    summary = ("run: 6 input file(s) over 2 process(es), 2 device(s): 6 video(s) aligned, "
               "0 failed, 0 skipped (output exists), 0 unreadable file(s)")
    assert summary in logs[0] and "run: " not in logs[1]  # one line for the whole run

    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    logs = _run_two_processes(inputs, out, prior)  # resume: every output is kept
    assert "0 video(s) aligned, 0 failed, 6 skipped (output exists)" in logs[0]
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamps
