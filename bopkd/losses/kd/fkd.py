"""Feature-based distillation of Zhang & Ma (FKD), the feature-distillation baseline of Guo et al.

Zhang & Ma, "Improve Object Detection with Feature-based Knowledge Distillation: Towards Accurate and
Efficient Detectors", ICLR 2021 (code: supplementary material of the OpenReview submission, reproduced
in mmrazor's ``FBKDLoss`` / ``FBKD*Connector``). On every pyramid level both networks have (matched by
stride), with student map S (B, C_s, H, W), teacher map T (B, C_t, H, W) and a 1x1 adapter f (C_s ->
C_t, initialised to the identity when C_s == C_t):

* attention (Sec. 3.1): spatial ``G_S(X) = mean_c |X_c|`` (B, H, W) and channel
  ``G_C(X) = mean_hw |X_hw|`` (B, C) maps, sharpened with temperature T = 0.5 into
  ``A_S = HW * softmax(G_S / T)`` and ``A_C = C * softmax(G_C / T)`` (each sums to HW, resp. C);
  the student's are computed on f(S) so that both have C_t channels;
* attention-guided feature loss: masks ``M_S = (A_S(f(S)) + A_S(T)) / 2``, ``M_C`` likewise (detached,
  as the reference code), and ``L_feat = (sum_{b,c,h,w} (T - f(S))^2 M_S M_C)^(1/2)``;
* attention transfer loss: ``L_att = l1(A_S(f(S)), A_S(T)) + l1(A_C(f(S)), A_C(T))`` with l1 the mean
  absolute difference (the paper's L1 loss);
* non-local distillation (Sec. 3.2): dot-product non-local blocks (Wang et al., "Non-local Neural
  Networks", CVPR 2018) on the student and on the teacher map (both trained with the student, as in the
  reference code, their output convs zero-initialised), a 1x1 adapter on the student's, and
  ``L_nl = ||r_T - g(r_S)||_2`` over the batch. Keys and values are max-pooled (mmrazor's
  ``sub_sample`` with per-level ``maxpool_stride``; here ``32 / stride`` by default) to keep it cheap.

The terms are summed over levels and weighted by alpha = 7e-5 (feature), beta = 4e-3 (attention) and
gamma = 7e-5 (non-local), the weights of the reference code (``kd_feat_loss * 7e-5``, channel/spatial
losses ``* 4e-3``, ``kd_nonlocal_loss * 7e-5``). Those weights are relative to detection losses that
mmdetection normalises by the number of positive samples (RetinaNet's focal and box losses are sums
divided by the positive count), i.e. to task terms in the units of ``"mean_per_positive"``
(:mod:`bopkd.losses.task`). Under the reference's ``"sum"`` reduction the task terms are P times
larger (P = positive cells of the batch), so the FKD terms are multiplied by P as well: the ratio of
FKD to the task loss is then Zhang & Ma's under both reductions. The reference code's attention loss compares
channel/spatial mean-pooled maps through a linear / 3x3 adapter with an L2 norm; this implementation
follows the paper's Eq. 6 (an L1 between the attention maps) instead, and uses the
channel mask in the feature loss as the paper's equation does (the code multiplies by the spatial mask
only; set ``channel_mask: false`` for that).

Adapters and non-local blocks are parameters of this module: they must join the optimiser.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from bopkd.errors import BopkdError
from bopkd.losses.kd.base import KDMethod, require_teacher, zero_like_graph
from bopkd.losses.kd.registry import register_kd

FEATURES = ("fpn", "backbone")
_EPS = 1e-12


@dataclass
class FKDConfig:
    """Options of FKD (defaults: Zhang & Ma's code).

    Attributes:
        weight: multiplier of the three terms (``--kd-weight``), 1 (times P under the ``"sum"`` task
            reduction, see the module docstring).
        feat_weight: alpha, weight of the attention-guided feature loss, 7e-5.
        att_weight: beta, weight of the attention transfer loss, 4e-3.
        nonlocal_weight: gamma, weight of the non-local loss, 7e-5.
        temperature: T of the attention softmax, 0.5.
        features: "fpn" (the FPN maps, as the reference distils the neck) or "backbone".
        channel_mask: multiply the feature loss by the channel mask too (the paper's equation).
        nonlocal_reduction: non-local inner width = channels / this, 2.
        nonlocal_pool: max-pool factor of keys/values; None = max(1, 32 // stride) per level.
    """

    weight: float = 1.0
    feat_weight: float = 7e-5
    att_weight: float = 4e-3
    nonlocal_weight: float = 7e-5
    temperature: float = 0.5
    features: str = "fpn"
    channel_mask: bool = True
    nonlocal_reduction: int = 2
    nonlocal_pool: int | None = None

    def validate(self, source: str = "the kd config") -> FKDConfig:
        def bad(msg: str) -> BopkdError:
            return BopkdError(f"{source}: {msg}")

        for k in ("weight", "feat_weight", "att_weight", "nonlocal_weight"):
            if not getattr(self, k) >= 0:
                raise bad(f"fkd {k} = {getattr(self, k)} must be >= 0")
        if not self.temperature > 0:
            raise bad(f"fkd temperature = {self.temperature} must be > 0")
        if self.features not in FEATURES:
            raise bad(f"fkd features {self.features!r}: use one of {', '.join(FEATURES)}")
        if self.nonlocal_reduction < 1:
            raise bad(f"fkd nonlocal_reduction = {self.nonlocal_reduction} must be >= 1")
        if self.nonlocal_pool is not None and self.nonlocal_pool < 1:
            raise bad(f"fkd nonlocal_pool = {self.nonlocal_pool} must be >= 1 (or null for automatic)")
        return self


def spatial_attention(x: torch.Tensor, temperature: float) -> torch.Tensor:
    """``HW * softmax_hw(mean_c |x| / T)``: (B, C, H, W) -> (B, 1, H, W), summing to H*W per image."""
    B, _, H, W = x.shape
    g = x.abs().mean(1).reshape(B, H * W)
    return (torch.softmax(g / temperature, dim=1) * (H * W)).reshape(B, 1, H, W)


def channel_attention(x: torch.Tensor, temperature: float) -> torch.Tensor:
    """``C * softmax_c(mean_hw |x| / T)``: (B, C, H, W) -> (B, C, 1, 1), summing to C per image."""
    B, C = x.shape[:2]
    g = x.abs().mean((2, 3))
    return (torch.softmax(g / temperature, dim=1) * C).reshape(B, C, 1, 1)


def _l2(x: torch.Tensor) -> torch.Tensor:
    """sqrt(sum x) with a finite gradient at 0."""
    return torch.sqrt(x.sum() + _EPS)


class NonLocal2d(nn.Module):
    """Dot-product non-local block (Wang et al., CVPR 2018), ``x + W(y)`` with W zero-initialised.

    ``y_i = (1/K) sum_j (theta(x_i) . phi(x_j)) g(x_j)`` over the K positions of the max-pooled
    (``pool`` x ``pool``) maps phi(x), g(x).

    forward(x (B, C, H, W)) -> (B, C, H, W).
    """

    def __init__(self, channels: int, reduction: int = 2, pool: int = 1):
        super().__init__()
        inner = max(1, channels // reduction)
        self.theta = nn.Conv2d(channels, inner, 1)
        self.phi = nn.Conv2d(channels, inner, 1)
        self.g = nn.Conv2d(channels, inner, 1)
        self.out = nn.Conv2d(inner, channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.pool = int(pool)

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        kh, kw = min(self.pool, x.shape[2]), min(self.pool, x.shape[3])
        if kh == 1 and kw == 1:
            return x
        return F.max_pool2d(x, (kh, kw), (kh, kw), ceil_mode=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, _, H, W = x.shape
        q = self.theta(x).flatten(2).transpose(1, 2)  # (B, HW, i)
        k = self._pool(self.phi(x)).flatten(2)  # (B, i, K)
        v = self._pool(self.g(x)).flatten(2).transpose(1, 2)  # (B, K, i)
        y = (q @ k) @ v / k.shape[-1]  # (B, HW, i)
        return x + self.out(y.transpose(1, 2).reshape(B, -1, H, W))


def _adapter(cin: int, cout: int) -> nn.Conv2d:
    conv = nn.Conv2d(cin, cout, 1)
    if cin == cout:
        with torch.no_grad():
            conv.weight.copy_(torch.eye(cin).reshape(cin, cin, 1, 1))
            conv.bias.zero_()
    return conv


def feature_strides(feats: list[torch.Tensor], out: dict, which: str) -> list[int]:
    """Stride of each map of ``out[which]``: the anchors' strides for FPN maps, else from the map size."""
    if which == "features" and "anchors" in out and len(out["anchors"]["strides"]) == len(feats):
        return [int(s) for s in out["anchors"]["strides"]]
    H, W = out.get("image_size", (None, None))
    if W is None:
        raise BopkdError("fkd: the model outputs carry no 'image_size' to infer feature strides from")
    return [2 ** round(math.log2(max(W, 1) / f.shape[-1])) for f in feats]


def feature_channels(model: nn.Module, features: str = "fpn") -> dict[int, int]:
    """{stride: channels} of a :class:`~bopkd.models.posenet.PoseNet`'s FPN or backbone maps."""
    if features == "fpn" and hasattr(model, "strides") and hasattr(model, "cfg"):
        return {int(s): int(model.cfg.fpn_channels) for s in model.strides}
    bb = getattr(model, "backbone", None)
    if features == "backbone" and bb is not None and hasattr(bb, "channels") and hasattr(bb, "reductions"):
        return {int(r): int(c) for r, c in zip(bb.reductions, bb.channels, strict=True)}
    raise BopkdError(
        f"fkd: cannot read the {features} feature channels of {type(model).__name__}: pass them explicitly"
    )


def network_channels(model: nn.Module | None, features: str) -> dict[int, int]:
    """{stride: channels} of a network FKD distils (:func:`feature_channels`); a one-line error without one."""
    if model is None:
        raise BopkdError(
            "fkd needs both the student and the teacher model to size its adapters (pass --teacher CHECKPOINT)"
        )
    return feature_channels(model, features)


@register_kd(
    "fkd",
    config=FKDConfig,
    summary="feature distillation of Zhang & Ma (ICLR 2021): attention-guided and non-local",
    terms=("kd_fkd_feat", "kd_fkd_att", "kd_fkd_nl"),
    weight_key=("weight",),
)
class FKD(KDMethod):
    """``--kd fkd``. Returns ``{"kd_fkd_feat", "kd_fkd_att", "kd_fkd_nl"}`` (weighted)."""

    @classmethod
    def build(cls, cfg: FKDConfig, *, student=None, teacher=None, loss_cfg=None) -> FKD:
        """Adapters sized from the feature channels of ``student`` and ``teacher`` (both needed)."""
        return cls(
            cfg, network_channels(student, cfg.features), network_channels(teacher, cfg.features), loss_cfg
        )

    def __init__(
        self,
        cfg: FKDConfig | None = None,
        student_channels: dict[int, int] | None = None,
        teacher_channels: dict[int, int] | None = None,
        loss_cfg=None,
    ):
        super().__init__((cfg or FKDConfig()).validate(), loss_cfg)
        if not student_channels or not teacher_channels:
            raise BopkdError(
                "fkd needs the student's and teacher's feature channels per stride (build it with both models)"
            )
        strides = sorted(set(student_channels) & set(teacher_channels))
        if not strides:
            raise BopkdError(
                f"fkd: student strides {sorted(student_channels)} and teacher strides {sorted(teacher_channels)} share no "
                f"pyramid level: give both models overlapping levels"
            )
        self.strides = strides
        cfg = self.cfg
        self.adapters = nn.ModuleDict()
        self.student_nl = nn.ModuleDict()
        self.teacher_nl = nn.ModuleDict()
        self.nl_adapters = nn.ModuleDict()
        for s in strides:
            cs, ct = int(student_channels[s]), int(teacher_channels[s])
            pool = cfg.nonlocal_pool if cfg.nonlocal_pool is not None else max(1, 32 // s)
            self.adapters[str(s)] = _adapter(cs, ct)
            self.student_nl[str(s)] = NonLocal2d(cs, cfg.nonlocal_reduction, pool)
            self.teacher_nl[str(s)] = NonLocal2d(ct, cfg.nonlocal_reduction, pool)
            self.nl_adapters[str(s)] = _adapter(cs, ct)

    def task_units(self, student_out: dict, batch: dict, assignment: dict | None = None) -> float:
        """P (positive cells of the batch, at least 1) under the ``"sum"`` task reduction, else 1."""
        if self.reduction() != "sum":
            return 1.0
        return float(max(int(self.positives(student_out, batch, assignment)["num_pos"]), 1))

    def level_maps(self, out: dict, who: str) -> tuple[list[int], list[torch.Tensor]]:
        """(strides, maps) of the feature maps distilled from ``out``, the ``who`` network's outputs."""
        key = "features" if self.cfg.features == "fpn" else "backbone_features"
        return feature_strides(out[key], out, key), out[key]

    def level_terms(
        self, s: int, fs: torch.Tensor, ft: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Unweighted (feature, attention, non-local) losses of one level."""
        T = self.cfg.temperature
        ft = ft.detach().float()  # losses in float32 even under autocast
        fa = self.adapters[str(s)](fs).float()
        sa_s, sa_t = spatial_attention(fa, T), spatial_attention(ft, T)
        ca_s, ca_t = channel_attention(fa, T), channel_attention(ft, T)
        mask = ((sa_s + sa_t) / 2).detach()
        if self.cfg.channel_mask:
            mask = mask * ((ca_s + ca_t) / 2).detach()
        feat = _l2((ft - fa).pow(2) * mask)
        att = F.l1_loss(sa_s, sa_t) + F.l1_loss(ca_s, ca_t)
        rs = self.nl_adapters[str(s)](self.student_nl[str(s)](fs)).float()
        rt = self.teacher_nl[str(s)](ft).float()
        nl = _l2((rt - rs).pow(2))
        return feat, att, nl

    def forward(
        self,
        student_out: dict,
        batch: dict,
        teacher_out: dict | None = None,
        assignment: dict | None = None,
    ) -> dict[str, torch.Tensor]:
        cfg: FKDConfig = self.cfg
        t = require_teacher(self.name, teacher_out)
        s_strides, s_feats = self.level_maps(student_out, "student")
        t_strides, t_feats = self.level_maps(t, "teacher")
        s_by = dict(zip(s_strides, s_feats, strict=True))
        t_by = dict(zip(t_strides, t_feats, strict=True))
        zero = zero_like_graph(s_feats[0])
        feat, att, nl = zero, zero, zero
        for s in self.strides:  # pyramid levels
            if s not in s_by or s not in t_by:
                continue
            fs, ft = s_by[s], t_by[s]
            if fs.shape[-2:] != ft.shape[-2:]:
                # inputs padded (right/bottom) to different multiples: compare the common top-left cells,
                # which lie at the same image positions in both maps
                h, w = min(fs.shape[-2], ft.shape[-2]), min(fs.shape[-1], ft.shape[-1])
                fs, ft = fs[..., :h, :w], ft[..., :h, :w]
            f_, a_, n_ = self.level_terms(s, fs, ft)
            feat, att, nl = feat + f_, att + a_, nl + n_
        w = cfg.weight * self.task_units(student_out, batch, assignment)
        return {
            "kd_fkd_feat": w * cfg.feat_weight * feat,
            "kd_fkd_att": w * cfg.att_weight * att,
            "kd_fkd_nl": w * cfg.nonlocal_weight * nl,
        }
