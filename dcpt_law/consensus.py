"""Usage 1 four ways, and their median.

The best ratio under the forgetting constraint (usage 1: min L_d subject to L_g <= (1 + T) L_g0) at a target
model of N parameters, whose base model has general loss G = L_g0 (nats, before CPT), after D CPT tokens:

==================  ===========================================================================================
``law``             the fitted law's answer (:func:`dcpt_law.predict_ratio`), with its bootstrap interval
``crossings``       each swept size's observed crossing, r* = a + b ln N (:func:`dcpt_law.crossing_scaling`;
                    pooled over the table's domains where it holds several), with its prediction interval
``cells``           ln L = a + b ln G per logged (D, r) (:func:`dcpt_law.cell_scaling`), read off at G
``relative cells``  ln(L / G) = a + b ln N per logged (D, r) (``relative=True``), read off at N, times G
==================  ===========================================================================================

Each route fails somewhere else: the law where its form cannot follow the runs (a general loss that rises and
falls with D after re-warming the learning rate), the crossings and the relative cells where a larger N comes
with a base model barely better than the swept ones, the cells in ln G where the sweep's top step is flat. The
answer is the median of those that answer; the spread (largest minus smallest) says how far to trust it.
Measured over our validation (docs/validation.md, headline; 15 experiments, 60 (experiment, domain) cases, the
held-out size 3-6x the largest fitted one): the median missed the held-out size's observed crossing by a median
0.010 in r_d (the law 0.029, the crossings pooled 0.014, the cells 0.020, the relative cells 0.014 where they
answer); where the spread was at most :data:`AGREE` (37 cases) by a median 0.008 and at most 0.049, beyond it
(23 cases) by a median 0.043. The four routes and that threshold were chosen on these same runs. Held out
(four domains no choice saw, medicine, math, manuals and dictionary, answers written down from the small sizes
before the target's runs near them were read; validate's m4n): the median missed by 0.023, 0.008, 0.011 and 0.039
(its spread 0.066 warned there), the law by 0.011, 0.006, 0.005 and 0.055.
A spread over :data:`AGREE` warns: train the target at a few ratios across the answers instead.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from . import _warn
from .cells import cell_scaling
from .crossings import crossing_scaling, domain_loss_turns, turns_line
from .optimisation import RatioResult, _base_general_loss, _resolve, predict_ratio
from .table import load_losses
from .units import format_count, parse_count

#: the routes' answers agree where their spread (largest minus smallest r_d) is at most this; beyond it warns
AGREE = 0.05
ROUTES = ("law", "crossings", "cells", "relative cells")


@dataclass
class Consensus:
    """Answer of :func:`usage1_consensus`. ``float(c)`` is the median r_d of the routes that answered.

    ``answers``: one row per route (:data:`ROUTES`): route, ratio (NaN where it gave none), lo, hi (its 90%
    interval where it has one), note (why it gave none, or what it read). ``law``: the law route's whole
    :class:`~dcpt_law.optimisation.RatioResult` (the losses at its ratio, whether the constraint binds), None
    where it gave no answer."""

    ratio: float
    spread: float
    answers: pd.DataFrame
    model_size: float
    tokens: float
    tolerance: float
    base_general_loss: float
    law: "RatioResult | None" = None

    def __float__(self) -> float:
        return float(self.ratio)

    @property
    def agree(self) -> bool:
        """Whether the routes that answered lie within :data:`AGREE` of each other (and at least two answered)."""
        return bool(self.answers["ratio"].notna().sum() >= 2 and self.spread <= AGREE)

    def __repr__(self) -> str:
        n = int(self.answers["ratio"].notna().sum())
        check = (f"{'agree' if self.agree else 'DISAGREE'}: threshold {AGREE:g}" if n >= 2 else
                 "unchecked: no other route answered")
        head = (f"Consensus(N={format_count(self.model_size)}, D={format_count(self.tokens)}, "
                f"G={self.base_general_loss:.4f}, tolerance {self.tolerance:.1%}: median of {n} route{'s' * (n != 1)} "
                f"r_d={self.ratio:.4f}, spread {self.spread:.3f} ({check}))")
        rows = []
        for r in self.answers.itertuples():
            interval = f" ({r.lo:.3f}-{r.hi:.3f})" if np.isfinite(r.lo) else ""
            value = f"{r.ratio:.4f}{interval}" if np.isfinite(r.ratio) else "no answer"
            rows.append(f"  {r.route:<15s} {value:<22s} {r.note}")
        return "\n".join([head, *rows])


def usage1_consensus(fit, table, model_size, tokens=None, tolerance: float = 0.03, base_general_loss=None,
                     domain: str | None = None, warn: bool = True) -> Consensus:
    """Usage 1 at ``model_size`` (parameters) after ``tokens`` CPT tokens (a count the sweep logged; default the
    fit's largest) by the four routes of this module and their median; ``base_general_loss``: the target's base
    model's general loss (nats, before CPT; default the table's base row for that size). ``table``: the sweep's
    loss table (every domain: the crossings are pooled over them). Warns (FitWarning) where the routes that
    answered spread over :data:`AGREE` in r_d, or fewer than two answered."""
    f = _resolve(fit, domain)
    df = load_losses(table)
    dom = f.domain
    N = parse_count(model_size, "model_size")
    D = parse_count(tokens, "tokens") if tokens is not None else float(f["domain"].ranges["tokens"][1])
    G = _base_general_loss(f, N, base_general_loss)
    rows, recommendation = [], []

    def attempt(route, answer):
        try:
            ratio, interval, note = answer()
        except ValueError as exc:
            ratio, interval, note = np.nan, None, f"no answer: {exc}"
        lo, hi = interval or (np.nan, np.nan)
        rows.append({"route": route, "ratio": float(ratio), "lo": float(lo), "hi": float(hi), "note": note})

    def law():
        rec = predict_ratio(N, D, fit=f, tolerance=tolerance, base_general_loss=G, warn=warn)
        recommendation.append(rec)
        return rec.ratio, rec.interval, ("" if rec.feasible else "no ratio meets the tolerance by the law: the r_d "
                                         "of its least rise")

    def crossings():
        pool = df["domain"].nunique() > 1
        p = crossing_scaling(df, tokens=D, tolerance=tolerance, domain=dom, pool=pool).predict(N, warn=warn)
        return p.ratio, p.interval, "pooled over the table's domains" if pool else ""

    def cells(**kw):
        def answer():
            c = cell_scaling(df, domain=dom, warn=warn, **kw)
            rec = c.predict_ratio(D, G, tolerance, model_size=N, warn=warn)
            return rec.ratio, None, f"{c.spans_past(G, N):.2f} spans of ln {'N' if kw else 'G'} past the sweep"
        return answer

    attempt("law", law)
    attempt("crossings", crossings)
    attempt("cells", cells())
    attempt("relative cells", cells(x="model_size", relative=True))
    answers = pd.DataFrame(rows)
    got = answers["ratio"].dropna()
    if got.empty:
        raise ValueError("usage 1: no route gave an answer: " + "; ".join(
            f"{r.route}: {r.note}" for r in answers.itertuples()))
    out = Consensus(float(got.median()), float(got.max() - got.min()), answers, N, D, tolerance, G,
                    recommendation[0] if recommendation else None)
    if warn and not out.agree:
        why = (f"only the {answers.loc[got.index[0], 'route']} answered" if len(got) < 2 else
               f"the routes' answers spread over {out.spread:.3f} in r_d (" + ", ".join(
                   f"{r.route} {r.ratio:.3f}" for r in answers.itertuples() if np.isfinite(r.ratio)) + ")")
        _warn.emit(f"usage 1 at N={format_count(N)}: {why}; in our validation the median then missed by ~0.04: train "
                   "the target at a few ratios across the answers", _warn.FitWarning)
    if warn:
        try:
            turns_line(domain_loss_turns(df, tokens=D, domain=dom), answer=out.ratio)
        except ValueError:  # D not logged: the runs cannot say
            pass
    return out
