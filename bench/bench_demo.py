"""The main job end to end: `crossling demo` (or `--quick`) with this checkout and with a baseline commit,
alternating, in fresh processes; prints where a run's wall time goes (process start and imports, model
load, audio reads, frozen features, training steps, evaluation, saving, the rest of the run, data
preparation, statistics and report) and the ratio baseline / this of the whole demo's wall time.

    .venv/bin/python -m bench.bench_demo [--quick] [--baseline 820e587] [--repeats 2] [--json FILE]
    .venv/bin/python -m bench.bench_demo --quick --layout   # this checkout: 2 processes x 1 thread / 1 x 2
    .venv/bin/python -m bench.bench_demo --report FILE      # the tables of a --json FILE again

Phases are measured by wrapping crossling's own functions by name in the demo's processes (the grid
processes run `timed_run` instead of `crossling.finetune:run_finetune`), the same way for both checkouts;
a function one checkout lacks is simply not wrapped. Each phase's time is exclusive (an audio read inside
feature computation counts as an audio read only)."""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench import common

#: The commit before issue 19's work (main at 820e587), compared against by default.
DEFAULT_BASELINE = "820e587"
PHASES_ENV = "CROSSLING_BENCH_PHASES"

#: phase -> functions ('module:attribute' or 'module:Class.method') whose time is that phase's.
RUN_PHASES = {
    "model load": ["crossling.finetune:resolve", "crossling.finetune:load_tokenizer",
                   "crossling.finetune:load_for_finetuning", "crossling.finetune:load_model",
                   "crossling.finetune:load_processor"],
    "audio read": ["crossling.prepared:load_audio", "crossling.batching:load_audio", "crossling.sharing:load_audio"],
    "frozen features": ["crossling.models:FrozenFeatureCache.features"],
    "training steps": ["crossling.finetune:train"],
    "evaluation": ["crossling.finetune:evaluate_model"],
    "saving": ["crossling.finetune:save_hf", "crossling.finetune:ResumeFile.save",
               "crossling.finetune:write_json_atomic"],
}
IMPORTS, RUN_REST = "process start + imports", "rest of the run"
STUDY_PHASES = {"data preparation": "crossling.sources:prepare_source",
                "statistics + report": "crossling.demo:_analyse"}
ORDER = [IMPORTS, *RUN_PHASES, RUN_REST, *STUDY_PHASES]


# --- inside the demo's processes --------------------------------------------------------------------


class PhaseClock:
    """Exclusive wall time per phase: time goes to the innermost phase entered and not yet left (in the
    main thread; work in other threads, such as reading ahead, overlaps and is not counted)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._stack: list[str] = []
        self._since = time.perf_counter()

    def _switch(self) -> None:
        now = time.perf_counter()
        if self._stack:
            self.seconds[self._stack[-1]] = self.seconds.get(self._stack[-1], 0.0) + now - self._since
        self._since = now

    def wrap(self, phase: str, function):
        @functools.wraps(function)
        def timed(*args, **kwargs):
            if threading.current_thread() is not threading.main_thread():  # e.g. a prefetching reader
                return function(*args, **kwargs)
            self._switch()
            self._stack.append(phase)
            try:
                return function(*args, **kwargs)
            finally:
                self._switch()
                self._stack.pop()

        return timed

    def take(self) -> dict[str, float]:
        taken, self.seconds = self.seconds, {}
        return taken


CLOCK = PhaseClock()


def _install(phase: str, target: str) -> bool:
    """Replace the function `target` ('module:name' or 'module:Class.name') by a timed one; False if
    this checkout has no such function."""
    module_name, _, attribute = target.partition(":")
    try:
        owner = importlib.import_module(module_name)
    except ImportError:
        return False
    *path, name = attribute.split(".")
    for part in path:
        owner = getattr(owner, part, None)
    if owner is None or not callable(getattr(owner, name, None)):
        return False
    setattr(owner, name, CLOCK.wrap(phase, getattr(owner, name)))
    return True


def _record(row: dict) -> None:
    """One JSON line appended to the phases file (single short writes: safe from several processes)."""
    with open(os.environ[PHASES_ENV], "a", encoding="utf-8") as handle:
        handle.write(json.dumps(row) + "\n")


def _process_age() -> float:
    """Seconds since this process started (Linux: /proc), 0 where unknown."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


@functools.cache
def _install_run_phases() -> None:
    _record({"pid": os.getpid(), "kind": "process", "phases": {IMPORTS: _process_age()}})
    for phase, targets in RUN_PHASES.items():
        for target in targets:
            _install(phase, target)


def timed_run(**run):
    """The grid's run function in the bench: crossling's `run_finetune` with its phases timed."""
    _install_run_phases()
    from crossling.finetune import run_finetune

    CLOCK.take()
    started = time.perf_counter()
    try:
        return CLOCK.wrap(RUN_REST, run_finetune)(**run)
    finally:
        _record({"pid": os.getpid(), "kind": "run", "run": Path(run["out"]).name,
                 "wall": time.perf_counter() - started, "phases": CLOCK.take()})


def demo_child(out: Path, quick: bool, workers: int, forced: int) -> dict:
    """`crossling demo` in this process with the study phases timed, the runs going through `timed_run`
    and `forced` torch threads per grid process (the demo's own setting is 1)."""
    for phase, target in STUDY_PHASES.items():
        _install(phase, target)
    import crossling.executors
    import crossling.grid

    executor = crossling.executors.ProcessExecutor
    crossling.executors.ProcessExecutor = lambda workers, threads=None: executor(workers, threads=forced)

    crossling.grid.run_study = functools.partial(crossling.grid.run_study, run_function="bench.bench_demo:timed_run")
    from crossling.demo import run_demo

    imports = _process_age()
    summary = run_demo(out, quick=quick, workers=workers)
    _record({"pid": os.getpid(), "kind": "study", "phases": {**CLOCK.take(), IMPORTS: imports}})
    return {"runs": summary["runs"], "done": summary["done"], "mean_test_cer": summary["mean_test_cer"]}


# --- the comparison ---------------------------------------------------------------------------------


def baseline_checkout(commit: str, where: Path) -> Path:
    """A detached worktree of `commit` at `where` (the caller removes it) -> its source folder."""
    subprocess.run(["git", "-C", str(common.ROOT), "worktree", "add", "--detach", str(where), commit],
                   check=True, capture_output=True, text=True)
    return where / "src"


def measure(src: Path, *, quick: bool, workers: int, threads: int, scratch: Path) -> dict:
    """One demo in a fresh process with crossling from `src` -> wall seconds, phase seconds, per-run rows."""
    scratch.mkdir(parents=True, exist_ok=True)
    phases_file = scratch / "phases.jsonl"
    phases_file.unlink(missing_ok=True)
    out = scratch / "demo"
    shutil.rmtree(out, ignore_errors=True)
    env = {"PYTHONPATH": f"{src}{os.pathsep}{common.ROOT}", PHASES_ENV: str(phases_file)}
    args = ["--child", str(out), "--workers", str(workers), "--threads", str(threads), *(["--quick"] if quick else [])]
    started = time.perf_counter()
    result = common.run_child("bench_demo", args, env=env, timeout=4 * 3600)
    wall = time.perf_counter() - started
    rows = [json.loads(line) for line in phases_file.read_text(encoding="utf-8").splitlines()]
    return {"wall": wall, "rows": rows, "result": result}


def phase_totals(rows: list[dict]) -> dict[str, float]:
    """Seconds per phase summed over the demo's processes and runs."""
    totals = dict.fromkeys(ORDER, 0.0)
    for row in rows:
        for phase, seconds in row["phases"].items():
            totals[phase] = totals.get(phase, 0.0) + seconds
    return totals


def fixed_share(rows: list[dict]) -> float:
    """Per-run fixed cost (model load, saving, the rest of the run, and each process's start and imports
    spread over its runs) as a share of the runs' wall time."""
    runs = [r for r in rows if r["kind"] == "run"]
    fixed = sum(r["phases"].get(p, 0.0) for r in runs for p in ("model load", "saving", RUN_REST))
    imports = sum(r["phases"].get(IMPORTS, 0.0) for r in rows if r["kind"] == "process")
    wall = sum(r["wall"] for r in runs) + imports
    return (fixed + imports) / wall if wall else 0.0


def model_loads(rows: list[dict]) -> tuple[float, float]:
    """Mean model-load seconds of each process's first run (which imports transformers' model code) and
    of its later runs (nan if none)."""
    first: dict[int, float] = {}
    later: list[float] = []
    for row in (r for r in rows if r["kind"] == "run"):
        seconds = row["phases"].get("model load", 0.0)
        if row["pid"] in first:
            later.append(seconds)
        else:
            first[row["pid"]] = seconds
    return statistics.mean(first.values()), statistics.mean(later) if later else float("nan")


def report(results: dict[str, list[dict]]) -> list[str]:
    """The phase table (medians over repetitions) and the RATIO lines."""
    names = list(results)
    median = {n: {p: statistics.median(phase_totals(m["rows"]).get(p, 0.0) for m in results[n]) for p in ORDER}
              for n in names}
    lines = [f"{'phase (seconds summed over processes)':40s}" + "".join(f"{n:>22s}" for n in names)]
    for phase in ORDER:
        cells = []
        for n in names:
            total = sum(median[n].values()) or 1.0
            cells.append(f"{median[n][phase]:10.1f} s {100 * median[n][phase] / total:5.1f} %")
        lines.append(f"{phase:40s}" + "".join(f"{c:>22s}" for c in cells))
    runs = {n: statistics.median(sum(1 for r in m["rows"] if r["kind"] == "run") for m in results[n]) for n in names}
    lines.append(f"{'runs':40s}" + "".join(f"{runs[n]:>22.0f}" for n in names))
    for n in names:
        per_run = [statistics.mean(r["wall"] for r in m["rows"] if r["kind"] == "run") for m in results[n]]
        shares = [fixed_share(m["rows"]) for m in results[n]]
        walls = ", ".join(f"{m['wall']:.1f}" for m in results[n])
        loads = [model_loads(m["rows"]) for m in results[n]]
        lines.append(f"PHASES {n}: demo wall {walls} s; mean run wall {statistics.median(per_run):.1f} s; per-run "
                     f"fixed cost {100 * statistics.median(shares):.1f} %; model load {statistics.median(f for f, _ in loads):.2f} s "
                     f"in a process's first run, {statistics.median(x for _, x in loads):.2f} s in later runs")
    base, this = names
    walls = {n: [m["wall"] for m in results[n]] for n in names}
    lines.append(common.line(f"demo wall time, {base} / {this}", common.median_ratio(walls[base], walls[this]),
                             note=f"(median of {len(walls[this])} paired repetitions)"))
    for phase in ("training steps", "frozen features", "evaluation"):
        pairs = [(phase_totals(a["rows"])[phase], phase_totals(b["rows"])[phase])
                 for a, b in zip(results[base], results[this], strict=True)]
        if all(b > 0 for _, b in pairs):
            lines.append(common.line(f"{phase}, {base} / {this}", statistics.median(a / b for a, b in pairs)))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the quick demo (6 runs) instead of the full one")
    parser.add_argument("--baseline", default=DEFAULT_BASELINE, help=f"commit to compare with (default {DEFAULT_BASELINE})")
    parser.add_argument("--repeats", type=int, default=2, help="demos per checkout, alternating (default 2)")
    parser.add_argument("--workers", type=int, default=2, help="the demo's --workers (default 2)")
    parser.add_argument("--layout", action="store_true",
                        help="compare thread layouts of this checkout instead: 2 processes x 1 thread / 1 x 2")
    parser.add_argument("--json", type=Path, help="also write the measurements here")
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--report", type=Path, help="print the tables of a --json file again (no measuring)")
    args = parser.parse_args()
    if args.report:
        saved = json.loads(args.report.read_text(encoding="utf-8"))
        print(f"# {args.report}: {json.dumps(saved['machine'])}")
        print("\n".join(report(saved["results"])))
        return
    if args.child:
        common.emit(demo_child(args.child, args.quick, args.workers, args.threads))
        return
    scratch = Path(tempfile.mkdtemp(prefix="crossling-bench-demo-"))
    try:
        here = common.ROOT / "src"
        if args.layout:
            systems = {"1 process x 2 threads": (here, 1, 2), "2 processes x 1 thread": (here, 2, 1)}
        else:
            base = baseline_checkout(args.baseline, scratch / "baseline")
            systems = {f"baseline {args.baseline}": (base, args.workers, 1), "this checkout": (here, args.workers, 1)}
        print(f"# bench_demo {'--quick' if args.quick else '(full)'}: {json.dumps(common.machine())}", flush=True)
        results = common.interleaved({name: functools.partial(_measured, system=system, quick=args.quick,
                                                               scratch=scratch / f"system{index}")
                                      for index, (name, system) in enumerate(systems.items())}, args.repeats)
        print("\n".join(report(results)))
        print(f"# load average after: {os.getloadavg()}")
        if args.json:
            args.json.write_text(json.dumps({"machine": common.machine(), "results": results}, indent=1))
    finally:
        subprocess.run(["git", "-C", str(common.ROOT), "worktree", "remove", "--force", str(scratch / "baseline")],
                       capture_output=True)
        shutil.rmtree(scratch, ignore_errors=True)


def _measured(rep: int, *, system: tuple[Path, int, int], quick: bool, scratch: Path) -> dict:
    src, workers, threads = system
    result = measure(src, quick=quick, workers=workers, threads=threads, scratch=scratch / str(rep))
    print(f"# {src}: demo wall {result['wall']:.1f} s, load {os.getloadavg()[0]:.1f}, "
          f"cer {json.dumps(result['result']['mean_test_cer'])}", file=sys.stderr, flush=True)
    return result


if __name__ == "__main__":
    main()
