"""The JAX SMPL-H equals ``smplx`` (PyTorch, float64) on random models in the real file format."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stride_jax import body_model

TOL_M = 1e-5


def write_model(path, seed: int, num_betas: int = 16) -> dict[str, np.ndarray]:
    arrays = body_model.synthetic_model_arrays(seed, num_betas=num_betas)
    np.savez(path, **arrays)
    return arrays


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("smplh")
    out = {}
    for seed, gender in enumerate(("male", "female")):
        path = root / f"SMPLH_{gender.upper()}.npz"
        out[gender] = (path, write_model(path, seed))
    return out


def _random_inputs(seed: int, num_frames: int = 6) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(100 + seed)
    poses = rng.normal(scale=0.4, size=(num_frames, 156))  # moderate angles incl. both hands
    poses[:, :3] = rng.normal(scale=1.5, size=(num_frames, 3))  # any root orientation
    betas = rng.normal(scale=1.5, size=16)
    trans = rng.normal(scale=[2.0, 2.0, 0.3], size=(num_frames, 3)) + [0.0, 0.0, 0.9]
    return poses, betas, trans


def _smplx_reference(path, gender, poses, betas, trans):
    torch = pytest.importorskip("torch")
    smplx = pytest.importorskip("smplx")
    # smplx keeps only 10 betas of a file with fewer than SHAPE_SPACE_DIM (300); AMASS's
    # SMPL-H files hold 16 and AMASS uses all 16, so let smplx read all 16 too.
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(smplx.SMPLH, "SHAPE_SPACE_DIM", betas.shape[-1])
        model = _smplx_model(smplx, torch, path, gender, len(poses))
    assert model.num_betas == betas.shape[-1]
    t = lambda x: torch.tensor(x, dtype=torch.float64)  # noqa: E731
    with torch.no_grad():
        out = model(betas=t(np.repeat(betas[None], len(poses), 0)), global_orient=t(poses[:, :3]),
                    body_pose=t(poses[:, 3:66]), left_hand_pose=t(poses[:, 66:111]),
                    right_hand_pose=t(poses[:, 111:]), transl=t(trans))
    return out.joints.numpy()[:, :52], out.vertices.numpy()


def _smplx_model(smplx, torch, path, gender, batch_size):
    return smplx.SMPLH(model_path=str(path), gender=gender, ext="npz", use_pca=False,
                       flat_hand_mean=True, num_betas=16, batch_size=batch_size,
                       dtype=torch.float64)


@pytest.mark.parametrize("gender", ["male", "female"])
def test_joints_and_vertices_equal_smplx(models, gender):
    path, arrays = models[gender]
    poses, betas, trans = _random_inputs(seed=len(gender))
    ref_joints, ref_verts = _smplx_reference(path, gender, poses, betas, trans)
    model = body_model.load_model(path)
    assert model.v_template.dtype == jnp.float32
    assert model.num_joints == 52 and model.num_betas == 16
    joints, verts = jax.jit(body_model.joints_and_vertices)(model, jnp.asarray(poses),
                                                            jnp.asarray(betas), jnp.asarray(trans))
    assert joints.shape == (6, 52, 3) and verts.shape == (6, 6890, 3)
    assert np.abs(np.asarray(joints) - ref_joints).max() <= TOL_M
    assert np.abs(np.asarray(verts) - ref_verts).max() <= TOL_M
    # The comparison can fail: the pose moves vertices by decimetres, the hands matter, and the
    # two genders' models differ.
    rest = body_model.joints_and_vertices(model, jnp.zeros_like(poses), jnp.asarray(betas),
                                          jnp.asarray(trans))[1]
    assert np.abs(np.asarray(rest) - ref_verts).max() > 0.1
    hands_flat = poses.copy()
    hands_flat[:, 66:] = 0.0
    moved = body_model.joints_and_vertices(model, jnp.asarray(hands_flat), jnp.asarray(betas),
                                           jnp.asarray(trans))[1]
    assert np.abs(np.asarray(moved) - ref_verts).max() > 100 * TOL_M
    other = "female" if gender == "male" else "male"
    other_model = body_model.load_model(models[other][0])
    other_verts = body_model.joints_and_vertices(other_model, jnp.asarray(poses),
                                                 jnp.asarray(betas), jnp.asarray(trans))[1]
    assert np.abs(np.asarray(other_verts) - ref_verts).max() > 0.1


@pytest.mark.parametrize("per_joint", [40, 6890])
def test_folded_h36m_regressor_equals_smplx_vertices_regressed(models, per_joint):
    path, _ = models["female"]
    poses, betas, trans = _random_inputs(seed=3)
    _, ref_verts = _smplx_reference(path, "female", poses, betas, trans)
    rng = np.random.default_rng(7)
    regressor = np.zeros((17, 6890))
    for row in regressor:  # sparse like a learned regressor, or dense; rows sum to ~1
        row[rng.choice(6890, per_joint, replace=False)] = rng.dirichlet(np.ones(per_joint)) * 1.05
    model = body_model.load_model(path)
    v_shaped, rest_joints = body_model.shape(model, jnp.asarray(betas))
    folded = body_model.fold_regressor(model, regressor)
    h36m = jax.jit(body_model.regressed_joints)(model, folded, v_shaped, rest_joints,
                                                jnp.asarray(poses), jnp.asarray(trans))
    assert h36m.shape == (6, 17, 3)
    np.testing.assert_allclose(np.asarray(h36m), np.einsum("kv,tvc->tkc", regressor, ref_verts),
                               atol=TOL_M)


def test_rodrigues_zero_and_small_angles():
    r = body_model.rodrigues(jnp.array([[0.0, 0.0, 0.0], [1e-6, 0.0, 0.0], [0.0, 0.0, np.pi / 2]]))
    np.testing.assert_allclose(np.asarray(r[0]), np.eye(3), atol=1e-7)
    np.testing.assert_allclose(np.asarray(r[1]), np.eye(3), atol=2e-6)
    np.testing.assert_allclose(np.asarray(r[2]), [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-6)


@pytest.mark.parametrize("damage, message", [
    (lambda a: a.pop("posedirs"), "missing key"),
    (lambda a: a.update(weights=a["weights"][:, :51]), "weights has shape"),
    (lambda a: a.update(posedirs=a["posedirs"][..., :207]), "posedirs has shape"),
    (lambda a: a["v_template"].__setitem__((5, 1), np.nan), "finite"),
    (lambda a: a["kintree_table"].__setitem__((0, 3), 9), "parent before"),
])  # fmt: skip
def test_bad_model_files_are_named(tmp_path, damage, message):
    arrays = body_model.synthetic_model_arrays(0, num_betas=4)
    damage(arrays)
    np.savez(tmp_path / "model.npz", **arrays)
    with pytest.raises(ValueError, match=message) as err:
        body_model.load_model(tmp_path / "model.npz")
    assert "model.npz" in str(err.value)


def test_unreadable_and_pickled_model_files(tmp_path):
    (tmp_path / "model.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ValueError, match="not a readable .npz"):
        body_model.load_model(tmp_path / "model.npz")
    arrays = body_model.synthetic_model_arrays(0, num_betas=4)
    arrays["J_regressor"] = np.array([arrays["J_regressor"]], dtype=object)
    np.savez(tmp_path / "model.npz", **arrays)
    with pytest.raises(ValueError, match="pickled object"):
        body_model.load_model(tmp_path / "model.npz")
    with pytest.raises(FileNotFoundError):
        body_model.load_model(tmp_path / "absent.npz")
