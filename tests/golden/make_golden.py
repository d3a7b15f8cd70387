"""Build the golden scoring case of ``tests/golden``: a tiny LM-O-like dataset, result CSVs, and the toolkit's scores.

    python tests/golden/make_golden.py              # tests/golden/lmo and tests/golden/results
    BOPKD_TOOLKIT_PYTHON=VENV/bin/python BOPKD_TOOLKIT_PATH=bop_toolkit \\
        python tests/golden/make_golden.py --toolkit-only   # tests/golden/expected from the official toolkit

The dataset is made by ``bopkd.data.synth`` from bopkd's eight procedural objects, renumbered to LM-O's
object ids (1, 5, 6, 8, 9, 12; object 10 has a discrete symmetry, 11 a continuous one, as the toolkit's
``symmetric_obj_ids`` for lmo) and laid out as LM-O's test scene 2 (the only test scene the toolkit's
``dataset_params`` know for lmo). Only what scoring reads is kept: ``models_eval``, ``camera.json``, the
test scene's depth and JSON files, ``test_targets_bop19.json`` and ``test_targets_bop24.json``.

Result files (``results/``):

- ``gt_lmo-test.csv``: every GT pose, score 1;
- ``perturbed_lmo-test.csv``: every instance of a symmetric object (10, 11) in a pose that differs from
  its GT by one of its symmetries; the other instances cycled through known cases (exact, small, medium
  and large errors, a wrong pose, a missing estimate, a half turn about the model's z axis, a 10 mm depth
  shift, two estimates with different scores, two with equal scores); plus, per image, an estimate of an
  object absent from it;
- ``multi_lmo-test.csv``: three noisy poses with random scores per GT instance and two false positives
  per image (the BOP'24 detection case: many estimates per image, ranked by score).

``expected/NAME.json`` holds, as the toolkit wrote them: ``scores_bop19`` (``eval_bop19_pose.py``),
``recall_per_threshold`` and ``errors`` (every estimate's error per error type, from the kept eval
folder), ``ad_recall_th0.1`` (``eval_calc_errors.py --error_type=ad|adi`` + ``eval_calc_scores.py``) and
``scores_bop24`` (``eval_bop24_pose.py`` with its default targets ``test_targets_bop24.json``); the
toolkit's commit and the commands are in ``expected/toolkit.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))

#: bopkd's procedural object -> LM-O object id (7: discrete symmetry, 8: continuous symmetry).
PROCEDURAL_TO_LMO = {1: 1, 2: 5, 3: 6, 4: 8, 5: 9, 6: 12, 7: 10, 8: 11}
N_IMAGES = 5
SEED = 11
NAMES = ("gt_lmo-test", "perturbed_lmo-test", "multi_lmo-test")


def _procedural_as_lmo(dst: Path) -> Path:
    """bopkd's procedural ``models``/``models_eval`` written under ``dst`` with LM-O's object ids."""
    from bopkd.data import bop_json
    from bopkd.data.synth import SynthConfig
    from bopkd.data.synth.models import load_models

    src = dst / "procedural"
    load_models(SynthConfig(name="procedural", root=str(dst), train=0, test=1, edge_length=40.0)).write(src)
    for sub in ("models", "models_eval"):
        (dst / sub).mkdir(parents=True)
        infos = bop_json.load_models_info(src / sub / "models_info.json")
        for p, lmo in PROCEDURAL_TO_LMO.items():
            shutil.copyfile(src / sub / f"obj_{p:06d}.ply", dst / sub / f"obj_{lmo:06d}.ply")
        bop_json.save_models_info(
            dst / sub / "models_info.json", {lmo: infos[p] for p, lmo in PROCEDURAL_TO_LMO.items()}
        )
    return dst / "models"


def build_dataset(out_root: Path) -> Path:
    """Write ``out_root/lmo`` (what scoring reads, nothing else)."""
    from bopkd.data.synth import SynthConfig, build_synthetic_dataset
    from bopkd.data.toolkit_layout import renumber_test_scene, write_targets_bop24

    with tempfile.TemporaryDirectory(prefix="bopkd_golden_") as tmp:
        models = _procedural_as_lmo(Path(tmp) / "src")
        cfg = SynthConfig(
            name="lmo",
            root=str(Path(tmp) / "build"),
            models=str(models),
            train=0,
            test=N_IMAGES,
            width=640,
            height=480,
            camera="lmo",
            objects_per_image=(4, 6),
            seed=SEED,
            png_compression=9,
        )
        ds = build_synthetic_dataset(cfg)
        renumber_test_scene(ds, 2)
        write_targets_bop24(ds)
        final = out_root / "lmo"
        shutil.rmtree(final, ignore_errors=True)
        (final / "test" / "000002").mkdir(parents=True)
        shutil.copytree(ds / "models_eval", final / "models_eval")
        for f in ("camera.json", "test_targets_bop19.json", "test_targets_bop24.json"):
            shutil.copyfile(ds / f, final / f)
        scene = ds / "test" / "000002"
        shutil.copytree(scene / "depth", final / "test" / "000002" / "depth")
        for f in ("scene_camera.json", "scene_gt.json", "scene_gt_info.json"):
            shutil.copyfile(scene / f, final / "test" / "000002" / f)
    return final


def _rot(rng: np.random.Generator, deg: float) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    return Rotation.from_rotvec(rng.normal(size=3) * np.deg2rad(deg) / np.sqrt(3)).as_matrix()


def _instances(root: Path):
    """(scene, image, GT list, image time) of the golden test images, in order."""
    from bopkd.data.dataset import BopDataset

    ds = BopDataset("lmo", root)
    targets = {(t.scene_id, t.im_id, t.obj_id) for t in ds.targets}
    for s in ds.scene_ids(ds.test_split):
        for i, gts in sorted(ds.scene_gt(ds.test_split, s).items()):
            yield ds, s, i, [g for g in gts if (s, i, g.obj_id) in targets], 0.05 * (i + 1)


def perturbed_estimates(root: Path) -> list:
    """The ``perturbed`` cases, cycled over the GT instances (see the module doc)."""
    from bopkd.eval.submission import Estimate
    from bopkd.geometry.symmetry import symmetry_transforms

    rng = np.random.default_rng(SEED)
    out, k = [], 0
    for ds, s, i, gts, tm in _instances(root):
        infos = ds.models_info(eval=True)
        for g in gts:
            R, t, sc = g.R, g.t, float(np.round(rng.uniform(0.2, 1.0), 3))
            if infos[g.obj_id].is_symmetric:  # a pose that differs from the GT by one of its symmetries
                Rs, ts = symmetry_transforms(infos[g.obj_id])
                j = len(Rs) // 2
                out.append(Estimate(s, i, g.obj_id, sc, g.R @ Rs[j], g.R @ ts[j] + g.t, tm))
                continue
            case, k = k % 10, k + 1
            if case == 1:
                R, t = _rot(rng, 1.0) @ g.R, g.t + rng.normal(size=3) * 2.0
            elif case == 2:
                R, t = _rot(rng, 5.0) @ g.R, g.t + rng.normal(size=3) * 10.0
            elif case == 3:
                R, t = _rot(rng, 20.0) @ g.R, g.t + rng.normal(size=3) * 40.0
            elif case == 4:
                R, t = _rot(rng, 120.0) @ g.R, g.t + np.array([150.0, -80.0, 60.0])
            elif case == 5:
                continue
            elif case == 6:  # a half turn about the model's z axis: wrong for an object without symmetry
                R = g.R @ np.diag([-1.0, -1.0, 1.0])
            elif case == 7:
                t = g.t + np.array([0.0, 0.0, 10.0])
            elif case == 8:
                out.append(Estimate(s, i, g.obj_id, 0.9, _rot(rng, 30.0) @ g.R, g.t + 25.0, tm))
                R, t, sc = _rot(rng, 2.0) @ g.R, g.t + rng.normal(size=3) * 3.0, 0.4
            elif case == 9:
                out.append(Estimate(s, i, g.obj_id, 0.5, _rot(rng, 40.0) @ g.R, g.t + 30.0, tm))
                sc = 0.5
            out.append(Estimate(s, i, g.obj_id, sc, R, t, tm))
        present = {g.obj_id for g in gts}
        absent = [o for o in ds.obj_ids if o not in present]
        if absent and gts:
            o = int(rng.choice(absent))
            out.append(Estimate(s, i, o, 0.7, gts[0].R, gts[0].t + 20.0, tm))
    return out


def multi_estimates(root: Path) -> list:
    """Three noisy poses per GT instance and two false positives per image, random scores."""
    from bopkd.eval.submission import Estimate

    rng = np.random.default_rng(SEED + 1)
    out = []
    for ds, s, i, gts, tm in _instances(root):
        for g in gts:
            for deg, mm in ((2.0, 3.0), (8.0, 15.0), (25.0, 50.0)):
                sc = float(np.round(rng.uniform(0.05, 1.0), 3))
                out.append(
                    Estimate(s, i, g.obj_id, sc, _rot(rng, deg) @ g.R, g.t + rng.normal(size=3) * mm, tm)
                )
        for _ in range(2 if gts else 0):
            g = gts[int(rng.integers(len(gts)))]
            o = int(rng.choice(ds.obj_ids))
            sc = float(np.round(rng.uniform(0.05, 1.0), 3))
            out.append(Estimate(s, i, o, sc, _rot(rng, 90.0) @ g.R, g.t + rng.normal(size=3) * 80.0, tm))
    return out


def write_results(root: Path) -> None:
    from bopkd.eval.submission import Estimate
    from bopkd.infer.export import write_submission

    res = root / "results"
    res.mkdir(exist_ok=True)
    gt = [Estimate(s, i, g.obj_id, 1.0, g.R, g.t, tm) for _, s, i, gts, tm in _instances(root) for g in gts]
    write_submission(res / "gt_lmo-test.csv", gt)
    write_submission(res / "perturbed_lmo-test.csv", perturbed_estimates(root))
    write_submission(res / "multi_lmo-test.csv", multi_estimates(root))


def _errors(kept: Path) -> dict:
    """Every ``errors_*.json`` of the kept eval folder, by error signature (``error=...``)."""
    out = {}
    for d in sorted(p for p in kept.iterdir() if p.is_dir() and p.name.startswith("error=")):
        rows = []
        for f in sorted(d.glob("errors_*.json")):
            rows.extend(json.loads(f.read_text()))
        out[d.name] = rows
    return out


def _bop24(tk, root: Path, csv: Path) -> tuple[dict, str]:
    """``eval_bop24_pose.py`` on one file with its default targets: (scores_bop24.json, the command)."""
    with tempfile.TemporaryDirectory(prefix="bopkd_golden_bop24_") as tmp:
        res, ev = Path(tmp) / "results", Path(tmp) / "eval"
        res.mkdir()
        shutil.copyfile(csv, res / csv.name)
        env = {
            **os.environ,
            "BOP_PATH": str(root),
            "BOP_RESULTS_PATH": str(res),
            "BOP_EVAL_PATH": str(ev),
            "PATH": f"{Path(tk.python).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        args = [f"--result_filenames={csv.name}", "--num_workers=1"]
        subprocess.run(
            [tk.python, str(tk.script("eval_bop24_pose.py")), *args],
            env=env,
            cwd=tmp,
            check=True,
            capture_output=True,
        )
        scores = json.loads((ev / csv.stem / "scores_bop24.json").read_text())
    return scores, " ".join(["python scripts/eval_bop24_pose.py", *args])


def _commands(log: Path, tk) -> list[str]:
    """The toolkit commands of a bopkd toolkit log, with the machine's paths replaced by names."""
    out = []
    for ln in log.read_text().splitlines():
        if ln.startswith("$ "):
            c = ln[2:].replace(tk.python, "python").replace(str(tk.path) + "/", "")
            out.append(re.sub(r"\S*/bopkd_toolkit_[^/\s]+", "TMP", c))
    return out


def toolkit_expected(root: Path) -> None:
    """``expected/``: the official toolkit's scores of every result file (see the module doc)."""
    from bopkd.eval.toolkit_engine import find_toolkit, score_with_toolkit

    tk = find_toolkit(None, None)
    exp = root / "expected"
    exp.mkdir(exist_ok=True)
    commands: dict[str, list[str]] = {}
    for name in NAMES:
        csv = root / "results" / f"{name}.csv"
        with tempfile.TemporaryDirectory(prefix="bopkd_golden_tk_") as tmp:
            (rec,) = score_with_toolkit([csv], root, tmp, ad=True, keep_eval=True)
            kept = Path(tmp) / name / "bop_toolkit_eval"
            raw = json.loads((kept / "scores_bop19.json").read_text())
            errors = _errors(kept)
            commands[name] = _commands(Path(tmp) / name / "bop_toolkit.log", tk)
        b24, cmd24 = _bop24(tk, root, csv)
        commands[name].append(cmd24)
        ad_signs = ("error=ad_", "error=adi_")
        out = {
            "scores_bop19": raw,
            "recall_per_threshold": {
                k: v for k, v in rec["recall_per_threshold"].items() if not k.startswith(ad_signs)
            },
            "errors": {k: v for k, v in errors.items() if not k.startswith(ad_signs)},
            "ad_recall_th0.1": rec["ad_recall_th0.1"],
            "scores_bop24": b24,
        }
        (exp / f"{name}.json").write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
        print(f"{name}: AR {raw['bop19_average_recall']:.4f}, mAP {b24['bop24_mAP']:.4f}")
    meta = {
        "toolkit": "https://github.com/thodan/bop_toolkit",
        "commit": tk.commit,
        "made_by": "BOPKD_TOOLKIT_PYTHON=... BOPKD_TOOLKIT_PATH=... python tests/golden/make_golden.py --toolkit-only",
        "environment": "BOP_PATH=tests/golden; BOP_RESULTS_PATH=TMP/results; BOP_EVAL_PATH=TMP/eval; "
        + (
            f"EGL_PLATFORM={os.environ.get('EGL_PLATFORM', 'surfaceless')} (vispy renderer; set by bopkd without "
            "a display); "
            if not os.environ.get("DISPLAY")
            else f"DISPLAY={os.environ['DISPLAY']}; "
        )
        + "eval_bop19/calc_errors/calc_scores run from the toolkit checkout, eval_bop24_pose.py from TMP",
        "commands": commands,
    }
    (exp / "toolkit.json").write_text(json.dumps(meta, indent=1) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(HERE), help="folder to write (default: tests/golden)")
    ap.add_argument("--toolkit-only", action="store_true", help="only (re)compute expected/ with the toolkit")
    args = ap.parse_args()
    root = Path(args.out).resolve()
    if not args.toolkit_only:
        build_dataset(root)
        write_results(root)
        print(f"wrote {root / 'lmo'} and {root / 'results'}")
        print("expected/ holds the toolkit's scores of the previous files: recompute it with --toolkit-only")
    else:
        toolkit_expected(root)


if __name__ == "__main__":
    main()
