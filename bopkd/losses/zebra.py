"""ZebraPose's training loss: L1 on the visible mask + hierarchy-adaptive weighted BCE on the code bits.

Su et al., "ZebraPose: Coarse to Fine Surface Encoding for 6DoF Object Pose Estimation" (CVPR 2022), Sec. 3.3
(mask and code losses) and Sec. 3.4 (hierarchical training), as implemented in suyz526/ZebraPose
``zebrapose/model/BinaryCodeNet.py`` (``MaskLoss``, ``BinaryCodeLoss``, ``HammingLoss``,
``BinaryLossWeighted``) and ``zebrapose/train.py`` (``loss = binary_loss_weight * loss_b + loss_m``,
``binary_loss_weight = 3`` in every config). With M the code mask (B, 1, H, W) in {0, 1}, y_i the target of
bit i, z_i its logit and p_i = sigmoid(z_i):

* mask term (``MaskLoss``): ``L_mask = mean over B, H, W of |sigmoid(mask_logit) - visible_mask|``;
* bit-error histogram (``HammingLoss``; hard decisions, hence no gradient):
  ``h_i = sum_{b,p} M |[p_i > 0.5] - y_i| / (sum_{b,p} M + 1)``, then the running average of
  ``BinaryCodeLoss.forward``: ``H_i = h_i`` at the first step, ``H_i <- 0.95 H_i + 0.05 h_i`` after;
* bit weights (``BinaryCodeLoss.forward``, "soft bin weight decrease"):
  ``w_i = exp(sigma * min(H_i, 0.51 - H_i))`` with sigma = 3; they are detached (no gradient), so a bit that
  is mostly right (H_i -> 0) or hopeless (H_i -> 0.5, a fine bit early in training) gets weight ~1 and the
  bits being learnt (H_i ~ 0.25) the most, which trains the coarse bits first;
* code term (``BinaryLossWeighted``): ``L_code = sum_i w_i L_i / sum_i w_i`` with L_i the BCE of bit i.

Which pixels the code term covers (``ZebraLossConfig.code_mask``, ``code_reduction``). The defaults are the
reference code's (every ZebraPose config sets ``mask_binary_code_loss = True``): the network's own binarised
mask ``M = [sigmoid(mask_logit) > 0.5]`` (``train.py``: ``from_output_to_class_mask``), used both for the
histogram and for the code term, the latter by multiplying the logits by it and averaging the BCE over all
B x H x W pixels, ``L_i = mean_{b,p} BCE(M z_i, y_i)`` (``BinaryLossWeighted``), so that a pixel outside M adds a
constant (the BCE of logit 0) and no gradient: ``code_mask="pred"``, ``code_reduction="all_pixels"``. The
alternative ``code_mask="gt"``, ``code_reduction="mask"`` uses the ground-truth visible mask and the mean over
its pixels, ``L_i = sum M BCE_i / max(sum M, 1)``, which does not depend on how well the mask is predicted.

The running histogram is training state: it is saved in the module's state dict (``get_extra_state``), which
the trainer checkpoints (``stateful = True``), so that a resumed run weighs the bits as an uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from bopkd.errors import BopkdError

CODE_MASKS = ("gt", "pred")
CODE_REDUCTIONS = ("mask", "all_pixels")


@dataclass
class ZebraLossConfig:
    """Settings of :class:`ZebraLoss` (defaults: ZebraPose's code, see the module docstring).

    Attributes:
        code_weight: factor of the code term (``binary_loss_weight`` 3).
        mask_weight: factor of the mask term (1).
        sigma: sharpness of the bit weights (3, ``exp(hist_soft * 3)``).
        hist_cap: the ``0.51`` of ``min(H, 0.51 - H)``.
        hist_momentum: weight of the new histogram in the running average (0.05).
        weighted: use the histogram weights (``use_histgramm_weighted_binary_loss``); False: plain mean.
        code_mask: "pred" (the binarised predicted mask, the reference code's) or "gt" (the visible mask given).
        code_reduction: "all_pixels" (the reference code's mean of the BCE of the masked logits over every
            pixel) or "mask" (mean over the mask's pixels).
    """

    code_weight: float = 3.0
    mask_weight: float = 1.0
    sigma: float = 3.0
    hist_cap: float = 0.51
    hist_momentum: float = 0.05
    weighted: bool = True
    code_mask: str = "pred"
    code_reduction: str = "all_pixels"

    def validate(self, source: str = "the zebra loss config") -> ZebraLossConfig:
        """Check the values; raise :class:`BopkdError` naming ``source`` and the fix. Returns self."""
        for name in ("code_weight", "mask_weight", "sigma"):
            if not getattr(self, name) >= 0:
                raise BopkdError(f"{source}: loss.{name} = {getattr(self, name)} must be >= 0")
        if not 0.0 < self.hist_cap <= 1.0:
            raise BopkdError(f"{source}: loss.hist_cap = {self.hist_cap} must be in (0, 1] (ZebraPose: 0.51)")
        if not 0.0 < self.hist_momentum <= 1.0:
            raise BopkdError(f"{source}: loss.hist_momentum = {self.hist_momentum} must be in (0, 1] (0.05)")
        if self.code_mask not in CODE_MASKS:
            raise BopkdError(
                f"{source}: loss.code_mask {self.code_mask!r}: use one of {', '.join(CODE_MASKS)}"
            )
        if self.code_reduction not in CODE_REDUCTIONS:
            raise BopkdError(
                f"{source}: loss.code_reduction {self.code_reduction!r}: use one of {', '.join(CODE_REDUCTIONS)}"
            )
        return self


def bit_error_histogram(code_logits: torch.Tensor, bits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(n,) fraction of wrong hard bits inside ``mask``: ``sum M |[z > 0] - y| / (sum M + 1)``.

    code_logits (B, n, H, W), bits (B, n, H, W) in {0, 1}, mask (B, 1, H, W) in {0, 1}. ``z > 0`` is
    ``sigmoid(z) > 0.5``; ZebraPose ``HammingLoss.forward`` (the ``+ 1`` included). No gradient.
    """
    with torch.no_grad():
        m = mask.float()
        wrong = ((code_logits > 0).float() - bits.float()).abs() * m
        return wrong.sum((0, 2, 3)) / (m.sum() + 1.0)


def bit_weights(hist: torch.Tensor, sigma: float = 3.0, cap: float = 0.51) -> torch.Tensor:
    """(n,) weights ``exp(sigma * min(H, cap - H))`` of a bit-error histogram H (n,) (ZebraPose
    ``BinaryCodeLoss.forward``), detached."""
    h = hist.detach()
    return torch.exp(sigma * torch.minimum(h, cap - h))


class ZebraLoss(nn.Module):
    """``forward(out, mask, bits) -> {"loss_mask", "loss_code"}``, each already multiplied by its weight.

    Args of forward:
        out: the :class:`~bopkd.models.dense.DensePoseNet` dict: ``mask_logits`` (B, 1, H, W), ``code_logits``
            (B, n, H, W).
        mask: (B, H, W) or (B, 1, H, W) visible mask, bool or {0, 1}.
        bits: (B, n, H, W) target code bits, uint8/bool/float in {0, 1}, bit 0 the coarsest.

    State: ``histogram`` (n,) the running bit-error histogram (None before the first training step); it is
    updated in training mode only and is saved in the state dict as extra state.
    """

    #: The trainer checkpoints this module's state dict although it has no trainable parameters.
    stateful = True

    def __init__(self, cfg: ZebraLossConfig | None = None):
        super().__init__()
        self.cfg = (cfg if cfg is not None else ZebraLossConfig()).validate()
        self.histogram: torch.Tensor | None = None

    def get_extra_state(self) -> dict:
        return {"histogram": None if self.histogram is None else self.histogram.detach().cpu().clone()}

    def set_extra_state(self, state: dict) -> None:
        hist = state.get("histogram") if isinstance(state, dict) else None
        self.histogram = None if hist is None else torch.as_tensor(hist).float()

    def _update_histogram(self, h_new: torch.Tensor) -> torch.Tensor:
        if self.histogram is None or self.histogram.shape != h_new.shape:
            hist = h_new
        else:
            a = self.cfg.hist_momentum
            hist = a * h_new + (1.0 - a) * self.histogram.to(h_new.device)
        if self.training:
            self.histogram = hist.detach()
        return hist

    def forward(self, out: dict, mask: torch.Tensor, bits: torch.Tensor) -> dict[str, torch.Tensor]:
        mask_logits, code_logits = out["mask_logits"].float(), out["code_logits"].float()
        B, n, H, W = code_logits.shape
        gt = mask.reshape(B, 1, H, W).float() if mask.numel() == B * H * W else None
        if gt is None or tuple(bits.shape) != (B, n, H, W) or tuple(mask_logits.shape) != (B, 1, H, W):
            raise BopkdError(
                f"zebra loss: mask {tuple(mask.shape)}, bits {tuple(bits.shape)} and mask_logits "
                f"{tuple(mask_logits.shape)} do not match code_logits {(B, n, H, W)}: build targets at the "
                "network's output size and bit count"
            )
        y = bits.float()
        loss_mask = (torch.sigmoid(mask_logits) - gt).abs().mean()
        m = gt if self.cfg.code_mask == "gt" else (mask_logits.detach() > 0).float()
        if self.cfg.code_reduction == "mask":
            bce = F.binary_cross_entropy_with_logits(code_logits, y, reduction="none")
            per_bit = (bce * m).sum((0, 2, 3)) / m.sum().clamp(min=1.0)
        else:
            bce = F.binary_cross_entropy_with_logits(code_logits * m, y, reduction="none")
            per_bit = bce.mean((0, 2, 3))
        if self.cfg.weighted:
            hist = self._update_histogram(bit_error_histogram(code_logits, y, m))
            w = bit_weights(hist, self.cfg.sigma, self.cfg.hist_cap)
            loss_code = (per_bit * w).sum() / w.sum()
        else:
            loss_code = per_bit.mean()
        return {
            "loss_mask": self.cfg.mask_weight * loss_mask,
            "loss_code": self.cfg.code_weight * loss_code,
        }
