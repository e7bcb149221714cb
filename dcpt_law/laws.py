"""Scaling laws of validation loss in model size N, CPT tokens D and mixture ratio r.

Units: N in parameters, D in tokens, r a share in [0, 1] (r_d for the domain loss, r_g = 1 - r_d
for the general loss), loss in nats per token.

Built-in laws (:data:`LAWS`):

==============  ======================================================================
``dcpt``        L = E + A/N^alpha + B*r^eta/D^beta + C/(r+eps)^gamma      (D-CPT Law, 9 params)
``chinchilla``  L = E + A/N^alpha + B/D^beta                              (fixed r, 5 params)
``additive``    L = E + A/N^alpha + B/D^beta + C/(r+eps)^gamma            (no D x r term, 8)
``effective``   L = E + A/N^alpha + B/(D*(r+eps))^beta                    (effective data, 6)
``total-data``  L = E + A/N^alpha + B/(D0 + r*D)^beta + C/(r+eps)^gamma   (ours: prior + CPT data, 9)
``dcpt-anchored``        D-CPT with A*G^alpha for A/N^alpha                  (ours, 9)
``total-data-anchored``  total-data with A*G^alpha for A/N^alpha             (ours, 9)
``dcpt-gated``  L = E + r^eta*(A/N^alpha + B/D^beta) + C/(r+eps)^gamma   (ours, 9)
``dcpt-gated-anchored``  dcpt-gated with A*G^alpha for A/N^alpha            (ours, 9)
``dcpt-scaled``          L = G^kappa*(E + B*r^eta/D^beta) + C/(r+eps)^gamma  (ours, 8)
``total-data-scaled``    L = G^kappa*(E + B/(D0+r*D)^beta) + C/(r+eps)^gamma (ours, 8)
``total-data-scaled-gated``  L = G^kappa*(r^eta*E + B/(D0+r*D)^beta) + C/(r+eps)^gamma (ours, 9)
``total-data-scaled-gain``   L = G^kappa*(r^eta*E + B/(D0+G^-nu*r*D)^beta) + C/(r+eps)^gamma (ours, 10)
``total-data-scaled-forgetting``  the gated law + F*G^-lam*((1-r)*D)^zeta/(Dr + r*D)^rho (ours, 14; opt in)
``total-data-scaled-rewarm``      the gain law + F*G^-lam*(D/(Dw + D))^zeta (ours, 14; opt in)
``mean(a, b, ...)``  log L = mean of the members' log L, each fitted on its own (ours; any registered laws)
==============  ======================================================================

The *scaled* laws (ours; the recommended pair) make the base model's loss G a factor of what the model
learns, not a term added to it: a model whose base is 5% better ends about 5% better at every (D, r > 0).
Measured on our runs (docs/validation.md): L/G at the largest D, per ratio, stays within a few % across
sizes from 27K to 443K parameters (code, r_d = 1: 0.909-0.939) while L itself moves by 15%, and it carries
the luck of one base-model seed through CPT. The penalty of an unseen corpus, C/(r+eps)^gamma, is not
scaled: the loss at r = 0 is flat in size on our runs. At a held-out size 4.2x the largest fitted one (m4c)
they cut the median general-loss error from 3.2% (D-CPT) to 1.1% and the regret of usage 1 from 0.78% to 0.27%.

``total-data-scaled-gated`` (ours) gates the level the base model
brings, G^kappa*E, by the exposure r^eta: a model trained on no general data (r_g = 0) forgets what its size
gave it, and its general loss goes to C/eps^gamma at every size. Measured on our runs: the general loss of
code-only CPT at the largest D is 6.28-6.58 nats at every size from 27K to 443K parameters, in no order
with G (4.97-5.68); total-data-scaled, whose level moves with G there too, under-predicts the general loss
of domain-only CPT at a 4x larger size by 3.6-13%.
Fits give eta near 0 (r^eta about 1 for every r_g > 0): the r_g = 0 level becomes a free constant.

``total-data-scaled-gain`` (ours; the general loss of the recommended pair) lets a better base model gain
more from each CPT token: r*D counts G^-nu times in the data term. Measured on our runs: at r_d = 0-0.33 the
general loss at the largest D falls further below G the larger the model (L/G 0.886 at 27K parameters, 0.877
at 106K, 0.864 at 443K), so the gated law, whose curve in D has one shape at every size, over-predicts a 4x
larger model's general loss there by 2-4%.

``total-data-scaled-forgetting`` (ours, opt in: 14 parameters) adds forgetting that replay recovers,
F*G^-lam*((1-r)*D)^zeta/(Dr + r*D)^rho. Measured on our runs (law domain, general loss / G at r_d = 0.9): it
rises to 1.03-1.11 by 107K-160K CPT tokens and falls back to 1.00-1.02 by 524K, as the replayed general tokens
accumulate; the peak grows with size (+4% at 27K, +11% at 443K parameters), i.e. as G falls. No power of D in
the gated law follows a rise and a fall, and its shape in D is the same at every size.

``total-data-scaled-rewarm`` (ours, opt in: 14 parameters) is the general law for CPT that re-warms the learning
rate of an annealed base model: the gain law plus a step F*G^-lam*(D/(Dw + D))^zeta, the part of the base model's
cool-down that re-warming loses, at every mixture; what the model then learns brings the loss back down. Measured on
our runs with base models pre-trained on 5M tokens and CPT back at their peak lr (docs/validation.md 1m): at r_d = 0
the general loss rises by 1.7% (27K parameters) to 5.7% (443K) by ~100K CPT tokens, and at the largest D is still
0-3% above G. The gain law, whose curve in D only falls, cannot follow a rise. Its shape in D belongs to the CPT
schedule it was fitted on (peak lr, warm-up, cool-down): fit it on runs with the schedule you will use.

The *gated* laws (ours) switch the size term on with the corpus: r^eta multiplies what the model learns
of the corpus (A/N^alpha and B/D^beta), so a model that never sees it (r = 0) has the loss E + C/eps^gamma
whatever its size. Measured on our runs: the domain loss at r_d = 0 does not fall with N (8.7-9.7 nats
for chemistry from 27K to 443K parameters, in no order), and the D-CPT Law's shared A/N^alpha, fitted
to those rows too, under-predicts them at a larger size by 4-6%. Fits give eta close to 0, so r^eta is
about 1 for every r > 0: the r = 0 level is then a free constant, as the D-CPT Law's B-term already is.

The *anchored* laws (ours) take the model's size from its base model instead of its parameter count:
G is the base model's general loss (nats per token, measured before CPT). A CPT user always has the
base model, and G also captures how well it was trained (a large model pre-trained on too few tokens
has the G of a smaller one, which no A/N^alpha can know).

Every built-in law is a *power sum*: a sum of terms ``coef * prod(feature ** (sign*exponent))``.
For these the fitter works on log L = logsumexp(log terms) with an analytic Jacobian, on
centred features (log N - mean log N, log D - mean log D) so that coefficients are O(loss)
whatever the scale. Users can register any other law with :func:`register_law`; it is fitted
with a finite-difference Jacobian.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Mapping, Sequence

import numpy as np

# Features a power-sum term can use. "r+eps" depends on the fitted eps.
# oD = (1 - r) * D, the CPT tokens of *other* data; G = the base model's general loss (nats, before CPT)
FEATURES = ("N", "D", "r", "r+eps", "K", "oD", "G")


@dataclass(frozen=True)
class Param:
    """One fitted parameter.

    ``log=True`` means the fitter works with log(value) (coefficients, eps); bounds and grid are
    in natural units. For power-sum coefficients the grid is in units of the observed loss
    (a coefficient's term at the data's centre equals ``grid value * median loss``).
    """

    name: str
    lower: float
    upper: float
    grid: tuple[float, ...]
    log: bool = False
    doc: str = ""

    def to_raw(self, value):
        return np.log(value) if self.log else np.asarray(value, float)

    def from_raw(self, raw):
        return np.exp(raw) if self.log else np.asarray(raw, float)


@dataclass(frozen=True)
class Term:
    """``coef * prod_j feature_j ** (sign_j * exponent_j)``; ``powers`` = ((exponent, feature, sign), ...)."""

    coef: str
    powers: tuple[tuple[str, str, float], ...] = ()


class Law:
    """A loss law L(N, D, r; params). Subclasses implement :meth:`log_predict`.

    ``predict(params, N, D, r)`` evaluates in natural units with numpy broadcasting.
    """

    name: str
    formula: str
    params: tuple[Param, ...]
    needs: tuple[str, ...] = ("N", "D", "r")  # inputs whose variation identifies the law
    prescreen: int | None = None  # fit from this many best points of the start grid (see PowerSumLaw)

    @property
    def param_names(self) -> list[str]:
        return [p.name for p in self.params]

    @property
    def n_params(self) -> int:
        return len(self.params)

    # -- raw (fitting) space -------------------------------------------------------------
    def raw_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        lo = np.array([p.to_raw(p.lower) for p in self.params], float)
        hi = np.array([p.to_raw(p.upper) for p in self.params], float)
        return lo, hi

    def prepare(self, N, D, r, K=None, G=None) -> dict:
        """Precompute what log_predict needs for fixed data (features, centring)."""
        return {"N": np.asarray(N, float), "D": np.asarray(D, float), "r": np.asarray(r, float),
                "K": None if K is None else np.asarray(K, float), "G": None if G is None else np.asarray(G, float)}

    def start_grid(self, ctx: dict, loss_scale: float) -> np.ndarray:
        """Cartesian grid of starting points in raw space, shape (S, P)."""
        axes = []
        for p in self.params:
            axes.append(np.array([p.to_raw(v) for v in p.grid], float))
        mesh = np.meshgrid(*axes, indexing="ij")
        return np.stack([m.ravel() for m in mesh], axis=1)

    def log_predict(self, theta: np.ndarray, ctx: dict, jac: bool = False):
        """log L for raw parameters theta (S, P) on prepared data: (S, n) [, Jacobian (S, P, n)]."""
        raise NotImplementedError

    def natural(self, theta: np.ndarray, ctx: dict) -> np.ndarray:
        """Raw (possibly centred) parameters -> natural values, shape (..., P)."""
        theta = np.asarray(theta, float)
        return np.stack([p.from_raw(theta[..., i]) for i, p in enumerate(self.params)], axis=-1)

    def raw(self, values: np.ndarray, ctx: dict) -> np.ndarray:
        values = np.asarray(values, float)
        return np.stack([p.to_raw(values[..., i]) for i, p in enumerate(self.params)], axis=-1)

    def predict(self, params: Mapping[str, float], N, D, r, K=None, G=None) -> np.ndarray:
        """L(N, D, r) in nats, natural parameters given by name; inputs broadcast. K: the domain
        coefficient (cross-domain laws); G: the base model's general loss (anchored laws)."""
        N, D, r = np.broadcast_arrays(np.asarray(N, float), np.asarray(D, float), np.asarray(r, float))
        shape = N.shape
        K, G = (None if x is None else np.broadcast_to(np.asarray(x, float), shape).ravel() for x in (K, G))
        ctx = self.prepare(N.ravel(), D.ravel(), r.ravel(), K, **({} if G is None else {"G": G}))
        values = np.array([params[n] for n in self.param_names], float)
        theta = self.raw(values[None, :], ctx)
        return np.exp(self.log_predict(theta, ctx)[0]).reshape(shape)

    def __repr__(self) -> str:
        return f"<Law {self.name!r}: {self.formula}>"


_TOKEN_BASES = ("rD", "D")  # shifted features in tokens: centred like D, their offsets in units of the data's mean D


def _offset(feat: str) -> str | None:
    """The offset parameter of a shifted feature: "r+eps" -> "eps", "rD+D0", "rD*G^-nu+D0" -> "D0", "D+Dw" -> "Dw";
    else None."""
    return _shifted(feat)[2] if feat.startswith(("r", "D")) and "+" in feat else None


def _shifted(feat: str) -> tuple[str, tuple[str, str, float] | None, str]:
    """Parts of a shifted feature "BASE[*X^[-]exponent]+offset": (base "r", "rD" or "D", scale, offset parameter).

    The scale, (X, exponent parameter, sign) with X = "N" or "G", multiplies the base: "rD*G^-nu+D0" is
    D0 + G^-nu * r*D, the tokens of the corpus seen before CPT plus those seen during it, each CPT token worth
    more to a better base model (lower G); "rD*N^nu+D0" makes it worth more to a larger one. "D+Dw": all CPT
    tokens D plus fitted tokens Dw.
    """
    head, _, offset = feat.rpartition("+")
    base, _, scale = head.partition("*")
    if base not in ("r", "rD", "D") or not offset:
        raise ValueError(f"bad shifted feature {feat!r}: write r+<offset>, rD+<offset>, D+<offset> or "
                         "rD*<N|G>^[-]<exponent>+<offset>")
    if not scale:
        return base, None, offset
    x, _, e = scale.partition("^")
    if x not in ("N", "G") or not e.lstrip("-"):
        raise ValueError(f"bad scale {scale!r} in {feat!r}: write N^<exponent> or G^-<exponent> (a parameter name)")
    return base, (x, e.lstrip("-"), -1.0 if e.startswith("-") else 1.0), offset


class PowerSumLaw(Law):
    """L = sum_k coef_k * prod_j feature_kj ** (sign_kj * exponent_kj), fitted as logsumexp."""

    def __init__(self, name: str, formula: str, terms: Sequence[Term], params: Sequence[Param], doc: str = "",
                 prescreen: int | None = None):
        """``prescreen``: the global search starts from the ``prescreen`` points of the start grid with the lowest
        objective (one evaluation each), not from every point: for a law whose grid is large and slow to polish
        (see :func:`dcpt_law.fitting.fit_law`)."""
        self.name, self.formula, self.terms, self.params = name, formula, tuple(terms), tuple(params)
        self.__doc__ = doc or formula
        if prescreen is not None and int(prescreen) < 1:
            raise ValueError(f"law {name!r}: prescreen={prescreen!r} must be a number of starts >= 1, or None")
        self.prescreen = None if prescreen is None else int(prescreen)
        idx = {p.name: i for i, p in enumerate(self.params)}
        for t in self.terms:
            if t.coef not in idx:
                raise ValueError(f"law {name!r}: term coefficient {t.coef!r} is not a parameter")
            for e, feat, _ in t.powers:
                # "r+eps": r plus a fitted offset; "rD+D0": r*D plus fitted tokens; "rD*G^-nu+D0": r*D scaled
                offset = _offset(feat)
                if e not in idx or (feat not in FEATURES and offset is None):
                    raise ValueError(f"law {name!r}: bad power ({e!r}, {feat!r}); features are {FEATURES} or a "
                                     "shifted feature: r+<offset>, rD+<offset>, D+<offset> or "
                                     "rD*<N|G>^[-]<exponent>+<offset> (offset, exponent: parameter names)")
                if offset is not None and (offset not in idx or not self.params[idx[offset]].log):
                    raise ValueError(f"law {name!r} uses {feat}: it needs a parameter {offset!r} with log=True "
                                     "(offsets are fitted in log space, so they stay > 0)")
                scale = _shifted(feat)[1] if offset is not None else None
                if scale is not None and (scale[1] not in idx or self.params[idx[scale[1]]].log):
                    raise ValueError(f"law {name!r} uses {feat}: it needs a parameter {scale[1]!r} with log=False "
                                     "(an exponent)")
        self._idx = idx
        feats = {f for t in self.terms for _, f, _ in t.powers}
        shifted = [_shifted(f) for f in feats if _offset(f) is not None]
        used = feats | {b for b, _, _ in shifted} | {s[0] for _, s, _ in shifted if s is not None}
        self.needs = tuple(f for f in ("N", "D", "r", "K", "G")
                           if f in used or (f in ("r", "D") and ("rD" in used or "oD" in used)))
        self._token_offsets = {o for b, _, o in shifted if b in _TOKEN_BASES}
        # what centring moves, per power: (coef index, exponent index, sign, centre key or None, scale, offset index)
        self._centring = []
        for t in self.terms:
            for e, feat, sign in t.powers:
                base, scale, off = _shifted(feat) if _offset(feat) is not None else (None, None, None)
                tokens = base in _TOKEN_BASES
                key = "D" if tokens or feat == "oD" else feat if feat in ("N", "D", "K", "G") else None
                self._centring.append((idx[t.coef], idx[e], sign, key, scale if tokens else None,
                                       idx[off] if tokens else None))

    # Centring: coef_c * (x / x0)^(-a) == coef * x^(-a) with coef = coef_c * x0^a (sign -1).
    def prepare(self, N, D, r, K=None, G=None, centre: dict | None = None) -> dict:
        N, D, r = (np.asarray(a, float) for a in (N, D, r))
        if centre is None:
            centre = {"N": float(np.mean(np.log(N))), "D": float(np.mean(np.log(D))),
                      "K": float(np.mean(np.log(K))) if K is not None else 0.0,
                      "G": float(np.mean(np.log(G))) if G is not None else 0.0}
        with np.errstate(divide="ignore"):
            logr = np.log(r)
        ctx = {
            "centre": centre,
            "logN": np.log(N) - centre["N"],
            "logD": np.log(D) - centre["D"],
            "r": r,
            "rD": r * D,
            "D": D,
            "r0": r <= 0,
            "logr": np.where(r > 0, logr, 0.0),
            "o0": r >= 1,
        }
        with np.errstate(divide="ignore", invalid="ignore"):
            ctx["logoD"] = np.where(r < 1, np.log(np.maximum(1.0 - r, 1e-300) * D), 0.0) - centre["D"]
        if K is not None:
            ctx["logK"] = np.log(np.asarray(K, float)) - centre["K"]
        if G is not None:
            ctx["logG"] = np.log(np.asarray(G, float)) - centre.get("G", 0.0)
        return ctx

    def _shift(self, theta: np.ndarray, ctx: dict, direction: float) -> np.ndarray:
        """Move log coefficients between centred and natural parametrisation."""
        out = np.array(theta, float, copy=True)
        for ci, ei, sign, key, scale, oi in self._centring:
            if key is not None:
                out[..., ci] += direction * (-sign) * theta[..., ei] * ctx["centre"][key]
            if scale is not None:  # raw x = D0_raw + (X/X_c)^(s*nu)*rD = X_c^(-s*nu) * natural x
                x, nu, s = scale
                shift = s * theta[..., self._idx[nu]] * ctx["centre"][x]
                out[..., ci] += direction * (-sign) * theta[..., ei] * shift
                out[..., oi] += direction * shift
        return out

    def natural(self, theta, ctx):
        return Law.natural(self, self._shift(np.asarray(theta, float), ctx, +1.0), ctx)

    def raw(self, values, ctx):
        return self._shift(Law.raw(self, values, ctx), ctx, -1.0)

    def start_grid(self, ctx, loss_scale):
        axes = []
        coefs = {t.coef for t in self.terms}
        for p in self.params:
            # coefficient grids are in units of the median loss, token offsets in units of the data's mean D
            unit = loss_scale if p.name in coefs else (np.exp(ctx["centre"]["D"]) if p.name in self._token_offsets else 1.0)
            vals = np.array(p.grid, float) * unit
            axes.append(p.to_raw(vals))
        mesh = np.meshgrid(*axes, indexing="ij")
        return np.stack([m.ravel() for m in mesh], axis=1)

    def _feature_log(self, ctx, feat: str) -> np.ndarray:
        """Centred log of feature N, K or G, shape (1, n)."""
        key = f"log{feat}"
        if key not in ctx:
            raise ValueError(f"law {self.name!r} needs feature {feat} "
                             + ("(the base model's general loss, nats)" if feat == "G" else "(the domain coefficient)"))
        return ctx[key][None, :]

    def log_terms(self, theta, ctx):
        """log of every term, shape (K, S, n), and per term the list of (param index, d term / d theta)."""
        theta = np.atleast_2d(np.asarray(theta, float))
        S, P = theta.shape
        n = ctx["r"].shape[0]
        offsets = {}  # "r+eps" -> (offset param index, offset value, r + offset, log(r + offset))

        def shifted(feat):
            """(offset index, offset, x + offset, centred log(x + offset), scale gradient) for x = r or r*D,
            or x = (X/X_c)^(s*nu) * r*D; the scale gradient is None or (nu index, d log(x + offset) / d nu)."""
            if feat not in offsets:
                base, scale, off = _shifted(feat)
                i = self._idx[off]
                eps = np.exp(theta[:, i])[:, None]
                x = ctx[base][None, :]
                grad = None
                if scale is not None:
                    X, nu, s = scale
                    phi = self._feature_log(ctx, X)
                    x = x * np.exp(s * theta[:, self._idx[nu]][:, None] * phi)
                    grad = (self._idx[nu], s * phi * x / (x + eps))
                x = x + eps
                offsets[feat] = (i, eps, x, np.log(x) - (ctx["centre"]["D"] if base in _TOKEN_BASES else 0.0), grad)
            return offsets[feat]

        logs = []
        grads = []  # per term: list of (param index, d t / d theta) with broadcastable arrays
        for t in self.terms:
            ti = self._idx[t.coef]
            val = np.broadcast_to(theta[:, ti:ti + 1], (S, n)).copy()
            g = [(ti, 1.0)]
            zero_mask = None
            for e, feat, sign in t.powers:
                ei = self._idx[e]
                a = theta[:, ei:ei + 1]
                if feat == "N":
                    phi = ctx["logN"][None, :]
                elif feat == "D":
                    phi = ctx["logD"][None, :]
                elif feat in ("K", "G"):
                    phi = self._feature_log(ctx, feat)
                elif feat in ("r", "oD"):
                    phi = ctx["logr" if feat == "r" else "logoD"][None, :]
                    # r = 0 (oD: r = 1): x^a = 0 for a > 0 (term vanishes), 1 for a == 0
                    zm = ctx["r0" if feat == "r" else "o0"][None, :] & (sign * a > 0)
                    zero_mask = zm if zero_mask is None else (zero_mask | zm)
                else:  # r + a fitted offset (r*D, maybe scaled, + fitted tokens)
                    eps_i, eps, r_eps, phi, scale_grad = shifted(feat)
                    g.append((eps_i, sign * a * eps / r_eps))
                    if scale_grad is not None:
                        g.append((scale_grad[0], sign * a * scale_grad[1]))
                val += sign * a * phi
                g.append((ei, sign * phi))
            if zero_mask is not None:
                val = np.where(zero_mask, -np.inf, val)
            logs.append(val)
            grads.append(g)
        return np.stack(logs), grads

    def term_shares(self, params: Mapping[str, float], N, D, r, G=None) -> dict[str, np.ndarray]:
        """Each term's share of L at the given points, keyed by the term's coefficient name."""
        N, D, r = (np.ravel(a) for a in np.broadcast_arrays(np.asarray(N, float), np.asarray(D, float),
                                                           np.asarray(r, float)))
        ctx = self.prepare(N, D, r, G=None if G is None else np.broadcast_to(np.asarray(G, float), N.shape))
        theta = self.raw(np.array([params[n] for n in self.param_names], float)[None, :], ctx)
        T = self.log_terms(theta, ctx)[0][:, 0, :]
        shares = np.exp(T - np.logaddexp.reduce(T, axis=0))
        return {t.coef: shares[k] for k, t in enumerate(self.terms)}

    def log_predict(self, theta, ctx, jac=False):
        theta = np.atleast_2d(np.asarray(theta, float))
        T, grads = self.log_terms(theta, ctx)  # (K, S, n)
        return log_sum_terms(T, grads, theta.shape[1], jac)


def log_sum_terms(T: np.ndarray, grads, n_params: int, jac: bool):
    """log L = logsumexp over terms T (K, S, n); with ``jac`` also d log L / d theta (S, P, n) from each
    term's list of (parameter index, d log term / d theta): the softmax-weighted sum."""
    m = T.max(axis=0)
    w = np.exp(T - m)
    s = w.sum(axis=0)
    logL = m + np.log(s)
    if not jac:
        return logL
    p = w / s  # softmax weights per term
    J = np.zeros((T.shape[1], n_params, T.shape[2]))  # one contiguous row per parameter
    for k, g in enumerate(grads):
        for i, d in g:
            J[:, i, :] += p[k] * d
    return logL, J


class FunctionLaw(Law):
    """A user law: ``func(N, D, r, **params) -> L`` in natural units, broadcasting over arrays.

    Fitted with a central finite-difference Jacobian in raw space (log for ``log=True`` params).
    """

    def __init__(self, name, func, params, formula="", needs=("N", "D", "r")):
        self.name, self.func, self.params = name, func, tuple(params)
        self.formula = formula or getattr(func, "__doc__", None) or name
        self.needs = tuple(needs)

    def log_predict(self, theta, ctx, jac=False):
        theta = np.atleast_2d(np.asarray(theta, float))

        def f(th):
            values = Law.natural(self, th, ctx)
            kw = {p.name: values[:, i:i + 1] for i, p in enumerate(self.params)}
            with np.errstate(all="ignore"):
                out = self.func(ctx["N"][None, :], ctx["D"][None, :], ctx["r"][None, :], **kw)
                return np.log(np.maximum(np.asarray(out, float), 1e-300))

        logL = f(theta)
        if not jac:
            return logL
        S, P = theta.shape
        J = np.empty((S, P, logL.shape[1]))
        for i in range(P):
            h = 1e-6 * np.maximum(1.0, np.abs(theta[:, i:i + 1]))
            up, dn = theta.copy(), theta.copy()
            up[:, i:i + 1] += h
            dn[:, i:i + 1] -= h
            J[:, i, :] = (f(up) - f(dn)) / (2 * h)
        return logL, J


class AveragedLaw(Law):
    """The geometric mean of several laws: log L = mean_k log L_k, each member fitted on its own.

    A hedge between structural hypotheses that fit the small sizes equally well and part ways at a larger size
    (the size term from N in ``dcpt`` or from the base model's loss G in ``dcpt-scaled``). Its parameters are the
    members', named ``<member>.<param>``. Written ``"mean(law1, law2, ...)"`` wherever a law name is taken.
    """

    def __init__(self, members: Sequence, name: str = ""):
        self.members = tuple(get_law(m) for m in members)
        if len(self.members) < 2 or len({m.name for m in self.members}) < len(self.members):
            raise ValueError(f"mean(...) needs two or more different laws, got {[m.name for m in self.members]}")
        self.name = name or f"mean({', '.join(m.name for m in self.members)})"
        self.formula = "log L = mean of log L over " + ", ".join(m.name for m in self.members)
        self.params = tuple(replace(p, name=f"{m.name}.{p.name}") for m in self.members for p in m.params)
        self.needs = tuple(f for f in ("N", "D", "r", "K", "G") if any(f in m.needs for m in self.members))
        self._cuts = np.cumsum([m.n_params for m in self.members])[:-1]

    def _split(self, theta):
        return np.split(np.asarray(theta, float), self._cuts, axis=-1)

    def prepare(self, N, D, r, K=None, G=None, centre=None) -> dict:
        kw = {} if G is None else {"G": G}
        return {"members": [m.prepare(N, D, r, K, **kw, **({} if centre is None else {"centre": centre[i]}))
                            for i, m in enumerate(self.members)]}

    def start_grid(self, ctx, loss_scale):
        raise ValueError(f"{self.name}: an averaged law is fitted member by member (dcpt_law.fit does that)")

    def log_predict(self, theta, ctx, jac=False):
        parts = [m.log_predict(th, c, jac) for m, th, c in zip(self.members, self._split(theta), ctx["members"])]
        k = len(self.members)
        if not jac:
            return sum(parts) / k
        return sum(lp for lp, _ in parts) / k, np.concatenate([J / k for _, J in parts], axis=1)

    def natural(self, theta, ctx):
        return np.concatenate([m.natural(th, c) for m, th, c in zip(self.members, self._split(theta), ctx["members"])],
                              axis=-1)

    def raw(self, values, ctx):
        return np.concatenate([m.raw(v, c) for m, v, c in zip(self.members, self._split(values), ctx["members"])],
                              axis=-1)


# --- the built-in laws ---------------------------------------------------------------------
# Coefficient grids are in units of the median observed loss (see PowerSumLaw.start_grid).
_E = Param("E", 1e-4, 1e3, (0.2, 0.5, 0.8), log=True, doc="irreducible loss (nats)")
_A = Param("A", 1e-12, 1e15, (0.03, 0.3), log=True, doc="model-size coefficient")
_ALPHA = Param("alpha", 0.0, 4.0, (0.1, 0.4, 1.0), doc="model-size exponent")
_B = Param("B", 1e-12, 1e15, (0.03, 0.3), log=True, doc="data coefficient")
_BETA = Param("beta", 0.0, 4.0, (0.1, 0.4, 1.0), doc="data exponent")
_ETA = Param("eta", 0.0, 4.0, (0.05, 0.5), doc="ratio exponent of the data term")
_C = Param("C", 1e-12, 1e15, (0.01, 0.1, 0.3), log=True, doc="ratio coefficient")
_GAMMA = Param("gamma", 0.0, 4.0, (0.1, 0.5, 1.5), doc="ratio exponent")
_EPS = Param("eps", 1e-6, 10.0, (0.01, 0.3), log=True, doc="ratio offset (keeps r = 0 finite)")

LAWS: dict[str, Law] = {}


def _add(law: Law) -> Law:
    LAWS[law.name] = law
    return law


# the D-CPT Law's data x ratio and ratio terms, B*r^eta/D^beta + C/(r+eps)^gamma, shared by its variants
_RATIO_TERM = Term("C", (("gamma", "r+eps", -1),))  # C/(r+eps)^gamma: the penalty of a small share r
_DCPT_BC = (Term("B", (("eta", "r", 1), ("beta", "D", -1))), _RATIO_TERM)
DCPT = _add(PowerSumLaw(
    "dcpt", "L = E + A/N^alpha + B*r^eta/D^beta + C/(r+eps)^gamma",
    [Term("E"), Term("A", (("alpha", "N", -1),)), *_DCPT_BC],
    [_E, _A, _ALPHA, _B, _BETA, _ETA, _C, _GAMMA, _EPS],
    doc="D-CPT Law (Que et al. 2024, eq. 4): loss in nats of a model of N parameters after D CPT "
        "tokens with share r of the evaluated corpus in the mixture.",
))
CHINCHILLA = _add(PowerSumLaw(
    "chinchilla", "L = E + A/N^alpha + B/D^beta",
    [Term("E"), Term("A", (("alpha", "N", -1),)), Term("B", (("beta", "D", -1),))],
    [_E, _A, _ALPHA, _B, _BETA],
    doc="Chinchilla (Hoffmann et al. 2022): fit at one fixed mixture ratio; ignores r.",
))
ADDITIVE = _add(PowerSumLaw(
    "additive", "L = E + A/N^alpha + B/D^beta + C/(r+eps)^gamma",
    [Term("E"), Term("A", (("alpha", "N", -1),)), Term("B", (("beta", "D", -1),)),
     _RATIO_TERM],
    [_E, _A, _ALPHA, _B, _BETA, _C, _GAMMA, _EPS],
    doc="Additive baseline: the ratio enters as its own term, with no D x r interaction.",
))
EFFECTIVE = _add(PowerSumLaw(
    "effective", "L = E + A/N^alpha + B/(D*(r+eps))^beta",
    [Term("E"), Term("A", (("alpha", "N", -1),)), Term("B", (("beta", "D", -1), ("beta", "r+eps", -1)))],
    [_E, _A, _ALPHA, _B, _BETA, _EPS],
    doc="Effective-data baseline: only the D*r tokens of the evaluated corpus count.",
))
_D0 = Param("D0", 1e-3, 1e15, (0.1, 1.0, 10.0), log=True,
            doc="tokens of the evaluated corpus seen before CPT (grid in units of the data's mean D)")
TOTAL = _add(PowerSumLaw(
    "total-data", "L = E + A/N^alpha + B/(D0 + r*D)^beta + C/(r+eps)^gamma",
    [Term("E"), Term("A", (("alpha", "N", -1),)), Term("B", (("beta", "rD+D0", -1),)),
     _RATIO_TERM],
    [_E, _A, _ALPHA, _B, _BETA, _D0, _C, _GAMMA, _EPS],
    doc="Total-data form (ours): the loss falls with all tokens of the evaluated corpus the model has seen, "
        "D0 before CPT (fitted) plus r*D during it, plus the mixture penalty. Suits the general loss of a base "
        "model that was still learning the general corpus.",
))
_F = Param("F", 1e-12, 1e15, (0.01,), log=True, doc="forgetting coefficient")
_ZETA = Param("zeta", 0.0, 2.0, (0.1, 0.4), doc="forgetting exponent (growth with tokens of other data)")
FORGETTING = _add(PowerSumLaw(
    "forgetting", "L = E + A/N^alpha + B*r^eta/D^beta + C/(r+eps)^gamma + F*((1-r)*D)^zeta",
    [Term("E"), Term("A", (("alpha", "N", -1),)), *_DCPT_BC, Term("F", (("zeta", "oD", 1),))],
    [_E, _A, _ALPHA, _B, _BETA, _ETA, _C, _GAMMA, _EPS, _F, _ZETA],
    doc="D-CPT + forgetting (ours): the loss on a corpus also rises with the (1-r)*D tokens of *other* data "
        "seen during CPT (the general loss when r_g is small, the domain loss at r_d = 0), which the D-CPT "
        "form, constant in D at r = 0, cannot express.",
))
_AG = Param("A", 1e-12, 1e15, (0.03, 0.3), log=True, doc="base-loss coefficient")
_ALPHA_G = Param("alpha", 0.0, 30.0, (0.5, 1.0, 3.0), doc="exponent of the base model's general loss G")
ANCHORED = _add(PowerSumLaw(
    "dcpt-anchored", "L = E + A*G^alpha + B*r^eta/D^beta + C/(r+eps)^gamma",
    [Term("E"), Term("A", (("alpha", "G", 1),)), *_DCPT_BC],
    [_E, _AG, _ALPHA_G, _B, _BETA, _ETA, _C, _GAMMA, _EPS],
    doc="D-CPT anchored on the base model (ours): the size term A/N^alpha becomes A*G^alpha, G the base "
        "model's general loss (nats, measured before CPT), so a larger model is predicted from its own base "
        "model, under-trained or not, rather than from its parameter count.",
))
TOTAL_ANCHORED = _add(PowerSumLaw(
    "total-data-anchored", "L = E + A*G^alpha + B/(D0 + r*D)^beta + C/(r+eps)^gamma",
    [Term("E"), Term("A", (("alpha", "G", 1),)), Term("B", (("beta", "rD+D0", -1),)),
     _RATIO_TERM],
    [_E, _AG, _ALPHA_G, _B, _BETA, _D0, _C, _GAMMA, _EPS],
    doc="total-data anchored on the base model (ours): A*G^alpha in place of A/N^alpha (see dcpt-anchored).",
))
GATED = _add(PowerSumLaw(
    "dcpt-gated", "L = E + r^eta*(A/N^alpha + B/D^beta) + C/(r+eps)^gamma",
    [Term("E"), Term("A", (("alpha", "N", -1), ("eta", "r", 1))), *_DCPT_BC],
    [_E, _A, _ALPHA, _B, _BETA, _ETA, _C, _GAMMA, _EPS],
    doc="D-CPT gated by exposure (ours): the size term, like the data term, scales with r^eta, so the loss of "
        "a model that has not seen the corpus (r = 0) is E + C/eps^gamma whatever N and D, and the size effect "
        "is fitted from the runs that see the corpus only.",
))
GATED_ANCHORED = _add(PowerSumLaw(
    "dcpt-gated-anchored", "L = E + r^eta*(A*G^alpha + B/D^beta) + C/(r+eps)^gamma",
    [Term("E"), Term("A", (("alpha", "G", 1), ("eta", "r", 1))), *_DCPT_BC],
    [_E, _AG, _ALPHA_G, _B, _BETA, _ETA, _C, _GAMMA, _EPS],
    doc="dcpt-gated anchored on the base model (ours): A*G^alpha in place of A/N^alpha (see dcpt-anchored).",
))
_KAPPA = Param("kappa", 0.0, 10.0, (0.5, 1.0, 2.0), doc="exponent of the base model's general loss G on what is learned")
_BY_G = ("kappa", "G", 1)
SCALED = _add(PowerSumLaw(
    "dcpt-scaled", "L = G^kappa*(E + B*r^eta/D^beta) + C/(r+eps)^gamma",
    [Term("E", (_BY_G,)), Term("B", (_BY_G, ("eta", "r", 1), ("beta", "D", -1))), _RATIO_TERM],
    [_E, _KAPPA, _B, _BETA, _ETA, _C, _GAMMA, _EPS],
    doc="D-CPT scaled by the base model (ours): G^kappa multiplies the level E and the data term, so the whole "
        "learning curve moves with the base model's general loss G (nats, before CPT), while the penalty of "
        "an unseen corpus C/(r+eps)^gamma stays the same at every size. No A/N^alpha: G carries the size.",
))
TOTAL_SCALED = _add(PowerSumLaw(
    "total-data-scaled", "L = G^kappa*(E + B/(D0 + r*D)^beta) + C/(r+eps)^gamma",
    [Term("E", (_BY_G,)), Term("B", (_BY_G, ("beta", "rD+D0", -1))), _RATIO_TERM],
    [_E, _KAPPA, _B, _BETA, _D0, _C, _GAMMA, _EPS],
    doc="total-data scaled by the base model (ours): G^kappa*(E + B/(D0 + r*D)^beta) + C/(r+eps)^gamma "
        "(see dcpt-scaled); total-data-scaled-gated gates its E-term, and total-data-scaled-gain, the general loss of "
        "the recommended pair, also weights the CPT tokens by G^-nu.",
))
TOTAL_SCALED_GATED = _add(PowerSumLaw(
    "total-data-scaled-gated", "L = G^kappa*(r^eta*E + B/(D0 + r*D)^beta) + C/(r+eps)^gamma",
    [Term("E", (_BY_G, ("eta", "r", 1))), Term("B", (_BY_G, ("beta", "rD+D0", -1))), _RATIO_TERM],
    [_E, _KAPPA, _B, _BETA, _D0, _C, _GAMMA, _EPS, _ETA],
    doc="total-data-scaled with the base model's level gated by exposure (ours): r^eta*E, so a model that sees "
        "none of the corpus (r = 0, the general loss of domain-only CPT) has lost what its size gave it and "
        "ends at C/eps^gamma whatever N and G; the general loss of the recommended pair before 2026-11-27.",
))
_NU = Param("nu", 0.0, 50.0, (0.0, 4.0), doc="exponent of 1/G on the worth of a CPT token (a better base model gains more)")
TOTAL_SCALED_GAIN = _add(PowerSumLaw(
    "total-data-scaled-gain", "L = G^kappa*(r^eta*E + B/(D0 + G^-nu*r*D)^beta) + C/(r+eps)^gamma",
    [TOTAL_SCALED_GATED.terms[0], Term("B", (_BY_G, ("beta", "rD*G^-nu+D0", -1))), _RATIO_TERM],
    [*TOTAL_SCALED_GATED.params, _NU],
    doc="total-data-scaled-gated where a better base model gains more from each CPT token (ours): r*D counts "
        "G^-nu times, so the learning curve in D is steeper for a lower G, while the level before CPT (D = 0) "
        "stays G^kappa*(r^eta*E + B/D0^beta), D0 in tokens weighted like r*D. nu = 0 is total-data-scaled-gated. The "
        "general loss of the recommended pair.",
))
_F_REPLAY = Param("F", 1e-12, 1e15, (0.03,), log=True, doc="forgetting coefficient")
_LAM = Param("lam", 0.0, 30.0, (1.0,), doc="exponent of 1/G on forgetting (a better base model forgets more)")
_ZETA_REPLAY = Param("zeta", 0.0, 3.0, (0.5,), doc="growth of forgetting with the tokens of other data (1-r)*D")
_RHO = Param("rho", 0.0, 4.0, (1.0,), doc="recovery exponent in the replayed tokens r*D")
_DR = Param("Dr", 1e-3, 1e15, (0.1,), log=True,
            doc="replayed tokens at which recovery sets in (grid in units of the data's mean D)")
_ETA_1 = Param("eta", 0.0, 4.0, (0.05,), doc="exposure gate of the base model's level (fits: near 0)")
TOTAL_SCALED_FORGETTING = _add(PowerSumLaw(
    "total-data-scaled-forgetting",
    "L = G^kappa*(r^eta*E + B/(D0 + r*D)^beta) + C/(r+eps)^gamma + F*G^-lam*((1-r)*D)^zeta/(Dr + r*D)^rho",
    [*TOTAL_SCALED_GATED.terms, Term("F", (("lam", "G", -1), ("zeta", "oD", 1), ("rho", "rD+Dr", -1)))],
    [*(_ETA_1 if p is _ETA else p for p in TOTAL_SCALED_GATED.params), _F_REPLAY, _LAM, _ZETA_REPLAY, _RHO, _DR],
    doc="total-data-scaled-gated plus forgetting that replay recovers (ours): the loss on a corpus rises with the "
        "(1-r)*D tokens of other data and falls back as the r*D replayed tokens pass Dr, more for a better base "
        "model (G^-lam). Vanishes at r = 1; grows without recovery at r = 0.",
))
_F_REWARM = Param("F", 1e-12, 1e15, (0.03,), log=True, doc="re-warming rise coefficient")
_LAM_REWARM = Param("lam", -30.0, 30.0, (0.0,),
                    doc="exponent of 1/G on the re-warming rise (> 0: a better base model loses more)")
_ZETA_REWARM = Param("zeta", 0.0, 10.0, (2.0,), doc="sharpness of the rise as the CPT tokens D pass Dw")
_DW = Param("Dw", 1e-3, 1e15, (1.0,), log=True,
            doc="CPT tokens by which the re-warming rise sets in (grid in units of the data's mean D)")
TOTAL_SCALED_REWARM = _add(PowerSumLaw(
    "total-data-scaled-rewarm",
    "L = G^kappa*(r^eta*E + B/(D0 + G^-nu*r*D)^beta) + C/(r+eps)^gamma + F*G^-lam*(D/(Dw + D))^zeta",
    [*TOTAL_SCALED_GAIN.terms, Term("F", (("lam", "G", -1), ("zeta", "D", 1), ("zeta", "D+Dw", -1)))],
    [*TOTAL_SCALED_GAIN.params, _F_REWARM, _LAM_REWARM, _ZETA_REWARM, _DW], prescreen=256,
    doc="total-data-scaled-gain plus the rise of re-warming the learning rate (ours): CPT from an annealed base model "
        "warms the learning rate back up and loses part of what the base model's cool-down gained, F*G^-lam, a step "
        "that sets in as the CPT tokens D pass Dw, at every mixture; what the model then learns (the gain law's "
        "terms) brings the loss back down. 0 at D = 0. Its shape in D belongs to the CPT schedule it was fitted on "
        "(peak lr, warm-up, cool-down).",
))
# laws that model r (forgetting: 11 parameters, total-data-scaled-forgetting and -rewarm: 14; slower, opt in)
RATIO_LAWS = ("dcpt", "additive", "effective", "total-data", "dcpt-anchored", "total-data-anchored", "dcpt-gated",
              "dcpt-gated-anchored", "dcpt-scaled", "total-data-scaled", "total-data-scaled-gated",
              "total-data-scaled-gain")


def register_law(name: str, func: Callable | None = None, *, params: Sequence[Param] | None = None,
                 formula: str = "", terms: Sequence[Term] | None = None, needs=("N", "D", "r"),
                 overwrite: bool = False) -> Law:
    """Register a law under ``name`` for ``fit(..., law=name)`` and ``evaluate``.

    Either ``func(N, D, r, **params) -> loss`` (fitted with a finite-difference Jacobian) or
    ``terms`` (a power sum, analytic Jacobian). ``params`` gives names, bounds and start grid::

        register_law("mylaw", lambda N, D, r, E, A, a: E + A / (N * D) ** a,
                     params=[Param("E", 1e-3, 10, (1, 2), log=True),
                             Param("A", 1e-6, 1e9, (10, 1e3), log=True),
                             Param("a", 0, 2, (0.2, 0.5))])
    """
    if not name or not isinstance(name, str):
        raise ValueError("register_law: name must be a non-empty string")
    if name in LAWS and not overwrite:
        raise ValueError(f"law {name!r} is already registered: pick another name or pass overwrite=True")
    if not params:
        raise ValueError(f"register_law({name!r}): give params=[Param(name, lower, upper, grid), ...]")
    for p in params:
        if not (p.lower < p.upper) or not p.grid or any(not (p.lower <= g <= p.upper) for g in p.grid):
            raise ValueError(f"law {name!r}, parameter {p.name!r}: need lower < upper and grid values inside the bounds")
    if (func is None) == (terms is None):
        raise ValueError(f"register_law({name!r}): give exactly one of func= or terms=")
    law = (PowerSumLaw(name, formula or name, terms, params) if terms is not None
           else FunctionLaw(name, func, params, formula, needs))
    LAWS[name] = law
    return law


def get_law(law) -> Law:
    """A law object from its name (or the object itself)."""
    if isinstance(law, Law):
        return law
    if isinstance(law, str) and law.startswith("mean(") and law.endswith(")") and law not in LAWS:
        averaged = AveragedLaw([m.strip() for m in law[5:-1].split(",")])
        law = LAWS.setdefault(averaged.name, averaged).name  # by its canonical spelling
    if law not in LAWS:
        raise ValueError(f"unknown law {law!r}: registered laws are {sorted(LAWS)}; add one with register_law()")
    return LAWS[law]
