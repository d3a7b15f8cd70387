r"""Batched, debiased, unbalanced Sinkhorn divergence between weighted point sets.

The optimal-transport (OT) term of the distillation of Guo et al. (CVPR 2023, arXiv:2205.14971): per
keypoint, the score-weighted set of the student's local keypoint predictions is aligned with the
teacher's. Their code evaluates it with geomloss ``SamplesLoss("sinkhorn", p=2, blur=0.001, reach=0.5,
scaling=0.5)`` on image coordinates divided by the image width and height; those are the defaults here.

The divergence is that of Séjourné et al. (arXiv:1910.12958), the unbalanced extension of the debiased
Sinkhorn divergence of Feydy et al. (AISTATS 2019), with cost ``C(x, y) = |x - y|^2 / 2``,
``eps = blur^2`` and ``rho = reach^2``; it is evaluated from the dual potentials found by a batched
log-domain Sinkhorn loop that follows geomloss's ``sinkhorn_loop`` (epsilon-scaling, symmetric
averaged updates). Definitions, the dual formula, the gradient convention, convergence, precision and
the correspondence with POT: ``docs/ot.md``. ``tests/losses/test_ot.py`` checks against POT and geomloss.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["group_diameters", "sinkhorn_divergence"]

_P = 2  # exponent of the ground cost C = |x - y|^p / p; the paper (and this module) use p = 2


def _cost(z: torch.Tensor, differences: bool | None = None) -> torch.Tensor:
    """Half squared Euclidean distances between the points of each set, ``C[b, i, j] = |z[b, i] - z[b, j]|^2
    / 2``: (B, K, D) -> (B, K, K).

    Free of float32 cancellation: with blur 0.001, C / eps would carry errors of order |z|^2 * 1e-7 / 1e-6
    if C came from ``|z_i|^2 / 2 - z_i.z_j + |z_j|^2 / 2`` in float32 (geomloss's formula). On the CPU that
    formula is evaluated in float64 (absolute error about 1e-16 |z|^2, then rounded to z's dtype): one
    batched matrix product, 1.2-4x faster there than ``torch.cdist``'s difference kernel (8 x 128 and
    2 x 2048 points, D 18, one thread), which is used on other devices (exact differences, fused, no
    (B, K, K, D) temporary; float64 is slow on most GPUs). ``differences`` chooses the kernel (None: by
    device). Computed without autograd (:class:`_LastUpdate` differentiates the cost).
    """
    if differences if differences is not None else z.device.type != "cpu":
        return torch.cdist(z, z, compute_mode="donot_use_mm_for_euclid_dist").square() / 2
    zd = z.double()
    half_sq = zd.square().sum(-1).mul_(0.5)
    c = torch.baddbmm(half_sq[:, :, None], zd, zd.transpose(1, 2), alpha=-1).add_(half_sq[:, None, :])
    return c.clamp_(min=0).to(z.dtype)


# Terms of a log-sum-exp more than e^80 below its largest term are raised to e^-80 times it: invisible
# next to that term (1 + 1e-35 == 1 in float32 and float64), and it keeps ``exp`` on its fast path
# (exp of arguments below about -87, the float32 underflow, or of -inf is ~30x slower on CPU).
_LOG_TINY = -80.0


def _lse_nograd(neg_inv_eps: torch.Tensor, cost: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """``logsumexp_j(h_j - C_ij / eps)`` over the last dimension, for the loop (no autograd): one temporary,
    in-place steps.

    cost (..., M), with h and neg_inv_eps = -1/eps broadcastable to it; h has a finite entry in every row.
    Returns cost's shape without its last dimension.
    """
    z = torch.addcmul(h, cost, neg_inv_eps)
    m = z.amax(-1, keepdim=True)
    return z.sub_(m).clamp_(min=_LOG_TINY).exp_().sum(-1).log_().add_(m[..., 0])


def _bounds(z: torch.Tensor, present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-problem bounding box (lo, hi), each (B, D), of the present points of z (B, K, D), mask (B, K).

    Absent points are replaced by the problem's first present point (a problem without any gets the box of
    its first point), so that one ``aminmax`` gives the box.
    """
    first = present.to(torch.uint8).argmax(1)[:, None, None].expand(-1, 1, z.shape[2])
    return torch.aminmax(torch.where(present[..., None], z, z.gather(1, first)), dim=1)


def group_diameters(
    x: torch.Tensor, a: torch.Tensor, y: torch.Tensor, b: torch.Tensor, group: torch.Tensor
) -> torch.Tensor:
    """Diameter shared by the problems of each group, as geomloss computes it for a batched call.

    geomloss ``SamplesLoss`` called on a (B, N, D) batch starts the epsilon schedule of every problem at
    one diameter, ``max_diameter``: the norm of the extent of the bounding box of all the batch's points.
    The paper's code calls it once per image on that image's 8 keypoint problems; passing
    ``diameter=group_diameters(..., group=image index of each problem)`` to :func:`sinkhorn_divergence`
    reproduces that. Only present points (weight > 0) count here.

    Args: x (B,N,D), a (B,N), y (B,M,D), b (B,M) as in :func:`sinkhorn_divergence`; group (B,) integer
    group ids. Returns (B,) diameters, each that of its problem's group (units of x).
    """
    with torch.no_grad():
        lo, hi = _bounds(torch.cat([x, y], 1).detach(), torch.cat([a > 0, b > 0], 1))
        group = group.to(device=x.device, dtype=torch.long)
        idx = group[:, None].expand_as(lo)
        n_groups = int(group.max()) + 1 if group.numel() else 0
        lo_g = torch.full((n_groups, lo.shape[1]), float("inf"), dtype=x.dtype, device=x.device)
        hi_g = torch.full_like(lo_g, float("-inf"))
        lo_g = lo_g.scatter_reduce(0, idx, lo, "amin")
        hi_g = hi_g.scatter_reduce(0, idx, hi, "amax")
        return torch.linalg.vector_norm(hi_g[group] - lo_g[group], dim=-1)


def _epsilon_tables(
    diameter: np.ndarray, blur: float, scaling: float, extra_iterations: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per-problem epsilon schedules, right-aligned in one (B, T) table.

    geomloss ``epsilon_schedule(p, diameter, blur, scaling)`` is the list
    ``E = [d^p] + exp(arange(p log d, p log blur, p log scaling)) + [blur^p]``; ``sinkhorn_loop``
    initialises the potentials with one update from zero at ``E[0]`` and then makes one averaged update
    per entry of ``E``.  Here ``extra_iterations`` updates at ``blur^p`` follow.  Problems with shorter
    schedules start later so that all end together; before its start a problem is inactive.

    Returns ``eps`` (B, T) float64 and ``mode`` (B, T) int8: 0 inactive, 1 initialisation, 2 update.
    """
    d = np.where(diameter > 0, diameter, blur)  # zero diameter (coincident points): start at blur
    start = _P * np.log(d)
    step = _P * math.log(scaling)
    stop = _P * math.log(blur)
    # numpy's float arange: length ceil((stop - start) / step), values v_0 = start, v_1 = start + step,
    # v_i = start + i * delta with delta = v_1 - v_0 (its fill rule), reproduced to the last bit.
    n = np.maximum(np.ceil((stop - start) / step), 0).astype(np.int64)
    delta = (start + step) - start
    steps = 1 + (n + 2) + extra_iterations  # initialisation + len(E) + extra updates
    T = int(steps.max())
    k = np.arange(T)[None, :] - (T - steps)[:, None] - 1  # index into E; -1: initialisation
    i = np.clip(k - 1, 0, None)  # index into the arange
    v = np.where(i == 0, start[:, None], start[:, None] + i * delta[:, None])
    v = np.where(i == 1, (start + step)[:, None], v)
    eps = np.where(k <= 0, (d**_P)[:, None], np.where(k <= n[:, None], np.exp(v), blur**_P))
    mode = np.where(k >= 0, 2, np.where(k == -1, 1, 0)).astype(np.int8)
    return eps, mode


def sinkhorn_divergence(
    x: torch.Tensor,
    a: torch.Tensor,
    y: torch.Tensor,
    b: torch.Tensor,
    *,
    blur: float = 0.001,
    reach: float | None = 0.5,
    scaling: float = 0.5,
    diameter: float | torch.Tensor | None = None,
    extra_iterations: int = 0,
) -> torch.Tensor:
    r"""Debiased unbalanced Sinkhorn divergence of B weighted point-set pairs, solved in one batched call.

    :math:`S(\alpha, \beta) = \mathrm{OT}(\alpha, \beta) - \tfrac12 \mathrm{OT}(\alpha, \alpha)
    - \tfrac12 \mathrm{OT}(\beta, \beta) + \tfrac{\varepsilon}{2} (m(\alpha) - m(\beta))^2` (Séjourné et
    al., arXiv:1910.12958), evaluated by their Prop. 12 from the potentials of geomloss's algorithm; the
    gradient is that of :math:`(\rho + \varepsilon)[\ldots]` (POT's; geomloss's is 1 - 2e-6 times it at
    the defaults). See ``docs/ot.md``.

    Args:
        x: (B, N, D) positions of the first sets (e.g. student keypoint predictions, normalised image
            coordinates: px / image width, px / image height as in the paper's code).
        a: (B, N) nonnegative weights of x (e.g. student scores); weight 0 marks padding (an absent point).
        y: (B, M, D) positions of the second sets (teacher predictions).
        b: (B, M) nonnegative weights of y; weight 0 marks padding.
        blur: entropic blur; epsilon = blur^2 (the final temperature), same units as x.
        reach: marginal reach; rho = reach^2 (KL penalty of the marginals). ``None``: balanced OT
            (rho = infinity), as geomloss.
        scaling: ratio between successive blurs of the epsilon-scaling schedule (geomloss
            ``epsilon_schedule``), from the diameter down to ``blur``.
        diameter: start of the schedule. ``None``: per problem, the diameter of the bounding box of the
            present points of both sets (geomloss called on that problem alone). A float or a (B,)
            tensor fixes it; ``group_diameters(...)`` reproduces the paper's per-image calls.
        extra_iterations: Sinkhorn iterations at the final epsilon after geomloss's schedule (0 =
            geomloss's algorithm exactly); large values converge to the exact entropic divergence (POT).

    Returns:
        (B,) divergences, in units of x squared times weight (same dtype and device as x). A problem with
        one side of total weight 0 gives 0 with zero gradients; skip such problems, e.g. with
        ``(a > 0).any(1) & (b > 0).any(1)``. float32 values carry an absolute error of about
        1e-7 * rho * mass (``docs/ot.md``, "Precision").
    """
    _check_inputs(x, a, y, b, blur, reach, scaling, extra_iterations)
    a = a.to(x.dtype)
    b = b.to(x.dtype)
    B, N, _ = x.shape
    M = y.shape[1]
    if B == 0 or N == 0 or M == 0:
        return (a.sum(1) * b.sum(1)) * 0

    # Both sets padded to L points (zero points of weight 0, absent) and stacked: z = (x; y) (B, 2L, D),
    # weights w (B, 2, L); the four problems are then blocks of one (B, 2, L, 2, L) cost (:func:`_sinkhorn_loop`).
    L = max(N, M)
    xp, yp = _pad_rows(x, L), _pad_rows(y, L)
    z = torch.cat([xp, yp], 1).detach()
    w = torch.stack([_pad_rows(a, L), _pad_rows(b, L)], 1)
    present = w > 0
    valid = present.any(2).all(1)
    eps_tab, mode_tab, all_active = _schedule(
        z, present.view(B, 2 * L), w, valid, diameter, blur, scaling, extra_iterations
    )
    rho = None if reach is None else reach**_P
    # Log-weights: -inf (log 0) on absent points; empty problems get uniform weights so that they stay
    # finite (their value is replaced by 0 below).
    log_w = torch.where(valid[:, None, None], w.detach().log(), 0.0)
    costs = _cost(z).view(B, 2, L, 2, L)  # block [:, r, :, c, :] = C(set r, set c), set 0 = x, 1 = y
    potentials = _sinkhorn_loop(costs, log_w, eps_tab, mode_tab, all_active, rho)
    last = _extrapolate(xp, yp, log_w, costs, potentials, blur, rho)
    value = _dual_value(w, last, blur**_P, rho)
    return torch.where(valid, value, 0.0)


def _check_inputs(
    x: torch.Tensor,
    a: torch.Tensor,
    y: torch.Tensor,
    b: torch.Tensor,
    blur: float,
    reach: float | None,
    scaling: float,
    extra_iterations: int,
) -> None:
    """Raise ValueError naming the first bad shape, dtype or setting of :func:`sinkhorn_divergence`."""
    if x.ndim != 3 or y.ndim != 3 or x.shape[0] != y.shape[0] or x.shape[2] != y.shape[2]:
        raise ValueError(f"x and y must be (B,N,D) and (B,M,D), got {tuple(x.shape)} and {tuple(y.shape)}")
    if a.shape != x.shape[:2] or b.shape != y.shape[:2]:
        raise ValueError(
            f"a must be (B,N)={tuple(x.shape[:2])} and b (B,M)={tuple(y.shape[:2])}, got {tuple(a.shape)}, {tuple(b.shape)}"
        )
    if not x.is_floating_point() or y.dtype != x.dtype or y.device != x.device:
        raise ValueError(f"x and y must share one floating dtype and device, got {x.dtype}, {y.dtype}")
    if blur <= 0 or not 0 < scaling < 1 or (reach is not None and reach <= 0) or extra_iterations < 0:
        raise ValueError(
            f"need blur > 0, 0 < scaling < 1, reach > 0 or None, extra_iterations >= 0; got {blur}, {scaling}, {reach}, {extra_iterations}"
        )


def _schedule(
    z: torch.Tensor,
    present: torch.Tensor,
    w: torch.Tensor,
    valid: torch.Tensor,
    diameter: float | torch.Tensor | None,
    blur: float,
    scaling: float,
    extra_iterations: int,
) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """The epsilon table (B, T) and step modes (B, T) on z's device, and (T,) whether every problem makes
    an averaged update at each step; raises ValueError on negative weights.

    z (B, K, D) the detached points of both sets, ``present`` (B, K) their mask, w the weights (B, ...),
    valid (B,) the problems with mass on both sides. The diameters and schedules are computed on the host,
    as geomloss does (``.item()``), with one host transfer; problems with an empty side get the schedule of
    diameter ``blur``.
    """
    B = z.shape[0]
    if diameter is None:  # geomloss's ``max_diameter`` of the problem alone, present points only
        lo, hi = _bounds(z, present)
        d = torch.linalg.vector_norm(hi - lo, dim=-1)
    elif isinstance(diameter, torch.Tensor):
        d = diameter.detach().to(z.dtype).expand(B)
    else:
        d = torch.full((B,), float(diameter), dtype=z.dtype)
    neg = w.detach().flatten(1).amin(1) < 0
    d_host, neg_host, valid_host = (
        torch.stack([d.to(z.device), neg.to(z.dtype), valid.to(z.dtype)]).cpu().double().numpy()
    )
    if neg_host.any():
        raise ValueError("weights a and b must be nonnegative")
    d_host = np.where(valid_host > 0, d_host, blur)
    eps_np, mode_np = _epsilon_tables(d_host, blur, scaling, extra_iterations)
    eps_tab = torch.as_tensor(eps_np, dtype=z.dtype).to(z.device)
    mode_tab = torch.as_tensor(mode_np).to(z.device)
    return eps_tab, mode_tab, (mode_np == 2).all(0)


def _sinkhorn_loop(
    cost: torch.Tensor,
    log_w: torch.Tensor,
    eps_tab: torch.Tensor,
    mode_tab: torch.Tensor,
    all_active: np.ndarray,
    rho: float | None,
) -> torch.Tensor:
    """Potentials ``P`` (B, 2, L, 2) after the epsilon schedule, no autograd. ``cost`` (B, 2, L, 2, L): block
    ``[:, r, :, c, :]`` = C(set r, set c) with set 0 = x, 1 = y; ``log_w`` (B, 2, L): the log-weights of x
    and y, -inf on padding.

    Each step updates the four problems (a,b), (b,a), (a,a), (b,b) from the same old potentials
    ("symmetric" updates, geomloss ``sinkhorn_loop``): ``f <- (f + lambda softmin_eps(C, log b + g/eps))/2``
    with the damping ``lambda = 1 / (1 + eps/rho)`` of unbalanced OT (1 when balanced).

    The four problems are one log-sum-exp per step over the (B, 2, L, 2, L) costs of the stacked sets,
    both padded to L = max(N, M) points (padding has log-weight -inf, so it adds nothing to a
    log-sum-exp; its own potentials are finite and dropped): the small-tensor operations that dominate
    this loop at the sizes of a training step are made once for the four. The potentials are kept as
    ``P`` (B, 2, L, 2): ``P[:, r, i, c]`` is that of point i of set r against set c (f_aa = P[:, 0, :, 0],
    f_ba = P[:, 0, :, 1], g_ab = P[:, 1, :, 0], g_bb = P[:, 1, :, 1]); the update of problem (r, c) sums
    over set c with its log-weights and the potential of problem (c, r): ``h[:, r, c, j] = log w_c[j] +
    P[:, c, j, r] / eps``.
    """
    B, _, L = log_w.shape
    # Per-step constants, (B, 1, 1, 1) each (broadcast over the four problems): 1/eps, -1/eps (one more
    # dimension, for the costs), -lambda eps, and the modes where some problem is not at an averaged update.
    eps_cols = eps_tab.T[:, :, None, None, None]
    lam_cols = torch.ones_like(eps_cols) if rho is None else 1 / (1 + eps_cols / rho)
    steps = zip(
        (1 / eps_cols).unbind(0),
        (-1 / eps_cols[..., None]).unbind(0),
        (-lam_cols * eps_cols).unbind(0),
        [None if on else m for on, m in zip(all_active, mode_tab.T[:, :, None, None, None], strict=True)],
        strict=True,
    )
    with torch.no_grad():
        log_w = log_w[:, None]
        pot = cost.new_zeros(B, 2, L, 2)
        h = cost.new_empty(B, 2, 2, L)
        half = cost.new_tensor(0.5)  # a tensor factor: a Python float is wrapped into a new tensor per call
        for inv_eps, neg_inv_eps, out_scale, mode in steps:
            torch.addcmul(log_w, pot.permute(0, 3, 1, 2), inv_eps, out=h)  # (B, 2, 2, L), contiguous
            lse = _lse_nograd(neg_inv_eps, cost, h[:, :, None])  # (B, 2, L, 2)
            if mode is None:  # averaged update f <- (f + ft) / 2 of every problem
                pot.addcmul_(lse, out_scale).mul_(half)
            else:  # mode 2: averaged update; 1: initialisation (update from 0, kept); 0: not started
                new = lse.mul_(out_scale)
                pot = torch.where(mode == 2, (pot + new) * 0.5, torch.where(mode == 1, new, pot))
    return pot


def _pad_rows(t: torch.Tensor, n: int) -> torch.Tensor:
    """Points (B, N, D) or weights (B, N) padded with zeros (absent points: weight 0) to n along dim 1."""
    pad = n - t.shape[1]
    return t if pad == 0 else torch.nn.functional.pad(t, (0, 0) * (t.ndim - 2) + (0, pad))


def _extrapolate(
    xp: torch.Tensor,
    yp: torch.Tensor,
    log_w: torch.Tensor,
    costs: torch.Tensor,
    potentials: torch.Tensor,
    blur: float,
    rho: float | None,
) -> torch.Tensor:
    """The last update at ``eps = blur^2`` with autograd on, from the detached ``potentials`` (B, 2, L, 2) of
    :func:`_sinkhorn_loop` (geomloss ``sinkhorn_loop`` after its loop; ``sinkhorn_tensorized`` detaches the
    right-hand points of each cost); the result in the same layout. xp, yp (B, L, D): the sets padded to L.

    The four problems are one :class:`_LastUpdate` over the loop's costs, which differentiates each left-hand
    point in closed form.
    """
    eps = blur**_P
    lam = 1.0 if rho is None else 1 / (1 + eps / rho)
    h = torch.add(log_w[:, None], potentials.permute(0, 3, 1, 2), alpha=1 / eps).contiguous()
    return lam * _LastUpdate.apply(xp, yp, costs, h, eps)


class _LastUpdate(torch.autograd.Function):
    r"""The soft C-transforms ``f_i = -eps log sum_j exp(h_j - C(z_i, z_j) / eps)`` of the four problems of
    :func:`_sinkhorn_loop` (geomloss ``softmin_tensorized``), z = (x; y), with the gradient with respect to
    the left-hand points in closed form.

    For ``C(x, y) = |x - y|^2 / 2``: ``df_i / dz_i = sum_j pi_ij (z_i - z_j) = z_i - (pi z)_i``, ``pi_ij =
    softmax_j(h_j - C_ij / eps)`` (the derivative of a log-sum-exp is a softmax; Feydy, "Geometric data
    analysis, beyond convolutions", PhD thesis 2020, Sec. 3.3, where the same expectation gives geomloss's
    gradients). The right-hand points and ``h`` get no gradient (geomloss detaches both). One softmax over the
    costs and, per set that needs a gradient, two batched (B, L, L) x (B, L, D) products, where autograd
    would recompute ``C`` and differentiate it.

    forward(x (B, L, D), y (B, L, D): the padded sets; cost (B, 2, L, 2, L) = C((x; y), (x; y)) of
    :func:`_cost`; h (B, 2, 2, L): ``h[:, r, c]`` that of problem (r, c) over set c; eps: float)
    -> (B, 2, L, 2), the potentials in the layout of :func:`_sinkhorn_loop`.
    """

    @staticmethod
    def forward(ctx, x, y, cost, h, eps):  # noqa: D102 - see the class docstring
        t = torch.add(h[:, :, None], cost, alpha=-1 / eps)
        m = t.amax(-1, keepdim=True)
        p = t.sub_(m).clamp_(min=_LOG_TINY).exp_()
        total = p.sum(-1, keepdim=True)
        # pi (B, L, 2, L) of the rows of each set that needs a gradient, None for the others
        pis = [p[:, r].div_(total[:, r]) if ctx.needs_input_grad[r] else None for r in (0, 1)]
        ctx.save_for_backward(x, y, *pis)
        return -eps * (total.log_() + m)[..., 0]

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_f):  # noqa: D102
        x, y, *pis = ctx.saved_tensors
        grads = []
        for left, pi, g in zip((x, y), pis, grad_f.unbind(1), strict=True):
            if pi is None:
                grads.append(None)
                continue
            # sum over the two problems (c = x, y) of each left-hand point i: g_ic (z_i - sum_j pi_icj z_cj)
            grad = g.sum(-1, keepdim=True) * left
            for c, right in enumerate((x, y)):
                grad -= g[..., c, None] * torch.bmm(pi[:, :, c], right)
            grads.append(grad)
        return grads[0], grads[1], None, None, None


def _dual_value(w: torch.Tensor, pot: torch.Tensor, eps_f: float, rho: float | None) -> torch.Tensor:
    """(B,) divergence from the weights ``w`` (B, 2, L) of x and y (zero-padded) and the potentials ``pot``
    (B, 2, L, 2) of :func:`_extrapolate` (``docs/ot.md``, "Dual form").

    With ``s[r, c]`` = +1 for the symmetric problems (r = c), -1 for the two others:
    balanced ``S = <a, f_ba - f_aa> + <b, g_ab - g_bb> = -sum w s P`` (Feydy's thesis Eq. 3.209);
    unbalanced (Séjourné et al. Prop. 12) ``S = (rho + eps/2) t``, ``t = <a, e^{-f_aa/rho} - e^{-f_ba/rho}>
    + <b, e^{-g_bb/rho} - e^{-g_ab/rho}> = sum w s e^{-P/rho}``, with the gradient of ``(rho + eps) t``.
    """
    sign = torch.tensor([[1.0, -1.0], [-1.0, 1.0]], dtype=pot.dtype, device=pot.device)[None, :, None, :]
    ws = w[..., None] * sign
    if rho is None:
        return -(ws * pot).sum((1, 2, 3))
    t = (ws * (pot / -rho).exp()).sum((1, 2, 3))
    return (rho + eps_f / 2) * t + (eps_f / 2) * (t - t.detach())
