"""One self-contained HTML report: figures (inline PNG), fit report, generalisation table and the
recommendation. ``write_report(fit, losses, out)`` -> ``out/report.html`` (figures also as PNG/PDF).
"""
from __future__ import annotations

import base64
import html
import io
import warnings
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from . import __version__
from ._atomic import atomic_write
from .fitting import load_fit
from .units import format_count, parse_count

CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
pre{background:#f6f6f6;padding:.8em;overflow-x:auto;font-size:12px}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
img{max-width:100%}h2{border-bottom:1px solid #ddd;padding-bottom:.2em}.warn{color:#a33}"""

FIGURE_TEXT = {
    "loss_vs_ratio": "Loss against the domain ratio at the largest fitted size: fitted law dashed, measured points.",
    "loss_vs_tokens": "Loss against CPT tokens, one curve per ratio.",
    "parity": "Predicted against observed loss on every fitted point.",
    "ratio_vs_size": "Recommended domain ratio against model size (sizes with a measured base loss).",
    "tradeoff": "General against domain loss as the ratio varies, with the tolerance line.",
}


def _png(fig, close: bool = True) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    if close:
        plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def write_report(fit, losses, out, *, model_size=None, tokens=None, tolerance: float = 0.03,
                 evaluate_splits="every", laws=None, base_general_loss=None) -> Path:
    """Write ``out/report.html`` (and the figures as PNG + PDF in ``out/figures``).

    model_size/tokens: the recommendation's target (default: the largest fitted N and D).
    base_general_loss: the target's base-model general loss G (nats, before CPT): L_g0 of usage 1, G of the scaled
    and anchored laws and of the cells; needed where ``model_size`` is not a swept size (default: its base row).
    evaluate_splits: splits of the generalisation table (``"every"``, a list, or ``None`` to skip).
    laws: the laws it compares (default: RATIO_LAWS); the fit's own laws are always among them (an averaged or
    opt-in law too).
    """
    from . import plots
    from .evaluation import evaluate, summary
    from .laws import RATIO_LAWS, get_law
    from .consensus import usage1_consensus
    from .crossings import cross_check
    from .optimisation import _base_general_loss, optimal_ratio_limited_domain, predict_ratio

    f = load_fit(fit) if isinstance(fit, (str, Path)) else fit
    own = [lf.law.name for lf in f.fits.values() if "K" not in lf.law.needs]  # not a cross-domain law
    names = list(dict.fromkeys([*(laws or RATIO_LAWS), *own]))
    for name in names:  # a misspelt law fails here, before any figure is drawn
        get_law(name)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        N = parse_count(model_size, "model_size") if model_size else float(max(f.base_losses.index, default=np.nan))
        if not np.isfinite(N):
            N = f["domain"].ranges["model_size"][1]
        D = parse_count(tokens, "tokens") if tokens else f["domain"].ranges["tokens"][1]
        G = _base_general_loss(f, N, base_general_loss)  # a target outside the sweep needs its own base model's
        crossings, check = cross_check(losses, N, D, tolerance, f.domain, fit=f)
        consensus = usage1_consensus(f, losses, N, D, tolerance, base_general_loss=G)
        figs = plots.standard_figures(f, losses, tokens=D, model_size=N, tolerance=tolerance, crossings=crossings,
                                      base_general_loss=G)
        images = {}
        for name, fig in figs.items():
            images[name] = _png(fig, close=False)  # inline copy first; save() closes the figure
            plots.save(fig, out / "figures" / name)
        rec = consensus.law or predict_ratio(N, D, fit=f, tolerance=tolerance, base_general_loss=G)  # raises why
        limited = optimal_ratio_limited_domain(N, D * max(rec.ratio, 0.05), fit=f, base_general_loss=G)
        gen = None
        if evaluate_splits:
            ev = evaluate(losses, law=names, split=evaluate_splits, domain=f.domain)
            gen = {stat: summary(ev, stat) for stat in ("mean", "median")}
    caught = sorted({f"{x.category.__name__}: {x.message}" for x in w}
                    | {f"FitWarning: {d}" for lf in f.fits.values() for d in lf.diagnostics})

    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>D-CPT report: {html.escape(f.domain)}</title>"
             f"<style>{CSS}</style></head><body>",
             f"<h1>D-CPT Law report: domain <code>{html.escape(f.domain)}</code></h1>",
             f"<p>dcpt-law {__version__}, written {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC. "
             f"Data: <code>{html.escape(str(f.source.get('file', 'in-memory table')))}</code> "
             f"(sha256 {html.escape(str(f.source.get('sha256', ''))[:16])}), "
             f"{f.source.get('rows', '?')} rows, model sizes "
             f"{', '.join(format_count(n) for n in f.source.get('model_sizes', []))}.</p>",
             "<h2>Recommendation</h2>",
             f"<p>Target N = {format_count(N)} parameters, D = {format_count(D)} CPT tokens, general-loss tolerance "
             f"{tolerance:.1%}.</p><pre>{html.escape(repr(rec))}\n{html.escape(repr(limited))}</pre>",
             "<p>The same question without a law: each size's observed best feasible ratio (where its general loss "
             f"reaches the tolerance), extrapolated in log N (<code>dcpt crossings</code>), and the law's answer at "
             f"the swept sizes against theirs:</p><pre>{html.escape(check)}</pre>",
             "<p>Usage 1 four ways and their median (<code>dcpt_law.usage1_consensus</code>): the law, those "
             "crossings, the cells (ln L linear in ln G per logged (D, r), read off at the target's base model) and "
             "the relative cells (ln(L/G) linear in ln N, times the target's G). Where they spread over "
             f"0.05 in r_d, train the target at a few ratios across them:</p><pre>{html.escape(repr(consensus))}</pre>"]
    if caught:
        parts.append("<h2>Warnings</h2><ul class='warn'>" + "".join(f"<li>{html.escape(c)}</li>" for c in caught)
                     + "</ul>")
    parts.append("<h2>Figures</h2>")
    for name, b64 in images.items():
        parts.append(f"<figure><img alt='{name}' src='data:image/png;base64,{b64}'>"
                     f"<figcaption>{html.escape(FIGURE_TEXT.get(name, name))}</figcaption></figure>")
    parts.append(f"<h2>Fit</h2><pre>{html.escape(f.report())}</pre>")
    if gen is not None and len(gen["mean"]):
        parts.append("<h2>Generalisation (the paper's four splits; R<sup>2</sup> and Huber on held-out points)</h2>")
        parts.append("<p>Mean over folds (the paper's statistic):</p>" + gen["mean"].round(5).to_html(border=0))
        parts.append("<p>Median over folds (robust to a few catastrophic folds, such as holding out r = 0 or "
                     "r = 1 of the evaluated corpus):</p>" + gen["median"].round(5).to_html(border=0))
    parts.append("</body></html>")
    path = out / "report.html"
    atomic_write(path, "\n".join(parts))
    return path
