"""Sweep throughput: CPT runs in parallel worker processes (`dcpt sweep --jobs J`) against one process.

    python benchmarks/bench_parallel.py [--size xxs4] [--runs 12] [--jobs 12] [--cpt-tokens 262144]

One sweep (the committed fixture corpora of small_runs/configs/ci.toml, one domain, ``runs`` ratios from 0 to 1,
batch 32 x 128 like our real sweeps) is run twice from the same cached base model: all runs in this process,
then the same runs in ``jobs`` worker processes (bases first, then CPT runs side by side, each appending its rows
under the table's lock). Prints the wall time of each, the ratio, and the largest relative difference of the
logged losses between the two (the same runs: only float noise, from other thread counts or kernels).
Tiny models leave a GPU launch-bound, which is where workers side by side pay off; on a CPU they split the cores.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import dcpt_law as dl  # noqa: E402
from small_runs import sweeps  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="xxs4")
    ap.add_argument("--runs", type=int, default=12)
    ap.add_argument("--jobs", type=int, default=12)
    ap.add_argument("--cpt-tokens", type=int, default=262_144)
    a = ap.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="bench_parallel_"))
    cfg = sweeps.load_config(Path(__file__).resolve().parent.parent / "small_runs" / "configs" / "ci.toml")
    cfg = replace(cfg, sizes=[a.size], ratios=[round(float(r), 6) for r in np.linspace(0, 1, a.runs)],
                  cpt_tokens=a.cpt_tokens, eval_points=2, cache=str(root / "cache"))
    cfg.train["batch_size"], cfg.train["seq_len"], cfg.train["checkpoint_every"] = 32, 128, 10**9
    quiet = lambda m: None  # noqa: E731
    sweeps.run_sweep(replace(cfg, ratios=[0.0], out=str(root / "warm")), log=quiet)  # tokenizer, shards, base
    walls, tables = {}, {}
    for jobs in (1, a.jobs):
        t = time.perf_counter()
        path = sweeps.run_sweep(replace(cfg, out=str(root / f"jobs{jobs}")), jobs=jobs, log=quiet)
        walls[jobs] = time.perf_counter() - t
        tables[jobs] = dl.load_losses(path).sort_values(["run_id", "domain", "tokens"]).reset_index(drop=True)
    x, y = tables[1], tables[a.jobs]
    assert x["run_id"].equals(y["run_id"]), "the two sweeps logged different runs"
    diff = max(float(np.max(np.abs(y[c] / x[c] - 1))) for c in ("domain_loss", "general_loss"))
    tokens = a.runs * a.cpt_tokens
    print(f"{a.runs} CPT runs of {a.size}, {a.cpt_tokens:,} tokens each (device: {x['device'].iloc[0]}, "
          f"precision {x['precision'].iloc[0]})")
    for jobs, w in walls.items():
        print(f"  jobs={jobs:<3d} {w:7.1f} s  {tokens / w / 1e3:8.1f}K tok/s")
    print(f"speedup {walls[1] / walls[a.jobs]:.2f}x with {a.jobs} workers; max relative loss difference {diff:.1e}")


if __name__ == "__main__":
    main()
