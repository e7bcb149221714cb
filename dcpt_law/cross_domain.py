"""Cross-Domain D-CPT Law (Que et al. 2024, section 3.4): one law for several domains.

    L(N, D, r, K) = E + A/N^alpha + B*r^eta/D^beta + C/(r+eps)^gamma + F/K^mu
    K = w1/k1 + w2*k2                      (w1 = 1: F absorbs the scale of K)

All parameters are shared across domains; a domain enters only through its coefficient K,
computed from two cheap measurements (:func:`domain_coefficient`):

- k1: the base model's validation loss on the domain (the tokens == 0 rows), at the smallest
  model size of the table;
- k2: the relative drop of the domain loss after ``probe_tokens`` CPT tokens at r_d = 1 on
  that smallest size: k2 = (k1 - L_d(probe_tokens)) / k1.

For a fixed domain the K-term is a constant, so a cross-domain fit *for one domain* is an
ordinary D-CPT law with E' = E + F/K^mu: :meth:`CrossDomainFit.for_domain` returns that
:class:`~dcpt_law.fitting.Fit`, and every usage (``predict_ratio`` ...) works on it.

``unit="bpb"`` fits losses in bits per byte (loss / (ln 2 * bytes per token)), which puts
domains with very different tokenisations on one scale; ``"nats"`` fits nats per token.
"""
from __future__ import annotations

import copy
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .fitting import TARGETS, Fit, FitSettings, LawFit, _check_distinct, _metrics
from .laws import DCPT, Law, Param, log_sum_terms
from .search import lm_search, objective
from .table import LOSS_COLUMNS, base_losses, fit_rows, law_inputs, load_losses
from .transfer import CalibratedFit, fit_calibrated, probe_rows, read_base, write_cross_fit

UNITS = ("nats", "bpb")
K_DEFINITIONS = ("k1+k2", "k1", "k2")  # which measurements K uses


@dataclass(frozen=True)
class DomainCoefficient:
    """The two probe measurements of one domain (losses in the fit's unit)."""

    k1: float  # base-model domain loss
    k2: float  # relative domain-loss drop after probe_tokens at r_d = 1
    probe_tokens: float = float("nan")
    model_size: float = float("nan")


def domain_coefficient(base_loss: float, probe_losses, probe_tokens=None, *, model_size=float("nan")) -> DomainCoefficient:
    """k1 and k2 of a domain from its probe.

    base_loss: the base model's domain validation loss (k1). probe_losses: the domain loss after
    the probe run (a float), or a sequence of losses logged during it whose last entry is used.
    k2 = (k1 - probe loss) / k1, the relative decline.
    """
    k1 = float(base_loss)
    last = float(np.atleast_1d(np.asarray(probe_losses, float))[-1])
    if not (np.isfinite(k1) and k1 > 0 and np.isfinite(last) and last > 0):
        raise ValueError(f"domain_coefficient: base_loss={base_loss!r} and probe_losses must be finite losses > 0")
    return DomainCoefficient(k1, (k1 - last) / k1, float(probe_tokens) if probe_tokens is not None else float("nan"),
                             float(model_size))


def to_unit(df: pd.DataFrame, unit: str) -> pd.DataFrame:
    """Losses converted to ``unit`` (a copy). ``bpb`` needs the runner's bytes-per-token columns."""
    if unit not in UNITS:
        raise ValueError(f"unit={unit!r}: use 'nats' (per token) or 'bpb' (bits per byte)")
    if unit == "nats":
        return df
    need = ["general_bytes_per_token", "domain_bytes_per_token"]
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise ValueError(f"unit='bpb' needs the columns {missing} (the runner logs them); use unit='nats'")
    out = df.copy()
    for t, c in (("general", "general_bytes_per_token"), ("domain", "domain_bytes_per_token")):
        out[LOSS_COLUMNS[t]] = out[LOSS_COLUMNS[t]] / (np.log(2) * out[c])
    return out


def measure_coefficients(df: pd.DataFrame, probe_tokens: float, unit: str = "nats") -> dict[str, DomainCoefficient]:
    """k1, k2 of every domain of a loss table, from its smallest size's base row and r_d = 1 run.

    The probe loss is the r_d = 1 run's domain loss at the first logged token count >= probe_tokens.
    """
    df = to_unit(df, unit)
    out = {}
    for dom, g in df.groupby("domain"):
        N = g["model_size"].min()
        small = g[g["model_size"] == N]
        base = small[small["tokens"] == 0]
        run = small[(small["tokens"] >= probe_tokens) & np.isclose(small["domain_ratio"], 1.0)]
        if base.empty or run.empty:
            raise ValueError(f"domain {dom!r}: the probe needs a tokens == 0 row and an r_d = 1 run reaching "
                             f"{probe_tokens:g} tokens at the smallest size ({N:g}); run `dcpt probe CONFIG --domain {dom}`")
        first = run[run["tokens"] == run["tokens"].min()]
        out[dom] = domain_coefficient(base["domain_loss"].mean(), first["domain_loss"].mean(),
                                      float(first["tokens"].iloc[0]), model_size=float(N))
    return out


class CrossDomainLaw(Law):
    """D-CPT + F/K^mu with K = 1/k1 + w2*k2 (or one of them); analytic Jacobian."""

    def __init__(self, k_definition: str = "k1+k2"):
        if k_definition not in K_DEFINITIONS:
            raise ValueError(f"k_definition={k_definition!r}: use one of {K_DEFINITIONS}")
        self.k_definition = k_definition
        self.base = DCPT
        extra = [Param("F", 1e-12, 1e15, (0.05, 0.5), log=True, doc="domain-coefficient term"),
                 Param("mu", -4.0, 4.0, (-1.0, 0.5, 1.5), doc="exponent of K")]
        if k_definition == "k1+k2":
            extra.append(Param("w2", 1e-6, 1e6, (0.3, 3.0, 30.0), log=True, doc="weight of k2 in K (w1 = 1)"))
        self.params = DCPT.params + tuple(extra)
        self.name = f"cross-dcpt[{k_definition}]"
        self.formula = "L = E + A/N^alpha + B*r^eta/D^beta + C/(r+eps)^gamma + F/K^mu, K = " + {
            "k1+k2": "1/k1 + w2*k2", "k1": "1/k1", "k2": "k2"}[k_definition]
        self.needs = ("N", "D", "r")

    def prepare(self, N, D, r, K=None, k1=None, k2=None) -> dict:
        ctx = self.base.prepare(N, D, r)
        ctx["k1"], ctx["k2"] = np.asarray(k1, float), np.asarray(k2, float)
        return ctx

    def _logK(self, theta, ctx):
        """log K (S, n) and d logK / d log w2 (or None)."""
        k1, k2 = ctx["k1"][None, :], ctx["k2"][None, :]
        if self.k_definition == "k1":
            return np.broadcast_to(-np.log(k1), (theta.shape[0], k1.shape[1])), None
        if self.k_definition == "k2":
            return np.broadcast_to(np.log(np.maximum(k2, 1e-12)), (theta.shape[0], k1.shape[1])), None
        w2k2 = np.exp(theta[:, 11:12]) * k2
        K = 1.0 / k1 + w2k2
        return np.log(K), w2k2 / K

    def log_predict(self, theta, ctx, jac=False):
        theta = np.atleast_2d(np.asarray(theta, float))
        T, grads = self.base.log_terms(theta[:, :9], ctx)  # the D-CPT terms (4, S, n)
        logK, dlogK = self._logK(theta, ctx)
        gK = [(9, 1.0), (10, -logK)] + ([(11, -theta[:, 10:11] * dlogK)] if dlogK is not None else [])
        T = np.concatenate([T, (theta[:, 9:10] - theta[:, 10:11] * logK)[None]])  # + log F - mu log K
        return log_sum_terms(T, grads + [gK], theta.shape[1], jac)

    def natural(self, theta, ctx):
        theta = np.asarray(theta, float)
        return np.concatenate([self.base.natural(theta[..., :9], ctx),
                               Law.natural(self, theta, ctx)[..., 9:]], axis=-1)

    def raw(self, values, ctx):
        values = np.asarray(values, float)
        return np.concatenate([self.base.raw(values[..., :9], ctx), Law.raw(self, values, ctx)[..., 9:]], axis=-1)

    def start_grid(self, ctx, loss_scale):
        base = self.base.start_grid(ctx, loss_scale)
        axes = [np.array([p.to_raw(v * (loss_scale if p.name == "F" else 1.0)) for v in p.grid]) for p in self.params[9:]]
        extra = np.stack([m.ravel() for m in np.meshgrid(*axes, indexing="ij")], axis=1)
        return np.concatenate([np.repeat(base, len(extra), axis=0), np.tile(extra, (len(base), 1))], axis=1)

    def K(self, params: dict, coef: DomainCoefficient) -> float:
        if self.k_definition == "k1":
            return 1.0 / coef.k1
        if self.k_definition == "k2":
            return coef.k2
        return 1.0 / coef.k1 + params["w2"] * coef.k2


@dataclass
class CrossDomainFit:
    """Shared parameters per loss; ``coefficients`` per known domain. ``for_domain(name)`` -> Fit."""

    law: CrossDomainLaw
    params: dict[str, dict[str, float]]
    coefficients: dict[str, DomainCoefficient]
    unit: str = "nats"
    probe_tokens: float = float("nan")
    metrics: dict = field(default_factory=dict)
    ranges: dict = field(default_factory=dict)
    base: dict = field(default_factory=dict)  # domain -> DataFrame of base losses (tokens == 0), in `unit`

    def add_domain(self, name: str, coef: DomainCoefficient, base: pd.DataFrame | None = None) -> None:
        """Register a new domain from its probe (k1, k2) and optionally its base-model losses."""
        self.coefficients[name] = coef
        if base is not None:
            self.base[name] = base

    def for_domain(self, name: str) -> Fit:
        """The D-CPT Law of one domain: E' = E + F/K^mu, everything else shared."""
        if name not in self.coefficients:
            raise ValueError(f"domain {name!r} has no coefficient: known {sorted(self.coefficients)}; measure it with "
                             "`dcpt probe CONFIG --domain NAME` and add it with add_domain(name, domain_coefficient(...))")
        coef = self.coefficients[name]
        fits = {}
        for t, p in self.params.items():
            K = self.law.K(p, coef)
            q = {k: p[k] for k in DCPT.param_names}
            q["E"] = p["E"] + p["F"] / K ** p["mu"]
            fits[t] = LawFit(DCPT, t, q, domain=name, ranges=self.ranges, settings=FitSettings())
        return Fit(fits, domain=name, base=self.base.get(name), source={"cross_domain": self.law.name, "unit": self.unit})

    def predict(self, domain: str, model_size, tokens, domain_ratio, target: str = "domain"):
        return self.for_domain(domain)[target].predict(model_size, tokens, domain_ratio, warn=False)

    def report(self) -> str:
        lines = [f"Cross-domain fit, law {self.law.name}: {self.law.formula}; unit {self.unit}, probe "
                 f"{self.probe_tokens:g} tokens at r_d = 1 on the smallest size"]
        for t, p in self.params.items():
            m = self.metrics.get(t, {})
            lines.append(f"[{t} loss] R2 {m.get('r2', float('nan')):.5f}  MAPE {m.get('mape', float('nan')):.3f}%  "
                         + "  ".join(f"{k}={v:.4g}" for k, v in p.items()))
        lines.append("domains: " + ", ".join(f"{d} (k1={c.k1:.4g}, k2={c.k2:.4g})" for d, c in self.coefficients.items()))
        return "\n".join(lines)

    def save(self, path) -> Path:
        return write_cross_fit(path, {"k_definition": self.law.k_definition, "params": self.params,
                                      "coefficients": {k: c.__dict__ for k, c in self.coefficients.items()},
                                      "unit": self.unit, "probe_tokens": self.probe_tokens, "metrics": self.metrics,
                                      "ranges": self.ranges}, self.base)

    @classmethod
    def load(cls, path) -> "CrossDomainFit | CalibratedFit":
        d = json.loads(Path(path).read_text())
        if d.get("kind") != "cross_domain":
            raise ValueError(f"{path} is not a cross-domain fit (use dcpt_law.load_fit)")
        if d.get("method") == "calibrated":
            return CalibratedFit.from_dict(d)
        base = read_base(d)
        return cls(CrossDomainLaw(d["k_definition"]), d["params"],
                   {k: DomainCoefficient(**c) for k, c in d["coefficients"].items()}, d["unit"], d["probe_tokens"],
                   d.get("metrics", {}), {k: tuple(v) for k, v in d.get("ranges", {}).items()}, base)


def _inputs(rows: pd.DataFrame, target: str, coefs: dict[str, DomainCoefficient]) -> dict:
    """:func:`law_inputs` plus each row's domain coefficients k1, k2."""
    return {**law_inputs(rows, target),
            "k1": rows["domain"].map(lambda d: coefs[d].k1).to_numpy(float),
            "k2": rows["domain"].map(lambda d: coefs[d].k2).to_numpy(float)}


def _search(law: CrossDomainLaw, X: dict, delta: float, keep: int, weights=None, chunk: int = 4096):
    """Screen the whole start grid by objective (cheap), polish the ``keep`` best by batched LM."""
    ctx = law.prepare(X["N"], X["D"], X["r"], k1=X["k1"], k2=X["k2"])
    logy = np.log(X["loss"])
    grid = law.start_grid(ctx, float(np.median(X["loss"])))
    w = 1.0 if weights is None else weights
    f = np.concatenate([objective(law, grid[i:i + chunk], ctx, logy, w, delta) for i in range(0, len(grid), chunk)])
    best = grid[np.argsort(f)[:keep]]
    res = lm_search(law, ctx, logy, best, weights=weights, delta=delta)
    return law.natural(res.theta[res.best], ctx), float(res.objective[res.best])


METHODS = ("paper", "calibrated")
PROBE_TOKENS = {"paper": 32_768, "calibrated": 262_144}  # default probe length per method


def fit_cross_domain(table, *, method: str = "calibrated", probe_tokens=None, unit: str = "nats",
                     k_definition: str = "k1+k2", domains=None, delta: float = 1e-3, keep: int = 256,
                     coefficients: dict[str, DomainCoefficient] | None = None):
    """Joint fit over every domain of the table (or ``domains``), one law per loss.

    method: ``"calibrated"`` (default), ours: shared exponents, each domain's coefficients from its
    probe; returns a :class:`~dcpt_law.transfer.CalibratedFit`. It won every held-out domain of our
    leave-one-domain-out test (docs/validation.md). ``"paper"``: the Cross-Domain D-CPT Law (shared
    shape, a domain shifts the level by F/K^mu); returns a :class:`CrossDomainFit`.
    probe_tokens: the probe's CPT tokens (r_d = 1, smallest size); default 32,768 (paper: defines
    k2) or 262,144 (calibrated: the probe's loss curve up to there). ``coefficients``: k1, k2 per
    domain measured elsewhere (paper only; default: measured from the table's own rows).
    """
    if method not in METHODS:
        raise ValueError(f"method={method!r}: use one of {METHODS}")
    probe_tokens = PROBE_TOKENS[method] if probe_tokens is None else probe_tokens
    df = to_unit(load_losses(table), unit)
    if domains is not None:
        df = df[df["domain"].isin(list(domains))]
    doms = sorted(df["domain"].unique())
    if len(doms) < 2:
        raise ValueError(f"fit_cross_domain needs at least 2 domains in the table, got {doms}")
    if method == "calibrated":
        if coefficients is not None:
            raise ValueError("coefficients= (k1, k2 per domain) is for method='paper'; the calibrated law "
                             "measures each domain from its rows")
        _check_distinct(fit_rows(df), DCPT, "the cross-domain fit")
        return fit_calibrated(df, doms, probe_tokens, unit)
    coefs = dict(coefficients) if coefficients is not None else measure_coefficients(df, probe_tokens)
    missing = [d for d in doms if d not in coefs]
    if missing:
        raise ValueError(f"coefficients: no k1, k2 for domain(s) {missing}")
    law = CrossDomainLaw(k_definition)
    rows = pd.concat([fit_rows(df, d) for d in doms], ignore_index=True)
    _check_distinct(rows, DCPT, "the cross-domain fit")
    params, metrics = {}, {}
    for t in TARGETS:
        X = _inputs(rows, t, coefs)
        values, _ = _search(law, X, delta, keep)
        params[t] = dict(zip(law.param_names, map(float, values)))
        ctx = law.prepare(X["N"], X["D"], X["r"], k1=X["k1"], k2=X["k2"])
        metrics[t] = _metrics(np.exp(law.log_predict(law.raw(values[None], ctx), ctx)[0]), X["loss"], delta)
    ranges = {c: (float(rows[c].min()), float(rows[c].max())) for c in ("model_size", "tokens", "domain_ratio")}
    return CrossDomainFit(law, params, coefs, unit, float(probe_tokens), metrics, ranges,
                          {d: base_losses(df, d) for d in doms})


def leave_one_domain_out(table, *, method: str = "calibrated", probe_tokens=None, unit: str = "nats",
                         k_definition: str = "k1+k2", delta: float = 1e-3, in_domain: bool = True,
                         fit_on=None, probe_sizes: int | None = None) -> pd.DataFrame:
    """For every domain: fit on the others, predict its whole grid from its probe alone, and score it
    next to that domain's own in-domain D-CPT fit (``in_domain=False`` skips that fit: NaN columns).
    Also the probe's share of the grid's compute.

    ``fit_on``: the domains of one fit; then only the table's other domains are held out, each predicted from
    its probe by that fit (a test on domains no fit and no choice saw; default: every domain, each held out
    from a fit on the rest). ``probe_sizes``: how many of the smallest sizes the calibrated law's probe runs at
    (default 2: it also fits the domain's own size coefficient; the paper's k1, k2 are one size's: 1)."""
    from .fitting import fit as fit_one

    probe_tokens = PROBE_TOKENS.get(method, 0) if probe_tokens is None else probe_tokens
    probe_sizes = (2 if method == "calibrated" else 1) if probe_sizes is None else probe_sizes
    if probe_sizes != 1 and method != "calibrated":
        raise ValueError(f"probe_sizes={probe_sizes!r}: the paper's k1, k2 come from one size; use method='calibrated'")
    df = to_unit(load_losses(table), unit)
    doms = sorted(df["domain"].unique())
    if fit_on is not None:
        fit_on = sorted({fit_on} if isinstance(fit_on, str) else set(fit_on))
        missing = [d for d in fit_on if d not in doms]
        if not fit_on:
            raise ValueError("fit_on=[]: name the domains of the fit (or None: leave each domain out in turn)")
        if missing or len(fit_on) == len(doms):
            raise ValueError(f"fit_on={fit_on}: " + (f"{missing} not in the table (domains: {doms})" if missing else
                             "leaves no domain of the table to hold out"))
    out, shared = [], None
    for held in ([d for d in doms if d not in fit_on] if fit_on is not None else doms):
        if shared is None or fit_on is None:
            shared = fit_cross_domain(df, method=method, probe_tokens=probe_tokens, unit="nats",
                                      k_definition=k_definition, domains=fit_on or [d for d in doms if d != held],
                                      delta=delta)
        cf = shared if fit_on is None else copy.deepcopy(shared)  # add_domain calibrates in place: each on the fit alone
        if method == "calibrated":
            cf.add_domain(held, probe_rows(df, held, probe_tokens, n_sizes=probe_sizes))
        else:
            cf.add_domain(held, measure_coefficients(df[df["domain"] == held], probe_tokens)[held],
                          base_losses(df, held))
        rows = fit_rows(df, held)
        own = None
        if in_domain:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                own = fit_one(df, domain=held, delta=delta, warn=False)
        for t in TARGETS:
            obs = rows[LOSS_COLUMNS[t]].to_numpy(float)
            args = (rows["model_size"], rows["tokens"], rows["domain_ratio"])
            cross = _metrics(np.asarray(cf.for_domain(held)[t].predict(*args, warn=False)), obs, delta)
            mine = (_metrics(np.asarray(own[t].predict(*args, warn=False)), obs, delta) if own is not None
                    else {"r2": float("nan"), "huber": float("nan")})
            out.append({"domain": held, "target": t, "method": method,
                        "k_definition": k_definition if method == "paper" else "", "unit": unit,
                        "r2_cross": cross["r2"], "huber_cross": cross["huber"], "mape_cross": cross["mape"],
                        "r2_in_domain": mine["r2"], "huber_in_domain": mine["huber"],
                        "probe_sizes": probe_sizes,
                        "probe_compute_share": probe_compute_share(df, held, probe_tokens, probe_sizes)})
    return pd.DataFrame(out)


def probe_compute_share(df: pd.DataFrame, domain: str, probe_tokens: float, n_sizes: int = 1) -> float:
    """Compute of the probe (6 N D at each of the ``n_sizes`` smallest sizes, probe_tokens) over the domain's full
    grid (6 N D summed over its CPT runs at their last token count). Uses ``total_params`` when logged."""
    g = df[(df["domain"] == domain) & (df["tokens"] > 0)]
    size = "total_params" if "total_params" in g.columns else "model_size"
    last = g.groupby(["model_size", "domain_ratio"] + (["seed"] if "seed" in g.columns else []))
    grid = float(sum(6 * grp[size].iloc[0] * grp["tokens"].max() for _, grp in last))
    probed = [g.loc[g["model_size"] == n, size].iloc[0] for n in sorted(g["model_size"].unique())[:n_sizes]]
    return 6 * float(sum(probed)) * probe_tokens / grid
