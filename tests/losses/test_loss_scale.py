"""The scale of the distillation terms relative to the task loss, against the reference's formulas.

Guo et al.'s code (GUOShuxuan/kd-6d-pose-adlp) sums the focal loss over every non-ignored cell and
class (``losses/loss.py::SigmoidFocalLoss``), sums the object-space keypoint loss over the positive
cells (``KDObjectSpaceLoss``: each cell the mean over its 8 x 3 coordinates), averages the OT term
over the images of the batch after summing its 8 keypoint divergences (``losses/loss_libs.py::
kd_loss_2d``), and trains on ``0.1 * cls + 1 * reg + 5 * kd`` (``train_kd.py``). The formulas are
written out here in numpy (and geomloss for the divergences), independently of bopkd's code.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bopkd.losses.kd.fkd import FKD, FKDConfig
from bopkd.losses.kd.ot_kd import OTKD, OTKDConfig
from bopkd.losses.kd.pred import PredKD
from bopkd.losses.targets import assign_targets
from bopkd.losses.task import LossConfig, PoseLoss

from .test_task import H, W, _batch, _outputs

geomloss = pytest.importorskip("geomloss")


def _teacher(student: dict, batch: dict, seed: int = 1) -> tuple[dict, dict]:
    """Teacher outputs with a few confident cells of each instance's class inside its box (finest level)."""
    g = torch.Generator().manual_seed(seed)
    an = student["anchors"]
    B, A, C = student["cls_logits"].shape
    logits = torch.full((B, A, C), -8.0)
    kpts = an["centers"][None, :, None, None, :] + 6 * torch.randn(B, A, C, 8, 2, generator=g)
    cells = {}
    for b, o in enumerate(batch["objects"]):
        c = int(o["cls"][0])
        m = o["mask_visib"][0]
        x = an["centers"][:, 0].long().clamp(0, W - 1)
        y = an["centers"][:, 1].long().clamp(0, H - 1)
        # cells of the finest level only: the inference budget per level then keeps all of them
        inside = torch.nonzero(m[y, x][: an["level_start"][1]]).view(-1)[::2][:6]
        for cell in inside.tolist():
            p = 0.3 + 0.6 * float(torch.rand((), generator=g))
            logits[b, cell, c] = math.log(p / (1 - p))
        cells[b] = (c, inside)
    feats = [f.detach() + 0.5 for f in student["features"]]
    return {
        "cls_logits": logits,
        "kpts": kpts,
        "anchors": an,
        "image_size": (H, W),
        "features": feats,
    }, cells


def _with_features(out: dict, seed: int = 2) -> dict:
    g = torch.Generator().manual_seed(seed)
    B = out["cls_logits"].shape[0]
    feats = [torch.randn(B, 8, h, w, generator=g).requires_grad_(True) for (h, w) in out["anchors"]["shapes"]]
    return {**out, "features": feats}


def reference_focal_sum(logits: np.ndarray, labels: np.ndarray, alpha=0.25, gamma=2.0) -> float:
    """``SigmoidFocalLoss.forward``'s sum over non-ignored cells (labels >= -1; -1 background)."""
    valid = labels >= -1
    z, lab = logits[valid], labels[valid]
    p = np.clip(1 / (1 + np.exp(-z)), 1e-4, 1 - 1e-4)
    pos = np.zeros_like(p, dtype=bool)
    pos[np.arange(len(lab))[lab >= 0], lab[lab >= 0]] = True
    loss = np.where(pos, -alpha * (1 - p) ** gamma * np.log(p), -(1 - alpha) * p**gamma * np.log(1 - p))
    return float(loss.sum())


def reference_kpt_sum(out: dict, batch: dict, asg: dict) -> float:
    """``KDObjectSpaceLoss``'s ``losses.sum()``: per cell the mean smooth-L1 (beta 1/50 of the diameter)
    between the GT 3D corners and their projection onto the rays of the predicted keypoints."""
    total = 0.0
    for i in range(asg["num_pos"]):
        b, cell, c, o = (int(asg[k][i]) for k in ("pos_batch", "pos_cell", "pos_cls", "pos_obj"))
        obj = batch["objects"][b]
        K = batch["K"][b].double().numpy()
        X = (obj["corners_3d"][o].double() @ obj["R"][o].double().T + obj["t"][o].double()).numpy()
        u = out["kpts"][b, cell, c].detach().double().numpy()
        Bv = (np.linalg.inv(K) @ np.c_[u, np.ones(8)].T).T  # (8, 3) rays
        P = np.einsum("ni,nj->nij", Bv, Bv) / np.einsum("ni,ni->n", Bv, Bv)[:, None, None]
        px = np.einsum("nij,nj->ni", P, X)
        d = float(obj["diameter"][o])
        diff = np.abs(50 * px / d - 50 * X / d)
        sl1 = np.where(diff < 1, 0.5 * diff**2, diff - 0.5)
        total += float(sl1.mean() / 50)
    return total


def reference_ot(
    student: dict, teacher_cells: dict, teacher: dict, asg: dict, blur=0.001, reach=0.5
) -> float:
    """``kd_loss_2d``: per image, one geomloss call on the 8 keypoint problems, summed; mean over images."""
    L = geomloss.SamplesLoss("sinkhorn", p=2, blur=blur, reach=reach, scaling=0.5, backend="tensorized")
    per_img = []
    for b, (c, tcells) in teacher_cells.items():
        cells = asg["pos_cell"][asg["pos_batch"] == b]
        if len(cells) == 0 or len(tcells) == 0:
            continue
        a = torch.sigmoid(student["cls_logits"][b, cells, c].detach()).double().clamp(1e-3, 1 - 1e-3)
        w = torch.sigmoid(teacher["cls_logits"][b, tcells, c]).double()
        x = (
            student["kpts"][b, cells, c].detach().double().transpose(0, 1) / torch.tensor([W, H])
        ).contiguous()
        y = (teacher["kpts"][b, tcells, c].double().transpose(0, 1) / torch.tensor([W, H])).contiguous()
        per_img.append(float(L(a.expand(8, -1).contiguous(), x, w.expand(8, -1).contiguous(), y).sum()))
    return sum(per_img) / len(per_img)


def _setup(n_img: int = 2):
    batch = _batch(n_img)
    s = _with_features(_outputs(batch))
    t, tcells = _teacher(s, batch)
    task = PoseLoss()
    asg = assign_targets(s, batch, task.cfg, torch.Generator().manual_seed(0))
    terms = task(s, batch, assignment=asg)
    return s, t, batch, asg, tcells, terms


def test_kd_to_task_ratio_equals_the_reference_formulas():
    s, t, batch, asg, tcells, terms = _setup()
    assert asg["num_pos"] > 10
    kd = OTKD(OTKDConfig(num_cells=1000), LossConfig())(s, batch, t, assignment=asg)["kd_ot"].detach()
    terms = {k: v.detach() for k, v in terms.items()}
    cls_ref = 0.1 * reference_focal_sum(s["cls_logits"].detach().double().numpy(), asg["labels"].numpy())
    kpt_ref = 1.0 * reference_kpt_sum(s, batch, asg)
    kd_ref = 5.0 * reference_ot(s, tcells, t, asg)
    assert float(terms["loss_cls"]) == pytest.approx(cls_ref, rel=1e-4)
    assert float(terms["loss_kpt"]) == pytest.approx(kpt_ref, rel=1e-4)
    assert float(kd) == pytest.approx(kd_ref, rel=2e-3)
    ratio = float(kd) / float(terms["loss_cls"] + terms["loss_kpt"])
    assert ratio == pytest.approx(kd_ref / (cls_ref + kpt_ref), rel=2e-3)
    # the per-positive mean (an ablation) makes the same weight P times stronger relative to the task
    per_pos = PoseLoss(LossConfig(reduction="mean_per_positive"))(s, batch, assignment=asg)
    per_pos = {k: v.detach() for k, v in per_pos.items()}
    ratio_pp = float(kd) / float(per_pos["loss_cls"] + per_pos["loss_kpt"])
    assert ratio_pp == pytest.approx(ratio * asg["num_pos"], rel=1e-5)


def _doubled(batch: dict, asg: dict) -> tuple[dict, dict]:
    """The batch twice over (images, objects) and its sampled positive cells twice over."""
    B = len(batch["objects"])
    a2 = {
        "labels": torch.cat([asg["labels"]] * 2),
        "obj_index": torch.cat([asg["obj_index"]] * 2),
        "pos_batch": torch.cat([asg["pos_batch"], asg["pos_batch"] + B]),
        "num_pos": 2 * asg["num_pos"],
    }
    for k in ("pos_cell", "pos_cls", "pos_obj"):
        a2[k] = torch.cat([asg[k]] * 2)
    b2 = {
        "images": torch.cat([batch["images"]] * 2),
        "K": torch.cat([batch["K"]] * 2),
        "objects": batch["objects"] * 2,
        "meta": batch["meta"] * 2,
    }
    return b2, a2


def _doubled_out(out: dict) -> dict:
    d = dict(out)
    for k in ("cls_logits", "kpts"):
        d[k] = torch.cat([out[k]] * 2)
    if "features" in out:
        d["features"] = [torch.cat([f] * 2) for f in out["features"]]
    return d


def test_doubling_the_batch_doubles_task_terms_and_keeps_the_kd_term():
    s, t, batch, asg, _, terms = _setup()
    (b2, a2), s2, t2 = _doubled(batch, asg), _doubled_out(s), _doubled_out(t)
    terms2 = PoseLoss()(s2, b2, assignment=a2)
    for k in ("loss_cls", "loss_kpt"):
        assert float(terms2[k].detach()) == pytest.approx(2 * float(terms[k].detach()), rel=1e-5)
    ot = OTKD(OTKDConfig(num_cells=1000))
    assert float(ot(s2, b2, t2, assignment=a2)["kd_ot"].detach()) == pytest.approx(
        float(ot(s, batch, t, assignment=asg)["kd_ot"].detach()), rel=1e-5
    )


def test_pred_and_fkd_keep_their_ratio_to_the_task_under_both_reductions():
    s, t, batch, asg, _, _ = _setup()
    ratios = {}
    for red in ("sum", "mean_per_positive"):
        lc = LossConfig(reduction=red)
        task = PoseLoss(lc)(s, batch, assignment=asg)
        pred = PredKD(loss_cfg=lc)(s, batch, t, assignment=asg)["kd_pred"]
        ch = {8: 8, 16: 8, 32: 8, 64: 8, 128: 8}
        fkd = FKD(FKDConfig(), ch, ch, lc)
        strides = [int(v) for v in s["anchors"]["strides"]]
        fkd.strides = [st for st in strides if str(st) in fkd.adapters]
        f = sum(fkd(s, batch, t, assignment=asg).values())
        pred, f, task = pred.detach(), f.detach(), {k: v.detach() for k, v in task.items()}
        ratios[red] = (float(pred) / float(task["loss_kpt"]), float(f) / float(sum(task.values())))
    assert ratios["sum"][0] == pytest.approx(ratios["mean_per_positive"][0], rel=1e-5)
    assert ratios["sum"][1] == pytest.approx(ratios["mean_per_positive"][1], rel=1e-5)
    assert ratios["sum"][1] > 0
