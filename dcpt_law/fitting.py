"""Fit a law to a loss table: global search, lmfit polish, bootstrap, JSON I/O (what a fit can't tell: diagnostics.py).

``fit(table, law="dcpt", target="both")`` returns a :class:`Fit`: one :class:`LawFit` per loss
(``"domain"`` uses r = r_d, ``"general"`` uses r = r_g = 1 - r_d). Every prediction takes the
*domain* ratio r_d; the general-loss law converts it.
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import lmfit
import numpy as np
import pandas as pd

from . import _warn
from ._atomic import atomic_write
from ._warn import ExtrapolationWarning, FitWarning  # noqa: F401 - public here too
from .diagnostics import check_extrapolation, diagnose, diagnose_fit
from . import __version__
from .provenance import git_commit
from .laws import AveragedLaw, Law, PowerSumLaw, get_law
from .search import huber, lm_search, objective
from .table import (LOSS_COLUMNS, base_losses, check_one_pretraining, fit_rows, law_inputs, load_losses, run_groups,
                    single_domain)
from .units import format_count, parse_counts

SCHEMA_VERSION = 1
TARGETS = ("domain", "general")


def pair_name(names: dict[str, str]) -> str:
    """The name of a fit's laws, {target: law name}: the law's name, or "domain:NAME,general:NAME" when they differ."""
    if len(set(names.values())) == 1:
        return next(iter(names.values()))
    return ",".join(f"{t}:{n}" for t, n in names.items())


@dataclass
class FitSettings:
    """How a law is fitted. ``delta``: Huber threshold on log-loss residuals."""

    delta: float = 1e-3
    max_iter: int = 300
    polish: bool = True
    bootstrap: int = 0
    seed: int = 0
    grid_scale: int = 1  # >1 repeats the start grid with log-uniform jitter (more starts)


def _check_distinct(df: pd.DataFrame, law: Law, what: str, warn: bool = False) -> None:
    need = {"N": "model_size", "D": "tokens", "r": "domain_ratio", "G": "base_general_loss"}
    for feat in law.needs:
        col = need.get(feat)
        if col is None:
            continue
        k = df[col].nunique()
        if k < 2:
            raise ValueError(
                f"cannot fit the exponent of {col!r} for {what}: the table has {k} distinct value(s) "
                f"of {col!r} and law {law.name!r} needs at least 2 (ideally 3+); add runs that vary {col!r}"
            )
        if k == 2 and warn:
            _warn.emit(
                f"{what}: only 2 distinct values of {col!r}; its exponent and the constant E trade off, so "
                f"predictions at other {col} values are weakly identified (use 3 or more)", FitWarning)


def law_context(law: Law, X: dict, centre: dict | None = None) -> dict:
    """``law.prepare`` on the arrays of :func:`law_inputs`, with G for the anchored laws (checked: every
    row needs its base model's general loss)."""
    kw = {} if centre is None else {"centre": centre}
    if "G" not in law.needs:
        return law.prepare(X["N"], X["D"], X["r"], **kw)
    bad = ~(np.isfinite(X["G"]) & (X["G"] > 0))
    if bad.any():
        sizes = ", ".join(format_count(n) for n in np.unique(X["N"][bad]))
        raise ValueError(f"law {law.name!r} predicts from the base model's general loss G, but the table has no base "
                         f"row (tokens = 0) for model_size {sizes}: add the base models' evaluations (a sweep writes "
                         "them) or a base_general_loss column")
    return law.prepare(X["N"], X["D"], X["r"], G=X["G"], **kw)


def lookup_base_general(known, N, given=None, what: str = "base_general_loss") -> np.ndarray:
    """The base model's general loss at model sizes N: ``given`` (a positive loss, broadcast), else the
    measured value of the nearest known size within 1% (``known``: {N: loss}); a clear error otherwise."""
    N = np.asarray(N, float)
    if given is not None:
        v = np.asarray(given, float)
        if np.any(~np.isfinite(v)) or np.any(v <= 0):
            raise ValueError(f"{what}={given!r} must be a positive loss (nats per token)")
        return np.broadcast_to(v, N.shape).astype(float)
    sizes = np.array(sorted(known), float)
    out = np.full(N.shape, np.nan)
    for n in np.unique(N):
        match = sizes[np.isclose(sizes, n, rtol=0.01)] if sizes.size else sizes  # "151K" finds 150,976
        if not match.size:
            listed = ", ".join(format_count(x) for x in sizes) or "none"
            raise ValueError(f"no base-model general loss for model_size={format_count(n)} (known for: {listed}); pass "
                             f"{what}=<your base model's general validation loss before CPT, nats per token>")
        out[N == n] = known[float(match[0])]
    return out


def _metrics(pred: np.ndarray, obs: np.ndarray, delta: float) -> dict[str, float]:
    res = np.log(pred) - np.log(obs)
    ss_res = float(np.sum((obs - pred) ** 2))
    ss_tot = float(np.sum((obs - obs.mean()) ** 2))
    return {
        "r2": 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan"),
        "huber": float(np.mean(huber(res, delta))),
        "mape": float(np.mean(np.abs(pred / obs - 1.0)) * 100.0),
        "rmse_log": float(np.sqrt(np.mean(res ** 2))),
        "n": int(obs.size),
    }


def metrics(pred, obs, delta: float = 1e-3) -> dict[str, float]:
    """R^2 (on loss), mean Huber and RMSE (on log loss), MAPE (%) of predictions."""
    return _metrics(np.asarray(pred, float), np.asarray(obs, float), delta)


class LawFit:
    """One law fitted to one loss (target ``"domain"`` or ``"general"``) of one domain."""

    def __init__(self, law: Law, target: str, params: dict[str, float], *, domain: str = "",
                 stderr: dict | None = None, correl: dict | None = None, metrics: dict | None = None,
                 ranges: dict | None = None, settings: FitSettings | None = None,
                 bootstrap: np.ndarray | None = None, objective: float = float("nan"),
                 n_starts: int = 0, report_text: str = "", diagnostics: list[str] | None = None,
                 base_general: dict | None = None):
        self.law, self.target, self.domain = law, target, domain
        self.params = dict(params)
        self.stderr = stderr or {}
        self.correl = correl or {}
        self.metrics = metrics or {}
        self.ranges = ranges or {}
        self.settings = settings or FitSettings()
        self.bootstrap = None if bootstrap is None else np.asarray(bootstrap, float)
        self.objective = objective
        self.n_starts = n_starts
        self._report = report_text
        self.diagnostics = list(diagnostics or [])  # what the fit can't tell (bounds, vanishing terms, non-monotone)
        # measured base-model general loss per fitted size: G of the anchored laws at known sizes
        self.base_general = {float(k): float(v) for k, v in (base_general or {}).items()}

    # -- prediction ---------------------------------------------------------------------------
    def _ratio(self, domain_ratio):
        r_d = np.asarray(domain_ratio, float)
        if np.any(~np.isfinite(r_d)) or np.any((r_d < 0) | (r_d > 1)):
            raise ValueError(f"domain_ratio must be in [0, 1] (the domain share of the mixture), got {domain_ratio!r}")
        return r_d if self.target == "domain" else 1.0 - r_d

    @staticmethod
    def _check_inputs(N, D, r):
        """Positive finite N and D, and one broadcast shape for (N, D, r): returns them broadcast."""
        if np.any(~np.isfinite(N)) or np.any(N <= 0):
            raise ValueError(f"model_size must be > 0 parameters, got {N!r}")
        if np.any(~np.isfinite(D)) or np.any(D <= 0):
            raise ValueError("tokens must be > 0 for a prediction (the base model at tokens=0 is measured, not predicted)")
        try:
            return np.broadcast_arrays(N, D, r)
        except ValueError:
            raise ValueError(f"model_size, tokens and domain_ratio have shapes {np.shape(N)}, {np.shape(D)} and "
                             f"{np.shape(r)}, which do not broadcast: give scalars or arrays of one length "
                             "(numpy broadcasting rules)") from None

    @property
    def anchored(self) -> bool:
        """Whether the law predicts from the base model's general loss G (the anchored and the scaled laws;
        "anchored" below means either)."""
        return "G" in self.law.needs

    def predict(self, model_size, tokens, domain_ratio, *, params=None, warn: bool = True,
                base_general_loss=None) -> np.ndarray:
        """Predicted loss (nats) at N = model_size, D = tokens, r_d = domain_ratio (broadcast).

        base_general_loss: G, the base model's general loss (nats), for anchored laws at sizes the fit
        has no base row for (ignored by the other laws)."""
        N = parse_counts(model_size, "model_size")
        D = parse_counts(tokens, "tokens")
        r = self._ratio(domain_ratio)
        params = self.params if params is None else params
        if not self.anchored:
            self._check_inputs(N, D, r)
            if warn:
                check_extrapolation(self, N, D)
            return self.law.predict(params, N, D, r)
        N, D, r = self._check_inputs(N, D, r)
        G = lookup_base_general(self.base_general, N, base_general_loss)
        if warn:
            check_extrapolation(self, N, D, G)
        return self.law.predict(params, N, D, r, G=G)

    def predict_samples(self, model_size, tokens, domain_ratio, base_general_loss=None) -> np.ndarray:
        """Predictions under every bootstrap parameter sample, shape (B, ...)."""
        if self.bootstrap is None:
            raise ValueError("this fit has no bootstrap samples: refit with fit(..., bootstrap=200)")
        names = self.law.param_names
        return np.stack([self.predict(model_size, tokens, domain_ratio, params=dict(zip(names, row)), warn=False,
                                      base_general_loss=base_general_loss) for row in self.bootstrap])

    # -- reporting -------------------------------------------------------------------------------
    def report(self) -> str:
        lines = [f"[{self.domain or '-'} / {self.target} loss] law {self.law.name}: {self.law.formula}"]
        lines.append(f"  points {self.metrics.get('n', '?')}, starts {self.n_starts}, Huber objective "
                     f"{self.objective:.6g} (delta {self.settings.delta:g})")
        m = self.metrics
        if m:
            lines.append(f"  R2 {m['r2']:.5f}   MAPE {m['mape']:.3f}%   RMSE(log) {m['rmse_log']:.5f}   "
                         f"mean Huber {m['huber']:.3g}")
        w = max(10, *(len(p.name) for p in self.law.params))
        lines.append(f"  {'parameter':<{w}}      value       stderr     bootstrap 90%")
        q = None
        if self.bootstrap is not None and len(self.bootstrap):
            q = np.quantile(self.bootstrap, [0.05, 0.95], axis=0)
        for i, p in enumerate(self.law.params):
            v = self.params[p.name]
            se = self.stderr.get(p.name)
            se_s = f"{se:10.4g}" if se is not None and np.isfinite(se) else "       n/a"
            ci = f"[{q[0, i]:.4g}, {q[1, i]:.4g}]" if q is not None else ""
            lines.append(f"  {p.name:<{w}} {v:14.6g} {se_s}     {ci}")
        strong = [(k, c) for k, c in self.correl.items() if abs(c) > 0.9]
        if strong:
            lines.append("  strong correlations: " + ", ".join(f"{k} {c:+.3f}" for k, c in strong[:6]))
        for d in self.diagnostics:
            lines.append(f"  warning: {d}")
        if self.ranges:
            rg = self.ranges
            lines.append(f"  fitted on N [{format_count(rg['model_size'][0])}, {format_count(rg['model_size'][1])}], "
                         f"D [{format_count(rg['tokens'][0])}, {format_count(rg['tokens'][1])}], "
                         f"r_d [{rg['domain_ratio'][0]:g}, {rg['domain_ratio'][1]:g}]")
        return "\n".join(lines)

    def __repr__(self):
        return f"<LawFit {self.law.name} {self.target} R2={self.metrics.get('r2', float('nan')):.4f}>"

    # -- serialisation ----------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "law": self.law.name, "formula": self.law.formula, "target": self.target, "domain": self.domain,
            "params": self.params, "stderr": self.stderr, "correl": self.correl, "metrics": self.metrics,
            "ranges": self.ranges, "settings": self.settings.__dict__, "objective": self.objective,
            "n_starts": self.n_starts, "diagnostics": self.diagnostics,
            "bootstrap": None if self.bootstrap is None else self.bootstrap.tolist(),
            "bounds": {p.name: [p.lower, p.upper] for p in self.law.params},
            "base_general": {repr(k): v for k, v in self.base_general.items()},
        }

    @classmethod
    def from_dict(cls, d: dict) -> "LawFit":
        law = get_law(d["law"])
        if law.param_names != list(d["params"]):
            raise ValueError(f"saved fit of law {d['law']!r} has parameters {list(d['params'])}, "
                             f"but the registered law has {law.param_names}")
        return cls(law, d["target"], d["params"], domain=d.get("domain", ""), stderr=d.get("stderr"),
                   correl=d.get("correl"), metrics=d.get("metrics"),
                   ranges={k: tuple(v) for k, v in (d.get("ranges") or {}).items()},
                   settings=FitSettings(**d.get("settings", {})),
                   bootstrap=None if d.get("bootstrap") is None else np.asarray(d["bootstrap"], float),
                   objective=d.get("objective", float("nan")), n_starts=d.get("n_starts", 0),
                   diagnostics=d.get("diagnostics"),
                   base_general={float(k): v for k, v in (d.get("base_general") or {}).items()})


class Fit:
    """The fitted laws of one domain: ``fit["domain"]``, ``fit["general"]``.

    ``base_losses``: measured base-model losses per model size (tokens == 0 rows), used as L_g0.
    """

    def __init__(self, fits: dict[str, LawFit], *, domain: str = "", base: pd.DataFrame | None = None,
                 source: dict | None = None):
        self.fits, self.domain = dict(fits), domain
        self.base_losses = base if base is not None else pd.DataFrame(columns=["general_loss", "domain_loss"])
        self.source = source or {}
        self.code_version = git_commit()  # of the code that fitted it; kept through save / load

    def __getitem__(self, target: str) -> LawFit:
        if target not in self.fits:
            raise KeyError(f"this fit has no {target!r}-loss law (fitted: {list(self.fits)}); refit with target='both'")
        return self.fits[target]

    @property
    def law(self) -> str:
        """The law's name, or "domain:NAME,general:NAME" when the two losses use different laws."""
        return pair_name({t: f.law.name for t, f in self.fits.items()})

    @property
    def targets(self) -> list[str]:
        return list(self.fits)

    @property
    def params(self) -> dict[str, dict[str, float]]:
        return {t: dict(f.params) for t, f in self.fits.items()}

    @property
    def metrics(self) -> pd.DataFrame:
        return pd.DataFrame({t: f.metrics for t, f in self.fits.items()}).T

    @property
    def has_bootstrap(self) -> bool:
        return all(f.bootstrap is not None for f in self.fits.values())

    def predict(self, model_size, tokens, domain_ratio, target: str | None = None):
        """Predicted losses. With ``target`` an array (or float for scalar inputs); otherwise a
        DataFrame with columns model_size, tokens, domain_ratio and ``<target>_loss`` per law."""
        if target is not None:
            out = self[target].predict(model_size, tokens, domain_ratio)
            return float(out) if np.ndim(out) == 0 else out
        N, D, r = LawFit._check_inputs(parse_counts(model_size, "model_size"), parse_counts(tokens, "tokens"),
                                       np.asarray(domain_ratio, float))
        df = pd.DataFrame({"model_size": N.ravel(), "tokens": D.ravel(), "domain_ratio": r.ravel()})
        for t, f in self.fits.items():
            df[LOSS_COLUMNS[t]] = np.ravel(f.predict(N, D, r))
        return df

    def report(self) -> str:
        head = f"D-CPT fit, domain {self.domain!r}, law {self.law}"
        if self.source.get("file"):
            head += f", from {self.source['file']} (sha256 {self.source.get('sha256', '')[:12]})"
        parts = [head] + [f.report() for f in self.fits.values()]
        if len(self.base_losses):
            parts.append("base-model losses (tokens = 0): " + ", ".join(
                f"N={format_count(n)}: L_g0={row.general_loss:.4f}" for n, row in self.base_losses.iterrows()))
        return "\n".join(parts)

    def __repr__(self):
        return f"<Fit {self.law} domain={self.domain!r} targets={self.targets}>"

    def _repr_pretty_(self, p, cycle):  # IPython
        p.text(self.report())

    def to_dict(self) -> dict:
        return {
            "schema_version": SCHEMA_VERSION, "package": "dcpt-law", "package_version": __version__,
            "git_commit": self.code_version,
            "domain": self.domain, "law": self.law, "source": self.source,
            "base_losses": {repr(float(n)): {"general_loss": float(r.general_loss), "domain_loss": float(r.domain_loss)}
                            for n, r in self.base_losses.iterrows()},
            "fits": {t: f.to_dict() for t, f in self.fits.items()},
        }

    def save(self, path) -> Path:
        """Write the fit as JSON (atomically: temp file + rename). Never pickles."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(_jsonable(self.to_dict()), indent=1, allow_nan=True)
        atomic_write(path, text)
        return path

    @classmethod
    def from_dict(cls, d: dict) -> "Fit":
        if d.get("schema_version") != SCHEMA_VERSION:
            raise ValueError(f"fit file schema_version {d.get('schema_version')!r} is not {SCHEMA_VERSION}: "
                             "refit with this version of dcpt-law")
        base = pd.DataFrame.from_dict(d.get("base_losses", {}), orient="index")
        if len(base):
            base.index = base.index.astype(float)
            base.index.name = "model_size"
        out = cls({t: LawFit.from_dict(v) for t, v in d["fits"].items()}, domain=d.get("domain", ""),
                  base=base if len(base) else None, source=d.get("source"))
        out.code_version = d.get("git_commit", "unknown")
        return out


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    return x


def load_fit(path) -> Fit:
    """Read a fit written by :meth:`Fit.save` (or a cross-domain fit: a :class:`CrossDomainFit`)."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"fit file {str(path)!r} does not exist: make one with `dcpt fit LOSSES --out {path}`")
    try:
        d = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"fit file {str(path)!r} is not valid JSON ({exc})") from None
    if d.get("kind") == "cross_domain":
        from .cross_domain import CrossDomainFit

        return CrossDomainFit.load(path)
    return Fit.from_dict(d)


# --- the fitting procedure ------------------------------------------------------------------------

def start_points(law: Law, ctx: dict, loss_scale: float, grid_scale: int = 1, seed: int = 0) -> np.ndarray:
    """The law's start grid; ``grid_scale`` > 1 adds jittered copies (more starts)."""
    grid = law.start_grid(ctx, loss_scale)
    if grid_scale > 1:
        rng = np.random.default_rng(seed)
        lo, hi = law.raw_bounds()
        extra = grid[None] + rng.normal(0, 0.3, (grid_scale - 1,) + grid.shape)
        grid = np.clip(np.concatenate([grid[None], extra]).reshape(-1, grid.shape[1]), lo, hi)
    return grid


def prescreened(law: Law, grid: np.ndarray, ctx: dict, logy: np.ndarray, delta: float, k: int,
                weights=1.0) -> np.ndarray:
    """The ``k`` points of ``grid`` (raw starts, (S, P)) with the lowest objective (weighted by ``weights``: a
    fold's training points), in order: one evaluation per start, no Jacobian, no step."""
    obj = objective(law, grid, ctx, logy, weights, delta)
    return grid[np.argsort(obj)[:min(k, len(grid))]]


def _polish(law: Law, X: dict, value0: np.ndarray, delta: float):
    """lmfit least_squares(loss='huber', f_scale=delta) from value0 in natural parametrisation.

    Its cost 0.5*f^2*rho((res/f)^2) equals the Huber loss exactly, so it is the same objective.
    Returns (values, stderr, correl, report) or None when it fails.
    """
    ctx = law_context(law, X, {"N": 0.0, "D": 0.0, "K": 0.0, "G": 0.0} if isinstance(law, PowerSumLaw) else None)
    logy = np.log(X["loss"])
    params = lmfit.Parameters()
    for p, v in zip(law.params, value0):
        if p.log:
            params.add(f"log_{p.name}", value=float(np.log(v)), min=float(np.log(p.lower)), max=float(np.log(p.upper)))
            params.add(p.name, expr=f"exp(log_{p.name})")
        else:
            params.add(p.name, value=float(np.clip(v, p.lower, p.upper)), min=p.lower, max=p.upper)
    raw_names = [f"log_{p.name}" if p.log else p.name for p in law.params]

    def residual(ps):
        theta = np.array([[ps[k].value for k in raw_names]])
        with np.errstate(all="ignore"):
            res = law.log_predict(theta, ctx)[0] - logy
        return np.where(np.isfinite(res), res, 1e3)

    try:
        with warnings.catch_warnings():  # lmfit's sqrt of a singular covariance: reported as n/a below
            warnings.simplefilter("ignore", RuntimeWarning)
            out = lmfit.minimize(residual, params, method="least_squares", loss="huber", f_scale=delta,
                                 x_scale="jac", xtol=1e-12, ftol=1e-12, gtol=1e-12, max_nfev=2000)
    except Exception:  # noqa: BLE001 - a failed polish keeps the global-search optimum
        return None
    values = np.array([out.params[p.name].value for p in law.params])
    stderr = {p.name: (float(out.params[p.name].stderr) if out.params[p.name].stderr is not None else float("nan"))
              for p in law.params}
    correl = {}
    for i, a in enumerate(raw_names):
        for b in raw_names[i + 1:]:
            c = (out.params[a].correl or {}).get(b)
            if c is not None:
                correl[f"{a}~{b}"] = float(c)
    return values, stderr, correl, lmfit.fit_report(out)


def fit_law(df: pd.DataFrame, law="dcpt", target: str = "domain", *, domain: str = "",
            settings: FitSettings | None = None, warn: bool = True, starts: np.ndarray | None = None,
            start: Mapping[str, float] | None = None) -> LawFit:
    """Fit one law to one loss on rows ``df`` (tokens > 0, one domain already selected). Starts: ``starts`` (raw),
    or ``start`` (natural parameters by name: the one start), else the law's start grid, cut to its ``prescreen``
    best points where the law sets one (:func:`prescreened`)."""
    law = get_law(law)
    settings = settings or FitSettings()
    if warn and "G" in law.needs:
        check_one_pretraining(df, f"the {target}-loss law {law.name!r}")
    if isinstance(law, AveragedLaw):
        return _fit_averaged(df, law, target, domain, settings, warn, start)
    _check_distinct(df, law, f"the {target} loss", warn)
    X = law_inputs(df, target)
    ctx = law_context(law, X)
    logy = np.log(X["loss"])
    if start is not None:
        starts = law.raw(np.array([[float(start[n]) for n in law.param_names]]), ctx)
    theta0 = starts if starts is not None else start_points(law, ctx, float(np.median(X["loss"])),
                                                            settings.grid_scale, settings.seed)
    if starts is None and law.prescreen:
        theta0 = prescreened(law, theta0, ctx, logy, settings.delta, law.prescreen)
    res = lm_search(law, ctx, logy, theta0, delta=settings.delta, max_iter=settings.max_iter)
    best = res.best
    values = law.natural(res.theta[best], ctx)
    obj = float(res.objective[best])
    stderr, correl, text = {}, {}, ""
    if settings.polish:
        pol = _polish(law, X, values, settings.delta)
        if pol is not None:
            v2, stderr, correl, text = pol
            o2 = float(objective(law, law.raw(v2[None], ctx), ctx, logy, 1.0, settings.delta)[0])
            if o2 <= obj:
                values, obj = v2, o2
    params = dict(zip(law.param_names, map(float, values)))
    pred = law.predict(params, X["N"], X["D"], X["r"], G=X["G"] if "G" in law.needs else None)
    ranges = {c: (float(df[c].min()), float(df[c].max())) for c in ("model_size", "tokens", "domain_ratio")}
    known = pd.Series(X["G"]).groupby(X["N"]).mean().dropna()
    lf = LawFit(law, target, params, domain=domain, stderr=stderr, correl=correl,
                metrics=_metrics(pred, X["loss"], settings.delta), ranges=ranges, settings=settings,
                objective=obj, n_starts=len(theta0), report_text=text, base_general=known.to_dict())
    lf._search = res  # kept for bootstrap warm starts (not serialised)
    if settings.bootstrap:
        lf.bootstrap = _bootstrap(lf, df, X, ctx, logy, res, settings)
    return diagnose_fit(lf, X, ctx, warn)


def _fit_averaged(df: pd.DataFrame, law: AveragedLaw, target: str, domain: str, settings: FitSettings,
                  warn: bool, start: Mapping[str, float] | None = None) -> LawFit:
    """Fit each member of an averaged law on its own, then join them: parameters ``<member>.<name>``, metrics of
    the mean, and bootstrap resamples side by side (every member resamples the same runs: same seed, same rows).
    ``start``: the averaged law's parameters by name (``<member>.<name>``), each member's its one start."""
    own = lambda m: None if start is None else {k.split(".", 1)[1]: v for k, v in start.items()  # noqa: E731
                                                if k.split(".", 1)[0] == m.name}
    members = [fit_law(df, m, target, domain=domain, settings=settings, warn=False, start=own(m)) for m in law.members]
    named = lambda attr: {f"{m.law.name}.{k}": v for m in members for k, v in getattr(m, attr).items()}  # noqa: E731
    params = named("params")
    X = law_inputs(df, target)
    ctx = law_context(law, X)
    values = np.array([params[n] for n in law.param_names])
    pred = law.predict(params, X["N"], X["D"], X["r"], G=X["G"] if "G" in law.needs else None)
    lf = LawFit(law, target, params, domain=domain, stderr=named("stderr"), metrics=_metrics(pred, X["loss"], settings.delta),
                ranges=members[0].ranges, settings=settings, n_starts=sum(m.n_starts for m in members),
                objective=float(objective(law, law.raw(values[None], ctx), ctx, np.log(X["loss"]), 1.0,
                                          settings.delta)[0]),
                report_text="\n\n".join(f"[{m.law.name}]\n{m._report}" for m in members if m._report),
                base_general=pd.Series(X["G"]).groupby(X["N"]).mean().dropna().to_dict())
    if settings.bootstrap:
        lf.bootstrap = np.concatenate([m.bootstrap for m in members], axis=1)
    return diagnose(lf, X, warn, inherited=[f"{m.law.name}: {d}" for m in members for d in m.diagnostics])


def stratified_run_counts(groups: np.ndarray, ratio: np.ndarray, B: int, rng) -> np.ndarray:
    """(B, n_runs) resample counts: runs drawn with replacement *within each mixture ratio*.

    Every resample keeps every ratio of the design. A plain run bootstrap drops all r = 0 runs
    in a few percent of resamples, and the law is unconstrained (and discontinuous when eta > 0)
    exactly there, which turned 90% intervals of the recommended ratio into [0, r].
    """
    n_groups = int(groups.max()) + 1
    run_ratio = np.zeros(n_groups)
    run_ratio[groups] = ratio
    counts = np.zeros((B, n_groups), int)
    for r in np.unique(run_ratio):
        members = np.flatnonzero(run_ratio == r)
        draws = rng.integers(0, len(members), (B, len(members)))
        np.add.at(counts, (np.arange(B)[:, None], members[draws]), 1)
    return counts


def _bootstrap(lf: LawFit, df, X, ctx, logy, res, settings: FitSettings) -> np.ndarray:
    """Refit on ``settings.bootstrap`` resamples of whole runs (not rows), all batched.

    Each resample starts from the k best distinct optima of the full search, so a resample that
    moves to another basin can still find it. Returns natural parameters (B, P).
    """
    rng = np.random.default_rng(settings.seed + 1)
    groups = run_groups(df)
    B = settings.bootstrap
    counts = stratified_run_counts(groups, df["domain_ratio"].to_numpy(float), B, rng)
    weights = counts[:, groups].astype(float)  # (B, n)
    seeds = res.theta[res.distinct(4)]
    k = len(seeds)
    theta0 = np.repeat(seeds[None], B, axis=0).reshape(B * k, -1)
    W = np.repeat(weights, k, axis=0)
    out = lm_search(lf.law, ctx, logy, theta0, weights=W, delta=settings.delta, max_iter=settings.max_iter)
    f = out.objective.reshape(B, k)
    best = out.theta.reshape(B, k, -1)[np.arange(B), np.argmin(f, axis=1)]
    return lf.law.natural(best, ctx)


def _check_start(start, laws: dict, dom: str) -> None:
    """``fit(start=...)`` must hold a fit of the same law for every target fitted, of the same domain."""
    if not isinstance(start, Fit):
        raise ValueError(f"start: give a Fit (dl.fit or dl.load_fit), not {type(start).__name__}")
    for t, name in laws.items():
        if t not in start.targets:
            raise ValueError(f"start: the given fit has no {t}-loss law (it fitted {', '.join(start.targets)}): "
                             f"fit target={t!r} without start, or start from a fit of both losses")
        if start[t].law.name != get_law(name).name:
            raise ValueError(f"start: its {t}-loss law is {start[t].law.name!r}, not {get_law(name).name!r}: start "
                             "from a fit of the same law")
    if start.domain and dom and start.domain != dom:
        raise ValueError(f"start: the given fit is of domain {start.domain!r}, not {dom!r}: start from a fit of "
                         "the same domain")


def _source_info(table, df: pd.DataFrame) -> dict:
    info = {}
    if isinstance(table, (str, os.PathLike)):
        p = Path(table)
        info["file"] = str(p)
        info["sha256"] = hashlib.sha256(p.read_bytes()).hexdigest()
    info["rows"] = int(len(df))
    fitted = df[df["tokens"] > 0]
    info["model_sizes"] = sorted(map(float, fitted["model_size"].unique()))
    info["tokens"] = [float(fitted["tokens"].min()), float(fitted["tokens"].max())] if len(fitted) else []
    info["ratios"] = sorted(map(float, fitted["domain_ratio"].unique()))
    if "git_commit" in df.columns:
        info["git_commits"] = sorted(map(str, df["git_commit"].dropna().unique()))[:5]
    return info


# Our recommended pair: the scaled laws (the base model's general loss G multiplies what is learned), with the
# general loss gated by exposure (domain-only CPT forgets the base model: its general loss is the same at every
# size) and each general CPT token worth G^-nu (a better base model gains more from it). Held out at a size ~4x
# the largest fitted one (docs/validation.md; 4 domains): dcpt-scaled has a better median domain-loss R^2 than
# D-CPT in 5 of 6 experiments (m4c 0.93 -> 0.94, m4d 0.94 -> 0.97, the 2-layer m4x 0.86 -> 0.93; xl equal), though
# not a better error at the largest D on the 3-4-layer ladders (4.4-4.8% vs 2.0-2.9%); total-data-scaled-gain lifts
# the general-loss R^2 from 0.82-0.86 (total-data-scaled-gated, the default before) to 0.87-0.89 and cuts its MAPE
# from 1.4-1.8% to 1.0-1.4% on every ladder with 3+ layers, single seed and every seed (equal on the 2-layer one
# and at xl), at the same usage-1 regret (medians 0.05-0.27%). Usage 3 (allocate_compute), which varies N, needs
# an N-based law such as "dcpt".
RECOMMENDED_LAW = {"domain": "dcpt-scaled", "general": "total-data-scaled-gain"}


def fit(table, law="dcpt", target: str = "both", domain: str | None = None, *, bootstrap: int = 0,
        delta: float = 1e-3, seed: int = 0, grid_scale: int = 1, polish: bool = True, warn: bool = True,
        start: Fit | None = None) -> Fit:
    """Fit ``law`` to a loss table (DataFrame or CSV/Parquet path).

    law: a registered name, or one per loss: ``{"domain": "dcpt", "general": "total-data"}``, or
    ``"recommended"`` for :data:`RECOMMENDED_LAW` (that pair; the default of ``dcpt fit``).
    The default here stays the paper's D-CPT Law for both losses. The anchored laws
    (``"dcpt-anchored"``, ``"total-data-anchored"``) take the size from the base model's general loss G:
    the table needs a tokens = 0 row per model size (and seed), and predictions at a new size need
    ``base_general_loss=`` (the same L_g0 that usage 1 needs).
    target: ``"domain"``, ``"general"`` or ``"both"``. domain: which domain of the table (needed
    when it holds several). bootstrap: number of run-level resamples (stratified by mixture ratio)
    kept for 90% intervals.
    start: a Fit of the same law(s) and domain whose parameters are the one start of each search, in place
    of the law's grid: seconds instead of minutes, e.g. to add bootstrap intervals to a fit made without them,
    ``dl.fit(table, law, bootstrap=200, start=fitted)``. On other rows it finds the optimum near the old one,
    not a better basin elsewhere: the global search stays the way to fit new data.
    """
    if target not in ("domain", "general", "both"):
        raise ValueError(f"target={target!r}: use 'domain', 'general' or 'both'")
    if bootstrap < 0:
        raise ValueError(f"bootstrap={bootstrap!r} must be >= 0 (number of resamples, e.g. 200)")
    df_all = load_losses(table)
    dom = single_domain(df_all, domain)
    rows = fit_rows(df_all, dom)
    if len(rows) == 0:
        raise ValueError(f"domain {dom!r} has no rows with tokens > 0 to fit: run the CPT stage of the sweep")
    settings = FitSettings(delta=delta, bootstrap=bootstrap, seed=seed, grid_scale=grid_scale, polish=polish)
    targets = TARGETS if target == "both" else (target,)
    if isinstance(law, str) and law == "recommended":
        law = RECOMMENDED_LAW
    if isinstance(law, dict):
        unknown = sorted(set(law) - set(TARGETS))
        if unknown or any(t not in law for t in targets):
            raise ValueError(f"law={law!r}: a dict maps each fitted target ({', '.join(targets)}) to a law name, "
                             "e.g. {'domain': 'dcpt', 'general': 'total-data'}")
    laws = {t: (law[t] if isinstance(law, dict) else law) for t in targets}
    if start is not None:
        _check_start(start, laws, dom)
    fits = {t: fit_law(rows, laws[t], t, domain=dom, settings=settings, warn=warn,
                       start=None if start is None else start[t].params) for t in targets}
    return Fit(fits, domain=dom, base=base_losses(df_all, dom), source=_source_info(table, df_all))
