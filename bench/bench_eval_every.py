"""Benchmark: what dev CER during training costs. One demo-quick run (zoo-es on the quick demo's pt, seed 0,
its recipe) trained with eval_every = 0 (no dev evaluation before the end) and with the demo's eval_every,
alternating, in this session; prints the median wall seconds of each and their ratio, and the share of the
observed runs' wall time spent in dev evaluation as the runs themselves timed it (metrics.jsonl `seconds`),
which a busy shared machine disturbs far less than the difference of two wall times.

    .venv/bin/python -m bench.bench_eval_every PREPARED_ROOT [--repeats 2] [--every 100]

PREPARED_ROOT: a prepared folder holding pt, e.g. <demo out>/store/data/synthetic-<hash> after
`crossling demo --quick`.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prepared", type=Path)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--every", type=int, default=100)
    args = parser.parse_args()
    import torch

    from crossling.finetune import finetune
    from crossling.metrics import read_metrics
    from crossling.study import example_study_path, load_study

    torch.set_num_threads(1)  # as a demo grid worker
    recipe = load_study(example_study_path("demo-quick")).recipe
    seconds: dict[int, list[float]] = {0: [], args.every: []}
    evaluating: list[float] = []
    with tempfile.TemporaryDirectory() as scratch:
        for repeat in range(args.repeats):
            for every in (0, args.every):
                started = time.monotonic()
                finetune(args.prepared, "pt", "zoo-es", seed=0, out=Path(scratch) / f"{every}-{repeat}",
                         config=dataclasses.replace(recipe, eval_every=every), device="cpu")
                seconds[every].append(time.monotonic() - started)
                if every:
                    metrics = read_metrics(Path(scratch) / f"{every}-{repeat}")
                    evaluating.append(metrics.loc[metrics["kind"] == "dev", "seconds"].sum())
                print(f"eval_every {every}: {seconds[every][-1]:.1f} s", flush=True)
    base, observed = statistics.median(seconds[0]), statistics.median(seconds[args.every])
    print(f"median wall seconds: eval_every 0 {base:.1f}, eval_every {args.every} {observed:.1f}; "
          f"ratio {observed / base:.3f}")
    share = sum(evaluating) / sum(seconds[args.every])
    print(f"dev evaluation inside the observed runs: {sum(evaluating):.1f} s of {sum(seconds[args.every]):.1f} s "
          f"({100 * share:.1f} %): ratio {1 / (1 - share):.3f} against the same runs without it")


if __name__ == "__main__":
    main()
