"""Dense ``ot``: the distribution of a dense network's local code predictions, aligned with optimal transport.

Guo, Hu, Alvarez, Salzmann, "Knowledge Distillation for 6D Pose Estimation by Aligning Distributions of Local
Predictions", CVPR 2023 (arXiv 2205.14971), Sec. 3 (the OT loss between the student's and the teacher's
weighted sets of local predictions) and Sec. 4 (its use on a dense, ZebraPose-based network, whose local
predictions are the per-pixel binary codes). Applied to the outputs of :class:`bopkd.models.dense.DensePoseNet`
(Su et al., ZebraPose, CVPR 2022: per pixel a visible-mask logit and ``n`` code-bit logits):

* per crop, a local prediction is one cell of the output grid after ``pool`` x ``pool`` average pooling: its
  point is the n-D vector of code-bit probabilities ``sigmoid(code_logits)`` averaged over the cell
  (optionally followed by the cell centre ``((j + 0.5) / w, (i + 0.5) / h) * position_weight``, a position
  in crop units), its mass the cell's mean visible-mask probability ``sigmoid(mask_logits)`` divided by the
  number of cells ``h * w``, so that a crop's total mass is its mean mask probability whatever ``pool`` is;
* the student's mask probabilities are clamped to [mass_clamp, 1 - mass_clamp] before pooling (the
  sparse method's score clamp, :mod:`~bopkd.losses.kd.ot_kd`); the teacher's maps are detached;
* with ``mask_threshold`` set, only the cells whose pooled teacher mask probability exceeds it take part on
  both sides (the others get mass 0, i.e. are absent), and the present cells are packed first;
* per crop, the loss is the debiased unbalanced Sinkhorn divergence between the two sets
  (:func:`bopkd.losses.ot.sinkhorn_divergence`, ``docs/ot.md``; ground cost ``|x - y|^2 / 2``, blur 0.001,
  reach 0.5, scaling 0.5 as the reference code GUOShuxuan/kd-6d-pose-adlp ``arguments/argument_kd.py``),
  all crops of the batch solved in one batched call, each from its own diameter (one geomloss call per
  crop); the term is ``weight`` times the mean over the crops where both sets have mass. Default weight 5,
  the sparse OT's (``--kd_weight 5`` of the reference code).

Gradients reach the student's code logits through the points and its mask logits through the masses
(``detach_masses`` makes the masses constants, the reference's ``--wot_detach`` ablation).

Pool factor, measured by ``benchmarks/dense.py`` (part 4; CPU, one thread, 2 crops of 32 x 32 maps, 16 bits,
forward + backward): the teacher's maps are a disc mask and a hierarchical code of the crop (Morton order of a
rotated surface coordinate, bit 0 coarsest) at logit magnitude 4, the student's the same plus spatially
correlated Gaussian logit noise of std 1 (drawn on a grid 8x coarser, upsampled):

* time: pool 1 (1024 cells per crop) 453 ms, pool 2 28.9 ms, 4 5.3 ms, 8 3.9 ms (the cost grows as the square
  of the number of cells per crop);
* value, pooled / unpooled: 0.78 (pool 2), 0.63 (4), 0.66 (8);
* gradient, cosine with the unpooled one: code logits 0.94 / 0.90 / 0.85, mask logits 0.88 / 0.75 / 0.65 for
  pools 2 / 4 / 8.

(Cells without their position, the default when the pool factor was chosen. With the position, today's default,
and today's solver of :mod:`bopkd.losses.ot` (block costs, closed-form gradient): 423, 13.1, 2.7 and 1.8 ms;
values 0.78, 0.63, 0.66; cosines code 0.94 / 0.90 / 0.85, mask 0.89 / 0.76 / 0.68.)

Default 4: its gradients stay close to the unpooled ones at about 1/100 of the unpooled time; pool 8 saves
little more at these map sizes and agrees less. At ZebraPose's 128 x 128 maps pool 4 gives 32 x 32 = 1024 cells
per crop, 16 times the cells and about 256 times the Sinkhorn work of pool 8 (256 cells).

``position`` and ``mask_threshold`` are the two other choices the paper leaves open, each set by the dense study
of the README (tiny-cpu students of a darknet-tiny-h teacher, 1500 iterations, seeds 0-2, every other setting
equal; the report's paired differences to OT's default, ``paired_variants.md``): OT without the cell position was
behind OT with it on AR by 1.5 points, 95 % t interval [-2.2, -0.8], so ``position`` is on; OT over the teacher
mask's cells (``mask_threshold`` 0.5) did not differ from OT over every cell (AR -0.0 [-2.5, +2.5], every score's
interval containing 0), so ``mask_threshold`` stays None. Runs recorded before ``position`` became the default had
it off and are read so (:mod:`bopkd.losses.kd.stored`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bopkd.errors import BopkdError
from bopkd.losses.kd.base import KDMethod, zero_like_graph
from bopkd.losses.kd.dense_common import checked_pair, dense_probs
from bopkd.losses.kd.registry import register_kd


@dataclass
class DenseOTKDConfig:
    """Options of the dense OT distillation (defaults: the sparse method's, the pool factor measured).

    Attributes:
        weight: weight of the term (``--kd-weight``), 5 (the sparse OT's).
        pool: side of the average-pooled cells, px of the output map; must divide the map side, 4.
        blur: Sinkhorn blur (epsilon = blur**2), in code-probability units, 0.001.
        reach: unbalanced OT reach (rho = reach**2), 0.5.
        scaling: epsilon-scaling ratio, 0.5.
        position: append the cell centre (crop units, [0, 1]) to each code vector, True (measured; False
            before, the former default of run configs that do not state it).
        position_weight: factor of the appended position, 1.
        mask_threshold: None: every cell takes part, weighted by its mask probability; a value in [0, 1):
            only cells whose pooled teacher mask probability exceeds it.
        mass_clamp: student mask probabilities are clamped to [mass_clamp, 1 - mass_clamp], 1e-3.
        detach_masses: treat the student's masses as constants, False.
    """

    weight: float = 5.0
    pool: int = 4
    blur: float = 0.001
    reach: float = 0.5
    scaling: float = 0.5
    position: bool = True
    position_weight: float = 1.0
    mask_threshold: float | None = None
    mass_clamp: float = 1e-3
    detach_masses: bool = False

    def validate(self, source: str = "the kd config") -> DenseOTKDConfig:
        def bad(msg: str) -> BopkdError:
            return BopkdError(f"{source}: {msg}")

        if not self.weight >= 0:
            raise bad(f"kd weight {self.weight} must be >= 0")
        if not isinstance(self.pool, int) or self.pool < 1:
            raise bad(f"dense ot pool = {self.pool!r} must be an integer >= 1 (e.g. 4)")
        for k in ("blur", "reach", "scaling"):
            if not getattr(self, k) > 0:
                raise bad(f"dense ot {k} = {getattr(self, k)} must be > 0")
        if not self.scaling < 1:
            raise bad(f"dense ot scaling = {self.scaling} must be < 1 (the epsilon-scaling ratio)")
        if not self.position_weight >= 0:
            raise bad(f"dense ot position_weight = {self.position_weight} must be >= 0")
        if self.mask_threshold is not None and not 0 <= self.mask_threshold < 1:
            raise bad(
                f"dense ot mask_threshold = {self.mask_threshold} must be in [0, 1) (or null: all cells)"
            )
        if not 0 <= self.mass_clamp < 0.5:
            raise bad(f"dense ot mass_clamp = {self.mass_clamp} must be in [0, 0.5)")
        return self


def cell_sets(
    mask: torch.Tensor, code: torch.Tensor, pool: int, position_weight: float | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled cells of probability maps as weighted point sets.

    Args:
        mask: (B, 1, S, S) mask probabilities; code: (B, n, S, S) code-bit probabilities.
        pool: cell side, px of the maps (divides S).
        position_weight: None: points are the codes; a float: the cell centre ((j + .5) / w, (i + .5) / h)
            times it is appended.
    Returns:
        points (B, h*w, n [+2]) and masses (B, h*w), the cell's mean mask probability / (h*w); row-major cells.
    """
    if pool > 1:
        mask, code = F.avg_pool2d(mask, pool), F.avg_pool2d(code, pool)
    B, n, h, w = code.shape
    pts = code.flatten(2).transpose(1, 2)
    if position_weight is not None:
        grid = _cell_centres(h, w, float(position_weight), code.dtype, code.device)
        pts = torch.cat([pts, grid.expand(B, -1, -1)], 2)
    return pts, mask.flatten(1) / (h * w)


@functools.lru_cache(maxsize=16)
def _cell_centres(h: int, w: int, weight: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(1, h*w, 2) centres ``((j + 0.5) / w, (i + 0.5) / h) * weight`` of a row-major grid of cells, built
    once per grid (read-only: callers expand and concatenate it)."""
    ys = (torch.arange(h, device=device, dtype=dtype) + 0.5) / h
    xs = (torch.arange(w, device=device, dtype=dtype) + 0.5) / w
    return weight * torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1).reshape(1, h * w, 2)


def pack_present(x: torch.Tensor, a: torch.Tensor, keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Move the kept cells of each set (B, N) first and cut the padding: (B, K, D), (B, K), K = max kept."""
    order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)
    k = max(int(keep.sum(1).max()), 1)
    idx = order[:, :k]
    a = torch.where(keep, a, torch.zeros_like(a)).gather(1, idx)
    return x.gather(1, idx[..., None].expand(-1, -1, x.shape[2])), a


@register_kd(
    "ot",
    family="dense",
    config=DenseOTKDConfig,
    summary="Guo et al. (CVPR 2023) on dense networks: Sinkhorn divergence between pooled code distributions",
    terms=("kd_ot",),
    weight_key=("weight",),
    former_defaults={"position": False},
)
class DenseOTKD(KDMethod):
    """Dense ``--kd ot``. Returns ``{"kd_ot": weight * mean over crops of S(student cells, teacher cells)}``."""

    def __init__(self, cfg: DenseOTKDConfig | None = None, loss_cfg=None):
        super().__init__((cfg or DenseOTKDConfig()).validate(), loss_cfg)

    def problems(
        self, student_out: dict, teacher_out: dict
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The padded OT problems of a batch: x (B, N, D), a (B, N) student; y (B, M, D), b (B, M) teacher."""
        cfg: DenseOTKDConfig = self.cfg
        S = student_out["mask_logits"].shape[-1]
        if S % cfg.pool or student_out["mask_logits"].shape[-2] % cfg.pool:
            raise BopkdError(
                f"dense ot: pool = {cfg.pool} does not divide the output maps "
                f"{tuple(student_out['mask_logits'].shape[-2:])}: set kd.options.pool to a divisor"
            )
        sm, sc = dense_probs(student_out)
        tm, tc = dense_probs(teacher_out, detach=True)
        if cfg.mass_clamp > 0:
            sm = sm.clamp(cfg.mass_clamp, 1.0 - cfg.mass_clamp)
        if cfg.detach_masses:
            sm = sm.detach()
        pw = cfg.position_weight if cfg.position else None
        x, a = cell_sets(sm, sc, cfg.pool, pw)
        y, b = cell_sets(tm, tc, cfg.pool, pw)
        if cfg.mask_threshold is not None:
            keep = b * b.shape[1] > cfg.mask_threshold  # the pooled teacher mask probability
            x, a = pack_present(x, a, keep)
            y, b = pack_present(y, b, keep)
        return x, a, y, b

    def forward(
        self,
        student_out: dict,
        batch: dict,
        teacher_out: dict | None = None,
        assignment: dict | None = None,
    ) -> dict[str, torch.Tensor]:
        from bopkd.losses.ot import sinkhorn_divergence

        cfg: DenseOTKDConfig = self.cfg
        t = checked_pair(self.name, student_out, teacher_out)
        x, a, y, b = self.problems(student_out, t)
        valid = (a > 0).any(1) & (b > 0).any(1)
        if not bool(valid.any()):
            return {
                "kd_ot": zero_like_graph(student_out["code_logits"])
                + zero_like_graph(student_out["mask_logits"])
            }
        d = sinkhorn_divergence(x, a, y, b, blur=cfg.blur, reach=cfg.reach, scaling=cfg.scaling)  # (B,)
        loss = d.sum() / valid.sum().clamp_min(1)
        return {"kd_ot": cfg.weight * loss}
