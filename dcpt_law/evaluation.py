"""Generalisation report: the paper's four settings (Que et al. 2024, section 3.3).

- ``all``: fit on every point, score on the same points;
- ``model_size``: leave one model size out;
- ``tokens``: per run, fit on the first two thirds of its evaluation points (in token order),
  test on the last third;
- ``ratio``: hold out 2 ratios, every pair.

All folds of a split are fitted in one batched search: fold f is a 0/1 weight mask over the
points. Each fold starts from its ``starts_per_fold`` best grid points (screened by their
objective on that fold's training points), each polished by Levenberg-Marquardt.
"""
from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from . import _warn
from .fitting import TARGETS, _check_distinct, _metrics, law_context, prescreened, start_points
from .laws import RATIO_LAWS, AveragedLaw, get_law
from .search import lm_search
from .table import fit_rows, law_inputs, load_losses, run_groups, single_domain
from .units import format_count, parse_count

SPLITS = ("all", "model_size", "tokens", "ratio")


def folds(df: pd.DataFrame, split: str) -> list[tuple[str, np.ndarray]]:
    """(fold name, boolean test mask) for a split; the rest of the rows train."""
    n = len(df)
    if split == "all":
        return [("all", np.zeros(n, bool))]
    if split == "model_size":
        return [(f"N={int(s)}", (df["model_size"] == s).to_numpy()) for s in sorted(df["model_size"].unique())]
    if split == "tokens":
        test = np.zeros(n, bool)
        groups = run_groups(df)
        tokens = df["tokens"].to_numpy()
        for g in np.unique(groups):
            idx = np.flatnonzero(groups == g)
            order = idx[np.argsort(tokens[idx], kind="stable")]
            k = int(np.ceil(len(order) * 2 / 3))
            test[order[k:]] = True
        return [("last third of tokens", test)]
    if split == "ratio":
        ratios = sorted(df["domain_ratio"].unique())
        if len(ratios) < 4:
            raise ValueError(f"split='ratio' holds out 2 ratios and needs at least 4 distinct domain_ratio values, "
                             f"got {len(ratios)}")
        r = df["domain_ratio"].to_numpy()
        return [(f"r_d={a:.3g},{b:.3g}", np.isin(r, (a, b))) for a, b in itertools.combinations(ratios, 2)]
    raise ValueError(f"split={split!r}: use one of {SPLITS}, or 'every' for all of them")


def _fit_folds(law, X, fold_masks: list[np.ndarray], delta: float, starts_per_fold: int):
    """Batched fit of one law on every fold's training points; returns natural params per fold.

    An averaged law (``mean(...)``) is fitted member by member, as :func:`dcpt_law.fit` does."""
    if isinstance(law, AveragedLaw):
        return np.concatenate([_fit_folds(m, X, fold_masks, delta, starts_per_fold) for m in law.members], axis=-1)
    ctx = law_context(law, X)
    logy = np.log(X["loss"])
    grid = start_points(law, ctx, float(np.median(X["loss"])))
    theta0, weights, owner = [], [], []
    for f, test in enumerate(fold_masks):
        w = (~test).astype(float)
        theta0.append(prescreened(law, grid, ctx, logy, delta, starts_per_fold, w))
        k = len(theta0[-1])
        weights.append(np.repeat(w[None], k, axis=0))
        owner += [f] * k
    res = lm_search(law, ctx, logy, np.concatenate(theta0), weights=np.concatenate(weights), delta=delta)
    owner = np.asarray(owner)
    best = [np.flatnonzero(owner == f)[np.argmin(res.objective[owner == f])] for f in range(len(fold_masks))]
    return law.natural(res.theta[best], ctx)


def evaluate(table, law=RATIO_LAWS, split="all", target: str = "both", domain: str | None = None, *,
             delta: float = 1e-3, starts_per_fold: int = 128) -> pd.DataFrame:
    """Generalisation table: Huber (mean, on log-loss residuals), R^2 and MAPE on held-out points.

    law: one name or several (compared side by side); split: one of :data:`SPLITS`, a list, or
    ``"every"`` for all four. Returns one row per (law, split, target, fold) plus a ``mean`` row
    and a ``median`` row per (law, split, target). For split ``all`` the scores are on the fitted points.
    """
    laws = [law] if isinstance(law, str) or not isinstance(law, (list, tuple)) else list(law)
    splits = list(SPLITS) if split == "every" else ([split] if isinstance(split, str) else list(split))
    targets = TARGETS if target == "both" else (target,)
    df_all = load_losses(table)
    dom = single_domain(df_all, domain)
    df = fit_rows(df_all, dom).reset_index(drop=True)
    rows = []
    for sp in splits:
        fl = folds(df, sp)
        for name in laws:
            lw = get_law(name)
            for t in targets:
                X = law_inputs(df, t)
                try:
                    law_context(lw, X)  # an anchored law without base rows: said, and skipped
                except ValueError as exc:
                    _warn.emit(f"evaluate: law {lw.name!r} skipped: {exc}")
                    continue
                usable = []
                for fold, test in fl:
                    train = df[~test]
                    try:
                        _check_distinct(train, lw, f"fold {fold}")
                        usable.append((fold, test))
                    except ValueError as exc:
                        _warn.emit(f"evaluate: {sp} fold {fold} skipped for law {lw.name!r}: {exc}")
                if not usable:
                    continue
                params = _fit_folds(lw, X, [m for _, m in usable], delta, starts_per_fold)
                for (fold, test), p in zip(usable, params):
                    score = test if test.any() else np.ones(len(df), bool)
                    pred = lw.predict(dict(zip(lw.param_names, p)), X["N"][score], X["D"][score], X["r"][score],
                                      G=X["G"][score] if "G" in lw.needs else None)
                    m = _metrics(pred, X["loss"][score], delta)
                    rows.append({"law": lw.name, "split": sp, "target": t, "fold": fold,
                                 "n_train": int((~test).sum()), "n_test": int(score.sum()),
                                 "huber": m["huber"], "r2": m["r2"], "mape": m["mape"]})
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    cols = ["n_train", "n_test", "huber", "r2", "mape"]
    g = out.groupby(["law", "split", "target"], sort=False)[cols]
    # the mean is the paper's statistic; the median is robust to a few catastrophic folds (e.g. holding
    # out r = 0 of the evaluated corpus, a regime no run in the training folds shows)
    stats = [g.mean().reset_index().assign(fold="mean"), g.median().reset_index().assign(fold="median")]
    return pd.concat([out, *stats], ignore_index=True)


def summary(table: pd.DataFrame, stat: str = "mean") -> pd.DataFrame:
    """The ``stat`` rows ("mean" or "median" over folds) of :func:`evaluate` as a wide table:
    (split, target) x law, R^2 and Huber."""
    if stat not in ("mean", "median"):
        raise ValueError(f"stat={stat!r}: use 'mean' or 'median'")
    m = table[table["fold"] == stat]
    return m.pivot_table(index=["split", "target"], columns="law", values=["r2", "huber"], sort=False)


def ratio_regret(observed: pd.DataFrame, ratio: float, base_general_loss: float, tolerance: float = 0.03,
                 smooth: bool = False) -> dict:
    """How much a recommended domain ratio lost, measured on runs at one (N, D) trained at several ratios.

    ``observed``: one row per trained ratio, columns ``domain_ratio``, ``domain_loss``, ``general_loss``
    (nats, at the same N and D). The observed losses at ``ratio`` are interpolated linearly between the two
    trained ratios around it. ``regret`` = that L_d / the best L_d among trained ratios that meet the
    constraint L_g <= (1 + tolerance) * L_g0 - 1 (a share, not %); negative regret comes with a broken
    constraint (see ``general_rise``).

    ``smooth``: first replace the observed curves by their isotonic fits (L_d non-increasing and L_g
    non-decreasing in r_d: more of a corpus never hurts its own loss at fixed D). One run per ratio carries
    seed noise of ~1%; the raw minimum over 9 noisy runs is biased low by a lucky run, so a recommendation
    inside a flat optimum reads as a regret of the noise size. The isotonic curves pool such runs.

    ``crossing``: the r_d at which the (interpolated) general loss first reaches (1 + tolerance) * L_g0, 1.0 if
    it never does: the best feasible ratio between the trained ones when the domain loss falls with r_d, the
    number a predicted ratio is aiming at.
    """
    missing = [c for c in ("domain_ratio", "domain_loss", "general_loss") if c not in observed.columns]
    if missing:
        raise ValueError(f"ratio_regret: observed needs columns {missing} (one row per trained ratio at one N, D)")
    obs = observed.groupby("domain_ratio")[["domain_loss", "general_loss"]].mean().sort_index()
    if len(obs) < 2 or obs.isna().any().any():
        raise ValueError("ratio_regret: need >= 2 trained ratios with finite domain_loss and general_loss")
    r = obs.index.to_numpy(float)
    if not r[0] <= ratio <= r[-1]:
        raise ValueError(f"ratio_regret: ratio={ratio:.4g} is outside the trained ratios {r[0]:.4g}-{r[-1]:.4g}: "
                         "train the ratios around it first")
    Ld, Lg = obs["domain_loss"].to_numpy(float), obs["general_loss"].to_numpy(float)
    if smooth:
        from scipy.optimize import isotonic_regression

        Ld = isotonic_regression(Ld, increasing=False).x
        Lg = isotonic_regression(Lg, increasing=True).x
    bound = (1 + tolerance) * base_general_loss
    ok = Lg <= bound
    if not ok.any():
        limit = f"L_g <= (1 + {tolerance}) * L_g0 = {bound:.4g}"
        if r[0] > 0:
            raise ValueError(f"ratio_regret: no trained ratio meets {limit}: train smaller ratios")
        raise ValueError(f"ratio_regret: not even r_d = 0 (no domain data) meets {limit}: there CPT raises the general "
                         f"loss {100 * (Lg[0] / base_general_loss - 1):.2g}% above the base model's (re-warming the "
                         "learning rate does that to a well-trained base model); no mixture can meet the tolerance at "
                         "this D: raise it above that rise, or train more tokens")
    at_d, at_g = float(np.interp(ratio, r, Ld)), float(np.interp(ratio, r, Lg))
    best = int(np.flatnonzero(ok)[np.argmin(Ld[ok])])
    over = np.flatnonzero(~ok)
    if not len(over):
        crossing = 1.0
    elif over[0] == 0:  # the first trained ratio already breaks it (some later one meets it: a noisy curve)
        crossing = float(r[0])
    else:
        i = over[0]
        crossing = float(r[i - 1] + (bound - Lg[i - 1]) * (r[i] - r[i - 1]) / (Lg[i] - Lg[i - 1]))
    return {"ratio": float(ratio), "best_ratio": float(r[best]), "regret": at_d / Ld[best] - 1, "crossing": crossing,
            "general_rise": at_g / base_general_loss - 1, "domain_loss": at_d, "general_loss": at_g,
            "bracket": (float(r[r <= ratio].max()), float(r[r >= ratio].min()))}


def limited_domain_line(observed: pd.DataFrame, domain_tokens, rtol: float = 0.01) -> pd.Series:
    """The observed line of usage 2 at one N: r_d -> L_d of the runs at D = ``domain_tokens`` / r_d.

    Usage 2 spends a fixed budget of domain tokens D_d once and fills the rest of D = D_d / r_d with general data;
    each trained r_d gives one point of that line, at the token count where its run logged D_d / r_d.
    ``observed``: runs at one N, columns ``tokens``, ``domain_ratio`` and ``domain_loss`` (nats); every logged token
    count may stay: the rows whose tokens * r_d lies within ``rtol`` of ``domain_tokens`` are the line (repeats at
    one r_d averaged).
    """
    missing = [c for c in ("tokens", "domain_ratio", "domain_loss") if c not in observed.columns]
    if missing:
        raise ValueError(f"limited_domain_line: observed needs columns {missing} (runs at one N, each with its "
                         "logged token counts)")
    Dd = parse_count(domain_tokens, "domain_tokens")
    spent = observed["tokens"].to_numpy(float) * observed["domain_ratio"].to_numpy(float)
    line = observed[np.abs(spent / Dd - 1) <= rtol].groupby("domain_ratio")["domain_loss"].mean().sort_index()
    if len(line) < 2 or line.isna().any():
        raise ValueError(f"limited_domain_line: {len(line)} trained ratio(s) logged the line D * r_d = "
                         f"{format_count(Dd)} with a finite domain_loss; need >= 2: log the token counts "
                         f"D_d / r_d of each run (e.g. ratios and evaluation points in powers of two)")
    return line


def limited_domain_regret(observed: pd.DataFrame, ratio: float, domain_tokens, rtol: float = 0.01) -> dict:
    """How much a usage-2 answer ``ratio`` lost, measured on runs at one N along the line D * r_d =
    ``domain_tokens`` (:func:`limited_domain_line`). The observed L_d at ``ratio`` is interpolated linearly in
    ln r_d between the two trained ratios around it; ``regret`` = that L_d / the line's lowest L_d - 1 (a share,
    not %). ``line``: the points read.
    """
    line = limited_domain_line(observed, domain_tokens, rtol)
    r, L = line.index.to_numpy(float), line.to_numpy(float)
    if not r[0] <= ratio <= r[-1]:
        raise ValueError(f"limited_domain_regret: ratio={ratio:.4g} is outside the line's trained ratios "
                         f"{r[0]:.4g}-{r[-1]:.4g}: train the ratios around it first")
    at = float(np.interp(np.log(ratio), np.log(r), L))
    best = int(np.argmin(L))
    return {"ratio": float(ratio), "best_ratio": float(r[best]), "best_loss": float(L[best]), "domain_loss": at,
            "regret": at / L[best] - 1, "bracket": (float(r[r <= ratio].max()), float(r[r >= ratio].min())),
            "line": line}
