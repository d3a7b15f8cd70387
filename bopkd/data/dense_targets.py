"""Dense training targets of a ZebraPose-style network: per output pixel, visibility and surface code.

ZebraPose (Su et al., CVPR 2022, Sec. 3, the training labels; code suyz526/ZebraPose,
``Binary_Code_GT_Generator/generate_training_labels_for_BOP.py``) renders each object's mesh coloured by
its vertex classes to get, per pixel of the zoomed-in crop, the class (code) of the visible surface point,
and supervises the network's ``bits`` output channels with its bits and one channel with the visible mask.
Here the mesh is ray cast with :class:`bopkd.geometry.render.Renderer` directly at the output resolution,
through the output grid's own camera matrix (:func:`output_camera`), and each pixel hit by the object takes
the code of the hit triangle's vertex with the largest barycentric weight (a pixel-centre lookup of the
vertex classes; the ZebraPose renderer draws the faces with one class each, chosen by a vote of their
vertices in ``generate_face_id_class_result`` of ``Generate_Mesh_with_GT_Color.cpp``, which differs only
along class borders).

The renderer must hold the *encoded* mesh of each object (:meth:`SurfaceCode.model`, possibly subdivided),
since hit triangle ids index its faces: :func:`code_renderer` builds one, and :func:`code_image` checks that
the hit depths agree with the encoded mesh.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from bopkd.errors import BopkdError
from bopkd.geometry.render import InstanceLayer, Renderer
from bopkd.geometry.surface_code import SurfaceCode, code_bits

Instance = tuple[int, np.ndarray, np.ndarray]  # (obj_id, R (3, 3), t (3,) mm), model -> camera


def output_camera(K: np.ndarray, box: Sequence[float], out_size: Sequence[int] = (128, 128)) -> np.ndarray:
    """(3, 3) camera matrix of the output grid of a square crop.

    The crop ``box = (x0, y0, side)`` px (top-left corner and side, original image) is resized onto the
    ``out_size = (W, H)`` grid, e.g. a 256 px network input whose output has stride 2 is the same crop
    onto ``(128, 128)``. In the continuous pixel coordinates of ``bopkd.data.augment`` (pixel ``i`` spans
    ``[i, i + 1)``, the renderer's rays pass at ``i + 0.5``) the crop is the affine
    ``A = diag(W / side, H / side, 1) @ [[1, 0, -x0], [0, 1, -y0], [0, 0, 1]]`` (``augment.crop_affine``
    with the output size), and a 3D point projects to ``A K X``, so the output camera is ``K_out = A @ K``.
    """
    x0, y0, side = (float(v) for v in box)
    if not side > 0:
        raise BopkdError(f"crop box {tuple(box)}: the side must be > 0 px")
    sx, sy = float(out_size[0]) / side, float(out_size[1]) / side
    A = np.array([[sx, 0.0, -sx * x0], [0.0, sy, -sy * y0], [0.0, 0.0, 1.0]])
    return A @ np.asarray(K, dtype=np.float64).reshape(3, 3)


def code_renderer(codes: Mapping[int, SurfaceCode], out_size: Sequence[int] = (128, 128)) -> Renderer:
    """A :class:`Renderer` of ``out_size = (W, H)`` px holding each object's encoded mesh."""
    renderer = Renderer(int(out_size[0]), int(out_size[1]))
    for obj_id, code in codes.items():
        renderer.add_object(obj_id, code.model())
    return renderer


def _visible(layers: Sequence[InstanceLayer | None], target: int, size: tuple[int, int]) -> np.ndarray:
    """(H, W) bool: the target layer is hit and nearest there (the earlier instance wins depth ties).

    The same rule as :meth:`Renderer.compose`, restricted to one instance.
    """
    W, H = size
    depth = np.zeros((H, W))
    c = layers[target].crop_to((0, 0, W, H))
    if c is None:
        return np.zeros((H, W), bool)
    (x0, y0, x1, y1), sl = c
    depth[y0:y1, x0:x1] = layers[target].depth[sl]
    vis = depth > 0
    for j, layer in enumerate(layers):
        if j == target or layer is None or (co := layer.crop_to((0, 0, W, H))) is None:
            continue
        (a0, b0, a1, b1), slj = co
        d, mine = layer.depth[slj], depth[b0:b1, a0:a1]
        hides = (d > 0) & ((d < mine) if j > target else (d <= mine))
        vis[b0:b1, a0:a1] &= ~hides
    return vis


def _hit_codes(
    layer: InstanceLayer, code: SurfaceCode, R: np.ndarray, t: np.ndarray, obj_id: int
) -> np.ndarray:
    """(h, w) int64 code per pixel of a layer (-1 on a miss): the code of the hit triangle's vertex of
    largest barycentric weight; raises when the hits do not lie on the encoded mesh."""
    hit = layer.mask  # depth > 0; ``prim`` holds 2**32 - 1 on a miss (open3d's invalid id) with NumPy 2
    prim = layer.prim[hit]
    if prim.size and prim.max() >= len(code.faces):
        raise BopkdError(
            f"object {obj_id}: the renderer's mesh is not the encoded mesh (triangle {prim.max()} of "
            f"{len(code.faces)}); register SurfaceCode.model() (see code_renderer)"
        )
    b = layer.uv[hit].astype(np.float64)
    w = np.stack([1.0 - b[:, 0] - b[:, 1], b[:, 0], b[:, 1]], axis=1)  # weights of v0, v1, v2
    tri = code.faces[prim]
    # The hit point on the encoded mesh must be at the rendered depth (same mesh, same pose).
    p = np.einsum("nk,nkd->nd", w, code.vertices[tri].astype(np.float64))
    z = p @ np.asarray(R, dtype=np.float64)[2] + float(np.asarray(t).reshape(3)[2])
    if z.size and np.max(np.abs(z - layer.depth[hit])) > 1e-3 * max(1.0, float(layer.depth[hit].max())):
        raise BopkdError(
            f"object {obj_id}: the rendered depths do not lie on the encoded mesh; "
            "register SurfaceCode.model() in the renderer (see code_renderer)"
        )
    out = np.full(layer.prim.shape, -1, np.int64)
    out[hit] = code.codes[tri[np.arange(len(tri)), w.argmax(axis=1)]]
    return out


def code_image(
    renderer: Renderer,
    instances: Sequence[Instance],
    target_index: int,
    K_out: np.ndarray,
    codes: Mapping[int, SurfaceCode],
    out_size: Sequence[int] = (128, 128),
) -> tuple[np.ndarray, np.ndarray]:
    """Visible mask and integer surface code of one instance on the output grid.

    Args:
        renderer: holds the encoded mesh of every object in ``instances`` (:func:`code_renderer`).
        instances: every GT instance of the image, ``(obj_id, R (3, 3), t (3,) mm)``; the others occlude.
        target_index: the instance whose targets these are.
        K_out: (3, 3) px camera of the output grid (:func:`output_camera`).
        codes: ``{obj_id: SurfaceCode}``; only the target's object needs one.
        out_size: ``(W, H)`` px of the output grid.

    Returns:
        ``(mask (H, W) bool, code (H, W) int64)``: the pixels where the instance is the nearest surface,
        and there the code of its surface point (-1 elsewhere).
    """
    W, H = int(out_size[0]), int(out_size[1])
    obj_id, R, t = instances[target_index]
    obj_id = int(obj_id)
    if obj_id not in codes:
        raise BopkdError(f"object {obj_id} has no surface code; encode it with load_or_encode first")
    layers = renderer.render_layers(K_out, instances, window=(0, 0, W, H), uv=True)
    target = layers[target_index]
    code = np.full((H, W), -1, np.int64)
    crop = None if target is None else target.crop_to((0, 0, W, H))
    if crop is None:
        return np.zeros((H, W), bool), code
    mask = _visible(layers, target_index, (W, H))
    (x0, y0, x1, y1), sl = crop
    code[y0:y1, x0:x1] = _hit_codes(target, codes[obj_id], R, t, obj_id)[sl]
    code[~mask] = -1
    return mask, code


def code_targets(
    renderer: Renderer,
    instances: Sequence[Instance],
    target_index: int,
    K_out: np.ndarray,
    out_size: Sequence[int] = (128, 128),
    codes: Mapping[int, SurfaceCode] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """ZebraPose targets of one instance: ``(mask (H, W) bool, bits (B, H, W) uint8)``.

    Bit plane ``i`` is bit ``i`` of the code (0 the coarsest split, ZebraPose, Sec. 3), 0 outside the
    mask; ``B`` is the code's number of bits. Arguments as in :func:`code_image`.
    """
    if not codes:
        raise BopkdError(
            "code_targets needs the surface codes: pass codes=load_or_encode(models_dir, obj_ids)"
        )
    obj_id = int(instances[target_index][0])
    mask, code = code_image(renderer, instances, target_index, K_out, codes, out_size)
    planes = code_bits(np.maximum(code, 0), codes[obj_id].bits)
    planes[:, ~mask] = 0
    return mask, planes
