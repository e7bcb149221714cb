"""Probe-calibrated cross-domain law (ours): a new domain's D-CPT Law from one cheap probe run.

The paper's cross-domain form (:mod:`dcpt_law.cross_domain`) shares every shape parameter and
lets a domain move only the loss *level* (F/K^mu). Our domains differ in shape (chemistry's
domain loss falls from 9.4 to 1.6 nats over the ratios, law's from 7.0 to 4.4), so that form
cannot fit them. Here the *exponents* are shared and each domain gets its own *coefficients*,
fitted from its probe::

    domain loss:  L_d = E_k + A/N^alpha + B_k*r^eta/D^beta_k + C_k/(r+eps)^gamma
    general loss: L_g = E + A/N^alpha + B*r^eta/D^beta + C_k/(r+eps)^gamma      (r = 1 - r_d)

k is the domain; A, alpha, eta, gamma, eps (and, for the general loss, E, B, beta) are shared.
The general loss is the same corpus for every domain, so only its forgetting level C_k
depends on the domain. The probe of a new domain (``dcpt probe``) is cheap:

- the base model's domain loss at each probed size (tokens == 0; an r_d = 0 point), and
- one r_d = 1 run of each probed size for ``probe_tokens`` tokens, with its logged losses;

the probed sizes are the two smallest of the sweep by default, or the smallest alone (``n_sizes=1``,
``dcpt probe --sizes 1``). From these, E_k, B_k, C_k and beta_k (domain loss) and C_k (general loss) are a
small fit with every shared parameter held fixed. With a probe of one size A and alpha stay shared: it cannot
see how the domain loss scales with N. A probe at two sizes can: the domain loss's A_k is then the new
domain's own (alpha shared).
Measured (docs/validation.md 3b: fitted on four domains on the depth-matched ladder, 27K-443K parameters, four
others held out): one size under-predicted the larger sizes' loss on domains that gain less from size than the
fitted ones (manuals: 1.5% off at the probed size, 10% at 16x), domain-loss R^2 0.62-0.92; two sizes gave
0.86-0.93 at 1.2% of a grid's compute (section 3, leave one domain out on xs, s, m: 0.92-0.97 and 0.96-0.97).

Fitting: variable projection. For given exponents the law is linear in its coefficients, which
are solved by non-negative least squares on relative residuals ((pred - obs)/obs, about the log
residual); the exponents are searched over a grid, then polished with L-BFGS-B. Relative
residuals make the fit unit-free: nats per token and bits per byte give the same law.
"""
from __future__ import annotations

import itertools
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import minimize, nnls

from .provenance import git_commit
from . import _warn
from ._warn import FitWarning
from ._atomic import atomic_write
from .fitting import TARGETS, Fit, FitSettings, LawFit, _jsonable, _metrics
from .laws import DCPT
from .table import base_losses, law_inputs

SHARED = {"domain": ("A",), "general": ("E", "A", "B")}  # coefficients shared across domains, per loss
_N0 = _D0 = 1e5  # scales of N and D inside the basis (keeps the least-squares columns near 1)
# alpha, beta, eta, gamma, log eps; eta > 0 so that the data term vanishes at r = 0 as in the D-CPT Law
_LO = np.array([0.0, 0.0, 1e-3, 0.0, np.log(1e-4)])
_HI = np.array([3.0, 3.0, 3.0, 3.0, np.log(10.0)])
_GRID = list(itertools.product([0.1, 0.3, 0.7, 1.2], [0.1, 0.3, 0.7, 1.2], [0.05, 0.3, 1.0], [0.1, 0.5, 1.5],
                               np.log([0.003, 0.03, 0.3])))


def _basis(x, N, D, r) -> np.ndarray:
    """Columns 1, (N/N0)^-alpha, r^eta (D/D0)^-beta, (r+eps)^-gamma for x = (alpha, beta, eta, gamma, log eps).
    The data term is 0 at r = 0 (no tokens of the corpus), whatever D (eta > 0)."""
    alpha, beta, eta, gamma, log_eps = x
    rr = np.where(r > 0, r, 1.0)
    data = np.where(r > 0, rr ** eta * (np.maximum(D, 1.0) / _D0) ** -beta, 0.0)
    return np.stack([np.ones_like(N), (N / _N0) ** -alpha, data, (r + np.exp(log_eps)) ** -gamma], axis=1)


def _columns(target: str) -> tuple[list[int], list[int]]:
    """Indices of (E, A, B, C) shared across domains for this loss, and those each domain fits."""
    shared = [i for i, n in enumerate("EABC") if n in SHARED[target]]
    return shared, [i for i in range(4) if i not in shared]


def _design(x, groups, target, betas=None):
    """Stacked, relative-residual design for all domains: shared columns first, then per-domain ones."""
    shared, own = _columns(target)
    k = len(groups)
    rows = []
    for j, (N, D, r, y) in enumerate(groups):
        xj = x.copy()
        if betas is not None:
            xj[1] = betas[j]
        B = _basis(xj, N, D, r)
        M = np.zeros((len(y), len(shared) + k * len(own)))
        M[:, :len(shared)] = B[:, shared]
        M[:, len(shared) + j * len(own):len(shared) + (j + 1) * len(own)] = B[:, own]
        rows.append(M / y[:, None])
    return np.vstack(rows), shared, own


def _solve(x, groups, target, betas=None):
    """Coefficients (E, A, B, C) per domain and the sum of squared relative residuals."""
    M, shared, own = _design(x, groups, target, betas)
    c, rnorm = nnls(M, np.ones(M.shape[0]), maxiter=50 * M.shape[1])
    out = []
    for j in range(len(groups)):
        coef = np.zeros(4)
        coef[shared] = c[:len(shared)]
        coef[own] = c[len(shared) + j * len(own):len(shared) + (j + 1) * len(own)]
        out.append(coef)
    return out, rnorm ** 2


def _fit_shared(groups, target):
    """Grid search + L-BFGS-B over the shared exponents (and per-domain beta for the domain loss)."""
    f = np.array([_solve(np.array(x), groups, target)[1] for x in _GRID])
    best = None
    for i in np.argsort(f)[:6]:
        res = minimize(lambda x: _solve(x, groups, target)[1], np.array(_GRID[i]), method="L-BFGS-B",
                       bounds=list(zip(_LO, _HI)))
        if best is None or res.fun < best.fun:
            best = res
    x, k = best.x, len(groups)
    if target == "general":
        return x, np.full(k, x[1]), _solve(x, groups, target)[0], best.fun
    # the domain loss: each domain its own data exponent beta_k, starting from the shared one
    lo, hi = np.r_[_LO, np.full(k, _LO[1])], np.r_[_HI, np.full(k, _HI[1])]
    obj = lambda z: _solve(z[:5], groups, target, z[5:])[1]  # noqa: E731
    res = minimize(obj, np.r_[x, np.full(k, x[1])], method="L-BFGS-B", bounds=list(zip(lo, hi)))
    z = res.x if res.fun <= best.fun else np.r_[x, np.full(k, x[1])]
    return z[:5], z[5:], _solve(z[:5], groups, target, z[5:])[0], min(res.fun, best.fun)


def write_cross_fit(path, fields: dict, base: dict) -> Path:
    """Write a cross-domain fit as JSON (atomic), with its code version and base losses per domain."""
    d = {"schema_version": 1, "kind": "cross_domain", "git_commit": git_commit(), **fields,
         "base": {k: {repr(float(n)): r.to_dict() for n, r in b.iterrows()} for k, b in base.items()}}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(_jsonable(d), indent=1))
    return path


def read_base(d: dict) -> dict[str, pd.DataFrame]:
    """The base losses per domain of a cross-domain fit's JSON (see :func:`write_cross_fit`)."""
    base = {}
    for k, b in d.get("base", {}).items():
        frame = pd.DataFrame.from_dict(b, orient="index")
        frame.index = frame.index.astype(float)
        base[k] = frame
    return base


def _natural(coef, alpha: float, beta: float) -> dict[str, float]:
    """Coefficients (E, A, B, C) of the scaled basis as the D-CPT Law's parameters (N, D in units of 1)."""
    return {"E": float(coef[0]), "A": float(coef[1] * _N0 ** alpha), "B": float(coef[2] * _D0 ** beta),
            "C": float(coef[3]), "beta": float(beta)}


def _scaled(p: dict, alpha: float) -> np.ndarray:
    """The inverse of :func:`_natural`."""
    return np.array([p["E"], p["A"] / _N0 ** alpha, p["B"] / _D0 ** p["beta"], p["C"]])


def probe_rows(df: pd.DataFrame, domain: str, probe_tokens: float, size=None, n_sizes: int = 2) -> pd.DataFrame:
    """The rows a probe of ``domain`` yields: at each probed model size, its base-model row and its r_d = 1 run's rows
    with tokens <= probe_tokens. ``size``: the model size(s) probed (a number or a list); default the ``n_sizes``
    smallest of the table's sizes for the domain (2, the default of ``dcpt probe``, lets the calibrated law fit how
    the domain's loss scales with N; 1: the smallest size alone, the paper's probe, cheaper)."""
    g = df[df["domain"] == domain]
    if size is None:
        if n_sizes < 1:
            raise ValueError(f"n_sizes={n_sizes!r}: probe at least 1 model size")
        sizes = sorted(g["model_size"].unique())[:n_sizes]
        if len(sizes) < n_sizes:
            raise ValueError(f"domain {domain!r}: a probe at {n_sizes} sizes needs {n_sizes} model sizes in the table, "
                             f"found {len(sizes)}; pass n_sizes={len(sizes) or 1} for a probe of fewer sizes, or run "
                             f"`dcpt probe CONFIG --domain {domain} --sizes {n_sizes}`")
    else:
        sizes = sorted(float(s) for s in np.atleast_1d(np.asarray(size, float)))
    out = []
    for N in sizes:
        at = g[np.isclose(g["model_size"], N)]
        base = at[at["tokens"] == 0].head(1)
        run = at[(at["tokens"] > 0) & (at["tokens"] <= probe_tokens) & np.isclose(at["domain_ratio"], 1.0)]
        if base.empty or len(run) < 2:
            raise ValueError(f"domain {domain!r}: the probe needs the base model's row (tokens == 0) and at least 2 "
                             f"logged losses of an r_d = 1 run up to {probe_tokens:g} tokens at N = {N:g}; "
                             f"found {len(base)} and {len(run)}. Run `dcpt probe CONFIG --domain {domain}`")
        out += [base, run]
    return pd.concat(out)


def _groups(rows_by_domain: dict, target: str, probe: bool = False):
    out = []
    for rows in rows_by_domain.values():
        X = law_inputs(rows, target)
        if target == "domain" and probe:  # the base row is an r_d = 0 point of the domain loss
            X["r"] = np.where(X["D"] == 0, 0.0, X["r"])
        elif target == "general":  # the general law has no value at D = 0
            keep = X["D"] > 0
            X = {k: v[keep] for k, v in X.items()}
        out.append((X["N"], X["D"], X["r"], X["loss"]))
    return out


@dataclass
class CalibratedFit:
    """Shared exponents per loss; per-domain coefficients; ``for_domain(name)`` -> Fit."""

    exponents: dict[str, dict[str, float]]  # target -> alpha, beta, eta, gamma, eps
    coefficients: dict[str, dict[str, dict[str, float]]]  # domain -> target -> E, A, B, C, beta
    probe_tokens: float
    metrics: dict = field(default_factory=dict)
    ranges: dict = field(default_factory=dict)
    base: dict = field(default_factory=dict)  # domain -> base losses (tokens == 0)
    unit: str = "nats"
    diagnostics: list = field(default_factory=list)  # parameters at a bound: what the fit can't tell
    method = "calibrated"

    def _x(self, target: str) -> np.ndarray:
        e = self.exponents[target]
        return np.array([e["alpha"], e["beta"], e["eta"], e["gamma"], np.log(e["eps"])])

    def add_domain(self, name: str, probe: pd.DataFrame) -> None:
        """Calibrate a new domain from its probe rows (see :func:`probe_rows`), all else fixed. A probe at one
        model size fits the domain loss's E, B, C and beta (A shared); at two or more sizes also its own A."""
        probe = probe[probe["domain"] == name] if "domain" in probe.columns else probe
        probe = probe_rows(probe.assign(domain=name), name, self.probe_tokens, size=probe["model_size"].unique())
        ref = next(iter(self.coefficients.values()))  # any known domain: its shared coefficients
        coefs = {}
        for t in TARGETS:
            x = self._x(t)
            (N, D, r, y), = _groups({name: probe}, t, probe=True)
            shared, own = _columns(t)
            if t == "domain" and probe["model_size"].nunique() > 1:  # the probe sees the domain's size scaling
                shared, own = [], [0, 1, 2, 3]
            fixed = _scaled(ref[t], self.exponents[t]["alpha"])
            betas = np.linspace(0.02, 2.0, 100) if t == "domain" else [x[1]]
            best = None
            for b in betas:
                xb = x.copy()
                xb[1] = b
                B = _basis(xb, N, D, r)
                resid = 1.0 - (B[:, shared] @ fixed[shared]) / y
                c, rnorm = nnls(B[:, own] / y[:, None], resid)
                if best is None or rnorm < best[0]:
                    best = (rnorm, b, c)
            coef = fixed.copy()
            coef[own] = best[2]
            coefs[t] = _natural(coef, self.exponents[t]["alpha"], best[1])
        self.coefficients[name] = coefs
        self.diagnostics = [d for d in self.diagnostics if not d.startswith(f"{name} ")] + _at_bounds({}, {name: coefs})
        # L_g0 is the base model's general loss: the same for every domain, so known sizes carry over
        own = base_losses(probe, name)
        known = [b for b in self.base.values() if len(b)]
        if known:
            general = pd.concat([b["general_loss"] for b in known], axis=1).mean(axis=1)
            own = own.reindex(own.index.union(general.index))
            own["general_loss"] = general.reindex(own.index).fillna(own["general_loss"])
        self.base[name] = own

    def for_domain(self, name: str) -> Fit:
        """The D-CPT Law of one domain (its coefficients, the shared exponents)."""
        if name not in self.coefficients:
            raise ValueError(f"domain {name!r} is not calibrated: known {sorted(self.coefficients)}; run its probe "
                             "(`dcpt probe CONFIG --domain NAME`) and add it with add_domain(name, probe_rows)")
        fits = {}
        for t in TARGETS:
            p = {**self.exponents[t], **self.coefficients[name][t]}
            # a coefficient fitted to 0 (its term absent) sits at the D-CPT Law's lower bound instead
            q = {prm.name: max(p[prm.name], prm.lower) for prm in DCPT.params}
            fits[t] = LawFit(DCPT, t, q, domain=name, ranges=self.ranges, settings=FitSettings(),
                             diagnostics=[d for d in self.diagnostics if d.startswith((f"{t} ", f"{name} {t}"))])
        return Fit(fits, domain=name, base=self.base.get(name), source={"cross_domain": "calibrated", "unit": self.unit})

    def predict(self, domain: str, model_size, tokens, domain_ratio, target: str = "domain"):
        return self.for_domain(domain)[target].predict(model_size, tokens, domain_ratio, warn=False)

    def report(self) -> str:
        lines = [f"Cross-domain fit, probe-calibrated (shared exponents, per-domain coefficients); probe "
                 f"{self.probe_tokens:g} tokens at r_d = 1 on the smallest size"]
        for t in TARGETS:
            m = self.metrics.get(t, {})
            lines.append(f"[{t} loss] R2 {m.get('r2', float('nan')):.5f}  MAPE {m.get('mape', float('nan')):.3f}%  "
                         + "  ".join(f"{k}={v:.4g}" for k, v in self.exponents[t].items()))
        for d, c in self.coefficients.items():
            lines.append(f"  {d}: " + "; ".join(f"{t} " + " ".join(f"{k}={v:.4g}" for k, v in c[t].items())
                                                 for t in TARGETS))
        lines += [f"  warning: {d}" for d in self.diagnostics]
        return "\n".join(lines)

    def save(self, path) -> Path:
        return write_cross_fit(path, {"method": "calibrated", "exponents": self.exponents,
                                      "coefficients": self.coefficients, "probe_tokens": self.probe_tokens,
                                      "metrics": self.metrics, "ranges": self.ranges, "unit": self.unit,
                                      "diagnostics": self.diagnostics}, self.base)

    @classmethod
    def from_dict(cls, d: dict) -> "CalibratedFit":
        base = read_base(d)
        return cls(d["exponents"], d["coefficients"], d["probe_tokens"], d.get("metrics", {}),
                   {k: tuple(v) for k, v in d.get("ranges", {}).items()}, base, d.get("unit", "nats"),
                   d.get("diagnostics", []))


def fit_calibrated(df: pd.DataFrame, doms: list[str], probe_tokens: float, unit: str = "nats") -> CalibratedFit:
    """Joint fit over the full grids of ``doms`` (the table's tokens > 0 rows)."""
    rows = {d: df[(df["domain"] == d) & (df["tokens"] > 0)] for d in doms}
    exps, coefs, metrics = {}, {d: {} for d in doms}, {}
    for t in TARGETS:
        groups = _groups(rows, t)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            x, betas, cs, _ = _fit_shared(groups, t)
        exps[t] = {"alpha": float(x[0]), "beta": float(x[1]), "eta": float(x[2]), "gamma": float(x[3]),
                   "eps": float(np.exp(x[4]))}
        pred, obs = [], []
        for j, d in enumerate(doms):
            xj = x.copy()
            xj[1] = betas[j]
            N, D, r, y = groups[j]
            pred.append(_basis(xj, N, D, r) @ cs[j])
            obs.append(y)
        metrics[t] = _metrics(np.concatenate(pred), np.concatenate(obs), 1e-3)
        for j, d in enumerate(doms):
            coefs[d][t] = _natural(cs[j], x[0], betas[j])
    all_rows = pd.concat(rows.values())
    ranges = {c: (float(all_rows[c].min()), float(all_rows[c].max())) for c in ("model_size", "tokens", "domain_ratio")}
    diagnostics = _at_bounds(exps, coefs)
    if diagnostics:
        _warn.emit("calibrated cross-domain fit: " + "; ".join(diagnostics), FitWarning)
    return CalibratedFit(exps, coefs, float(probe_tokens), metrics, ranges, {d: base_losses(df, d) for d in doms},
                         unit, diagnostics)


def _at_bounds(exps: dict, coefs: dict) -> list[str]:
    """Exponents at their search bounds and coefficients fitted to 0 (their term is absent)."""
    out = []
    names = ("alpha", "beta", "eta", "gamma", "eps")
    lo, hi = np.r_[_LO[:4], np.exp(_LO[4])], np.r_[_HI[:4], np.exp(_HI[4])]
    for t, e in exps.items():
        for n, a, b in zip(names, lo, hi):
            if np.isclose(e[n], a, rtol=1e-3, atol=1e-9) or np.isclose(e[n], b, rtol=1e-3):
                out.append(f"{t} loss: shared {n} = {e[n]:.4g} is at its search bound [{a:.3g}, {b:.3g}]")
    for d, c in coefs.items():
        for t, p in c.items():
            zero = [k for k in "EABC" if p[k] <= 0]
            if zero:
                out.append(f"{d} {t} loss: {', '.join(zero)} fitted to 0 (non-negative bound): that term is absent")
    return out
