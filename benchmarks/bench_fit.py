"""Global-search speed: our batched fitter vs a plain loop of scipy L-BFGS-B over the same starts.

    python benchmarks/bench_fit.py [--baseline-starts K] [--seed S]

Both minimise the same objective (sum of Huber(1e-3) on log-loss residuals, log-sum-exp form, the
same centred parametrisation and bounds) on the same data (4 sizes x 8 token counts x 9 ratios
of D-CPT losses with 0.5% noise) from the same start grid (the dcpt law's default, 3888 starts).
Two baselines: the plain loop (L-BFGS-B with its default finite-difference gradient, as in
Epoch AI's Chinchilla replication) and the same loop given a hand-written analytic gradient
(the strongest per-start loop). ``--baseline-starts K`` times each loop on K evenly spaced starts
and scales its time to the whole grid (said so in the output).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from scipy.optimize import minimize

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from conftest import synthetic_table  # noqa: E402

from dcpt_law.fitting import start_points  # noqa: E402
from dcpt_law.laws import DCPT  # noqa: E402
from dcpt_law.search import lm_search  # noqa: E402
from dcpt_law.table import fit_rows, law_inputs  # noqa: E402

DELTA = 1e-3


def baseline_objective(logN, logD, logr, r0, r, logy):
    """f(theta) and its gradient for one start, plain numpy (what a per-start loop would use).
    theta = [logE, logA, alpha, logB, beta, eta, logC, gamma, logeps], centred logN, logD."""

    def f(th):
        lE, lA, a, lB, b, eta, lC, g, leps = th
        eps = np.exp(leps)
        re = r + eps
        t = np.stack([np.full_like(logN, lE), lA - a * logN,
                      np.where(r0 & (eta > 0), -np.inf, lB + eta * logr - b * logD), lC - g * np.log(re)])
        m = t.max(0)
        w = np.exp(t - m)
        s = w.sum(0)
        res = m + np.log(s) - logy
        a_ = np.abs(res)
        hub = np.where(a_ <= DELTA, 0.5 * res ** 2, DELTA * (a_ - 0.5 * DELTA)).sum()
        psi = np.clip(res, -DELTA, DELTA)
        p = w / s
        grad = np.array([
            (psi * p[0]).sum(), (psi * p[1]).sum(), -(psi * p[1] * logN).sum(),
            (psi * p[2]).sum(), -(psi * p[2] * logD).sum(), (psi * p[2] * logr).sum(),
            (psi * p[3]).sum(), -(psi * p[3] * np.log(re)).sum(), -(psi * p[3] * g * eps / re).sum(),
        ])
        if not np.isfinite(hub):
            return 1e10, np.zeros(9)
        return hub, grad

    return f


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--baseline-starts", type=int, default=0, help="time the loop on K starts and scale (0 = all)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    X = law_inputs(fit_rows(synthetic_table(args.seed)), "domain")
    ctx = DCPT.prepare(X["N"], X["D"], X["r"])
    logy = np.log(X["loss"])
    grid = start_points(DCPT, ctx, float(np.median(X["loss"])))
    lo, hi = DCPT.raw_bounds()
    print(f"data: {len(logy)} points; start grid: {len(grid)} starts; law dcpt (9 parameters)")

    t = time.perf_counter()
    res = lm_search(DCPT, ctx, logy, grid, delta=DELTA)
    ours_s = time.perf_counter() - t
    ours_f = float(res.objective.min())
    print(f"ours   (batched LM, all starts at once): {ours_s:8.2f} s   best objective {ours_f:.9g}")

    f = baseline_objective(ctx["logN"], ctx["logD"], ctx["logr"], ctx["r0"], ctx["r"], logy)
    idx = np.arange(len(grid))
    if args.baseline_starts and args.baseline_starts < len(grid):
        idx = np.linspace(0, len(grid) - 1, args.baseline_starts).round().astype(int)
    note = "" if len(idx) == len(grid) else f" (timed on {len(idx)} starts, scaled to {len(grid)})"
    for label, kwargs, fun in (("plain: finite-difference gradient", {}, lambda th: f(th)[0]),
                               ("given our analytic gradient", {"jac": True}, f)):
        best = np.inf
        t = time.perf_counter()
        for i in idx:
            out = minimize(fun, grid[i], method="L-BFGS-B", bounds=list(zip(lo, hi)), **kwargs)
            best = min(best, float(out.fun))
        base_s = (time.perf_counter() - t) * len(grid) / len(idx)
        print(f"scipy L-BFGS-B loop, {label}: {base_s:8.2f} s   best objective {best:.9g}{note}")
        verdict = "equal or lower" if ours_f <= best * (1 + 1e-9) else "HIGHER"
        print(f"  speed-up {base_s / ours_s:6.1f}x   objective ours - scipy {ours_f - best:+.3g} ({verdict})")


if __name__ == "__main__":
    main()
