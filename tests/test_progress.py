"""Per-epoch progress from inside the compiled TTT loop: a bar on a terminal, log lines
otherwise; every epoch reported once, none when switched off."""

from __future__ import annotations

import io

import jax
import numpy as np

from configs import cpu
from stride_jax import progress
from stride_jax import ttt as ttt_lib
from stride_jax.model import build_model, init_params


class _Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bar_on_a_terminal_with_eta():
    clock, out = _Clock(), _Tty()
    bar = progress.EpochProgress(4, "TTT", stream=out, width=8, clock=clock)
    clock.t = 10.0
    bar(0)  # 1 of 4 epochs after 10 s: 30 s to go
    assert out.getvalue() == "\rTTT [##------] 1/4 epochs, 10 s, ETA 30 s\x1b[K"
    bar(0)  # the same epoch again (another device): ignored
    clock.t = 40.0
    bar(3)
    assert out.getvalue().endswith("\rTTT [########] 4/4 epochs, 40 s\x1b[K\n")
    assert out.getvalue().count("\r") == 2


def test_log_lines_elsewhere_at_most_every_few_seconds():
    clock, lines = _Clock(), []
    bar = progress.EpochProgress(100, "TTT", stream=io.StringIO(), log=lines.append,
                                 every_s=10.0, clock=clock)
    for epoch in range(100):
        clock.t = 0.5 * (epoch + 1)  # 0.5 s per epoch
        bar(epoch)
    assert lines[0] == "TTT: 20/100 epochs, 10 s, ETA 40 s"
    assert len(lines) == 5 and lines[-1] == "TTT: 100/100 epochs, 50 s"
    assert progress._duration(125) == "2:05 min" and progress._duration(3725) == "1 h 02 min"


def _run(report: bool, on_epoch, width: int = 2):
    config = cpu.get_config("runlocal")
    config.ttt.epochs, config.ttt.progress, config.ttt.vmap_width = 5, report, width
    model = build_model(config.model)
    params = init_params(model, jax.random.key(0))
    rng = np.random.default_rng(0)
    inputs = rng.normal(0, 0.2, (2, 1, 27, 17, 3)).astype(np.float32)
    compiled = ttt_lib.compile_ttt(model, config.ttt, params, (2, 1, 27))
    return ttt_lib.run_compiled(compiled, params, inputs, np.ones((2, 1, 27), np.float32),
                                np.ones((2, 1, 27), bool), jax.random.split(jax.random.key(1), 2),
                                on_epoch=on_epoch)


def test_epochs_are_reported_from_inside_the_compiled_loop():
    seen: list[int] = []
    with_report = _run(True, seen.append)
    assert sorted(set(seen)) == [0, 1, 2, 3, 4]  # once per epoch (per video under vmap)
    silent: list[int] = []
    without = _run(False, silent.append)
    assert silent == []
    for a, b in zip(with_report, without):  # the report does not change the result
        np.testing.assert_array_equal(a, b)
    assert progress._SINKS == []  # the sink is removed after the call


def test_videos_trained_one_after_another_count_on():
    seen: list[int] = []
    one_by_one = _run(True, seen.append, width=1)  # one-video program, video by video
    assert sorted(set(seen)) == list(range(10))  # video 2's epochs follow video 1's
    together = _run(True, [].append, width=2)
    for a, b in zip(one_by_one, together):  # same videos, same result either way
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_width_one_call_is_the_loop_of_one_video_programs():
    """At vmap width 1 on one device the K-video call runs one compiled one-video program
    per video (``OneByOne``): the same results as the Python loop of one-video calls."""
    config = cpu.get_config("runlocal")
    config.ttt.epochs, config.ttt.progress, config.ttt.vmap_width = 3, False, 1
    model = build_model(config.model)
    params = init_params(model, jax.random.key(0))
    inputs = np.random.default_rng(1).normal(0, 0.2, (3, 1, 27, 17, 3)).astype(np.float32)
    args = (np.ones((3, 1, 27), np.float32), np.ones((3, 1, 27), bool),
            jax.random.split(jax.random.key(2), 3))
    compiled = ttt_lib.compile_ttt(model, config.ttt, params, (3, 1, 27))
    assert isinstance(compiled.fn, ttt_lib.OneByOne) and compiled.groups == 3
    assert compiled.bytes == ttt_lib.peak_bytes(compiled.fn.program)  # one video's memory
    call = ttt_lib.run_compiled(compiled, params, inputs, *args)
    loop = ttt_lib.make_looped_ttt(model, config.ttt)(params, inputs, *args)
    for a, b in zip(call, loop):
        np.testing.assert_allclose(a, np.asarray(b), rtol=1e-6, atol=1e-7)
