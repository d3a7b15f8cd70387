"""PoseLoss: named, weighted terms; zero keypoint loss for GT keypoints; normalisation by positives;
no-positive batches; config validation."""

from __future__ import annotations

import pytest
import torch

from bopkd.config import from_dict
from bopkd.errors import BopkdError
from bopkd.geometry.projection import project_points_torch
from bopkd.losses.focal import focal_loss
from bopkd.losses.targets import assign_targets
from bopkd.losses.task import LossConfig, PoseLoss
from bopkd.models.posenet import ModelConfig, PoseNet

H = W = 128
K = torch.tensor([[200.0, 0.0, 64.0], [0.0, 200.0, 64.0], [0.0, 0.0, 1.0]])


def _batch(n_img: int = 2) -> dict:
    bits = torch.tensor([[(i >> 2) & 1, (i >> 1) & 1, i & 1] for i in range(8)], dtype=torch.bool)
    c3 = torch.where(bits, torch.tensor([30.0, 20.0, 25.0]), torch.tensor([-30.0, -20.0, -25.0]))
    objects = []
    for i in range(n_img):
        t = torch.tensor([[5.0 * i, -3.0, 400.0 + 50 * i]])
        R = torch.eye(3)[None]
        c2 = project_points_torch(c3[None], K[None], R, t)
        lo, hi = c2[0].amin(0).long(), c2[0].amax(0).long()
        mask = torch.zeros(1, H, W, dtype=torch.bool)
        mask[0, lo[1] : hi[1], lo[0] : hi[0]] = True
        objects.append(
            {
                "cls": torch.tensor([i % 2]),
                "obj_id": torch.tensor([1 + i % 2]),
                "R": R,
                "t": t,
                "corners_3d": c3[None],
                "corners_2d": c2,
                "mask_visib": mask,
                "diameter": torch.tensor([float(torch.linalg.norm(c3[7] - c3[0]))]),
            }
        )
    return {
        "images": torch.zeros(n_img, 3, H, W),
        "K": K[None].repeat(n_img, 1, 1),
        "objects": objects,
        "meta": [{}] * n_img,
    }


def _outputs(batch, seed=0):
    anchors = PoseNet(ModelConfig(obj_ids=[1, 2], backbone="tiny-cpu")).anchors((H, W))
    g = torch.Generator().manual_seed(seed)
    B, A = len(batch["objects"]), anchors["centers"].shape[0]
    logits = torch.randn(B, A, 2, generator=g).requires_grad_(True)
    kpts = (
        anchors["centers"][None, :, None, None, :] + 10 * torch.randn(B, A, 2, 8, 2, generator=g)
    ).requires_grad_(True)
    return {"cls_logits": logits, "kpts": kpts, "anchors": anchors, "image_size": (H, W)}


def test_named_weighted_terms_and_normalisation():
    batch = _batch()
    out = _outputs(batch)
    lf = PoseLoss()
    losses = lf(out, batch, generator=torch.Generator().manual_seed(0))
    assert set(losses) == {"loss_cls", "loss_kpt"}
    asg = assign_targets(out, batch, lf.cfg, torch.Generator().manual_seed(0))  # the cells lf sampled
    assert asg["num_pos"] > 0
    # default reduction "sum" (the reference code's); "mean_per_positive" divides both terms by P
    torch.testing.assert_close(losses["loss_cls"], 0.1 * focal_loss(out["cls_logits"], asg["labels"]))
    per_pos = PoseLoss(LossConfig(reduction="mean_per_positive"))(out, batch, assignment=asg)
    for k in ("loss_cls", "loss_kpt"):
        torch.testing.assert_close(per_pos[k], losses[k] / asg["num_pos"])
    doubled = PoseLoss(LossConfig(weight_cls=0.2, weight_kpt=3.0))(out, batch, assignment=asg)
    torch.testing.assert_close(doubled["loss_cls"], 2 * losses["loss_cls"])
    torch.testing.assert_close(doubled["loss_kpt"], 3 * losses["loss_kpt"])
    sum(losses.values()).backward()
    assert out["kpts"].grad.abs().sum() > 0 and out["cls_logits"].grad.abs().sum() > 0


def test_keypoint_loss_zero_when_positive_cells_predict_the_gt_projection():
    batch = _batch()
    out = _outputs(batch)
    asg = assign_targets(out, batch, LossConfig())
    kpts = out["kpts"].detach().clone()
    for b, c, k, o in zip(asg["pos_batch"], asg["pos_cell"], asg["pos_cls"], asg["pos_obj"], strict=True):
        kpts[b, c, k] = batch["objects"][int(b)]["corners_2d"][int(o)]
    out["kpts"] = kpts
    losses = PoseLoss()(out, batch, assignment=asg)
    assert float(losses["loss_kpt"].detach()) < 1e-6
    assert float(losses["loss_cls"].detach()) > 0


def test_no_positives_gives_zero_keypoint_loss_with_gradient():
    batch = _batch(1)
    batch["objects"][0]["mask_visib"][:] = False
    out = _outputs(batch)
    losses = PoseLoss()(out, batch)
    assert float(losses["loss_kpt"].detach()) == 0.0
    sum(losses.values()).backward()
    assert out["kpts"].grad is not None


def test_loss_config_validation():
    assert from_dict(LossConfig, {"weight_cls": 0.5}, path="loss").weight_cls == 0.5
    with pytest.raises(BopkdError, match="'loss.wieght_kpt' .*is unknown: did you mean 'weight_kpt'"):
        from_dict(LossConfig, {"weight_cls": 0.5, "wieght_kpt": 1}, path="loss")
    with pytest.raises(BopkdError, match="positive_num"):
        from_dict(LossConfig, {"positive_num": 0}, path="loss")
    with pytest.raises(BopkdError, match="weight_kpt"):
        from_dict(LossConfig, {"weight_kpt": -1.0}, path="loss")
    assert LossConfig().reduction == "sum"
    with pytest.raises(
        BopkdError, match="'loss.reduction'.*'mean' is not allowed.*'sum', 'mean_per_positive'"
    ):
        from_dict(LossConfig, {"reduction": "mean"}, path="loss")


def test_float32_losses_from_low_precision_outputs_under_autocast():
    batch = _batch()
    out = _outputs(batch)
    ref = PoseLoss()(out, batch, generator=torch.Generator().manual_seed(0))
    low = dict(out, cls_logits=out["cls_logits"].bfloat16(), kpts=out["kpts"].bfloat16())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = PoseLoss()(low, batch, generator=torch.Generator().manual_seed(0))
    for k in ref:
        assert got[k].dtype == torch.float32
        torch.testing.assert_close(got[k], ref[k], rtol=0.05, atol=1e-3)
