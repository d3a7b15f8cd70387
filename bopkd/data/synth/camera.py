"""Cameras of synthetic datasets: registered BOP intrinsics, a dataset's ``camera.json``, resized to an image size."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bopkd.data import bop_json
from bopkd.errors import BopkdError
from bopkd.records import Camera

#: Intrinsics of registered datasets' default cameras, at their native image size (BOP camera files:
#: ``camera.json`` of lm/lmo, ``camera_uw.json`` of ycbv, ``camera_primesense.json`` of tless).
CAMERAS: dict[str, dict[str, float]] = {
    "lm": {"fx": 572.4114, "fy": 573.57043, "cx": 325.2611, "cy": 242.04899, "width": 640, "height": 480},
    "lmo": {"fx": 572.4114, "fy": 573.57043, "cx": 325.2611, "cy": 242.04899, "width": 640, "height": 480},
    "ycbv": {"fx": 1066.778, "fy": 1067.487, "cx": 312.9869, "cy": 241.3109, "width": 640, "height": 480},
    "tless": {
        "fx": 1075.65091572,
        "fy": 1073.90347929,
        "cx": 360.0,
        "cy": 270.0,
        "width": 720,
        "height": 540,
    },
}


def resolve_camera(spec: str, width: int = 0, height: int = 0, root: str | Path | None = None) -> Camera:
    """The camera named by ``spec`` (registered dataset, dataset folder under ``root``, or camera.json),
    at ``width x height`` when given.

    Resizing scales K with the image: ``fx' = fx * W'/W``, ``cx' = cx * W'/W`` (and likewise in y), so
    the image point ``(x, y)`` of the original maps to ``(x W'/W, y H'/H)`` with the pixel-centre
    convention of :class:`~bopkd.geometry.render.Renderer` (pixel ``u`` spans ``[u, u + 1)``).
    """
    if spec in CAMERAS:
        c = CAMERAS[spec]
        K = np.array([[c["fx"], 0.0, c["cx"]], [0.0, c["fy"], c["cy"]], [0.0, 0.0, 1.0]])
        cam = Camera(K=K, width=int(c["width"]), height=int(c["height"]))
    else:
        p = Path(spec)
        if root is not None and not p.exists() and (Path(root) / spec / "camera.json").is_file():
            p = Path(root) / spec / "camera.json"
        elif p.is_dir():
            p = p / "camera.json"
        if not p.is_file():
            raise BopkdError(
                f"camera {spec!r}: not a registered dataset ({', '.join(CAMERAS)}), a dataset folder with "
                f"camera.json, or a camera.json file; pass --camera lmo or a path"
            )
        cam = bop_json.load_camera(p)
        if cam.width <= 0 or cam.height <= 0:
            raise BopkdError(f"{p}: camera file lacks width/height; add them or pass --size WxH")
    if width and height and (width, height) != (cam.width, cam.height):
        sx, sy = width / cam.width, height / cam.height
        K = cam.K.copy()
        K[0] *= sx
        K[1] *= sy
        cam = Camera(K=K, width=int(width), height=int(height))
    return Camera(K=cam.K, width=cam.width, height=cam.height, depth_scale=1.0)
