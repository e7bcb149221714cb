"""The training loop, read top to bottom: get_batch, get_lr, estimate_loss, train.

Two stages share it:
- base: pre-train a tiny model on the general corpus (r_d = 0) for ``base_tokens``;
- CPT: continue from the base on a general/domain mixture with domain share r_d, evaluating
  general and domain validation loss at exponentially spaced token counts D.

Mixture: step s holds floor(r B (s+1)) - floor(r B s) domain sequences out of B, so after any
number of steps the realised domain share is r_d to within one sequence.
Data order depends only on (seed, step): a resumed run sees exactly the batches it would have.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass

import numpy as np
import torch

from dcpt_law._atomic import atomic_path


@dataclass
class TrainConfig:
    batch_size: int = 32          # sequences per step
    seq_len: int = 128            # tokens per sequence
    lr: float = 3e-3              # peak learning rate (AdamW)
    min_lr_frac: float = 0.1      # cosine floor, as a fraction of lr
    warmup_tokens: int = 65_536   # linear warm-up
    schedule: str = "wsd"         # constant | cosine | wsd (constant + cool-down branch per eval)
    cooldown_frac: float = 0.2    # WSD: cool-down length as a fraction of the evaluated token count
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    eval_tokens: int = 32_768     # validation tokens per corpus (a fixed set)
    compile: bool = False         # torch.compile on CUDA
    device: str = "auto"          # auto | cpu | cuda | cuda:N
    precision: str = "auto"       # auto (bf16 autocast + TF32 on CUDA, fp32 on CPU) | bf16 | fp32 (no autocast, no TF32)
    checkpoint_every: int = 200   # steps between resumable checkpoints

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.seq_len


PRECISIONS = ("auto", "bf16", "fp32")


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> bf16 on CUDA, fp32 on CPU. fp32 on CUDA (TF32 off) gives losses comparable with CPU runs."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return precision


def pick_device(name: str = "auto", precision: str = "auto") -> torch.device:
    """CUDA when present (TF32 on unless ``precision`` is fp32), else CPU with every core ($DCPT_CPU_THREADS
    threads where set)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(name)
    if dev.type == "cuda":
        tf32 = resolve_precision(precision, dev) != "fp32"
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
    else:  # every core, or the share of one of several parallel workers (sweeps.run_sweep(jobs=...))
        torch.set_num_threads(max(1, int(os.environ.get("DCPT_CPU_THREADS") or os.cpu_count() or 1)))
    return dev


def autocast(device: torch.device, precision: str = "auto"):
    """bf16 autocast when ``precision`` resolves to bf16 (auto: on CUDA), else nothing (fp32)."""
    bf16 = resolve_precision(precision, device) == "bf16"
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)


def domain_count(step: int, ratio: float, batch: int) -> int:
    """Domain sequences in step ``step``: floor(r B (s+1)) - floor(r B s) (exact cumulative share)."""
    return int(math.floor(ratio * batch * (step + 1) + 1e-9) - math.floor(ratio * batch * step + 1e-9))


def get_batch(general: np.ndarray, domain: np.ndarray | None, ratio: float, step: int, seed: int,
              cfg: TrainConfig, device: torch.device):
    """Batch ``step`` of the mixture: random windows, the first n_dom from the domain shard."""
    B, T = cfg.batch_size, cfg.seq_len
    n_dom = domain_count(step, ratio, B) if domain is not None else 0
    rng = np.random.default_rng([seed, step])
    rows = []
    for src, n in ((domain, n_dom), (general, B - n_dom)):
        if n:
            starts = rng.integers(0, len(src) - T - 1, n)
            rows += [src[s:s + T + 1] for s in starts]
    data = torch.from_numpy(np.stack(rows).astype(np.int64))
    x, y = data[:, :-1], data[:, 1:]
    if device.type == "cuda":
        return x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
    return x, y


def get_lr(step: int, total_steps: int, cfg: TrainConfig, cooldown: tuple[int, int] | None = None) -> float:
    """Linear warm-up, then constant / cosine to min_lr_frac; a WSD cool-down branch (start, end)
    decays linearly to 0 over its steps."""
    warm = max(1, cfg.warmup_tokens // cfg.tokens_per_step)
    if step < warm:
        return cfg.lr * (step + 1) / warm
    if cooldown is not None:
        start, end = cooldown
        return cfg.lr * max(0.0, (end - step) / max(1, end - start))
    if cfg.schedule == "cosine":
        p = min(1.0, (step - warm) / max(1, total_steps - warm))
        return cfg.lr * (cfg.min_lr_frac + (1 - cfg.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * p)))
    return cfg.lr


def eval_windows(val: np.ndarray, cfg: TrainConfig) -> torch.Tensor:
    """The fixed validation set: consecutive windows from the start of the shard."""
    T = cfg.seq_len
    n = max(1, min(cfg.eval_tokens // T, (len(val) - 1) // T))
    return torch.from_numpy(np.stack([val[i * T:i * T + T + 1] for i in range(n)]).astype(np.int64))


@torch.no_grad()
def estimate_loss(model, windows: torch.Tensor, device: torch.device, batch: int = 64,
                  precision: str = "auto") -> float:
    """Mean next-token loss (nats) over the fixed validation windows."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(windows), batch):
        chunk = windows[i:i + batch].to(device)
        with autocast(device, precision):
            logits = model(input_ids=chunk[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.size(-1)),
                                                 chunk[:, 1:].reshape(-1), reduction="sum")
        total += float(loss)
        count += chunk[:, 1:].numel()
    model.train(was_training)
    return total / count


def make_optimizer(model, cfg: TrainConfig, device: torch.device):
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95), fused=device.type == "cuda")


def train_step(model, opt, x, y, lr: float, cfg: TrainConfig, device: torch.device) -> float:
    for g in opt.param_groups:
        g["lr"] = lr
    with autocast(device, cfg.precision):
        logits = model(input_ids=x).logits
    loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.size(-1)), y.reshape(-1))
    loss.backward()
    if cfg.grad_clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.item()


def eval_steps(eval_tokens: list[int], cfg: TrainConfig) -> list[int]:
    """Steps at which each evaluation token count is reached (rounded up to whole steps)."""
    return [max(1, math.ceil(d / cfg.tokens_per_step)) for d in eval_tokens]


def _save_checkpoint(path, model, opt, step, rows, extra):
    with atomic_path(path) as tmp:
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step, "rows": rows, **extra}, tmp)


def train(model, general: np.ndarray, domain: np.ndarray | None, ratio: float, total_tokens: int,
          eval_at: list[int], evaluate, cfg: TrainConfig, device: torch.device, seed: int = 0,
          checkpoint: str | None = None, progress=None) -> list[dict]:
    """Train ``total_tokens`` on the mixture; at each token count in ``eval_at`` call
    ``evaluate(model) -> dict`` and record ``{"tokens": D, "step": s, **evaluate(model)}``.

    Schedule ``wsd``: the main run keeps a constant LR; at each evaluation point a cool-down
    branch (the last ``cooldown_frac`` of the steps, LR -> 0) is trained from a copy and
    evaluated, then discarded. ``checkpoint``: file to resume from / save to.
    Returns the evaluation rows; each also has ``train_loss`` and ``wall_s``.
    """
    model.to(device).train()
    opt = make_optimizer(model, cfg, device)
    step_fn = train_step
    if cfg.compile and device.type == "cuda":
        model = torch.compile(model)
    total_steps = math.ceil(total_tokens / cfg.tokens_per_step)
    targets = eval_steps(eval_at, cfg)
    rows: list[dict] = []
    snapshots: dict[int, dict] = {}  # WSD: state at the start of each pending cool-down branch
    step = 0
    t0 = time.time()
    if checkpoint and os.path.exists(checkpoint):
        state = torch.load(checkpoint, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        step, rows = int(state["step"]), list(state["rows"])
        snapshots = {int(k): v for k, v in state.get("snapshots", {}).items()}
        t0 -= float(state.get("wall_s", 0.0))
    done = {r["step"] for r in rows}
    last = float("nan")

    def record(s, tokens_eval, model_eval):
        row = {"tokens": tokens_eval, "step": s, **evaluate(model_eval), "train_loss": last,
               "wall_s": time.time() - t0}
        rows.append(row)
        done.add(s)

    while step < total_steps or any(t not in done for t in targets):
        # evaluation points reached at this step (before training step `step`)
        for s_eval, d_eval in zip(targets, eval_at):
            if s_eval != step or s_eval in done:
                continue
            if cfg.schedule == "wsd":
                start = max(0, s_eval - max(1, round(cfg.cooldown_frac * s_eval)))
                snap = snapshots.pop(s_eval)  # the main run's state at step `start`
                branch = _clone(model, snap["model"])
                bopt = make_optimizer(branch, cfg, device)
                bopt.load_state_dict(snap["opt"])
                for s in range(start, s_eval):
                    x, y = get_batch(general, domain, ratio, s, seed, cfg, device)
                    step_fn(branch, bopt, x, y, get_lr(s, total_steps, cfg, (start, s_eval)), cfg, device)
                record(s_eval, d_eval, branch)
                del branch, bopt
            else:
                record(s_eval, d_eval, model)
        if step >= total_steps:
            break
        if cfg.schedule == "wsd":
            for s_eval in targets:
                start = max(0, s_eval - max(1, round(cfg.cooldown_frac * s_eval)))
                if start == step and s_eval not in done:
                    snapshots[s_eval] = {"model": _copy_state(model.state_dict()),
                                                "opt": _copy_state(opt.state_dict())}
        x, y = get_batch(general, domain, ratio, step, seed, cfg, device)
        last = step_fn(model, opt, x, y, get_lr(step, total_steps, cfg), cfg, device)
        if not math.isfinite(last):
            raise FloatingPointError(f"training diverged at step {step} (loss {last}); lower lr={cfg.lr}")
        step += 1
        if progress is not None:
            progress(cfg.tokens_per_step)
        if checkpoint and step % cfg.checkpoint_every == 0:
            _save_checkpoint(checkpoint, model, opt, step, rows,
                             {"wall_s": time.time() - t0, "snapshots": {str(k): v for k, v in snapshots.items()}})
    return sorted(rows, key=lambda r: r["tokens"])


def _copy_state(state):
    if isinstance(state, torch.Tensor):
        return state.detach().clone()
    if isinstance(state, dict):
        return {k: _copy_state(v) for k, v in state.items()}
    if isinstance(state, list):
        return [_copy_state(v) for v in state]
    return state


def _clone(model, state_dict):
    import copy

    m = copy.deepcopy(model)
    m.load_state_dict(state_dict)
    return m
