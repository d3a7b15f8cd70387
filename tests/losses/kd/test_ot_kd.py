"""OT distillation loss (Guo et al., CVPR 2023) on hand-made outputs: properties and a per-problem reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bopkd.errors import BopkdError
from bopkd.losses.kd.gather import (
    flatten_instances,
    normalise_points,
    orig_normalisation,
    select_teacher_cells,
)
from bopkd.losses.kd.ot_kd import OTKD, OTKDConfig

ot_mod = pytest.importorskip("bopkd.losses.ot")

# image 0: instance 0 (class 0) and instance 1 (class 1); image 1: instance 0 (class 0)
BOXES = [[(0, 8, 8, 40, 40), (1, 40, 40, 64, 64)], [(0, 16, 16, 48, 48)]]
AFFINES = [np.array([[0.5, 0.0, 4.0], [0.0, 0.5, 2.0], [0.0, 0.0, 1.0]]), np.eye(3)]
ORIG = (128, 96)
BIG = 1000  # teacher cell budget large enough to keep every confident cell


def logit(p):
    return math.log(p / (1 - p))


def scene(kd_synth, seed=0, teacher_cells=None, student_cells=None):
    """Student/teacher outputs and a batch; teacher confident cells and student positives given per instance.

    Returns (student_out, teacher_out, batch, assignment, teacher_sets) with teacher_sets[(b, o)] = list of
    cells and assignment the student positives (an ``assign_targets``-like dict).
    """
    g = torch.Generator().manual_seed(seed + 100)
    s = kd_synth.outputs(B=2, seed=seed)
    t = kd_synth.outputs(B=2, seed=seed + 1)
    an = s["anchors"]
    batch = kd_synth.batch(B=2, boxes=BOXES, affines=AFFINES, orig_size=ORIG)
    pos, tsets = [], {}
    for b, items in enumerate(BOXES):
        for o, (c, x0, y0, x1, y1) in enumerate(items):
            inside = kd_synth.cells_in_box(an, x0, y0, x1, y1)
            sc = student_cells(b, o, inside) if student_cells else inside[::2]
            tc = teacher_cells(b, o, inside) if teacher_cells else inside[1::2]
            pos += [(b, cell, c, o) for cell in sc]
            tsets[(b, o)] = tc
            for cell in tc:
                t["cls_logits"][b, cell, c] = logit(0.2 + 0.7 * float(torch.rand((), generator=g)))
            for cell in sc:
                s["cls_logits"][b, cell, c] = logit(0.1 + 0.8 * float(torch.rand((), generator=g)))
    asg = kd_synth.assignment(2, an["centers"].shape[0], pos)
    return s, t, batch, asg, tsets


def reference_loss(s, t, batch, asg, tsets, cfg: OTKDConfig):
    """Loop over images, instances and keypoints; geomloss on the unpadded sets (independent of bopkd)."""
    geomloss = pytest.importorskip("geomloss")
    L = geomloss.SamplesLoss(
        "sinkhorn", p=2, blur=cfg.blur, reach=cfg.reach, scaling=cfg.scaling, backend="tensorized"
    )
    per_img = []
    for b, objs in enumerate(batch["objects"]):
        Ainv = torch.tensor(np.linalg.inv(batch["meta"][b]["affine"]), dtype=torch.float64)
        W0, H0 = batch["meta"][b]["orig_size"]

        def norm(p, Ainv=Ainv, W0=W0, H0=H0):
            q = p.double() @ Ainv[:2, :2].T + Ainv[:2, 2]
            return q / torch.tensor([W0, H0], dtype=torch.float64)

        total, found = 0.0, False
        for o in range(len(objs["cls"])):
            c = int(objs["cls"][o])
            sel = (asg["pos_batch"] == b) & (asg["pos_obj"] == o)
            cells = asg["pos_cell"][sel]
            tc = torch.tensor(tsets[(b, o)], dtype=torch.long)
            if len(cells) == 0 or len(tc) == 0:
                continue
            found = True
            a = torch.sigmoid(s["cls_logits"][b, cells, c]).double().clamp(1e-3, 1 - 1e-3)
            bw = torch.sigmoid(t["cls_logits"][b, tc, c]).double()
            if cfg.shared_diameter:
                # The reference code's form: one geomloss call on the instance's 8 keypoint problems.
                x = torch.stack([norm(s["kpts"][b, cells, c, k]) for k in range(8)])
                y = torch.stack([norm(t["kpts"][b, tc, c, k]) for k in range(8)])
                total += float(L(a.expand(8, -1), x, bw.expand(8, -1), y).sum())
            else:
                for k in range(8):
                    x = norm(s["kpts"][b, cells, c, k])
                    y = norm(t["kpts"][b, tc, c, k])
                    total += float(L(a, x, bw, y))
        if found:
            per_img.append(total)
    return cfg.weight * (sum(per_img) / len(per_img) if per_img else 0.0)


@pytest.mark.parametrize("shared", [True, False])
def test_loss_matches_per_problem_geomloss_reference(kd_synth, shared):
    s, t, batch, asg, tsets = scene(kd_synth)
    cfg = OTKDConfig(num_cells=BIG, shared_diameter=shared)
    got = OTKD(cfg)(s, batch, t, assignment=asg)["kd_ot"]
    ref = reference_loss(s, t, batch, asg, tsets, cfg)
    assert ref > 0
    assert float(got) == pytest.approx(ref, rel=2e-3)


def test_zero_when_student_equals_teacher(kd_synth):
    # teacher confident cells = student positives, same keypoints and scores
    s, t, batch, asg, _ = scene(kd_synth, teacher_cells=lambda b, o, inside: inside[::2])
    t["kpts"] = s["kpts"].clone()
    t["cls_logits"] = s["cls_logits"].clone()
    out = OTKD(OTKDConfig(num_cells=BIG))(s, batch, t, assignment=asg)["kd_ot"]
    assert abs(float(out)) < 1e-6
    # ... and clearly positive once the student is displaced by 2 px
    s["kpts"] = s["kpts"] + 2.0
    assert float(OTKD(OTKDConfig(num_cells=BIG))(s, batch, t, assignment=asg)["kd_ot"]) > 1e-4


def test_invariant_to_cell_order(kd_synth):
    s, t, batch, asg, tsets = scene(kd_synth)
    m = OTKD(OTKDConfig(num_cells=BIG))
    base = float(m(s, batch, t, assignment=asg)["kd_ot"])
    # 1) shuffle the order of the positives
    shuffled = dict(asg)
    perm = torch.randperm(asg["num_pos"], generator=torch.Generator().manual_seed(3))
    for k in ("pos_batch", "pos_cell", "pos_cls", "pos_obj"):
        shuffled[k] = asg[k][perm]
    assert float(m(s, batch, t, assignment=shuffled)["kd_ot"]) == pytest.approx(base, rel=1e-5)
    # 2) move the teacher's predictions between its confident cells (same set of weighted points)
    t2 = {**t, "cls_logits": t["cls_logits"].clone(), "kpts": t["kpts"].clone()}
    for (b, o), cells in tsets.items():
        c = BOXES[b][o][0]
        cells_t = torch.tensor(cells)
        rolled = cells_t.roll(1)
        t2["cls_logits"][b, cells_t, c] = t["cls_logits"][b, rolled, c]
        t2["kpts"][b, cells_t, c] = t["kpts"][b, rolled, c]
    assert float(m(s, batch, t2, assignment=asg)["kd_ot"]) == pytest.approx(base, rel=1e-5)


def test_decreases_as_student_moves_toward_teacher(kd_synth):
    s, t, batch, asg, _ = scene(kd_synth, teacher_cells=lambda b, o, inside: inside[::2])
    t["cls_logits"] = s["cls_logits"].clone()
    target = t["kpts"]
    start = s["kpts"] + torch.tensor([6.0, -4.0])
    m = OTKD(OTKDConfig(num_cells=BIG))
    losses = []
    for lam in (1.0, 0.6, 0.3, 0.1, 0.0):
        s["kpts"] = target + lam * (start - target)
        losses.append(float(m(s, batch, t, assignment=asg)["kd_ot"]))
    assert all(a > b for a, b in zip(losses, losses[1:], strict=False)), losses
    assert losses[-1] < 1e-6


@pytest.mark.parametrize("detach", [False, True])
def test_gradients_reach_keypoints_and_scores(kd_synth, detach):
    s, t, batch, asg, _ = scene(kd_synth)
    s["kpts"].requires_grad_(True)
    s["cls_logits"].requires_grad_(True)
    t["kpts"].requires_grad_(True)
    loss = OTKD(OTKDConfig(num_cells=BIG, detach_scores=detach))(s, batch, t, assignment=asg)["kd_ot"]
    loss.backward()
    pb, pc, pk = asg["pos_batch"], asg["pos_cell"], asg["pos_cls"]
    gk = s["kpts"].grad
    assert torch.isfinite(gk).all()
    assert gk[pb, pc, pk].abs().sum() > 0
    mask = torch.ones_like(gk, dtype=torch.bool)
    mask[pb, pc, pk] = False
    assert gk[mask].abs().max() == 0  # only the positive cells' keypoints of their class
    gl = s["cls_logits"].grad
    if detach:
        assert gl is None or gl.abs().max() == 0
    else:
        assert torch.isfinite(gl).all() and gl[pb, pc, pk].abs().sum() > 0
    assert t["kpts"].grad is None  # the teacher is a constant


def test_images_without_teacher_detections_are_skipped(kd_synth):
    s, t, batch, asg, tsets = scene(kd_synth)
    m = OTKD(OTKDConfig(num_cells=BIG))
    # teacher finds nothing in image 1: the loss is image 0's alone (mean over images with detections)
    t["cls_logits"][1] = -8.0
    got = float(m(s, batch, t, assignment=asg)["kd_ot"])
    tsets1 = {k: (v if k[0] == 0 else []) for k, v in tsets.items()}
    assert got == pytest.approx(reference_loss(s, t, batch, asg, tsets1, m.cfg), rel=2e-3)
    # teacher finds nothing anywhere: 0, finite, and backward still works
    t["cls_logits"][:] = -8.0
    s["kpts"].requires_grad_(True)
    out = m(s, batch, t, assignment=asg)["kd_ot"]
    assert float(out.detach()) == 0.0 and torch.isfinite(out)
    out.backward()
    assert torch.isfinite(s["kpts"].grad).all()


def test_no_objects_and_no_positives(kd_synth):
    s, t, batch, asg, _ = scene(kd_synth)
    m = OTKD(OTKDConfig(num_cells=BIG))
    empty = kd_synth.batch(B=2, boxes=[[], []])
    no_asg = kd_synth.assignment(2, s["cls_logits"].shape[1], [])
    assert float(m(s, empty, t, assignment=no_asg)["kd_ot"]) == 0.0
    assert float(m(s, batch, t, assignment=no_asg)["kd_ot"]) == 0.0


def test_all_problems_in_one_batched_call(kd_synth, monkeypatch):
    s, t, batch, asg, tsets = scene(kd_synth)
    calls = []
    real = ot_mod.sinkhorn_divergence

    def spy(x, a, y, b, **kw):
        calls.append((tuple(x.shape), tuple(y.shape), kw))
        return real(x, a, y, b, **kw)

    monkeypatch.setattr(ot_mod, "sinkhorn_divergence", spy)
    OTKD(OTKDConfig(num_cells=BIG))(s, batch, t, assignment=asg)
    assert len(calls) == 1
    (xs, ys, kw) = calls[0]
    n_inst = 3
    n_s = max(int(((asg["pos_batch"] == b) & (asg["pos_obj"] == o)).sum()) for b, o in tsets)
    n_t = max(len(v) for v in tsets.values())
    assert xs == (8 * n_inst, n_s, 2) and ys == (8 * n_inst, n_t, 2)
    assert {k: kw[k] for k in ("blur", "reach", "scaling")} == {"blur": 0.001, "reach": 0.5, "scaling": 0.5}
    assert kw["diameter"].shape == (8 * n_inst,)  # one shared diameter per instance, as the reference code


def test_uniform_weights_option(kd_synth):
    s, t, batch, asg, tsets = scene(kd_synth)
    m = OTKD(OTKDConfig(num_cells=BIG, weighted=False))
    pr = m.problems(s, batch, t, asg)
    # every set's weights are 1/N on its points, 0 on padding
    for w in (pr.a, pr.b):
        n = (w > 0).sum(1, keepdim=True)
        assert torch.allclose(w.sum(1), torch.ones(w.shape[0]))
        assert torch.allclose(w[w > 0], (1.0 / n.expand_as(w))[w > 0])


def test_problem_points_are_normalised_original_pixels(kd_synth):
    s, t, batch, asg, tsets = scene(kd_synth)
    pr = OTKD(OTKDConfig(num_cells=BIG)).problems(s, batch, t, asg)
    # first positive of image 0 / instance 0: input px -> original px (inverse affine) -> / (W, H)
    i = int(torch.nonzero((asg["pos_batch"] == 0) & (asg["pos_obj"] == 0))[0])
    p_in = s["kpts"][0, asg["pos_cell"][i], asg["pos_cls"][i]].double().numpy()  # (8, 2)
    A = AFFINES[0]
    p_orig = (np.linalg.inv(A) @ np.c_[p_in, np.ones(8)].T).T[:, :2]
    expect = p_orig / np.array(ORIG)
    # it is one of the points of problem 0 (slot order follows the positives' order)
    assert np.allclose(pr.x[0, 0].numpy(), expect, atol=1e-6)
    assert pr.img.tolist() == [0, 0, 1]


def test_orig_normalisation_matches_numpy(kd_synth):
    batch = kd_synth.batch(B=2, boxes=BOXES, affines=AFFINES, orig_size=ORIG)
    M = orig_normalisation(batch, torch.device("cpu"), torch.float64)
    pts = torch.tensor([[[10.0, 20.0], [30.0, 5.0]], [[1.0, 2.0], [60.0, 50.0]]], dtype=torch.float64)
    got = normalise_points(pts, torch.tensor([0, 1]), M)
    for b in range(2):
        q = (np.linalg.inv(AFFINES[b]) @ np.c_[pts[b].numpy(), np.ones(2)].T).T[:, :2] / np.array(ORIG)
        assert np.allclose(got[b].numpy(), q)


def _reference_teacher_cells(t_logits, t_kpts, anchors, inst_img, inst_cls, region, th, num, lam):
    """Per instance, WDR's inference selection with Python loops (the rule of postprocess_kd.py)."""
    starts = anchors["level_start"]
    L = len(anchors["strides"])
    sizes = [float(anchors["sizes"][starts[lv]]) for lv in range(L)]
    out = set()
    for g in range(len(inst_img)):
        b, c = int(inst_img[g]), int(inst_cls[g])
        sc = torch.sigmoid(t_logits[b, :, c]).numpy()
        cand = (sc > th) & region[g].numpy()
        if not cand.any():
            continue
        best = int(np.argmax(np.where(cand, sc, -1)))
        k = t_kpts[b, best, c].numpy()
        box = float(max(np.ptp(k[:, 0]), np.ptp(k[:, 1])))
        d = np.log2(max(box, 1.0) / np.array(sizes))
        w = np.exp(-lam * d * d)
        nk = np.floor(num * w / w.sum() + 0.5).astype(int)
        for lv in range(L):
            idx = [i for i in range(starts[lv], starts[lv + 1]) if cand[i]]
            idx.sort(key=lambda i: -sc[i])
            out |= {(g, i) for i in idx[: nk[lv]]}
    return out


def test_teacher_cell_selection_matches_loop_reference(kd_synth):
    torch.manual_seed(0)
    _, t, batch, asg, _ = scene(kd_synth)
    # scores everywhere, many above threshold; a small budget so that the per-level quota matters
    t["cls_logits"] = torch.randn_like(t["cls_logits"]) * 2.0
    inst = flatten_instances(batch, torch.device("cpu"))
    from bopkd.losses.kd.gather import instance_region

    region = instance_region(batch, inst, t["anchors"]["centers"], (64, 64))
    for num in (3, 10):
        g, c, sc = select_teacher_cells(t["cls_logits"], t["kpts"], t["anchors"], inst, region, 0.1, num, 1.0)
        got = set(zip(g.tolist(), c.tolist(), strict=True))
        ref = _reference_teacher_cells(
            t["cls_logits"], t["kpts"], t["anchors"], inst.img, inst.cls, region, 0.1, num, 1.0
        )
        assert got == ref and len(got) > 0
        assert torch.allclose(sc, torch.sigmoid(t["cls_logits"][inst.img[g], c, inst.cls[g]]))
        assert region[g, c].all()


def test_teacher_cells_restricted_to_their_instance(kd_synth):
    # two instances of the same class: each one's teacher set lies inside its own mask
    boxes = [[(0, 0, 0, 24, 24), (0, 40, 40, 64, 64)]]
    batch = kd_synth.batch(B=1, boxes=boxes)
    t = kd_synth.outputs(B=1)
    t["cls_logits"][:] = 3.0
    inst = flatten_instances(batch, torch.device("cpu"))
    from bopkd.losses.kd.gather import instance_region

    region = instance_region(batch, inst, t["anchors"]["centers"], (64, 64))
    g, c, _ = select_teacher_cells(t["cls_logits"], t["kpts"], t["anchors"], inst, region, 0.1, BIG, 1.0)
    ctr = t["anchors"]["centers"][c]
    for gi, (_, x0, y0, x1, y1) in enumerate(boxes[0]):
        pts = ctr[g == gi]
        assert len(pts) > 0
        assert ((pts[:, 0] >= x0) & (pts[:, 0] < x1) & (pts[:, 1] >= y0) & (pts[:, 1] < y1)).all()


def test_needs_teacher_and_validates_config(kd_synth):
    s, _, batch, asg, _ = scene(kd_synth)
    with pytest.raises(BopkdError, match="needs a teacher"):
        OTKD()(s, batch, None)
    with pytest.raises(BopkdError, match="teacher_region"):
        OTKDConfig(teacher_region="box").validate()
    with pytest.raises(BopkdError, match="scaling"):
        OTKDConfig(scaling=1.5).validate()


def test_teacher_selection_equals_inference_decode_for_one_instance_per_class(kd_synth):
    # with one instance per class and no region restriction, the teacher's cells are those of inference
    decode = pytest.importorskip("bopkd.models.decode").decode
    _, t, batch, asg, _ = scene(kd_synth)
    t["cls_logits"] = torch.randn_like(t["cls_logits"], generator=torch.Generator().manual_seed(7)) * 2.0
    inst = flatten_instances(batch, torch.device("cpu"))
    g, c, sc = select_teacher_cells(t["cls_logits"], t["kpts"], t["anchors"], inst, None, 0.1, 10, 1.0)
    dets = decode(t, score_th=0.1, num_cells=10, positive_lambda=1.0)
    for gi in range(inst.n):
        b, k = int(inst.img[gi]), int(inst.cls[gi])
        assert sorted(c[g == gi].tolist()) == sorted(dets[b][k].cells.tolist())


def test_teacher_pnp_skips_instances_without_a_teacher_pose(kd_synth, monkeypatch):
    import bopkd.losses.kd.ot_kd as ot_kd

    s, t, batch, asg, _ = scene(kd_synth)
    assert OTKD(OTKDConfig(num_cells=BIG)).problems(s, batch, t, asg).a.shape[0] == 3
    seen = []

    def fail_instance_0(
        batch, inst, g, pts
    ):  # stands in for the PnP test (tests/losses/kd/test_teacher_pnp.py)
        seen.append(pts.shape)
        return g != 0

    monkeypatch.setattr(ot_kd, "teacher_pnp_keep", fail_instance_0)
    pr = OTKD(OTKDConfig(num_cells=BIG, teacher_pnp=True)).problems(s, batch, t, asg)
    assert seen and seen[0][1:] == (8, 2)
    assert pr.a.shape[0] == 2 and pr.img.tolist() == [0, 1]


def test_defaults_are_the_papers_method():
    cfg = OTKDConfig()
    assert (cfg.weight, cfg.detach_scores, cfg.teacher_region, cfg.teacher_pnp) == (5.0, False, "all", False)
