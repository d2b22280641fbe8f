"""Tests for stride_jax.data.windows."""

from __future__ import annotations

import numpy as np
import pytest

from stride_jax.data import windows as win


def _seq(seed: int, n_frames: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n_frames, 17, 3)).astype(np.float32)


class TestWindowStarts:
    @pytest.mark.parametrize("n_frames", [1, 5, 10, 11, 27, 30, 31, 100])
    @pytest.mark.parametrize("length,stride", [(10, 3), (10, 10), (10, 1), (7, 5)])
    def test_covers_everything(self, n_frames, length, stride):
        starts = win.window_starts(n_frames, length, stride)
        covered = np.zeros(max(n_frames, length), bool)
        for s in starts:
            covered[s:s + length] = True
        assert covered[:n_frames].all()
        assert starts[0] == 0 and np.all(np.diff(starts) > 0)
        assert np.all(np.diff(starts) <= stride)
        if n_frames >= length:
            assert starts[-1] + length == n_frames
        else:
            np.testing.assert_array_equal(starts, [0])

    def test_by_hand_and_errors(self):
        np.testing.assert_array_equal(win.window_starts(12, 5, 3), [0, 3, 6, 7])
        with pytest.raises(ValueError, match="stride"):
            win.window_starts(12, 5, 6)
        with pytest.raises(ValueError, match="n_frames"):
            win.window_starts(0, 5, 2)


class TestPadCut:
    def test_pad_to(self):
        x = np.arange(3.0)[:, None]
        padded, mask = win.pad_to(x, 5)
        np.testing.assert_array_equal(padded[:, 0], [0, 1, 2, 2, 2])
        np.testing.assert_array_equal(mask, [1, 1, 1, 0, 0])
        zero, _ = win.pad_to(x, 5, mode="zero")
        np.testing.assert_array_equal(zero[:, 0], [0, 1, 2, 0, 0])
        with pytest.raises(ValueError, match="1 <= T <= 2"):
            win.pad_to(x, 2)

    def test_cut_windows(self):
        x = _seq(0, 12)
        w = win.cut_windows(x, 5, 3)
        assert w.shape == (4, 5, 17, 3)
        np.testing.assert_array_equal(w[3], x[7:12])
        short = win.cut_windows(x[:3], 5, 2)
        assert short.shape == (1, 5, 17, 3)
        np.testing.assert_array_equal(short[0, 3:], x[[2, 2]])


class TestStitch:
    @pytest.mark.parametrize("n_frames", [3, 10, 23, 50])
    @pytest.mark.parametrize("blend", ["triangle", "hann", "uniform"])
    def test_round_trip(self, n_frames, blend):
        x = _seq(1, n_frames)
        starts = win.window_starts(n_frames, 10, 4)
        back = win.stitch(win.cut_windows(x, 10, 4), starts, n_frames, blend=blend)
        assert back.dtype == np.float32 and back.shape == x.shape
        if blend == "triangle":
            np.testing.assert_array_equal(back, x)
        else:
            np.testing.assert_allclose(back, x, rtol=1e-6, atol=1e-6)

    def test_cross_fade_by_hand(self):
        # Two constant windows (0 and 1) overlapping on frames 2..5.
        windows = np.stack([np.zeros(6), np.ones(6)])[..., None]
        got = win.stitch(windows, np.array([0, 2]), 8)[:, 0]
        # Triangle weights [1, 2, 3, 3, 2, 1]: frame 2 -> 1/(3+1), 3 -> 2/(3+2), ...
        expected = [0, 0, 1 / 4, 2 / 5, 3 / 5, 3 / 4, 1, 1]
        np.testing.assert_allclose(got, expected)
        assert np.all(np.diff(got) >= 0)

    def test_errors(self):
        w = np.zeros((2, 5, 3))
        with pytest.raises(ValueError, match="starts for"):
            win.stitch(w, np.array([0]), 8)
        with pytest.raises(ValueError, match="uncovered"):
            win.stitch(w, np.array([0, 6]), 12)
        with pytest.raises(ValueError, match="blend"):
            win.stitch(w, np.array([0, 3]), 8, blend="cosine")


class TestClipSampler:
    def _sampler(self, **kw) -> win.ClipSampler:
        seqs = [_seq(4, 40), _seq(5, 8), _seq(6, 25)]  # the 8-frame one is skipped
        args = dict(length=10, stride=5, batch_size=3, seed=7)
        args.update(kw)
        return win.ClipSampler(seqs, **args)

    def test_epoch_visits_every_clip_once(self):
        sampler = self._sampler(batch_size=1)
        n = sampler.clips_per_epoch
        assert n == len(win.window_starts(40, 10, 5)) + len(win.window_starts(25, 10, 5))
        clips = [next(sampler)[0] for _ in range(n)]
        seqs = [_seq(4, 40), _seq(6, 25)]
        expected = {(i, s) for i, x in enumerate(seqs) for s in win.window_starts(len(x), 10, 5)}
        found = set()
        for clip in clips:
            for i, x in enumerate(seqs):
                for s in win.window_starts(len(x), 10, 5):
                    if np.array_equal(clip, x[s:s + 10]):
                        found.add((i, s))
        assert found == expected
        assert sampler.state_dict() == {"epoch": 1, "position": 0}

    def test_deterministic_and_resume(self):
        a = self._sampler(speed_range=(0.8, 1.25))
        batches = [next(a) for _ in range(7)]  # crosses epoch boundaries
        assert batches[0].shape == (3, 10, 17, 3) and batches[0].dtype == np.float32
        b = self._sampler(speed_range=(0.8, 1.25))
        for batch in batches:
            np.testing.assert_array_equal(next(b), batch)
        c = self._sampler(speed_range=(0.8, 1.25))
        next(c)
        state = c.state_dict()
        d = self._sampler(speed_range=(0.8, 1.25))
        d.load_state_dict(state)
        for batch in batches[1:]:
            np.testing.assert_array_equal(next(d), batch)
        other = self._sampler(seed=8, speed_range=(0.8, 1.25))
        assert not np.array_equal(next(other), batches[0])

    def test_speed_change_clips_are_resampled(self):
        ramp = np.arange(60, dtype=np.float32)[:, None, None] * np.ones((1, 17, 3), np.float32)
        sampler = win.ClipSampler([ramp], length=10, stride=5, batch_size=8, seed=0,
                                  speed_range=(0.5, 2.0))
        batch = next(sampler)
        steps = np.diff(batch[:, :, 0, 0], axis=1)
        assert np.allclose(steps, steps[:, :1], atol=1e-4)  # constant speed per clip
        assert steps.min() >= 0.5 - 1e-4 and steps.max() <= 2.0 + 1e-4
        assert steps[:, 0].std() > 0.05

    def test_errors(self):
        with pytest.raises(ValueError, match="no sequence"):
            win.ClipSampler([_seq(0, 5)], length=10, stride=5, batch_size=2)
        with pytest.raises(ValueError, match="bad sampler state"):
            self._sampler().load_state_dict({"epoch": 0, "position": 10**6})
