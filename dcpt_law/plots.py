"""Scaling-curve figures for reports. Every function returns a :class:`matplotlib.figure.Figure`.

- :func:`loss_vs_ratio`: loss against mixture ratio r_d, one curve per token count, general and
  domain loss side by side (the paper's Figure 1): fitted curves dashed, fitted points circles,
  held-out points stars; with cells (:func:`dcpt_law.cell_scaling`) their curves dotted, or alone.
- :func:`loss_vs_tokens`: loss against CPT tokens D (log axis), one curve per ratio.
- :func:`parity`: predicted against observed loss, coloured by model size, R^2 in the legend.
- :func:`ratio_vs_size`: recommended r_d (usage 1) against model size N, with its 90% interval, and the
  observed crossings of the runs (:func:`dcpt_law.crossing_scaling`) where given.
- :func:`tradeoff`: the general/domain loss frontier as r_d sweeps [0, 1], with the tolerance
  line and the recommended point.
- :func:`limited_domain`: usage 2, the domain loss against r_d at a fixed budget of domain tokens
  (D = D_d / r_d), one curve per budget, the law's best r_d marked, and the runs along each line where given.

Losses are in nats per token; N in (non-embedding) parameters; D in tokens.
Colours: the Okabe-Ito palette (colour-blind safe), cycled by order.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ._atomic import atomic_path
from .fitting import Fit, load_fit
from .table import LOSS_COLUMNS, fit_rows, load_losses, single_domain
from .cells import TARGETS
from .units import format_count, parse_count

OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
TITLES = {"domain": "domain loss $L_d$", "general": "general loss $L_g$"}
STYLE = {"font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10, "legend.fontsize": 8,
         "axes.grid": True, "grid.alpha": 0.3, "figure.dpi": 110}


def _colours(n: int) -> list[str]:
    return [OKABE_ITO[i % len(OKABE_ITO)] for i in range(n)]


def _label(ax, xlabel: str, ylabel: str, title: str, legend: bool = True) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if legend:
        ax.legend(loc="best")


def _inputs(fit, table, domain=None) -> tuple[Fit, pd.DataFrame]:
    f = load_fit(fit) if isinstance(fit, (str, Path)) else fit
    return f, _rows(table, domain or f.domain or None)


def _rows(table, domain=None) -> pd.DataFrame:
    """The CPT rows (tokens > 0) of one domain of ``table``, with their base model's general loss."""
    df_all = load_losses(table)
    return fit_rows(df_all, single_domain(df_all, domain)).reset_index(drop=True)


def _base_G(df: pd.DataFrame, mask=None):
    """G (the base model's general loss) of the rows ``mask`` for the anchored laws: an array, or None
    where the table does not know it (the fit's own base losses are used then)."""
    g = df["base_general_loss"].to_numpy(float) if "base_general_loss" in df.columns else np.array([np.nan])
    g = g if mask is None else g[np.asarray(mask)]
    return None if np.isnan(g).any() else g


def _pick(values, k: int) -> np.ndarray:
    """Up to k values spread evenly (log-wise) over the sorted distinct values."""
    v = np.unique(np.asarray(values, float))
    if len(v) <= k:
        return v
    return v[np.unique(np.round(np.linspace(0, len(v) - 1, k)).astype(int))]


def _nearest(values, target) -> float:
    v = np.unique(np.asarray(values, float))
    return float(v[np.argmin(np.abs(np.log(v) - np.log(target)))])


def loss_vs_ratio(fit, table, *, model_size=None, tokens=None, heldout=None, domain=None, n_tokens: int = 4,
                  cells=None, base_general_loss=None):
    """Loss against r_d at one model size (default the largest), one curve per token count.

    ``heldout``: boolean mask over the fitted rows (tokens > 0) drawn as stars, not circles.
    ``cells``: a :class:`dcpt_law.CellScaling` (of smaller sizes) drawn dotted beside the law, at this size's G
    (its base model's general loss: from the table's base rows, or ``base_general_loss``), over the ratios it
    logged. ``fit=None`` with ``cells``: the cells alone against the table's runs of that size, all as stars
    (a larger model's runs that the cells never saw).
    """
    if fit is None:
        if cells is None:
            raise ValueError("fit=None: pass a fit (or its JSON path), or cells= to draw the cells alone")
        df, targets = _rows(table, domain or cells.domain), TARGETS
    else:
        f, df = _inputs(fit, table, domain)
        targets = f.targets
    if df.empty:
        raise ValueError("table: no CPT rows (tokens > 0) of this domain to draw")
    N = _nearest(df["model_size"], parse_count(model_size, "model_size")) if model_size else df["model_size"].max()
    mask = np.isclose(df["model_size"], N)
    held = (np.ones(len(df), bool) if fit is None  # cells alone: every run is one they never saw
            else np.zeros(len(df), bool) if heldout is None else np.asarray(heldout, bool))
    Ds = _pick(df.loc[mask, "tokens"], n_tokens) if tokens is None else np.atleast_1d(
        [_nearest(df.loc[mask, "tokens"], parse_count(t, "tokens")) for t in np.atleast_1d(tokens)])
    grid = np.linspace(0, 1, 201)
    G = _base_G(df, mask)  # one model size: one base model
    G = float(base_general_loss) if base_general_loss is not None else (None if G is None else float(G[0]))
    if cells is not None and G is None and cells.x == "base_general_loss":
        raise ValueError(f"base_general_loss=None and the table has no base-model row (tokens == 0) for "
                         f"N = {format_count(N)}: pass the base model's general loss G (nats) to place the cells")
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, len(targets), figsize=(5.2 * len(targets), 4.0), squeeze=False)
        for ax, t in zip(axes[0], targets):
            for D, c in zip(Ds, _colours(len(Ds))):
                sel = mask & np.isclose(df["tokens"], D)
                y = df[LOSS_COLUMNS[t]]
                if fit is not None:
                    ax.plot(grid, f[t].predict(N, D, grid, warn=False, base_general_loss=G), "--", color=c, lw=1.4)
                if cells is not None:  # the cells' own curve between logged ratios, not a chord
                    rs = cells.ratios(D)
                    rs = np.union1d(rs, np.linspace(rs[0], rs[-1], 201))
                    ax.plot(rs, cells.predict(D, rs, base_general_loss=G, model_size=N, warn=False)[t], ":",
                            color=c, lw=1.6)
                label = f"D = {format_count(D)}"  # on the circles, or on the stars where there are none
                if (sel & ~held).any() or not (sel & held).any():
                    ax.plot(df.loc[sel & ~held, "domain_ratio"], y[sel & ~held], "o", color=c, ms=5, label=label)
                    label = None
                if (sel & held).any():
                    ax.plot(df.loc[sel & held, "domain_ratio"], y[sel & held], "*", color=c, ms=10, label=label)
            _label(ax, "domain ratio $r_d$ (share of domain data)", "validation loss (nats/token)",
                   f"{TITLES[t]}, N = {format_count(N)}", legend=False)
        what = (["fit dashed"] if fit is not None else []) + (["cells dotted"] if cells is not None else [])
        axes[0][0].legend(title="; ".join(what) + ("; o fitted, * held out" if fit is not None else "; * runs"),
                          loc="best")
        fig.tight_layout()
    return fig


def loss_vs_tokens(fit, table, *, model_size=None, domain=None, n_ratios: int = 5):
    """Loss against CPT tokens D (log axis) at one model size, one curve per ratio."""
    f, df = _inputs(fit, table, domain)
    N = _nearest(df["model_size"], parse_count(model_size, "model_size")) if model_size else df["model_size"].max()
    mask = np.isclose(df["model_size"], N)
    rs = np.unique(df.loc[mask, "domain_ratio"])
    if len(rs) > n_ratios:
        rs = rs[np.unique(np.round(np.linspace(0, len(rs) - 1, n_ratios)).astype(int))]
    Dgrid = np.geomspace(df.loc[mask, "tokens"].min(), df.loc[mask, "tokens"].max(), 100)
    G = _base_G(df, mask)
    G = None if G is None else G[0]
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, len(f.targets), figsize=(5.2 * len(f.targets), 4.0), squeeze=False)
        for ax, t in zip(axes[0], f.targets):
            for r, c in zip(rs, _colours(len(rs))):
                sel = mask & np.isclose(df["domain_ratio"], r)
                ax.plot(Dgrid, f[t].predict(N, Dgrid, r, warn=False, base_general_loss=G), "--", color=c, lw=1.4)
                ax.plot(df.loc[sel, "tokens"], df.loc[sel, LOSS_COLUMNS[t]], "o", color=c, ms=4,
                        label=f"$r_d$ = {r:.2f}")
            ax.set_xscale("log")
            _label(ax, "CPT tokens D", "validation loss (nats/token)", f"{TITLES[t]}, N = {format_count(N)}",
                   legend=False)
        axes[0][0].legend(loc="best")
        fig.tight_layout()
    return fig


def parity(fit, table, *, domain=None):
    """Predicted against observed loss for every fitted point, coloured by model size."""
    from .fitting import metrics

    f, df = _inputs(fit, table, domain)
    sizes = np.unique(df["model_size"])
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, len(f.targets), figsize=(4.6 * len(f.targets), 4.2), squeeze=False)
        for ax, t in zip(axes[0], f.targets):
            obs = df[LOSS_COLUMNS[t]].to_numpy()
            pred = np.asarray(f[t].predict(df["model_size"], df["tokens"], df["domain_ratio"], warn=False,
                                           base_general_loss=_base_G(df)))
            r2 = metrics(pred, obs)["r2"]
            for N, c in zip(sizes, _colours(len(sizes))):
                sel = np.isclose(df["model_size"], N)
                ax.plot(obs[sel], pred[sel], "o", color=c, ms=4, alpha=0.8, label=f"N = {format_count(N)}")
            lo, hi = min(obs.min(), pred.min()), max(obs.max(), pred.max())
            ax.plot([lo, hi], [lo, hi], "-", color="0.4", lw=1, label=f"y = x  (R$^2$ = {r2:.4f})")
            ax.set_aspect("equal", adjustable="datalim")
            _label(ax, "observed loss (nats/token)", "predicted loss (nats/token)", TITLES[t])
        fig.tight_layout()
    return fig


def ratio_vs_size(fit, tokens, *, sizes=None, tolerance: float = 0.03, base_general_loss=None, crossings=None):
    """Recommended r_d (usage 1) against model size N at a token budget, with its 90% interval.

    ``sizes`` default: the fit's model sizes that have a measured L_g0 (tokens == 0 rows), or
    20 sizes over the fitted range when ``base_general_loss`` is given. ``crossings``: a
    :class:`~dcpt_law.CrossingScaling` at the same tokens and tolerance (:func:`dcpt_law.crossing_scaling`): its
    observed crossings, the runs' own answer at each swept size, as crosses, and its line in log N, dotted,
    with its 90% prediction band over the plotted sizes.
    """
    from .optimisation import predict_ratio

    f = load_fit(fit) if isinstance(fit, (str, Path)) else fit
    D = parse_count(tokens, "tokens")
    if sizes is None:  # an anchored law's G is one model's: only sizes with a measured base model
        sizes = (np.geomspace(*f["domain"].ranges["model_size"], 20)
                 if base_general_loss is not None and not f["domain"].anchored
                 else np.asarray(sorted(f.base_losses.index), float))
        base_general_loss = None if f["domain"].anchored else base_general_loss
    if len(sizes) == 0:
        raise ValueError("ratio_vs_size: no model sizes with a base general loss; pass sizes=... and "
                         "base_general_loss=...")
    res = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for N in np.atleast_1d(sizes):
            res.append(predict_ratio(N, D, fit=f, tolerance=tolerance, base_general_loss=base_general_loss))
    Ns = np.array([r.model_size for r in res])
    ratio = np.array([r.ratio for r in res])
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(5.4, 4.0))
        ax.plot(Ns, ratio, "o-", color=OKABE_ITO[0], label=f"recommended $r_d$ (tolerance {tolerance:.0%})")
        if all(r.interval for r in res):
            lo = np.array([r.interval[0] for r in res])
            hi = np.array([r.interval[1] for r in res])
            ax.fill_between(Ns, lo, hi, color=OKABE_ITO[0], alpha=0.2, label="90% bootstrap interval")
        bind = np.array([r.constraint_active for r in res])
        if bind.any():
            ax.plot(Ns[bind], ratio[bind], "s", mfc="none", color=OKABE_ITO[3], ms=9,
                    label="general-loss constraint binding")
        if crossings is not None:
            if not np.isclose(crossings.tokens, D, rtol=1e-6, atol=0) or crossings.tolerance != tolerance:
                raise ValueError(f"ratio_vs_size: crossings are at D = {format_count(crossings.tokens)}, tolerance "
                                 f"{crossings.tolerance:g}; the figure at D = {format_count(D)}, {tolerance:g}: "
                                 "fit them with dl.crossing_scaling(table, tokens=..., tolerance=...) to match")
            seen = crossings.crossings
            grid = np.geomspace(min(Ns.min(), seen["model_size"].min()), max(Ns.max(), seen["model_size"].max()), 40)
            line = [crossings.predict(n, warn=False) for n in grid]
            ax.plot(grid, [float(p) for p in line], ":", color=OKABE_ITO[2],
                    label="observed crossings, a + b ln N (no law)")
            ax.fill_between(grid, [p.interval[0] for p in line], [p.interval[1] for p in line], color=OKABE_ITO[2],
                            alpha=0.12, label="its 90% prediction band")
            ax.plot(seen["model_size"], seen["crossing"], "x", color=OKABE_ITO[2], ms=8, mew=2,
                    label="observed crossing (runs)")
        ax.set_xscale("log")
        ax.set_ylim(-0.02, 1.02)
        _label(ax, "model size N (non-embedding parameters)", "domain ratio $r_d$",
               f"best mixture at D = {format_count(D)} CPT tokens")
        fig.tight_layout()
    return fig


def tradeoff(fit, model_size, tokens, *, tolerance: float = 0.03, base_general_loss=None):
    """General against domain loss as r_d sweeps [0, 1] at (N, D), with the Pareto front
    (:func:`dcpt_law.ratio_frontier`: usage 1's answer at every tolerance) drawn as a line."""
    from .optimisation import predict_ratio, ratio_frontier

    f = load_fit(fit) if isinstance(fit, (str, Path)) else fit
    N, D = parse_count(model_size, "model_size"), parse_count(tokens, "tokens")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rec = predict_ratio(N, D, fit=f, tolerance=tolerance, base_general_loss=base_general_loss)
        r = np.linspace(0, 1, 201)
        G = rec.base_general_loss
        Ld, Lg = (f[t].predict(N, D, r, warn=False, base_general_loss=G) for t in ("domain", "general"))
        front = ratio_frontier(N, D, fit=f, base_general_loss=G)
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(5.4, 4.2))
        sc = ax.scatter(Ld, Lg, c=r, cmap="cividis", s=10, zorder=2)
        fig.colorbar(sc, ax=ax, label="domain ratio $r_d$")
        ax.plot(front["domain_loss"], front["general_loss"], "-", color=OKABE_ITO[0], lw=1.4, zorder=1,
                label="Pareto front (best $r_d$ at each tolerance)")
        ax.axhline(rec.base_general_loss * (1 + tolerance), color=OKABE_ITO[3], ls="--", lw=1.2,
                   label=f"$L_{{g0}}$ + {tolerance:.0%} (tolerance)")
        ax.axhline(rec.base_general_loss, color="0.5", ls=":", lw=1, label="$L_{g0}$ (base model)")
        ax.plot(rec.domain_loss, rec.general_loss, "*", color=OKABE_ITO[1], ms=16, mec="k", zorder=3,
                label=f"recommended $r_d$ = {rec.ratio:.3f}")
        _label(ax, "predicted domain loss (nats/token)", "predicted general loss (nats/token)",
               f"trade-off at N = {format_count(N)}, D = {format_count(D)}")
        fig.tight_layout()
    return fig


def limited_domain(fit, model_size, domain_tokens, *, base_general_loss=None, observed=None,
                   min_ratio: float = 1 / 64):
    """Usage 2: predicted L_d(N, D_d / r_d, r_d) against r_d (log axis, ``min_ratio`` to 1) for each budget D_d of
    ``domain_tokens`` (one count or several), the answer of :func:`dcpt_law.optimal_ratio_limited_domain` marked
    (a diamond); with ``observed`` (runs at N, columns tokens, domain_ratio, domain_loss) the runs on each line
    (:func:`dcpt_law.limited_domain_line`) as stars."""
    from .evaluation import limited_domain_line
    from .optimisation import optimal_ratio_limited_domain

    f = load_fit(fit) if isinstance(fit, (str, Path)) else fit
    N = parse_count(model_size, "model_size")
    budgets = [parse_count(b, "domain_tokens") for b in np.atleast_1d(np.asarray(domain_tokens, dtype=object))]
    r = np.geomspace(min_ratio, 1, 241)
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(5.4, 4.2))
        for c, Dd in zip(_colours(len(budgets)), budgets):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                best = optimal_ratio_limited_domain(N, Dd, fit=f, min_ratio=min_ratio, warn=False,
                                                    base_general_loss=base_general_loss)
                G = None if base_general_loss is None else np.full(len(r), float(base_general_loss))
                L = f["domain"].predict(np.full(len(r), N), Dd / r, r, warn=False, base_general_loss=G)
            ax.plot(r, L, "--", color=c, lw=1.3, label=f"$D_d$ = {format_count(Dd)}: law")
            ax.plot(best.ratio, best.domain_loss, "D", color=c, mec="k", ms=7, zorder=3,
                    label=f"law's best $r_d$ = {best.ratio:.3g} (D = {format_count(best.tokens)})")
            if observed is not None:
                line = limited_domain_line(observed, Dd)
                ax.plot(line.index, line.to_numpy(), "*", color=c, mec="k", ms=10, zorder=4, label="runs")
        ax.set_xscale("log")
        _label(ax, "domain ratio $r_d$ (D = $D_d$ / $r_d$ tokens)", "domain loss (nats/token)",
               f"usage 2 at N = {format_count(N)}: a fixed budget of domain tokens")
        fig.tight_layout()
    return fig


def save(fig, path_stem) -> list[Path]:
    """Write ``fig`` as PNG (150 dpi) and PDF next to each other; returns both paths. The same figure gives the same
    bytes (no creation date in the PDF), so a regenerated report changes only the figures whose content did; each
    file is written whole (a temporary file renamed over it)."""
    stem = Path(path_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    out = []
    for ext, kw in ((".png", {"dpi": 150}), (".pdf", {"metadata": {"CreationDate": None}})):
        p = stem.with_suffix(ext)
        with atomic_path(p) as tmp:
            fig.savefig(tmp, bbox_inches="tight", format=ext[1:], **kw)
        out.append(p)
    plt.close(fig)
    return out


def standard_figures(fit, table, *, tokens=None, model_size=None, tolerance: float = 0.03,
                     base_general_loss=None, crossings="auto") -> dict[str, object]:
    """The five report figures by name. ``tokens``/``model_size``: the recommendation target
    (default: the largest fitted D and N). ``crossings``: for :func:`ratio_vs_size` (``"auto"``: the table's own
    where it can give them, :func:`dcpt_law.crossings.cross_check`)."""
    f, df = _inputs(fit, table)
    D = parse_count(tokens, "tokens") if tokens else float(df["tokens"].max())
    N = parse_count(model_size, "model_size") if model_size else float(df["model_size"].max())
    if isinstance(crossings, str) and crossings == "auto":
        from .crossings import cross_check

        crossings = cross_check(table, N, D, tolerance, f.domain)[0]
    figs = {"loss_vs_ratio": loss_vs_ratio(f, df), "loss_vs_tokens": loss_vs_tokens(f, df), "parity": parity(f, df)}
    if "general" in f.targets and "domain" in f.targets:
        figs["ratio_vs_size"] = ratio_vs_size(f, D, tolerance=tolerance, crossings=crossings)
        figs["tradeoff"] = tradeoff(f, N, D, tolerance=tolerance, base_general_loss=base_general_loss)
    return figs


def save_all(fit, table, out, *, tokens=None, model_size=None, tolerance: float = 0.03) -> list[Path]:
    """Write every standard figure to ``out`` as PNG and PDF; returns the paths."""
    paths = []
    for name, fig in standard_figures(fit, table, tokens=tokens, model_size=model_size, tolerance=tolerance).items():
        paths += save(fig, Path(out) / name)
    return paths
