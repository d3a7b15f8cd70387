"""Shared pieces of the dense family's distillation methods: the probability maps of a dense output dict.

The dense networks (:class:`bopkd.models.dense.DensePoseNet`, ZebraPose-style; Su et al., CVPR 2022) return
per crop ``mask_logits`` (B, 1, S, S) and ``code_logits`` (B, bits, S, S) at stride 2 of the input crop,
and the encoder maps ``features``. Their probabilities are ``sigmoid`` of the logits (ZebraPose
``zebrapose/train.py`` binarises them at 0.5).
"""

from __future__ import annotations

import torch

from bopkd.errors import BopkdError
from bopkd.losses.kd.base import require_teacher

DENSE_KEYS = ("mask_logits", "code_logits")


def check_dense(name: str, out: dict, who: str) -> None:
    """A one-line error unless ``out`` is a dense network's output dict (``mask_logits``, ``code_logits``)."""
    missing = [k for k in DENSE_KEYS if k not in out]
    if missing:
        raise BopkdError(
            f"dense distillation method {name!r}: the {who}'s outputs lack {missing}: use dense networks "
            "(family: dense) for both the student and the teacher"
        )


def dense_probs(out: dict, detach: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(mask (B, 1, S, S), code (B, bits, S, S)) probabilities in [0, 1], float32 even under autocast."""
    m, c = out["mask_logits"].float(), out["code_logits"].float()
    if detach:
        m, c = m.detach(), c.detach()
    return torch.sigmoid(m), torch.sigmoid(c)


def check_same_maps(name: str, s: dict, t: dict) -> None:
    """A one-line error unless the student's and teacher's maps have equal shapes (same crops, same bits)."""
    for k in DENSE_KEYS:
        if s[k].shape != t[k].shape:
            raise BopkdError(
                f"dense distillation method {name!r}: student {k} {tuple(s[k].shape)} and teacher "
                f"{tuple(t[k].shape)} differ: train both with the same dense.bits and dense.out_size"
            )


def checked_pair(name: str, student_out: dict, teacher_out: dict | None) -> dict:
    """The teacher's output dict of a dense method's forward, after the checks every dense method makes on its
    inputs: a teacher is given, both dicts are dense outputs, their maps have equal shapes."""
    t = require_teacher(name, teacher_out)
    check_dense(name, student_out, "student")
    check_dense(name, t, "teacher")
    check_same_maps(name, student_out, t)
    return t
