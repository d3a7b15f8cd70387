"""Synthetic scenes for the model tests: a coloured box rendered by bopkd's ray-casting renderer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bopkd.geometry.projection import project_points
from bopkd.geometry.render import Renderer
from bopkd.records import ObjectInfo, ObjectModel

BOX_MIN = np.array([-40.0, -30.0, -20.0])
BOX_SIZE = np.array([80.0, 60.0, 40.0])
# quads of a box whose corner i has bits (x, y, z) = (i>>2, i>>1, i) & 1, as ObjectInfo.bbox_corners
QUADS = [(0, 1, 3, 2), (4, 5, 7, 6), (0, 1, 5, 4), (2, 3, 7, 6), (0, 2, 6, 4), (1, 3, 7, 5)]


def box_info(obj_id: int = 1) -> ObjectInfo:
    return ObjectInfo(obj_id, float(np.linalg.norm(BOX_SIZE)), BOX_MIN.copy(), BOX_SIZE.copy())


def box_model() -> ObjectModel:
    pts = box_info().bbox_corners()
    faces = np.array([t for a, b, c, d in QUADS for t in ((a, b, c), (a, c, d))], dtype=np.int64)
    return ObjectModel(pts=pts, faces=faces)


def rot(ax: float, ay: float, az: float) -> np.ndarray:
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    Rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    Ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    Rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return Rz @ Ry @ Rx


def render_box_batch(n: int = 4, size: int = 128, seed: int = 0, f: float = 220.0) -> dict:
    """A training batch (see bopkd/models/README_CONTRACT.md) of ``n`` images of one box, class 0 (obj 1).

    The box faces are coloured by their camera-frame normal, so the image shows the orientation.
    """
    rng = np.random.default_rng(seed)
    K = np.array([[f, 0.0, size / 2], [0.0, f, size / 2], [0.0, 0.0, 1.0]])
    info, model = box_info(), box_model()
    ren = Renderer(size, size)
    ren.add_object(1, model)
    images, objects, metas = [], [], []
    for _ in range(n):
        R = rot(*rng.uniform(-0.8, 0.8, 3))
        t = np.array([rng.uniform(-25, 25), rng.uniform(-25, 25), rng.uniform(450, 600)])
        out = ren.render(K, [(1, R, t)], normals=True)
        img = np.where((out.inst == 0)[..., None], 0.5 + 0.5 * out.normals, 0.0).astype(np.float32)
        images.append(torch.from_numpy(img).permute(2, 0, 1))
        c3 = info.bbox_corners()
        objects.append(
            {
                "cls": torch.tensor([0]),
                "obj_id": torch.tensor([1]),
                "R": torch.tensor(R, dtype=torch.float32)[None],
                "t": torch.tensor(t, dtype=torch.float32)[None],
                "corners_3d": torch.tensor(c3, dtype=torch.float32)[None],
                "corners_2d": torch.tensor(project_points(c3, K, R, t), dtype=torch.float32)[None],
                "mask_visib": torch.from_numpy(out.inst == 0)[None],
                "diameter": torch.tensor([info.diameter], dtype=torch.float32),
            }
        )
        metas.append({"scene_id": 0, "im_id": len(metas), "affine": np.eye(3), "K_orig": K})
    return {
        "images": torch.stack(images),
        "K": torch.tensor(K, dtype=torch.float32)[None].repeat(n, 1, 1),
        "objects": objects,
        "meta": metas,
    }


@pytest.fixture(scope="session")
def box_batch() -> dict:
    return render_box_batch()
