"""Sweeps: a TOML config -> base models -> CPT runs -> ``<out>/losses.csv``.

Config (``small_runs/configs/pilot.toml`` is a full example)::

    name = "pilot"
    sizes = ["xs", "s", "m"]            # from small_runs.models.LADDER
    domains = ["code"]
    ratios = [0, 0.1, 0.2, 0.333333, 0.5, 0.666667, 0.8, 0.9, 1]   # default: the paper's nine
    seeds = [0]
    base_tokens = 2_000_000             # general-corpus pre-training per size
    base_lr = 0.003                     # its peak learning rate (default: [train] lr, which CPT re-warms to)
    lr_by_size = {xxs = 0.03}           # CPT's peak lr for these sizes (default: [train] lr for every size)
    cpt_tokens = 1_000_000              # tokens per CPT run
    eval_points = 8                     # exponentially spaced from first_eval_tokens to cpt_tokens
    first_eval_tokens = 32_768
    [train]                             # small_runs.training.TrainConfig fields
    batch_size = 32

Every run is an independent, picklable :class:`RunJob`. Results are appended atomically (temp
file + rename, under a file lock) when a run finishes; a finished run is skipped on re-run; a
killed run resumes from its checkpoint with the same data order and gives the same rows.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np

from dcpt_law._atomic import atomic_path, atomic_write

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore

PAPER_RATIOS = (0.0, 0.1, 0.2, 1 / 3, 0.5, 2 / 3, 0.8, 0.9, 1.0)
PACKAGE_ROOT = Path(__file__).resolve().parent.parent


class ConfigError(ValueError):
    """A sweep config that cannot run; raised before any training starts."""


@dataclass
class SweepConfig:
    name: str = "sweep"
    sizes: list = field(default_factory=lambda: ["xs", "s", "m"])
    domains: list = field(default_factory=lambda: ["code"])
    ratios: list = field(default_factory=lambda: list(PAPER_RATIOS))
    seeds: list = field(default_factory=lambda: [0])
    base_tokens: int = 2_000_000
    base_lr: float = 0.0   # peak learning rate of the base models' pre-training; 0: [train] lr (CPT re-warms to it)
    lr_by_size: dict = field(default_factory=dict)  # size name -> CPT peak lr, in place of [train] lr for that size
    cpt_tokens: int = 1_000_000
    eval_points: int = 8
    first_eval_tokens: int = 32_768
    eval_tokens_list: list = field(default_factory=list)  # explicit evaluation token counts
    vocab_size: int = 4096
    general_domain: str = "general"
    tokenizer_corpora: list = field(default_factory=list)  # the BPE's training corpora; default general + domains
    out: str = ""          # default small_runs/results/<name>
    cache: str = ""        # default $DCPT_CACHE or ~/.cache/dcpt-law
    corpora: str = ""      # corpus root (folder with manifest.json); default <cache>/corpora
    hf_path: str = ""      # local Hugging Face model folder to use as the base instead of tiny Llamas
    train: dict = field(default_factory=dict)
    slurm: dict = field(default_factory=dict)

    # -- derived --------------------------------------------------------------------------------
    def eval_at(self) -> list[int]:
        if self.eval_tokens_list:
            return sorted(int(x) for x in self.eval_tokens_list)
        pts = np.geomspace(self.first_eval_tokens, self.cpt_tokens, self.eval_points)
        return sorted({int(round(p)) for p in pts})

    def train_config(self, size: str | None = None):
        """The CPT training config ([train]) of ``size``: its peak lr from ``lr_by_size`` where that names it."""
        from .training import TrainConfig

        tc = TrainConfig(**self.train)
        return replace(tc, lr=float(self.lr_by_size[size])) if size in self.lr_by_size else tc

    def base_train_config(self):
        """The training config of the base models: [train] with ``base_lr`` as the peak learning rate if set
        (``lr_by_size`` is CPT's alone: every size's base model is pre-trained at the same peak)."""
        tc = self.train_config()
        return replace(tc, lr=self.base_lr) if self.base_lr else tc

    def out_dir(self) -> Path:
        """``out`` (relative paths are relative to the repository root), default small_runs/results/<name>."""
        p = Path(self.out or Path("small_runs") / "results" / self.name)
        return p if p.is_absolute() else PACKAGE_ROOT / p

    def cache_dir(self) -> Path:
        from .corpora import cache_dir

        return cache_dir(self.cache or None)

    def corpus_root(self) -> Path:
        if self.corpora:
            p = Path(self.corpora)
            return p if p.is_absolute() else (PACKAGE_ROOT / p if not p.exists() else p)
        return self.cache_dir() / "corpora"

    def tokenizer_domains(self) -> list[str]:
        """The corpora the sweep's BPE is trained on: ``tokenizer_corpora``, by default the sweep's own (general +
        domains), so its losses do not depend on what else is prepared in the cache."""
        return sorted(set(self.tokenizer_corpora or [self.general_domain, *self.domains]))

    def to_dict(self) -> dict:
        return asdict(self)


def load_config(path, check_corpora: bool = True) -> SweepConfig:
    """Read and validate a sweep TOML; every problem is a :class:`ConfigError` before training.

    ``check_corpora=False`` skips the check that the corpora are prepared (for callers that
    prepare them next)."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config {str(path)!r} does not exist")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config {path}: not valid TOML ({exc})") from None
    known = {f.name for f in fields(SweepConfig)}
    if "eval_tokens" in raw:
        raw["eval_tokens_list"] = raw.pop("eval_tokens")
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"config {path}: unknown key(s) {unknown}; known keys are {sorted(known)}")
    cfg = SweepConfig(**raw)
    if not cfg.out:
        cfg.out = str(PACKAGE_ROOT / "small_runs" / "results" / cfg.name)
    validate(cfg, check_corpora)
    return cfg


# the numbers of a config: key -> (integer?, lowest, highest (None: none), what it is); both ends allowed, but a
# lowest of 0.0 (a float) means "> 0"
_NUMBERS = {"base_tokens": (True, 0, None, "general tokens of each base model's pre-training"),
            "cpt_tokens": (True, 1, None, "CPT tokens of each run"),
            "eval_points": (True, 2, None, "evaluations per run"),
            "first_eval_tokens": (True, 1, None, "tokens at the first evaluation"),
            "vocab_size": (True, 257, 65_536, "BPE vocabulary: the 256 bytes and EOS at least, uint16 token files")}
_TRAIN_NUMBERS = {"batch_size": (True, 1, None, "sequences per step"), "seq_len": (True, 1, None, "tokens per sequence"),
                  "lr": (False, 0.0, None, "peak learning rate"), "min_lr_frac": (False, 0, 1, "cosine floor / lr"),
                  "warmup_tokens": (True, 0, None, "warm-up tokens"),
                  "cooldown_frac": (False, 0, 1, "WSD cool-down share"), "weight_decay": (False, 0, None, "AdamW"),
                  "grad_clip": (False, 0, None, "gradient-norm clip, 0 off"),
                  "eval_tokens": (True, 1, None, "validation tokens per corpus"),
                  "checkpoint_every": (True, 1, None, "steps between checkpoints")}


def _check_numbers(values: dict, spec: dict, where: str) -> None:
    """Raise a ConfigError naming the first key of ``values`` that ``spec`` says is a number and that is not one in
    its range (TOML gives "1M" as a string: counts are plain integers here, 1_000_000)."""
    for key, (integer, lo, hi, what) in spec.items():
        if key not in values:
            continue
        v = values[key]
        kind = (int,) if integer else (int, float)
        strict = isinstance(lo, float) and lo == 0
        if (isinstance(v, bool) or not isinstance(v, kind) or v < lo or (strict and v == lo)
                or (hi is not None and v > hi)):
            span = "> 0" if strict else f">= {lo:g}" if hi is None else f"in [{lo:g}, {hi:g}]"
            raise ConfigError(f"{where}{key}={v!r}: give {'an integer' if integer else 'a number'} {span} ({what})"
                              + (" such as 1_000_000, not a string" if integer and isinstance(v, str) else ""))


def validate(cfg: SweepConfig, check_corpora: bool = True) -> None:
    from .corpora import DOMAINS, load_manifest
    from .models import LADDER
    from .training import PRECISIONS, TrainConfig

    bad = [s for s in cfg.sizes if s not in LADDER] if not cfg.hf_path else []
    if bad or not cfg.sizes:
        raise ConfigError(f"sizes: unknown {bad or 'empty list'}; use names from the ladder {list(LADDER)}")
    known_domains = set(DOMAINS)
    if check_corpora and Path(cfg.corpus_root(), "manifest.json").exists():
        known_domains |= set(load_manifest(cfg.corpus_root()))
    bad = [d for d in cfg.domains if d not in known_domains or d == cfg.general_domain]
    if bad or not cfg.domains:
        raise ConfigError(f"domains: unknown {bad or 'empty list'}; known domain corpora: {sorted(known_domains - {cfg.general_domain})}")
    bad = [d for d in cfg.tokenizer_corpora if d not in known_domains | {cfg.general_domain}]
    if bad or not isinstance(cfg.tokenizer_corpora, list):
        raise ConfigError(f"tokenizer_corpora: unknown {bad or cfg.tokenizer_corpora!r}; give a list of corpora from "
                          f"{sorted(known_domains | {cfg.general_domain})}, or leave it out to train the BPE on the "
                          "sweep's general and domain corpora")
    bad = [r for r in cfg.ratios if not isinstance(r, (int, float)) or not 0 <= r <= 1]
    if bad or not cfg.ratios:
        raise ConfigError(f"ratios: {bad or 'empty list'} outside [0, 1]; give domain shares such as 0.25 (not 25)")
    if len(set(cfg.ratios)) != len(cfg.ratios):
        raise ConfigError(f"ratios: duplicates in {cfg.ratios}")
    _check_numbers(vars(cfg), _NUMBERS, "")
    bad = [x for x in cfg.seeds if isinstance(x, bool) or not isinstance(x, int) or x < 0] if isinstance(cfg.seeds, list) else [cfg.seeds]
    if bad or not cfg.seeds:
        raise ConfigError(f"seeds: {bad or 'empty list'} are not seeds; give a list of integers >= 0, such as [0, 1, 2]")
    if not isinstance(cfg.base_lr, (int, float)) or cfg.base_lr < 0:
        raise ConfigError(f"base_lr={cfg.base_lr!r}: give the base models' peak learning rate (> 0), or 0 for the "
                          "[train] lr")
    if not isinstance(cfg.lr_by_size, dict):
        raise ConfigError(f"lr_by_size={cfg.lr_by_size!r}: give a table of size name -> CPT peak lr, such as "
                          "lr_by_size = {xxs = 0.03, xs = 0.01}")
    stray = sorted(set(cfg.lr_by_size) - set(cfg.sizes))
    if stray:
        raise ConfigError(f"lr_by_size: {stray} not among the sweep's sizes {cfg.sizes}; drop them or add the sizes")
    bad = {k: v for k, v in cfg.lr_by_size.items() if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0}
    if bad:
        raise ConfigError(f"lr_by_size: {bad} are not peak learning rates (numbers > 0)")
    unknown = sorted(set(cfg.train) - {f.name for f in fields(TrainConfig)})
    if unknown:
        raise ConfigError(f"[train]: unknown key(s) {unknown}; known: {[f.name for f in fields(TrainConfig)]}")
    _check_numbers(cfg.train, _TRAIN_NUMBERS, "[train] ")
    tc = cfg.train_config()
    if tc.schedule not in ("constant", "cosine", "wsd"):
        raise ConfigError(f"[train] schedule={tc.schedule!r}: use constant, cosine or wsd")
    if tc.precision not in PRECISIONS:
        raise ConfigError(f"[train] precision={tc.precision!r}: use auto (bf16 on CUDA, fp32 on CPU), bf16 or fp32 "
                          "(fp32 on CUDA gives losses comparable with CPU runs)")
    ev = cfg.eval_at()
    if ev[-1] > cfg.cpt_tokens or ev[0] <= 0:
        raise ConfigError(f"evaluation points {ev[0]}..{ev[-1]} must lie in (0, cpt_tokens={cfg.cpt_tokens}]: "
                          "lower first_eval_tokens / eval_tokens or raise cpt_tokens")
    if len(ev) < 2:
        raise ConfigError("need at least 2 distinct evaluation token counts per run (8 or more recommended)")
    if check_corpora:
        from .corpora import is_prepared

        root = cfg.corpus_root()
        needed = dict.fromkeys([cfg.general_domain, *cfg.domains, *cfg.tokenizer_domains()])
        missing = [d for d in needed if not is_prepared(root, d)]
        if missing:
            raise ConfigError(f"corpora {missing} are not prepared in {root}: run `dcpt data prepare --domains "
                              f"{' '.join(missing)}`" + (f" --cache {cfg.cache}" if cfg.cache else ""))


# --- jobs -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RunJob:
    """One unit of work: a base model (ratio None) or a CPT run. Picklable."""

    config: dict
    size: str
    seed: int
    domain: str = ""
    ratio: float | None = None

    @property
    def cfg(self) -> SweepConfig:
        return SweepConfig(**self.config)

    @property
    def is_base(self) -> bool:
        return self.ratio is None

    def base_key(self) -> str:
        c = self.cfg
        blob = {"size": self.size, "seed": self.seed, "base_tokens": c.base_tokens, "vocab": c.vocab_size,
                "train": asdict(c.base_train_config()), "tokenizer": tokenizer_for(c)[1], "hf": c.hf_path}
        blob["train"].pop("checkpoint_every", None)
        blob["train"].pop("device", None)
        blob["train"].pop("compile", None)
        blob["train"].pop("precision", None)  # like device: how, not what (logged per row)
        return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:12]

    def run_id(self) -> str:
        if self.is_base:
            return f"base-{self.size}-s{self.seed}-{self.base_key()}"
        c = self.cfg
        blob = {"base": self.base_key(), "domain": self.domain, "ratio": round(float(self.ratio), 6),
                "cpt_tokens": c.cpt_tokens, "eval_at": c.eval_at()}
        lr = c.train_config(self.size).lr
        if lr != c.base_train_config().lr:  # CPT's own peak (the base key holds the base's)
            blob["lr"] = lr
        h = hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:10]
        return f"{self.domain}-{self.size}-r{float(self.ratio):.3f}-s{self.seed}-{h}"

    def tokens(self) -> int:
        c = self.cfg
        return c.base_tokens if self.is_base else c.cpt_tokens


def plan(cfg: SweepConfig) -> tuple[list[RunJob], list[RunJob]]:
    """Base jobs (one per size and seed) and CPT jobs (size x domain x ratio x seed)."""
    d = cfg.to_dict()
    bases = [RunJob(d, s, seed) for s in cfg.sizes for seed in cfg.seeds]
    cpt = [RunJob(d, s, seed, dom, float(r)) for s in cfg.sizes for dom in cfg.domains
           for r in cfg.ratios for seed in cfg.seeds]
    return bases, cpt


# --- shared resources (cached per process) --------------------------------------------------------

_TOKENIZERS: dict = {}
_SHARDS: dict = {}


def tokenizer_for(cfg: SweepConfig):
    from .tokenizer import load_tokenizer, train_tokenizer

    domains = () if cfg.hf_path else tuple(cfg.tokenizer_domains())
    key = (str(cfg.corpus_root()), str(cfg.cache_dir()), cfg.vocab_size, cfg.hf_path, domains)  # saved in the cache
    if key not in _TOKENIZERS:
        if cfg.hf_path:
            _TOKENIZERS[key] = load_tokenizer(cfg.hf_path)
        else:
            _TOKENIZERS[key] = train_tokenizer(cfg.corpus_root(), cfg.cache_dir(), list(domains), cfg.vocab_size)
    return _TOKENIZERS[key]


def shard(cfg: SweepConfig, domain: str, split: str):
    from .tokenizer import open_shard, tokenize_split

    tok, tkey = tokenizer_for(cfg)
    key = (tkey, str(cfg.corpus_root()), str(cfg.cache_dir()), domain, split)
    if key not in _SHARDS:
        path = tokenize_split(tok, tkey, cfg.corpus_root(), cfg.cache_dir(), domain, split)
        _SHARDS[key] = open_shard(path)
    return _SHARDS[key]


def git_commit() -> str:
    """The code version logged with every row (not cached: a long sweep may span commits).
    ``$DCPT_GIT_COMMIT`` names it where the code runs from a copy without ``.git`` (a remote machine)."""
    from dcpt_law.provenance import git_commit as commit

    if os.environ.get("DCPT_GIT_COMMIT"):
        return os.environ["DCPT_GIT_COMMIT"]
    commit.cache_clear()
    return commit()


# --- the loss table -------------------------------------------------------------------------------

@contextlib.contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(str(path) + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def append_rows(path: Path, rows: list[dict]) -> None:
    """Append rows to the CSV atomically (whole new file + rename, under a lock). Never rewrites
    existing rows; new columns are added at the end."""
    import pandas as pd

    with _locked(path):
        new = pd.DataFrame(rows)
        if path.exists():
            old = pd.read_csv(path)
            cols = list(old.columns) + [c for c in new.columns if c not in old.columns]
            out = pd.concat([old, new], ignore_index=True)[cols]
        else:
            out = new
        with atomic_path(path) as tmp:
            out.to_csv(tmp, index=False, float_format="%.8g")


def check_tokenizer(cfg: SweepConfig, path: Path) -> None:
    """Refuse to add rows to a table logged with another tokenizer: losses per token are not comparable across
    tokenizers, and the key changes whenever a corpus does (another Python's stdlib for code, a re-prepared
    corpus), silently on a new machine."""
    import pandas as pd

    if not path.exists():
        return
    logged = pd.read_csv(path, usecols=lambda c: c == "tokenizer")
    if "tokenizer" not in logged.columns:
        return
    have = sorted(set(logged["tokenizer"].dropna().astype(str)))
    # the corpora of the table's BPE, where this cache trained it: checked before a BPE is trained for this config
    if len(have) == 1:
        made = cfg.cache_dir() / "tokenizers" / have[0] / "dcpt_tokenizer.json"
        if made.exists():
            domains = json.loads(made.read_text())["domains"]
            if domains != cfg.tokenizer_domains():
                raise ConfigError(f"{path} was tokenized with a BPE trained on {domains}, but this config trains it on "
                                  f"{cfg.tokenizer_domains()} (by default the sweep's general and domain corpora): "
                                  f"to extend the table, add `tokenizer_corpora = {json.dumps(domains)}` to the config")
    _, key = tokenizer_for(cfg)
    if have and have != [key]:
        raise ConfigError(f"{path} holds rows of tokenizer {', '.join(have)}, but the corpora here give tokenizer "
                          f"{key}: their losses are not comparable. The tokenizer's corpora changed: another "
                          f"`tokenizer_corpora` (now {cfg.tokenizer_domains()}; tables logged before 2026-11-27 "
                          "were tokenized on every corpus in the cache) or `dcpt data prepare` on another machine or "
                          "Python. Set `tokenizer_corpora`, write to a new `out`, or move the old rows away first")


def finished_runs(path: Path) -> set[str]:
    """Finished work in a loss table: CPT run ids, and ``run_id|domain`` for every base-model row
    (a base job is finished only once it has a row for every domain of the sweep)."""
    import pandas as pd

    if not path.exists():
        return set()
    logged = pd.read_csv(path, usecols=["run_id", "domain"]).astype(str)
    return set(logged["run_id"]) | set(logged["run_id"] + "|" + logged["domain"])


def is_finished(job: "RunJob", done: set[str]) -> bool:
    if job.is_base:  # domains added to a sweep later still need their tokens == 0 rows
        return all(f"{job.run_id()}|{d}" in done for d in job.cfg.domains)
    return job.run_id() in done


# --- executing one job ----------------------------------------------------------------------------

def _base_path(job: RunJob) -> Path:
    return job.cfg.cache_dir() / "bases" / f"{job.base_key()}.safetensors"


def _load_base(job: RunJob, device):
    from safetensors.torch import load_file

    from .models import ModelSpec, build_model

    cfg = job.cfg
    spec = ModelSpec(job.size, cfg.vocab_size, cfg.train_config().seq_len, cfg.hf_path)
    model = build_model(spec, seed=job.seed)
    path = _base_path(job)
    if path.exists():
        state = load_file(str(path))
        model.load_state_dict(state, strict=False)  # tied head is stored once
        return model, True
    return model, False


def _evaluator(cfg: SweepConfig, domains: list[str], device):
    from .training import estimate_loss, eval_windows

    tc = cfg.train_config()
    sets = {d: eval_windows(shard(cfg, d, "val")[0], tc) for d in domains}

    def evaluate(model):
        return {f"loss_{d}": estimate_loss(model, w, device, precision=tc.precision) for d, w in sets.items()}
    return evaluate


def _common_columns(job: RunJob, counts: dict, device) -> dict:
    import dcpt_law

    from .training import resolve_precision

    cfg, tc = job.cfg, job.cfg.train_config(job.size)
    _, tkey = tokenizer_for(cfg)
    return {
        "seed": job.seed, "size_name": job.size, "total_params": counts["total"],
        "base_tokens": cfg.base_tokens, **({"base_lr": cfg.base_lr} if cfg.base_lr else {}),
        "lr": tc.lr, "schedule": tc.schedule, "batch_size": tc.batch_size,
        "seq_len": tc.seq_len, "vocab_size": cfg.vocab_size, "tokenizer": tkey, "device": str(device),
        "precision": resolve_precision(tc.precision, device),
        "package_version": dcpt_law.__version__, "git_commit": git_commit(), "sweep": cfg.name,
    }


def ensure_base(job: RunJob, device, progress=None, log=print):
    """The base model of job.size/seed: loaded from the cache, else pre-trained now and cached.

    Returns (model, trained_now). Deterministic: the same config and seed give the same weights.
    """
    from safetensors.torch import save_file

    from .training import train

    cfg = job.cfg
    job = RunJob(job.config, job.size, job.seed)  # the base job of this size and seed
    model, cached = _load_base(job, device)
    if not cached and cfg.base_tokens > 0 and not cfg.hf_path:
        general = shard(cfg, cfg.general_domain, "train")[0]
        log(f"base {job.size} (seed {job.seed}): pre-training {cfg.base_tokens:,} general tokens")
        ckpt = cfg.out_dir() / "checkpoints" / f"{job.run_id()}.pt"
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        base_tc = cfg.base_train_config()
        base_tc = replace(base_tc, schedule="cosine") if base_tc.schedule == "wsd" else base_tc
        train(model, general, None, 0.0, cfg.base_tokens, [cfg.base_tokens], lambda m: {}, base_tc, device,
              seed=10_000 + job.seed, checkpoint=str(ckpt), progress=progress)
        path = _base_path(job)
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
        with atomic_path(path) as tmp:
            save_file(state, str(tmp))
        ckpt.unlink(missing_ok=True)
        return model.to(device), True
    return model.to(device), False


def run_base(job: RunJob, progress=None, log=print) -> list[dict]:
    """Train (or load) the base model for job.size/seed; return its tokens == 0 rows, one per domain."""
    from .models import count_params
    from .training import pick_device

    cfg, tc = job.cfg, job.cfg.train_config()
    device = pick_device(tc.device, tc.precision)
    t0 = time.time()
    model, _ = ensure_base(job, device, progress, log)
    evaluate = _evaluator(cfg, [cfg.general_domain, *cfg.domains], device)
    losses = evaluate(model)
    counts = count_params(model)
    common = _common_columns(job, counts, device)
    rows = []
    for d in cfg.domains:
        rows.append({"domain": d, "model_size": counts["non_embedding"], "tokens": 0, "domain_ratio": 0.0,
                     "general_loss": losses[f"loss_{cfg.general_domain}"], "domain_loss": losses[f"loss_{d}"],
                     "run_id": job.run_id(), **common, "step": 0, "train_loss": float("nan"),
                     "wall_s": time.time() - t0, **_bpt(cfg, d)})
    return rows


def _bpt(cfg: SweepConfig, domain: str) -> dict:
    return {"general_bytes_per_token": shard(cfg, cfg.general_domain, "val")[1]["bytes_per_token"],
            "domain_bytes_per_token": shard(cfg, domain, "val")[1]["bytes_per_token"]}


def run_cpt(job: RunJob, progress=None, log=print) -> list[dict]:
    """Continue pre-training the cached base on the job's mixture; return its loss-table rows."""
    from .models import count_params
    from .training import pick_device, train

    cfg, tc = job.cfg, job.cfg.train_config(job.size)
    device = pick_device(tc.device, tc.precision)
    model, rebuilt = ensure_base(job, device, log=log)
    evaluate = _evaluator(cfg, [cfg.general_domain, job.domain], device)
    if rebuilt:  # the cache was lost (new machine): the rebuilt base must match the logged one
        _check_rebuilt_base(job, evaluate(model), log)
    general = shard(cfg, cfg.general_domain, "train")[0]
    domain = shard(cfg, job.domain, "train")[0]
    ckpt = cfg.out_dir() / "checkpoints" / f"{job.run_id()}.pt"
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    counts = count_params(model)
    rows = train(model, general, domain, float(job.ratio), cfg.cpt_tokens, cfg.eval_at(), evaluate, tc, device,
                 seed=job.seed, checkpoint=str(ckpt), progress=progress)
    common = _common_columns(job, counts, device)
    out = []
    for r in rows:
        out.append({"domain": job.domain, "model_size": counts["non_embedding"], "tokens": r["tokens"],
                    "domain_ratio": float(job.ratio), "general_loss": r[f"loss_{cfg.general_domain}"],
                    "domain_loss": r[f"loss_{job.domain}"], "run_id": job.run_id(), **common, "step": r["step"],
                    "train_loss": r["train_loss"], "wall_s": r["wall_s"], **_bpt(cfg, job.domain)})
    ckpt.unlink(missing_ok=True)
    return out


def _check_rebuilt_base(job: RunJob, losses: dict, log=print, rtol: float = 1e-3) -> None:
    """Compare a re-trained base model's general loss with its logged tokens == 0 row, if any."""
    import pandas as pd

    cfg = job.cfg
    path = cfg.out_dir() / "losses.csv"
    base_id = RunJob(job.config, job.size, job.seed).run_id()
    if not path.exists():
        return
    logged = pd.read_csv(path)
    logged = logged[logged["run_id"].astype(str) == base_id]
    if logged.empty:
        return
    want, got = float(logged["general_loss"].iloc[0]), losses[f"loss_{cfg.general_domain}"]
    if abs(got - want) > rtol * want:
        msg = (f"base {job.size} seed {job.seed} was re-trained (cache lost) and its general loss {got:.5f} differs "
               f"from the logged {want:.5f}: this machine is not bit-reproducible with the one that logged it; "
               f"rows of this run mix two bases")
        warnings.warn(msg, RuntimeWarning, stacklevel=2)
        log("warning: " + msg)
    else:
        log(f"base {job.size} seed {job.seed}: re-trained base matches its logged loss ({got:.5f})")


def execute(job: RunJob, progress=None, log=print) -> str:
    """Run one job unless finished, append its rows; returns its run_id. The launchers call this."""
    path = job.cfg.out_dir() / "losses.csv"
    rid = job.run_id()
    done = finished_runs(path)
    if is_finished(job, done):
        return rid
    rows = run_base(job, progress, log) if job.is_base else run_cpt(job, progress, log)
    append_rows(path, [r for r in rows if f"{rid}|{r['domain']}" not in done])  # base: only missing domains
    return rid


# --- estimates and launchers ----------------------------------------------------------------------

def measure_throughput(cfg: SweepConfig, size: str, steps: int = 3) -> float:
    """Training tokens/s of one size on this machine, timed over a few steps (random tokens)."""
    import torch

    from .models import ModelSpec, build_model
    from .training import make_optimizer, pick_device, train_step

    tc = cfg.train_config()
    device = pick_device(tc.device, tc.precision)
    model = build_model(ModelSpec(size, cfg.vocab_size, tc.seq_len)).to(device)
    opt = make_optimizer(model, tc, device)
    x = torch.randint(0, cfg.vocab_size, (tc.batch_size, tc.seq_len), device=device)
    train_step(model, opt, x, x, tc.lr, tc, device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        train_step(model, opt, x, x, tc.lr, tc, device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * tc.tokens_per_step / (time.perf_counter() - t)


def job_tokens(job: RunJob) -> float:
    """Tokens a job trains, including WSD cool-down branches and evaluation forwards (~1/3 cost)."""
    cfg, tc = job.cfg, job.cfg.train_config()
    if job.is_base:
        return float(cfg.base_tokens)
    extra = tc.cooldown_frac * sum(cfg.eval_at()) if tc.schedule == "wsd" else 0.0
    evals = len(cfg.eval_at()) * 2 * tc.eval_tokens / 3
    return cfg.cpt_tokens + extra + evals


def dry_run(cfg: SweepConfig, log=print) -> dict:
    """List the runs with FLOPs (6 N_total D) and time estimated from measured throughput."""
    from .models import ModelSpec, build_model, count_params

    bases, cpt = plan(cfg)
    done = finished_runs(cfg.out_dir() / "losses.csv")
    rate, params = {}, {}
    for s in cfg.sizes:
        params[s] = count_params(build_model(ModelSpec(s, cfg.vocab_size, cfg.train_config().seq_len)))
        rate[s] = measure_throughput(cfg, s)
    total_s, total_f = 0.0, 0.0
    log(f"{'run':<46} {'N (non-emb)':>12} {'tokens':>10} {'FLOPs':>9} {'est. time':>10} status")
    for job in bases + cpt:
        toks = job_tokens(job)
        flops = 6 * params[job.size]["total"] * toks
        secs = toks / rate[job.size]
        status = "done" if is_finished(job, done) else "todo"
        if status == "todo":
            total_s += secs
            total_f += flops
        log(f"{job.run_id()[:46]:<46} {params[job.size]['non_embedding']:>12,} {int(toks):>10,} {flops:>9.2e} "
            f"{secs / 60:>9.1f}m {status}")
    log(f"{len(bases)} base + {len(cpt)} CPT runs; to do: {total_f:.3g} FLOPs, about {total_s / 60:.1f} min here "
        f"(measured: " + ", ".join(f"{s} {rate[s] / 1e3:.0f}K tok/s" for s in cfg.sizes) + ")")
    if cfg.lr_by_size:
        log("CPT peak lr: " + ", ".join(f"{s} {cfg.train_config(s).lr:g}" for s in cfg.sizes))
    return {"seconds": total_s, "flops": total_f, "runs": len(bases) + len(cpt)}


def grid_flops(cfg: SweepConfig) -> float:
    """Training FLOPs (6 N_total D) of a sweep's CPT grid, cool-down branches included."""
    from .models import ModelSpec, build_model, count_params

    _, cpt = plan(cfg)
    total = {s: count_params(build_model(ModelSpec(s, cfg.vocab_size, cfg.train_config().seq_len)))["total"]
             for s in cfg.sizes}
    return float(sum(6 * total[j.size] * job_tokens(j) for j in cpt))


def probe_config(cfg: SweepConfig, domain: str, probe_tokens: int | None = None,
                 n_sizes: int | None = None) -> SweepConfig:
    """The cheap measurement a new domain needs for the cross-domain laws: the base models of the
    ``n_sizes`` smallest sizes (default 2, or 1 where the config has one) and one run at r_d = 1 each for
    ``probe_tokens`` (default: half the sweep's CPT budget), evaluated at the sweep's evaluation points up to
    there. With a WSD schedule these are exactly the first evaluations of the full sweep's r_d = 1 runs, so
    probed and swept domains measure the same numbers. The paper's law uses k1 (base loss) and k2 (drop at the
    first point) of the smallest size; the calibrated law uses the whole probe curves, and with 2 sizes also the
    domain's own scaling in N."""
    from .models import LADDER

    P = int(probe_tokens or cfg.cpt_tokens // 2)
    n_sizes = min(2, len(cfg.sizes)) if n_sizes is None else n_sizes
    if not 1 <= n_sizes <= len(cfg.sizes):
        raise ValueError(f"n_sizes={n_sizes!r}: between 1 and the config's {len(cfg.sizes)} sizes")
    sizes = cfg.sizes[:n_sizes] if cfg.hf_path else sorted(cfg.sizes, key=list(LADDER).index)[:n_sizes]
    evals = [int(t) for t in cfg.eval_at() if t < P] + [P]
    return replace(cfg, name=f"{cfg.name}-probe-{domain}", sizes=sizes, domains=[domain], ratios=[1.0],
                   cpt_tokens=P, eval_tokens_list=evals, out=str(cfg.out_dir() / "probes" / domain),
                   lr_by_size={s: lr for s, lr in cfg.lr_by_size.items() if s in sizes})


def run_probe(cfg: SweepConfig, domain: str, probe_tokens: int | None = None, log=print,
              n_sizes: int | None = None) -> dict:
    """Run the probe of ``domain`` (resumable like a sweep); returns k1, k2 and its compute share."""
    import dcpt_law as dl
    from dcpt_law.cross_domain import measure_coefficients

    pcfg = probe_config(cfg, domain, probe_tokens, n_sizes)
    validate(pcfg)
    path = run_sweep(pcfg, log=log)
    coef = measure_coefficients(dl.load_losses(path), pcfg.eval_at()[0])[domain]
    share = grid_flops(pcfg) / grid_flops(replace(cfg, domains=[domain]))
    return {"domain": domain, "k1": coef.k1, "k2": coef.k2, "k2_tokens": coef.probe_tokens,
            "probe_tokens": pcfg.cpt_tokens, "model_size": coef.model_size, "sizes": list(pcfg.sizes),
            "compute_share": share, "losses": str(path)}


def record_config(cfg: SweepConfig, out: Path) -> Path:
    """Write the sweep's config and the code's git commit beside its loss table ``out``, atomically. The table's own
    sweep writes config.json; a sweep that adds runs to another sweep's table (extra ratios beside a grid) writes
    config-<name>.json and leaves the table's own record as it was (each row's ``sweep`` column names its file)."""
    path = out / "config.json"
    if path.exists() and json.loads(path.read_text()).get("name") != cfg.name:
        path = out / f"config-{cfg.name}.json"
    atomic_write(path, json.dumps({**cfg.to_dict(), "git_commit": git_commit()}, indent=1))
    return path


def _check_jobs(jobs) -> None:
    if not isinstance(jobs, int) or jobs < 1:
        raise ConfigError(f"jobs={jobs!r}: the number of parallel worker processes must be an integer >= 1")


def _unfinished(cfg: SweepConfig, log=print) -> tuple[Path, list[RunJob], list[RunJob]]:
    """Set up a sweep's table (tokenizer check, config record, the tokenizer and every shard, once, so that jobs
    only read) and list its unfinished base and CPT runs: (losses.csv, bases, CPT runs)."""
    out = cfg.out_dir()
    out.mkdir(parents=True, exist_ok=True)
    path = out / "losses.csv"
    check_tokenizer(cfg, path)
    record_config(cfg, out)
    for d in [cfg.general_domain, *cfg.domains]:
        shard(cfg, d, "train"), shard(cfg, d, "val")
    bases, cpt = plan(cfg)
    done = finished_runs(path)
    todo_b = [j for j in bases if not is_finished(j, done)]
    todo_c = [j for j in cpt if not is_finished(j, done)]
    skipped = len(bases) + len(cpt) - len(todo_b) - len(todo_c)
    log(f"sweep {cfg.name!r}: {len(todo_b)} base + {len(todo_c)} CPT runs to do, {skipped} finished and skipped "
        f"-> {path}")
    return path, todo_b, todo_c


def run_sweeps(cfgs: list[SweepConfig], jobs: int = 1, log=print) -> list[Path]:
    """Several sweeps on this machine in one pool of ``jobs`` workers: first each base model they need, once (sweeps
    that start from the same base model, such as extra ratios for several domains, share its cache), then the
    other base rows and every sweep's CPT runs side by side, so that a GPU stays full across small sweeps. Each
    sweep logs into its own table; returns their losses.csv paths."""
    _check_jobs(jobs)
    todo = [_unfinished(cfg, log) for cfg in cfgs]
    first: dict[str, RunJob] = {}
    again: list[RunJob] = []  # a base model another sweep trains first: loaded from the cache, its rows logged here
    for _, bases, _ in todo:
        for job in bases:
            if job.base_key() in first:
                again.append(job)
            else:
                first[job.base_key()] = job
    stages = (list(first.values()), again + [job for _, _, cpt in todo for job in cpt])
    _run_local(stages, jobs, log, " + ".join(cfg.name for cfg in cfgs))
    return [path for path, _, _ in todo]


def _run_local(stages, jobs: int, log, desc: str) -> None:
    """Run the stages' jobs on this machine, stage after stage: in ``jobs`` worker processes
    (:func:`run_parallel`), or in this one under a progress bar of tokens."""
    if jobs > 1:
        run_parallel(stages, jobs, log)
        return
    from tqdm.auto import tqdm

    todo = [job for stage in stages for job in stage]
    to_file = not sys.stderr.isatty()  # a log (nohup, CI): a refresh a minute, not hundreds of '\r' updates
    with tqdm(total=int(sum(job_tokens(j) for j in todo)), unit="tok", unit_scale=True, desc=desc,
              dynamic_ncols=True, mininterval=60.0 if to_file else 0.1) as bar:
        for job in todo:
            bar.set_postfix_str(job.run_id()[:32], refresh=not to_file)
            before = bar.n
            execute(job, progress=bar.update, log=bar.write if log is print else log)
            bar.update(max(0, int(before + job_tokens(job)) - bar.n))


def run_sweep(cfg: SweepConfig, launcher: str = "local", log=print, executor=None, jobs: int = 1) -> Path:
    """Run every unfinished job of the sweep; returns the path of losses.csv.

    launcher: ``local`` (this process; with ``jobs`` > 1, that many worker processes on this machine),
    ``slurm`` (submitit; ``executor`` may be any submitit executor, e.g. ``submitit.LocalExecutor`` in
    tests), ``ray`` (Ray tasks). Base models always finish before the CPT runs that start from them.
    """
    _check_jobs(jobs)
    path, todo_b, todo_c = _unfinished(cfg, log)
    if launcher == "local":
        _run_local((todo_b, todo_c), jobs, log, cfg.name)
    elif launcher == "slurm":
        if executor is None:
            try:
                import submitit
            except ImportError:
                raise ConfigError("launcher 'slurm' needs submitit: pip install 'dcpt-law[slurm]'") from None
            executor = submitit.AutoExecutor(folder=str(cfg.out_dir() / "submitit"))
            executor.update_parameters(**(cfg.slurm or {"timeout_min": 120, "gpus_per_node": 1}))
        for stage in (todo_b, todo_c):
            if stage:
                jobs = executor.map_array(execute, stage)
                for j in jobs:
                    j.result()
    elif launcher == "ray":
        try:
            import ray
        except ImportError:
            raise ConfigError("launcher 'ray' needs ray: pip install 'dcpt-law[ray]'") from None
        if not ray.is_initialized():
            ray.init()
        task = ray.remote(num_gpus=1 if _has_cuda() else 0)(execute)
        for stage in (todo_b, todo_c):
            ray.get([task.remote(j) for j in stage])
    else:
        raise ConfigError(f"launcher={launcher!r}: use local, slurm or ray")
    return path


def run_parallel(stages, jobs: int, log=print) -> None:
    """Run each stage's jobs in ``jobs`` worker processes (spawned: safe with CUDA), one stage after the
    other (bases, then the CPT runs that load them); every job appends its own rows under the table's
    file lock. Tiny models leave a GPU launch-bound, so several side by side fill it (benchmarks/
    bench_parallel.py: 1.95x with 12 workers on an H200, once each has minutes of work); on a CPU each
    worker gets cpu_count / jobs threads. A failed job does not stop the others: the
    first error is raised once its stage is done, and a re-run retries only what did not finish."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    stages = [s for s in stages if s]
    if not stages:
        return
    threads = str(max(1, (os.cpu_count() or 1) // jobs))
    with ProcessPoolExecutor(min(jobs, max(map(len, stages))), mp_context=mp.get_context("spawn"),
                             initializer=_init_worker, initargs=(threads,)) as pool:  # one pool: imports once
        for stage in stages:
            failed = []
            futures = {pool.submit(execute, job): job for job in stage}
            for i, fut in enumerate(as_completed(futures), 1):
                rid = futures[fut].run_id()
                try:
                    fut.result()
                    log(f"[{i}/{len(stage)}] {rid} done")
                except Exception as e:  # noqa: BLE001 - reported, then raised below
                    failed.append((rid, e))
                    log(f"[{i}/{len(stage)}] {rid} failed: {e!r}")
            if failed:
                raise RuntimeError(f"{len(failed)} of {len(stage)} runs failed (first: {failed[0][0]}); the "
                                   "finished ones are logged, re-run the sweep to retry the rest") from failed[0][1]


def _init_worker(n: str) -> None:
    """Worker initializer: each worker's share of the cores, on a GPU too (its host-side work would otherwise
    start a thread per core in every worker; training.pick_device reads DCPT_CPU_THREADS on a CPU), and an exit
    when the sweep that started it dies (:func:`exit_with_parent`)."""
    import torch

    os.environ["DCPT_CPU_THREADS"] = os.environ["OMP_NUM_THREADS"] = n
    torch.set_num_threads(int(n))
    exit_with_parent()


def exit_with_parent(poll_s: float = 1.0) -> None:
    """Exit this process within ``poll_s`` seconds of its parent's death. A sweep killed with SIGTERM or SIGKILL
    (``kill PID``, a scheduler's time limit) takes its workers with it, where they would go on training, holding the
    cores and appending rows of a sweep nobody waits for; the runs they leave resume from their last checkpoint on
    the next ``dcpt sweep``. A daemon thread polls the parent's pid (Linux and macOS alike, no signals)."""
    import threading

    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()
