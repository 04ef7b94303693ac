"""Why thread settings matter on a shared CPU: seconds per training step of the tiny model (batch 8 x 2.5 s,
CNN frozen) in fresh processes with OpenMP's default waits (spin 300 000 times, then sleep), with sleeping
waits (OMP_WAIT_POLICY=PASSIVE), with crossling's short spin (GOMP_SPINCOUNT, set by `crossling.finetune`
and `crossling.evaluate` before torch loads) and with one thread; interleaved. `--busy N` keeps N other
busy processes running meanwhile, as on a shared machine.

    .venv/bin/python -m bench.bench_threads [--repeats 3] [--busy 2]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import time
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


def child(threads: int, steps: int) -> dict:
    import torch
    from transformers import Wav2Vec2ForCTC

    if threads:
        torch.set_num_threads(threads)
    config = common.model_config("tiny")
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
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        common.emit(child(args.child, args.steps))
        return 0
    repeats = 2 if args.quick else args.repeats

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
