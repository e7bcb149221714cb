"""Global search: many starting points, each polished by a batched Levenberg-Marquardt.

Objective (Chinchilla convention, Hoffmann et al. 2022; Besiroglu et al. 2024)::

    f(theta) = sum_i w_i * huber_delta( log Lhat_i(theta) - log L_i )

with log Lhat computed by log-sum-exp. All S starts are polished together: one (S, n, P)
Jacobian, one batched P x P solve per iteration. The step is IRLS for Huber: with
psi(res) = clip(res, -delta, delta) and W = psi(res)/res, g = J^T (w psi) is the exact gradient
and H = J^T diag(w W) J a majoriser of its Hessian, damped by lambda * diag(H) (Marquardt).
Starts that stop improving leave the active set, so late iterations are cheap.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .laws import Law


def huber(res: np.ndarray, delta: float) -> np.ndarray:
    """Huber loss: 0.5 res^2 for |res| <= delta, else delta * (|res| - delta / 2)."""
    a = np.abs(res)
    return np.where(a <= delta, 0.5 * res * res, delta * (a - 0.5 * delta))


def objective(law: Law, theta: np.ndarray, ctx: dict, logy: np.ndarray, weights, delta: float) -> np.ndarray:
    """Huber objective per start, shape (S,). Non-finite predictions count as +inf."""
    with np.errstate(all="ignore"):
        res = law.log_predict(theta, ctx) - logy
        f = (weights * huber(res, delta)).sum(axis=-1)
    return np.where(np.isfinite(f), f, np.inf)


@dataclass
class SearchResult:
    theta: np.ndarray      # (S, P) final raw parameters of every start
    objective: np.ndarray  # (S,)
    iterations: np.ndarray  # (S,) LM iterations used
    evaluations: int       # objective+Jacobian batches evaluated
    groups: np.ndarray = None  # (S,) which point-weight vector each start fits

    @property
    def best(self) -> int:
        return int(np.argmin(self.objective))

    def distinct(self, k: int, rtol: float = 1e-3) -> np.ndarray:
        """Indices of up to k best starts with pairwise distinct parameters."""
        return self.distinct_among(np.arange(len(self.objective)), k, rtol)

    def distinct_among(self, subset: np.ndarray, k: int, rtol: float = 1e-3) -> np.ndarray:
        """Positions (within ``subset``) of up to k best, pairwise distinct starts of ``subset``."""
        obj, th = self.objective[subset], self.theta[subset]
        order = np.argsort(obj)
        keep: list[int] = []
        for i in order:
            if not np.isfinite(obj[i]):
                break
            if all(np.max(np.abs(th[i] - th[j]) / (1 + np.abs(th[j]))) > rtol for j in keep):
                keep.append(int(i))
            if len(keep) == k:
                break
        return np.array(keep, int)


def _merge_duplicates(theta, f, active, tol, group=None):
    """Deactivate active starts that coincide (to ``tol``) with a better active start of the same group."""
    idx = np.flatnonzero(active)
    if idx.size < 2:
        return
    key = np.round(theta[idx] / tol).astype(np.int64)
    if group is not None:
        key = np.concatenate([key, group[idx, None]], axis=1)
    order = np.lexsort((f[idx],) + tuple(key.T[::-1]))  # by key, then objective
    k = key[order]
    same = np.all(k[1:] == k[:-1], axis=1)
    active[idx[order[1:][same]]] = False


def _grad_hess(law, theta, ctx, logy, weights, delta):
    with np.errstate(all="ignore"):
        logL, J = law.log_predict(theta, ctx, jac=True)
    res = logL - logy
    a = np.abs(res)
    psi = np.clip(res, -delta, delta)
    W = np.where(a <= delta, 1.0, delta / np.maximum(a, 1e-300)) * weights
    f = (weights * huber(res, delta)).sum(axis=-1)
    J[~np.isfinite(J)] = 0.0  # (S, P, n)
    g = np.matmul(J, (weights * psi)[..., None])[..., 0]
    H = np.matmul(J * W[:, None, :], np.swapaxes(J, 1, 2))
    f = np.where(np.isfinite(f), f, np.inf)
    return f, g, H


def lm_search(law: Law, ctx: dict, logy: np.ndarray, theta0: np.ndarray, *, weights=None,
              delta: float = 1e-3, max_iter: int = 300, ftol: float = 1e-10,
              bounds: tuple[np.ndarray, np.ndarray] | None = None, merge: float = 1e-2,
              search_ftol: float = 1e-6, refine: int = 8) -> SearchResult:
    """Polish every start in ``theta0`` (S, P) by batched, bound-respecting Levenberg-Marquardt.

    ``weights`` (n,) or (S, n): per-point weights (bootstrap counts, fold masks).
    ``merge``: every 4 iterations, active starts that sit at the same point (parameters equal
    to ``merge``, relative) *and* fit the same weights are merged into the best of them: from
    there their trajectories are the same, so polishing both is wasted work. 0 disables it.
    Two phases: every start converges to ``search_ftol`` (finding the basins), then the ``refine``
    best distinct results of each weight group converge to ``ftol``.
    """
    res = _lm(law, ctx, logy, theta0, weights, delta, max_iter, search_ftol, bounds, merge)
    if refine and search_ftol > ftol:
        groups = res.groups
        pick = np.concatenate([g[res.distinct_among(g, refine)] for g in
                               (np.flatnonzero(groups == k) for k in np.unique(groups))])
        W = None if weights is None else np.broadcast_to(np.asarray(weights, float), (len(theta0), logy.shape[-1]))[pick]
        fine = _lm(law, ctx, logy, res.theta[pick], W, delta, max_iter, ftol, bounds, 0.0)
        res.theta[pick], res.objective[pick] = fine.theta, fine.objective
        res.iterations[pick] += fine.iterations
        res.evaluations += fine.evaluations
    return res


def _lm(law, ctx, logy, theta0, weights, delta, max_iter, ftol, bounds, merge) -> SearchResult:
    theta = np.array(theta0, float)
    S, P = theta.shape
    n = logy.shape[-1]
    lo, hi = bounds if bounds is not None else law.raw_bounds()
    theta = np.clip(theta, lo, hi)
    weights = np.ones(n) if weights is None else np.asarray(weights, float)
    W_all = np.broadcast_to(weights, (S, n))
    groups = np.zeros(S, int) if weights.ndim == 1 else np.unique(W_all, axis=0, return_inverse=True)[1].ravel()
    logy_all = np.broadcast_to(logy, (S, n))

    f, g, H = _grad_hess(law, theta, ctx, logy_all, W_all, delta)
    lam = np.full(S, 1e-2)
    nu = np.full(S, 2.0)
    iters = np.zeros(S, int)
    stall = np.zeros(S, int)
    active = np.isfinite(f)
    evals = 1
    eye = np.eye(P)
    for it in range(max_iter):
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        th, gi, Hi = theta[idx], g[idx], H[idx].copy()
        # freeze parameters sitting on a bound whose descent direction points outward
        frozen = ((th <= lo + 1e-12) & (gi > 0)) | ((th >= hi - 1e-12) & (gi < 0))
        gi = np.where(frozen, 0.0, gi)
        Hi = np.where(frozen[:, :, None] | frozen[:, None, :], 0.0, Hi)
        d = np.einsum("spp->sp", Hi)
        A = Hi + lam[idx, None, None] * (d[:, :, None] * eye) + 1e-12 * eye + frozen[:, :, None] * eye
        try:
            step = -np.linalg.solve(A, gi[..., None])[..., 0]
        except np.linalg.LinAlgError:
            step = -np.stack([np.linalg.lstsq(a, b, rcond=None)[0] for a, b in zip(A, gi)])
        trial = np.clip(th + step, lo, hi)
        f_new, g_new, H_new = _grad_hess(law, trial, ctx, logy_all[idx], W_all[idx], delta)
        evals += 1
        better = f_new < f[idx]
        gain = np.where(better, (f[idx] - f_new) / np.maximum(np.abs(f[idx]), 1e-300), 0.0)
        # Nielsen (1999) damping from the gain ratio rho = actual / predicted reduction
        step = trial - th
        pred = -(np.einsum("sp,sp->s", gi, step) + 0.5 * np.einsum("sp,spq,sq->s", step, Hi, step))
        rho = (f[idx] - f_new) / np.maximum(pred, 1e-300)
        acc = idx[better]
        theta[acc], f[acc], g[acc], H[acc] = trial[better], f_new[better], g_new[better], H_new[better]
        lam[acc] = np.maximum(lam[acc] * np.maximum(1 / 3, 1 - (2 * np.clip(rho[better], 0, 1) - 1) ** 3), 1e-12)
        nu[acc] = 2.0
        rej = idx[~better]
        lam[rej] *= nu[rej]
        nu[rej] *= 2.0
        iters[idx] += 1
        # only accepted steps judge convergence; a rejected one just raises lambda
        stall[idx] = np.where(better, np.where(gain < ftol, stall[idx] + 1, 0), stall[idx])
        done = (stall[idx] >= 3) | (lam[idx] > 1e10)
        active[idx[done]] = False
        if merge and it % 4 == 3:
            _merge_duplicates(theta, f, active, merge, groups)
    return SearchResult(theta=theta, objective=f, iterations=iters, evaluations=evals, groups=groups)
