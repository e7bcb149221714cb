"""Losses without a law: each logged (D, r) cell's loss extrapolated in the base model's loss.

A sweep logs the losses of every swept size at the same token counts D and ratios r (a *cell*). For
each cell and loss, across the sizes (seeds averaged, as their base models' losses are),

    ln L(D, r) = a(D, r) + b(D, r) ln G        G = the base model's general loss (nats, before CPT)

is fitted by least squares, and a larger model's losses are read off at its own G: the base model a
CPT user always has. Between logged ratios ln L is a monotone cubic (PCHIP) in ln(s + 0.01), s the
share of the mixture from the corpus the loss is on (r_d for the domain loss, 1 - r_d for the general):
a loss moves fastest where its corpus is scarce (the domain loss at small r_d, the general loss near
r_d = 1), which a line in r smears over the whole gap. Leaving each interior ratio of our sweeps out
(every size, domain and D), that read it back with a mean error of 0.97% (domain loss, r_d <= 0.35) and
1.3% (general loss, r_d > 0.85), against 8.0% and 9.2% for a line in r. D must be one the sweep
logged. No form in D or r is assumed, so whatever the curves do there (a rise and a fall of the general loss
when CPT re-warms the learning rate, an inflection at small r) carries over as the runs show it,
and each cell has its own size effect. That is what a law's single size term cannot give: in our
validation (docs/validation.md, headline) at a 4x larger size the general loss's R^2 rose from
0.82 / 0.54 (the recommended laws) to 0.97 / 0.93 with 5M-token base models, and usage 1's answer
missed the observed crossing by a median 0.020 in r_d over 60 cases (the laws 0.029). It has no
error bars of its own (three sizes leave one dof per cell) and trusts the top size's step: where
the largest swept size gains little over the next (a flat ladder), it extrapolates that and fails
worse than a law. ``x="model_size"`` regresses on ln N instead, for a target without a base model;
in our runs that was much worse wherever the base models were not trained alike.

Usage 2 (:meth:`CellScaling.limited_domain`): with D_d domain tokens, each seen once, the line D * r_d = D_d read
at every logged D and its lowest point. A pilot at r_d 1/64-1/16 run to 2M tokens (evaluation points in powers of
two) found a 4x larger model's best r_d within 0.3% of domain loss in 14 of 16 cases this way (median 0%; laws
refitted to the same runs 0.4-1.0%; docs/validation.md section 7). Without runs that reach the answer's D and
ratios it is the worst route (3.7-5.8%).

``relative=True`` with ``x="model_size"`` fits ln(L / G) in ln N: each size's loss over its own base model, the
rise (or fall) that CPT brings, extrapolated in model size, times the target's own G. Usage 1 then reads only
that rise, with each base model's luck divided out. In our validation it missed the observed crossing by a
median 0.014 in r_d over the 56 of 60 cases it answered (the cells in ln G: 0.018 there), closer in 43, and
held where the ln-G cells broke (m4L3: re-warming the learning rate of better-trained bases lifts the general
loss more the larger the model, 0.008 against 0.068; m4x, a flat top step: 0.064 against 0.150). It fails where
a much larger N comes with a base barely better than the swept ones (xlL3: it extrapolates a rise past the
tolerance at every ratio and gives no answer), and its losses are less accurate than the ln-G cells' (domain MAPE
3.5% against 2.7%, median over experiments).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.interpolate import PchipInterpolator

from . import _warn
from .crossings import base_general_losses, logged_tokens
from .evaluation import ratio_regret
from .table import check_one_pretraining, load_losses, single_domain
from .units import check_tolerance, format_count, parse_count

TARGETS = ("domain", "general")
#: the target's ln x further past the swept sizes' than this many times their span warns (ExtrapolationWarning)
FAR_SPANS = 1.0
#: a share of cells above this whose loss does not fall with a better base model warns (FitWarning)
FLAT_SHARE = 0.2
#: offset of the share s in the coordinate ln(s + SHARE_OFFSET) in which ln L is interpolated between logged ratios
SHARE_OFFSET = 0.01
#: steps in r_d of the curve on which usage 1 reads the crossing (besides the logged ratios)
CROSSING_STEPS = 2000


def share_coordinate(ratio, target: str) -> np.ndarray:
    """ln(s + SHARE_OFFSET), s the share of the corpus ``target`` ("domain": r_d, "general": 1 - r_d), signed so it
    rises with r_d: the coordinate in which the cells interpolate ln L between logged ratios."""
    r = np.asarray(ratio, float)
    return np.log(r + SHARE_OFFSET) if target == "domain" else -np.log(1.0 - r + SHARE_OFFSET)


def interpolate_ratios(grid, log_loss, ratio, target: str) -> np.ndarray:
    """ln L at ``ratio`` from its values ``log_loss`` at the sorted logged ratios ``grid``: a monotone cubic
    (PCHIP: no overshoot past the logged values) in :func:`share_coordinate`; constant for a single ratio."""
    grid, log_loss = np.asarray(grid, float), np.asarray(log_loss, float)
    if len(grid) == 1:
        return np.full(np.shape(ratio), log_loss[0])
    return PchipInterpolator(share_coordinate(grid, target), log_loss)(share_coordinate(ratio, target))


def _base_loss(base_general_loss, why: str) -> float:
    """The target's base-model general loss G, checked: a positive number of nats."""
    if base_general_loss is None:
        raise ValueError(f"base_general_loss=None: pass the target base model's general loss G (nats, before CPT); "
                         f"{why}")
    v = float(base_general_loss)
    if not (np.isfinite(v) and v > 0):
        raise ValueError(f"base_general_loss={base_general_loss!r}: a positive loss in nats")
    return v


def _flat_share(slopes: pd.Series, x: str) -> float:
    """The share of cells whose loss does not improve with a better base model: ln L rises with ln G (a better
    base, a lower G) and falls with ln N, so a slope <= 0 in ln G, >= 0 in ln N, is a flat or inverted step."""
    return float(((slopes <= 0) if x == "base_general_loss" else (slopes >= 0)).mean())


@dataclass
class CellRatio:
    """Answer of :meth:`CellScaling.predict_ratio`. ``float(p)`` is the predicted crossing r_d."""

    ratio: float
    tokens: float
    tolerance: float
    base_general_loss: float
    general_rise: float  # predicted L_g / L_g0 - 1 at ``ratio``
    route: str = "extrapolated in ln G"  # how the cells were read off (CellScaling.route)

    def __float__(self) -> float:
        return float(self.ratio)

    def __repr__(self) -> str:
        return (f"CellRatio(G={self.base_general_loss:.4f}, D={format_count(self.tokens)}: the sweep's cells "
                f"{self.route} give r_d={self.ratio:.4f}, general loss {self.general_rise:+.2%} at the "
                f"tolerance {self.tolerance:.1%})")


@dataclass
class CellLimited:
    """Answer of :meth:`CellScaling.limited_domain` (usage 2). ``float(p)`` is the best r_d found.

    ``candidates``: the line D * r_d = D_d at every logged D where the swept sizes trained ratios around D_d / D
    (columns tokens, domain_ratio, domain_loss), the chosen one marked ``best``."""

    ratio: float
    tokens: float
    domain_loss: float
    domain_tokens: float
    candidates: pd.DataFrame
    route: str = "extrapolated in ln G"

    def __float__(self) -> float:
        return float(self.ratio)

    def __repr__(self) -> str:
        return (f"CellLimited(domain tokens {format_count(self.domain_tokens)}: the sweep's cells {self.route} give "
                f"r_d={self.ratio:.4g} at D={format_count(self.tokens)}, domain loss {self.domain_loss:.4f}; "
                f"{len(self.candidates)} logged D on the line)")


@dataclass
class CellScaling:
    """ln L = intercept + slope * ln x per (tokens, domain_ratio, target) cell of one domain's sweep
    (``relative``: ln(L / G) = intercept + slope * ln x, G each size's own base model's general loss).

    ``lines``: one row per cell: tokens, domain_ratio, target ("domain" / "general"), intercept, slope,
    residual_sd (of ln L), sizes (>= 3), loss_slope (of ln L itself; = slope unless relative). ``sizes``: the swept sizes (model_size,
    base_general_loss), seeds averaged. ``x``: "base_general_loss" (G) or "model_size" (N)."""

    domain: str
    x: str
    lines: pd.DataFrame
    sizes: pd.DataFrame
    relative: bool = False

    def _x(self, base_general_loss, model_size) -> float:
        if self.x == "model_size":
            if model_size is None:
                raise ValueError("model_size=None: this fit regresses on ln N (x='model_size'); pass model_size=...")
            v = parse_count(model_size, field="model_size")
        else:
            v = _base_loss(base_general_loss, "the cells are extrapolated in ln G")
        return v

    @property
    def route(self) -> str:
        """How the cells are read off a target, in words."""
        x = "ln G" if self.x == "base_general_loss" else "ln N"
        return f"relative to their base models, extrapolated in {x}" if self.relative else f"extrapolated in {x}"

    def spans_past(self, base_general_loss=None, model_size=None) -> float:
        """How far the target lies past the best swept size, in units of the swept sizes' span of ln x: 0 inside
        it, 1 one span beyond (a larger model: a smaller G, a larger N); negative where it lies before the best."""
        return self._spans(self._x(base_general_loss, model_size))

    def _spans(self, v: float) -> float:
        logs = np.log(self.sizes[self.x].to_numpy(float))
        past = (logs.min() - np.log(v)) if self.x == "base_general_loss" else (np.log(v) - logs.max())
        return float(past / (logs.max() - logs.min()))

    def _check_far(self, v: float) -> None:
        spans = self._spans(v)
        if spans > FAR_SPANS:
            what = "G" if self.x == "base_general_loss" else "N"
            _warn.emit(f"the target's ln {what} lies {spans:.1f}x the swept sizes' span past the best of them: each "
                       "cell's line is extrapolated further than its data reach; sweep a size closer to the target",
                       _warn.ExtrapolationWarning)

    def _at_tokens(self, tokens) -> pd.DataFrame:
        D = logged_tokens(self.lines["tokens"], tokens, f"every swept size logged for {self.domain!r}",
                          "the cells exist only there; use a law (dcpt_law.fit) for other D")
        return self.lines[self.lines["tokens"] == D]

    def ratios(self, tokens) -> np.ndarray:
        """The domain ratios every swept size trained at ``tokens`` (a logged token count), sorted."""
        return np.sort(self._at_tokens(tokens)["domain_ratio"].unique())

    def predict(self, tokens, ratio, base_general_loss=None, model_size=None, warn: bool = True) -> dict:
        """{"domain": L_d, "general": L_g} (nats, arrays like ``ratio``) of a model whose base has general loss
        ``base_general_loss`` (or of ``model_size`` parameters, with x="model_size") after ``tokens`` CPT tokens
        at domain ratio(s) ``ratio``: each cell's line at its x, between logged ratios :func:`interpolate_ratios`."""
        v = self._x(base_general_loss, model_size)
        lnG = 0.0
        if self.relative:  # the loss relative to the target's own base model: times its G
            lnG = np.log(_base_loss(base_general_loss, "these cells are the loss relative to each size's base "
                                               "model (relative=True)"))
        if warn:
            self._check_far(v)
        cells = self._at_tokens(tokens)
        r = np.asarray(ratio, float)
        out = {}
        for t in TARGETS:
            c = cells[cells["target"] == t].sort_values("domain_ratio")
            grid = c["domain_ratio"].to_numpy(float)
            if np.any((r < grid[0] - 1e-12) | (r > grid[-1] + 1e-12)) or not np.isfinite(r).all():
                raise ValueError(f"ratio={ratio!r}: outside the ratios every swept size trained at this D "
                                 f"({grid[0]:g}-{grid[-1]:g}); the cells do not extrapolate in r")
            lnL = c["intercept"].to_numpy(float) + c["slope"].to_numpy(float) * np.log(v) + lnG
            out[t] = np.exp(interpolate_ratios(grid, lnL, r, t))
        return out

    def predict_ratio(self, tokens, base_general_loss, tolerance: float = 0.03, model_size=None,
                      warn: bool = True) -> CellRatio:
        """Usage 1 read off the extrapolated cells: the r_d at which the predicted general loss (as :meth:`predict`
        gives it at the logged ratios and :data:`CROSSING_STEPS` steps between them, made isotonic in r_d) first
        reaches (1 + tolerance) * L_g0, L_g0 = ``base_general_loss`` (the target's base model; also its x unless
        x="model_size"), as :func:`dcpt_law.observed_crossings` reads runs. It is the best feasible ratio where the
        domain loss falls with r_d. Raises where not even the smallest logged ratio meets the tolerance."""
        tolerance = check_tolerance(tolerance)
        L_g0 = float(base_general_loss)
        D, grid = float(self._at_tokens(tokens)["tokens"].iloc[0]), self.ratios(tokens)
        grid = np.union1d(grid, np.linspace(grid[0], grid[-1], CROSSING_STEPS + 1))
        pred = self.predict(D, grid, base_general_loss=L_g0, model_size=model_size, warn=warn)
        obs = pd.DataFrame({"domain_ratio": grid, "domain_loss": pred["domain"], "general_loss": pred["general"]})
        try:
            c = ratio_regret(obs, float(grid[0]), L_g0, tolerance, smooth=True)["crossing"]
        except ValueError:
            raise ValueError(f"tolerance {tolerance:.1%}: by the cells not even r_d = {grid[0]:g} keeps the general "
                             f"loss within it at D = {format_count(D)}; raise the tolerance or use fewer tokens") from None
        rise = float(self.predict(D, c, base_general_loss=L_g0, model_size=model_size, warn=False)["general"]) / L_g0 - 1
        return CellRatio(float(c), D, tolerance, L_g0, rise, self.route)

    def limited_domain(self, domain_tokens, base_general_loss=None, model_size=None,
                       warn: bool = True) -> CellLimited:
        """Usage 2 read off the extrapolated cells: with ``domain_tokens`` D_d of domain data, each seen once, the
        lowest predicted L_d along the line D * r_d = D_d. The cells exist only at logged D, so the line is read at
        each of them, at r_d = D_d / D, between the ratios every swept size trained there (:meth:`predict`); a D
        whose ratios do not bracket D_d / D is skipped (the cells do not extrapolate in r). The answer is one of
        those points: as fine in r_d as the sweep's evaluation points are in D, and never past its largest D
        (a sweep that stops short of the best D puts the answer at its largest D with a warning)."""
        Dd = parse_count(domain_tokens, "domain_tokens")
        if Dd <= 0:
            raise ValueError(f"domain_tokens={domain_tokens!r} must be > 0")
        v = self._x(base_general_loss, model_size)
        if warn:
            self._check_far(v)
        cells = self.lines[self.lines["target"] == "domain"]
        rows = []
        for D, at in cells.groupby("tokens"):
            r = Dd / float(D)
            if at["domain_ratio"].min() - 1e-12 <= r <= min(1.0, at["domain_ratio"].max()) + 1e-12:
                L = self.predict(D, r, base_general_loss=base_general_loss, model_size=model_size, warn=False)
                rows.append({"tokens": float(D), "domain_ratio": r, "domain_loss": float(L["domain"])})
        if not rows:
            logged = ", ".join(format_count(t) for t in sorted(cells["tokens"].unique()))
            raise ValueError(f"domain_tokens={format_count(Dd)}: at none of the logged D ({logged}) did every swept "
                             f"size train ratios around D_d / D; sweep ratios near D_d / D at those D, or use a law "
                             "(dcpt_law.optimal_ratio_limited_domain)")
        cand = pd.DataFrame(rows)
        i = int(cand["domain_loss"].idxmin())
        cand["best"] = cand.index == i
        best = cand.loc[i]
        if warn and len(cand) == 1:
            _warn.emit(f"usage 2 by the cells: only one point of the line D * r_d = {format_count(Dd)} lies within "
                       f"the swept ratios (D = {format_count(best['tokens'])}, r_d = {best['domain_ratio']:.3g}): "
                       "nothing to compare it with; sweep ratios near D_d / D at more of the logged D",
                       _warn.ExtrapolationWarning)
        elif warn and best["tokens"] == cand["tokens"].max():
            _warn.emit(f"usage 2 by the cells: the best point of the line D * r_d = {format_count(Dd)} is at the "
                       f"largest D the sweep logged there ({format_count(best['tokens'])}, r_d = "
                       f"{best['domain_ratio']:.3g}): more general data may lower the domain loss further; sweep "
                       "small ratios to a larger D", _warn.ExtrapolationWarning)
        return CellLimited(float(best["domain_ratio"]), float(best["tokens"]), float(best["domain_loss"]), Dd,
                           cand, self.route)

    def report(self) -> str:
        s = self.sizes.assign(model_size=self.sizes["model_size"].map(format_count))
        lines = [f"Cells of domain {self.domain!r}: ln {'(L/G)' if self.relative else 'L'} = a + b ln "
                 f"{'G' if self.x == 'base_general_loss' else 'N'} "
                 f"per (D, r), {len(self.lines) // len(TARGETS)} cells x 2 losses over {len(self.sizes)} sizes",
                 s.to_string(index=False, float_format=lambda v: f"{v:.4f}")]
        for t in TARGETS:
            at = self.lines[self.lines["target"] == t]
            b = at["slope"]
            lines.append(f"{t} loss: slope b median {b.median():.3f} (range {b.min():.3f} to {b.max():.3f}); "
                         f"{_flat_share(at['loss_slope'], self.x):.0%} of cells do not fall with a better base model")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (f"CellScaling(domain={self.domain!r}, x={self.x!r}, relative={self.relative}, "
                f"sizes={len(self.sizes)}, cells={len(self.lines) // len(TARGETS)})")


def cell_scaling(table, domain: str | None = None, x: str = "base_general_loss", warn: bool = True,
                 relative: bool = False) -> CellScaling:
    """Fit ln L = a + b ln x in every (tokens, domain_ratio) cell that >= 3 swept sizes logged (seeds averaged per
    size and cell; x = the size's base-model general loss G, seeds averaged, or ``x="model_size"``: N).

    Needs the base models' rows (tokens == 0) for G, and >= 3 distinct sizes. Warns (FitWarning) where more than
    :data:`FLAT_SHARE` of a loss's cells do not fall with a better base model (slope <= 0): the sweep's top step
    is flat there, and the lines extrapolate that.

    ``relative``: fit ln(L / G) instead, the loss relative to each size's own base model (G), and read a target's
    loss off as its own G times the line at its x. With x = "base_general_loss" that changes nothing (the slope
    moves by 1); with x = "model_size" the rise over the base model is extrapolated in ln N and the level comes from
    the target's base model (see the module's docstring).
    """
    if x not in ("base_general_loss", "model_size"):
        raise ValueError(f"x={x!r}: 'base_general_loss' (G, the base model's general loss) or 'model_size' (N)")
    df = load_losses(table)
    dom = single_domain(df, domain)
    base = base_general_losses(df, dom)
    cpt = df[(df["domain"] == dom) & (df["tokens"] > 0)]
    if cpt.empty:
        raise ValueError(f"domain {dom!r} has no CPT rows (tokens > 0): run the sweep first")
    missing = sorted(set(cpt["model_size"]) - set(base.index))
    if (x == "base_general_loss" or relative) and missing:
        raise ValueError(f"model_size {', '.join(format_count(n) for n in missing)} has no base-model row (tokens == 0) "
                         "in the table: the cells are extrapolated in its general loss before CPT (G); log the base "
                         "model's evaluation, or pass x='model_size'")
    if warn and (x == "base_general_loss" or relative):
        check_one_pretraining(cpt, f"cell_scaling ({dom!r})")
    sizes = pd.DataFrame({"model_size": np.sort(cpt["model_size"].unique())})
    sizes["base_general_loss"] = sizes["model_size"].map(base)
    if len(sizes) < 3:
        raise ValueError(f"domain {dom!r}: {len(sizes)} distinct model size(s); a line per cell and its error need >= 3 "
                         "(sweep more sizes)")
    if x == "base_general_loss" and sizes["base_general_loss"].nunique() < len(sizes):
        raise ValueError("two swept sizes share a base general loss: ln G cannot order them; pass x='model_size'")
    means = cpt.groupby(["tokens", "domain_ratio", "model_size"])[["domain_loss", "general_loss"]].mean().reset_index()
    xs = means["model_size"] if x == "model_size" else means["model_size"].map(base)
    means["x"] = np.log(xs.to_numpy(float))
    # relative: each size's own ln G comes off its ln L
    shift = np.log(means["model_size"].map(base).to_numpy(float)) if relative else np.zeros(len(means))
    rows = []
    for (D, r), g in means.groupby(["tokens", "domain_ratio"]):
        if len(g) < 3:
            continue
        X = np.c_[np.ones(len(g)), g["x"].to_numpy(float)]
        for t in TARGETS:
            lnL = np.log(g[f"{t}_loss"].to_numpy(float))
            y = lnL - shift[g.index]
            (a, b), *_ = np.linalg.lstsq(X, y, rcond=None)
            sd = float(np.sqrt(np.sum((y - X @ (a, b)) ** 2) / (len(g) - 2)))
            # the slope of ln L itself: whether the loss improves across the swept sizes (relative: not the rise's)
            b_loss = float(np.linalg.lstsq(X, lnL, rcond=None)[0][1]) if relative else float(b)
            rows.append({"tokens": float(D), "domain_ratio": float(r), "target": t, "intercept": float(a),
                         "slope": float(b), "residual_sd": sd, "sizes": len(g), "loss_slope": b_loss})
    if not rows:
        raise ValueError(f"domain {dom!r}: no (tokens, domain_ratio) cell was logged by >= 3 sizes; sweep the same "
                         "ratios and token counts at every size")
    lines = pd.DataFrame(rows)
    if warn:
        for t in TARGETS:
            flat = _flat_share(lines.loc[lines["target"] == t, "loss_slope"], x)
            if flat > FLAT_SHARE:
                _warn.emit(f"domain {dom!r}: in {flat:.0%} of the cells the {t} loss does not improve with a better "
                           "base model across the swept sizes (a flat or inverted step); their lines extrapolate "
                           "that: check the ladder (dcpt fit warns on its top step)", _warn.FitWarning)
    return CellScaling(dom, x, lines, sizes, relative)

