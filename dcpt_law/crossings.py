"""Usage 1 without a law: the observed best feasible ratio at each size, extrapolated in log N.

At each size N and token count D a sweep logged, the trained ratios give the *observed crossing*
r*(N, D): the r_d at which the general loss (isotonic in r_d, linear between trained ratios) first
reaches (1 + T) L_g0(N), L_g0 the size's base-model general loss (:func:`dcpt_law.ratio_regret`'s
``crossing``). Where the domain loss falls with r_d, it is usage 1's answer read off the runs.

Chinchilla's approaches 1 and 2 read optima off runs the same way and fit them against scale; here

    r*(N) = a + b ln N        (least squares over the sizes, at one logged D)

and the prediction at a larger N comes with the textbook prediction interval (Student t with
n_sizes - 2 degrees of freedom). No law is fitted, so no law's form or fit can bias it; but it
says nothing past the token counts the sweep logged, and with three sizes its interval is wide.
In our validation (docs/validation.md) it predicts a 4x larger size's crossing better than the
recommended laws where their general-loss law is off (5M-token bases, a noisy top size), and
about as well elsewhere: read both and trust neither alone where they disagree.

With several domains swept, ``pool=True`` fits them together, r*_d(N) = a_d + b ln N: one slope,
an intercept each. There it beat the recommended laws in 12 of 14 experiments, with an interval
a third as wide. :func:`law_misses` asks a fitted law the same question at the swept sizes.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from . import _warn
from .evaluation import ratio_regret
from .table import load_losses, single_domain
from .units import check_tolerance, format_count, parse_count

#: a prediction more than this many times the largest swept size warns (ExtrapolationWarning)
FAR = 10.0
#: a law whose usage-1 answer misses a swept size's observed crossing by more than this (r_d) warns (FitWarning)
MISS = 0.05
#: a domain loss at the largest trained ratio this far (relative) above its minimum at a smaller ratio, at every swept
#: size, warns: the loss does not fall with r_d all the way (CPT lr 0.01 on chemistry: 1.1-4.6% by r_d = 1, growing
#: with size; one run's seed noise is 0.5-2.5%, so a single size's turn is not taken for one)
TURN = 0.01


def observed_crossings(table, tolerance: float = 0.03, domain: str | None = None) -> pd.DataFrame:
    """The observed crossing at every (model_size, tokens) of one domain's sweep.

    Columns: ``model_size``, ``tokens``, ``crossing`` (r_d; NaN where not even r_d = 0 meets the
    tolerance, 1.0 where every trained ratio does), ``censored`` (True where the crossing is not
    between two trained ratios: at the first or last one, or NaN), ``ratios`` (how many were trained),
    ``base_general_loss`` (L_g0 of the size, nats). Repeated seeds are averaged per ratio first, and so
    are their base models' losses.
    """
    df = load_losses(table)
    return _observed(df, single_domain(df, domain), tolerance)


def base_general_losses(df: pd.DataFrame, dom: str) -> pd.Series:
    """L_g0 (= G) of each model size of a validated table ``df``: its base-model rows' (tokens == 0) general loss,
    seeds averaged, from domain ``dom``'s rows where it has them (a base model is shared: else another domain's)."""
    rows0 = df[df["tokens"] == 0]
    return rows0[rows0["domain"] == dom].groupby("model_size")["general_loss"].mean().combine_first(
        rows0.groupby("model_size")["general_loss"].mean())


def _observed(df: pd.DataFrame, dom: str, tolerance: float) -> pd.DataFrame:
    """:func:`observed_crossings` of a validated table ``df``, domain ``dom``."""
    tolerance = check_tolerance(tolerance)
    base = base_general_losses(df, dom)
    df = df[df["domain"] == dom]
    rows = []
    for (N, D), g in df[df["tokens"] > 0].groupby(["model_size", "tokens"]):
        if N not in base.index:
            raise ValueError(f"model_size {format_count(N)} has no base-model row (tokens == 0) in the table: "
                             "the crossing needs its general loss before CPT (L_g0); log the base model's evaluation")
        obs = g.groupby("domain_ratio", as_index=False)[["domain_loss", "general_loss"]].mean()
        r = obs["domain_ratio"].to_numpy(float)
        if len(obs) < 2:
            raise ValueError(f"model_size {format_count(N)}, tokens {format_count(D)}: one trained ratio "
                             f"({r[0]:g}); the crossing needs >= 2 (sweep the ratios)")
        try:
            c = ratio_regret(obs, float(r.min()), float(base[N]), tolerance, smooth=True)["crossing"]
        except ValueError:  # not even r_d = 0 meets it: the rise of CPT itself is above the tolerance
            c = np.nan
        rows.append({"model_size": float(N), "tokens": float(D), "crossing": c,
                     "censored": not (r.min() < c < r.max()), "ratios": len(obs), "base_general_loss": float(base[N])})
    if not rows:
        raise ValueError(f"domain {dom!r} has no CPT rows (tokens > 0): run the sweep first")
    return pd.DataFrame(rows)


@dataclass
class CrossingPrediction:
    """Answer of :meth:`CrossingScaling.predict`. ``float(p)`` is the predicted crossing r_d."""

    ratio: float
    interval: tuple[float, float]
    level: float
    model_size: float
    tokens: float
    tolerance: float

    def __float__(self) -> float:
        return float(self.ratio)

    def __repr__(self) -> str:
        lo, hi = self.interval
        return (f"CrossingPrediction(N={format_count(self.model_size)}, D={format_count(self.tokens)}: observed "
                f"crossings extrapolated in log N give r_d={self.ratio:.4f} ({self.level:.0%} PI {lo:.3f}-{hi:.3f}), "
                f"tolerance {self.tolerance * 100:.1f}%)")


@dataclass
class CrossingScaling:
    """r*(N) = intercept + slope * ln N, fitted to the observed crossings of one domain at one token count
    (with ``pooled``, jointly with other domains': one slope, an intercept each)."""

    domain: str
    tokens: float
    tolerance: float
    crossings: pd.DataFrame  # the sizes fitted: model_size, crossing, censored, ratios, base_general_loss
    intercept: float
    slope: float
    residual_sd: float  # sqrt(SSR / dof), r_d; with ``pooled``, of the joint fit
    dof: int            # crossings - parameters (2 for one domain; with k domains pooled, k + 1)
    pooled: tuple[str, ...] = ()  # the other domains fitted with this one (pool=True)
    unscaled_cov: np.ndarray = field(default=None, repr=False)  # (X'X)^-1 of (intercept, slope); None: own line

    def __post_init__(self):
        if self.unscaled_cov is None:
            X = np.c_[np.ones(len(self.crossings)), np.log(self.crossings["model_size"].to_numpy(float))]
            self.unscaled_cov = np.linalg.inv(X.T @ X)

    def predict(self, model_size, level: float = 0.9, warn: bool = True) -> CrossingPrediction:
        """r*(N) at ``model_size`` (parameters; "1.5M" accepted), clipped to [0, 1], with its two-sided
        ``level`` prediction interval: t_{dof} * s * sqrt(1 + x0' (X'X)^-1 x0), x0 = (1, ln N)."""
        N = parse_count(model_size, field="model_size")
        if not 0 < level < 1:
            raise ValueError(f"level={level}: a probability in (0, 1), e.g. 0.9")
        x0 = np.array([1.0, np.log(N)])
        r = float(x0 @ (self.intercept, self.slope))
        half = float(stats.t.ppf(0.5 + level / 2, self.dof) * self.residual_sd * np.sqrt(1 + x0 @ self.unscaled_cov @ x0))
        top = float(self.crossings["model_size"].max())
        if warn and N > FAR * top:
            _warn.emit(f"model_size {format_count(N)} is {N / top:.0f}x the largest swept size ({format_count(top)}): "
                       "the line in log N is an extrapolation far past its data", _warn.ExtrapolationWarning)
        clip = lambda x: float(np.clip(x, 0.0, 1.0))  # noqa: E731
        return CrossingPrediction(clip(r), (clip(r - half), clip(r + half)), level, N, self.tokens, self.tolerance)

    def report(self) -> str:
        t = self.crossings.assign(model_size=self.crossings["model_size"].map(format_count))
        pooled = f", slope shared with {', '.join(self.pooled)}" if self.pooled else ""
        return (f"Observed crossings of domain {self.domain!r} at D = {format_count(self.tokens)} (tolerance "
                f"{self.tolerance:.1%}): r* = {self.intercept:.4f} {self.slope:+.4f} ln N, residual sd "
                f"{self.residual_sd:.4f} ({self.dof} dof{pooled})\n"
                + t.to_string(index=False, float_format=lambda x: f"{x:.4f}"))

    def __repr__(self) -> str:
        return (f"CrossingScaling(domain={self.domain!r}, D={format_count(self.tokens)}, sizes={len(self.crossings)}: "
                f"r* = {self.intercept:.4f} {self.slope:+.4f} ln N, residual sd {self.residual_sd:.4f})")


def crossing_scaling(table, tokens=None, tolerance: float = 0.03, domain: str | None = None,
                     pool: bool = False) -> CrossingScaling:
    """Fit r*(N) = a + b ln N to the observed crossings (:func:`observed_crossings`) at token count
    ``tokens`` (default: the largest that every size logged; it must be one the sweep logged: the route
    reads runs, it does not extrapolate in D). Needs >= 3 sizes with a crossing (two for the line, one
    for its error). Warns where a size's crossing is censored at a trained ratio's edge.

    pool: fit every domain of the table together, r*_d(N) = a_d + b ln N: one slope in ln N, an intercept per
    domain (each at its own default D, or ``tokens``), one residual sd (dof = crossings - domains - 1). How the
    best ratio moves with size is set by the general corpus and the base models, which the domains share; the
    level is each domain's. Three sizes leave one dof to a line of its own (t = 6.31 at 90%); four domains
    pooled leave 7 (t = 1.89). In our validation (docs/validation.md, headline) it missed a 4x larger size's
    crossing by a median 0.014 in r_d against 0.021 for each domain's own line, and its 90% interval held
    the crossing in 43 of 56 cases (45 for the own lines) at a third of the width.
    """
    df = load_losses(table)
    dom = single_domain(df, domain)
    cs = _line(df, dom, tokens, tolerance)
    if not pool:
        return cs
    lines = [cs]
    for other in sorted(set(df["domain"]) - {dom}):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # its own line's warnings are for a fit of that domain
                lines.append(_line(df, other, tokens, tolerance))
        except ValueError:  # a domain without a line (too few crossings, D not logged) adds nothing
            continue
    if len(lines) == 1:
        _warn.emit(f"pool=True: no other domain of the table gives a line of crossings to fit with {dom!r}; "
                   "this is its own line")
        return cs
    k = len(lines)  # design: an indicator per domain (intercepts), then ln N (the shared slope)
    X = np.vstack([np.c_[np.tile(np.eye(k)[i], (len(c.crossings), 1)), np.log(c.crossings["model_size"].to_numpy(float))]
                   for i, c in enumerate(lines)])
    y = np.concatenate([c.crossings["crossing"].to_numpy(float) for c in lines])
    beta, *_ = np.linalg.lstsq(X, y, rcond=None)
    dof = len(y) - (k + 1)  # >= 2k - 1: each line has >= 3 crossings
    cov = np.linalg.inv(X.T @ X)[np.ix_([0, k], [0, k])]  # of this domain's (intercept, slope)
    sd = float(np.sqrt(np.sum((y - X @ beta) ** 2) / dof))
    return CrossingScaling(dom, cs.tokens, tolerance, cs.crossings, float(beta[0]), float(beta[k]), sd, dof,
                           tuple(c.domain for c in lines[1:]), cov)


def _line(df: pd.DataFrame, dom: str, tokens, tolerance: float) -> CrossingScaling:
    """:func:`crossing_scaling` of domain ``dom`` of a validated table ``df``, its own residual sd."""
    D, at = _at_tokens(_observed(df, dom, tolerance), dom, tokens)
    none = at[at["crossing"].isna()]
    if len(none):
        _warn.emit(f"domain {dom!r}, D = {format_count(D)}: at model_size "
                   f"{', '.join(format_count(n) for n in none['model_size'])} not even r_d = 0 meets the tolerance "
                   f"{tolerance:.1%} (CPT alone raises the general loss more); those sizes are left out of the line")
    at = at[at["crossing"].notna()].reset_index(drop=True)
    if len(at) < 3:
        raise ValueError(f"domain {dom!r}, D = {format_count(D)}: {len(at)} size(s) with an observed crossing; the "
                         "line in log N and its error need >= 3 distinct model sizes (sweep more sizes, or raise the "
                         "tolerance)")
    cens = at[at["censored"]]
    if len(cens):
        _warn.emit(f"domain {dom!r}, D = {format_count(D)}: the crossing at model_size "
                   f"{', '.join(format_count(n) for n in cens['model_size'])} sits at a trained ratio's edge "
                   f"({', '.join(f'{c:.3g}' for c in cens['crossing'])}): the true one may lie beyond; train "
                   "ratios past it", _warn.FitWarning)
    X = np.c_[np.ones(len(at)), np.log(at["model_size"].to_numpy(float))]
    y = at["crossing"].to_numpy(float)
    (a, b), *_ = np.linalg.lstsq(X, y, rcond=None)
    dof = len(at) - 2
    sd = float(np.sqrt(np.sum((y - X @ (a, b)) ** 2) / dof))
    return CrossingScaling(dom, D, tolerance, at, float(a), float(b), sd, dof)


#: a token count matches a logged one within this relative distance: "524K" (as format_count prints it) is 524,288
TOKENS_RTOL = 5e-3


def logged_tokens(logged, tokens, where: str, fix: str) -> float:
    """The logged token count (of the values ``logged``) that ``tokens`` names ("524K" or 524288: the nearest within
    :data:`TOKENS_RTOL`); a ValueError naming ``where`` the counts were logged and ``fix`` where none is."""
    D = parse_count(tokens, field="tokens")
    logged = np.sort(pd.unique(np.asarray(logged, float)))
    near = np.abs(logged / D - 1)
    if not len(logged) or near.min() > TOKENS_RTOL:
        raise ValueError(f"tokens={format_count(D)} is not a token count {where} "
                         f"({', '.join(format_count(x) for x in logged)}): {fix}")
    return float(logged[near.argmin()])


def _shared_tokens(rows: pd.DataFrame, dom: str, tokens, fix: str) -> float:
    """D = ``tokens``, a count ``rows`` (with model_size and tokens) logged, where ``fix`` says what to do if not;
    by default the largest token count every size of ``rows`` logged."""
    if tokens is not None:
        return logged_tokens(rows["tokens"], tokens, f"the sweep logged for {dom!r}", fix)
    sizes = rows["model_size"].nunique()
    shared = rows.groupby("tokens")["model_size"].nunique().loc[lambda n: n == sizes].index.to_numpy(float)
    if not len(shared):
        raise ValueError(f"domain {dom!r}: no token count is logged by all {sizes} sizes; pass tokens=...")
    return float(shared.max())


def _at_tokens(cr: pd.DataFrame, dom: str, tokens) -> tuple[float, pd.DataFrame]:
    """(D, the rows of :func:`observed_crossings`' table ``cr`` at D, by size): D = ``tokens``, which the sweep must
    have logged, or by default the largest token count every size logged."""
    D = _shared_tokens(cr, dom, tokens,
                       "the observed crossings exist only there; use the law (dcpt_law.predict_ratio) for other D")
    at = cr[np.isclose(cr["tokens"], D, rtol=1e-6, atol=0)].drop(columns="tokens")
    return D, at.sort_values("model_size").reset_index(drop=True)


def law_misses(fit, table, tokens=None, tolerance: float = 0.03, domain: str | None = None) -> pd.DataFrame:
    """Usage 1 of a fitted law at the sizes of its own sweep, against their observed crossings: an in-sample
    check of the answer :func:`dcpt_law.predict_ratio` gives, where the runs can say what it should be.

    At token count ``tokens`` (a logged one; default the largest every size logged), for each swept size N:
    ``crossing`` (the observed one, seeds averaged), ``law`` (predict_ratio's r_d at (N, D) with that size's
    L_g0), ``miss`` = law - crossing (r_d; NaN where the size has no crossing), ``censored``.
    A law that cannot place the best feasible ratio of the sizes it was fitted on is no guide at a larger one:
    in our validation (docs/validation.md, headline), where the recommended pair missed a fitted size's crossing
    by more than :data:`MISS` its median error at a 4x larger size was several times that of the other cases,
    and the law-free line (:func:`crossing_scaling`) was closer in most of them.
    """
    from .optimisation import _resolve, predict_ratio

    df = load_losses(table)
    f = _resolve(fit, domain)
    dom = single_domain(df, domain or f.domain or None)
    D, at = _at_tokens(_observed(df, dom, tolerance), dom, tokens)
    law = [predict_ratio(N, D, fit=f, tolerance=tolerance, base_general_loss=g, warn=False).ratio
           for N, g in zip(at["model_size"], at["base_general_loss"])]
    return at.assign(tokens=D, law=law, miss=np.asarray(law) - at["crossing"].to_numpy(float))[
        ["model_size", "tokens", "crossing", "law", "miss", "censored"]]


def domain_loss_turns(table, tokens=None, domain: str | None = None) -> pd.DataFrame:
    """Where the observed domain loss stops falling with r_d: for each swept size at token count ``tokens`` (a logged
    one; default the largest every size logged), seeds averaged, ``lowest_at`` (the trained r_d of its lowest domain
    loss), ``top_ratio`` (its largest trained r_d) and ``rise`` = L_d(top_ratio) / L_d(lowest_at) - 1.

    The observed crossings take the domain loss to fall with r_d, and so do the fitted laws wherever we looked (the
    D-CPT form can turn up through B*r^eta/D^beta, but its fits put eta at 0 there), so that usage 1's answer is where
    the general-loss constraint binds. A high CPT lr on a narrow corpus breaks that: some general
    data steadies it (docs/findings.md, "The CPT learning rate is part of the size trend")."""
    df = load_losses(table)
    dom = single_domain(df, domain)
    cpt = df[(df["domain"] == dom) & (df["tokens"] > 0)]
    if cpt.empty:
        raise ValueError(f"domain {dom!r} has no CPT rows (tokens > 0): run the sweep first")
    D, rows = _shared_tokens(cpt, dom, tokens, "pass one of those"), []
    for N, g in cpt[np.isclose(cpt["tokens"], D, rtol=1e-6, atol=0)].groupby("model_size"):
        L = g.groupby("domain_ratio")["domain_loss"].mean()
        rows.append({"model_size": float(N), "tokens": D, "lowest_at": float(L.idxmin()),
                     "top_ratio": float(L.index.max()), "rise": float(L.iloc[-1] / L.min() - 1)})
    return pd.DataFrame(rows)


def turns_line(t: pd.DataFrame, answer: float | None = None) -> str:
    """One line on :func:`domain_loss_turns`' table ``t``; warns (FitWarning) where the domain loss of every swept
    size rises by more than :data:`TURN` from its lowest ratio to its largest (and, given usage 1's ``answer``, where
    that answer lies above the lowest ratio of the largest size). Empty where the loss falls with r_d."""
    turned = (t["lowest_at"] < t["top_ratio"]) & (t["rise"] > TURN)
    if t.empty or not turned.all():
        return ""
    top = t.loc[t["model_size"].idxmax()]
    if answer is not None and not answer > top["lowest_at"]:
        return ""
    D = format_count(float(t["tokens"].iloc[0]))
    swept = ", ".join(format_count(n) for n in t["model_size"])
    lowest, rise = " / ".join(f"{x:g}" for x in t["lowest_at"]), " / ".join(f"{100 * x:.1f}%" for x in t["rise"])
    line = (f"the domain loss does not fall with r_d all the way: at every swept size ({swept}; D = {D}) it is lowest "
            f"at r_d {lowest} and ends {rise} higher at the largest trained ratio")
    past = "" if answer is None else f" Usage 1's answer r_d = {answer:.3f} lies past it there."
    _warn.emit(f"usage 1: {line}. The observed crossings, and the fits we have seen, take it to fall, so the "
               f"answer is where the general-loss constraint binds; past the minimum a lower ratio is better.{past} Look at "
               "the runs' curves near the answer (dcpt plot), or train the target at a few ratios below it "
               "(a high CPT lr on a narrow corpus does this: some general data steadies it)", _warn.FitWarning)
    return line


def largest_miss(m: pd.DataFrame) -> float:
    """The signed miss of largest size in :func:`law_misses`' table ``m``; NaN where no size has one."""
    miss = m["miss"].dropna()
    return float(miss.loc[miss.abs().idxmax()]) if len(miss) else np.nan


def misses_line(m: pd.DataFrame, warn: bool = True) -> str:
    """One line on :func:`law_misses`' table ``m``; warns (FitWarning) where a miss exceeds :data:`MISS`."""
    D, worst = float(m["tokens"].iloc[0]), largest_miss(m)
    fmt = lambda col: " / ".join("-" if np.isnan(x) else f"{x:.3f}" for x in m[col])  # noqa: E731
    line = (f"the law at the swept sizes ({', '.join(format_count(n) for n in m['model_size'])}; D = {format_count(D)}): "
            f"r_d {fmt('law')} against observed crossings {fmt('crossing')}"
            + (f", largest miss {worst:+.3f}" if np.isfinite(worst) else ""))
    if warn and abs(worst) > MISS:
        at = format_count(float(m.loc[m["miss"] == worst, "model_size"].iloc[0]))
        _warn.emit(f"usage 1: at model_size {at}, D = {format_count(D)} the law's r_d misses the observed best feasible "
                   f"ratio by {worst:+.3f} (over {MISS}). A law that cannot place it at the sizes it was fitted on is no "
                   "guide at a larger one: read the law-free line (dcpt crossings) beside it, or sweep ratios around "
                   "both answers", _warn.FitWarning)
    return line


def cross_check(table, model_size, tokens, tolerance: float = 0.03, domain: str | None = None,
                fit=None, pool: bool | None = None) -> tuple[CrossingScaling | None, str]:
    """For a report beside a law's recommendation: (the table's :func:`crossing_scaling` at ``tokens``, None where
    it cannot give one; its prediction at ``model_size``, or why there is none: too few sizes, D not logged, ...).
    With ``fit``, a second line gives :func:`law_misses` at the same D (or the largest logged one), and a miss
    above :data:`MISS` warns. ``pool``: as :func:`crossing_scaling`'s; None: where the table holds other domains."""
    table = load_losses(table)  # read once: a path would be read by each call below
    try:
        pool = table["domain"].nunique() > 1 if pool is None else pool
        cs = crossing_scaling(table, tokens=tokens, tolerance=tolerance, domain=domain, pool=pool)
        line = repr(cs.predict(model_size))
    except ValueError as exc:
        cs, line = None, f"no law-free cross-check: {exc}"
    if fit is not None:
        try:
            m = law_misses(fit, table, tokens=cs.tokens if cs else None, tolerance=tolerance, domain=domain)
            line += "\n" + misses_line(m)
        except ValueError as exc:
            line += f"\nno in-sample check of the law's ratio: {exc}"
    try:
        turn = turns_line(domain_loss_turns(table, tokens=cs.tokens if cs else None, domain=domain))
    except ValueError:
        turn = ""
    return cs, line + ("\n" + turn if turn else "")
