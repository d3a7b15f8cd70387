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


def _cost(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Half squared Euclidean distances ``C[b, i, j] = |x[b, i] - y[b, j]|^2 / 2``: (B,N,D),(B,M,D) -> (B,N,M).

    From the differences (``torch.cdist`` without its ``|x|^2 - 2 x.y + |y|^2`` matrix-product path, which
    geomloss uses): exact on the diagonal of C(x, x) and free of cancellation in float32 (with blur 0.001,
    C / eps would carry errors of order |x|^2 * 1e-7 / 1e-6). cdist's fused kernel does not materialise the
    (B, N, M, D) differences. Computed without autograd (:class:`_SoftminLeft` differentiates the cost).
    """
    return torch.cdist(x, y, compute_mode="donot_use_mm_for_euclid_dist").square() / 2


# Terms of a log-sum-exp more than e^80 below its largest term are raised to e^-80 times it: invisible
# next to that term (1 + 1e-35 == 1 in float32 and float64), and it keeps ``exp`` on its fast path
# (exp of arguments below about -87, the float32 underflow, or of -inf is ~30x slower on CPU).
_LOG_TINY = -80.0


def _softmin(eps: torch.Tensor, cost: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    r"""Soft C-transform ``f_i = -eps log sum_j exp(h_j - C_ij / eps)`` (geomloss ``softmin_tensorized``).

    eps (B,), cost (B,N,M), h (B,M) log-domain values (``-inf`` on absent points) -> (B,N).
    Every row of h must have a finite entry (empty problems are given uniform weights before).
    Differentiable (used for the last step): entries at -inf or raised to the floor get gradient 0.
    """
    z = h[:, None, :] - cost / eps[:, None, None]
    m = z.detach().amax(2, keepdim=True)
    lse = (z - m).clamp(min=_LOG_TINY).exp().sum(2).log() + m[..., 0]
    return -eps[:, None] * lse


def _lse_nograd(neg_inv_eps: torch.Tensor, cost: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """``logsumexp_j(h_j - C_ij / eps)`` (B,N) for the loop (no autograd): one temporary, in-place steps.

    neg_inv_eps (B,1,1) = -1/eps, cost (B,N,M), h (B,M) with a finite entry in every row.
    """
    z = torch.addcmul(h[:, None, :], cost, neg_inv_eps)
    m = z.amax(2, keepdim=True)
    return z.sub_(m).clamp_(min=_LOG_TINY).exp_().sum(2).log_().add_(m[..., 0])


def _bounds(
    x: torch.Tensor, px: torch.Tensor, y: torch.Tensor, py: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-problem bounding box (lo, hi), each (B, D), of the present points (mask px, py) of both sets."""
    inf = torch.tensor(float("inf"), dtype=x.dtype, device=x.device)
    lo = torch.minimum(torch.where(px[..., None], x, inf).amin(1), torch.where(py[..., None], y, inf).amin(1))
    hi = torch.maximum(
        torch.where(px[..., None], x, -inf).amax(1), torch.where(py[..., None], y, -inf).amax(1)
    )
    return lo, hi


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
        lo, hi = _bounds(x.detach(), a > 0, y.detach(), b > 0)
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

    pa, pb = a > 0, b > 0
    valid = pa.any(1) & pb.any(1)
    eps_tab, mode_tab, all_active = _schedule(x, a, y, b, valid, diameter, blur, scaling, extra_iterations)
    rho = None if reach is None else reach**_P
    # Log-weights: -inf on absent points; empty problems get uniform weights so that they stay finite
    # (their value is replaced by 0 below).
    neg_inf = torch.tensor(float("-inf"), dtype=x.dtype, device=x.device)
    a_log = torch.where(valid[:, None], torch.where(pa, a.detach().log(), neg_inf), 0.0)
    b_log = torch.where(valid[:, None], torch.where(pb, b.detach().log(), neg_inf), 0.0)

    costs = _costs(x.detach(), y.detach())
    potentials = _sinkhorn_loop(costs, a_log, b_log, eps_tab, mode_tab, all_active, rho)
    f_ba, g_ab, f_aa, g_bb = _extrapolate(x, y, a_log, b_log, costs, potentials, blur, rho)
    value = _dual_value(a, b, f_ba, g_ab, f_aa, g_bb, blur**_P, rho)
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
    x: torch.Tensor,
    a: torch.Tensor,
    y: torch.Tensor,
    b: torch.Tensor,
    valid: torch.Tensor,
    diameter: float | torch.Tensor | None,
    blur: float,
    scaling: float,
    extra_iterations: int,
) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """The epsilon table (B, T) and step modes (B, T) on x's device, and (T,) whether every problem makes
    an averaged update at each step; raises ValueError on negative weights.

    The diameters and schedules are computed on the host, as geomloss does (``.item()``), with one host
    transfer; problems with an empty side get the schedule of diameter ``blur``.
    """
    B = x.shape[0]
    if diameter is None:  # geomloss's ``max_diameter`` of the problem alone, present points only
        lo, hi = _bounds(x.detach(), a > 0, y.detach(), b > 0)
        d = torch.linalg.vector_norm(hi - lo, dim=-1)
    elif isinstance(diameter, torch.Tensor):
        d = diameter.detach().to(x.dtype).expand(B)
    else:
        d = torch.full((B,), float(diameter), dtype=x.dtype)
    neg = (a < 0).any(1) | (b < 0).any(1)
    d_host, neg_host, valid_host = (
        torch.stack([d.to(x.device), neg.to(x.dtype), valid.to(x.dtype)]).cpu().double().numpy()
    )
    if neg_host.any():
        raise ValueError("weights a and b must be nonnegative")
    d_host = np.where(valid_host > 0, d_host, blur)
    eps_np, mode_np = _epsilon_tables(d_host, blur, scaling, extra_iterations)
    eps_tab = torch.as_tensor(eps_np, dtype=x.dtype).to(x.device)
    mode_tab = torch.as_tensor(mode_np).to(x.device)
    return eps_tab, mode_tab, (mode_np == 2).all(0)


def _costs(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The costs of the four problems stacked, (4B, L, L) with L = max(N, M): C(x, y), C(y, x), C(x, x),
    C(y, y) of the detached sets x (B,N,D) and y (B,M,D), both padded with zero points to L."""
    with torch.no_grad():
        L = max(x.shape[1], y.shape[1])
        xd, yd = _pad_points(x, L), _pad_points(y, L)
        c_xy = _cost(xd, yd)
        return torch.cat([c_xy, c_xy.transpose(1, 2), _cost(xd, xd), _cost(yd, yd)])


def _sinkhorn_loop(
    cost: torch.Tensor,
    a_log: torch.Tensor,
    b_log: torch.Tensor,
    eps_tab: torch.Tensor,
    mode_tab: torch.Tensor,
    all_active: np.ndarray,
    rho: float | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Potentials (f_ba (B,N), g_ab (B,M), f_aa (B,N), g_bb (B,M)) after the epsilon schedule, no autograd;
    ``cost`` (4B, L, L) from :func:`_costs`.

    Each step updates the four problems (a,b), (b,a), (a,a), (b,b) from the same old potentials
    ("symmetric" updates, geomloss ``sinkhorn_loop``): ``f <- (f + lambda softmin_eps(C, log b + g/eps))/2``
    with the damping ``lambda = 1 / (1 + eps/rho)`` of unbalanced OT (1 when balanced).

    The four problems are solved as one batch of 4B: both sets are padded to L = max(N, M) points (padding
    has log-weight -inf, so it adds nothing to a log-sum-exp; its own potentials are finite and dropped), so
    that a step is one log-sum-exp over a (4B, L, L) cost instead of four (a quarter of the small-tensor
    operations that dominate this loop at the sizes of a training step).
    """
    B, N = a_log.shape
    M = b_log.shape[1]
    L = cost.shape[-1]
    # Per-step constants, (T, 4B, 1): 1/eps, -1/eps and -lambda eps, the same for the four problems.
    eps_cols = eps_tab.T.repeat(1, 4)[:, :, None]
    inv_eps = 1 / eps_cols
    lam_cols = torch.ones_like(eps_cols) if rho is None else 1 / (1 + eps_cols / rho)
    out_scale = -lam_cols * eps_cols
    neg_inv_eps = -inv_eps[..., None]
    modes = mode_tab.T.repeat(1, 4)[:, :, None]
    with torch.no_grad():
        a_pad, b_pad = _pad_log_weights(a_log, L), _pad_log_weights(b_log, L)
        # Rows of the stacked problems (costs from :func:`_costs`): f_ba, g_ab, f_aa, g_bb; each takes the
        # log-weights of the set it sums over and that set's current potential (its partner's for (a,b)
        # and (b,a), its own else).
        log_w = torch.cat([b_pad, a_pad, a_pad, b_pad])
        partner = torch.tensor([1, 0, 2, 3], device=cost.device)
        pot = cost.new_zeros(4, B, L)
        for t in range(eps_tab.shape[1]):
            h = torch.addcmul(log_w, pot[partner].view(4 * B, L), inv_eps[t])
            new = _lse_nograd(neg_inv_eps[t], cost, h).mul_(out_scale[t]).view(4, B, L)
            if all_active[t]:  # averaged update f <- (f + ft) / 2
                pot.add_(new).mul_(0.5)
            else:  # mode 2: averaged update; 1: initialisation (update from 0, kept); 0: not started
                mode = modes[t].view(4, B, 1)
                pot = torch.where(mode == 2, (pot + new) * 0.5, torch.where(mode == 1, new, pot))
    return pot[0, :, :N], pot[1, :, :M], pot[2, :, :N], pot[3, :, :M]


def _pad_points(x: torch.Tensor, n: int) -> torch.Tensor:
    """(B, N, D) points padded with zeros to (B, n, D)."""
    return x if x.shape[1] == n else torch.nn.functional.pad(x, (0, 0, 0, n - x.shape[1]))


def _pad_log_weights(w_log: torch.Tensor, n: int) -> torch.Tensor:
    """(B, N) log-weights padded with -inf (absent points) to (B, n)."""
    return (
        w_log
        if w_log.shape[1] == n
        else torch.nn.functional.pad(w_log, (0, n - w_log.shape[1]), value=-math.inf)
    )


def _extrapolate(
    x: torch.Tensor,
    y: torch.Tensor,
    a_log: torch.Tensor,
    b_log: torch.Tensor,
    costs: torch.Tensor,
    potentials: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
    blur: float,
    rho: float | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The last update at ``eps = blur^2`` with autograd on, from the detached ``potentials`` (geomloss
    ``sinkhorn_loop`` after its loop; ``sinkhorn_tensorized`` detaches the right-hand points of each cost).

    Every cost is the loop's (``costs`` from :func:`_costs`, the same values); where the left-hand points
    need a gradient, :class:`_SoftminLeft` gives it in closed form.
    """
    f_ba, g_ab, f_aa, g_bb = potentials
    B = x.shape[0]
    c_xy, c_yx, c_xx, c_yy = costs.view(4, B, *costs.shape[1:]).unbind(0)
    eps_f = blur**_P
    eps = torch.full((B,), eps_f, dtype=x.dtype, device=x.device)
    lam = 1.0 if rho is None else 1 / (1 + eps_f / rho)

    def softmin(
        left: torch.Tensor, right: torch.Tensor, cached: torch.Tensor, h: torch.Tensor
    ) -> torch.Tensor:
        cost = cached[:, : left.shape[1], : right.shape[1]]
        if left.requires_grad:
            return lam * _SoftminLeft.apply(left, right.detach(), cost, eps_f, h)
        return lam * _softmin(eps, cost, h)

    return (
        softmin(x, y, c_xy, b_log + g_ab / eps_f),
        softmin(y, x, c_yx, a_log + f_ba / eps_f),
        softmin(x, x, c_xx, a_log + f_aa / eps_f),
        softmin(y, y, c_yy, b_log + g_bb / eps_f),
    )


class _SoftminLeft(torch.autograd.Function):
    r"""The soft C-transform ``f_i = -eps log sum_j exp(h_j - C(x_i, y_j) / eps)`` of :func:`_softmin`, with
    its gradient with respect to the left-hand points in closed form.

    For ``C(x, y) = |x - y|^2 / 2``: ``df_i / dx_i = sum_j pi_ij (x_i - y_j) = x_i - (pi y)_i``, ``pi_ij =
    softmax_j(h_j - C_ij / eps)`` (the derivative of a log-sum-exp is a softmax; Feydy, "Geometric data
    analysis, beyond convolutions", PhD thesis 2020, Sec. 3.3, where the same expectation gives geomloss's
    gradients). One (B, N, M) softmax and one batched matrix product, where autograd through the cost
    would recompute ``C`` and differentiate ``torch.cdist`` and six element-wise steps. ``h`` and ``y`` get
    no gradient (both detached in :func:`_extrapolate`, as in geomloss).

    forward(x (B,N,D), y (B,M,D), cost (B,N,M) = C(x, y), eps: float, h (B,M)) -> (B,N).
    """

    @staticmethod
    def forward(ctx, x, y, cost, eps, h):  # noqa: D102 - see the class docstring
        z = h[:, None, :] - cost / eps
        m = z.amax(2, keepdim=True)
        p = (z - m).clamp_(min=_LOG_TINY).exp_()
        total = p.sum(2, keepdim=True)
        ctx.save_for_backward(x, y, p.div_(total))
        return -eps * (total.log() + m)[..., 0]

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_f):  # noqa: D102
        x, y, pi = ctx.saved_tensors
        return grad_f[..., None] * (x - torch.bmm(pi, y)), None, None, None, None


def _dual_value(
    a: torch.Tensor,
    b: torch.Tensor,
    f_ba: torch.Tensor,
    g_ab: torch.Tensor,
    f_aa: torch.Tensor,
    g_bb: torch.Tensor,
    eps_f: float,
    rho: float | None,
) -> torch.Tensor:
    """(B,) divergence from the potentials (``docs/ot.md``, "Dual form")."""
    if rho is None:  # balanced: S = <a, f_ba - f_aa> + <b, g_ab - g_bb> (Feydy's thesis Eq. 3.209)
        return (a * (f_ba - f_aa)).sum(1) + (b * (g_ab - g_bb)).sum(1)
    # Unbalanced: Séjourné et al. Prop. 12, value (rho + eps/2) [...], gradient (rho + eps) [...].
    t = (a * ((-f_aa / rho).exp() - (-f_ba / rho).exp())).sum(1) + (
        b * ((-g_bb / rho).exp() - (-g_ab / rho).exp())
    ).sum(1)
    return (rho + eps_f / 2) * t + (eps_f / 2) * (t - t.detach())
