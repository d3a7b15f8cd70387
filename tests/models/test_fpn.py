"""FPN: level shapes (extra levels by stride-2 convs), top-down flow only from coarse to fine."""

from __future__ import annotations

import torch

from bopkd.models.fpn import FPN


def _feats(B=1, H=64, W=96, chans=(16, 32, 64)):
    g = torch.Generator().manual_seed(0)
    return [torch.randn(B, c, H // 2 ** (3 + i), W // 2 ** (3 + i), generator=g) for i, c in enumerate(chans)]


def test_shapes_with_extra_levels():
    fpn = FPN([16, 32, 64], [3, 4, 5], [3, 4, 5, 6, 7], 24)
    out = fpn(_feats())
    assert [tuple(o.shape) for o in out] == [
        (1, 24, 8, 12),
        (1, 24, 4, 6),
        (1, 24, 2, 3),
        (1, 24, 1, 2),
        (1, 24, 1, 1),
    ]
    # a backbone stopping at stride 16 gets P5..P7 from stride-2 convs
    fpn2 = FPN([16, 32], [3, 4], [3, 4, 5, 6], 8)
    out2 = fpn2(_feats(chans=(16, 32)))
    assert [tuple(o.shape[-2:]) for o in out2] == [(8, 12), (4, 6), (2, 3), (1, 2)]
    # fewer output levels than backbone maps
    assert len(FPN([16, 32, 64], [3, 4, 5], [3, 4], 8)(_feats())) == 2


def test_top_down_information_flow():
    fpn = FPN([16, 32, 64], [3, 4, 5], [3, 4, 5, 6, 7], 8)
    f = _feats()
    base = fpn(f)
    g = [x.clone() for x in f]
    g[2] = g[2] + 1.0  # change C5: every level changes
    changed = fpn(g)
    assert all(not torch.allclose(a, b) for a, b in zip(base, changed, strict=True))
    h = [x.clone() for x in f]
    h[0] = h[0] + 1.0  # change C3: only P3 changes
    changed = fpn(h)
    assert not torch.allclose(base[0], changed[0])
    assert all(torch.equal(a, b) for a, b in zip(base[1:], changed[1:], strict=True))
