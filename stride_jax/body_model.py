"""SMPL-H body model in JAX: shape blend, pose blend, forward kinematics, linear blend skinning.

The model comes from the user's own SMPL-H ``.npz`` (the "Extended SMPL+H model" that AMASS
uses, one file per gender; nothing is shipped or downloaded). Keys read, with the shapes of
the real files (``V = 6890`` vertices, ``J = 52`` joints, ``B`` shape coefficients, 16 in
AMASS's files):

==============  =================  ==============================================
key             shape              meaning
==============  =================  ==============================================
v_template      (V, 3)             rest-pose vertices, metres, Y up (model frame)
shapedirs       (V, 3, B)          shape blend shapes, metres per unit beta
posedirs        (V, 3, 9 (J - 1))  pose blend shapes per (R_j - I) entry, metres
J_regressor     (J, V)             rest joints from the shaped vertices (dense)
weights         (V, J)             skinning weights, rows sum to 1
kintree_table   (2, J)             row 0: parent of each joint (root: any value)
==============  =================  ==============================================

Other keys (``f``, ``hands_components*``, ``bs_style`` ...) are ignored. Pose vectors are
axis-angle, ``(T, 3 J)``: root, then the joints in file order (SMPL-H: 21 body joints, 15 left
hand, 15 right hand joints, 156 values); the hand mean pose is not added (AMASS's convention,
``flat_hand_mean=True`` in ``smplx``). Outputs follow ``smplx.SMPLH`` exactly: joints and
vertices in metres in the model's frame plus ``trans``. Arithmetic runs in the model's dtype
(float32 by default); the tests assert equality with ``smplx`` (float64) to 1e-5 m.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

# Parent of each SMPL-H joint: the 22 SMPL body joints, then 5 fingers x 3 joints per hand
# (index, middle, pinky, ring, thumb) hanging from the wrists 20 (left) and 21 (right).
SMPLH_PARENTS: tuple[int, ...] = (
    -1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19,
    *[p for w in (20, 21) for f in range(5) for p in (w, 22 + 15 * (w - 20) + 3 * f,
                                                     23 + 15 * (w - 20) + 3 * f)],
)  # fmt: skip
MODEL_KEYS: tuple[str, ...] = ("v_template", "shapedirs", "posedirs", "J_regressor", "weights",
                               "kintree_table")  # fmt: skip


@struct.dataclass
class BodyModel:
    """Arrays of one SMPL-family model, laid out for batched matmuls.

    Attributes:
      v_template: ``(V, 3)`` rest vertices, metres.
      shapedirs: ``(B, V, 3)`` shape blend shapes, metres per unit beta.
      posedirs: ``(9 (J - 1), V, 3)`` pose blend shapes, metres per unit of ``R - I``.
      j_regressor: ``(J, V)`` rest joints from the shaped vertices.
      weights: ``(V, J)`` skinning weights.
      parents: ``J`` parent indices, ``-1`` for the root, each parent before its child (static).
    """

    v_template: jax.Array
    shapedirs: jax.Array
    posedirs: jax.Array
    j_regressor: jax.Array
    weights: jax.Array
    parents: tuple[int, ...] = struct.field(pytree_node=False)

    @property
    def num_betas(self) -> int:
        return int(self.shapedirs.shape[0])

    @property
    def num_joints(self) -> int:
        return len(self.parents)

    @property
    def num_vertices(self) -> int:
        """Vertices of the template mesh (the regressor's columns)."""
        return int(self.j_regressor.shape[1])


def _read_npz(path: Path, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The named arrays of an ``.npz`` (no pickles); ValueError naming the file otherwise."""
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in keys if k not in z.files]
            if missing:
                raise ValueError(f"{path}: missing key(s) {missing}; "
                                 f"an SMPL-H model .npz needs {list(keys)}")
            return {k: np.asarray(z[k]) for k in keys}
    except (OSError, zipfile.BadZipFile, EOFError) as e:
        raise ValueError(f"{path}: not a readable .npz file ({e})") from None
    except ValueError as e:
        if "pickle" in str(e):
            raise ValueError(f"{path}: an array is a pickled object (e.g. a scipy sparse "
                             "J_regressor); save every array dense with numpy") from None
        raise


def load_model(path: str | Path, *, dtype: jnp.dtype = jnp.float32) -> BodyModel:
    """Read and check an SMPL-H model ``.npz`` (module docstring for the keys).

    Raises:
      FileNotFoundError: no such file.
      ValueError: unreadable file, missing key, inconsistent shapes, non-finite values or a
        kinematic tree whose parents do not come before their children (message names the
        file and key).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"body model file not found: {path}")
    a = _read_npz(path, MODEL_KEYS)
    v = a["v_template"].shape[0]
    j = a["J_regressor"].shape[0] if a["J_regressor"].ndim == 2 else -1
    expected = {"v_template": (v, 3), "J_regressor": (j, v), "weights": (v, j),
                "kintree_table": (2, j)}
    for key, shape in expected.items():
        if a[key].shape != shape:
            raise ValueError(f"{path}: {key} has shape {a[key].shape}, expected {shape}")
    if a["shapedirs"].ndim != 3 or a["shapedirs"].shape[:2] != (v, 3):
        raise ValueError(f"{path}: shapedirs has shape {a['shapedirs'].shape}, "
                         f"expected ({v}, 3, num_betas)")
    if a["posedirs"].shape != (v, 3, 9 * (j - 1)):
        raise ValueError(f"{path}: posedirs has shape {a['posedirs'].shape}, "
                         f"expected ({v}, 3, {9 * (j - 1)})")
    for key in MODEL_KEYS[:-1]:
        if not np.issubdtype(a[key].dtype, np.number) or not np.isfinite(a[key]).all():
            raise ValueError(f"{path}: {key} must be finite numbers")
    parents = (-1, *(int(p) for p in a["kintree_table"][0, 1:]))
    if any(not 0 <= p < i for i, p in enumerate(parents) if i > 0):
        raise ValueError(f"{path}: kintree_table[0] must list each joint's parent before the joint")

    def arr(x: np.ndarray) -> jax.Array:
        return jnp.asarray(np.ascontiguousarray(x), dtype=dtype)

    return BodyModel(v_template=arr(a["v_template"]),
                     shapedirs=arr(np.moveaxis(a["shapedirs"], -1, 0)),
                     posedirs=arr(np.moveaxis(a["posedirs"], -1, 0)),
                     j_regressor=arr(a["J_regressor"]), weights=arr(a["weights"]),
                     parents=parents)


@struct.dataclass
class FoldedRegressor:
    """A vertex regressor ``R (K, V)`` folded through skinning and the pose blend shapes.

    Posed vertices are linear in the skinning weights and in the pose blend shapes, so
    ``R @ vertices`` needs only these sums over vertices (exact up to float rounding):

    Attributes:
      weights: ``(K, J, V)``, ``R[k, v] * skinning_weights[v, j]``.
      weight_sums: ``(K, J)``, ``weights`` summed over vertices.
      posedirs: ``(9 (J - 1), K, J, 3)``, ``weights`` applied to the pose blend shapes, m.
      row_sums: ``(K,)``, ``R`` summed over vertices (how ``trans`` enters).
    """

    weights: jax.Array
    weight_sums: jax.Array
    posedirs: jax.Array
    row_sums: jax.Array


def fold_regressor(model: BodyModel, regressor: np.ndarray) -> FoldedRegressor:
    """Fold ``regressor (K, V)`` (e.g. Human3.6M's ``(17, 6890)``) into ``model``.

    Only the vertices the regressor reads enter the sums; computed in float64, stored in the
    model's dtype.
    """
    regressor = np.asarray(regressor, np.float64)
    if regressor.ndim != 2 or regressor.shape[1] != model.num_vertices:
        raise ValueError(f"regressor must be (K, {model.num_vertices}), got {regressor.shape}")
    ids = np.flatnonzero(np.any(regressor != 0, axis=0))
    weights = regressor[:, None, ids] * np.asarray(model.weights, np.float64)[ids].T[None]
    num_k, num_j, num_v = weights.shape
    posedirs = np.asarray(model.posedirs, np.float64)[:, ids]  # (P, V', 3)
    folded = weights.reshape(-1, num_v) @ posedirs.transpose(1, 0, 2).reshape(num_v, -1)
    full = np.zeros((num_k, num_j, model.num_vertices))
    full[..., ids] = weights
    dtype = model.v_template.dtype
    return FoldedRegressor(
        weights=jnp.asarray(full, dtype), weight_sums=jnp.asarray(weights.sum(-1), dtype),
        posedirs=jnp.asarray(folded.reshape(num_k, num_j, -1, 3).transpose(2, 0, 1, 3), dtype),
        row_sums=jnp.asarray(regressor.sum(-1), dtype))


def rodrigues(axis_angle: jax.Array) -> jax.Array:
    """``[..., 3]`` axis-angle (radians) -> ``[..., 3, 3]`` rotation matrices."""
    angle = jnp.linalg.norm(axis_angle, axis=-1, keepdims=True)
    axis = axis_angle / jnp.where(angle > 0, angle, 1.0)
    x, y, z = axis[..., 0], axis[..., 1], axis[..., 2]
    zero = jnp.zeros_like(x)
    k = jnp.stack([zero, -z, y, z, zero, -x, -y, x, zero], axis=-1).reshape(*axis.shape[:-1], 3, 3)
    s, c = jnp.sin(angle)[..., None], jnp.cos(angle)[..., None]
    return jnp.eye(3, dtype=axis_angle.dtype) + s * k + (1 - c) * (k @ k)


def shape(model: BodyModel, betas: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Shape blend and rest joints.

    Args:
      model: the full model (every vertex).
      betas: ``(B',)`` shape coefficients; the first ``min(B', B)`` are used.

    Returns:
      ``(v_shaped (V, 3), rest_joints (J, 3))`` in metres.
    """
    n = min(betas.shape[-1], model.num_betas)
    v_shaped = model.v_template + jnp.einsum("b,bvc->vc", betas[:n].astype(model.v_template.dtype),
                                             model.shapedirs[:n])
    return v_shaped, model.j_regressor @ v_shaped


def forward_kinematics(rotations: jax.Array, rest_joints: jax.Array,
                       parents: tuple[int, ...]) -> tuple[jax.Array, jax.Array]:
    """Posed joints and skinning transforms.

    Args:
      rotations: ``[..., J, 3, 3]`` local joint rotations.
      rest_joints: ``(J, 3)`` rest joint positions, metres.
      parents: ``J`` parent indices, each before its child.

    Returns:
      ``(joints [..., J, 3], transforms [..., J, 3, 4])``: world joints and, per joint, the
      rigid map from rest-pose to posed positions (``x -> R x + t``), metres.
    """
    offsets = rest_joints - jnp.concatenate([jnp.zeros_like(rest_joints[:1]),
                                             rest_joints[jnp.array(parents[1:])]])
    rots = [rotations[..., 0, :, :]]
    locs = [jnp.broadcast_to(offsets[0], rotations.shape[:-3] + (3,))]
    for i in range(1, len(parents)):
        p = parents[i]
        rots.append(rots[p] @ rotations[..., i, :, :])
        locs.append(locs[p] + jnp.einsum("...ij,j->...i", rots[p], offsets[i]))
    rot, joints = jnp.stack(rots, axis=-3), jnp.stack(locs, axis=-2)
    shift = joints - jnp.einsum("...jik,jk->...ji", rot, rest_joints)
    return joints, jnp.concatenate([rot, shift[..., None]], axis=-1)


def pose(model: BodyModel, v_shaped: jax.Array, rest_joints: jax.Array, poses: jax.Array,
         trans: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Pose blend, forward kinematics and linear blend skinning.

    Args:
      model: the model.
      v_shaped: ``(V, 3)`` shaped rest vertices from :func:`shape`, metres.
      rest_joints: ``(J, 3)`` from :func:`shape`, metres.
      poses: ``(T, 3 J)`` axis-angle, radians, root first.
      trans: ``(T, 3)`` root translation, metres.

    Returns:
      ``(joints (T, J, 3), vertices (T, V, 3))`` in metres.
    """
    num_frames = poses.shape[0]
    rot = rodrigues(poses.reshape(num_frames, model.num_joints, 3).astype(v_shaped.dtype))
    feature = (rot[:, 1:] - jnp.eye(3, dtype=rot.dtype)).reshape(num_frames, -1)
    v_posed = v_shaped + jnp.einsum("tp,pvc->tvc", feature, model.posedirs)
    joints, transforms = forward_kinematics(rot, rest_joints, model.parents)
    per_vertex = jnp.einsum("vj,tjk->tvk", model.weights, transforms.reshape(num_frames, -1, 12))
    per_vertex = per_vertex.reshape(num_frames, -1, 3, 4)
    verts = jnp.einsum("tvik,tvk->tvi", per_vertex[..., :3], v_posed) + per_vertex[..., 3]
    shift = trans.astype(v_shaped.dtype)[:, None, :]
    return joints + shift, verts + shift


def joints_and_vertices(model: BodyModel, poses: jax.Array, betas: jax.Array,
                        trans: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The posed model: ``poses (T, 3 J)`` rad, ``betas (B',)``, ``trans (T, 3)`` m ->
    ``(joints (T, J, 3), vertices (T, V, 3))`` in metres (as ``smplx.SMPLH``)."""
    if poses.ndim != 2 or poses.shape[1] != 3 * model.num_joints:
        raise ValueError(f"poses must be (T, {3 * model.num_joints}), got {poses.shape}")
    if trans.shape != (poses.shape[0], 3):
        raise ValueError(f"trans must be ({poses.shape[0]}, 3), got {trans.shape}")
    return pose(model, *shape(model, betas), poses, trans)


def regressed_joints(model: BodyModel, folded: FoldedRegressor, v_shaped: jax.Array,
                     rest_joints: jax.Array, poses: jax.Array, trans: jax.Array) -> jax.Array:
    """``regressor @ vertices`` of the posed model without posing the mesh.

    Args:
      model: the model (its tree).
      folded: :func:`fold_regressor` of the regressor and the model.
      v_shaped, rest_joints: from :func:`shape`, metres.
      poses: ``(T, 3 J)`` axis-angle, radians; ``trans``: ``(T, 3)`` metres.

    Returns:
      ``(T, K, 3)`` regressed joints (e.g. Human3.6M-17) in metres; equal to applying the
      regressor to :func:`pose`'s vertices.
    """
    num_frames = poses.shape[0]
    rot = rodrigues(poses.reshape(num_frames, model.num_joints, 3).astype(v_shaped.dtype))
    feature = (rot[:, 1:] - jnp.eye(3, dtype=rot.dtype)).reshape(num_frames, -1)
    _, transforms = forward_kinematics(rot, rest_joints, model.parents)  # (T, J, 3, 4)
    rest = jnp.einsum("kjv,vc->kjc", folded.weights, v_shaped)
    blended = rest + jnp.einsum("tp,pkjc->tkjc", feature, folded.posedirs)  # (T, K, J, 3)
    joints = (jnp.einsum("tjic,tkjc->tki", transforms[..., :3], blended)
              + jnp.einsum("tji,kj->tki", transforms[..., 3], folded.weight_sums))
    return joints + trans.astype(v_shaped.dtype)[:, None, :] * folded.row_sums[:, None]


def synthetic_model_arrays(seed: int, num_betas: int = 16,
                           num_vertices: int = 6890) -> dict[str, np.ndarray]:
    """A random model in the SMPL-H ``.npz`` layout, for tests and benchmarks (no licence needed).

    Human-scale: vertices in a 0.5 x 1.7 x 0.3 m box, 52 joints (the SMPL-H tree) each a
    convex combination of 8 vertices, up to 4 skinning joints per vertex, blend shapes of a
    few centimetres. Also ``f`` and zero hand PCA arrays, which ``smplx`` reads.
    """
    rng = np.random.default_rng(seed)
    v, j = num_vertices, len(SMPLH_PARENTS)
    v_template = rng.uniform([-0.25, 0.0, -0.15], [0.25, 1.7, 0.15], size=(v, 3))
    regressor = np.zeros((j, v))
    for row in regressor:
        row[rng.choice(v, 8, replace=False)] = rng.dirichlet(np.ones(8))
    weights = np.zeros((v, j))
    for row in weights:
        row[rng.choice(j, 4, replace=False)] = rng.dirichlet(np.ones(4))
    kintree = np.stack([np.array(SMPLH_PARENTS, np.int64) % 2**32, np.arange(j)])
    return {
        "v_template": v_template, "shapedirs": 0.01 * rng.normal(size=(v, 3, num_betas)),
        "posedirs": 0.005 * rng.normal(size=(v, 3, 9 * (j - 1))), "J_regressor": regressor,
        "weights": weights, "kintree_table": kintree,
        "f": rng.integers(0, v, size=(13776, 3)).astype(np.uint32),
        "hands_componentsl": np.zeros((45, 45)), "hands_componentsr": np.zeros((45, 45)),
        "hands_meanl": np.zeros(45), "hands_meanr": np.zeros(45),
    }  # fmt: skip
