"""Decoding: threshold, per-level quota from the size of the most confident cell, fixed top-k per level."""

from __future__ import annotations

import torch

from bopkd.models.decode import decode
from bopkd.models.levels import level_quota
from bopkd.models.posenet import ModelConfig, PoseNet


def _outputs(size=(128, 128), C=3, B=2):
    anchors = PoseNet(ModelConfig(obj_ids=list(range(1, C + 1)), backbone="tiny-cpu")).anchors(size)
    A = anchors["centers"].shape[0]
    logits = torch.full((B, A, C), -10.0)
    kpts = anchors["centers"][None, :, None, None, :].repeat(B, 1, C, 8, 1).clone()
    return {"cls_logits": logits, "kpts": kpts, "anchors": anchors, "image_size": size}


def _box_kpts(x0, y0, side):
    return torch.tensor(
        [[x0 + side * ((i >> 2) & 1), y0 + side * ((i >> 1) & 1)] for i in range(8)], dtype=torch.float32
    )


def test_threshold_quota_and_top_scores():
    out = _outputs()
    a = out["anchors"]
    s0, s1 = a["level_start"][0], a["level_start"][1]
    # class 1 in image 0: 20 candidate cells on P3 and 6 on P4 with distinct scores, keypoints of a 64 px box
    p3 = torch.arange(s0, s0 + 20)
    p4 = torch.arange(s1, s1 + 6)
    scores = torch.linspace(0.2, 0.95, 26)
    out["cls_logits"][0, torch.cat([p3, p4]), 1] = torch.logit(scores)
    out["kpts"][0, :, 1] = _box_kpts(30, 30, 64)
    # class 2 in image 0 stays just below the threshold
    out["cls_logits"][0, p3, 2] = torch.logit(torch.tensor(0.099))
    res = decode(out, score_th=0.1)
    assert len(res) == 2 and res[1] == {}
    assert set(res[0]) == {1}
    det = res[0][1]
    quota = level_quota(torch.tensor([64.0]), torch.tensor([32.0, 64, 128, 256, 512]))[0].tolist()
    assert quota == [2, 6, 2, 0, 0]
    assert det.levels.tolist() == [0, 0, 1, 1, 1, 1, 1, 1]
    # the 2 best of P3 (cells 18, 19) and all 6 of P4, best first within each level
    assert det.cells.tolist() == [s0 + 19, s0 + 18, *[s1 + i for i in (5, 4, 3, 2, 1, 0)]]
    torch.testing.assert_close(det.scores, torch.sigmoid(out["cls_logits"][0, det.cells, 1]))
    torch.testing.assert_close(det.kpts, out["kpts"][0, det.cells, 1])
    assert len(det) == 8


def test_fixed_topk_per_level_and_higher_threshold():
    out = _outputs()
    a = out["anchors"]
    cells = torch.tensor([a["level_start"][lv] + j for lv in range(5) for j in range(1 if lv == 4 else 3)])
    out["cls_logits"][1, cells, 0] = torch.logit(torch.linspace(0.3, 0.9, len(cells)))
    det = decode(out, topk_per_level=2)[1][0]
    assert torch.bincount(det.levels, minlength=5).tolist() == [2, 2, 2, 2, 1]
    det = decode(out, score_th=0.8, topk_per_level=5)[1][0]
    assert (det.scores > 0.8).all() and len(det) == int((torch.linspace(0.3, 0.9, len(cells)) > 0.8).sum())
