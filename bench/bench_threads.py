"""Why thread settings matter on a shared CPU: seconds per training step of the tiny model (batch 8 x 2.5 s,
CNN frozen) in fresh processes with OpenMP's default waits (spin 300 000 times, then sleep), with sleeping
waits (OMP_WAIT_POLICY=PASSIVE), with crossling's short spin (GOMP_SPINCOUNT, set by `crossling.finetune`
and `crossling.evaluate` before torch loads) and with one thread; interleaved. `--busy N` keeps N other
busy processes running meanwhile, as on a shared machine.

    .venv/bin/python -m bench.bench_threads [--repeats 3] [--busy 2]
    .venv/bin/python -m bench.bench_threads --layout [--size micro]  # 2 processes x 1 thread vs 1 x 2
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np

from bench import common
from crossling import OPENMP_SPIN_COUNT

DEFAULT, PASSIVE, CROSSLING = ("OpenMP default (long spin)", "sleeping (OMP_WAIT_POLICY=PASSIVE)",
                               f"crossling (GOMP_SPINCOUNT={OPENMP_SPIN_COUNT})")
UNSET = common.OPENMP_DEFAULT_WAITS
VARIANTS = {DEFAULT: (UNSET, 0),
            PASSIVE: ({**UNSET, "OMP_WAIT_POLICY": "PASSIVE"}, 0),
            CROSSLING: ({**UNSET, "GOMP_SPINCOUNT": OPENMP_SPIN_COUNT}, 0),
            "one thread": (UNSET, 1)}


def child(threads: int, steps: int, size: str = "tiny") -> dict:
    import torch
    from transformers import Wav2Vec2ForCTC

    if threads:
        torch.set_num_threads(threads)
    config = common.model_config(size)
    config.vocab_size, config.pad_token_id, config.ctc_loss_reduction = 19, 0, "mean"
    torch.manual_seed(0)
    np.random.seed(0)  # SpecAugment's masks
    model = Wav2Vec2ForCTC(config)
    model.freeze_feature_encoder()
    values, labels = torch.randn(8, 40000), torch.randint(3, 19, (8, 20))
    mask = torch.ones_like(values, dtype=torch.bool)

    def step() -> float:
        loss = model(values, attention_mask=mask, labels=labels).loss
        loss.backward()
        return float(loss)

    step()
    start = time.perf_counter()
    losses = [step() for _ in range(steps)]
    return {"seconds_per_step": (time.perf_counter() - start) / steps, "loss": losses[-1],
            "threads": torch.get_num_threads()}


def layout(size: str, steps: int, repeats: int) -> int:
    """Steps per second of the `size` model: two 1-thread processes at once (each `steps` steps) against
    one 2-thread process (2 x `steps` steps), both with crossling's OpenMP setting; interleaved."""
    env = VARIANTS[CROSSLING][0]

    def one(threads: int, count: int) -> dict:
        return common.run_child("bench_threads", ["--child", str(threads), "--steps", str(count), "--size", size], env=env)

    def two_processes(rep: int) -> dict:
        with ThreadPoolExecutor(2) as pool:
            runs = list(pool.map(lambda _: one(1, steps), range(2)))
        return {"steps_per_second": sum(1 / r["seconds_per_step"] for r in runs), "loss": runs[0]["loss"]}

    def one_process(rep: int) -> dict:
        run = one(2, 2 * steps)
        return {"steps_per_second": 1 / run["seconds_per_step"], "loss": run["loss"]}

    results = common.interleaved({"2 processes x 1 thread": two_processes, "1 process x 2 threads": one_process},
                                 repeats)
    print("machine:", json.dumps(common.machine()))
    for name, runs in results.items():
        print(f"  {name:24s} " + " ".join(f"{r['steps_per_second']:.2f}" for r in runs) + f" steps/s ({size})")
    rates = {name: [r["steps_per_second"] for r in runs] for name, runs in results.items()}
    print(common.line(f"{size} training throughput, 2 processes x 1 thread / 1 process x 2 threads",
                      common.median_ratio(rates["2 processes x 1 thread"], rates["1 process x 2 threads"])))
    return 0


def _spin_forever() -> None:
    while True:
        pass


@contextmanager
def busy_processes(count: int):
    """`count` processes that keep a core busy each, for the duration of the block."""
    spinners = [multiprocessing.Process(target=_spin_forever, daemon=True) for _ in range(count)]
    for process in spinners:
        process.start()
    try:
        yield
    finally:
        for process in spinners:
            process.terminate()
            process.join()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="two repetitions")
    parser.add_argument("--busy", type=int, default=0, help="other busy processes running meanwhile")
    parser.add_argument("--layout", action="store_true",
                        help="throughput of two 1-thread processes at once against one 2-thread process")
    parser.add_argument("--size", default="tiny", choices=sorted(common.ARCHITECTURES), help="model (default tiny)")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        common.emit(child(args.child, args.steps, args.size))
        return 0
    repeats = 2 if args.quick else args.repeats
    if args.layout:
        return layout(args.size, args.steps, repeats)

    def runner(env: dict, threads: int):
        return lambda rep: common.run_child("bench_threads", ["--child", str(threads), "--steps", str(args.steps)],
                                            env=env)

    with busy_processes(args.busy):
        results = common.interleaved({name: runner(*v) for name, v in VARIANTS.items()}, repeats)
    print("machine:", json.dumps(common.machine()), f"(measured with {args.busy} other busy processes)")
    for name, runs in results.items():
        times = [r["seconds_per_step"] for r in runs]
        print(f"  {name:36s} " + " ".join(f"{t:.3f}" for t in times) + " s/step, "
              f"same loss: {len({round(r['loss'], 6) for r in runs}) == 1}")
    seconds = {name: [r["seconds_per_step"] for r in runs] for name, runs in results.items()}
    same = len({round(r["loss"], 6) for name in (DEFAULT, PASSIVE, CROSSLING) for r in results[name]}) == 1
    condition = f"{args.busy} other busy processes" if args.busy else "no other load"
    for baseline in (DEFAULT, PASSIVE):
        print(common.line(f"training step with {condition}, crossling's OpenMP setting vs {baseline} (speed-up)",
                          common.median_ratio(seconds[baseline], seconds[CROSSLING]),
                          note=f"identical loss with all three wait settings: {same}"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
