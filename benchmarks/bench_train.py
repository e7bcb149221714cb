"""Training throughput: our nanoGPT-style step against a Hugging Face ``Trainer`` loop.

    python benchmarks/bench_train.py [--size m] [--steps 60] [--batch 32] [--seq-len 128]

Same model (a tiny Llama from the ladder, same init), same token data (uint16 array), same batch
and sequence length, same AdamW settings, in one process, on CUDA when present (bf16 autocast)
else CPU. Both are timed after warm-up steps. Also prints model FLOP/s (6 * N_total * tokens/s)
against this machine's measured matmul peak (the same dtype the run uses).
Needs the [runs] extra and ``accelerate`` (HF Trainer's dependency).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from small_runs.models import ModelSpec, build_model, count_params  # noqa: E402
from small_runs.training import TrainConfig, get_batch, make_optimizer, pick_device, train_step  # noqa: E402


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_peak(device, n: int = 2048, reps: int = 10) -> float:
    """Measured FLOP/s of a square matmul (bf16 on CUDA, fp32 on CPU)."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    sync(device)
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n ** 3 * reps / (time.perf_counter() - t)


def ours(spec, tc, data, steps, warm, device) -> float:
    model = build_model(spec, seed=0).to(device).train()
    opt = make_optimizer(model, tc, device)
    for s in range(warm + steps):
        if s == warm:
            sync(device)
            t = time.perf_counter()
        x, y = get_batch(data, None, 0.0, s, 0, tc, device)
        train_step(model, opt, x, y, tc.lr, tc, device)
    sync(device)
    return steps * tc.tokens_per_step / (time.perf_counter() - t)


def hf_trainer(spec, tc, data, steps, warm, device) -> float:
    from transformers import Trainer, TrainerCallback, TrainingArguments

    T = tc.seq_len

    class Windows(torch.utils.data.Dataset):
        def __init__(self):
            self.rng = np.random.default_rng(0)

        def __len__(self):
            return (warm + steps) * tc.batch_size

        def __getitem__(self, i):
            s = int(self.rng.integers(0, len(data) - T - 1))
            ids = torch.from_numpy(data[s:s + T].astype(np.int64))
            return {"input_ids": ids, "labels": ids.clone()}

    class Clock(TrainerCallback):
        t0 = None

        def on_step_end(self, args, state, control, **kw):
            if state.global_step == warm:
                sync(device)
                Clock.t0 = time.perf_counter()

    args = TrainingArguments(
        output_dir="/tmp/dcpt-bench-trainer", per_device_train_batch_size=tc.batch_size, max_steps=warm + steps,
        learning_rate=tc.lr, weight_decay=tc.weight_decay, adam_beta1=0.9, adam_beta2=0.95,
        max_grad_norm=tc.grad_clip, lr_scheduler_type="constant", warmup_steps=0, logging_steps=10_000,
        save_strategy="no", report_to=[], dataloader_num_workers=0, use_cpu=device.type != "cuda",
        bf16=device.type == "cuda", disable_tqdm=True, seed=0)
    model = build_model(spec, seed=0)
    trainer = Trainer(model=model, args=args, train_dataset=Windows(), callbacks=[Clock()])
    trainer.train()
    sync(device)
    return steps * tc.tokens_per_step / (time.perf_counter() - Clock.t0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="m")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--vocab", type=int, default=4096)
    a = ap.parse_args()
    device = pick_device("auto")
    tc = TrainConfig(batch_size=a.batch, seq_len=a.seq_len)
    spec = ModelSpec(a.size, a.vocab, a.seq_len)
    data = np.random.default_rng(0).integers(0, a.vocab, 2_000_000).astype(np.uint16)
    counts = count_params(build_model(spec))
    print(f"device {device}, model {a.size}: {counts['non_embedding']:,} non-embedding / {counts['total']:,} total "
          f"params, batch {a.batch} x {a.seq_len} tokens, {a.steps} timed steps after {a.warmup} warm-up")
    peak = matmul_peak(device)
    r_ours = ours(spec, tc, data, a.steps, a.warmup, device)
    r_hf = hf_trainer(spec, tc, data, a.steps, a.warmup, device)
    for name, r in (("ours (nanoGPT-style loop)", r_ours), ("HF Trainer", r_hf)):
        mf = 6 * counts["total"] * r
        print(f"{name:<27} {r:10,.0f} tokens/s   {mf / 1e9:8.2f} GFLOP/s = {mf / peak:6.1%} of measured matmul peak "
              f"({peak / 1e9:.0f} GFLOP/s)")
    print(f"speed ratio ours / Trainer: {r_ours / r_hf:.2f}x (target >= 1.3x)")


if __name__ == "__main__":
    main()
