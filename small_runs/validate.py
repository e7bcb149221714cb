"""Regenerate docs/validation.md (tables and figures) from the committed loss tables, in minutes.

    python -m small_runs.validate [--out docs] [--quick] [--jobs N] [--plan-extra [LABEL ...]] [--refit | --rekey-from COMMIT]
    python -m small_runs.validate --summary LABEL [LABEL ...]   # medians of some experiments, no document

0. Headline: issue 6's goals against the recommended pair, one row per experiment, and the seed noise of
   the held-out size where its runs were repeated: the pair's R^2 on seed 0, on seed means and the
   seed-to-seed ceiling (what a noise-free law would score on single runs).
1. Held-out size (issue 6), one subsection per experiment of EXPERIMENTS: per domain, fit every law
   on the small sizes, predict the held-out size (anchored laws from its base model's general
   loss, as a user would with the base model in hand), score R^2 / MAPE / Huber,
   and compare the recommended ratio (usage 1) with the best trained ratio that meets the
   constraint: regret = L_d(observed, interpolated at the prediction) / best feasible L_d - 1, on the
   raw runs, on their isotonic fits in r_d (dcpt_law.ratio_regret) and on seed means where repeated.
   Accuracy also without the runs whose mixture holds none of the scored corpus, and on seed means.
2. The paper's four generalisation splits on the small sizes, per domain and law.
3. Cross-domain law (issue 5): leave one domain out, for each K definition and unit.
4. Seed noise floor: seeds 1-5 beside seed 0 of the same runs.
5. Base budget against size: how much of a lower G from longer pre-training reaches the domain loss, against a
   lower G from a larger model.
6. How many sizes to fit on: ladders of 2-5 sizes below one top, and a lower top.
7. Usage 2 at the held-out size: runs along the lines D * r_d = D_d (a fixed budget of domain tokens) against the
   laws' answers, the pilot's edge and domain data alone.

Sections whose data are not committed yet say so and are skipped. Only dcpt_law is needed (no torch).
"""
from __future__ import annotations

import argparse
import copy
import functools
import hashlib
import inspect
import json
import os
import string
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

import dcpt_law as dl
from dcpt_law._atomic import atomic_write
from dcpt_law.fitting import _metrics
from dcpt_law.laws import RATIO_LAWS
from dcpt_law.table import LOSS_COLUMNS, with_base_general
from small_runs.sweeps import PAPER_RATIOS

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "small_runs" / "results"
SEED_TABLES = ("seeds", "seeds_ladder", "seeds_ladder_music", "seeds_ladder_law", "seeds_ladder_chemistry",
               "seeds_ladder_s2", "seeds_ladder4", "seeds_ladder4h", "seeds_heldout",  # seeds 1, 2
               "seeds_more_ladder", "seeds_more_ladder4", "seeds_more_heldout",  # seeds 3-5
               "seeds_heldout_lr01",  # seeds 1, 2 of m at CPT lr 0.01 (m4dF)
               "seeds_ladder4_lrbest", "seeds_ladder4_lr01")  # seed 1 of m4dB2's ladder and of m4dF's (m4dB22, m4dF2)
# the held-out size's repeats
HELD_SEED_TABLES = ("seeds_heldout", "seeds_more_heldout", "long_heldout", "long_lowlr_heldout", "seeds_heldout_lr01")
LONG_TABLES = ("long_ladder4", "long_heldout",  # bases pre-trained on 5M tokens, not 1M (seeds 0-2) ...
               "long_lowlr_ladder4", "long_lowlr_heldout",  # ... and CPT at a third of their peak lr (seeds 0-2)
               "long_heldout_xl")  # ... and xl held out beside them (seed 0)
LONG_EXTRA = "small_runs/results/long_heldout"  # their extra held-out runs (every seed), beside the grid
EXTRA_OUT = {label: "small_runs/results/heldout_m_lr01" for label in ("m4dF", "m4dB", "m4dB2", "m4dF2", "m4dB22")}  # other experiments' extra held-out runs, beside their grid
# CPT at peak lr 0.01 from the 1M-token bases (m4dF), xxs4 at its own best, 0.03 (m4dB), and xs4 at 0.02 (m4dB2)
LR_TABLES = ("ladder4_lr01", "heldout_m_lr01", "ladder4_lrbest", "ladder4_lrbest_xs4")
TABLES = ("pilot", "multidomain", "xxs", "s3", "s2", "ladder4", "ladder4h", "heldout_grid", "heldout_extra",
          *SEED_TABLES, *LONG_TABLES, "newdomain", *LR_TABLES)
# the domains every choice of the package was made on (the laws, the recommended pair, the consensus's routes and
# threshold), and four it never saw (newdomain: the depth-matched ladder and m, run after those choices; manuals a
# session after medicine and math, dictionary a session after manuals): only the
# experiments of EXPERIMENT_DOMAINS read the held-out domains, so they test the choices on data not used to make them
CHOSEN_DOMAINS = ("code", "law", "chemistry", "music")
HELD_OUT_DOMAINS = ("medicine", "math", "manuals", "dictionary")
SMALL_SIZES = ("xs", "s", "m")  # the grid of the splits and cross-domain sections ...
GRID_TABLES = ("pilot", "multidomain")  # ... from these tables (complete 9-ratio grids)
# section 3b: the cross-domain law fitted on the chosen domains, each held-out domain's grid from its probe alone, on
# the sizes and the paper's 9 ratios (PAPER_RATIOS) every domain ran (the depth-matched ladder and m, seed 0)
NEW_DOMAIN_SIZES = ("xxs4", "xs4", "s4", "m")
# held-out experiments: label -> (sizes fitted, size held out). m (443K non-embedding parameters) is 4.16x s3,
# the largest size of the headline fit (m4c: a clean ladder, each base model better than the one below), 4.4x s2
# (m4x: 2 layers, s2's CPT gains barely above the smaller xs's), 4.17x s4 (m4d: the depth-matched ladder xxs4, xs4,
# s4, 4 layers and 4 heads like m, the N of xxs, xs, s3; m4h: the same with m's head shape, 1-2 heads 24-32
# wide) and 2.9x s; these fits stay in the regime where a bigger
# model is better at our 1M-token base budget. xl (6x m, 0.4 base tokens per parameter) is not, and shows what
# happens then. The label names the configs of the extra runs next to each experiment's prediction
# (heldout_extra_<label>_*). The third element: how many seeds of the fitted sizes to fit on, 0 to n - 1 (m4c3: all
# four domains, seeds 0-2 of xs and s3; m4x3: of xs and s2; m4d3, m4h3: of all three; m4c6, m4d6: seeds 0-5 of the
# same, xxs keeping one), not seed 0 alone; only domains whose largest fitted size ran every one of them are then
# shown. The held-out size is scored on seed 0, and on the means of seeds 0-2 (0-5 in the six-seed experiments).
EXPERIMENTS = {"m4c": (("xxs", "xs", "s3"), "m", 1), "m4c3": (("xxs", "xs", "s3"), "m", 3),
               "m4c6": (("xxs", "xs", "s3"), "m", 6),
               "m4x": (("xxs", "xs", "s2"), "m", 1), "m4x3": (("xxs", "xs", "s2"), "m", 3),
               "m4d": (("xxs4", "xs4", "s4"), "m", 1), "m4d3": (("xxs4", "xs4", "s4"), "m", 3),
               "m4d6": (("xxs4", "xs4", "s4"), "m", 6),
               "m4h": (("xxs4h", "xs4h", "s4h"), "m", 1), "m4h3": (("xxs4h", "xs4h", "s4h"), "m", 3),
               "m": (("xxs", "xs", "s"), "m", 1),
               "xl": (("xs", "s", "m"), "xl", 1),
               "m4L3": (("xxs4", "xs4", "s4"), "m", 3, {"base_tokens": 5_000_000}),
               "m4L2": (("xxs4", "xs4", "s4"), "m", 3, {"base_tokens": 5_000_000, "lr": 0.001}),
               "xlL3": (("xs4", "s4", "m"), "xl", 3, {"base_tokens": 5_000_000}),
               "m4n": (("xxs4", "xs4", "s4"), "m", 1),
               "m4dF": (("xxs4", "xs4", "s4"), "m", 1, {"lr": 0.01}),
               "m4dB": (("xxs4", "xs4", "s4"), "m", 1, {"lr": 0.01, "lr_by_size": {"xxs4": 0.03}}),
               "m4dB2": (("xxs4", "xs4", "s4"), "m", 1, {"lr": 0.01, "lr_by_size": {"xxs4": 0.03, "xs4": 0.02}}),
               "m4dF2": (("xxs4", "xs4", "s4"), "m", 2, {"lr": 0.01}),
               "m4dB22": (("xxs4", "xs4", "s4"), "m", 2, {"lr": 0.01, "lr_by_size": {"xxs4": 0.03, "xs4": 0.02}})}
EXPERIMENT_DOMAINS = {"m4n": HELD_OUT_DOMAINS}  # every other experiment: CHOSEN_DOMAINS
# the run settings (loss-table columns) of an experiment's runs, where its fourth element does not say otherwise:
# every table but the long_* and *_lr01 ones. m4L3 is m4d3 with bases pre-trained on 5M general tokens (long_ladder4,
# long_heldout): m at 11 tokens per non-embedding parameter instead of 2.3, base losses 1.3-1.5 nats lower. m4L2:
# the same bases, CPT at peak lr 0.001, a third of theirs (long_lowlr_*), seeds 0-2 (seed 2, and the extras of code
# and chemistry, on an H200). xlL3: m4L3's bases one step up, tolerance 5% (xl 6.1x m, long_heldout_xl: its base at
# 1.9 tokens per parameter, m's at 11; seed 0 at 14 ratios, on the CPU 2026-12-04/05); its fits take ~1 h on 2 cores
# m4dF: m4d's bases (1M tokens, peak lr 0.003), CPT re-warmed to lr 0.01 (ladder4_lr01, heldout_m_lr01: the four
# domains, seed 0; m's seeds 1-2 of all four in seeds_heldout_lr01), where a probe found every size far from
# converged in lr at 0.003, the small sizes furthest
# m4dB: m4dF with each fitted size at its own best CPT lr (a probe at r_d 0.5, lr_probe_03: xxs4 0.03, xs4 0.01-0.03,
# s4 and m 0.01): xxs4 from ladder4_lrbest, the rest as m4dF. Does m extrapolate better from sizes each at its best lr?
# m4dB2: m4dB with xs4 at 0.02 too (ladder4_lrbest_xs4; 1-3.6% below 0.01's domain loss at r_d > 0)
# m4dF2, m4dB22: m4dF and m4dB2 fitted on seeds 0-1 (seed 1: seeds_ladder4_lr01, seeds_ladder4_lrbest, whose s4 at 0.01
# both read): does each size at its own lr still beat one lr for all beyond one seed?
RUN_SETTINGS = {"base_tokens": 1_000_000, "lr": 0.003}
TOLERANCE = 0.03
# usage 1's tolerance where it is not TOLERANCE. With 5M-token bases, re-warming the learning rate to the bases' peak
# lifts m's general loss 3.3% above its base model's at D max even at r_d = 0 (general data only; +5.6% at 160K
# tokens), so no ratio meets 3% there; 5% leaves r_d ~0.1-0.2
TOLERANCES = {"m4L3": 0.05, "xlL3": 0.05}
# every fit the document uses and its sections computed by fitting (the paper's splits, the cross-domain law), by
# content (committed: a fresh clone regenerates the document in minutes, not the hours of ~200 global searches
# and the splits' batched fits; --refit recomputes and rewrites them)
FITS: Path | None = ROOT / "fits" / "validate"
# every law, and pairs (domain-loss law, general-loss law): the recommended one first (dl.RECOMMENDED_LAW), the
# scaled ones (the base model's general loss multiplies what is learned, ours; the gated general law forgets the
# base model at r_g = 0, the forgetting one adds a rise with other data that replay recovers), the one that won
# the pilot's held-out splits (NOTES.md) and the anchored ones (the size term from the base model's general
# loss, ours)
# the geometric mean of the paper's law and the scaled one (ours): the size effect from N and from G, hedged
MEAN = "mean(dcpt, dcpt-scaled)"
MEAN_PAIR = {"domain": MEAN, "general": "total-data-scaled-gain"}
SCALED_PAIRS = [{"domain": "dcpt-scaled", "general": "total-data-scaled-gated"},
                {"domain": "dcpt-scaled", "general": "total-data-scaled-gain"},
                {"domain": "dcpt-scaled", "general": "total-data-scaled-forgetting"},
                {"domain": "dcpt-scaled", "general": "total-data-scaled"}, MEAN_PAIR]
PAIRS = [dict(dl.RECOMMENDED_LAW), *(p for p in SCALED_PAIRS if p != dl.RECOMMENDED_LAW),
         {"domain": "dcpt", "general": "total-data"}, {"domain": "dcpt", "general": "total-data-anchored"},
         {"domain": "dcpt-anchored", "general": "total-data-anchored"},
         {"domain": "dcpt-gated", "general": "total-data-anchored"},
         {"domain": "dcpt-gated-anchored", "general": "total-data-anchored"}]
# total-data-scaled-forgetting and total-data-scaled-rewarm (14 parameters each, opt in) are not in RATIO_LAWS: the
# held-out sections fit them (rewarm: the experiments of other run settings, LONG_CANDIDATES), the paper's splits
# (section 2) do too
CANDIDATES = [*RATIO_LAWS, "total-data-scaled-forgetting", MEAN, *PAIRS]
SPLIT_LAWS = [*RATIO_LAWS, "total-data-scaled-forgetting", "total-data-scaled-rewarm", MEAN]  # every law we have
# every law in the headline experiment; the others (other ladders, xl) fit the paper's law, the scaled laws of the
# recommended pair and the challenger to its general law; those fitted on several seeds (each fit on 2.3x or 4.3x
# the rows) the scaled ones alone. ~200 global searches instead of ~500: a refit takes ~2 h on 2 cores, not ~5.
ALL_LAWS_EXPERIMENTS = ("m4c",)
CORE_CANDIDATES = ["dcpt", "dcpt-scaled", MEAN, "total-data-scaled-gated", "total-data-scaled-gain",
                   *SCALED_PAIRS[:2], MEAN_PAIR]
SEED_CANDIDATES = CORE_CANDIDATES[1:]
# the experiments of other run settings (the long_* tables): the paper's law, ours, the pair, and the general law
# for CPT that re-warms the learning rate of an annealed base model (total-data-scaled-rewarm: the gain law plus the
# rise of re-warming; opt in, 14 parameters) with the pair's domain law
REWARM_PAIR = {"domain": "dcpt-scaled", "general": "total-data-scaled-rewarm"}
LONG_CANDIDATES = [*CORE_CANDIDATES[:5], dict(dl.RECOMMENDED_LAW), REWARM_PAIR]
# on six seeds (each fit on 4.3x the rows; a global search of the gain law on both losses took > 15 min a domain
# here) the recommended pair, each of its laws fitted on the loss it predicts there, and its domain law on both
SIX_SEED_CANDIDATES = [dl.RECOMMENDED_LAW["domain"], dict(dl.RECOMMENDED_LAW)]
# m4dF2 and m4dB22 ask one thing, one lr against each size's own, of the pair and the paper's law: those two alone
# (LONG_CANDIDATES on two seeds would take ~40 min an experiment here)
LR_SEED_CANDIDATES = {label: ["dcpt", dict(dl.RECOMMENDED_LAW)] for label in ("m4dF2", "m4dB22")}
# the extra runs of a held-out size sit 0.03 either side of these pairs' predictions
EXTRA_LAWS = PAIRS
BOOTSTRAP = 100  # run-level resamples behind the recommended pair's 90% interval of usage 1 (section 1)
FIGURE_LAWS = ("dcpt", PAIRS[0])  # held-out figures for these candidates: the paper's law and the recommended pair


def md(df: pd.DataFrame, index: bool = False) -> str:
    """A DataFrame as a GitHub markdown table (no tabulate dependency)."""
    if index:
        df = df.reset_index()
    df.columns = [" ".join(map(str, c)).strip() if isinstance(c, tuple) else str(c) for c in df.columns]
    fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)  # noqa: E731
    rows = [" | ".join(df.columns), " | ".join("---" for _ in df.columns)]
    rows += [" | ".join(fmt(v) for v in r) for r in df.itertuples(index=False)]
    return "\n".join(f"| {r} |" for r in rows)


def load(names) -> pd.DataFrame:
    """The loss tables that exist among ``names``, concatenated; column ``table`` names each row's source."""
    frames = [pd.read_csv(RESULTS / n / "losses.csv").assign(table=n) for n in names
              if (RESULTS / n / "losses.csv").exists()]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def complete_domains(df: pd.DataFrame) -> list[str]:
    """Domains with a grid to fit: >= 3 sizes that share >= 5 ratios."""
    out = []
    for d, g in df[df["tokens"] > 0].groupby("domain"):
        # the ratios every size has (extra runs at one size add ratios there, they don't break the grid)
        common = set.intersection(*(set(x["domain_ratio"]) for _, x in g.groupby("model_size")))
        if g["model_size"].nunique() >= 3 and len(common) >= 5:
            out.append(d)
    return out


# the dcpt_law modules a fit's parameters depend on (the command line, plots and reports do not)
FIT_SOURCES = ("_warn", "fitting", "laws", "provenance", "search", "table", "units")
# the stored sections: the dcpt_law modules and the functions of this file (besides their own) their lines depend on
SECTION_SOURCES = {"splits_law": ((*FIT_SOURCES, "evaluation"), ()),
                   "cross_section": ((*FIT_SOURCES, "evaluation", "cross_domain", "transfer"),
                                     ("md", "verdict", "complete_domains"))}


@functools.lru_cache(maxsize=16)
def _code_version(section=None, at: str | None = None) -> str:
    """Hash of the code a stored result depends on: a fit (``section=None``) or a section function's lines;
    ``at`` a git commit: with dcpt_law's modules as they were there (see :data:`REKEY_FROM`).

    A fit: dcpt_law's fitting sources (FIT_SOURCES). A section of SECTION_SOURCES: its modules, its helpers here
    and its own source; any other section: every dcpt_law module and this whole file. All as the tokens that run
    (:func:`_code_tokens`: no comments, docstrings, law docs or the recommended pair), and without the numpy / scipy
    versions: the stored results must serve a fresh clone, whose pip may pick newer ones (each fit records its own
    versions; ``--refit`` recomputes everything).

    For fits and the sections of SECTION_SOURCES, laws.py counts without its top-level assignments (the built-in
    laws, their parameters, RATIO_LAWS): a fit's key, and one law's splits (:func:`splits_law`), add that law's
    :func:`_law_signature` instead, and any other section the signatures of RATIO_LAWS, so adding a law, or editing
    one, refits only that law.

    All of it as it was when this module was imported (:data:`_MODULE_SOURCES`, :func:`_source`), so that editing a
    file during a run cannot store a result under the key of code that did not compute it.
    """
    by_law = section is None or section.__name__ in SECTION_SOURCES  # law definitions keyed by signature
    if section is None:
        modules, code = FIT_SOURCES, []
    elif section.__name__ in SECTION_SOURCES:
        modules, helpers = SECTION_SOURCES[section.__name__]
        code = [_source(section), *(_source(globals()[name]) for name in helpers)]
    else:
        modules, code = sorted(_MODULE_SOURCES), [_FILE_SOURCE]
    h = hashlib.sha1(b"fit" if section is None else section.__name__.encode())
    for name in modules:
        text = _MODULE_SOURCES[name] if at is None else _git_show(at, f"dcpt_law/{name}.py")
        h.update(_code_tokens(text, definitions=not (by_law and name == "laws")).encode())
    for text in code:
        h.update(_code_tokens(text).encode())
    if section is not None and by_law and section.__name__ not in BY_ONE_LAW:
        h.update("".join(_law_signature(n) for n in RATIO_LAWS).encode())
    return h.hexdigest()


def module_sources(root: Path = ROOT) -> dict[str, str]:
    """The text of every module of ``root``/dcpt_law, by name."""
    return {f.stem: f.read_text() for f in sorted((root / "dcpt_law").glob("*.py"))}


# dcpt_law's sources as imported (dcpt_law is imported above, so these are the modules that run); this file's below
_MODULE_SOURCES = module_sources()


def _source(fn) -> str:
    """The source of ``fn``: as imported for this module's stored sections and their helpers (:data:`_SOURCES`;
    inspect.getsource would read the file again, edited or not), else inspect.getsource (e.g. a test's stand-in)."""
    return _SOURCES[fn] if fn in _SOURCES else inspect.getsource(fn)


def _git_show(commit: str, path: str) -> str:
    """The text of ``path`` at ``commit`` of this repository."""
    import subprocess

    done = subprocess.run(["git", "-C", str(ROOT), "show", f"{commit}:{path}"], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"--rekey-from {commit}: cannot read {path} there ({done.stderr.strip()})")
    return done.stdout


BY_ONE_LAW = ("splits_law",)  # sections whose third argument is the one law they fit (keyed by its signature)


def _law_signature(law, prescreen: bool = True) -> str:
    """What a fit of ``law`` depends on besides the code that fits it: its kind, terms, and its parameters' bounds,
    grids and log flags (not their docs); for an averaged law, its members'. ``prescreen``: and the number of
    starts its fit polishes where it sets one (dl.fit reads it; section 2's folds do not, see :func:`cached_lines`)."""
    law = dl.get_law(law)
    params = [(p.name, p.lower, p.upper, p.grid, p.log) for p in law.params]
    members = "".join(_law_signature(m, prescreen) for m in getattr(law, "members", ()))
    starts = f"prescreen={law.prescreen}" if prescreen and getattr(law, "prescreen", None) else ""
    return repr((type(law).__name__, law.name, getattr(law, "terms", None), params)) + members + starts


def _code_tokens(text: str, definitions: bool = True) -> str:
    """Python source as the tokens that run, for :func:`_code_version`: no comments, blank lines, docstrings or
    ``doc=`` texts of laws and parameters (editing those changes no result), and not the statement that names the
    recommended pair (a choice among fits, not part of one). ``definitions=False`` also leaves out every top-level
    assignment (``NAME = ...``; in laws.py the law definitions)."""
    import io
    import textwrap
    import tokenize

    kept, line, doc = [], [], False
    for tok in tokenize.generate_tokens(io.StringIO(textwrap.dedent(text)).readline):
        if tok.type in (tokenize.COMMENT, tokenize.NL):
            continue
        if doc and tok.type == tokenize.STRING:  # the text of doc="...", however many pieces
            continue
        doc = tok.string == "=" and bool(line) and line[-1].string == "doc"
        line.append(tok)
        if tok.type not in (tokenize.NEWLINE, tokenize.ENDMARKER):
            continue
        words = [t for t in line if t.type not in (tokenize.INDENT, tokenize.DEDENT, tokenize.NEWLINE,
                                                   tokenize.ENDMARKER)]
        docstring = bool(words) and all(t.type == tokenize.STRING for t in words)
        top = len(words) > 1 and words[0].type == tokenize.NAME and words[0].start[1] == 0 and words[1].string == "="
        left_out = top and (words[0].string == "RECOMMENDED_LAW" or not definitions)
        kept += [t.string for t in line if t.type in (tokenize.INDENT, tokenize.DEDENT)
                 or not (docstring or left_out)]
        line = []
    return " ".join(kept)


def _key(code: str, *parts) -> str:
    """Content key of a computation: the code version, then DataFrames by their CSV text (without the columns
    empty in every row: a column that another loss table brings, such as base_lr, changes no key), anything else
    by repr."""
    h = hashlib.sha1(code.encode())
    for x in parts:
        h.update((x.dropna(axis=1, how="all").to_csv(index=False) if isinstance(x, pd.DataFrame) else repr(x)).encode())
    return h.hexdigest()[:24]


def _use_store(fits: Path | None, refit: bool = False, rekey_from: str | None = None) -> None:
    """Set FITS, REFIT and REKEY_FROM in a worker process (whatever the start method)."""
    global FITS, REFIT, REKEY_FROM
    FITS, REFIT, REKEY_FROM = fits, refit, rekey_from


REFIT = False  # fit afresh even where FITS holds the fit (and overwrite it there)
# a git commit whose stored results still hold after a change that moved code without changing a result (a
# diagnostic, a module split): a result missing under its key is taken from the key the code at that commit gave the
# same computation (renamed), and the first fit so taken in each process is refitted to check that it is the same
REKEY_FROM: str | None = None
_REKEY_CHECKED = False


def _rekeyed(path: Path, old_key) -> Path | None:
    """Under REKEY_FROM, move the result stored under ``old_key(REKEY_FROM)`` to ``path`` when ``path`` is
    missing; the path it was moved from, or None."""
    if REKEY_FROM is None or path.exists() or REFIT:
        return None
    old = path.with_name(path.name.rsplit("-", 1)[0] + f"-{old_key(REKEY_FROM)}.json")
    if not old.exists():
        return None
    os.replace(old, path)
    return old


def cached_fit(train: pd.DataFrame, law: str, dom: str, target: str = "both", bootstrap: int = 0,
               start: dl.Fit | None = None) -> dl.Fit:
    """``dl.fit(train, law, target, domain=dom, bootstrap=bootstrap, start=start)``, read from FITS when the same rows
    were fitted by the same code (a fit is deterministic: same rows, law, target, code -> same parameters); FITS =
    None always fits. ``start``: the stored fit without bootstrap of the same rows (so it is no part of the key).

    Every fit read or written is touched, so a complete run can prune the ones no longer used (:func:`prune_fits`).
    """
    global _REKEY_CHECKED
    one = () if target == "both" else (target,)  # a fit of both losses keeps the key it had before targets
    one += (f"bootstrap={bootstrap}",) if bootstrap else ()
    key = lambda at=None: _key(_code_version(None, at), train, law, dom, _law_signature(law), *one)  # noqa: E731
    path = None if FITS is None else FITS / f"fit-{key()}.json"
    old = None if path is None else _rekeyed(path, key)
    if old is not None and not _REKEY_CHECKED:
        _REKEY_CHECKED = True
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            again = dl.fit(train, law=law, target=target, domain=dom, warn=False, bootstrap=bootstrap, start=start)
        stored = dl.load_fit(path)
        # the same fit predicts the same losses; a parameter the rows barely pin (a coefficient at 5e5 with an
        # exponent beside it) may wander in its flat direction from one run of the search to the next
        rows = with_base_general(train)
        rows = rows[rows["tokens"] > 0]
        for t in again.targets:
            a, b = (predict_rows(f[t], rows) for f in (stored, again))
            if not np.allclose(a, b, rtol=1e-6, atol=0):
                os.replace(path, old)
                raise SystemExit(f"--rekey-from {REKEY_FROM}: the {dom} {t}-loss fit of {law} changed with the code "
                                 f"(its losses at the fitted rows moved by up to {np.max(np.abs(b / a - 1)):.2g}); "
                                 "the change is not a pure move: refit instead (--refit)")
    if path is not None and path.exists() and not REFIT:
        path.touch()
        return dl.load_fit(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        f = dl.fit(train, law=law, target=target, domain=dom, warn=False, bootstrap=bootstrap, start=start)
    if path is not None:
        f.save(path)  # atomic: a killed run never leaves half a fit to be read later
    return f


def prune_fits(since: float) -> list[Path]:
    """Delete the fits and sections in FITS that no computation has read or written since ``since`` (a
    time.time()): after a complete run, what is left is exactly what the document uses."""
    old = [] if FITS is None else [p for p in FITS.glob("*.json") if p.stat().st_mtime < since]
    for p in old:
        p.unlink()
    return old


def cached_lines(fn, *args) -> list:
    """``fn(*args)``, a section without figures (one of SECTION_SOURCES; any JSON), read from FITS when computed
    before on the same inputs by the same code; touched like a fit (:func:`prune_fits`). A section of BY_ONE_LAW
    is also keyed by the signature of its law (``args[2]``), without its prescreen: evaluate polishes its own
    per-fold prescreen of the law's grid."""
    law = (_law_signature(args[2], prescreen=False),) if fn.__name__ in BY_ONE_LAW else ()
    key = lambda at=None: _key(_code_version(fn, at), fn.__name__, *args, *law)  # noqa: E731
    path = None if FITS is None else FITS / f"{fn.__name__}-{key()}.json"
    if path is not None:
        _rekeyed(path, key)
    if path is not None and path.exists() and not REFIT:
        path.touch()
        return json.loads(path.read_text())
    lines = fn(*args)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, json.dumps(lines, indent=0))  # parallel jobs never read half a file
    return lines


def fit_candidates(train: pd.DataFrame, dom: str, candidates=None) -> list[tuple[object, dl.Fit]]:
    """(candidate, Fit) for every candidate (default :data:`CANDIDATES`): each law fitted once, pairs put
    together from those; a law that only a pair uses, for the loss it predicts there."""
    candidates = CANDIDATES if candidates is None else candidates
    need: dict[str, set] = {}
    for c in candidates:
        for t, n in (c.items() if isinstance(c, dict) else ((t, c) for t in ("domain", "general"))):
            need.setdefault(n, set()).add(t)
    single = {n: cached_fit(train, n, dom, "both" if len(ts) == 2 else next(iter(ts)))
              for n, ts in sorted(need.items())}
    return [(c, dl.Fit({t: single[c[t]][t] for t in ("domain", "general")}, domain=dom,
                       base=single[c["domain"]].base_losses) if isinstance(c, dict) else single[c]) for c in candidates]


def bootstrapped(train: pd.DataFrame, f: dl.Fit, dom: str, n: int | None = None) -> dl.Fit:
    """The pair fit ``f`` with ``n`` run-level bootstrap resamples of each loss's law, each refitted from f's
    parameters (``dl.fit(start=...)``: seconds, not a new global search), read from FITS like any fit. The point
    estimates stay f's own (the refit from them may drift ~1e-4 along flat directions)."""
    n = BOOTSTRAP if n is None else n
    fits = {}
    for t in f.targets:
        fits[t] = copy.copy(f[t])
        fits[t].bootstrap = cached_fit(train, f[t].law.name, dom, t, n, dl.Fit({t: f[t]}, domain=dom))[t].bootstrap
    return dl.Fit(fits, domain=dom, base=f.base_losses)


CELLS = "cells (ln G)"  # the law-free route of dl.cell_scaling, scored beside the laws
# ... and its variant: each size's loss relative to its own base model, ln(L / G), in ln N, times the target's G
CELLS_RISE = "cells (L/G in ln N)"
CELL_ROUTES = {CELLS: {}, CELLS_RISE: {"x": "model_size", "relative": True}}
CONSENSUS = "median of 4 routes"  # dl.usage1_consensus: the pair, the pooled crossings and both cells


def cells_fit(train: pd.DataFrame, **kw) -> dl.CellScaling | None:
    """:func:`dcpt_law.cell_scaling` of one domain's fitted sizes (``kw``: its x and relative; warnings off: the
    document reports the extrapolation distance); None where the sizes share too few cells."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return dl.cell_scaling(train, warn=False, **kw)
        except ValueError:
            return None


class CellsLoss:
    """One loss (``target``) of a :class:`dcpt_law.CellScaling` behind the ``predict`` of a law's fit, for
    :func:`predict_rows`: each row's cell at the row's G; NaN where the cells cannot answer (a token count or ratio
    the fitted sizes did not all log), so a metric over such rows reads NaN rather than dropping them."""

    def __init__(self, cells: dl.CellScaling, target: str):
        self.cells, self.target = cells, target

    def predict(self, model_size, tokens, ratio, warn: bool = False, base_general_loss=None) -> np.ndarray:
        D, r, G, N = (np.asarray(x, float) for x in (tokens, ratio, base_general_loss, model_size))
        out = np.full(len(D), np.nan)
        for d, g, n in set(zip(D, G, N)):
            at = (D == d) & (G == g) & (N == n)
            try:
                out[at] = self.cells.predict(d, r[at], base_general_loss=g, model_size=n, warn=False)[self.target]
            except ValueError:
                pass
        return out


# the mean signed error of a law at the held-out size where usage 1 asks it: > 0, it over-predicts the loss
SIGNED = "signed error % at D max (share > 0)"


def accuracy_row(law_fit, test: pd.DataFrame, at_dmax: np.ndarray, by_seed: pd.DataFrame, reps: pd.DataFrame,
                 t: str) -> tuple[dict, dict]:
    """One law's scores on loss ``t`` at the held-out size (its runs ``test``, the seed means ``by_seed``, each
    repeated seed ``reps``): (the accuracy table's columns, the mean signed error % per trained ratio)."""
    pred = predict_rows(law_fit, test)
    obs = test[LOSS_COLUMNS[t]].to_numpy(float)
    m = _metrics(pred, obs, 1e-3)
    share = _share(test, t) > 0  # without the runs that never saw this corpus (see seed_ceiling)
    m_pos = _metrics(pred[share], obs[share], 1e-3)
    m_means = {"r2": np.nan} if by_seed.empty else _metrics(
        predict_rows(law_fit, by_seed), by_seed[LOSS_COLUMNS[t]].to_numpy(float), 1e-3)
    signed = 100 * (pred / obs - 1)
    by_ratio = pd.Series(signed).groupby(test["domain_ratio"].to_numpy()).mean()
    where = at_dmax & share  # usage 1's token count, the runs that saw the corpus
    return ({"R2": m["r2"], "MAPE %": m["mape"], "Huber": m["huber"],
             "MAPE % at D max": _metrics(pred[at_dmax], obs[at_dmax], 1e-3)["mape"],
             SIGNED: float(np.mean(signed[where])) if where.any() else np.nan,
             "R2 (share > 0)": m_pos["r2"], "MAPE % (share > 0)": m_pos["mape"],
             "R2 (seed means)": m_means["r2"], **each_seed_scores(law_fit, reps, t)},
            {f"{r:.2f}": v for r, v in by_ratio.items()})


def usage_row(last: pd.DataFrame, ratio: float, L_g0: float, tolerance: float, by_seed: pd.DataFrame) -> dict:
    """Usage 1's answer ``ratio`` scored on the held-out runs at their largest token count (``last``) against
    ``L_g0``: the usage table's columns every route shares (regret on runs, isotonic fits and seed means, the
    general-loss rise, the observed crossing)."""
    # trained ratios include 0 and 1 and L_g at r_d = 0 is below L_g0: an error here is a broken table
    raw, iso = (dl.ratio_regret(last, ratio, L_g0, tolerance, smooth=s) for s in (False, True))
    return {"predicted r_d": ratio, "best trained r_d": raw["best_ratio"],
            "bracketing trained r_d": "{:.3g}-{:.3g}".format(*raw["bracket"]),
            "regret %": 100 * raw["regret"], "regret % (isotonic)": 100 * iso["regret"],
            "regret % (seed means)": seed_mean_regret(by_seed, float(last["tokens"].iloc[0]), ratio, tolerance),
            "L_g rise % at predicted": 100 * raw["general_rise"], "observed crossing r_d": iso["crossing"]}


def held_out_point(held: pd.DataFrame, dom: str) -> tuple[pd.DataFrame, np.ndarray, float, float, float]:
    """Domain ``dom`` at the held-out size (``held``): (its CPT runs, each with its base model's G as the anchored and
    scaled laws read it; a mask of those at their largest token count, where usage 1 asks; N; that D; L_g0, the base
    model's general loss, NaN without a base row: no usage 1)."""
    test = with_base_general(held[held["domain"] == dom])
    test = test[test["tokens"] > 0]
    base = held[(held["domain"] == dom) & (held["tokens"] == 0)]
    L_g0 = float(base["general_loss"].iloc[0]) if len(base) else np.nan
    if test.empty:
        return test, np.zeros(0, bool), np.nan, np.nan, L_g0
    D = float(test["tokens"].max())
    return test, (test["tokens"] == D).to_numpy(), float(test["model_size"].iloc[0]), D, L_g0


def heldout_section(small: pd.DataFrame, held: pd.DataFrame, figs: Path | None, title: str = "",
                    label: str = "", held_seeds: pd.DataFrame | None = None, candidates=None,
                    tolerance: float = TOLERANCE, tables: dict | None = None) -> list[str]:
    """Section 1 for one experiment: accuracy of every candidate at the held-out size, and usage 1 there.

    ``held``: seed 0 of the held-out size (accuracy and regret). ``held_seeds``: every seed of it; where a domain
    has repeats, the regret is also read off the seed means of the trained ratios (and their base models' L_g0).
    ``candidates``: the laws and pairs to fit (default :data:`CANDIDATES`). ``tolerance``: usage 1's allowed rise of
    the general loss over the base model's (a share). ``tables``: a dict that receives
    the accuracy rows ("accuracy") and usage-1 rows ("usage") as DataFrames.
    """
    lines = [f"## 1{title}", ""]
    if held.empty or small.empty:
        return lines + ["Not run yet (see the configs in small_runs/configs/).", ""]
    rows, recs, fig_lines, resid, ceil, ladder, emp = [], [], [], [], [], [], []
    for dom in sorted(set(held["domain"]) & set(complete_domains(small))):
        train = small[small["domain"] == dom]
        test, at_dmax, Nh, D, L_g0 = held_out_point(held, dom)
        if test.empty:  # only its base row so far
            continue
        ladder.append({"domain": dom, "warned": ladder_warned(train)})
        reps = repeated_runs(held_seeds, dom)
        by_seed = seed_means(reps)
        if not by_seed.empty:
            ceil += [{"domain": dom, "target": t, **seed_ceiling(test, by_seed, t)} for t in ("domain", "general")]
        last = test[at_dmax]
        fitted = fit_candidates(train, dom, candidates)
        fitted_n = ", ".join(dl.format_count(n) for n in sorted(train["model_size"].unique()))
        held_n = dl.format_count(Nh)
        plain = {c for c, _ in fitted if not isinstance(c, dict)}
        routes = {name: cells_fit(train, **kw) for name, kw in CELL_ROUTES.items()}
        cs = routes[CELLS]
        for candidate, f in fitted:
            law = f.law
            if candidate in FIGURE_LAWS and figs is not None:  # the recommended pair's beside the cells
                fig_lines.append(heldout_figure(f, train, held[held["domain"] == dom], figs, dom, law, label,
                                                cs if candidate == dict(dl.RECOMMENDED_LAW) else None))
            # a pair's accuracy rows are those of its laws, under their names; here for a law no plain candidate has
            for t in (("domain", "general") if not isinstance(candidate, dict) else
                      [t for t in ("domain", "general") if candidate[t] not in plain]):
                name = candidate[t] if isinstance(candidate, dict) else law
                row, by_ratio = accuracy_row(f[t], test, at_dmax, by_seed, reps, t)
                resid.append({"domain": dom, "law": name, "target": t, **by_ratio})
                rows.append({"domain": dom, "law": name, "target": t, "N fitted": fitted_n, "N held out": held_n, **row})
            if np.isnan(L_g0):  # no base row: no usage 1
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                boot = candidate == dict(dl.RECOMMENDED_LAW)  # its 90% interval, from resamples of the runs
                rec = dl.predict_ratio(Nh, D, fit=bootstrapped(train, f, dom) if boot else f, tolerance=tolerance,
                                       base_general_loss=L_g0, warn=False)
            lo, hi = rec.interval or (np.nan, np.nan)
            row = usage_row(last, rec.ratio, L_g0, tolerance, by_seed)
            recs.append({"domain": dom, "law": law, **row,
                         "binding": ("yes" if rec.constraint_active else "no") if rec.feasible else
                         f"infeasible: the law's least rise {100 * rec.least_increase:.2f}%",
                         "largest miss at fitted sizes": fitted_sizes_miss(f, train, D, tolerance),
                         "90% interval": f"{lo:.3g}-{hi:.3g}" if rec.interval else np.nan,
                         "interval covers crossing": (lo <= row["observed crossing r_d"] <= hi) if rec.interval
                         else np.nan})
        for route, c in routes.items():  # the law-free cells (dl.cell_scaling), scored like a law
            if c is None:
                continue
            for t in ("domain", "general"):
                row, by_ratio = accuracy_row(CellsLoss(c, t), test, at_dmax, by_seed, reps, t)
                resid.append({"domain": dom, "law": route, "target": t, **by_ratio})
                rows.append({"domain": dom, "law": route, "target": t, "N fitted": fitted_n, "N held out": held_n,
                             **row})
            if not np.isnan(L_g0):
                try:
                    ratio = c.predict_ratio(D, L_g0, tolerance, model_size=Nh, warn=False).ratio
                except ValueError:  # not even the smallest ratio keeps within the tolerance, by the cells
                    recs.append({"domain": dom, "law": route, "binding": "infeasible: no logged ratio within the "
                                 "tolerance, by these cells", "observed crossing r_d": usage_row(
                                     last, 0.0, L_g0, tolerance, by_seed)["observed crossing r_d"]})
                    continue
                recs.append({"domain": dom, "law": route, **usage_row(last, ratio, L_g0, tolerance, by_seed),
                             ("ln G spans past the fitted" if c.x == "base_general_loss" else
                              "ln N spans past the fitted"): c.spans_past(L_g0, Nh)})
        if not np.isnan(L_g0):
            emp.append(crossings_row(train, Nh, last, L_g0, tolerance, by_seed, pool_table=small))
            pair_fit = next((f for c, f in fitted if c == dict(dl.RECOMMENDED_LAW)), None)
            if pair_fit is not None:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    c = dl.usage1_consensus(pair_fit, small, Nh, D, tolerance, base_general_loss=L_g0, domain=dom,
                                            warn=False)
                recs.append({"domain": dom, "law": CONSENSUS, **usage_row(last, c.ratio, L_g0, tolerance, by_seed),
                             "routes spread": c.spread, "routes answered": int(c.answers["ratio"].notna().sum())})
    if not rows:
        return lines + ["No domain has both a complete small-size grid and held-out runs yet.", ""]
    if tables is not None:
        tables.update(accuracy=pd.DataFrame(rows), usage=pd.DataFrame(recs), ceiling=pd.DataFrame(ceil),
                      ladder=pd.DataFrame(ladder), crossings=pd.DataFrame(emp))
    base = pd.concat([small, held])
    G = base[base["tokens"] == 0].groupby("size_name")[["model_size", "general_loss"]].mean().sort_values("model_size")
    lines += ["Fit on the small sizes, predict every logged point of the held-out size. MAPE at D max: only the "
              "largest token count, where usage 1 asks the law (the first ~100K tokens of a new corpus are a "
              "transient that no power of D follows, where the loss of SMILES or ABC falls by half). Each seed: the same "
              "law scored on each repeated seed of the held-out size alone (its own runs and G, at the cells every "
              "seed ran), median over seeds and the worst seed's MAPE. The anchored laws take the "
              "size from G, the base model's general loss: " + ", ".join(
                  f"{name} ({dl.format_count(r.model_size)}) {r.general_loss:.3f}" for name, r in G.iterrows()) + ".", "",
              md(_drop_empty(pd.DataFrame(rows))), ""]
    if ceil:
        lines += [CEILING_TEXT, "", md(pd.DataFrame(ceil)), ""]
    lines += ["Where the errors sit: mean signed error (%, predicted / observed - 1) at the held-out size, per "
              "trained ratio r_d (over its token counts). The general loss at r_d near 1 is the forgetting regime.",
              "", md(_by_ratio_columns(pd.DataFrame(resid))), ""]
    lines += ["Loss against r_d at the held-out size: dashed the law fitted on the small sizes, stars the "
              "held-out runs (never fitted); dotted, in the recommended pair's figures, the cells of the small sizes "
              "(`dcpt_law.cell_scaling`) at the held-out G.", ""] + fig_lines + [""]
    if recs:
        lines += [f"Usage 1 at the held-out size (tolerance {tolerance:.0%}, L_g0 from its base model, D = its "
                  "largest token count). The observed losses at the predicted ratio are interpolated linearly between "
                  "the two trained ratios around it (extra runs sit 0.03 either side of the predictions of the pairs "
                  f"named in small_runs/configs/heldout_extra_{label or '<size>'}_*.toml). Regret = that L_d / the best "
                  "L_d among trained ratios that meet the constraint - 1; negative regret comes with a broken "
                  "constraint (see the general-loss rise). Regret (isotonic): the same on the isotonic fits of the "
                  "observed curves (L_d non-increasing, L_g non-decreasing in r_d), which pool the ~1% seed noise of "
                  "single runs instead of crediting the best lucky run (dcpt_law.ratio_regret). Regret (seed means): "
                  "the same on the means over seeds 0-2 (0-5 in the six-seed experiments) of the ratios that every seed "
                  "ran (at m: the 9 grid ratios, and with three seeds the three around the best one, "
                  "small_runs/configs/seeds_heldout_*.toml), against the mean L_g0 of the seeds' base models; blank "
                  "where the prediction falls outside them. Observed crossing r_d: where the isotonic general loss "
                  "reaches L_g0 + the tolerance, linear between trained ratios (the best feasible ratio where the "
                  f"domain loss falls with r_d). 90% interval: the recommended pair's, from {BOOTSTRAP} run-level "
                  "bootstrap resamples of the fitted sizes (`dcpt fit --bootstrap`).", "",
                  md(_drop_empty(pd.DataFrame(recs))), ""]
    if emp:
        lines += ["Usage 1 without a law (`dcpt_law.crossing_scaling`): the observed crossing of each fitted size at "
                  "the same D (seeds averaged), r* = a + b ln N by least squares, extrapolated to the held-out size "
                  "with its 90% prediction interval (t with 1 dof: three sizes), scored like the laws above.", "",
                  md(_drop_empty(pd.DataFrame(emp))), ""]
    # the short version first: medians over domains
    acc, u = summarise(pd.DataFrame(rows), pd.DataFrame(recs))
    short = [f"Summary over {len(set(r['domain'] for r in rows))} domains: accuracy at the held-out size (medians).", "",
             md(acc, index=True), ""]
    if recs:
        short += [f"Usage 1 over domains (the constraint allows a {tolerance:.0%} rise):", "",
                  md(_drop_empty(u), index=True), ""]
    return lines[:2] + short + lines[2:]


def crossings_row(train: pd.DataFrame, Nh: float, last: pd.DataFrame, L_g0: float, tolerance: float,
                  by_seed: pd.DataFrame, pool_table: pd.DataFrame | None = None) -> dict:
    """Usage 1 at the held-out size ``Nh`` by the observed crossings of the fitted sizes (``train``, one domain,
    seeds averaged), extrapolated in log N (:func:`dcpt_law.crossing_scaling`, no law), scored like a law's
    recommendation on ``last`` (the held-out runs of that domain at their largest token count) against ``L_g0``.
    ``pool_table``: the fitted sizes of every domain; the same, keys suffixed " (pooled)", for their joint fit
    (``pool=True``: one slope, an intercept per domain)."""
    dom, D = last["domain"].iloc[0], float(last["tokens"].iloc[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # censored crossings are in the table: the fitted sizes' rows
        try:
            cs = dl.crossing_scaling(train, tokens=D, tolerance=tolerance)
        except ValueError as exc:
            return {"domain": dom, "note": str(exc)}
        fits = {"": cs}
        if pool_table is not None:
            fits[" (pooled)"] = dl.crossing_scaling(pool_table, tokens=D, tolerance=tolerance, domain=dom, pool=True)
    row = {"domain": dom, "fitted crossings": ", ".join(f"{c:.3f}" for c in cs.crossings["crossing"]),
           "residual sd": cs.residual_sd}
    for suffix, c in fits.items():
        p = c.predict(Nh, warn=False)
        raw, iso = (dl.ratio_regret(last, p.ratio, L_g0, tolerance, smooth=s) for s in (False, True))
        lo, hi = p.interval
        row["observed crossing r_d"] = iso["crossing"]  # the held-out runs', whatever the prediction
        row.update({f"{k}{suffix}": v for k, v in {
            "slope per ln N": c.slope, "predicted r_d": p.ratio,
            "90% PI": f"{lo:.3g}-{hi:.3g}", "PI width": hi - lo, "PI covers crossing": lo <= iso["crossing"] <= hi,
            "regret %": 100 * raw["regret"], "regret % (isotonic)": 100 * iso["regret"],
            "regret % (seed means)": seed_mean_regret(by_seed, D, p.ratio, tolerance),
            "L_g rise % at predicted": 100 * raw["general_rise"]}.items()})
    return row


def fitted_sizes_miss(f: dl.Fit, train: pd.DataFrame, D: float, tolerance: float) -> float:
    """The signed largest miss of ``f``'s usage-1 answer at the fitted sizes of ``train`` against their observed
    crossings at D (:func:`dcpt_law.law_misses`); NaN where the table cannot give one."""
    from dcpt_law.crossings import largest_miss

    try:
        return largest_miss(dl.law_misses(f, train, tokens=D, tolerance=tolerance))
    except ValueError:
        return np.nan


def ladder_warned(train: pd.DataFrame, min_share: float = 0.9) -> bool:
    """Whether a fit of the recommended (G-based) laws to ``train`` warns about the top step of its ladder: the
    largest fitted size (by base-model quality) lowers the loss below the next one at fewer than ``min_share`` of
    their shared points, in either loss (dcpt_law.diagnostics.check_ladder, from the rows, not a stored fit)."""
    from dcpt_law.diagnostics import ladder_steps
    from dcpt_law.table import fit_rows, law_inputs

    rows = fit_rows(train)
    steps = (ladder_steps(law_inputs(rows, t), by_base_loss=True)["better_share"] for t in ("domain", "general"))
    return any(not s.empty and s.iloc[-1] < min_share for s in steps)


def _abs_median(x: pd.Series) -> float:
    """Median of |x| over its values (a median |regret|, a median |error|); NaN where it has none."""
    return float(np.nanmedian(np.abs(x))) if x.notna().any() else np.nan


def summarise(acc_rows: pd.DataFrame, recs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Medians over domains of one experiment: (accuracy by law, columns "<metric> <target> (median)"; usage 1 by
    law: median / max |regret| on runs, isotonic fits and seed means, and the largest general-loss rise).
    The headline reads the recommended pair's rows from these."""
    cols = [c for c in ("R2", "MAPE %", "MAPE % at D max", "R2 (share > 0)", "MAPE % (share > 0)", "R2 (seed means)",
                        "R2 (each seed)", "MAPE % (each seed)", "MAPE % (worst seed)")
            if c in acc_rows and acc_rows[c].notna().any()]
    acc = acc_rows.groupby(["law", "target"], sort=False)[cols].median()
    acc = acc.unstack("target")
    acc.columns = [f"{m} {t} (median)" for m, t in acc.columns]
    if recs.empty:
        return acc, pd.DataFrame()
    absmed = _abs_median
    absmax = lambda x: float(np.max(np.abs(x)))  # noqa: E731
    u = recs.groupby("law", sort=False).agg(
        **{"median abs regret %": ("regret %", absmed), "max abs regret %": ("regret %", absmax),
           "median abs regret % (isotonic)": ("regret % (isotonic)", absmed),
           "max abs regret % (isotonic)": ("regret % (isotonic)", absmax),
           "median abs regret % (seed means)": ("regret % (seed means)", absmed),
           "max L_g rise %": ("L_g rise % at predicted", "max")})
    return acc, u


def heldout_job(*args) -> tuple[list[str], dict]:
    """:func:`heldout_section` for a process pool: its lines and its tables (for the headline)."""
    tables: dict = {}
    return heldout_section(*args, tables=tables), tables


def headline(results: dict[str, tuple[str, dict]], data: pd.DataFrame) -> list[str]:
    """The issue-6 goals against the recommended pair's medians over domains, one row per experiment, with the
    seed noise of the held-out size next to them. ``results``: label -> (title, tables of heldout_section)."""
    pair = dl.RECOMMENDED_LAW
    name = dl.pair_name({t: pair[t] for t in ("domain", "general")})
    rows, noise_rows = [], []
    for label, (title, t) in results.items():
        if not t:
            continue
        acc, use = summarise(t["accuracy"], t["usage"])
        pick = lambda m, tg: acc.loc[pair[tg], f"{m} {tg} (median)"]  # noqa: E731
        if t.get("ceiling") is not None and not t["ceiling"].empty:
            noise_rows.append(noise_row(label, pick, t["ceiling"]))
        u = use.loc[name] if name in use.index else pd.Series(dtype=float)
        warned = t["ladder"]["warned"] if "ladder" in t else None
        covers = t["usage"].loc[t["usage"]["law"] == name, "interval covers crossing"].dropna() \
            if "interval covers crossing" in t["usage"] else pd.Series(dtype=bool)
        rows.append({"experiment": f"{label}: {title}", "domains": t["accuracy"]["domain"].nunique(),
                     "top step warned": np.nan if warned is None else f"{int(warned.sum())} of {len(warned)}",
                     "R2 domain": pick("R2", "domain"), "R2 general": pick("R2", "general"),
                     "MAPE % domain": pick("MAPE %", "domain"), "MAPE % general": pick("MAPE %", "general"),
                     **{k: u.get(c, np.nan) for k, c in (
                         ("median abs regret %", "median abs regret %"), ("(isotonic)", "median abs regret % (isotonic)"),
                         ("(seed means)", "median abs regret % (seed means)"), ("max L_g rise %", "max L_g rise %"))},
                     "90% interval covers the crossing": f"{int(covers.sum())} of {len(covers)}" if len(covers) else np.nan})
    if not rows:
        return []
    goal = {"experiment": "goal (issue 6)", "domains": ">= 3", "top step warned": "", "R2 domain": ">= 0.98", "R2 general": ">= 0.98",
            "MAPE % domain": "<= 1", "MAPE % general": "<= 1", "median abs regret %": "<= 0.3", "(isotonic)": "<= 0.3",
            "(seed means)": "<= 0.3", "max L_g rise %": "<= 3", "90% interval covers the crossing": ""}
    lines = ["## Headline: the recommended laws against the goals", "",
             f"The recommended pair ({name}), fitted on the three small sizes of each experiment and scored at the "
             "held-out size (medians over domains; the sections below give every law, domain and ratio). Regret of "
             "usage 1 on single runs, on their isotonic fits and on seed means (see 1). Top step warned: the domains "
             "whose fit warns (`dcpt fit` says so) that its largest size is not clearly better than the next (lower "
             "loss at fewer than 90% of their shared points, sizes ordered by their base models): the step a "
             "prediction for a larger model extends. 90% interval covers the crossing: in how many domains the "
             f"interval of usage 1's ratio ({BOOTSTRAP} run-level bootstrap resamples of the fitted sizes, as "
             "`dcpt fit --bootstrap` gives) holds the observed crossing, the r_d at which the held-out size's "
             "isotonic general loss reaches the tolerance (the best feasible ratio between trained ones). The "
             "resamples carry the fitted runs' noise, not the error of extrapolating the law to a larger size.", "",
             md(pd.concat([pd.DataFrame([goal]), body := _drop_empty(pd.DataFrame(rows))])[body.columns]), ""]
    lines += goals_headline(results)
    lines += bias_headline(results)
    lines += routes_headline(results)
    lines += cells_headline(results)
    lines += consensus_headline(results)
    lines += binding_headline({label: t["usage"] for label, (_, t) in results.items() if t and not t["usage"].empty})
    lines += noise_headline(noise_rows)
    noise = held_out_seed_noise(data)
    if not noise.empty:
        lines += ["Seed noise at the held-out size, where runs were repeated (seeds 0-5 at the 9 grid ratios, 0-2 at "
                  "the extra ratios; each its own base model and data order): coefficient of variation of the loss "
                  "at the largest token count, per domain over "
                  "its repeated ratios. Single-run errors and regrets below these are noise.", "",
                  md(noise), ""]
    return lines


# issue 6's goals at the held-out size: (column of summarise's tables, target, sense, threshold)
GOALS = (("R2", "domain", ">=", 0.98), ("R2", "general", ">=", 0.98),
         ("R2 (seed means)", "domain", ">=", 0.98), ("R2 (seed means)", "general", ">=", 0.98),
         ("MAPE %", "domain", "<=", 1.0), ("MAPE %", "general", "<=", 1.0), ("median abs regret %", None, "<=", 0.3),
         ("median abs regret % (seed means)", None, "<=", 0.3))
# each metric's seed-noise floor: the matching column of seed_ceiling
FLOORS = {"R2": "R2 ceiling", "R2 (seed means)": "R2 ceiling (seed means)", "MAPE %": "noise MAPE %"}


def goal_rows(label: str, t: dict) -> list[dict]:
    """One experiment's standing on each of :data:`GOALS`: the recommended pair's median over domains, the best
    median of every predictor the section scored (laws, pairs, the cells, usage 1's routes; picked on the held-out
    runs themselves), and the seed-noise floor where the held-out size was repeated (the R2 ceiling, the noise
    MAPE: what a law that knew every run's expected loss would score on these single runs, or on the seed means
    for the goals scored on them)."""
    pair = dl.RECOMMENDED_LAW
    acc, use = summarise(t["accuracy"], t["usage"])
    ceil = t.get("ceiling")
    floor = None if ceil is None or ceil.empty else ceil.groupby("target").median(numeric_only=True)
    out = []
    for metric, target, sense, threshold in GOALS:
        if target is None:  # usage 1: every route's regret, the pair under its pair name
            own = dl.pair_name({k: pair[k] for k in ("domain", "general")})
            scores, low = (use[metric].dropna() if metric in use else pd.Series(dtype=float)), np.nan
        else:
            own, col = pair[target], f"{metric} {target} (median)"
            scores = acc[col].dropna() if col in acc else pd.Series(dtype=float)
            low = np.nan if floor is None or target not in floor.index else \
                floor.loc[target].get(FLOORS[metric], np.nan)
        if scores.empty:
            continue
        best = scores.idxmax() if sense == ">=" else scores.idxmin()
        meets = (lambda v: v >= threshold) if sense == ">=" else (lambda v: v <= threshold)
        out.append({"goal": " ".join(x for x in (metric.removeprefix("median abs "), target, sense, f"{threshold:g}") if x),
                    "experiment": label, "pair": scores.get(own, np.nan), "pair meets": meets(scores.get(own, np.nan)),
                    "best": scores[best], "best by": best, "best meets": meets(scores[best]),
                    "floor": low, "floor meets": meets(low) if np.isfinite(low) else np.nan})
    return out


def goals_headline(results: dict[str, tuple[str, dict]]) -> list[str]:
    """Where each goal of issue 6 stands over the experiments: met by the recommended pair, by the best of the
    package's predictors in hindsight, and whether the seed noise of the held-out size lets any law meet it."""
    per = pd.DataFrame([r for label, (_, t) in results.items() if t for r in goal_rows(label, t)])
    if per.empty:
        return []
    rows = []
    for goal, g in per.groupby("goal", sort=False):
        fl = g[g["floor"].notna()]
        rows.append({"goal": goal, "recommended pair (median over experiments)": g["pair"].median(),
                     "pair meets it in": f"{int(g['pair meets'].sum())} of {len(g)}",
                     "best predictor (median over experiments)": g["best"].median(),
                     "best meets it in": f"{int(g['best meets'].sum())} of {len(g)}",
                     "most often best": g["best by"].value_counts().index[0],
                     "seed-noise floor (median)": fl["floor"].median() if len(fl) else np.nan,
                     "floor misses it in": f"{int((~fl['floor meets'].astype(bool)).sum())} of {len(fl)}" if len(fl)
                     else ""})
    return ["Where each goal stands over the experiments above. Recommended pair: its median over domains, in how "
            "many experiments it meets the goal. Best predictor: the best median over domains of everything the "
            "experiment's section scored (every law and pair it fits, the cells, and for usage 1 the crossings and "
            "the median of 4 routes), picked on the held-out runs themselves: an upper bound on what choosing among "
            "them could give, not a held-out choice. Seed-noise floor: in the experiments whose held-out size was "
            "repeated over seeds, what a law that knew the expected loss of every run exactly would score on the "
            "single runs scored here (the R2 ceiling and the noise MAPE of section 1's ceiling tables, medians over "
            "domains), or on the means over seeds for R2 (seed means), where each cell's noise variance is divided by "
            "its seeds; where it misses the goal, no law can meet it on those runs. R2 (seed means) scores the law on "
            "the cells every seed ran: where its floor meets the goal and the law does not, the gap is law.", "",
            md(pd.DataFrame(rows)), ""]


def bias_headline(results: dict[str, tuple[str, dict]]) -> list[str]:
    """Which way the laws miss a larger model: each predictor's mean signed error at the held-out size at its
    largest token count (runs that saw the loss's corpus), pooled over every (experiment, domain) case: how often
    it over-predicts the loss, the median and the quartiles. A one-sided miss is a bias of the size trend, which
    no resampling of the fitted runs shows."""
    # each predictor's law (or route) for each loss, as the accuracy tables name it
    which = {"recommended pair": dl.RECOMMENDED_LAW, "D-CPT (the paper's law)": {"domain": "dcpt", "general": "dcpt"},
             CELLS: {"domain": CELLS, "general": CELLS}}
    parts = [t["accuracy"] for _, t in results.values() if t and SIGNED in t.get("accuracy", ())]
    if not parts:
        return []
    cases = pd.concat(parts, ignore_index=True)
    rows = []
    for name, laws in which.items():
        for target in ("domain", "general"):
            v = cases.loc[(cases["law"] == laws[target]) & (cases["target"] == target), SIGNED].dropna()
            if v.empty:
                continue
            q1, med, q3 = np.percentile(v, [25, 50, 75])
            rows.append({"predictor": name, "loss": target, "cases": len(v),
                         "over-predicts in": f"{int((v > 0).sum())} of {len(v)}", "median %": med,
                         "quartiles %": f"{q1:.2g} to {q3:.2g}", "largest miss %": float(v.iloc[np.argmax(np.abs(v))])})
    name = dl.pair_name(dl.RECOMMENDED_LAW)
    uses = [t["usage"] for _, t in results.values() if t and isinstance(t.get("usage"), pd.DataFrame)]
    use = pd.concat(uses, ignore_index=True) if uses else pd.DataFrame()
    lean = []
    if {"law", "predicted r_d", "observed crossing r_d"} <= set(use.columns):
        u = use[use["law"] == name]
        e = (u["predicted r_d"] - u["observed crossing r_d"]).dropna()
        if len(e):
            lean = [f"Usage 1 by the recommended pair: its answer lies below the held-out size's observed crossing "
                    f"in {int((e < 0).sum())} of {len(e)} cases (median signed r_d error {np.median(e):+.3f}), the "
                    "side that keeps the constraint.", ""]
    return ["Which way the predictions miss: the mean signed error (%, predicted / observed - 1) at the held-out "
            "size, at its largest token count (where usage 1 asks; runs that saw the loss's corpus), pooled over "
            "every experiment and domain above. Over-predicting the loss means the larger model gained more than "
            "the fitted sizes' trend says. A miss that leans one way is a bias of the size trend, not noise: "
            "neither the bootstrap of the fitted runs nor more seeds of them shrink it (m4dF2, m4dB22).", "",
            md(pd.DataFrame(rows)), ""] + lean


def routes_headline(results: dict[str, tuple[str, dict]]) -> list[str]:
    """Usage 1 by the recommended pair against the observed crossings of the fitted sizes extrapolated in log N
    (no law): per experiment, medians over domains of the distance to the held-out size's observed crossing and
    of |regret|, and how often each one's 90% interval holds the crossing."""
    name = dl.pair_name(dl.RECOMMENDED_LAW)
    rows = []
    for label, (_, t) in results.items():
        e = t.get("crossings") if t else None
        if e is None or e.empty or "predicted r_d" not in e:
            continue
        e = e.dropna(subset=["predicted r_d"])
        u = t["usage"][t["usage"]["law"] == name].set_index("domain").loc[e["domain"]]
        cov = u["interval covers crossing"].dropna()
        routes = [("pair", u, ""), ("crossings", e, ""), ("crossings pooled", e, " (pooled)")]
        routes = [r for r in routes if f"predicted r_d{r[2]}" in r[1]]
        rows.append({"experiment": label, "domains": len(e),
                     **{f"r_d error {who}": _abs_median(x[f"predicted r_d{sfx}"] - x["observed crossing r_d"])
                        for who, x, sfx in routes},
                     **{f"regret %{kind} {who}": _abs_median(x[f"regret %{kind}{sfx}"].astype(float))
                        for kind in ("", " (isotonic)", " (seed means)") for who, x, sfx in routes},
                     "interval covers: pair": f"{int(cov.sum())} of {len(cov)}",
                     **{f"{who}": f"{int(e[f'PI covers crossing{sfx}'].sum())} of {len(e)}" for who, _, sfx in routes[1:]},
                     **{f"PI width {who}": float(e[f"PI width{sfx}"].median()) for who, _, sfx in routes[1:]}})
    if not rows:
        return []
    return ["Usage 1 without a law: the observed crossings of the three fitted sizes (the best feasible trained "
            "ratio of each, read off its runs at the same D), r* = a + b ln N extrapolated to the held-out size "
            "(`dcpt_law.crossing_scaling`, Chinchilla's approaches 1-2 for the mixture), against the recommended "
            "pair. Medians over domains of the r_d error |predicted - observed crossing| and of |regret| (%); in how many "
            "domains each 90% interval holds the crossing (the pair's from its bootstrap, the crossings' a t "
            "prediction interval with 1 dof) and the crossings' median interval width. Crossings pooled: the "
            "experiment's domains fitted together, one slope in ln N and an intercept each (`crossing_scaling(..., "
            "pool=True)`: 12 crossings, 7 dof).", "",
            md(_drop_empty(pd.DataFrame(rows))), ""] + misses_headline(results)


def cells_headline(results: dict[str, tuple[str, dict]]) -> list[str]:
    """The law-free cells (:data:`CELLS`, :func:`dcpt_law.cell_scaling`) against the recommended pair: per
    experiment, medians over domains of both losses' R2 and MAPE at the held-out size, and of usage 1's r_d error
    and |regret|; beside them the pooled crossings' r_d error, and how far the held-out G lies past the fitted ones."""
    from dcpt_law.cells import FAR_SPANS

    name = dl.pair_name(dl.RECOMMENDED_LAW)
    pair = dl.RECOMMENDED_LAW
    rows, cases = [], []
    for label, (_, t) in results.items():
        if not t or not (t["accuracy"]["law"] == CELLS).any():
            continue
        acc, use = summarise(t["accuracy"], t["usage"])
        row = {"experiment": label}
        for m, tg in (("R2", "domain"), ("R2", "general"), ("MAPE %", "domain"), ("MAPE %", "general")):
            row.update({f"{m} {tg} {who}": acc.loc[law, f"{m} {tg} (median)"]
                        for who, law in (("pair", pair[tg]), ("cells", CELLS))})
        u = t["usage"]
        both = u[u["law"] == name].merge(u[u["law"] == CELLS], on="domain", suffixes=("", " cells"))
        e = t.get("crossings")
        if e is not None and "predicted r_d (pooled)" in e:
            both = both.merge(e[["domain", "predicted r_d (pooled)"]], on="domain", how="left")
        err = lambda col: (both[col] - both["observed crossing r_d"]).abs()  # noqa: E731
        rise = u[u["law"] == CELLS_RISE].rename(columns=lambda c: c if c == "domain" else f"{c} rise")
        both = both.merge(rise, on="domain", how="left")
        if "predicted r_d rise" not in both:
            both["predicted r_d rise"] = np.nan
        row.update({"r_d error pair": err("predicted r_d").median(), "r_d error cells": err("predicted r_d cells").median(),
                    "r_d error cells L/G in ln N": err("predicted r_d rise").median()})
        if "predicted r_d (pooled)" in both:
            row["r_d error crossings pooled"] = err("predicted r_d (pooled)").median()
        for kind in ("", " (isotonic)", " (seed means)"):
            row.update({f"regret %{kind} {who}": _abs_median(both[f"regret %{kind}{sfx}"].astype(float))
                        for who, sfx in (("pair", ""), ("cells", " cells"), ("cells L/G in ln N", " rise"))
                        if f"regret %{kind}{sfx}" in both})
        row["ln G spans past the fitted"] = both["ln G spans past the fitted cells"].median()
        row["cells L/G in ln N: no answer"] = int(both["predicted r_d rise"].isna().sum())
        rows.append(row)
        cases.append(both.assign(pair_err=err("predicted r_d"), cells_err=err("predicted r_d cells"),
                                 rise_err=err("predicted r_d rise")))
    if not rows:
        return []
    c = pd.concat(cases)
    return ["The cells (`dcpt_law.cell_scaling`, no law): in every (D, r) cell the fitted sizes logged, ln L = a + b "
            "ln G by least squares over the sizes (G: the base model's general loss, seeds averaged), read off at "
            "the held-out base model's G, between logged ratios a monotone cubic in ln(s + 0.01), s the share "
            "of the loss's corpus; usage 1 as the crossing of that curve (isotonic in r_d) at the tolerance. Against the recommended pair, medians over domains (scored on the same runs "
            "as the pair; section 1 of each experiment gives every domain). ln G spans past the fitted: how far the "
            "held-out G lies below the best fitted size's, in units of the fitted sizes' span of ln G (the cells "
            f"warn past {FAR_SPANS:g}). Over all {len(c)} cases the median r_d error is "
            f"{c['cells_err'].median():.3f} for the cells and {c['pair_err'].median():.3f} for the pair; the cells "
            f"are closer in {int((c['cells_err'] < c['pair_err']).sum())} of {len(c)}.", "",
            "Cells L/G in ln N (`cell_scaling(x=\"model_size\", relative=True)`): in each cell the loss relative to "
            "each fitted size's own base model, ln(L / G), by least squares in ln N, read off at the held-out N and "
            "multiplied by its G. Usage 1 then reads only the extrapolated rise of the general loss over the base "
            "model, in model size, with the base model's luck divided out. Where it finds no logged ratio within "
            f"the tolerance it gives no answer (no answer: {int(c['rise_err'].isna().sum())} of {len(c)} cases). "
            f"Over the {int(c['rise_err'].notna().sum())} it answers, its median r_d error is "
            f"{c['rise_err'].median():.3f} (the cells in ln G {c.loc[c['rise_err'].notna(), 'cells_err'].median():.3f}, "
            f"the pair {c.loc[c['rise_err'].notna(), 'pair_err'].median():.3f}), closer than the cells in ln G in "
            f"{int((c['rise_err'] < c['cells_err']).sum())} and than the pair in "
            f"{int((c['rise_err'] < c['pair_err']).sum())}. Its losses: section 1 of each experiment.", "",
            md(_drop_empty(pd.DataFrame(rows))), ""]


def consensus_headline(results: dict[str, tuple[str, dict]]) -> list[str]:
    """Usage 1 by the median of the four routes (:data:`CONSENSUS`, :func:`dcpt_law.usage1_consensus`): per
    experiment its r_d error and |regret| beside each route's, the routes' spread; pooled over every case, split
    at :data:`dcpt_law.consensus.AGREE`."""
    from dcpt_law.consensus import AGREE

    name = dl.pair_name(dl.RECOMMENDED_LAW)
    rows, cases = [], []
    for label, (_, t) in results.items():
        if not t or t["usage"].empty or not (t["usage"]["law"] == CONSENSUS).any():
            continue
        u = t["usage"]
        pred = u.pivot_table(index="domain", columns="law", values="predicted r_d", aggfunc="first")
        c = u[u["law"] == CONSENSUS].set_index("domain")
        pooled = t["crossings"].set_index("domain")["predicted r_d (pooled)"]
        err = pd.DataFrame({who: (col - c["observed crossing r_d"]).abs() for who, col in (
            ("pair", pred.get(name)), ("crossings pooled", pooled), ("cells", pred.get(CELLS)),
            ("cells L/G in ln N", pred.get(CELLS_RISE)), ("median", c["predicted r_d"])) if col is not None})
        row = {"experiment": label, **{f"r_d error {k}": v.median() for k, v in err.items()},
               "routes spread": c["routes spread"].median()}
        for kind in ("", " (isotonic)", " (seed means)"):
            row[f"regret %{kind} median"] = _abs_median(c[f"regret %{kind}"].astype(float))
        rows.append(row)
        cases.append(err.assign(spread=c["routes spread"], held_out=label in EXPERIMENT_DOMAINS))
    if not rows:
        return []
    a = pd.concat(cases)

    def pooled(a: pd.DataFrame) -> str:
        ok = a["spread"] <= AGREE
        text = (f"the median's r_d error is {a['median'].median():.3f} (pair {a['pair'].median():.3f}, crossings "
                f"pooled {a['crossings pooled'].median():.3f}, cells {a['cells'].median():.3f})")
        for name, part in (("at most", a[ok]), ("beyond", a[~ok])):
            if len(part):
                text += (f"; where the spread is {name} {AGREE:g} ({len(part)} cases) {part['median'].median():.3f} "
                         f"(largest {part['median'].max():.3f})")
        return text

    chosen, held = a[~a["held_out"]], a[a["held_out"]]
    text = (f"Over the {len(chosen)} cases of the domains the package was chosen on, {pooled(chosen)}. The routes "
            "and the threshold were chosen on these runs: that is not a held-out test of the combination.")
    if len(held):
        text += (f" On the {len(held)} cases of the domains no choice saw ({', '.join(HELD_OUT_DOMAINS)}; "
                 f"experiments {', '.join(EXPERIMENT_DOMAINS)}), {pooled(held)}: the held-out test.")
    return ["Usage 1 by the median of four routes (`dcpt_law.usage1_consensus`: the recommended pair, the pooled "
            "crossings, the cells in ln G and the cells L/G in ln N, each as above; routes that give no answer left "
            "out) and the routes' spread (largest minus smallest answer), medians over domains. " + text, "",
            md(_drop_empty(pd.DataFrame(rows))), ""]


def misses_headline(results: dict[str, tuple[str, dict]]) -> list[str]:
    """Whether the recommended pair's in-sample check (:func:`dcpt_law.law_misses`: its usage-1 answer at the
    fitted sizes against their observed crossings) tells when to distrust its answer at the held-out size: the
    pair's and the crossings' r_d error there, pooled over every (experiment, domain), split by the largest
    in-sample miss at :data:`dcpt_law.crossings.MISS`, the threshold of its warning."""
    from dcpt_law.crossings import MISS

    name = dl.pair_name(dl.RECOMMENDED_LAW)
    both = []
    for _, t in results.values():
        e = t.get("crossings") if t else None
        if e is None or e.empty or "predicted r_d" not in e:
            continue
        u = t["usage"][t["usage"]["law"] == name]
        if "largest miss at fitted sizes" not in u:
            continue
        both.append(u.merge(e.dropna(subset=["predicted r_d"]), on="domain", suffixes=("", " crossings")))
    if not both:
        return []
    b = pd.concat(both)
    b = b[b["largest miss at fitted sizes"].notna()]
    err = (b["predicted r_d"] - b["observed crossing r_d"]).abs()
    err_x = (b["predicted r_d crossings"] - b["observed crossing r_d"]).abs()  # one crossing: the held-out runs'
    err_p = (b["predicted r_d (pooled)"] - b["observed crossing r_d"]).abs() if "predicted r_d (pooled)" in b else None
    rows = []
    for split, sel in ((f"over {MISS} (warns)", b["largest miss at fitted sizes"].abs() > MISS),
                       (f"{MISS} or less", b["largest miss at fitted sizes"].abs() <= MISS),
                       ("all", b["largest miss at fitted sizes"].notna())):
        rows.append({"pair's largest miss at the fitted sizes": split, "cases": int(sel.sum()),
                     "r_d error pair (median)": float(err[sel].median()) if sel.any() else np.nan,
                     "r_d error crossings (median)": float(err_x[sel].median()) if sel.any() else np.nan,
                     **({"r_d error crossings pooled (median)": float(err_p[sel].median()) if sel.any() else np.nan}
                        if err_p is not None else {}),
                     "crossings closer": f"{int((err_x[sel] < err[sel]).sum())} of {int(sel.sum())}",
                     f"pair off by over {MISS}": f"{int((err[sel] > MISS).sum())} of {int(sel.sum())}"})
    return ["The law's in-sample check (`dcpt_law.law_misses`; `dcpt crossings --fit`, `dcpt report` and "
            "`dcpt quickstart` print it and warn past the threshold): the recommended pair's usage-1 answer at each "
            "fitted size against that size's observed crossing, at the same D. Pooled over every experiment and "
            "domain above, split by its largest miss, and all together: the r_d error of each route at the held-out size, "
            "and how often the pair's is itself over the threshold (how many of its large errors the check flags).",
            "",
            md(pd.DataFrame(rows)), ""]


def binding_headline(usage: dict[str, pd.DataFrame]) -> list[str]:
    """Where usage 1's constraint binds, the general-loss law alone sets the recommended ratio: how often it binds
    for the recommended pair, and how often a pair with another domain law but the same general law (MEAN_PAIR)
    gets the same regret."""
    name, other = dl.pair_name(dl.RECOMMENDED_LAW), dl.pair_name(MEAN_PAIR)
    if MEAN_PAIR["general"] != dl.RECOMMENDED_LAW["general"] or not usage:
        return []
    rec = pd.concat([u[u["law"] == name].assign(exp=k) for k, u in usage.items()])
    alt = pd.concat([u[u["law"] == other].assign(exp=k) for k, u in usage.items()])
    both = rec.merge(alt, on=["exp", "domain"], suffixes=("", " other"))
    if rec.empty or both.empty:
        return []
    same = np.isclose(both["regret %"], both["regret % other"], rtol=0, atol=1e-9)
    n_inf = int(rec["binding"].str.startswith("infeasible").sum())
    infeasible = (f" (in {n_inf} more, by the law no ratio meets it: it then answers the r_d of the least rise, and "
                  "dcpt_law.ratio_frontier gives the r_d of each larger tolerance)") if n_inf else ""
    return ["Usage 1 is the general-loss law's where the constraint binds: the recommended r_d is "
            "then where that law reaches L_g0 + the tolerance, whatever the domain law (as long as it falls with "
            f"r_d). It binds for the recommended pair in {(rec['binding'] == 'yes').sum()} of {len(rec)} (experiment, "
            f"domain) cases above{infeasible}; {other}, the same general law beside another domain law, has the same regret in "
            f"{int(same.sum())} of {len(both)}. The domain law's accuracy matters for the predicted losses, for usage 2 "
            "and where the constraint is slack.", ""]


def noise_row(label: str, pick, ceiling: pd.DataFrame) -> dict:
    """One experiment's row of the noise table: the recommended pair's medians over domains (``pick(metric,
    target)``, from the headline) next to the medians of its seed-to-seed ceiling (heldout_section's "ceiling")."""
    c = ceiling.groupby("target").median(numeric_only=True)
    return {"experiment": label, **{k: v for tg in ("domain", "general") for k, v in (
        (f"R2 {tg}", pick("R2", tg)), (f"(seed means) {tg}", pick("R2 (seed means)", tg)),
        (f"(ceiling) {tg}", c.loc[tg, "R2 ceiling"]), (f"(each seed) {tg}", pick("R2 (each seed)", tg)))},
        "MAPE % domain": pick("MAPE %", "domain"), "(each seed)": pick("MAPE % (each seed)", "domain"),
        "(worst seed)": pick("MAPE % (worst seed)", "domain"),
        "R2 general, r_d < 1": pick("R2 (share > 0)", "general"),
        "(ceiling), r_d < 1": c.loc["general", "R2 ceiling (share > 0)"],
        "MAPE % general, r_d < 1": pick("MAPE % (share > 0)", "general"),
        "(noise)": c.loc["general", "noise MAPE % (share > 0)"]}


def noise_headline(rows: list[dict]) -> list[str]:
    """The recommended pair's accuracy next to the seed-to-seed ceiling, for the experiments whose held-out size
    was repeated over seeds (rows of :func:`noise_row`): what of the gap to the goals is law, what is noise."""
    if not rows:
        return []
    return ["Against the seed noise (where the held-out size was repeated with seeds 1-2 over its grid, 1-5 in the "
            "six-seed experiments): R2 of "
            "the recommended pair on seed 0's runs, on the seed means, the ceiling a noise-free law would reach "
            "on seed 0's runs (see 1, the ceiling tables), and the median over seeds of R2 on each seed's own runs "
            "(the cells every seed ran); the domain loss's MAPE on seed 0, each seed (median) and the worst seed; "
            "the general loss also without r_d = 1, the runs that see "
            "no general data (forgetting without replay, which no usage reads). Medians over domains.", "",
            md(pd.DataFrame(rows)), ""]


def held_out_seed_noise(data: pd.DataFrame) -> pd.DataFrame:
    """Mean / max CV (%) over seeds of the losses at D max, per (size, domain), where the held-out runs were repeated."""
    if data.empty or not data["table"].isin(HELD_SEED_TABLES).any():
        return pd.DataFrame()
    cv = seed_cv(data, HELD_SEED_TABLES)
    out = cv[cv["tokens"] == cv["tokens"].max()].groupby(["size_name", *RUN_SETTINGS, "domain"]).agg(
        **{"ratios": ("domain_ratio", "nunique"), "seeds": ("n", "max"),
           "mean CV % domain": ("cv domain", "mean"), "max CV % domain": ("cv domain", "max"),
           "mean CV % general": ("cv general", "mean"), "max CV % general": ("cv general", "max")})
    out = out.reset_index().rename(columns={"size_name": "size", "base_tokens": "base tokens", "lr": "CPT lr"})
    return out.assign(**{"base tokens": out["base tokens"].map(dl.format_count)})


def repeated_runs(held_seeds: pd.DataFrame | None, dom: str) -> pd.DataFrame:
    """The held-out size's CPT evaluations of ``dom`` at the (r_d, tokens) cells that every seed ran, one row per
    seed and cell, each with its own base model's general loss G. Empty without repeats."""
    if held_seeds is None or held_seeds.empty:
        return pd.DataFrame()
    runs = with_base_general(held_seeds[held_seeds["domain"] == dom])
    runs = runs[runs["tokens"] > 0]
    n = runs.groupby(["domain_ratio", "tokens"])["seed"].transform("nunique")
    return pd.DataFrame() if runs.empty or n.max() < 2 else runs[n == n.max()]


def seed_means(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs of :func:`repeated_runs` averaged over seeds, per (r_d, tokens) cell: model_size, both losses and
    base_general_loss (the mean G of the seeds' base models), the variance over seeds of each loss ("var
    domain", "var general") and how many seeds ran the cell ("seeds"). Empty without repeats."""
    if runs.empty:
        return pd.DataFrame()
    g = runs.groupby(["domain_ratio", "tokens"])
    out = g[["model_size", "domain_loss", "general_loss", "base_general_loss"]].mean()
    for t in ("domain", "general"):
        out[f"var {t}"] = g[LOSS_COLUMNS[t]].var(ddof=1)
    out["seeds"] = g.size()
    return out.reset_index()


def predict_rows(law_fit, rows: pd.DataFrame) -> np.ndarray:
    """``law_fit``'s loss at each row's (model_size, tokens, domain_ratio), given the row's base_general_loss G."""
    return np.asarray(law_fit.predict(rows["model_size"], rows["tokens"], rows["domain_ratio"], warn=False,
                                      base_general_loss=rows["base_general_loss"].to_numpy(float)))


def each_seed_scores(law_fit, runs: pd.DataFrame, target: str) -> dict:
    """The law scored on each seed's own runs of :func:`repeated_runs` (the same cells for every seed, each seed
    with its own G): the median R2 and MAPE over seeds and the worst seed's MAPE. Seed 0, which the other columns
    score on all of its runs, is one draw of these."""
    if runs.empty:
        return {}
    pred = predict_rows(law_fit, runs)
    obs, seed = runs[LOSS_COLUMNS[target]].to_numpy(float), runs["seed"].to_numpy()
    m = pd.DataFrame([_metrics(pred[seed == s], obs[seed == s], 1e-3) for s in np.unique(seed)])
    return {"R2 (each seed)": m["r2"].median(), "MAPE % (each seed)": m["mape"].median(),
            "MAPE % (worst seed)": m["mape"].max()}


def _share(df: pd.DataFrame, target: str) -> np.ndarray:
    """The share of the training mixture from the corpus each row's ``target`` loss is evaluated on (r_d or r_g)."""
    r = df["domain_ratio"].to_numpy(float)
    return r if target == "domain" else 1 - r


CEILING_TEXT = ("Seed-to-seed ceiling at the held-out size: what a law that knew the expected loss of every run exactly "
                "would score against these single runs, given the spread over seeds 0-2 (0-5 in the six-seed "
                "experiments; each its own base model and data order) at the cells every seed ran. R2 ceiling = "
                "1 - (mean variance over seeds) / (variance of "
                "the scored runs); noise MAPE = mean E|e| / L for e ~ N(0, that variance); R2 ceiling (seed means) = "
                "1 - mean(variance / seeds) / variance of the seed means: the same bound for a law scored on the "
                "means. A scaled or anchored law, "
                "given each seed's own base loss G, can explain part of that spread and pass the ceiling a little. "
                "(share > 0): without the "
                "runs whose mixture holds none of the scored corpus (r_d = 1 for the general loss, r_d = 0 for the "
                "domain loss). The general loss at r_d = 1 is forgetting with no replay: at m on chemistry it ends "
                "at 3.0-3.2x the base model's (SMILES only, seeds 0-2), against 1.4-2.8x at the sizes below it, "
                "s4's seeds alone spanning 1.6-2.8x; no usage reads it (usage 1 caps the rise of L_g at 3%).")


def seed_ceiling(test: pd.DataFrame, means: pd.DataFrame, target: str) -> dict:
    """Seed-noise bounds on one (domain, target) of the held-out size: the R^2 a noise-free law would reach on
    the scored single runs ``test`` (1 - mean seed variance / variance of the runs), on all of them and on
    those with a share > 0 of the target's corpus, and the noise MAPE there and on all of them (sqrt(2/pi) * sd / mean,
    %); and the R^2 it would reach on the seed means themselves (1 - mean(variance / seeds) / variance of the
    means): the goal's bound where the law is scored on the means."""
    col, var = LOSS_COLUMNS[target], f"var {target}"
    pos, test_pos = means[_share(means, target) > 0], test[_share(test, target) > 0]
    noise = lambda m: 100 * np.sqrt(2 / np.pi) * float((np.sqrt(m[var]) / m[col]).mean())  # noqa: E731
    return {"R2 ceiling": 1 - means[var].mean() / test[col].to_numpy(float).var(),
            "R2 ceiling (share > 0)": 1 - pos[var].mean() / test_pos[col].to_numpy(float).var(),
            "noise MAPE % (share > 0)": noise(pos), "noise MAPE %": noise(means),
            "R2 ceiling (seed means)": 1 - (means[var] / means["seeds"]).mean() / means[col].to_numpy(float).var(),
            "cells": len(means)}


def seed_mean_regret(means: pd.DataFrame, D: float, ratio: float, tolerance: float = TOLERANCE) -> float:
    """Regret (%) of ``ratio`` on the seed means (:func:`seed_means`) of the held-out size's runs at D tokens, over
    the ratios trained with every seed only: a seed's offset (its base model) must not decide which ratio is best.
    NaN without repeats or where ``ratio`` falls outside the repeated ratios."""
    last = means[means["tokens"] == D] if not means.empty else means
    if last.empty or not last["domain_ratio"].min() <= ratio <= last["domain_ratio"].max():
        return np.nan
    L_g0 = float(last["base_general_loss"].iloc[0])  # the mean over the seeds' base models
    return 100 * dl.ratio_regret(last, ratio, L_g0, tolerance)["regret"]


def _drop_empty(df: pd.DataFrame) -> pd.DataFrame:
    """Without the columns that hold no value (the seed-mean regret where no seed was repeated)."""
    return df.loc[:, df.notna().any()]


def _by_ratio_columns(df: pd.DataFrame) -> pd.DataFrame:
    """The residual table with its ratio columns in increasing r_d (extra runs add ratios per domain)."""
    ratios = sorted((c for c in df.columns if c not in ("domain", "law", "target")), key=float)
    return df[["domain", "law", "target", *ratios]]


def heldout_figure(f, train: pd.DataFrame, held: pd.DataFrame, figs: Path, dom: str, law: str, label: str = "",
                   cells: dl.CellScaling | None = None) -> str:
    """Loss vs ratio at the held-out size: the small-size fit (dashed) against the held-out runs (stars), and
    ``cells`` (dotted) where given."""
    from dcpt_law import plots

    both = pd.concat([train, held], ignore_index=True)
    Nh = float(held["model_size"].max())
    mask = np.isclose(both.loc[both["tokens"] > 0, "model_size"], Nh)
    fig = plots.loss_vs_ratio(f, both, model_size=Nh, heldout=mask, domain=dom, cells=cells)
    name = f"heldout_{label or held['size_name'].iloc[0]}_{dom}_{law.replace(':', '-').replace(',', '_')}"
    plots.save(fig, figs / name)
    return f"![{dom}, {law}](figures/{name}.png)"


def seed_cv(data: pd.DataFrame, tables=SEED_TABLES) -> pd.DataFrame:
    """One row per (domain, size_name, domain_ratio, tokens > 0) cell that the seed ``tables`` repeat: the CV (%)
    of each loss over its seeds ("cv domain", "cv general"; seed 0 from whichever table holds it, with the same
    run settings: RUN_SETTINGS's columns) and n seeds."""
    key = ["domain", "size_name", *RUN_SETTINGS, "domain_ratio", "tokens"]
    seeds = data[data["table"].isin(tables) & (data["seed"] != 0) & (data["tokens"] > 0)]
    zero = data[data["seed"] == 0].merge(seeds[key].drop_duplicates(), on=key).drop_duplicates(key)
    g = pd.concat([zero, seeds], ignore_index=True).groupby(key)
    out = pd.DataFrame({f"cv {t}": g[LOSS_COLUMNS[t]].std(ddof=1) / g[LOSS_COLUMNS[t]].mean() * 100
                        for t in ("domain", "general")})
    out["n"] = g.size()
    return out[out["n"] >= 2].reset_index()


def seeds_section(data: pd.DataFrame) -> list[str]:
    """Seed noise: the seeds sweeps (seeds 1-5) next to seed 0 of the same (size, domain, ratio) runs."""
    lines = ["## 4. Seed noise floor", ""]
    if not (data["table"].isin(SEED_TABLES) & (data["seed"] != 0)).any():
        return lines + ["Not run yet: `dcpt sweep small_runs/configs/seeds.toml`.", ""]
    cv, rows = seed_cv(data, (*SEED_TABLES, *LONG_TABLES)), []
    for t in ("domain", "general"):
        for (size, base, lr), sp in cv.groupby(["size_name", *RUN_SETTINGS]):
            last = sp[sp["tokens"] == sp["tokens"].max()]
            rows.append({"target": t, "size": size, "base tokens": dl.format_count(base), "CPT lr": lr,
                         "ratios": len(sp["domain_ratio"].unique()), "cells": len(sp),
                         "seeds per cell": int(sp["n"].max()), "mean CV % (all token counts)": sp[f"cv {t}"].mean(),
                         "max CV %": sp[f"cv {t}"].max(), "mean CV % (last token count)": last[f"cv {t}"].mean()})
    return lines + ["Relative standard deviation (CV) of the loss across seeds (each seed: its own base model "
                    "and data order), per (ratio, token count) cell. Errors below this are noise, not law.", "",
                    md(pd.DataFrame(rows)), ""]


# two experiments with the same sizes, seeds and CPT, whose base models differ only in their pre-training tokens
BUDGET_PAIR = ("m4d3", "m4L3")


def budget_elasticity(data: pd.DataFrame, pair=BUDGET_PAIR) -> pd.DataFrame:
    """How much of a lower base-model general loss G shows up in the domain loss after CPT, when G is lower because
    the model is larger (within one pre-training budget) or because it was pre-trained longer (same size).

    Per domain, at the largest D, on seed means: d ln L_d / d ln G across the fitted sizes of each experiment of
    ``pair`` (least squares over the sizes, per trained ratio r_d > 0, median over ratios), and across the two
    budgets at each size, fitted and held out ((ln L_2 - ln L_1) / (ln G_2 - ln G_1), median over ratios)."""
    fitted, held_out = experiment_spec(pair[0])[:2]  # the pair's sizes are the same
    sizes, runs = (*fitted, held_out), {}
    for label in pair:
        seeds = experiment_spec(label)[2]
        d = with_base_general(experiment_data(data, label))
        d = d[d["size_name"].isin(sizes) & (d["seed"] < seeds) & (d["tokens"] > 0)]
        d = d[d["tokens"] == d["tokens"].max()].assign(domain_ratio=lambda x: x["domain_ratio"].round(4))
        runs[label] = d.groupby(["domain", "domain_ratio", "size_name"]).agg(
            L=("domain_loss", "mean"), G=("base_general_loss", "mean"))
    both = runs[pair[0]].add_suffix("_1").join(runs[pair[1]].add_suffix("_2"), how="inner")
    both = both[both.index.get_level_values("domain_ratio") > 0]
    rows = []
    for dom, g in both.groupby(level="domain"):
        g = g.droplevel("domain")
        by_ratio = [c.droplevel("domain_ratio") for _, c in g.groupby(level="domain_ratio")]
        by_ratio = [c.loc[list(fitted)] for c in by_ratio if set(fitted) <= set(c.index)]
        row = {"domain": dom, "ratios": len(by_ratio)}
        for i, label in enumerate(pair, 1):
            slopes = [np.polyfit(np.log(c[f"G_{i}"]), np.log(c[f"L_{i}"]), 1)[0] for c in by_ratio]
            row[f"across sizes, {label}"] = float(np.median(slopes)) if slopes else np.nan
        for size in sizes:
            at = g[g.index.get_level_values("size_name") == size]  # empty where a size has no runs in the domain
            elasticity = np.log(at["L_2"] / at["L_1"]) / np.log(at["G_2"] / at["G_1"])
            row[f"across budgets, {size}"] = float(np.median(elasticity)) if len(at) else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def budget_section(data: pd.DataFrame, pair=BUDGET_PAIR) -> list[str]:
    """Section 5: :func:`budget_elasticity` as a table, and what it means for the G-based laws."""
    lines = ["## 5. A base model pre-trained longer is not a larger one", ""]
    table = budget_elasticity(data, pair)
    if table.empty:
        return lines + [f"Not run yet: the experiments {', '.join(pair)} share no runs.", ""]
    budgets = [dl.format_count(experiment_spec(label)[3]["base_tokens"]) for label in pair]
    return lines + [
        f"Experiments {pair[0]} and {pair[1]} train the same sizes, seeds and CPT from base models pre-trained on "
        f"{budgets[0]} and {budgets[1]} general tokens. The elasticity d ln L_d / d ln G of the domain loss after CPT "
        "(largest D, seed means, median over the trained ratios r_d > 0) to the base model's general loss G: across the "
        "fitted sizes within one budget, where a lower G comes with a larger model, and across the budgets at one size, "
        "where it comes from longer pre-training. The G-based laws (the recommended pair, the cells in ln G) read both as "
        "one number; where the second is a fraction of the first, G alone cannot carry a model across budgets: fit the "
        "small sizes on base models pre-trained like the target's (the table's `base_tokens`; `dcpt fit` warns when a "
        "G-based law is fitted across several).", "", md(table), ""]


# Section 6: (held-out size, ladders) groups: ladders that add sizes below a fixed largest one, and one whose top is
# a step lower; the first three-size ladder of a group is the unit of its compute column
LADDERS = (("xl", (("s", "m"), ("xs", "s", "m"), ("xxs", "xs", "s", "m"), ("xxs", "xs", "s3", "s", "m"),
                   ("xxs", "xs", "s"))),
           ("m", (("xs", "s"), ("xxs", "xs", "s"), ("xxs", "xs", "s3", "s"), ("xxs", "xs", "s2", "s3", "s"),
                  ("xxs", "xs", "s3"))),
           ("m", (("xs4", "s4"), ("xxs4", "xs4", "s4"))))  # the depth-matched ladder (m4d)
LADDER_CANDIDATES = [dict(dl.RECOMMENDED_LAW), "dcpt"]


def pilot_compute(rows: pd.DataFrame) -> float:
    """Training FLOPs of the runs behind ``rows`` (one or more sizes, any domains), 6 N D: each CPT run (run_id) at
    its largest logged token count, and each base model (size, seed) over its pre-training tokens (base_tokens)."""
    cpt = rows[rows["tokens"] > 0].groupby("run_id")[["model_size", "tokens"]].max()
    bases = rows.groupby(["size_name", "seed"])[["model_size", "base_tokens"]].first()
    return 6 * float((cpt["model_size"] * cpt["tokens"]).sum() + (bases["model_size"] * bases["base_tokens"]).sum())


def ladder_rows(data: pd.DataFrame, held_out: str, fitted: tuple, candidates=None) -> list[dict]:
    """One ladder of section 6, per domain: each candidate's accuracy at the held-out size (seed 0, run settings
    RUN_SETTINGS) and usage 1's r_d error and regret there; where the recommended pair is a candidate, the median of
    the four routes beside it. The fits are stored like every other (:func:`fit_candidates`)."""
    candidates = LADDER_CANDIDATES if candidates is None else candidates
    small, held = experiment(data[data["domain"].isin(CHOSEN_DOMAINS)], fitted, held_out)
    rows = []
    for dom in sorted(set(held["domain"]) & set(small["domain"])):
        train = small[small["domain"] == dom]
        if set(fitted) - set(train["size_name"]):
            continue  # a size of this ladder never ran this domain
        test, at_dmax, Nh, D, L_g0 = held_out_point(held, dom)
        if test.empty or np.isnan(L_g0):
            continue
        last, none = test[at_dmax], pd.DataFrame()
        for candidate, f in fit_candidates(train, dom, candidates):
            name = dl.pair_name(candidate) if isinstance(candidate, dict) else candidate
            row = {"domain": dom, "law": name}
            for t in ("domain", "general"):
                acc = accuracy_row(f[t], test, at_dmax, none, none, t)[0]
                row |= {f"R2 {t}": acc["R2"], f"MAPE % {t}": acc["MAPE %"], f"signed % {t}": acc[SIGNED]}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                answers = {name: dl.predict_ratio(Nh, D, fit=f, tolerance=TOLERANCE, base_general_loss=L_g0,
                                                  warn=False).ratio}
                if candidate == dict(dl.RECOMMENDED_LAW):
                    answers[CONSENSUS] = dl.usage1_consensus(f, small, Nh, D, TOLERANCE, base_general_loss=L_g0,
                                                             domain=dom, warn=False).ratio
            for law, ratio in answers.items():
                use = usage_row(last, ratio, L_g0, TOLERANCE, none)
                rows.append({**(row if law == name else {"domain": dom, "law": law}),
                             "r_d error": ratio - use["observed crossing r_d"], "regret %": use["regret %"]})
    return rows


def ladder_tables(data: pd.DataFrame, ladders=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Section 6's (accuracy, usage 1) tables: each ladder of ``ladders`` ((held-out size, tuples of fitted sizes)
    groups; default :data:`LADDERS`) scored by :func:`ladder_rows`, medians over domains, with its reach (held-out
    N over the largest fitted N) and its compute against the first three-size ladder of its group."""
    ladders = LADDERS if ladders is None else ladders
    data = with_settings(data, RUN_SETTINGS)
    data = data[data["seed"] == 0] if "seed" in data else data
    sizes = data.groupby("size_name")["model_size"].first()
    G = data[data["tokens"] == 0].groupby("size_name")["general_loss"].mean()  # each size's base model
    acc, use = [], []
    for held_out, fitted_sets in ladders:
        unit = next((pilot_compute(data[data["size_name"].isin(f) & data["domain"].isin(CHOSEN_DOMAINS)])
                     for f in fitted_sets if len(f) == 3), np.nan)
        for fitted in fitted_sets:
            rows = pd.DataFrame(ladder_rows(data, held_out, fitted))
            if rows.empty:
                continue
            top = max(fitted, key=sizes.get)
            flops = pilot_compute(data[data["size_name"].isin(fitted) & data["domain"].isin(CHOSEN_DOMAINS)])
            head = {"held out": held_out, "fitted": ", ".join(fitted), "sizes": len(fitted),
                    "reach": sizes[held_out] / sizes[top],
                    "G step %": 100 * (G.reindex(list(fitted)).min() / G.get(held_out, np.nan) - 1),
                    "compute vs 3 sizes": flops / unit}
            med = rows.groupby("law", sort=False).median(numeric_only=True)
            for law, r in med.iterrows():
                if pd.notna(r.get("R2 domain")):
                    acc.append({**head, "law": law, **{k: r[k] for k in r.index
                                                       if k.split()[0] in ("R2", "MAPE", "signed")}})
                err = rows[rows["law"] == law]
                use.append({**head, "law": law, "median abs r_d error": _abs_median(err["r_d error"]),
                            "median abs regret %": _abs_median(err["regret %"])})
    return pd.DataFrame(acc), pd.DataFrame(use)


def ladder_section(data: pd.DataFrame, ladders=None) -> list[str]:
    """Section 6: how many sizes to fit on (:func:`ladder_tables`)."""
    acc, use = ladder_tables(data, ladders)
    lines = ["## 6. How many sizes to fit on", ""]
    if acc.empty:
        return lines + ["Not run yet: no held-out size of LADDERS has runs beside its ladders'.", ""]
    return lines + [
        "The same held-out size predicted from ladders that add smaller sizes below the same largest fitted one, and "
        "from one whose largest size is a step lower (seed 0 at the settings of section 1; medians over the four "
        "chosen domains). Reach: the held-out size's N over the largest fitted N. G step: how much better the held-out "
        "size's base model is than the best fitted one, in general loss (%, < 0: it lies inside the ladder's G), which "
        "is what the G-based pair extrapolates. Compute: the fitted runs' training "
        "FLOPs (6 N D, CPT and base models, the four domains) over those of the first three-size ladder of its group "
        "(the ladders of sections 1l, 1k and 1f). Signed %: the mean signed error at the held-out "
        "size's largest D (runs that saw the loss's corpus; > 0 over-predicts).", "", md(acc), "",
        f"Usage 1 from the same ladders (tolerance {TOLERANCE:.0%}; the held-out runs' observed crossing and regret as "
        f"in section 1; {CONSENSUS}: dl.usage1_consensus around the recommended pair):", "", md(use), ""]


# Section 7, usage 2 at the held-out size: m's runs along the lines D * r_d = D_d (seed 0, the grid's bases and
# settings; small_runs/configs/usage2_m*.toml). Their own table, not one of TABLES: section 1 scores the held-out size
# at the grid's largest D, 524K, and these runs train to 2M
USAGE2_TABLE = "usage2_m"
USAGE2_BUDGETS = (16_384, 32_768, 65_536, 131_072)  # D_d, domain tokens: each meets >= 5 of the runs' logged points
# the experiments that hold out m at seed 0 with RUN_SETTINGS (the runs above continue their held-out base model)
USAGE2_EXPERIMENTS = ("m", "m4c", "m4x", "m4d", "m4h", "m4c3", "m4x3", "m4d3", "m4h3", "m4c6", "m4d6")
USAGE2_LAWS = (dl.RECOMMENDED_LAW["domain"], "dcpt")  # usage 2 reads the domain-loss law alone
PILOT_TAG = "+ r_d 1/64-1/16 runs"  # the experiment name of a fit on a pilot's small-ratio runs
# pilots that swept small ratios too: the name of a fit on them -> (the experiment whose fitted sizes ran them, the
# tables of those extra runs; the same base models): to the grid's D, 524K, and to 2M
USAGE2_PILOTS = {f"m4d {PILOT_TAG}": ("m4d", ("usage2_ladder4",)),
                 f"m4d {PILOT_TAG} to 2M": ("m4d", ("usage2_ladder4", "usage2_ladder4_long"))}


def pilot_runs(tables) -> pd.DataFrame:
    """A pilot's extra runs from ``tables`` (names, in order): a point that several of them logged (the same size,
    seed, domain, ratio and D: a longer run's cool-down branch at a shorter one's end) is kept once, from the first."""
    df = load(list(tables))
    if df.empty:
        return df
    return df.drop_duplicates(["domain", "size_name", "seed", "domain_ratio", "tokens"], keep="first")


def _sources(tables) -> str:
    return "extra runs" if isinstance(tables, pd.DataFrame) else ", ".join(f"small_runs/results/{t}" for t in tables)


def pilot_description(extra: pd.DataFrame) -> str:
    """What a pilot's extra runs trained, in words: "r_d 1/64, 1/16 to 2M; 1/32 to 524K" (ratios grouped by the
    largest D of their runs)."""
    cpt = extra[extra["tokens"] > 0]
    key = "run_id" if "run_id" in cpt else "domain_ratio"
    runs = cpt.groupby(key).agg(r=("domain_ratio", "first"), D=("tokens", "max"))
    parts = []
    for D, g in runs.groupby("D", sort=False):
        ratios = ", ".join(f"1/{round(1 / r)}" if r < 1 else "1" for r in sorted(g["r"].unique()))
        parts.append((D, f"r_d {ratios} to {dl.format_count(D)}"))
    return "; ".join(p for _, p in sorted(parts))


EDGE = "pilot edge"  # r_d = D_d / the fitted runs' largest D: as much general data as the pilot logged
ALONE = "domain data alone"  # r_d = 1, D = D_d


def usage2_inputs(data: pd.DataFrame, label: str, lines: pd.DataFrame, extra: pd.DataFrame | None = None):
    """Per domain of experiment ``label`` that ``lines`` ran: (domain, its fitted rows, the held-out N and base G,
    the held-out size's CPT runs of ``lines``, {domain law of USAGE2_LAWS: its fit}). The fits are its section's
    stored ones; with ``extra`` (more runs of the fitted sizes, e.g. at small ratios, from the same base models)
    each law is fitted to the domain loss of both (stored like every fit)."""
    fitted, held_out, seeds, settings = experiment_spec(label)
    small, held = experiment(experiment_data(data, label), fitted, held_out, seeds, settings)
    if extra is not None:
        extra = experiment(experiment_data(extra, label), fitted, held_out, seeds, settings)[0]
    for dom in sorted(set(held["domain"]) & set(small["domain"]) & set(lines["domain"])):
        train = small[small["domain"] == dom]
        _, _, Nh, _, G = held_out_point(held, dom)
        runs = lines[lines["domain"] == dom]
        base = runs.loc[runs["tokens"] == 0, "general_loss"]
        if len(base) and not np.isclose(base.iloc[0], G, rtol=1e-3):
            raise ValueError(f"{USAGE2_TABLE} {dom}: its base model's general loss {base.iloc[0]:.5g} is not that of "
                             f"{label}'s held-out runs ({G:.5g}): the lines must continue the same base model")
        laws = {}
        if extra is None:
            for candidate, f in fit_candidates(train, dom, section_laws(label)):
                name = candidate["domain"] if isinstance(candidate, dict) else candidate
                if name in USAGE2_LAWS:
                    laws.setdefault(name, f)
        else:
            more = extra[extra["domain"] == dom]
            if more.empty:
                continue
            bases = train[train["tokens"] == 0].groupby("size_name")["general_loss"].first()
            theirs = more[more["tokens"] == 0].groupby("size_name")["general_loss"].first()
            if not np.allclose(theirs, bases.reindex(theirs.index), rtol=1e-3):
                raise ValueError(f"{label} {dom}: the extra runs' base models are not the fitted sizes' own "
                                 f"({theirs.round(5).to_dict()} against {bases.round(5).to_dict()})")
            train = pd.concat([train, more[more["tokens"] > 0]], ignore_index=True)
            laws = {name: cached_fit(train, name, dom, target="domain") for name in USAGE2_LAWS}
        yield dom, train, Nh, G, runs[runs["tokens"] > 0], laws


def usage2_rows(data: pd.DataFrame, label: str, lines: pd.DataFrame, budgets=USAGE2_BUDGETS,
                extra: pd.DataFrame | None = None, name: str | None = None) -> list[dict]:
    """Experiment ``label``'s usage 2 at its held-out size, per domain and budget D_d: each domain law of
    USAGE2_LAWS its section fits (its stored fits), the pilot edge and domain data alone, scored on ``lines`` (the
    held-out size's runs along D * r_d = D_d, seed 0) by dl.limited_domain_regret; and the cells of the fitted sizes
    (:data:`CELLS`, dl.CellScaling.limited_domain). An answer outside the line's
    trained ratios is scored at the nearest one (``outside``); each law's MAPE along the line (the law at N, D_d /
    r_d, r_d against every point) and its signed error at the line's largest D."""
    rows, tag = [], name or label
    for dom, train, Nh, G, runs, laws in usage2_inputs(data, label, lines, extra):
        d_max = float(train.loc[train["tokens"] > 0, "tokens"].max())
        cells = cells_fit(train)
        for budget in budgets:
            try:
                line = dl.limited_domain_line(runs, budget)
            except ValueError:  # not run yet: usage2_section names the lines it lacks
                continue
            r = line.index.to_numpy(float)
            answers = {EDGE: (min(1.0, budget / d_max), None), ALONE: (1.0, None)}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if cells is not None:
                    try:
                        answers[CELLS] = (cells.limited_domain(budget, base_general_loss=G, warn=False).ratio, None)
                    except ValueError:  # no logged D reaches this budget's line within the swept ratios
                        pass
                for law in USAGE2_LAWS:
                    if law in laws:
                        ans = dl.optimal_ratio_limited_domain(Nh, budget, fit=laws[law], warn=False,
                                                              base_general_loss=G)
                        pred = laws[law]["domain"].predict(np.full(len(r), Nh), budget / r, r, warn=False,
                                                           base_general_loss=np.full(len(r), G))
                        answers[law] = (ans.ratio, pred / line.to_numpy(float) - 1)
            for answer, (ratio, err) in answers.items():
                res = dl.limited_domain_regret(runs, float(np.clip(ratio, r[0], r[-1])), budget)
                rows.append({"experiment": tag, "domain": dom, "D_d": budget, "answer": answer, "r_d": ratio,
                             "fitted D max": d_max,
                             "best trained r_d": res["best_ratio"], "regret %": 100 * res["regret"],
                             "outside": not r[0] <= ratio <= r[-1],
                             "MAPE % on the line": np.nan if err is None else 100 * np.mean(np.abs(err)),
                             "signed % at largest D": np.nan if err is None else 100 * err[0]})
    return rows


def usage2_section(data: pd.DataFrame, lines: pd.DataFrame | None = None, experiments=USAGE2_EXPERIMENTS,
                   budgets=USAGE2_BUDGETS, figs: Path | None = None, pilots: dict | None = None) -> list[str]:
    """Section 7: usage 2 at the held-out size (:func:`usage2_rows`), ``lines`` default the committed
    USAGE2_TABLE; with ``figs``, one figure per domain of the detailed experiment (the recommended domain law
    along every budget's line, dcpt_law.plots.limited_domain)."""
    lines = load([USAGE2_TABLE]) if lines is None else lines
    head = ["## 7. Usage 2 at the held-out size: a fixed budget of domain tokens", ""]
    if lines.empty:
        return head + [f"Not run yet: small_runs/results/{USAGE2_TABLE} holds no runs.", ""]
    lines = lines[lines["seed"] == 0] if "seed" in lines else lines
    pilots = {name: (label, tables) for name, (label, tables) in (USAGE2_PILOTS if pilots is None else pilots).items()
              if label in experiments and label in EXPERIMENTS}
    extras = {name: (label, pilot_runs(tables) if not isinstance(tables, pd.DataFrame) else tables)
              for name, (label, tables) in pilots.items()}
    extras = {name: (label, extra) for name, (label, extra) in extras.items() if not extra.empty}
    rows = pd.DataFrame([row for label in experiments if label in EXPERIMENTS
                         for row in usage2_rows(data, label, lines, budgets)]
                        + [row for name, (label, extra) in extras.items()
                           for row in usage2_rows(data, label, lines, budgets, extra, name)])
    observed, missing = {}, []
    for dom in sorted(lines["domain"].unique()):
        for b in budgets:
            try:
                observed[dom, f"{int(b):,}"] = dl.limited_domain_line(lines[(lines["domain"] == dom)
                                                                                 & (lines["tokens"] > 0)], b)
            except ValueError:
                missing.append(f"{dom} at {int(b):,}")
    observed = pd.DataFrame(observed).T
    observed.columns = [f"r_d {r:.4g}" for r in observed.columns]
    observed.index.names = ["domain", "D_d"]
    best = observed.idxmin(axis=1).str.removeprefix("r_d ")
    observed = (observed / observed.min(axis=1).to_numpy()[:, None] - 1) * 100
    observed.insert(0, "best r_d", best)
    rows["|log2(r_d / best)|"] = np.abs(np.log2(rows["r_d"] / rows["best trained r_d"]))
    laws_r = rows.loc[rows["answer"].isin(USAGE2_LAWS), "r_d"]
    cpt = lines[lines["tokens"] > 0]
    ratios = ", ".join(f"1/{round(1 / r)}" if r < 1 else "1" for r in sorted(cpt["domain_ratio"].unique()))
    d_top = float(cpt["tokens"].max())
    d_fit = dl.format_count(rows.loc[~rows["experiment"].isin(list(extras)), "fitted D max"].max())  # the grid's
    counts = observed.notna().sum(axis=1)
    n_points = f"{counts.min()}" if counts.min() == counts.max() else f"{counts.min()}-{counts.max()}"
    summary = rows.groupby(["experiment", "answer"], sort=False).agg(**{
        "cases": ("regret %", "size"), "median regret %": ("regret %", "median"), "max regret %": ("regret %", "max"),
        "regret <= 0.3% in": ("regret %", lambda x: int((x <= 0.3).sum())),
        "median |log2(r_d / best)|": ("|log2(r_d / best)|", "median"), "outside the line": ("outside", "sum"),
        "median MAPE % on the line": ("MAPE % on the line", "median"),
        "median signed % at largest D": ("signed % at largest D", "median")}).reset_index()
    pick = next((label for label in ("m4d", *experiments) if label in set(rows["experiment"])), None)
    details = []
    for label in [pick, *extras]:
        part = rows[rows["experiment"] == label]
        if part.empty:
            continue
        detail = part.pivot_table(index=["domain", "D_d"], columns="answer", values=["r_d", "regret %"], sort=False)
        detail.columns = [f"{a} {v}" for v, a in detail.columns]
        detail = detail[[f"{a} {v}" for a in part["answer"].unique() for v in ("r_d", "regret %")]].reset_index()
        detail["D_d"] = [f"{int(b):,}" for b in detail["D_d"]]
        title = experiment_title(label.split()[0]) + (f", with its fitted sizes' runs at "
                                                      f"{pilot_description(extras[label][1])} (refitted)"
                                                      if label in extras else "")
        details += [f"Per domain and budget ({label}: {title}):", "", md(detail), ""]
    images = []
    if figs is not None and pick:
        from dcpt_law import plots

        for dom, _, Nh, G, runs, laws in usage2_inputs(data, pick, lines):
            if USAGE2_LAWS[0] in laws:
                name = f"usage2_{pick}_{dom}"
                plots.save(plots.limited_domain(laws[USAGE2_LAWS[0]], Nh, list(budgets), base_general_loss=G,
                                                observed=runs), figs / name)
                images.append(f"![{dom}, usage 2](figures/{name}.png)")
    return head + [
        "With D_d domain tokens, usage 2 trains D = D_d / r_d tokens and picks the r_d of the lowest domain loss "
        "(dl.optimal_ratio_limited_domain: every domain token seen once, the rest general data). The laws fitted on "
        f"the small sizes put the answer at r_d {laws_r.min():.2g}-{laws_r.max():.2g} for these budgets, where the "
        "grid has no run (r_d 0 or >= 0.1, D <= 524K), so the held-out size trained the lines themselves "
        f"(small_runs/results/{USAGE2_TABLE}, seed 0, the base model of section 1): r_d = {ratios} (powers of two), "
        f"each logging D in powers of two up to {dl.format_count(d_top)}, so each budget meets {n_points} of them. "
        "The observed lines, % above each line's lowest domain loss:",
        "", md(observed, index=True), "",
        *([f"Lines with fewer than 2 points run yet, not scored: {', '.join(missing)}.", ""] if missing else []),
        "Each answer scored on its line (dl.limited_domain_regret: the observed L_d at the answer, linear in ln r_d "
        "between the trained ratios around it, over the line's lowest; an answer outside the line's trained ratios "
        "is scored at the nearest). The laws: each experiment's fits of section 1 (the recommended pair's domain "
        f"law, {USAGE2_LAWS[0]}, and the paper's, dcpt, where the section fits it), at m's N and base-model G. "
        f"{EDGE}: r_d = D_d / the fitted runs' largest D ({d_fit} in the grid; what "
        "those runs say: within the D they logged, the "
        f"smallest r_d was best); {ALONE}: r_d = 1. "
        + f"{CELLS}: the fitted sizes' cells (dl.CellScaling.limited_domain: the line read at each D they all "
        "logged, at r_d = D_d / D between the ratios they trained there, extrapolated to m's G; its lowest point). "
        + "".join(f"{name}: {label}'s fitted sizes also ran {pilot_description(extra)} ({_sources(pilots[name][1])}"
                  ", the same base models), and each law and the cells are refitted to all their runs: a pilot that "
                  "swept the small ratios usage 2 asks about. "
                  for name, (label, extra) in extras.items())
        + "MAPE on the line: the law's L_d at each point against the run "
        f"(extrapolated in size, and in D past the fitted runs'); signed at the largest D (> 0 over-predicts). Medians over the "
        f"domains and the {len(budgets)} budgets ({', '.join(f'{int(b):,}' for b in budgets)} tokens):", "",
        md(summary), "", *details, *([f"The {USAGE2_LAWS[0]} law of {pick} along each budget's line (dashed), "
                                            "its answer (diamond) and m's runs (stars):", "", " ".join(images), ""]
                                           if images else [])]


def _mean_median(mean: pd.DataFrame, median: pd.DataFrame) -> pd.DataFrame:
    """Cells "mean (median)" where they differ, one number where they agree (a single fold)."""
    return mean.combine(median, lambda a, b: pd.Series(
        [f"{x:.4g}" if np.isclose(x, y) else f"{x:.4g} ({y:.4g})" for x, y in zip(a, b)], index=a.index))


def splits_law(small: pd.DataFrame, dom: str, law: str, quick: bool) -> list[dict]:
    """One law on the paper's splits for one domain: the rows of :func:`dcpt_law.evaluate` (stored per law, so a
    new law adds its own fits to section 2 and leaves the others')."""
    splits = ["all", "tokens", "model_size"] if quick else ["all", "model_size", "tokens", "ratio"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ev = dl.evaluate(small[small["domain"] == dom], law=law, split=splits, domain=dom)
    return ev.to_dict("records")


def splits_domain(dom: str, per_law: list[list[dict]]) -> list[str]:
    """Section 2 for one domain: the laws' :func:`splits_law` rows side by side."""
    ev = pd.DataFrame([row for rows in per_law for row in rows])
    return [f"### {dom}: R^2 on held-out points (mean over folds; median in brackets)", "",
            md(_mean_median(dl.summary(ev, "mean")["r2"], dl.summary(ev, "median")["r2"]), index=True), ""]


def cross_section(small: pd.DataFrame, fit_on=None) -> list[str]:
    """Section 3: the cross-domain law, each domain of ``small`` held out from a fit on the others; with ``fit_on``
    (3b), one fit on those domains and the table's other domains held out, each predicted from its probe alone."""
    doms = complete_domains(small)
    if fit_on is None:
        lines = ["## 3. Cross-domain law: leave one domain out", ""]
        if len(doms) < 3:
            return lines + [f"Needs 3+ complete domains; complete now: {doms}.", ""]
        held, kw = doms, {}
        how = f"Fit on {len(doms) - 1} of the {len(doms)} domains ({', '.join(doms)}), predict the other's"
    else:
        lines = ["## 3b. Cross-domain law: domains no choice saw", ""]
        fit_on = [d for d in fit_on if d in doms]
        held, kw = [d for d in doms if d not in fit_on], {"fit_on": fit_on}
        if len(fit_on) < 2 or not held:
            return lines + [f"Needs 2+ complete domains to fit and 1+ to hold out; complete now: {doms}.", ""]
        sizes = ", ".join(dl.format_count(n) for n in sorted(small["model_size"].unique()))
        how = (f"Fit once on {', '.join(fit_on)} (the domains every choice was made on), predict each of "
               f"{', '.join(held)} (never used to choose anything) on its sizes ({sizes} parameters): its")
    df = small[small["domain"].isin(doms)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = dl.leave_one_domain_out(df, method="calibrated", **kw)  # with the in-domain fits, once (2-size probe)
        out = [ours, *(dl.leave_one_domain_out(df, method="calibrated", unit=u, in_domain=False, probe_sizes=1, **kw)
                       for u in ("nats", "bpb"))]
        out += [dl.leave_one_domain_out(df, method="paper", unit=unit, k_definition=k, in_domain=False, **kw)
                for unit in ("nats", "bpb") for k in ("k1", "k1+k2")]
    table = pd.concat(out, ignore_index=True)
    own = ours.set_index(["domain", "target"])[["r2_in_domain", "huber_in_domain"]]
    table = table.drop(columns=["r2_in_domain", "huber_in_domain"]).join(own, on=["domain", "target"])
    table["variant"] = np.where(table["method"] == "paper", "paper, K=" + table["k_definition"] + ", " + table["unit"],
                                "calibrated (ours), " + np.where(table["probe_sizes"] > 1, "2-size probe, ", "")
                                + table["unit"])
    wide = table.pivot_table(index=["domain", "target"], columns="variant", values="r2_cross")
    wide["in-domain D-CPT"] = own["r2_in_domain"]
    med = wide.groupby(level="target").median()
    med.index = pd.MultiIndex.from_tuples([("median over domains", t) for t in med.index], names=wide.index.names)
    wide = pd.concat([wide, med])
    share = table.groupby("variant")["probe_compute_share"].max()
    share = {"calibrated, 1 size": share["calibrated (ours), nats"], "calibrated, 2 sizes":
             share["calibrated (ours), 2-size probe, nats"], "paper": share[share.index.str.startswith("paper")].max()}
    return lines + verdict(wide) + [
        how + " whole grid from its probe alone. R^2 on that grid; the in-domain D-CPT fit (trained on the grid "
        "itself) is the ceiling. Probe compute as a share of the domain's full grid (6ND summed): "
        + ", ".join(f"{m} {v:.2%}" for m, v in share.items()) + ".", "",
        md(wide, index=True), "", "Every number (Huber, MAPE):", "", md(table), ""]


def new_domain_grid(data: pd.DataFrame) -> pd.DataFrame:
    """Section 3b's rows: seed 0 of the chosen and the held-out domains at NEW_DOMAIN_SIZES and PAPER_RATIOS (and the
    base models, once: several tables log the same base model), with the run settings every such domain ran
    (RUN_SETTINGS)."""
    df = with_settings(data, RUN_SETTINGS)
    keep = (df["size_name"].isin(NEW_DOMAIN_SIZES) & (df["seed"] == 0)
            & df["domain"].isin(CHOSEN_DOMAINS + HELD_OUT_DOMAINS)
            & ((df["tokens"] == 0) | np.isclose(df["domain_ratio"].to_numpy(float)[:, None], PAPER_RATIOS).any(axis=1)))
    return df[keep].drop(columns="table").drop_duplicates(["domain", "model_size", "tokens", "domain_ratio", "seed"])


def verdict(wide: pd.DataFrame) -> list[str]:
    """The K definition, unit and probe decision, read off the medians over held-out domains (domain loss)."""
    med = wide.loc["median over domains"].T  # variant x target
    paper = med[med.index.str.startswith("paper")]["domain"]
    best = {u: paper[paper.index.str.endswith(u)].idxmax() for u in ("nats", "bpb")}
    ours = {u: med.loc[f"calibrated (ours), {u}", "domain"] for u in ("2-size probe, nats", "nats", "bpb")}
    return [
        "Median R^2 over held-out domains, domain loss. The paper's form: "
        + ", ".join(f"{v.removeprefix('paper, ')} {paper[v]:.3g}" for v in paper.index)
        + "; its best K is " + " and ".join(f"{best[u].split(', ')[1]} in {u}" for u in best)
        + f". The calibrated law, probed at the two smallest sizes (its default: the new domain's size coefficient "
        f"A is its own): {ours['2-size probe, nats']:.3g}; probed at the smallest alone (A shared across domains, so "
        f"the unit matters): {ours['nats']:.3g} in nats per token, {ours['bpb']:.3g} in bits per byte. Goal: R^2 "
        ">= 0.95 on both losses at <= 2% of the compute; the table shows where it is met and where not.", ""]


def plan_extra(small: pd.DataFrame, held: pd.DataFrame, step: float = 0.03, laws=None, label: str = "",
               seeds=(0,), out: str = "small_runs/results/heldout_extra", tolerance: float = TOLERANCE,
               fit_with=()) -> list[Path]:
    """Write small_runs/configs/heldout_extra_<label>_<domain>.toml (label defaults to the held-out size's
    name; one label per experiment of :data:`EXPERIMENTS`): the held-out size at the two ratios next
    to the prediction of each of ``laws`` (default :data:`EXTRA_LAWS`; usage 1 at ``tolerance``), from fits on
    the small sizes and L_g0 of the held-out base model, so the regret can be measured. Ratios within
    step/2 of a trained or already planned one are left out. Needs the held-out base rows; the runs start from
    base models pre-trained on as many tokens as theirs, with ``seeds``, into the table ``out``. ``fit_with``: more
    candidates fitted beside ``laws`` and not asked (the rest of a section's, so a pair's laws are the fits the
    section reads: a law only a pair uses is fitted on that pair's loss alone, under another key)."""
    laws = EXTRA_LAWS if laws is None else laws
    written = []
    template = "\n".join(ln for ln in (ROOT / "small_runs" / "configs" / "multidomain.toml").read_text().splitlines()
                         if not ln.startswith("#"))
    for dom in sorted(set(held["domain"]) & set(complete_domains(small))):
        base = held[(held["domain"] == dom) & (held["tokens"] == 0)]
        if base.empty:
            continue
        size = str(base["size_name"].iloc[0])
        taken = list(held.loc[(held["domain"] == dom) & (held["tokens"] > 0), "domain_ratio"].unique())
        extra, said = [], []
        N, G = float(base["model_size"].iloc[0]), float(base["general_loss"].iloc[0])
        D = float(small.loc[small["tokens"] > 0, "tokens"].max())
        answers = []
        fits = fit_candidates(small[small["domain"] == dom], dom, [*laws, *(c for c in fit_with if c not in laws)])
        for candidate, f in fits[:len(laws)]:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if candidate == dict(dl.RECOMMENDED_LAW):  # usage 1's default answer: the median of four routes
                    c = dl.usage1_consensus(f, small, N, D, tolerance, base_general_loss=G, domain=dom, warn=False)
                    answers.insert(0, (CONSENSUS + " (" + ", ".join(
                        f"{r.route} {r.ratio:.4f}" for r in c.answers.itertuples()) + ")", c.ratio))
                rec = c.law if candidate == dict(dl.RECOMMENDED_LAW) and c.law is not None else dl.predict_ratio(
                    N, D, fit=f, tolerance=tolerance, base_general_loss=G, warn=False)  # the law route's, not again
                answers.append((f.law, rec.ratio))
        for who, ratio in answers:
            said.append(f"{who} predicts r_d = {ratio:.4f}")
            for x in (round(float(np.clip(ratio + d, 0.0, 1.0)), 4) for d in (-step, step)):
                if all(abs(x - t) > step / 2 for t in taken):
                    extra.append(x)
                    taken.append(x)
        extra = sorted(extra)
        if not extra:
            continue
        name = f"heldout_extra_{label or size}_{dom}"
        fields = {"name =": f'name = "{name}"\nout = "{out}"', "sizes =": f'sizes = ["{size}"]',
                  "domains =": f'domains = ["{dom}"]', "ratios =": f"ratios = {extra}", "seeds =": f"seeds = {list(seeds)}",
                  "base_tokens =": f"base_tokens = {int(base['base_tokens'].iloc[0]):_}" + (
                      f"\nbase_lr = {base['base_lr'].iloc[0]:g}" if "base_lr" in base and base["base_lr"].notna().iloc[0]
                      else ""), "lr =": f"lr = {base['lr'].iloc[0]:g}"}
        text = "\n".join(next((v for k, v in fields.items() if ln.startswith(k)), ln) for ln in template.splitlines())
        if "precision" in base and base["precision"].notna().iloc[0]:  # the held-out runs' (a GPU's default is bf16)
            text += f'\nprecision = "{base["precision"].iloc[0]}"'  # [train] is the template's last table
        path = ROOT / "small_runs" / "configs" / f"{name}.toml"
        path.write_text(f"# generated by `python -m small_runs.validate --plan-extra`: size {size}, fitted on "
                        f"{', '.join(sorted(set(small['size_name'])))}; {'; '.join(said)}\n" + text + "\n")
        written.append(path)
    return written


def experiment(data: pd.DataFrame, fitted, held_out, seeds: int = 1,
               settings: dict | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rows of the fitted sizes, rows of the held-out size), seed 0 only; with ``seeds`` > 1 the fitted rows of
    seeds 0 to ``seeds`` - 1, for the domains whose largest fitted size has CPT runs of all of them (the size whose
    seed noise the extrapolation carries furthest; m4x3 waits for s2's repeats of a domain, not only xs's).
    ``settings``: only the runs with these values in these columns (e.g. base_tokens; None: every run)."""
    data = with_settings(data, settings)
    if data.empty:
        return data, data
    if "seed" not in data.columns:
        data = data.assign(seed=0)
    small, held = data[data["size_name"].isin(fitted)], data[(data["size_name"] == held_out) & (data["seed"] == 0)]
    if seeds <= 1:
        return small[small["seed"] == 0], held
    small = small[small["seed"] < seeds]
    if small.empty:  # no fitted size swept yet: nothing repeated
        return small, held.iloc[:0]
    top = small.groupby("size_name")["model_size"].first().idxmax()
    cpt = small[(small["tokens"] > 0) & (small["size_name"] == top)]
    repeated = cpt.groupby("domain")["seed"].nunique().loc[lambda n: n >= seeds].index
    small = small[small["domain"].isin(repeated)]
    return small, held[held["domain"].isin(repeated)]


def experiment_domains(label: str) -> tuple[str, ...]:
    """The domains experiment ``label`` fits and scores (:data:`EXPERIMENT_DOMAINS`, else :data:`CHOSEN_DOMAINS`)."""
    return EXPERIMENT_DOMAINS.get(label, CHOSEN_DOMAINS)


def experiment_data(data: pd.DataFrame, label: str) -> pd.DataFrame:
    """The rows experiment ``label`` reads: its run settings and its domains."""
    data = with_settings(data, experiment_spec(label)[3])
    return data[data["domain"].isin(experiment_domains(label))] if not data.empty else data


def with_settings(data: pd.DataFrame, settings: dict | None) -> pd.DataFrame:
    """The rows whose columns hold ``settings`` (column -> value, e.g. base_tokens, lr; None: every row).
    ``"lr_by_size"``: size name -> CPT lr, the lr those sizes' rows hold instead of ``settings["lr"]`` (a sweep's
    ``lr_by_size``; a sweep logs its base rows, tokens 0, with its CPT lr too)."""
    if not settings or data.empty:
        return data
    by_size = settings.get("lr_by_size") or {}
    keep = np.ones(len(data), bool)
    for col, value in settings.items():
        if col == "lr_by_size":
            continue
        if col == "lr" and by_size:
            own = data["size_name"].map(by_size).fillna(value).to_numpy(float)
            keep &= np.isclose(data[col].to_numpy(float), own, rtol=1e-9, atol=0)
        else:
            keep &= np.isclose(data[col].to_numpy(float), value, rtol=1e-9, atol=0)
    return data[keep]


def experiment_spec(label: str) -> tuple[tuple, str, int, dict]:
    """(sizes fitted, size held out, seeds, run settings: RUN_SETTINGS updated by its fourth element)."""
    fitted, held_out, seeds, *own = EXPERIMENTS[label]
    return fitted, held_out, seeds, {**RUN_SETTINGS, **(own[0] if own else {})}


def experiment_title(label: str) -> str:
    fitted, held_out, seeds, settings = experiment_spec(label)
    tol = TOLERANCES.get(label, TOLERANCE)
    return f"{', '.join(fitted)} -> {held_out}" + _seeds_title(seeds, settings) + _domains_title(label) + (
        f", tolerance {tol:.0%}" if tol != TOLERANCE else "")


def _domains_title(label: str) -> str:
    """", held-out domains ..." for an experiment on domains no choice was made on; "" for the others."""
    own = EXPERIMENT_DOMAINS.get(label)
    return f", held-out domains {', '.join(own)}" if own else ""


def _seeds_title(seeds: int, settings: dict = RUN_SETTINGS) -> str:
    """The "(seeds 0-n, ...)" part of a title: the seeds fitted and the run settings (a dict with every key of
    RUN_SETTINGS, as :func:`experiment_spec` gives) that differ from RUN_SETTINGS."""
    parts = [f"seeds 0-{seeds - 1}"] * (seeds > 1)
    if settings["base_tokens"] != RUN_SETTINGS["base_tokens"]:
        parts.append(f"{dl.format_count(settings['base_tokens'])}-token bases")
    by_size = settings.get("lr_by_size") or {}
    if by_size:
        parts.append("CPT lr " + ", ".join(f"{size} {lr:g}" for size, lr in by_size.items())
                     + f", the others {settings['lr']:g}")
    elif settings["lr"] != RUN_SETTINGS["lr"]:
        parts.append(f"CPT lr {settings['lr']:g}")
    return f" ({', '.join(parts)})" if parts else ""


def held_out_seeds(seeds: int) -> int:
    """How many seeds of the held-out size an experiment's seed means read: 3 (0-2, every ratio they repeat),
    or as many as it fits on where that is more (0-5 over the 9 grid ratios)."""
    return max(3, seeds)


def section_laws(label: str) -> list | None:
    """The laws and pairs experiment ``label``'s held-out section fits (None: every candidate, :data:`CANDIDATES`)."""
    _, _, seeds, settings = experiment_spec(label)
    return (None if label in ALL_LAWS_EXPERIMENTS else LR_SEED_CANDIDATES[label] if label in LR_SEED_CANDIDATES
            else LONG_CANDIDATES if settings != RUN_SETTINGS else
            SIX_SEED_CANDIDATES if seeds > 3 else SEED_CANDIDATES if seeds > 1 else CORE_CANDIDATES)


def heldout_args(data: pd.DataFrame, label: str, figs: Path | None) -> tuple:
    """The arguments of :func:`heldout_section` for experiment ``label`` (figures into ``figs``, None: none)."""
    fitted, held_out, seeds, settings = experiment_spec(label)
    data = experiment_data(data, label)
    small, held = experiment(data, fitted, held_out, seeds)
    every_seed = data[(data["size_name"] == held_out) & data["domain"].isin(held["domain"].unique())
                      & (data["seed"] < held_out_seeds(seeds))]
    laws = section_laws(label)
    title = (f"{string.ascii_lowercase[list(EXPERIMENTS).index(label)]}. Held-out size {held_out}, fitted on "
             f"{', '.join(fitted)}" + _seeds_title(seeds, settings) + _domains_title(label))
    return small, held, figs, title, label, every_seed, laws, TOLERANCES.get(label, TOLERANCE)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "docs"))
    ap.add_argument("--quick", action="store_true", help="skip the slow ratio split")
    ap.add_argument("--plan-extra", nargs="*", metavar="LABEL", help="write the configs of the extra held-out runs "
                    f"next to the predicted optima of these experiments (default all: {', '.join(EXPERIMENTS)}), then stop")
    ap.add_argument("--summary", nargs="+", metavar="LABEL", help="print the medians over domains of these "
                    "experiments' held-out sections (every law, both losses, usage 1), from the stored fits where they "
                    "exist, then stop: no document, no figures")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="sections computed in parallel processes")
    ap.add_argument("--refit", action="store_true", help="ignore the stored fits and sections (fits/validate, "
                    "committed): recompute everything and overwrite them (each is keyed by its inputs and the code it "
                    "runs: dcpt_law's fitting modules, and for a section its functions here)")
    ap.add_argument("--rekey-from", metavar="COMMIT", help="after a change that moves code without changing a result "
                    "(a diagnostic, a module split): take each stored result missing under its key from the key the "
                    "code at COMMIT gave it (renamed; the first fit so taken is refitted to check it is the same)")
    a = ap.parse_args(argv)
    _use_store(FITS, a.refit, a.rekey_from)
    # PDFs without a creation date: a regeneration that changes no number changes no committed figure
    os.environ.setdefault("SOURCE_DATE_EPOCH", "0")
    started = time.time()
    out = Path(a.out)
    data = load(TABLES)
    if a.plan_extra is not None:
        for label in a.plan_extra or EXPERIMENTS:
            if label not in EXPERIMENTS:
                raise SystemExit(f"--plan-extra {label}: the experiments are {', '.join(EXPERIMENTS)}")
            fitted, held_out, seeds, settings = experiment_spec(label)
            # around the pairs its section fits anyway (and the consensus): no global search the document never uses
            laws = section_laws(label) or CANDIDATES
            extra = ({"laws": [c for c in laws if isinstance(c, dict)], "fit_with": laws} if settings == RUN_SETTINGS else
                     {"seeds": range(seeds), "out": EXTRA_OUT.get(label, LONG_EXTRA), "laws": laws})
            for p in plan_extra(*experiment(experiment_data(data, label), fitted, held_out, seeds), label=label,
                                tolerance=TOLERANCES.get(label, TOLERANCE), **extra):
                print(f"wrote {p}: run it with `dcpt sweep {p.relative_to(ROOT)}`")
        return
    if a.summary:
        for label in a.summary:
            if label not in EXPERIMENTS:
                raise SystemExit(f"--summary {label}: the experiments are {', '.join(EXPERIMENTS)}")
            tables = heldout_job(*heldout_args(data, label, None))[1]
            if not tables:
                print(f"{label}: no held-out runs yet")
                continue
            acc, use = summarise(tables["accuracy"], tables["usage"])
            print(f"## {label}: {experiment_title(label)}\n\n{md(acc, index=True)}\n\n{md(use, index=True)}\n")
        return
    (out / "figures").mkdir(parents=True, exist_ok=True)
    for old in (out / "figures").glob("heldout_*"):  # regenerated below: none of an older law set is left behind
        old.unlink()
    lines = ["# Validation", "", "Generated by `python -m small_runs.validate` from the committed loss tables "
             f"({', '.join(f'small_runs/results/{n}' for n in (*TABLES, USAGE2_TABLE, *dict.fromkeys(t for _, ts in USAGE2_PILOTS.values() for t in ts)))}); do not edit by hand.", ""]
    jobs = [(heldout_job, heldout_args(data, label, out / "figures")) for label in EXPERIMENTS]
    titles = {label: experiment_title(label) for label in EXPERIMENTS}
    small = experiment(data[data["table"].isin(GRID_TABLES)], SMALL_SIZES, None)[0]
    split_jobs = [(dom, law) for dom in complete_domains(small) for law in SPLIT_LAWS]
    jobs += [(cached_lines, (splits_law, small, dom, law, a.quick)) for dom, law in split_jobs]
    jobs += [(cached_lines, (cross_section, small)), (cached_lines, (cross_section, new_domain_grid(data), CHOSEN_DOMAINS)),
             (seeds_section, (data,)), (budget_section, (data,)), (ladder_section, (data,)),
             (usage2_section, (data, None, USAGE2_EXPERIMENTS, USAGE2_BUDGETS, out / "figures"))]
    if a.jobs > 1:
        with ProcessPoolExecutor(a.jobs, initializer=_use_store, initargs=(FITS, REFIT, REKEY_FROM)) as pool:
            parts = [fut.result() for fut in [pool.submit(fn, *args) for fn, args in jobs]]
    else:
        parts = [fn(*args) for fn, args in jobs]
    held_out = dict(zip(EXPERIMENTS, parts[:len(EXPERIMENTS)]))  # (lines, tables) of each heldout_job
    parts[:len(EXPERIMENTS)] = [lines_ for lines_, _ in held_out.values()]
    at, n = len(EXPERIMENTS), len(split_jobs)  # section 2: each domain's laws side by side
    split_rows = dict(zip(split_jobs, parts[at:at + n]))
    parts[at:at + n] = [["## 2. The paper's generalisation splits (small sizes)", ""]] + [
        splits_domain(dom, [split_rows[dom, law] for law in SPLIT_LAWS]) for dom in complete_domains(small)]
    lines += headline({k: (titles[k], t) for k, (_, t) in held_out.items()}, data)
    lines += [ln for part in parts for ln in part]
    path = out / "validation.md"
    path.write_text("\n".join(lines))
    print(f"wrote {path}")
    if not a.quick:  # every fit of the document was read or written by now
        gone = prune_fits(started)
        if gone:
            print(f"removed {len(gone)} stored fits the document no longer uses from {FITS}")


# this file as imported, and the sources of the stored sections and their helpers (see :func:`_code_version`)
_FILE_SOURCE = Path(__file__).read_text()
_SOURCES = {fn: inspect.getsource(fn) for fn in {globals()[name] for section, (_, helpers) in SECTION_SOURCES.items()
                                                 for name in (section, *helpers)}}

if __name__ == "__main__":
    main()
