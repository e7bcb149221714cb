"""Prescreened starts against the full start grid, for a law that sets ``prescreen`` (total-data-scaled-rewarm).

    python benchmarks/bench_prescreen.py [--experiment m4L3] [--domain law] [--law total-data-scaled-rewarm]

Fits the law's general loss on the committed small-size runs of one validation experiment (small_runs/validate.py)
twice, with the same objective, bounds and polish: from the law's ``prescreen`` best grid points by their
objective at the start (what ``dcpt_law.fit`` does), and from every point of its grid (the baseline, the Chinchilla
convention). Prints both times, their ratio and both Huber objectives.
"""
from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

from dcpt_law.fitting import fit_law, law_context, start_points
from dcpt_law.laws import get_law
from dcpt_law.table import fit_rows, law_inputs, load_losses
from small_runs import validate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--experiment", default="m4L3", choices=validate.EXPERIMENTS)
    ap.add_argument("--domain", default="law")
    ap.add_argument("--law", default="total-data-scaled-rewarm")
    a = ap.parse_args()
    law = get_law(a.law)
    if not law.prescreen:
        raise SystemExit(f"law {a.law!r} sets no prescreen: it is always fitted from its whole grid")
    small = validate.heldout_args(validate.load(validate.TABLES), a.experiment, None)[0]
    rows = fit_rows(load_losses(small[small["domain"] == a.domain]), a.domain)
    X = law_inputs(rows, "general")
    ctx = law_context(law, X)
    grid = start_points(law, ctx, float(np.median(X["loss"])))
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, starts in (("prescreened", None), ("full grid", grid)):
            t = time.perf_counter()
            f = fit_law(rows, law, "general", domain=a.domain, warn=False, starts=starts)
            out[name] = (time.perf_counter() - t, f.objective, f.n_starts)
    print(f"{a.law} on {a.experiment} {a.domain}, general loss ({len(rows)} rows, grid of {len(grid)} starts):")
    for name, (sec, obj, n) in out.items():
        print(f"  {name:11s} {sec:7.1f} s  Huber {obj:.10g}  ({n} starts polished)")
    (tp, op, _), (tf, of, _) = out["prescreened"], out["full grid"]
    print(f"prescreened vs full grid: {tf / tp:.1f}x faster, objective {op / of - 1:+.2e} relative")


if __name__ == "__main__":
    main()
