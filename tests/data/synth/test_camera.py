"""Cameras of synthetic datasets: registered intrinsics, camera files, scaling to an image size."""

from __future__ import annotations

import json

import pytest

from bopkd.data.synth.camera import CAMERAS, resolve_camera
from bopkd.errors import BopkdError


def test_camera_resolution_and_scaling(tmp_path):
    cam = resolve_camera("lmo")
    assert (cam.width, cam.height) == (640, 480) and cam.fx == 572.4114
    small = resolve_camera("ycbv", 320, 240)
    assert small.fx == pytest.approx(CAMERAS["ycbv"]["fx"] / 2) and small.cy == pytest.approx(
        CAMERAS["ycbv"]["cy"] / 2
    )
    (tmp_path / "cam.json").write_text(
        json.dumps({"fx": 500, "fy": 500, "cx": 100, "cy": 80, "width": 200, "height": 160})
    )
    own = resolve_camera(str(tmp_path / "cam.json"), 400, 320)
    assert own.fx == 1000 and own.cx == 200
    with pytest.raises(BopkdError, match="not a registered dataset"):
        resolve_camera("nope")
