"""The three uses of a fitted D-CPT Law (Que et al. 2024, section 4).

1. :func:`predict_ratio`: min_r L_d(N, D, r)  s.t.  (L_g(N, D, 1-r) - L_g0) / L_g0 <= T;
   :func:`ratio_frontier`: its answer for every tolerance T at once (the Pareto front of the two losses).
2. :func:`optimal_ratio_limited_domain`: only D_dom domain tokens exist; min_r L_d(N, D_dom/r, r).
3. :func:`allocate_compute`: fixed compute C = 6 N D at ratio r; min over N of L_d(N, C/(6N), r).

Searches over r are exact to ~1e-9: a dense scan brackets every candidate, then Brent's method
(minimum) and brentq (constraint boundary) refine it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import brentq, minimize_scalar

from . import _warn
from .fitting import Fit, load_fit, lookup_base_general
from .units import check_tolerance, format_count, parse_count

_CURRENT: Fit | None = None
_SCAN = 2001


def use_fit(fit_or_path) -> Fit:
    """Set the default fit used when ``fit=None`` (a :class:`Fit` or a JSON path)."""
    global _CURRENT
    _CURRENT = fit_or_path if isinstance(fit_or_path, Fit) else load_fit(fit_or_path)
    return _CURRENT


def _resolve(fit, domain: str | None = None) -> Fit:
    """The Fit to use: ``fit``, a path, or the default; a cross-domain fit gives its ``domain``'s law."""
    if fit is None:
        if _CURRENT is None:
            raise ValueError("no fit given: pass fit=... or call dcpt_law.use_fit('fits/NAME.json') first")
        fit = _CURRENT
    if isinstance(fit, (str, Path)):
        fit = load_fit(fit)
    if hasattr(fit, "for_domain"):  # CrossDomainFit
        if domain is None:
            raise ValueError(f"a cross-domain fit needs domain=...: one of {sorted(fit.coefficients)}")
        return fit.for_domain(domain)
    if domain is not None and fit.domain and domain != fit.domain:
        raise ValueError(f"this fit is for domain {fit.domain!r}, not {domain!r}")
    return fit


def _interval(samples: list[float]):
    s = np.asarray([x for x in samples if np.isfinite(x)])
    return (float(np.quantile(s, 0.05)), float(np.quantile(s, 0.95))) if s.size else None


def _minimise_1d(func, lo: float, hi: float, n: int = _SCAN) -> float:
    """Global minimiser of a smooth 1-D function on [lo, hi]: dense scan + Brent polish."""
    xs = np.linspace(lo, hi, n)
    ys = func(xs)
    ys = np.where(np.isfinite(ys), ys, np.inf)
    i = int(np.argmin(ys))
    a, b = xs[max(i - 1, 0)], xs[min(i + 1, n - 1)]
    if b - a <= 0:
        return float(xs[i])
    res = minimize_scalar(lambda x: float(func(np.array([x]))[0]), bounds=(a, b), method="bounded",
                          options={"xatol": 1e-10})
    cands = [(float(ys[i]), float(xs[i]))]
    if np.isfinite(res.fun):
        cands.append((float(res.fun), float(res.x)))
    return min(cands)[1]


@dataclass
class RatioResult:
    """Answer of :func:`predict_ratio`. ``float(result)`` is the recommended domain ratio r_d."""

    ratio: float
    domain_loss: float
    general_loss: float
    base_general_loss: float
    tolerance: float
    constraint_active: bool
    feasible: bool = True
    model_size: float = float("nan")
    tokens: float = float("nan")
    interval: tuple[float, float] | None = None
    domain_loss_interval: tuple[float, float] | None = None
    infeasible_share: float = 0.0  # bootstrap resamples in which no ratio meets the tolerance
    least_increase: float = float("nan")  # min over r_d of (L_g - L_g0) / L_g0: the smallest tolerance that any
    #                                       ratio meets (set when infeasible: then ``ratio`` is where it is reached)

    def __float__(self) -> float:
        return float(self.ratio)

    @property
    def general_loss_increase(self) -> float:
        return (self.general_loss - self.base_general_loss) / self.base_general_loss

    def __repr__(self) -> str:
        ci = f" (90% CI {self.interval[0]:.3f}-{self.interval[1]:.3f})" if self.interval else ""
        if self.infeasible_share > 0:
            ci = ci[:-1] + f"; infeasible in {self.infeasible_share:.0%} of bootstrap resamples)"
        bind = "binding" if self.constraint_active else "not binding"
        feas = "" if self.feasible else (
            f"  [INFEASIBLE: no ratio meets the tolerance; shown: the least general-loss increase, "
            f"{self.least_increase:+.2%}; dcpt_law.ratio_frontier gives r_d for every larger tolerance]")
        return (f"RatioResult(N={format_count(self.model_size)}, D={format_count(self.tokens)}: domain ratio "
                f"r_d={self.ratio:.4f}{ci}; domain loss {self.domain_loss:.4f}, general loss {self.general_loss:.4f} "
                f"({self.general_loss_increase * 100:+.2f}% vs base {self.base_general_loss:.4f}, "
                f"tolerance {self.tolerance * 100:.1f}%, {bind}){feas}")

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["general_loss_increase"] = self.general_loss_increase
        return d


def _base_general_loss(fit: Fit, N: float, given) -> float:
    """L_g0 (= G of the anchored laws): ``given``, else the fit table's tokens = 0 row for size N."""
    if not (np.isfinite(N) and N > 0):
        raise ValueError(f"model_size={N!r} must be > 0 parameters")
    known = {float(n): float(v) for n, v in fit.base_losses["general_loss"].items()}
    return float(lookup_base_general(known, N, given))


def _solve_ratio(dom, gen, L_g0, T):
    """Exact constrained minimiser. dom/gen: r_d array -> loss. Returns (r, feasible, active).

    The feasible set {r: L_g(r) <= (1+T) L_g0} may be several intervals (non-monotone fits):
    each is found on a dense scan, its ends refined by brentq, its minimum by Brent.
    """
    bound = L_g0 * (1.0 + T)
    xs = np.linspace(0.0, 1.0, _SCAN)
    feas = gen(xs) <= bound
    if not feas.any():
        return _minimise_1d(gen, 0.0, 1.0), False, True
    slack = lambda x: float(bound - gen(np.array([x]))[0])  # noqa: E731
    cands = []  # (domain loss, r)
    i = 0
    while i < _SCAN:
        if not feas[i]:
            i += 1
            continue
        j = i
        while j + 1 < _SCAN and feas[j + 1]:
            j += 1
        a = xs[i] if i == 0 else brentq(slack, xs[i - 1], xs[i], xtol=1e-12)
        b = xs[j] if j == _SCAN - 1 else brentq(slack, xs[j], xs[j + 1], xtol=1e-12)
        r = _minimise_1d(dom, a, b, n=max(3, j - i + 1))
        cands += [(float(dom(np.array([x]))[0]), float(x)) for x in (r, a, b)]
        i = j + 1
    loss, r = min(cands)
    # binding: the optimum sits where the general-loss constraint holds with equality
    return r, True, abs(slack(r)) <= 1e-7 * bound


def _check_monotone_at(fd, fg, N: float, D: float, r_rec: float, G: float, tol: float = 1e-3, near: float = 0.05) -> None:
    """Warn when, within ``near`` of the recommended r_d at this (N, D), the fitted domain loss rises
    with r_d or the general loss falls with it (e.g. the D-CPT law's jump at r = 0 of its corpus)."""
    from ._warn import FitWarning

    r = np.linspace(0.0, 1.0, 401)
    for lf, sign, what in ((fd, 1.0, "domain loss rises"), (fg, -1.0, "general loss falls")):
        L = lf.predict(N, D, r, warn=False, base_general_loss=G)
        step = sign * np.diff(L) / L[1:]
        bad = (step > tol) & (np.abs(r[1:] - r_rec) <= near + 1e-12)
        if bad.any():
            i = int(np.flatnonzero(bad)[np.argmax(step[bad])])
            _warn.emit(f"at N={format_count(N)}, D={format_count(D)} the fitted {what} with r_d near "
                       f"r_d={r[i]:.3f} (by {step[i]:.2%} over a step of 0.0025), next to the recommended "
                       f"r_d={r_rec:.3f}: the law is not monotone where it is used, so the recommendation may be "
                       "an artefact of the fit; check it against measured runs", FitWarning)


def predict_ratio(model_size, tokens, *, fit=None, tolerance: float = 0.03, base_general_loss=None,
                  warn: bool = True, domain: str | None = None) -> RatioResult:
    """Usage 1: the domain ratio r_d that minimises the predicted domain loss while the general
    loss rises at most ``tolerance`` (relative) above the base model's L_g0.

    model_size: N (parameters, "7B" accepted); tokens: D (CPT tokens, "100B" accepted).
    L_g0: ``base_general_loss``, else the fit table's tokens == 0 row for that size (it is also the G
    of the anchored laws).
    domain: which domain, for a cross-domain fit (:func:`dcpt_law.fit_cross_domain`).
    With a bootstrapped fit the result has a 90% ``interval``: the spread over resamples of the fitted runs, so
    their noise only, not the error of carrying the law to a larger size. Held out at ~4x the largest fitted size
    it held the observed answer in 17 of 56 cases, and the median error (0.029) exceeded its median width (0.022)
    (docs/validation.md): read it as a lower bound on the uncertainty. At a D the sweep logged,
    :func:`dcpt_law.crossing_scaling` answers the same question from the runs without a law, with an interval over
    the sizes (45 of 56 there; fitted over several domains together, ``pool=True``, closer than the law in 12 of
    14 experiments); where the two disagree beyond it, trust neither. :func:`dcpt_law.law_misses` checks
    this answer at the swept sizes against their observed crossings: a miss over 0.05 there marks a law to distrust.
    """
    f = _resolve(fit, domain)
    N, D = parse_count(model_size, "model_size"), parse_count(tokens, "tokens")
    tolerance = check_tolerance(tolerance)
    L_g0 = _base_general_loss(f, N, base_general_loss)
    fd, fg = f["domain"], f["general"]
    fd.predict(N, D, 0.5, warn=warn, base_general_loss=L_g0)  # input checks + extrapolation warning, once

    def solve(pd_, pg_):
        dom = lambda r: fd.predict(N, D, r, params=pd_, warn=False, base_general_loss=L_g0)  # noqa: E731
        gen = lambda r: fg.predict(N, D, r, params=pg_, warn=False, base_general_loss=L_g0)  # noqa: E731
        return _solve_ratio(dom, gen, L_g0, tolerance)

    r, feasible, active = solve(None, None)
    if warn:
        _check_monotone_at(fd, fg, N, D, r, L_g0)
    Ld = float(fd.predict(N, D, r, warn=False, base_general_loss=L_g0))
    Lg = float(fg.predict(N, D, r, warn=False, base_general_loss=L_g0))
    result = RatioResult(r, Ld, Lg, L_g0, tolerance, active, feasible, N, D)
    if not feasible:
        result.least_increase = result.general_loss_increase
        if warn:
            _warn.emit(f"no domain ratio keeps the general loss within {tolerance:.1%} of L_g0={L_g0:.4f} at "
                       f"N={format_count(N)}, D={format_count(D)}: the least increase any ratio reaches is "
                       f"{result.least_increase:+.2%} (at r_d={r:.3f}, returned). Its domain loss may be far from "
                       "the best: dcpt_law.ratio_frontier(...) lists the answer for every tolerance above that",
                       UserWarning)
    if f.has_bootstrap:
        names_d, names_g = fd.law.param_names, fg.law.param_names
        rs, lds, infeasible = [], [], 0
        for bd, bg in zip(fd.bootstrap, fg.bootstrap):
            pd_, pg_ = dict(zip(names_d, bd)), dict(zip(names_g, bg))
            rb, ok, _ = solve(pd_, pg_)
            if not ok:  # no answer to the question asked: counted, not mixed into the interval
                infeasible += 1
                continue
            rs.append(rb)
            lds.append(float(fd.predict(N, D, rb, params=pd_, warn=False, base_general_loss=L_g0)))
        result.interval, result.domain_loss_interval = _interval(rs), _interval(lds)
        result.infeasible_share = infeasible / len(fd.bootstrap)
    return result


def ratio_frontier(model_size, tokens, *, fit=None, base_general_loss=None, domain: str | None = None,
                   points: int = _SCAN) -> pd.DataFrame:
    """Usage 1 for every tolerance at once: the ratios r_d that no other ratio beats on both losses at (N, D).

    Scans ``points`` ratios in [0, 1] and keeps the Pareto front of (general-loss increase, domain loss): rows
    sorted by ``general_loss_increase`` = (L_g - L_g0) / L_g0 rising and ``domain_loss`` falling. Row i is the
    answer of :func:`predict_ratio` (to the scan's step, 1 / (points - 1)) for every tolerance T from its
    increase up to the next row's; the first row's increase is the smallest tolerance any ratio meets. Read it
    when a tolerance is infeasible, or to see what each extra 0.1% of general loss buys in domain loss.
    Columns: ratio (r_d), domain_loss, general_loss, general_loss_increase (fraction; nats per token for losses).
    """
    f = _resolve(fit, domain)
    N, D = parse_count(model_size, "model_size"), parse_count(tokens, "tokens")
    if int(points) < 2:
        raise ValueError(f"points={points!r}: the scan over r_d in [0, 1] needs at least 2 points")
    L_g0 = _base_general_loss(f, N, base_general_loss)
    f["domain"].predict(N, D, 0.5, base_general_loss=L_g0)  # input checks + extrapolation warning, once
    r = np.linspace(0.0, 1.0, int(points))
    Ld = f["domain"].predict(N, D, r, warn=False, base_general_loss=L_g0)
    Lg = f["general"].predict(N, D, r, warn=False, base_general_loss=L_g0)
    rise = (Lg - L_g0) / L_g0
    order = np.lexsort((Ld, rise))  # by increase, ties by domain loss
    best_before = np.minimum.accumulate(np.concatenate([[np.inf], Ld[order]]))[:-1]
    keep = order[Ld[order] < best_before]  # strictly better domain loss than every ratio with less increase
    return pd.DataFrame({"ratio": r[keep], "domain_loss": Ld[keep], "general_loss": Lg[keep],
                         "general_loss_increase": rise[keep]}).reset_index(drop=True)


@dataclass
class LimitedDomainResult:
    """Usage 2 answer: with ``domain_tokens`` of domain data, train D = domain_tokens / ratio tokens."""

    ratio: float
    tokens: float
    domain_loss: float
    model_size: float
    domain_tokens: float
    interval: tuple[float, float] | None = None

    def __float__(self):
        return float(self.ratio)

    def __repr__(self):
        ci = f" (90% CI {self.interval[0]:.3f}-{self.interval[1]:.3f})" if self.interval else ""
        return (f"LimitedDomainResult(N={format_count(self.model_size)}, domain tokens {format_count(self.domain_tokens)}: "
                f"r_d={self.ratio:.4f}{ci}, total CPT tokens {format_count(self.tokens)}, domain loss {self.domain_loss:.4f})")


def optimal_ratio_limited_domain(model_size, domain_tokens, *, fit=None, min_ratio: float = 1e-3,
                                 warn: bool = True, domain: str | None = None,
                                 base_general_loss=None) -> LimitedDomainResult:
    """Usage 2: min over r_d in [min_ratio, 1] of L_d(N, domain_tokens / r_d, r_d).

    All domain data is used once; the rest of the D = domain_tokens / r_d tokens is general data.
    ``min_ratio`` caps the total budget at domain_tokens / min_ratio. ``base_general_loss``: G of an
    anchored domain-loss law at a size the fit has no base row for.
    """
    f = _resolve(fit, domain)
    N, Dd = parse_count(model_size, "model_size"), parse_count(domain_tokens, "domain_tokens")
    if Dd <= 0:
        raise ValueError(f"domain_tokens={domain_tokens!r} must be > 0")
    if not 0 < min_ratio < 1:
        raise ValueError(f"min_ratio={min_ratio!r} must be in (0, 1)")
    fd = f["domain"]
    G = _base_general_loss(f, N, base_general_loss) if fd.anchored else None
    fd.predict(N, Dd, 1.0, warn=False, base_general_loss=G)  # input checks

    def best(params):
        obj = lambda r: fd.predict(N, Dd / r, r, params=params, warn=False, base_general_loss=G)  # noqa: E731
        return _minimise_1d(obj, min_ratio, 1.0)

    r = best(None)
    # the answer trains D = Dd / r tokens: the extrapolation check belongs there, not at Dd
    res = LimitedDomainResult(r, Dd / r, float(fd.predict(N, Dd / r, r, warn=warn, base_general_loss=G)), N, Dd)
    d_fit = fd.ranges.get("tokens", (np.nan, np.inf))[1]
    if warn and Dd / r > d_fit * (1 + 1e-9):
        _warn.emit(f"usage 2: the answer r_d = {r:.3g} trains D = {format_count(Dd / r)} tokens, {Dd / r / d_fit:.2g}x "
                   f"the largest fitted D ({format_count(d_fit)}): where the best r_d lies rests on the law's shape in "
                   "D past its runs (held out at a 4x larger model, 1.6-4x past the fitted D, our laws put it 1.2-1.8 "
                   "doublings of r_d too high and lost a median 2-4% of domain loss: docs/validation.md section 7); "
                   "run pilots that reach this D at such small r_d before trusting it, and read the answer off their "
                   "cells too (dl.cell_scaling(pilot).limited_domain: within 0.3% in 14 of 16 such cases there)",
                   _warn.ExtrapolationWarning)
    if warn and r <= min_ratio * (1 + 1e-3):
        _warn.emit(f"usage 2: r_d = {r:.4g} is min_ratio: by the law, mixing in still more general data (beyond "
                   f"{format_count(Dd / r)} CPT tokens) would lower the domain loss further; the answer is set by "
                   "min_ratio (the token budget it caps), not by the law", _warn.FitWarning)
    if fd.bootstrap is not None:
        res.interval = _interval([best(dict(zip(fd.law.param_names, b))) for b in fd.bootstrap])
    return res


@dataclass
class ComputeResult:
    """Usage 3 answer: the model size and token count that minimise L_d at compute C = 6 N D."""

    model_size: float
    tokens: float
    domain_loss: float
    flops: float
    domain_ratio: float
    interval: tuple[float, float] | None = None  # 90% interval of the optimal model size

    def __repr__(self):
        ci = f" (90% CI {format_count(self.interval[0])}-{format_count(self.interval[1])})" if self.interval else ""
        return (f"ComputeResult(C={self.flops:.3g} FLOPs at r_d={self.domain_ratio:g}: N={format_count(self.model_size)}{ci}, "
                f"D={format_count(self.tokens)} tokens, domain loss {self.domain_loss:.4f})")


def allocate_compute(flops, domain_ratio: float, *, fit=None, n_range=(1e3, 1e13),
                     domain: str | None = None) -> ComputeResult:
    """Usage 3: with C = 6 N D FLOPs at domain ratio r_d, the N (and D = C / 6N) minimising L_d.

    The search runs over log N in ``n_range`` (parameters).
    """
    f = _resolve(fit, domain)
    C = parse_count(flops, "flops")
    if C <= 0:
        raise ValueError(f"flops={flops!r} must be > 0")
    if not 0 <= domain_ratio <= 1:
        raise ValueError(f"domain_ratio={domain_ratio!r} must be in [0, 1]")
    fd = f["domain"]
    if fd.anchored:
        raise ValueError(f"allocate_compute varies the model size N, but the domain-loss law {fd.law.name!r} predicts "
                         "from the base model's general loss G of one given model: fit an N-based law for usage 3 "
                         "(e.g. dl.fit(table, law='dcpt'))")
    lo, hi = np.log(n_range[0]), np.log(min(n_range[1], C / 6.0))
    if hi <= lo:
        raise ValueError(f"flops={C:.3g} is too small for model sizes >= {n_range[0]:.3g}")

    def best(params):
        obj = lambda x: fd.predict(np.exp(x), C / (6 * np.exp(x)), domain_ratio, params=params, warn=False)  # noqa: E731
        return float(np.exp(_minimise_1d(obj, lo, hi)))

    N = best(None)
    if abs(np.log(N) - lo) < 1e-3 or abs(np.log(N) - hi) < 1e-3:
        edge = "smallest" if abs(np.log(N) - lo) < 1e-3 else "largest"
        _warn.emit(f"allocate_compute: the best model size is the {edge} one searched ({format_count(N)}; n_range="
                       f"{n_range}): the fitted law has no interior optimum at C={C:.3g} FLOPs, so this answer only "
                       "says 'as small/large as allowed' (widen n_range, or fit more sizes and tokens)",
                       UserWarning)
    res = ComputeResult(N, C / (6 * N), float(fd.predict(N, C / (6 * N), domain_ratio)), C, domain_ratio)
    if fd.bootstrap is not None:
        res.interval = _interval([best(dict(zip(fd.law.param_names, b))) for b in fd.bootstrap])
    return res
