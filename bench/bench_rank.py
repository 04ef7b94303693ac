"""Ranking vs fine-tuning compute: on one language of a shipped study (default: mini, pt), the wall time of
`crossling rank` over the study's checkpoints against fine-tuning each of them once with the study's recipe,
measured in the same process, one torch thread each, alternating (rank, fine-tune all; fine-tune all, rank;
...) so that load on a shared machine hits both alike. Prints one RATIO line per estimator (ranking with it
alone / fine-tuning every checkpoint once, and / the study's seeds of each, counted as that many times the
once-time; the issue's goal is <= 0.05). Library imports are paid before either side is timed.

    .venv/bin/python -m bench.bench_rank [--study mini] [--language pt] [--repeats 1] [--store DIR]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from bench import common

GOAL = 0.05


def rank_seconds(prepared: Path, study, language: str, out: Path) -> dict:
    """Wall seconds of ranking every checkpoint, per estimator (each as if it were the only one run)."""
    from crossling.rank import RankOptions, rank_language
    from crossling.rankrecord import ESTIMATORS

    started = time.perf_counter()
    record = rank_language(RankOptions(data=prepared, language=language, models=tuple(study.checkpoints),
                                       seed=study.seeds[0], threads=1, compare=True),
                           out=out / "rank.json")
    total = time.perf_counter() - started
    return {"total": total, **{name: record.seconds(name) for name in ESTIMATORS}}


def finetune_seconds(prepared: Path, study, language: str, out: Path, rep: int) -> dict:
    """Wall seconds of fine-tuning each checkpoint once (the study's first seed and recipe)."""
    from crossling.finetune import finetune

    seconds = {}
    for checkpoint in study.checkpoints:
        started = time.perf_counter()
        finetune(prepared, language, checkpoint, seed=study.seeds[0], out=out / f"{checkpoint}-{rep}", config=study.recipe,
                 device="cpu")
        seconds[checkpoint] = time.perf_counter() - started
    return {"total": sum(seconds.values()), **seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default="mini", help="a shipped study (default mini)")
    parser.add_argument("--language", default="pt")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--store", type=Path, default=None, help="study store holding (or to hold) its data")
    args = parser.parse_args()
    import crossling

    crossling.short_openmp_spin()  # before torch loads, as fine-tuning and ranking do
    import torch

    from crossling.grid import open_store
    from crossling.rank import load_frozen
    from crossling.sources import prepare_source
    from crossling.study import example_study_path, load_study

    torch.set_num_threads(1)
    study = load_study(example_study_path(args.study))
    work = Path(tempfile.mkdtemp(prefix="crossling-bench-rank-"))
    prepared = prepare_source(study.data, study.languages, open_store(study, args.store or work / "store"))
    load_frozen(study.checkpoints[0], 10, 0, "cpu")  # one-time imports, paid before either side is timed
    results = common.interleaved({
        "rank": lambda rep: rank_seconds(prepared, study, args.language, work),
        "finetune": lambda rep: finetune_seconds(prepared, study, args.language, work / "runs", rep),
    }, args.repeats)
    print(f"# {common.machine()}")
    once = [r["total"] for r in results["finetune"]]
    print(f"fine-tuning {len(study.checkpoints)} checkpoints once on {args.language}: "
          f"{statistics.median(once):.1f} s (median of {args.repeats}); ranking them with every estimator: "
          f"{statistics.median(r['total'] for r in results['rank']):.1f} s")
    for name in results["rank"][0]:
        if name == "total":
            continue
        ratio = common.median_ratio([r[name] for r in results["rank"]], once)
        seeds = len(study.seeds)
        print(f"RATIO rank ({name}) / fine-tune once ({args.study}, {args.language}): {ratio:.3f}x  "
              f"[goal <= {GOAL:g}x: {'met' if ratio <= GOAL else 'MISSED'}]; / the study's {seeds} seed(s) of each "
              f"(that time x {seeds}): {ratio / seeds:.3f}x  [{'met' if ratio / seeds <= GOAL else 'MISSED'}]")


if __name__ == "__main__":
    main()
