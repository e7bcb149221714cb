"""The loss table: the interchange format between the runner and the fitter.

One row per evaluation. Required columns::

    domain        str    the domain corpus the run mixes in
    model_size    N      parameters (> 0); strings such as "1.8B" are accepted
    tokens        D      CPT tokens seen (>= 0); 0 marks a base-model evaluation
    domain_ratio  r_d    share of the CPT mixture that is domain data, in [0, 1]
    general_loss  nats   mean validation loss per token on the general corpus (finite, > 0)
    domain_loss   nats   mean validation loss per token on the domain corpus (finite, > 0)

Optional: ``seed``, ``run_id``, ``tokenizer`` (one value per table: losses per token from two tokenizers are
not comparable), ``base_general_loss`` (G: the general loss of the base model a CPT row
started from; filled from the base rows when absent); any other column is kept untouched.
Rows with ``tokens == 0`` are not fitted: they give the base losses L_g0 (and k1) and G.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from . import _warn
from .units import format_count, parse_counts

REQUIRED = ("domain", "model_size", "tokens", "domain_ratio", "general_loss", "domain_loss")
LOSS_COLUMNS = {"domain": "domain_loss", "general": "general_loss"}
BASE_GENERAL = "base_general_loss"  # G of the anchored laws (nats), per CPT row


def _rows(mask, index, limit: int = 5) -> str:
    bad = list(index[np.asarray(mask)])
    shown = ", ".join(str(i) for i in bad[:limit])
    more = f" and {len(bad) - limit} more" if len(bad) > limit else ""
    return f"row{'s' if len(bad) > 1 else ''} {shown}{more}"


def load_losses(source) -> pd.DataFrame:
    """Read and validate a loss table (DataFrame, or a .csv / .parquet path).

    Returns a new DataFrame with numeric columns as float. Raises ``ValueError`` naming the
    column, the offending rows and the fix; no row is ever dropped silently.
    """
    if isinstance(source, pd.DataFrame):
        df = source.copy()
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise ValueError(f"loss table {str(path)!r} does not exist: pass a CSV/Parquet path or a DataFrame")
        if path.suffix in (".parquet", ".pq"):
            df = pd.read_parquet(path)
        else:
            df = pd.read_csv(path)
    else:
        raise ValueError(f"loss table must be a DataFrame or a CSV/Parquet path, got {type(source).__name__}")

    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise ValueError(
            f"loss table is missing column(s) {missing}: it needs {list(REQUIRED)} "
            f"(found {list(df.columns)}); rename or add them"
        )
    if len(df) == 0:
        raise ValueError("loss table has no rows: run a sweep first (dcpt sweep CONFIG)")

    df = df.reset_index(drop=True)
    df["domain"] = df["domain"].astype(str)
    for col in ("model_size", "tokens"):
        try:
            df[col] = parse_counts(df[col].to_numpy(dtype=object), field=col)
        except ValueError as exc:
            raise ValueError(f"column {col!r}: {exc}") from None
    for col in ("domain_ratio", "general_loss", "domain_loss"):
        values = pd.to_numeric(df[col], errors="coerce")
        bad = values.isna() & df[col].notna()
        if bad.any():
            raise ValueError(
                f"column {col!r} has non-numeric values in {_rows(bad, df.index)}: "
                f"e.g. {df.loc[bad, col].iloc[0]!r}; fix or remove those rows"
            )
        df[col] = values.astype(float)

    for col in ("model_size", "tokens", "domain_ratio", "general_loss", "domain_loss"):
        bad = ~np.isfinite(df[col].to_numpy())
        if bad.any():
            raise ValueError(
                f"column {col!r} has NaN or infinite values in {_rows(bad, df.index)}: "
                "a diverged or missing evaluation; re-run it or remove those rows explicitly"
            )
    checks = [
        ("model_size", df["model_size"] <= 0, "must be > 0 (parameters)"),
        ("tokens", df["tokens"] < 0, "must be >= 0 (CPT tokens seen; 0 = base model)"),
        ("domain_ratio", (df["domain_ratio"] < 0) | (df["domain_ratio"] > 1),
         "must be in [0, 1] (the domain share of the mixture; give 0.25, not 25)"),
        ("general_loss", df["general_loss"] <= 0, "must be > 0 (mean loss per token, nats)"),
        ("domain_loss", df["domain_loss"] <= 0, "must be > 0 (mean loss per token, nats)"),
    ]
    for col, bad, fix in checks:
        if bad.any():
            raise ValueError(f"column {col!r} {fix}; bad values in {_rows(bad, df.index)}: e.g. {float(df.loc[bad, col].iloc[0]):g}")

    if "tokenizer" in df.columns:
        counts = df["tokenizer"].dropna().astype(str).value_counts()
        if len(counts) > 1:
            raise ValueError(
                f"column 'tokenizer' has {len(counts)} values ({', '.join(f'{k}: {n} rows' for k, n in counts.items())}): "
                "losses per token from different tokenizers are not comparable; fit one tokenizer's rows "
                "(df[df.tokenizer == ...]) or re-run the others"
            )
    key = ["domain", "model_size", "tokens", "domain_ratio"] + (["seed"] if "seed" in df.columns else [])
    # base-model rows (tokens == 0) are the same model whatever the ratio: dedupe on the rest
    dup = df.duplicated(key, keep=False) & (df["tokens"] > 0)
    if dup.any():
        raise ValueError(
            f"duplicate rows for the same {tuple(key)} in {_rows(dup, df.index)}: "
            "keep one evaluation per run and token count, or give repeats distinct 'seed' values"
        )
    return df


def with_base_general(df: pd.DataFrame) -> pd.DataFrame:
    """Column ``base_general_loss``: per row, the general loss of its base model, i.e. of the tokens == 0
    row with the same model_size (and seed, when the table has seeds; any domain: the base model is shared).
    Values the table already gives are kept; rows without a base row get NaN (the anchored laws say so)."""
    key = ["model_size"] + (["seed"] if "seed" in df.columns else [])
    base = df[df["tokens"] == 0].groupby(key)["general_loss"].mean().rename("_G")
    looked_up = df[key].join(base, on=key)["_G"]
    out = df.copy()
    given = pd.to_numeric(out[BASE_GENERAL], errors="coerce") if BASE_GENERAL in out.columns else looked_up * np.nan
    out[BASE_GENERAL] = given.where(given.notna(), looked_up).astype(float)
    return out


def check_one_pretraining(df: pd.DataFrame, what: str) -> None:
    """Warn (FitWarning) where ``df`` holds runs from base models pre-trained on several token counts (column
    ``base_tokens``, which our sweeps write): ``what`` reads the base model's general loss G as its size, and a
    lower G from longer pre-training is not worth what a lower G from a larger model is."""
    if "base_tokens" not in df.columns:
        return
    budgets = np.sort(df["base_tokens"].dropna().unique())
    if len(budgets) > 1:
        _warn.emit(f"{what} reads the base model's general loss G as its size, but these runs start from base models "
                   f"pre-trained on {len(budgets)} token counts ({', '.join(format_count(b) for b in budgets)}): on our "
                   "runs the domain loss after CPT fell 0.2-0.6% per 1% lower G from longer pre-training, against "
                   "0.7-2.7% per 1% lower G from a larger model (docs/validation.md, section 5). Fit one base_tokens "
                   "at a time, on base models pre-trained like the target's", _warn.FitWarning)


def fit_rows(df: pd.DataFrame, domain: str | None = None) -> pd.DataFrame:
    """Rows that a law is fitted to: one domain's CPT evaluations (tokens > 0), with their base
    model's general loss (:func:`with_base_general`)."""
    df = with_base_general(df)
    if domain is not None:
        if domain not in set(df["domain"]):
            raise ValueError(f"domain={domain!r} is not in the table (domains: {sorted(set(df['domain']))})")
        df = df[df["domain"] == domain]
    return df[df["tokens"] > 0]


def single_domain(df: pd.DataFrame, domain: str | None) -> str:
    """Resolve which domain to fit: the one given, or the table's only one."""
    domains = sorted(set(df["domain"]))
    if domain is None:
        if len(domains) != 1:
            raise ValueError(f"the table holds several domains {domains}: pass domain=... to pick one")
        return domains[0]
    if domain not in domains:
        raise ValueError(f"domain={domain!r} is not in the table (domains: {domains})")
    return domain


def law_inputs(df: pd.DataFrame, target: str) -> dict[str, np.ndarray]:
    """Arrays N, D, r (the ratio of the corpus being evaluated), G (the base model's general loss; NaN
    where unknown) and the observed loss."""
    if target not in LOSS_COLUMNS:
        raise ValueError(f"target={target!r}: use 'domain' or 'general' (or 'both' in fit())")
    r_d = df["domain_ratio"].to_numpy(float)
    return {
        "N": df["model_size"].to_numpy(float),
        "D": df["tokens"].to_numpy(float),
        "r": r_d if target == "domain" else 1.0 - r_d,
        "G": df[BASE_GENERAL].to_numpy(float) if BASE_GENERAL in df.columns else np.full(len(df), np.nan),
        "loss": df[LOSS_COLUMNS[target]].to_numpy(float),
    }


def base_losses(df: pd.DataFrame, domain: str | None = None) -> pd.DataFrame:
    """Base-model (tokens == 0) losses per model size: columns general_loss, domain_loss."""
    rows = df[df["tokens"] == 0]
    if domain is not None:
        rows = rows[rows["domain"] == domain]
    return rows.groupby("model_size")[["general_loss", "domain_loss"]].mean()


def run_groups(df: pd.DataFrame) -> np.ndarray:
    """Integer id of the run each row belongs to (``run_id`` if present, else N, r, seed)."""
    if "run_id" in df.columns:
        keys = df["run_id"].astype(str)
    else:
        cols = ["domain", "model_size", "domain_ratio"] + (["seed"] if "seed" in df.columns else [])
        keys = df[cols].astype(str).agg("|".join, axis=1)
    return pd.factorize(keys)[0]
