"""Tests of the motion readers (BVH, holosoma climb / OMOMO) and the H36M-17 mapping."""

from __future__ import annotations

import struct
import zipfile

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from stride_jax import skeleton
from stride_jax.data import bvh, holosoma, prepare, to_h36m
from stride_jax.data.dataset import Motion

TWO_BONE = """HIERARCHY
ROOT hip
{
\tOFFSET 0 0 0
\tCHANNELS 6 Xposition Yposition Zposition Zrotation Yrotation Xrotation
\tJOINT knee
\t{
\t\tOFFSET 0 -2 0
\t\tCHANNELS 3 Xrotation Yrotation Zrotation
\t\tEnd Site
\t\t{
\t\t\tOFFSET 0 -3 0
\t\t}
\t}
}
MOTION
Frames: 4
Frame Time: 0.5
0 0 0 0 0 0 0 0 0
1 2 3 90 0 0 0 0 0
0 0 0 0 90 0 90 0 0
0 0 0 90 90 0 0 0 0
"""

# hip, knee, knee_end per frame, worked out by hand (R = Rz @ Ry @ Rx for Z Y X channels).
TWO_BONE_EXPECTED = np.array(
    [
        [[0, 0, 0], [0, -2, 0], [0, -5, 0]],
        [[1, 2, 3], [3, 2, 3], [6, 2, 3]],  # Rz(90) maps (0, -1, 0) to (1, 0, 0)
        [[0, 0, 0], [0, -2, 0], [-3, -2, 0]],  # knee Rx(90): (0,-3,0)->(0,0,-3); hip Ry(90): ->(-3,0,0)
        [[0, 0, 0], [2, 0, 0], [5, 0, 0]],  # Rz(90) @ Ry(90): Ry leaves -y alone, Rz turns it to +x
    ],
    dtype=np.float32,
)


def _write(tmp_path, text, name="two_bone.bvh", newline="\n"):
    path = tmp_path / name
    path.write_bytes(text.replace("\n", newline).encode())
    return path


class TestBvh:
    def test_two_bone_forward_kinematics(self, tmp_path):
        m = bvh.read_bvh(_write(tmp_path, TWO_BONE), units="m")
        assert m.joint_names == ["hip", "knee", "knee_end"]
        assert m.fps == 2.0 and m.positions.dtype == np.float32
        np.testing.assert_allclose(m.positions, TWO_BONE_EXPECTED, atol=1e-5)

    def test_crlf_and_cm_units(self, tmp_path):
        text = TWO_BONE.replace("OFFSET 0 -2 0", "OFFSET 0 -40 0").replace("OFFSET 0 -3 0", "OFFSET 0 -45 0")
        m = bvh.read_bvh(_write(tmp_path, text, newline="\r\n"))  # rest extent 85 units: detected as cm
        np.testing.assert_allclose(m.positions[0, :, 1], [0.0, -0.40, -0.85], atol=1e-6)

    def test_euler_orders_match_scipy_intrinsic(self, tmp_path):
        rng = np.random.default_rng(0)
        for order in ("ZYX", "XYZ", "YXZ", "ZXY"):
            angles = rng.uniform(-170, 170, size=(5, 3))
            chans = " ".join(f"{a}rotation" for a in order)
            lines = "\n".join(" ".join(f"{v:.6f}" for v in row) for row in angles)
            text = (
                f"HIERARCHY\nROOT a\n{{\nOFFSET 0 0 0\nCHANNELS 3 {chans}\nEnd Site\n{{\nOFFSET 0.3 0.2 0.1\n}}\n}}\n"
                f"MOTION\nFrames: 5\nFrame Time: 0.1\n{lines}\n"
            )
            m = bvh.read_bvh(_write(tmp_path, text), units="m")
            expected = Rotation.from_euler(order, angles, degrees=True).apply([0.3, 0.2, 0.1])
            np.testing.assert_allclose(m.positions[:, 1], expected, atol=1e-5, err_msg=order)

    def test_position_channels_relative_to_offset(self, tmp_path):
        text = TWO_BONE.replace("ROOT hip\n{\n\tOFFSET 0 0 0", "ROOT hip\n{\n\tOFFSET 0 0.9 0")
        text = text.replace("1 2 3 90 0 0 0 0 0", "0.1 0 0 90 0 0 0 0 0")
        m = bvh.read_bvh(_write(tmp_path, text), units="m")
        np.testing.assert_allclose(m.positions[:, 0, 1], 0.9, atol=1e-6)  # in-place export: OFFSET added
        absolute = bvh.read_bvh(_write(tmp_path, text), units="m", position_channels="absolute")
        np.testing.assert_allclose(absolute.positions[:, 0, 1], 0.0, atol=1e-6)

    def test_bad_files_raise_clear_errors(self, tmp_path):
        with pytest.raises(FileNotFoundError, match="nope.bvh"):
            bvh.read_bvh(tmp_path / "nope.bvh")
        truncated = TWO_BONE.rsplit("0 0 0 90 90 0 0 0 0", 1)[0]
        with pytest.raises(ValueError, match="Frames: 4 but 3 frame lines"):
            bvh.read_bvh(_write(tmp_path, truncated))
        with pytest.raises(ValueError, match="frame 1 has 5 values, expected 9"):
            bvh.read_bvh(_write(tmp_path, TWO_BONE.replace("1 2 3 90 0 0 0 0 0", "1 2 3 90 0")))
        with pytest.raises(ValueError, match="no MOTION section"):
            bvh.read_bvh(_write(tmp_path, TWO_BONE.split("MOTION")[0]))
        with pytest.raises(ValueError, match="unclosed"):
            bvh.read_bvh(_write(tmp_path, TWO_BONE.replace("\t}\n}\nMOTION", "\t}\nMOTION")))


def _torch_zip(path, array: np.ndarray, name: str = "clip") -> None:
    """Write ``array`` (2-D float32) the way ``torch.save`` does, without torch."""
    rows, cols = array.shape
    pkl = (
        b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\nq\x00((X\x07\x00\x00\x00storageq\x01"
        b"ctorch\nFloatStorage\nq\x02X\x01\x00\x00\x000q\x03X\x03\x00\x00\x00cpuq\x04J"
        + struct.pack("<i", rows * cols)
        + b"tq\x05QK\x00J" + struct.pack("<i", rows) + b"M" + struct.pack("<H", cols)
        + b"\x86q\x06M" + struct.pack("<H", cols) + b"K\x01\x86q\x07"
        + b"\x88ccollections\nOrderedDict\nq\x08)Rq\ttq\nRq\x0b."
    )  # fmt: skip
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{name}/data.pkl", pkl)
        z.writestr(f"{name}/byteorder", "little")
        z.writestr(f"{name}/data/0", array.astype("<f4").tobytes())
        z.writestr(f"{name}/version", "3\n")


class TestHolosoma:
    def test_joint_lists(self):
        assert len(holosoma.MOCAP_DEMO_JOINTS) == 53 and len(holosoma.SMPLH_DEMO_JOINTS) == 52
        assert holosoma.MOCAP_DEMO_JOINTS[43:47] == ("LeftUpLeg", "LeftLeg", "LeftFoot", "LeftToeBase")
        assert holosoma.SMPLH_DEMO_JOINTS[33:37] == ("R_Thorax", "R_Shoulder", "R_Elbow", "R_Wrist")

    def test_omomo_reader_on_synthetic_torch_file(self, tmp_path):
        data = np.random.default_rng(1).normal(size=(7, holosoma.OMOMO_COLUMNS)).astype(np.float32)
        path = tmp_path / "sub42_box_001.pt"
        _torch_zip(path, data, name="sub42_box_001")
        np.testing.assert_array_equal(holosoma.read_torch_float_tensor(path), data)
        m = holosoma.read_omomo(path)
        assert m.positions.shape == (7, 52, 3) and m.subject == "omomo_sub42" and m.fps == 30.0
        np.testing.assert_array_equal(m.positions[:, 1], data[:, 165:168])

    def test_omomo_reader_rejects_bad_input(self, tmp_path):
        path = tmp_path / "bad.pt"
        _torch_zip(path, np.zeros((3, 10), np.float32))
        with pytest.raises(ValueError, match=r"expected a \(T, 591\) tensor"):
            holosoma.read_omomo(path)
        (tmp_path / "not_zip.pt").write_bytes(b"garbage")
        with pytest.raises(ValueError, match="not a torch zip"):
            holosoma.read_omomo(tmp_path / "not_zip.pt")

    def test_climb_reader_checks_shape(self, tmp_path):
        np.save(tmp_path / "x_joint_positions_f0-9.npy", np.zeros((10, 52, 3), np.float32))
        with pytest.raises(ValueError, match=r"expected \(T, 53, 3\)"):
            holosoma.read_climb(tmp_path / "x_joint_positions_f0-9.npy")


def test_zup_to_yup_is_a_rotation():
    p = np.random.default_rng(2).normal(size=(4, 3))
    q = to_h36m.to_world(p, "z")
    np.testing.assert_allclose(q[:, 1], p[:, 2])
    np.testing.assert_allclose(np.cross(q[0], q[1]), to_h36m.to_world(np.cross(p[0], p[1]), "z"), atol=1e-12)


def test_detect_rig_handles_namespaces():
    names = [f"mixamorig:{n}" for n in ("Hips", "Spine", "Spine1", "Neck", "Head")]
    limbs = ("UpLeg", "Leg", "Foot", "Arm", "ForeArm", "Hand")
    names += [f"mixamorig:{side}{n}" for side in ("Left", "Right") for n in limbs]
    assert to_h36m.detect_rig(names) == "lafan1"
    with pytest.raises(ValueError, match="no known rig"):
        to_h36m.detect_rig(["a", "b"])


LIMBS = [(a, b) for a, b in skeleton.BONES if a in skeleton.LEFT + skeleton.RIGHT]  # femur, tibia, arm, forearm
EXPECTED_FRAMES = {
    "lafan1_aiming1_subject1": 7184, "lafan1_dance1_subject1": 3945, "test3": 3089,
    "climb_seq_0": 2801, "climb_seq_1": 2423, "climb_seq_2": 3011, "climb_seq_3": 2401, "climb_seq_4": 2303,
    "omomo_sub10_largebox_049": 222, "omomo_sub3_largebox_003": 196,
}  # fmt: skip


@pytest.mark.parametrize("source", sorted(to_h36m.RIGS))
def test_real_file_end_to_end(source, raw_data_root):
    seq = next(s for s in prepare.BUILTIN if s.source == source)
    motion: Motion = prepare.read_raw(seq, raw_data_root)
    assert motion.positions.shape[0] == EXPECTED_FRAMES[seq.name]
    joints = to_h36m.to_h36m(motion).astype(np.float64)
    assert joints.shape == (motion.positions.shape[0], 17, 3)
    lengths = np.linalg.norm(joints[:, [b for _, b in LIMBS]] - joints[:, [a for a, _ in LIMBS]], axis=-1)
    assert np.ptp(lengths, axis=0).max() < 1e-3, "limb bone lengths vary over time"
    ix = skeleton.JOINT_INDEX
    femur = lengths[:, [k for k, (a, b) in enumerate(LIMBS) if b in (ix["l_knee"], ix["r_knee"])]]
    assert 0.3 < femur.min() and femur.max() < 0.6
    y = np.median(joints[..., 1], axis=0)
    assert y[ix["head"]] > y[ix["neck"]] > y[ix["thorax"]] > y[ix["spine"]] > y[ix["pelvis"]] > y[ix["l_knee"]]
    assert 0.09 < np.median(np.linalg.norm(joints[:, ix["head"]] - joints[:, ix["neck"]], axis=-1)) < 0.125
    assert -0.05 < np.percentile(joints[:, [ix["l_ankle"], ix["r_ankle"]], 1].min(axis=1), 1) < 0.2  # floor ~ 0
    # Left really is left: walking goes forward = left x up (right-handed, Y up).
    left = joints[:, ix["l_hip"]] - joints[:, ix["r_hip"]]
    forward = np.cross(left, [0.0, 1.0, 0.0])
    forward /= np.linalg.norm(forward, axis=-1, keepdims=True)
    knee_offset = joints[:, ix["l_knee"]] - (joints[:, ix["l_hip"]] + joints[:, ix["l_ankle"]]) / 2
    knee_ahead = np.sum(knee_offset * forward, axis=-1)
    bent = np.abs(knee_ahead) > 0.05  # test3 stands with straight knees and has almost no such frames
    if bent.sum() >= 20:
        assert np.mean(knee_ahead[bent] > 0) > 0.9, "knees bend backwards: left/right flipped?"
