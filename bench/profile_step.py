"""Where a training step and a decoding batch of a small model spend their time: torch.profiler over the
demo's kind of step (frozen CNN replayed from its features, as crossling trains; fused Adam; one thread by
default) and over batched greedy decoding; prints the top operators by self time and their shares.

    .venv/bin/python -m bench.profile_step [--size micro] [--steps 20] [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from bench import common

#: The demo's batches: 12 s of clips of at most 2.5 s.
BATCH, SECONDS = 5, 2.4


def _model(size: str):
    import torch
    from transformers import Wav2Vec2ForCTC

    config = common.model_config(size)
    config.vocab_size, config.pad_token_id, config.ctc_loss_reduction = 36, 0, "mean"
    config.mask_time_prob, config.mask_time_length = 0.05, 5
    torch.manual_seed(0)
    np.random.seed(0)
    model = Wav2Vec2ForCTC(config)
    model.freeze_feature_encoder()
    return model


def _table(prof, rows: int) -> str:
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1
    lines = [f"{'operator':58s} {'self ms':>9s} {'share':>7s} {'calls':>6s}"]
    for event in events[:rows]:
        lines.append(f"{event.key[:58]:58s} {event.self_cpu_time_total / 1e3:9.1f} "
                     f"{100 * event.self_cpu_time_total / total:6.1f}% {event.count:6d}")
    return "\n".join(lines)


def profile(size: str, steps: int, rows: int) -> None:
    import torch
    from torch.profiler import ProfilerActivity, profile

    from crossling.models import feature_encoder, replaying

    model = _model(size)
    samples = int(SECONDS * common.RATE)
    values = torch.randn(BATCH, samples)
    mask = torch.ones_like(values, dtype=torch.bool)
    labels = torch.randint(3, 36, (BATCH, 25))
    with torch.no_grad():
        features = feature_encoder(model)(values)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3, fused=True)

    def train_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with replaying(feature_encoder(model), features):
            loss = model(input_values=values, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()

    model.train()
    for _ in range(3):
        train_step()
    start = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            train_step()
    seconds = (time.perf_counter() - start) / steps
    flops = common.train_step_flops(model.config, [samples] * BATCH, 36)
    print(f"TRAIN STEP {size}: {1e3 * seconds:.1f} ms per step under the profiler, "
          f"{flops / seconds / 1e9:.1f} GFLOP/s of model FLOPs (batch {BATCH} x {SECONDS} s, CNN replayed)")
    print(_table(prof, rows))
    model.eval()
    with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        for _ in range(steps):
            model(input_values=values, attention_mask=mask).logits.argmax(-1)
        seconds = (time.perf_counter() - start) / steps
    print(f"DECODE BATCH {size}: {1e3 * seconds:.1f} ms per batch of {BATCH} x {SECONDS} s (CNN included)")
    print(_table(prof, rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="micro", choices=sorted(common.ARCHITECTURES))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the demo's: 1)")
    parser.add_argument("--rows", type=int, default=15)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    print("machine:", common.machine())
    profile(args.size, args.steps, args.rows)


if __name__ == "__main__":
    main()
