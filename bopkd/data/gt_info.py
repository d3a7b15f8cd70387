"""Masks and ``scene_gt_info.json`` entries of GT instances, computed as the BOP toolkit computes them.

Definitions (thodan/bop_toolkit, ``scripts/calc_gt_masks.py``, ``scripts/calc_gt_info.py``,
``bop_toolkit_lib/visibility.py`` and ``bop_toolkit_lib/misc.py``; Hodan et al., "On Evaluation of 6D
Object Pose Estimation", ECCVW 2016, Sec. 2.2; BOP'19 visibility mode):

- the scene depth image ``D`` (mm, as stored: the uint16 values times ``depth_scale``) and the depth
  ``R`` of the object rendered alone in its GT pose are turned into *distance* images,
  ``dist = depth * ||((u - cx) / fx, (v - cy) / fy, 1)||`` with integer pixel coordinates ``(u, v)``
  (``misc.depth_im_to_dist_im_fast``);
- ``mask = dist_R > 0`` (the full silhouette inside the image);
- ``mask_visib = (dist_R - dist_D <= delta or dist_D == 0) and dist_R > 0`` with ``delta = 15`` mm,
  the difference taken in float32 (``visibility.estimate_visib_mask_gt``, mode ``bop19``);
- ``px_count_all``: silhouette pixels on a canvas three times the image size centred on it (so the
  truncated part counts too); ``px_count_valid``: in-image silhouette pixels where ``D > 0``;
  ``px_count_visib``: pixels of ``mask_visib``; ``visib_fract = px_count_visib / px_count_all`` (0 when
  ``px_count_all`` is 0);
- ``bbox_obj``: box of the silhouette on the large canvas, in image coordinates (may start left of or
  above the image), ``bbox_visib``: box of ``mask_visib``; both ``(x, y, w, h)`` with
  ``w = x_max - x_min`` and ``h = y_max - y_min`` (``misc.calc_2d_bbox``: no +1), and both
  ``[-1, -1, -1, -1]`` when ``px_count_visib`` is 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bopkd.geometry.render import InstanceLayer, Renderer
from bopkd.records import GTInfo

#: Tolerance of the visibility test, mm (15 for every BOP dataset except ITODD's 5).
VISIB_DELTA = 15.0


def dist_scale(K: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """(h, w) factor turning depth into distance over the pixel box ``(x0, y0, x1, y1)``.

    ``||((u - cx) / fx, (v - cy) / fy, 1)||`` at integer pixel coordinates, as
    ``misc.depth_im_to_dist_im_fast`` of the BOP toolkit (which ignores the skew ``K[0, 1]``).
    """
    x0, y0, x1, y1 = box
    xs = (np.arange(x0, x1, dtype=np.float64) - K[0, 2]) / K[0, 0]
    ys = (np.arange(y0, y1, dtype=np.float64) - K[1, 2]) / K[1, 1]
    return np.sqrt(xs[None, :] ** 2 + ys[:, None] ** 2 + 1.0)


def depth_to_dist(depth: np.ndarray, K: np.ndarray) -> np.ndarray:
    """(H, W) distance image (mm) from a depth image (mm): 0 stays 0."""
    H, W = depth.shape
    return np.asarray(depth, dtype=np.float64) * dist_scale(np.asarray(K, dtype=np.float64), (0, 0, W, H))


def visib_mask(dist_scene: np.ndarray, dist_obj: np.ndarray, delta: float = VISIB_DELTA) -> np.ndarray:
    """BOP'19 visibility mask of an object: where its rendered surface is not behind the scene by more
    than ``delta`` mm, or the scene has no depth (``visibility._estimate_visib_mask``, mode ``bop19``)."""
    d_diff = dist_obj.astype(np.float32) - dist_scene.astype(np.float32)
    return ((d_diff <= delta) | (dist_scene == 0)) & (dist_obj > 0)


def calc_2d_bbox(xs: np.ndarray, ys: np.ndarray) -> tuple[int, int, int, int]:
    """``(x_min, y_min, x_max - x_min, y_max - y_min)`` of pixel coordinates (``misc.calc_2d_bbox``)."""
    x0, y0 = int(xs.min()), int(ys.min())
    return x0, y0, int(xs.max()) - x0, int(ys.max()) - y0


@dataclass
class InstanceMasks:
    """Masks and GT info of one instance.

    Attributes:
        info: the ``scene_gt_info`` entry.
        box: ``(x0, y0, x1, y1)`` end-exclusive in-image box where the masks may be non-zero.
        mask: (y1 - y0, x1 - x0) bool full silhouette inside ``box``.
        mask_visib: same shape, the visible part.
    """

    info: GTInfo
    box: tuple[int, int, int, int]
    mask: np.ndarray
    mask_visib: np.ndarray

    def full(self, which: str, shape: tuple[int, int]) -> np.ndarray:
        """The ``"mask"`` or ``"mask_visib"`` as a whole (H, W) bool image."""
        out = np.zeros(shape, bool)
        x0, y0, x1, y1 = self.box
        out[y0:y1, x0:x1] = getattr(self, which)
        return out


_EMPTY_BOX = (-1, -1, -1, -1)


def instance_masks(
    layer: InstanceLayer | None,
    depth_scene: np.ndarray,
    K: np.ndarray,
    delta: float = VISIB_DELTA,
) -> InstanceMasks:
    """Masks and GT info of one instance from its alone-rendered layer and the scene depth.

    Args:
        layer: the instance rendered alone (:meth:`Renderer.render_layers`) over a window at least as
            large as the toolkit's canvas, ``(-W, -H, 2W, 2H)``, so that ``px_count_all`` and
            ``bbox_obj`` see the truncated part; None when it covers no pixel of that canvas.
        depth_scene: (H, W) scene depth in mm as a reader gets it from the depth file.
        K: (3, 3) intrinsics in px.
        delta: visibility tolerance in mm.
    """
    H, W = depth_scene.shape
    K = np.asarray(K, dtype=np.float64)
    empty = InstanceMasks(
        GTInfo(_EMPTY_BOX, _EMPTY_BOX, 0, 0, 0, 0.0),
        (0, 0, 0, 0),
        np.zeros((0, 0), bool),
        np.zeros((0, 0), bool),
    )
    if layer is None:
        return empty
    large = layer.mask
    # The toolkit's canvas is 3x the image, centred on it.
    lx0, ly0 = layer.box[0], layer.box[1]
    cx0, cy0 = max(lx0, -W), max(ly0, -H)
    cx1, cy1 = min(layer.box[2], 2 * W), min(layer.box[3], 2 * H)
    canvas = (
        large[cy0 - ly0 : cy1 - ly0, cx0 - lx0 : cx1 - lx0]
        if cx0 < cx1 and cy0 < cy1
        else np.zeros((0, 0), bool)
    )
    px_count_all = int(canvas.sum())
    c = layer.crop_to((0, 0, W, H))
    if c is None:
        box = (0, 0, 0, 0)
        mask = mask_visib = np.zeros((0, 0), bool)
        px_count_valid = px_count_visib = 0
    else:
        box, sl = c
        x0, y0, x1, y1 = box
        scale = dist_scale(K, box)
        dist_obj = layer.depth[sl] * scale
        dist_scene = np.asarray(depth_scene[y0:y1, x0:x1], dtype=np.float64) * scale
        mask = dist_obj > 0
        mask_visib = visib_mask(dist_scene, dist_obj, delta)
        px_count_valid = int(np.count_nonzero(dist_scene[mask] > 0))
        px_count_visib = int(mask_visib.sum())
    visib_fract = px_count_visib / float(px_count_all) if px_count_all > 0 else 0.0
    bbox_obj = bbox_visib = _EMPTY_BOX
    if px_count_visib > 0:
        ys, xs = np.nonzero(canvas)
        bbox_obj = calc_2d_bbox(xs + cx0, ys + cy0)
        ys, xs = np.nonzero(mask_visib)
        bbox_visib = calc_2d_bbox(xs + box[0], ys + box[1])
    info = GTInfo(bbox_obj, bbox_visib, px_count_all, px_count_valid, px_count_visib, float(visib_fract))
    return InstanceMasks(info, box, mask, mask_visib)


def canvas_window(width: int, height: int) -> tuple[int, int, int, int]:
    """The toolkit's GT-info canvas, three times the image, as a render window ``(-W, -H, 2W, 2H)``."""
    return -width, -height, 2 * width, 2 * height


def compute_gt_info(
    renderer: Renderer,
    K: np.ndarray,
    instances: Sequence[tuple[int, np.ndarray, np.ndarray]],
    depth_scene: np.ndarray,
    delta: float = VISIB_DELTA,
) -> list[InstanceMasks]:
    """Masks and GT info of every GT instance ``(obj_id, R, t mm)`` of an image, given its depth (mm).

    This is what ``calc_gt_masks.py`` and ``calc_gt_info.py`` compute from a dataset's files; the
    renderer samples pixel centres as the toolkit's OpenGL renderers do.
    """
    H, W = depth_scene.shape
    layers = renderer.render_layers(K, instances, window=canvas_window(W, H))
    return [instance_masks(layer, depth_scene, K, delta) for layer in layers]
