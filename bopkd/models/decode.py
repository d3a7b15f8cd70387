"""From network outputs to the confident cells of every image and class.

As at inference in WDR (Hu et al., CVPR 2021, ``postprocess.py``, ``pose_infer_ml``) and Guo et al.
(CVPR 2023): cells whose sigmoid score exceeds ``score_th`` (0.1) are candidates; for each class with
a candidate, the object's size S is the larger side of the box of the keypoints of its most confident
cell, and each level keeps its ``n_l`` most confident candidates with ``n_l`` the same level quota as
at training (:func:`bopkd.models.levels.level_quota`: ``num_cells`` = 10 spread over levels by
``|log2(S / anchor size)|``). ``topk_per_level`` replaces that quota by a fixed number per level.
(WDR reports ``sqrt`` of the sigmoid as score; bopkd keeps the sigmoid, a monotone difference.)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bopkd.models.levels import level_quota


@dataclass
class Detections:
    """The confident cells of one class in one image (torch tensors, detached, on the outputs' device).

    Attributes:
        kpts: (n, 8, 2) keypoints in input-image px.
        scores: (n,) sigmoid scores, descending within each level.
        cells: (n,) cell indices into the A cells.
        levels: (n,) level indices.
    """

    kpts: torch.Tensor
    scores: torch.Tensor
    cells: torch.Tensor
    levels: torch.Tensor

    def __len__(self) -> int:
        return int(self.scores.numel())


@torch.no_grad()
def decode(
    outputs: dict,
    score_th: float = 0.1,
    num_cells: int = 10,
    positive_lambda: float = 1.0,
    topk_per_level: int | None = None,
) -> list[dict[int, Detections]]:
    """Select the confident cells.

    Args:
        outputs: :meth:`PoseNet.forward`'s dict (``cls_logits``, ``kpts``, ``anchors``).
        score_th: minimum sigmoid score of a cell.
        num_cells: cells per object spread over the levels (WDR's ``positive_num``).
        positive_lambda: sharpness of the level distribution.
        topk_per_level: if set, keep this many per level instead of the size-based quota.

    Returns:
        per image, a dict class index -> :class:`Detections` (classes without a candidate are absent).
    """
    anchors = outputs["anchors"]
    starts = anchors["level_start"]
    L = len(starts) - 1
    scores_all = outputs["cls_logits"].detach().sigmoid()
    kpts_all = outputs["kpts"].detach()
    level_sizes = anchors["sizes"][torch.tensor(starts[:-1], device=scores_all.device)]
    results: list[dict[int, Detections]] = []
    for b in range(scores_all.shape[0]):
        sc = scores_all[b]  # (A, C)
        cand = sc > score_th
        per_img: dict[int, Detections] = {}
        for c in torch.nonzero(cand.any(dim=0)).view(-1).tolist():
            s_c = torch.where(cand[:, c], sc[:, c], torch.full_like(sc[:, c], -1.0))
            if topk_per_level is not None:
                quota = [int(topk_per_level)] * L
            else:
                best = int(s_c.argmax())
                k = kpts_all[b, best, c]
                size = (k.amax(0) - k.amin(0)).amax()
                quota = level_quota(size.view(1), level_sizes, num_cells, positive_lambda)[0].tolist()
            cells = []
            for lv in range(L):
                s, e = starts[lv], starts[lv + 1]
                n_cand = int(cand[s:e, c].sum())
                q = min(quota[lv], n_cand)
                if q > 0:
                    cells.append(torch.topk(s_c[s:e], q).indices + s)
            if not cells:
                continue
            idx = torch.cat(cells)
            per_img[c] = Detections(
                kpts=kpts_all[b, idx, c],
                scores=sc[idx, c],
                cells=idx,
                levels=anchors["level"][idx],
            )
        results.append(per_img)
    return results
