"""Tiny Llama models (``transformers.LlamaForCausalLM``): a size ladder, or a local HF checkpoint.

Parameter counts are measured from the built model, never from a formula:
``non_embedding`` excludes the token embedding (and an untied output head); ``total`` is all.
The law's N is the non-embedding count (Kaplan et al. 2020): at these sizes the embedding
matrix would otherwise dominate N.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

import torch

# name -> (hidden, layers, heads, intermediate). Non-embedding params ~ layers * (4 h^2 + 3 h i).
LADDER: dict[str, tuple[int, int, int, int]] = {
    "xxs": (32, 2, 2, 96),      # ~0.03M
    "xs": (48, 2, 2, 128),      # ~0.06M
    "s2": (64, 2, 4, 176),      # ~0.10M: s with 2 layers, the largest fitted size of the >= 4x held-out test
    "s3": (56, 3, 4, 136),      # ~0.11M: 3 layers like s; the largest fitted size of the clean >= 4x held-out test
    "s": (64, 3, 4, 176),       # ~0.15M
    # the depth-matched ladder: 4 layers and 4 heads like m, only the width grows; N matches xxs, xs, s3 (+-9%)
    "xxs4": (24, 4, 4, 64),     # ~0.03M
    "xs4": (32, 4, 4, 88),      # ~0.05M
    "s4": (48, 4, 4, 120),      # ~0.11M: m is 4.17x s4
    # the same three with m's head shape: heads 24-32 wide (m: 4 x 24) instead of 6-12, so N, width and depth
    # stay those of xxs4, xs4, s4 and only the head count moves (it changes no parameter count)
    "xxs4h": (24, 4, 1, 64),    # ~0.03M, one 24-wide head
    "xs4h": (32, 4, 1, 88),     # ~0.05M, one 32-wide head
    "s4h": (48, 4, 2, 120),     # ~0.11M, two 24-wide heads
    "m": (96, 4, 4, 256),       # ~0.44M
    "l": (128, 6, 4, 352),      # ~1.2M
    "xl": (192, 6, 6, 512),     # ~2.7M
    "xxl": (256, 8, 8, 688),    # ~6.3M
    "xxxl": (384, 8, 8, 1024),  # ~14M
}


@dataclass(frozen=True)
class ModelSpec:
    """A tiny Llama: ``size`` from :data:`LADDER`, or ``hf_path`` for a local checkpoint folder."""

    size: str = "s"
    vocab_size: int = 4096
    seq_len: int = 128
    hf_path: str = ""

    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


def llama_config(spec: ModelSpec):
    from transformers import LlamaConfig

    if spec.size not in LADDER:
        raise ValueError(f"unknown model size {spec.size!r}: the ladder has {list(LADDER)}")
    hidden, layers, heads, inter = LADDER[spec.size]
    return LlamaConfig(vocab_size=spec.vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                       num_attention_heads=heads, num_key_value_heads=heads, intermediate_size=inter,
                       max_position_embeddings=spec.seq_len, tie_word_embeddings=True, rms_norm_eps=1e-5,
                       bos_token_id=0, eos_token_id=0, pad_token_id=0)


def build_model(spec: ModelSpec, seed: int = 0):
    """A freshly initialised tiny Llama (or the local HF checkpoint at ``spec.hf_path``)."""
    from transformers import AutoModelForCausalLM, LlamaForCausalLM

    if spec.hf_path:
        return AutoModelForCausalLM.from_pretrained(spec.hf_path, local_files_only=True, torch_dtype=torch.float32)
    torch.manual_seed(seed)
    cfg = llama_config(spec)
    cfg._attn_implementation = "sdpa"
    return LlamaForCausalLM(cfg)


def count_params(model) -> dict[str, int]:
    """Measured parameter counts: total and non-embedding (input embedding and untied head excluded)."""
    seen, total, emb = set(), 0, 0
    emb_params = {id(p) for p in model.get_input_embeddings().parameters()}
    out = model.get_output_embeddings()
    if out is not None:
        emb_params |= {id(p) for p in out.parameters()}
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        if id(p) in emb_params:
            emb += p.numel()
    return {"total": total, "non_embedding": total - emb}
