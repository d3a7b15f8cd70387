r"""Batched, debiased, unbalanced Sinkhorn divergence between weighted point sets.

This is the optimal-transport (OT) term of the distillation in Guo, Hu, Alvarez, Salzmann, "Knowledge
Distillation for 6D Pose Estimation by Aligning Distributions of Local Predictions" (CVPR 2023,
arXiv:2205.14971): per keypoint, the score-weighted set of the student's local keypoint predictions is
aligned with the teacher's.  The authors' code (GUOShuxuan/kd-6d-pose-adlp, ``losses/kd_loss.py`` and
``arguments/argument_kd.py``) evaluates it with geomloss
``SamplesLoss("sinkhorn", p=2, blur=0.001, reach=0.5, scaling=0.5)`` on image coordinates divided by the
image width and height; the defaults below are those settings.

Definition (Séjourné, Feydy, Vialard, Trouvé, Peyré, "Sinkhorn divergences for unbalanced optimal
transport", arXiv:1910.12958, and geomloss ``_legacy/sinkhorn_divergence.py``), with
:math:`C(x, y) = \tfrac12 \|x - y\|^2`, :math:`\varepsilon = \text{blur}^2`, :math:`\rho = \text{reach}^2`
and the generalised :math:`\mathrm{KL}(p\,|\,q) = \langle p, \log(p/q)\rangle - \langle p, 1\rangle
+ \langle q, 1\rangle`:

.. math::
    \mathrm{OT}(\alpha, \beta) = \min_{\pi \ge 0} \langle \pi, C\rangle
        + \varepsilon \mathrm{KL}(\pi \,|\, \alpha\otimes\beta)
        + \rho \mathrm{KL}(\pi 1 \,|\, \alpha) + \rho \mathrm{KL}(\pi^T 1 \,|\, \beta)

    S(\alpha, \beta) = \mathrm{OT}(\alpha, \beta) - \tfrac12 \mathrm{OT}(\alpha, \alpha)
        - \tfrac12 \mathrm{OT}(\beta, \beta) + \tfrac{\varepsilon}{2} (m(\alpha) - m(\beta))^2

where :math:`m` is the total mass.  At the optimum the four dual potentials give (Séjourné et al.,
Prop. 12) :math:`S = (\rho + \varepsilon/2) [\langle \alpha, e^{-f_{aa}/\rho} - e^{-f_{ba}/\rho}\rangle
+ \langle \beta, e^{-g_{bb}/\rho} - e^{-g_{ab}/\rho}\rangle]`, which is what is evaluated here.

Why hand-written: POT (the project's OT library) solves one unbalanced entropic problem at a time (its
batched solver ``ot.batch.solve_batch`` is balanced only), has no epsilon-scaling for it and no debiased
divergence; geomloss's batched call needs equal point counts and one diameter (so one epsilon schedule) for
the whole batch, and it reads zero weights as ``log = -1e5`` rather than as absent points.  So the solver
below is a batched log-domain (logsumexp) Sinkhorn loop in torch that follows geomloss's algorithm step by
step; ``tests/losses/test_ot.py`` checks it against POT and geomloss.

Correspondence with POT (used by the tests): ``ot.solve(C, a, b, reg=blur**2, reg_type="KL",
unbalanced=reach**2, unbalanced_type="KL")`` minimises the same objective (its "KL" regulariser is
KL(pi | a b^T), its marginal penalties are KL to a and b), but its reported ``value`` uses POT's ``kl_div``
without the mass terms; the objective above is ``value + eps (m(a) m(b) - m(pi)) + rho (m(a) + m(b)
- 2 m(pi))``, i.e. the generalised KLs re-evaluated on POT's plan. S is then assembled from the three
problems (a,b), (a,a), (b,b) plus the mass term. POT's unbalanced Sinkhorn has no epsilon-scaling, so
it converges only for larger blurs (tested at 0.05 and 0.1; its ``sinkhorn_stabilized`` method returned
wrong values there, plain ``ot.solve`` did not).
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["group_diameters", "sinkhorn_divergence"]

_P = 2  # exponent of the ground cost C = |x - y|^p / p; the paper (and this module) use p = 2


def _cost(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Half squared Euclidean distances ``C[b, i, j] = |x[b, i] - y[b, j]|^2 / 2``: (B,N,D),(B,M,D) -> (B,N,M).

    Written as a difference (not geomloss's ``|x|^2 - 2 x.y + |y|^2``), which is exact on the diagonal of
    C(x, x) and avoids cancellation in float32.
    """
    return ((x[:, :, None, :] - y[:, None, :, :]) ** 2).sum(-1) / 2


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

    Args:
        x: (B, N, D) positions of the first sets (e.g. student keypoint predictions, normalised image
            coordinates: px / image width, px / image height as in the paper's code).
        a: (B, N) nonnegative weights of x (e.g. student scores); weight 0 marks padding.
        y: (B, M, D) positions of the second sets (teacher predictions).
        b: (B, M) nonnegative weights of y; weight 0 marks padding.
        blur: entropic blur; epsilon = blur^2 (the final temperature), same units as x.
        reach: marginal reach; rho = reach^2 (KL penalty of the marginals). ``None``: balanced OT
            (rho = infinity), as geomloss.
        scaling: ratio between successive blurs of the epsilon-scaling schedule (geomloss
            ``epsilon_schedule``), from the diameter down to ``blur``.
        diameter: start of the schedule. ``None``: per problem, the diameter of the bounding box of the
            present points of both sets (what geomloss computes when called on that problem alone). A float
            or a (B,) tensor fixes it; geomloss called on a batch uses one diameter for all its problems
            (see :func:`group_diameters`).
        extra_iterations: Sinkhorn iterations at the final epsilon added after geomloss's schedule (0 =
            geomloss's algorithm exactly). Large values converge to the exact entropic divergence, as POT
            computes it.

    Returns:
        (B,) divergences, in units of x squared times weight (same dtype and device as x).

    Algorithm (geomloss ``sinkhorn_loop``, J. Feydy's thesis Alg. 3.5): symmetric log-domain updates
    :math:`f \leftarrow \tfrac12 (f + \lambda\,\mathrm{softmin}_\varepsilon(C, \log\beta + g/\varepsilon))`
    with the unbalanced damping :math:`\lambda = 1 / (1 + \varepsilon/\rho)` (Séjourné et al., Table 1),
    one update per epsilon of the schedule, for the four problems (a,b), (b,a), (a,a), (b,b), all without
    autograd; then one last update from detached potentials with autograd on, and the dual formula above.
    Gradients therefore follow the envelope theorem, like geomloss. The gradient of the value is that of
    :math:`(\rho + \varepsilon)[\ldots]` (Séjourné et al., Prop. 12; geomloss's ``UnbalancedWeight``
    describes this but, being a ``Module.backward``, never applies it, so geomloss's gradients are
    :math:`\kappa = (\rho + \varepsilon/2) / (\rho + \varepsilon)` times these: 1 - 2e-6 at the paper's
    settings). These gradients equal POT's (see the tests).

    Convergence: geomloss's schedule makes one update per epsilon. In unbalanced OT the common shift of
    the potentials (the mass mode) contracts only by rho / (rho + eps) per update (1 - 4e-6 at the paper's
    settings), so when the masses differ the result is far from the converged divergence and depends on
    where the schedule starts: on keypoint-like problems the per-image diameter of the paper's code gives
    values ~6x those of the per-problem default (``benchmarks/ot.py``). Pass
    ``diameter=group_diameters(...)`` to reproduce the paper's code exactly.

    Padding: points of weight 0 are absent (log-weight ``-inf``): they change neither values nor
    gradients of the other entries; their position gradient is 0; their weight gradient is the first
    variation (the derivative for a point of infinitesimal weight). Their positions must be finite.

    Empty problems: if one side of a problem has total weight 0, its value is defined as 0 with zero
    gradients (the limit at 0 mass has an infinite derivative); callers should skip such problems, e.g.
    with ``(a > 0).any(1) & (b > 0).any(1)``.

    Runs on x's device and dtype (a, b are cast to it). float32: values carry an absolute error of about
    1e-7 * rho * mass (the dual formula subtracts terms of size rho * mass), i.e. ~1e-6 relative on
    distinct sets, up to ~1e-4 on nearly identical ones; position gradients at blur 0.001 are limited by
    float32 (a softmax of potentials / 1e-6): median ~4e-6, worst ~1e-2 relative to float64 (geomloss
    float32: median ~2e-4, worst ~1e-2).
    """
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
    a = a.to(x.dtype)
    b = b.to(x.dtype)
    B, N, _ = x.shape
    M = y.shape[1]
    if B == 0 or N == 0 or M == 0:
        return (a.sum(1) * b.sum(1)) * 0

    pa, pb = a > 0, b > 0
    valid = pa.any(1) & pb.any(1)
    if diameter is None:  # geomloss's ``max_diameter`` of the problem alone, present points only
        lo, hi = _bounds(x.detach(), pa, y.detach(), pb)
        d = torch.linalg.vector_norm(hi - lo, dim=-1)
    elif isinstance(diameter, torch.Tensor):
        d = diameter.detach().to(x.dtype).expand(B)
    else:
        d = torch.full((B,), float(diameter), dtype=x.dtype)
    # One host transfer: the schedules are built on the host, as geomloss does (``.item()``).
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
    rho = None if reach is None else reach**_P

    # Log-weights: -inf on absent points; empty problems get uniform weights so that they stay finite
    # (their value is replaced by 0 below).
    neg_inf = torch.tensor(float("-inf"), dtype=x.dtype, device=x.device)
    a_log = torch.where(valid[:, None], torch.where(pa, a.detach().log(), neg_inf), 0.0)
    b_log = torch.where(valid[:, None], torch.where(pb, b.detach().log(), neg_inf), 0.0)

    # Per-step constants, (T, B, 1): 1/eps, -1/eps and -lambda eps, lambda = 1 / (1 + eps/rho) the
    # damping of unbalanced OT (1 when balanced).
    eps_cols = eps_tab.T[:, :, None]
    inv_eps = 1 / eps_cols
    lam_cols = torch.ones_like(eps_cols) if rho is None else 1 / (1 + eps_cols / rho)
    out_scale = -lam_cols * eps_cols
    neg_inv_eps = -inv_eps[..., None]
    modes = mode_tab.T[:, :, None]
    all_active = (mode_np == 2).all(0)

    with torch.no_grad():
        xd, yd = x.detach(), y.detach()
        c_xy = _cost(xd, yd)
        c_yx = c_xy.transpose(1, 2).contiguous()
        c_xx = _cost(xd, xd)
        c_yy = _cost(yd, yd)
        f_ba = x.new_zeros(B, N)
        g_ab = x.new_zeros(B, M)
        f_aa = x.new_zeros(B, N)
        g_bb = x.new_zeros(B, M)
        for t in range(eps_tab.shape[1]):
            # f <- lambda softmin_eps(C, log b + g / eps), for the four problems at once ("symmetric"
            # updates from the same old potentials, geomloss ``sinkhorn_loop``).
            ie, ne, sc = inv_eps[t], neg_inv_eps[t], out_scale[t]
            ft_ba = _lse_nograd(ne, c_xy, torch.addcmul(b_log, g_ab, ie)).mul_(sc)
            gt_ab = _lse_nograd(ne, c_yx, torch.addcmul(a_log, f_ba, ie)).mul_(sc)
            ft_aa = _lse_nograd(ne, c_xx, torch.addcmul(a_log, f_aa, ie)).mul_(sc)
            gt_bb = _lse_nograd(ne, c_yy, torch.addcmul(b_log, g_bb, ie)).mul_(sc)
            if all_active[t]:  # averaged update f <- (f + ft) / 2
                f_ba, g_ab, f_aa, g_bb = (
                    f_ba.add_(ft_ba).mul_(0.5),
                    g_ab.add_(gt_ab).mul_(0.5),
                    f_aa.add_(ft_aa).mul_(0.5),
                    g_bb.add_(gt_bb).mul_(0.5),
                )
            else:  # mode 2: averaged update; 1: initialisation (update from 0, kept); 0: not started
                mode = modes[t]
                f_ba = torch.where(mode == 2, (f_ba + ft_ba) * 0.5, torch.where(mode == 1, ft_ba, f_ba))
                g_ab = torch.where(mode == 2, (g_ab + gt_ab) * 0.5, torch.where(mode == 1, gt_ab, g_ab))
                f_aa = torch.where(mode == 2, (f_aa + ft_aa) * 0.5, torch.where(mode == 1, ft_aa, f_aa))
                g_bb = torch.where(mode == 2, (g_bb + gt_bb) * 0.5, torch.where(mode == 1, gt_bb, g_bb))

    # Last "extrapolation" step with autograd on, from detached potentials (geomloss ``sinkhorn_loop``
    # after its loop; ``sinkhorn_tensorized`` detaches the right-hand points of each cost matrix).
    eps_f = blur**_P
    eps = torch.full((B,), eps_f, dtype=x.dtype, device=x.device)
    lam = 1.0 if rho is None else 1 / (1 + eps_f / rho)
    f_ba, g_ab, f_aa, g_bb = (
        lam * _softmin(eps, _cost(x, y.detach()), b_log + g_ab / eps_f),
        lam * _softmin(eps, _cost(y, x.detach()), a_log + f_ba / eps_f),
        lam * _softmin(eps, _cost(x, x.detach()), a_log + f_aa / eps_f),
        lam * _softmin(eps, _cost(y, y.detach()), b_log + g_bb / eps_f),
    )

    if rho is None:  # balanced: S = <a, f_ba - f_aa> + <b, g_ab - g_bb> (Feydy's thesis Eq. 3.209)
        value = (a * (f_ba - f_aa)).sum(1) + (b * (g_ab - g_bb)).sum(1)
    else:  # unbalanced: Séjourné et al. Prop. 12, value (rho + eps/2) [...], gradient (rho + eps) [...]
        t = (a * ((-f_aa / rho).exp() - (-f_ba / rho).exp())).sum(1) + (
            b * ((-g_bb / rho).exp() - (-g_ab / rho).exp())
        ).sum(1)
        value = (rho + eps_f / 2) * t + (eps_f / 2) * (t - t.detach())
    return torch.where(valid, value, 0.0)
