"""The ``dcpt`` command: data prepare, sweep, fit, predict, crossings, evaluate, plot, report.

User mistakes print one line and a hint on stderr and exit with status 2; no traceback.
The runner's subcommands import torch lazily, so the fitting commands stay light.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import warnings
from pathlib import Path


class UserError(Exception):
    def __init__(self, msg: str, hint: str = ""):
        super().__init__(msg)
        self.hint = hint


def _runner():
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError:
        raise UserError("the runner needs torch and transformers", "pip install 'dcpt-law[runs]'") from None
    from small_runs import corpora, sweeps

    return corpora, sweeps


# --- subcommands -----------------------------------------------------------------------------------

def cmd_data_prepare(a):
    corpora, _ = _runner()
    corpora.prepare(a.domains or None, a.cache)


def cmd_sweep(a):
    _, sweeps = _runner()
    if len(a.config) > 1 and (a.out or a.launcher != "local"):
        raise SystemExit("dcpt sweep: several configs run together on this machine (--launcher local), each into "
                         "its own table: drop --out / --launcher, or give one config")
    cfgs = [sweeps.load_config(c) for c in a.config]
    if a.out:
        cfgs[0].out = str(Path(a.out).resolve())  # a command-line path is relative to where you are
    if a.dry_run:
        for cfg in cfgs:
            sweeps.dry_run(cfg)
        return
    paths = ([sweeps.run_sweep(cfgs[0], launcher=a.launcher, jobs=a.jobs)] if len(cfgs) == 1
             else sweeps.run_sweeps(cfgs, jobs=a.jobs))
    for path in paths:
        print(f"loss table: {path}")


def cmd_probe(a):
    _, sweeps = _runner()
    cfg = sweeps.load_config(a.config)
    out = sweeps.run_probe(cfg, a.domain, a.probe_tokens, n_sizes=a.sizes)
    if a.json:
        print(json.dumps(out, indent=1))
        return
    print(f"domain {out['domain']}: k1 = {out['k1']:.5f} (base-model loss), k2 = {out['k2']:.5f} (relative drop "
          f"after {out['k2_tokens']:,.0f} tokens at r_d = 1, N = {out['model_size']:,.0f}); probe run: "
          f"{out['probe_tokens']:,} tokens at each of {', '.join(out['sizes'])}\n"
          f"probe compute: {out['compute_share']:.2%} of this config's full grid for the domain\n"
          f"rows: {out['losses']}")


def _law_arg(text: str):
    """"dcpt", or one law per loss as "domain:dcpt,general:total-data" (the form Fit.law prints); a law may be
    an averaged one, "domain:mean(dcpt, dcpt-scaled),general:total-data" (its commas are inside the brackets)."""
    if ":" not in text:
        return text
    try:
        return dict(part.split(":", 1) for part in re.split(r",(?![^()]*\))", text))
    except ValueError:
        raise UserError(f"--law {text!r}: use a law name or domain:NAME,general:NAME") from None


def cmd_fit(a):
    import dcpt_law as dl

    if a.cross_domain:
        if a.start:
            raise UserError("--start: a cross-domain fit has no single start", "drop --start or --cross-domain")
        f = dl.fit_cross_domain(a.losses, method=a.method, probe_tokens=a.probe_tokens, unit=a.unit,
                                k_definition=a.k_definition, delta=a.delta)
    else:
        start = dl.load_fit(a.start) if a.start else None
        law = _law_arg(a.law or (start.law if start else "recommended"))  # --start: its law unless told
        f = dl.fit(a.losses, law=law, target=a.target, domain=a.domain, bootstrap=a.bootstrap, delta=a.delta,
                   start=start)
    print(f.report())
    if a.out:
        f.save(a.out)
        print(f"\nfit written to {a.out}")


def _add_probed_domain(cross, domain: str, probe_table) -> None:
    """Calibrate ``domain`` of a cross-domain fit from its probe's loss table (`dcpt probe`), in the fit's unit:
    the calibrated law from the probe's rows at every size it ran, the paper's from its k1, k2."""
    import dcpt_law as dl
    from dcpt_law.cross_domain import measure_coefficients, to_unit
    from dcpt_law.table import base_losses

    probe = to_unit(dl.load_losses(probe_table), cross.unit)
    if domain not in set(probe["domain"]):
        raise UserError(f"--probe {probe_table}: no rows of domain {domain!r} (it has {sorted(set(probe['domain']))})",
                        f"run `dcpt probe CONFIG --domain {domain}`")
    probe = probe[probe["domain"] == domain]
    if isinstance(cross, dl.CalibratedFit):
        cross.add_domain(domain, probe)
    else:
        cross.add_domain(domain, measure_coefficients(probe, cross.probe_tokens)[domain], base_losses(probe, domain))


def cmd_predict(a):
    import numpy as np
    import pandas as pd

    import dcpt_law as dl

    if a.frontier is not None and a.frontier < 2:
        raise UserError(f"--frontier {a.frontier}: the list needs at least 2 rows", "e.g. --frontier 11")
    f = dl.load_fit(a.fit)
    if a.probe and not a.domain:
        raise UserError("--probe calibrates a new domain of a cross-domain fit", "name it with --domain")
    if a.domain:
        if not hasattr(f, "for_domain"):
            raise UserError("--domain is for cross-domain fits", "fit one with `dcpt fit LOSSES --cross-domain`")
        if a.probe:
            _add_probed_domain(f, a.domain, a.probe)
        f = f.for_domain(a.domain)
    elif hasattr(f, "for_domain"):
        raise UserError("a cross-domain fit needs --domain", f"one of {sorted(f.coefficients)}")
    out = {}
    r = dl.predict_ratio(a.model_size, a.tokens, fit=f, tolerance=a.tolerance, base_general_loss=a.base_general_loss)
    out["ratio"] = r.to_dict()
    if a.domain_tokens:
        out["limited_domain"] = dl.optimal_ratio_limited_domain(a.model_size, a.domain_tokens, fit=f,
                                                                base_general_loss=a.base_general_loss).__dict__
    if a.flops:
        out["compute"] = dl.allocate_compute(a.flops, r.ratio, fit=f).__dict__
    if a.frontier:
        front = dl.ratio_frontier(a.model_size, a.tokens, fit=f, base_general_loss=a.base_general_loss)
        # a.frontier rows at evenly spaced increases: the answer for each tolerance from that increase up
        steps = np.linspace(*front["general_loss_increase"].iloc[[0, -1]], a.frontier)
        rows = np.unique(np.searchsorted(front["general_loss_increase"].to_numpy(), steps, side="right") - 1)
        out["frontier"] = front.iloc[np.clip(rows, 0, len(front) - 1)].to_dict("records")
    if a.json:
        print(json.dumps(out, indent=1, default=float))
        return
    print(repr(r))
    if a.domain_tokens:
        print(repr(dl.LimitedDomainResult(**out["limited_domain"])))
    if a.flops:
        print(repr(dl.ComputeResult(**out["compute"])))
    if a.frontier:
        print("\nfrontier: the answer r_d for every tolerance from the row's general-loss increase up to the next row's")
        print(pd.DataFrame(out["frontier"]).to_string(index=False, float_format=lambda x: f"{x:.4f}",
                                                      formatters={"general_loss_increase": "{:+.2%}".format}))


def cmd_crossings(a):
    import dcpt_law as dl

    from dcpt_law.crossings import misses_line

    table = dl.load_losses(a.losses)  # read once for the line and the law's check
    cs = dl.crossing_scaling(table, tokens=a.tokens, tolerance=a.tolerance, domain=a.domain, pool=a.pool)
    p = cs.predict(a.model_size, level=a.level) if a.model_size else None
    m = dl.law_misses(a.fit, table, tokens=cs.tokens, tolerance=a.tolerance, domain=a.domain) if a.fit else None
    if a.json:
        out = {"domain": cs.domain, "tokens": cs.tokens, "tolerance": cs.tolerance, "intercept": cs.intercept,
               "slope": cs.slope, "residual_sd": cs.residual_sd, "dof": cs.dof, "pooled": list(cs.pooled),
               "crossings": cs.crossings.to_dict("records"), "prediction": p.__dict__ if p else None,
               "law_misses": m.to_dict("records") if m is not None else None}
        print(json.dumps(out, indent=1, default=float))
        return
    print(cs.report())
    if p:
        print(repr(p))
    if m is not None:
        print(misses_line(m))


def cmd_cells(a):
    import pandas as pd

    import dcpt_law as dl

    if a.by_size and a.model_size is None:
        raise ValueError("--by-size extrapolates in ln N: pass --model-size N (e.g. 1B) and --base-general-loss")
    if a.relative and not a.by_size:
        raise ValueError("--relative without --by-size changes nothing (ln(L/G) in ln G is ln L in ln G): add "
                         "--by-size --model-size N")
    cs = dl.cell_scaling(a.losses, domain=a.domain, x="model_size" if a.by_size else "base_general_loss",
                         relative=a.relative)
    D = a.tokens if a.tokens is not None else cs.lines["tokens"].max()
    grid = cs.ratios(D)
    kw = dict(base_general_loss=a.base_general_loss, model_size=a.model_size)
    pred = cs.predict(D, grid, **kw)  # warns once where the target lies far past the swept sizes
    rec = cs.predict_ratio(D, a.base_general_loss, a.tolerance, model_size=a.model_size, warn=False)
    spans = cs.spans_past(**kw)
    table = pd.DataFrame({"domain_ratio": grid, "domain_loss": pred["domain"], "general_loss": pred["general"]})
    limited = [cs.limited_domain(b, **kw, warn=not a.json) for b in a.domain_tokens or []]  # usage 2
    if a.json:
        print(json.dumps({"domain": cs.domain, "x": cs.x, "tokens": rec.tokens, "spans_past": spans,
                          "sizes": cs.sizes.to_dict("records"), "losses": table.to_dict("records"),
                          "ratio": rec.__dict__,
                          "limited_domain": [{**{k: v for k, v in u.__dict__.items() if k != "candidates"},
                                              "candidates": u.candidates.to_dict("records")} for u in limited]},
                         indent=1, default=float))
        return
    print(cs.report())
    print(f"\npredicted at D = {dl.format_count(rec.tokens)} ({spans:.2f} spans of ln "
          f"{'N' if a.by_size else 'G'} past the best swept size):")
    print(table.to_string(index=False, float_format=lambda x: f"{x:.4f}"))
    print(repr(rec))
    for u in limited:
        print(f"\nusage 2, {dl.format_count(u.domain_tokens)} domain tokens: the line D * r_d = D_d at each logged D")
        print(u.candidates.to_string(index=False, float_format=lambda x: f"{x:.4g}"))
        print(repr(u))


def cmd_evaluate(a):
    import pandas as pd

    import dcpt_law as dl

    laws = a.law or list(dl.laws.RATIO_LAWS)
    table = dl.evaluate(a.losses, law=laws, split=a.split, domain=a.domain)
    with pd.option_context("display.width", 160, "display.max_rows", 500):
        print(dl.summary(table).round(5).to_string())
    if a.out:
        table.to_csv(a.out, index=False)
        print(f"\nper-fold table written to {a.out}")


def cmd_plot(a):
    import numpy as np

    import dcpt_law as dl
    from dcpt_law import plots

    paths = plots.save_all(a.fit, a.losses, a.out, tokens=a.tokens)
    if a.domain_tokens:  # usage 2's figure at N (default: the largest swept size, with the runs on its lines)
        f = dl.load_fit(a.fit)
        df = plots._rows(a.losses, f.domain or None)  # the fit's domain, CPT rows only, as every figure reads them
        N = dl.parse_count(a.model_size, "model_size") if a.model_size else float(df["model_size"].max())
        runs = df[np.isclose(df["model_size"], N)]
        on_lines = all(_has_line(runs, b) for b in a.domain_tokens)
        fig = plots.limited_domain(f, N, a.domain_tokens, base_general_loss=a.base_general_loss,
                                   observed=runs if len(runs) and on_lines else None)
        paths += plots.save(fig, Path(a.out) / "limited_domain")
    for p in paths:
        print(p)


def _has_line(runs, budget) -> bool:
    """Whether ``runs`` logged >= 2 points of usage 2's line D * r_d = ``budget``."""
    import dcpt_law as dl

    try:
        dl.limited_domain_line(runs, budget)
    except ValueError:
        return False
    return True


def cmd_report(a):
    from dcpt_law import report

    path = report.write_report(a.fit, a.losses, a.out, model_size=a.model_size, tokens=a.tokens,
                               tolerance=a.tolerance, laws=a.compare, base_general_loss=a.base_general_loss)
    print(f"report written to {path}")


def cmd_quickstart(a):
    """Set-up plus a small end-to-end run: corpora -> sweep -> fit -> recommendation -> plots/report."""
    import time

    corpora, sweeps = _runner()
    import dcpt_law as dl
    from dcpt_law import crossings, report

    t0 = time.time()
    compare = list(dl.laws.RATIO_LAWS) if a.compare == ["all"] else a.compare or [
        "dcpt", *dict.fromkeys(dl.RECOMMENDED_LAW.values())]
    for name in compare:  # a misspelt law fails here, not after the sweep
        dl.get_law(name)
    cfg = sweeps.load_config(a.config, check_corpora=False)
    out = Path(a.out).resolve()
    cfg.out = str(out / "sweep")
    if a.cache:
        cfg.cache = a.cache
    print(f"[1/4] corpora: {cfg.general_domain} + {', '.join(cfg.domains)} (cache {cfg.cache_dir()})")
    corpora.prepare([cfg.general_domain, *cfg.domains], cfg.cache or None)
    sweeps.validate(cfg)
    print(f"[2/4] sweep {cfg.name!r}: {len(cfg.sizes)} sizes x {len(cfg.ratios)} ratios x {len(cfg.domains)} domain(s)")
    losses = sweeps.run_sweep(cfg)
    print(f"[3/4] fit the recommended laws ({dl.RECOMMENDED_LAW['domain']} for the domain loss, "
          f"{dl.RECOMMENDED_LAW['general']} for the general loss); {a.bootstrap} run-level bootstrap resamples")
    f = dl.fit(losses, law="recommended", bootstrap=a.bootstrap)
    f.save(out / "fit.json")
    print(f.report())
    print("[4/4] recommendation, figures and report")
    path = report.write_report(f, losses, out, tolerance=a.tolerance, laws=compare)
    N = max(f.base_losses.index)
    D = f["domain"].ranges["tokens"][1]
    print(repr(dl.predict_ratio(N, D, fit=f, tolerance=a.tolerance)))
    print("without a law (each size's observed crossing, extrapolated in log N):")
    print(crossings.cross_check(losses, N, D, a.tolerance, f.domain, fit=f)[1])
    print("usage 1 four ways and their median (dcpt_law.usage1_consensus):")
    print(repr(dl.usage1_consensus(f, losses, N, D, a.tolerance)))
    print(f"\nloss table {losses}\nfit        {out / 'fit.json'}\nfigures    {out / 'figures'}\n"
          f"report     {path}\ndone in {(time.time() - t0) / 60:.1f} min")


# --- parser ----------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    from .fitting import RECOMMENDED_LAW, pair_name  # the package is loaded anyway: `dcpt` is its script
    p = argparse.ArgumentParser(prog="dcpt", description="Pick the domain/general data mixture for continual "
                                "pre-training from small runs (D-CPT Law).")
    sub = p.add_subparsers(dest="cmd", required=True)

    data = sub.add_parser("data", help="corpora: dcpt data prepare").add_subparsers(dest="data_cmd", required=True)
    pr = data.add_parser("prepare", help="fetch and clean the offline corpora into the cache (idempotent)")
    pr.add_argument("--domains", nargs="*", help="default: all (general code law chemistry music math medicine manuals dictionary)")
    pr.add_argument("--cache", help="cache folder (default $DCPT_CACHE or ~/.cache/dcpt-law)")
    pr.set_defaults(func=cmd_data_prepare)

    sw = sub.add_parser("sweep", help="run a sweep config (base models, then CPT runs) into <out>/losses.csv; several "
                        "configs: one pool, each base model once, then every CPT run")
    sw.add_argument("config", nargs="+")
    sw.add_argument("--launcher", choices=["local", "slurm", "ray"], default="local")
    sw.add_argument("--jobs", type=int, default=1, help="local launcher: worker processes side by side (bases first, "
                    "then CPT runs); on one GPU tiny models train faster together (benchmarks/bench_parallel.py)")
    sw.add_argument("--dry-run", action="store_true", help="list runs with estimated FLOPs and time, train nothing")
    sw.add_argument("--out", help="output folder (default from the config)")
    sw.set_defaults(func=cmd_sweep)

    pb = sub.add_parser("probe", help="the cheap measurement (k1, k2) a new domain needs for the cross-domain law")
    pb.add_argument("config")
    pb.add_argument("--domain", required=True)
    pb.add_argument("--probe-tokens", type=int, help="CPT tokens at r_d = 1 (default: half the config's CPT budget)")
    pb.add_argument("--sizes", type=int, help="probe the N smallest sizes of the config (default 2, or 1 where it has "
                    "one: the calibrated law then fits the domain's own scaling in model size; 1: the paper's probe, "
                    "cheaper)")
    pb.add_argument("--json", action="store_true")
    pb.set_defaults(func=cmd_probe)

    ft = sub.add_parser("fit", help="fit a law to a loss table and print the report")
    ft.add_argument("losses")
    ft.add_argument("--law", help="a law name, one per loss (domain:dcpt,general:total-data), "
                    f"or 'recommended' (default: {pair_name(RECOMMENDED_LAW)}, chosen on "
                    "held-out data, or --start's law; usage 3 (--flops) needs an N-based law such as dcpt)")
    ft.add_argument("--target", default="both", choices=["both", "domain", "general"])
    ft.add_argument("--domain", help="which domain of the table (needed if several)")
    ft.add_argument("--bootstrap", type=int, default=0, help="run-level resamples for 90%% intervals (e.g. 200)")
    ft.add_argument("--start", metavar="FIT.json", help="start from this saved fit's parameters instead of the law's "
                    "grid: seconds, not minutes (e.g. with --bootstrap, to add intervals to a fit made without); "
                    "on new data it keeps to the old optimum's basin")
    ft.add_argument("--delta", type=float, default=1e-3, help="Huber delta on log-loss residuals")
    ft.add_argument("--out", help="write the fit as JSON (e.g. fits/NAME.json)")
    ft.add_argument("--cross-domain", action="store_true", help="one joint law over every domain of the table "
                    "(Cross-Domain D-CPT Law)")
    ft.add_argument("--method", default="calibrated", choices=["calibrated", "paper"],
                    help="cross-domain: the paper's law (shared shape + F/K^mu) or ours (shared exponents, "
                         "per-domain coefficients from the probe)")
    ft.add_argument("--probe-tokens", type=int, help="cross-domain: tokens of the r_d = 1 probe (default: 32768 "
                    "for the paper's k2, 262144 for the calibrated law)")
    ft.add_argument("--unit", default="nats", choices=["nats", "bpb"], help="cross-domain: fit nats/token or bits/byte")
    ft.add_argument("--k-definition", default="k1+k2", choices=["k1+k2", "k1", "k2"])
    ft.set_defaults(func=cmd_fit)

    pd_ = sub.add_parser("predict", help="recommended domain ratio for a target model (usages 1-3)")
    pd_.add_argument("fit")
    pd_.add_argument("--model-size", required=True, help="N, e.g. 7B")
    pd_.add_argument("--tokens", required=True, help="CPT tokens D, e.g. 100B")
    pd_.add_argument("--tolerance", type=float, default=0.03, help="max relative rise of general loss (0.03 = 3%%)")
    pd_.add_argument("--base-general-loss", type=float, help="L_g0 of the base model, nats per token before CPT (default: from the fit's "
                     "table); also the G that the anchored laws predict from")
    pd_.add_argument("--domain-tokens", help="usage 2: domain tokens available, e.g. 5B")
    pd_.add_argument("--flops", help="usage 3: compute budget C = 6ND, e.g. 1e21")
    pd_.add_argument("--domain", help="which domain of a cross-domain fit")
    pd_.add_argument("--probe", metavar="LOSSES", help="a new domain (--domain) of a cross-domain fit: calibrate it "
                     "from its probe's loss table (`dcpt probe CONFIG --domain NAME` writes it)")
    pd_.add_argument("--frontier", type=int, nargs="?", const=11, metavar="ROWS",
                     help="also list r_d for every tolerance (the Pareto front of the two losses), ROWS rows (11)")
    pd_.add_argument("--json", action="store_true")
    pd_.set_defaults(func=cmd_predict)

    cr = sub.add_parser("crossings", help="usage 1 without a law: each size's observed best feasible ratio (where the "
                        "general loss reaches the tolerance), extrapolated in log N")
    cr.add_argument("losses", help="loss table (CSV/Parquet) with >= 3 sizes and their base rows")
    cr.add_argument("--model-size", help="N to extrapolate to, e.g. 1B (default: only list the sizes' crossings)")
    cr.add_argument("--tokens", help="a token count the sweep logged (default: the largest every size logged)")
    cr.add_argument("--tolerance", type=float, default=0.03, help="max relative rise of general loss (0.03 = 3%%)")
    cr.add_argument("--domain", help="which domain of a multi-domain table")
    cr.add_argument("--level", type=float, default=0.9, help="prediction interval level (0.9)")
    cr.add_argument("--pool", action="store_true", help="fit every domain of the table together: one slope in ln N, "
                    "an intercept per domain, one residual sd (more dof: a narrower interval)")
    cr.add_argument("--fit", metavar="FIT.json", help="also check this fitted law's usage-1 answer at the swept sizes "
                    "against their observed crossings (warns past a miss of 0.05 in r_d)")
    cr.add_argument("--json", action="store_true")
    cr.set_defaults(func=cmd_crossings)

    ce = sub.add_parser("cells", help="a larger model's losses without a law: each (D, r) cell the sweep logged, "
                        "ln L linear in ln G (its base model's general loss) over the swept sizes; usage 1 read off them")
    ce.add_argument("losses", help="loss table (CSV/Parquet) with >= 3 sizes and their base rows")
    ce.add_argument("--base-general-loss", type=float, required=True, metavar="LOSS",
                    help="the target base model's general validation loss before CPT (nats per token): G and L_g0")
    ce.add_argument("--tokens", help="a token count the sweep logged (default: the largest)")
    ce.add_argument("--tolerance", type=float, default=0.03, help="max relative rise of general loss (0.03 = 3%%)")
    ce.add_argument("--domain", help="which domain of a multi-domain table")
    ce.add_argument("--by-size", action="store_true", help="extrapolate in ln N instead of ln G (needs --model-size)")
    ce.add_argument("--model-size", help="the target's N, e.g. 1B (with --by-size)")
    ce.add_argument("--relative", action="store_true", help="with --by-size: each size's loss over its own base "
                    "model, ln(L/G), in ln N, times the target's G (usage 1 from the rise alone)")
    ce.add_argument("--domain-tokens", nargs="+", metavar="D_d", help="usage 2: also the best r_d with only this "
                    "many domain tokens (each seen once), read off the cells at every logged D on the line D * r_d = D_d")
    ce.add_argument("--json", action="store_true")
    ce.set_defaults(func=cmd_cells)

    ev = sub.add_parser("evaluate", help="generalisation table (the paper's four splits) for every law")
    ev.add_argument("losses")
    ev.add_argument("--law", nargs="*", help="laws to compare (default: dcpt additive effective)")
    ev.add_argument("--split", default="every", choices=["every", "all", "model_size", "tokens", "ratio"])
    ev.add_argument("--domain")
    ev.add_argument("--out", help="write the per-fold table as CSV")
    ev.set_defaults(func=cmd_evaluate)

    pl = sub.add_parser("plot", help="scaling-curve figures (PNG and PDF)")
    pl.add_argument("fit")
    pl.add_argument("losses")
    pl.add_argument("--out", required=True)
    pl.add_argument("--tokens", help="token budget for the ratio-vs-size figure (default: largest fitted D)")
    pl.add_argument("--domain-tokens", nargs="+", help="usage 2 as well: the domain loss along D = D_d / r_d for "
                    "each of these budgets D_d (e.g. 64K 128K), figure limited_domain")
    pl.add_argument("--model-size", help="N of the usage-2 figure (default: the largest swept size)")
    pl.add_argument("--base-general-loss", type=float, help="G of that model's base (the scaled laws at an unswept N)")
    pl.set_defaults(func=cmd_plot)

    rp = sub.add_parser("report", help="one self-contained HTML report: figures, fit, generalisation, recommendation")
    rp.add_argument("fit")
    rp.add_argument("losses")
    rp.add_argument("--out", required=True)
    rp.add_argument("--model-size", help="target N for the recommendation (default: largest fitted size)")
    rp.add_argument("--tokens", help="target D (default: largest fitted D)")
    rp.add_argument("--tolerance", type=float, default=0.03)
    rp.add_argument("--base-general-loss", type=float, metavar="LOSS", help="the target's base-model general loss "
                    "before CPT, nats per token (L_g0 and G; needed for a --model-size the sweep did not train)")
    rp.add_argument("--compare", nargs="+", metavar="LAW", help="laws of the generalisation table (default: every "
                    "law of RATIO_LAWS; the fit's own laws are always in it)")
    rp.set_defaults(func=cmd_report)
    qs = sub.add_parser("quickstart", help="the README's main job: corpora, a small sweep, fit, recommendation, "
                        "figures and report (about 5 minutes on a 2-core CPU)")
    qs.add_argument("--config", default=str(Path(__file__).resolve().parent.parent / "small_runs" / "configs"
                                            / "quickstart.toml"))
    qs.add_argument("--out", default="out/quickstart")
    qs.add_argument("--cache", help="corpus/model cache (default $DCPT_CACHE or ~/.cache/dcpt-law)")
    qs.add_argument("--bootstrap", type=int, default=50)
    qs.add_argument("--tolerance", type=float, default=0.03)
    qs.add_argument("--compare", nargs="+", metavar="LAW", help="laws of the report's generalisation table (the "
                    "paper's four splits; default: dcpt and the recommended pair's laws; 'all': every law of "
                    "RATIO_LAWS, several times longer)")
    qs.set_defaults(func=cmd_quickstart)
    return p


def _hint(exc: Exception) -> str:
    msg = str(exc)
    if "data prepare" in msg or "not prepared" in msg:
        return ""
    if "does not exist" in msg:
        return "check the path"
    if "pass base_general_loss=" in msg:  # the library's keyword, as a flag
        return "pass --base-general-loss LOSS: your base model's general validation loss before CPT, nats per token"
    return "see `dcpt <command> --help`"


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)

    def show(message, category, filename, lineno, file=None, line=None):
        print(f"warning: {message}", file=sys.stderr)

    warnings.showwarning = show
    try:
        args.func(args)
    except UserError as exc:
        print(f"dcpt: error: {exc}", file=sys.stderr)
        if exc.hint:
            print(f"hint: {exc.hint}", file=sys.stderr)
        return 2
    except (ValueError, KeyError, FileNotFoundError, RuntimeError) as exc:
        if isinstance(exc, RuntimeError) and type(exc).__name__ not in ("CorpusError",):
            raise
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        print(f"dcpt: error: {msg}", file=sys.stderr)
        h = _hint(exc)
        if h:
            print(f"hint: {h}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dcpt: interrupted; a re-run resumes where it stopped", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
