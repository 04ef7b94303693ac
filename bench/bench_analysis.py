"""Benchmark 5: statistics + report on a synthetic 864-run results table (16 checkpoints x 18 languages x
3 seeds, every column of the tidy contract): seconds for `crossling.report.analyse` (all statistics) and
for `crossling.report.write_report` (statistics, tables, figures, HTML/Markdown/LaTeX/CSV).

    .venv/bin/python -m bench.bench_analysis [--quick]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from crossling.languages import STUDY_LANGUAGES
from crossling.registry import RANDOM_INIT, REFERENCE_CHECKPOINTS


def study_table(seeds: int = 3, seed: int = 0) -> pd.DataFrame:
    """A results table shaped like the reference study's: CER = language difficulty + checkpoint quality +
    noise, women slightly worse than men, cost columns filled."""
    rng = np.random.default_rng(seed)
    checkpoints = [c.alias for c in REFERENCE_CHECKPOINTS] + [RANDOM_INIT]
    quality = {name: 0.4 if name == RANDOM_INIT else 0.01 * i for i, name in enumerate(checkpoints)}
    rows = []
    for li, language in enumerate(STUDY_LANGUAGES):
        for checkpoint in checkpoints:
            for s in range(seeds):
                cer = float(np.clip(0.1 + 0.02 * (li % 6) + quality[checkpoint] + rng.normal(0, 0.01), 0.01, 1))
                female, male = cer + 0.01 + rng.normal(0, 0.003), cer - 0.01 + rng.normal(0, 0.003)
                rows.append({
                    "run_id": f"{checkpoint}-{language}-s{s}", "checkpoint": checkpoint, "language": language,
                    "seed": s, "status": "done", "cer": cer, "wer": min(1.0, 3 * cer),
                    "char_edits": round(cer * 5000), "chars": 5000, "word_edits": round(min(1.0, 3 * cer) * 1000),
                    "words": 1000, "dev_cer": 0.98 * cer, "dev_wer": min(1.0, 2.9 * cer), "cer_female": female,
                    "cer_male": male, "char_edits_female": round(female * 2500), "chars_female": 2500,
                    "char_edits_male": round(male * 2500), "chars_male": 2500, "steps": 4000,
                    "wall_seconds": 3600.0 + rng.normal(0, 60), "device_hours": 1.0,
                    "audio_seconds_per_second": 5.0, "peak_memory_mb": 12000.0, "setting.learning_rate": 6e-5,
                })
    return pd.DataFrame(rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one repetition instead of three")
    parser.add_argument("--out", default=str(Path(tempfile.gettempdir()) / "crossling-bench" / "report"))
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    from crossling import report

    table = study_table()
    repeats = 1 if args.quick else 3
    analyse, write = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        report.analyse(table)
        analyse.append(time.perf_counter() - start)
        start = time.perf_counter()
        written = report.write_report(table, Path(args.out))
        write.append(time.perf_counter() - start)
    heavy = sorted(name for name in ("torch", "transformers") if name in sys.modules)
    summary = {"runs": len(table), "analyse_seconds": statistics.median(analyse),
               "write_report_seconds": statistics.median(write), "files": len(written), "heavy_imports": heavy}
    print(f"ANALYSIS {len(table)} runs: statistics {summary['analyse_seconds']:.2f} s, full report "
          f"{summary['write_report_seconds']:.2f} s ({len(written)} files in {args.out}); median of {repeats}; "
          f"torch/transformers imported: {', '.join(heavy) or 'no'}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
