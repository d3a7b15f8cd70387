"""Synthetic BOP datasets: RGB-D images of posed objects with every file the BOP format has.

Modules: :mod:`~bopkd.data.synth.config` (settings), :mod:`~bopkd.data.synth.camera`,
:mod:`~bopkd.data.synth.models`, :mod:`~bopkd.data.synth.poses` (scene sampling),
:mod:`~bopkd.data.synth.appearance` and :mod:`~bopkd.data.synth.images` (rendering),
:mod:`~bopkd.data.synth.writer` (image files) and :mod:`~bopkd.data.synth.builder` (the dataset).

``build_synthetic_dataset(cfg)`` writes ``root/NAME/`` with ``camera.json``, ``models/`` and
``models_eval/`` (PLY + ``models_info.json``), ``train_pbr/`` and ``test/`` scenes (rgb, depth as uint16
times ``depth_scale`` in mm, mask, mask_visib, scene_camera, scene_gt, scene_gt_info),
``test_targets_bop19.json`` and the descriptor ``bopkd_dataset.json`` that lets
``BopDataset(NAME, root)`` read it. Layout and units follow the BOP format document
(https://github.com/thodan/bop_toolkit/blob/master/docs/bop_datasets_format.md).

How an image is made:

- objects: bopkd's procedural models (:mod:`bopkd.data.procedural`) or the models of an existing BOP
  dataset; several distinct objects per image, placed without interpenetrating so that they occlude
  each other in the image;
- poses: ``linemod`` viewpoints (the objects stand on a table, z up; the camera is on the upper
  hemisphere around the first object, elevation 0-80 deg, uniform on the sphere cap, azimuth uniform,
  in-plane rotation within +-15 deg, distance uniform in LM's test range 600-1100 mm, as in Hinterstoisser
  et al., ACCV 2012) or ``free`` viewpoints (uniform random rotations, positions uniform in the image at a
  depth in 450-1100 mm). The distances are for LM-O's camera at 640x480; another camera or image size
  scales them by its focal length relative to the image width, so objects cover the same fraction of
  the image;
- rendering: one ray per pixel centre with :class:`~bopkd.geometry.render.Renderer`, each object alone
  in its box (so its full silhouette comes for free), composed by nearest hit; RGB is the barycentric
  interpolation of the model's vertex colours, shaded Lambertian + ambient with a random light, over a
  random procedural background (noise, stripes, checker), with sensor noise;
- GT: masks and ``scene_gt_info`` are computed from the *stored* depth with the definitions of the BOP
  toolkit's ``calc_gt_masks.py`` / ``calc_gt_info.py`` (:mod:`bopkd.data.gt_info`; its renderer is the
  same ray caster as the images', which differs from the toolkit's OpenGL one by about one edge pixel in
  a few instances: on the minibop oracle, 20 of 25 instances match exactly); the BOP'19 test targets are
  the instances with ``visib_fract >= 0.1`` (the BOP'19 rule; for real datasets the published file is
  not reproducible that way, for ours it is the definition).

Every image draws from its own random stream, seeded by ``(seed, split, image index)``: the same
config gives byte-identical files. Files are written atomically (temporary file + rename). A scene's
``scene_gt_info.json`` is written last, so an interrupted build resumes at the first unfinished scene.
"""

from bopkd.data.synth.builder import build_synthetic_dataset
from bopkd.data.synth.camera import CAMERAS, resolve_camera
from bopkd.data.synth.config import SynthConfig, synth_config_from_dict, synth_config_from_options

__all__ = [
    "CAMERAS",
    "SynthConfig",
    "build_synthetic_dataset",
    "resolve_camera",
    "synth_config_from_dict",
    "synth_config_from_options",
]
