"""One byte-level BPE for every run, and each corpus split tokenised once into a uint16 memmap.

The tokenizer is trained (HF ``tokenizers``) on a balanced sample of the given corpora: the same
number of bytes from each domain, so no domain owns the vocabulary. It is wrapped as a
``PreTrainedTokenizerFast`` and saved under ``<cache>/tokenizers/<key>/``, where the key hashes
the vocabulary size and the sha256 of every corpus it saw.

Shards: ``<cache>/tokens/<key>/<domain>.<split>.bin`` (uint16, documents joined by <|endoftext|>)
with ``.json`` metadata: tokens, bytes, bytes per token (to convert nats/token to bits/byte).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from dcpt_law._atomic import atomic_path, atomic_write

from .corpora import CLEANING_VERSION, load_manifest, read_docs

EOS = "<|endoftext|>"


def tokenizer_key(manifest: dict, domains: list[str], vocab_size: int) -> str:
    parts = [f"v{vocab_size}", f"c{CLEANING_VERSION}"] + [f"{d}:{manifest[d]['train']['sha256']}" for d in sorted(domains)]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:12]


def _sample(docs: list[str], budget: int) -> list[str]:
    """Every k-th document until ``budget`` bytes: spread over the corpus, deterministic."""
    total = sum(len(d) for d in docs)
    step = max(1, int(total / max(budget, 1)))
    out, size = [], 0
    for d in docs[::step]:
        out.append(d[:20000])
        size += len(out[-1])
        if size >= budget:
            break
    return out


def train_tokenizer(corpus_root: Path, cache: Path, domains: list[str] | None = None, vocab_size: int = 4096,
                    sample_bytes: int = 1_500_000, log=print):
    """Train (or load the cached) byte-level BPE on a balanced sample of ``domains``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    manifest = load_manifest(corpus_root)
    domains = sorted(domains or manifest)
    missing = [d for d in domains if d not in manifest]
    if missing:
        raise ValueError(f"corpora {missing} are not prepared in {corpus_root}: run `dcpt data prepare --domains {' '.join(missing)}`")
    key = tokenizer_key(manifest, domains, vocab_size)
    out = cache / "tokenizers" / key
    if (out / "tokenizer.json").exists():
        return PreTrainedTokenizerFast.from_pretrained(str(out)), key
    log(f"training byte-level BPE (vocab {vocab_size}) on {len(domains)} corpora: {', '.join(domains)}")
    sample = []
    for d in domains:
        sample += _sample(read_docs(corpus_root / d / "train.jsonl"), sample_bytes)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(sample, trainer=trainer)
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, bos_token=EOS, unk_token=None)
    tmp = out.with_name(key + ".tmp")
    wrapped.save_pretrained(str(tmp))
    (tmp / "dcpt_tokenizer.json").write_text(json.dumps({"domains": domains, "vocab_size": vocab_size}))
    if not out.exists():
        os.replace(tmp, out)
    return PreTrainedTokenizerFast.from_pretrained(str(out)), key


def load_tokenizer(path: str | os.PathLike):
    """A tokenizer saved with ``save_pretrained`` (ours, or a local HF model folder's), offline."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    blob = Path(path) / "tokenizer.json"
    key = hashlib.sha256(blob.read_bytes()).hexdigest()[:12] if blob.exists() else hashlib.sha256(str(path).encode()).hexdigest()[:12]
    return tok, key


def shard_path(cache: Path, key: str, domain: str, split: str) -> Path:
    return cache / "tokens" / key / f"{domain}.{split}.bin"


def tokenize_split(tokenizer, key: str, corpus_root: Path, cache: Path, domain: str, split: str,
                   max_tokens: int = 20_000_000) -> Path:
    """Tokenise one corpus split once into a memmap; return the path (cached by key)."""
    path = shard_path(cache, key, domain, split)
    meta_path = path.with_suffix(".json")
    if path.exists() and meta_path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    docs = read_docs(corpus_root / domain / f"{split}.jsonl")
    eos = tokenizer.convert_tokens_to_ids(tokenizer.eos_token) if tokenizer.eos_token else 0
    dtype = np.uint16 if len(tokenizer) < 65536 else np.uint32
    ids: list[int] = []
    n_bytes = 0
    for i in range(0, len(docs), 256):
        batch = docs[i:i + 256]
        for d, enc in zip(batch, tokenizer(batch, add_special_tokens=False)["input_ids"]):
            ids.extend(enc)
            ids.append(eos)
            n_bytes += len(d.encode("utf-8"))
        if len(ids) >= max_tokens:
            break
    arr = np.asarray(ids[:max_tokens], dtype=dtype)
    with atomic_path(path) as tmp:
        arr.tofile(tmp)
    used_bytes = n_bytes * min(1.0, max_tokens / max(len(ids), 1))
    meta = {"tokens": int(arr.size), "bytes": int(used_bytes), "bytes_per_token": used_bytes / max(arr.size, 1),
            "dtype": np.dtype(dtype).name, "domain": domain, "split": split, "tokenizer": key}
    atomic_write(meta_path, json.dumps(meta))
    return path


def open_shard(path: Path) -> tuple[np.memmap, dict]:
    meta = json.loads(path.with_suffix(".json").read_text())
    return np.memmap(path, dtype=np.dtype(meta["dtype"]), mode="r"), meta
