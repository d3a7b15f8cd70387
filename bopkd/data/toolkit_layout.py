"""Lay a synthetic dataset out as the registered BOP dataset whose ids it uses, so the official toolkit scores it.

The toolkit's ``dataset_params.get_split_params`` knows each registered dataset's test scenes (LM-O: only
scene 2) and reads nothing of bopkd's descriptor, so a synthetic test split scored as ``lmo`` by the
toolkit must hold its images in scene 2. :func:`renumber_test_scene` moves a dataset's single test scene
to that number and rewrites everything that names it (``test_targets_bop19.json``, the descriptor's
``test_scene_ids``), and :func:`write_targets_bop24` writes the image-level targets of BOP'24
(``test_targets_bop24.json``: ``{"scene_id", "im_id"}`` per image, as the toolkit's ``eval_bop24_pose.py``
reads them) from the BOP'19 ones.
"""

from __future__ import annotations

import json
from pathlib import Path

from bopkd.errors import BopkdError
from bopkd.utils.atomic import atomic_write_json

#: Test scene of each registered dataset with a single one (``dataset_params.py`` of the toolkit).
TOOLKIT_TEST_SCENE = {"lmo": 2}


def renumber_test_scene(ds_dir: str | Path, scene_id: int) -> None:
    """Move the only test scene of ``ds_dir`` to ``scene_id`` (no-op when it already is)."""
    ds_dir = Path(ds_dir)
    scenes = sorted(p for p in (ds_dir / "test").iterdir() if p.is_dir())
    if len(scenes) != 1:
        raise BopkdError(
            f"{ds_dir / 'test'}: holds {len(scenes)} scenes; renumbering needs exactly one "
            "(build the test split with images_per_scene >= its number of images)"
        )
    old = int(scenes[0].name)
    if old == scene_id:
        return
    scenes[0].rename(ds_dir / "test" / f"{scene_id:06d}")
    tf = ds_dir / "test_targets_bop19.json"
    atomic_write_json(tf, [{**t, "scene_id": scene_id} for t in json.loads(tf.read_text())])
    desc = ds_dir / "bopkd_dataset.json"
    if desc.is_file():
        d = json.loads(desc.read_text())
        d["test_scene_ids"] = [scene_id]
        atomic_write_json(desc, d)


def write_targets_bop24(ds_dir: str | Path) -> Path:
    """``test_targets_bop24.json``: one ``{"im_id", "scene_id"}`` per image of the BOP'19 targets."""
    ds_dir = Path(ds_dir)
    targets = json.loads((ds_dir / "test_targets_bop19.json").read_text())
    images = sorted({(int(t["scene_id"]), int(t["im_id"])) for t in targets})
    out = ds_dir / "test_targets_bop24.json"
    atomic_write_json(out, [{"im_id": i, "scene_id": s} for s, i in images])
    return out
