"""Why thread settings matter on a shared CPU: seconds per training step of the tiny model (batch 8 x 2.5 s,
CNN frozen) in fresh processes with OpenMP's default spinning waits, with sleeping waits
(OMP_WAIT_POLICY=PASSIVE, what crossling sets before importing torch), and with one thread; interleaved.

    .venv/bin/python -m bench.bench_threads [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

from bench import common

VARIANTS = {"spinning (OpenMP default)": ({"OMP_WAIT_POLICY": None}, 0),
            "sleeping (OMP_WAIT_POLICY=PASSIVE)": ({"OMP_WAIT_POLICY": "PASSIVE"}, 0),
            "one thread": ({"OMP_WAIT_POLICY": None}, 1)}


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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="two repetitions")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        common.emit(child(args.child, args.steps))
        return 0
    repeats = 2 if args.quick else args.repeats

    def runner(env: dict, threads: int):
        return lambda rep: common.run_child("bench_threads", ["--child", str(threads), "--steps", str(args.steps)],
                                            env=env)

    results = common.interleaved({name: runner(*v) for name, v in VARIANTS.items()}, repeats)
    print("machine:", json.dumps(common.machine()))
    for name, runs in results.items():
        times = [r["seconds_per_step"] for r in runs]
        print(f"  {name:36s} " + " ".join(f"{t:.3f}" for t in times) + " s/step, "
              f"same loss: {len({round(r['loss'], 6) for r in runs}) == 1}")
    spin, sleep = (results[n] for n in list(VARIANTS)[:2])
    ratio = common.median_ratio([r["seconds_per_step"] for r in spin], [r["seconds_per_step"] for r in sleep])
    same = statistics.median(r["loss"] for r in spin) == statistics.median(r["loss"] for r in sleep)
    print(common.line("training step, sleeping vs spinning OpenMP waits (speed-up)", ratio,
                      note=f"identical loss: {same}"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
