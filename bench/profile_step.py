"""Where a training step and a decoding batch of a small model spend their time: torch.profiler over the
demo's kind of step (frozen CNN replayed from its features, as crossling trains; fused Adam; one thread by
default) and over batched greedy decoding; prints the top operators by self time and their shares.

    .venv/bin/python -m bench.profile_step [--size micro] [--steps 20] [--threads 1]

With `--data-path`: the host time of one training batch made from the frozen-feature cache (LARGE's 512
CNN channels, the study's 200 s batches of 2-8 s clips), padded again for every step as crossling did up
to 08594d9 vs padded once per batch (`FrozenFeatureCache.padded`), side by side in the same run:

    .venv/bin/python -m bench.profile_step --data-path [--epochs 5] [--device cpu]
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


# --- the data path of cached features ------------------------------------------------------------------


def repadded_batch(training, indices, device, *, cache, read):
    """`batching._cached_batch` as it was up to 08594d9 (the baseline): the cached features padded, and a
    zero waveform made, for every step."""
    import torch

    from crossling import devices
    from crossling.batching import pad_labels
    from crossling.models import frames_for_samples, pad_features

    lengths = [training.utterances[i].num_samples for i in indices]
    features = [cache.features(i, lambda i=i: read(i)) for i in indices]
    mask = torch.arange(max(lengths))[None, :] < torch.tensor(lengths)[:, None]
    padded = pad_features(features, frames_for_samples(cache.model_config, max(lengths)))
    inputs = {"input_values": torch.zeros(mask.shape), "attention_mask": mask, "features": padded}
    inputs = {key: devices.to_device(value, device) for key, value in inputs.items()}
    return {**inputs, "labels": devices.to_device(pad_labels([training.labels[i] for i in indices]), device),
            "frames": [frames_for_samples(training.model_config, n) for n in lengths]}


def cached_training_set(minutes: float, batch_seconds: float, device: str, channels: int = 512):
    """A training set of `minutes` of 2-8 s clips whose CNN features (`channels` x 50 per second, random:
    the data path does not look at them) are in a `FrozenFeatureCache` on `device`."""
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2ForCTC

    from crossling.batching import BatchPlan, TrainingData
    from crossling.manifest import Utterance
    from crossling.models import FrozenFeatureCache, frames_for_samples

    config = Wav2Vec2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                            conv_dim=[channels] * 7, feat_extract_norm="layer", do_stable_layer_norm=True,
                            vocab_size=36)
    cache = FrozenFeatureCache(Wav2Vec2ForCTC(config).to(device), on_device=device != "cpu")
    seconds = common.durations(int(minutes * 60 / 5), 2.0, 8.0, seed=0)
    utterances = [Utterance(id=f"u{i}", audio=f"u{i}.wav", num_samples=int(s * common.RATE), text="a", sentence="a",
                            speaker="s", gender="female") for i, s in enumerate(seconds)]
    generator = torch.Generator().manual_seed(0)
    for index, utterance in enumerate(utterances):
        frames = frames_for_samples(config, utterance.num_samples)
        cache.store[index] = torch.randn(channels, frames, generator=generator).to(device)
    labels = [[3] * int(12 * u.duration) for u in utterances]
    plan = BatchPlan([u.duration for u in utterances], batch_seconds, seed=0)
    return TrainingData(data=None, utterances=utterances, labels=labels, skipped={}, plan=plan,
                        model_config=config), cache


def data_path(*, minutes: float = 30.0, batch_seconds: float = 200.0, epochs: int = 5, device: str = "cpu") -> dict:
    """Median host seconds per batch of the baseline (`repadded_batch`) and of `batching.make_batch`,
    alternating batch by batch over `epochs` epochs after one warm-up epoch (which pads each batch once)."""
    import statistics

    import torch

    from crossling.batching import DataPosition, make_batch

    training, cache = cached_training_set(minutes, batch_seconds, device)
    spec, position = cache.spec, DataPosition()

    def timed(make, indices) -> float:
        started = time.perf_counter()
        make(training, indices, device=device, cache=cache, read=None)
        if device.startswith("cuda"):
            torch.cuda.synchronize(device)
        return time.perf_counter() - started

    def new(training, indices, **kwargs):
        return make_batch(training, indices, spec, kwargs["device"], cache=kwargs["cache"])

    per_epoch = len(training.plan.epoch_batches(0))
    times: dict[str, list[float]] = {"repadded": [], "padded once": []}
    for step in range((1 + epochs) * per_epoch):
        indices, position = training.plan.take(position)
        order = (("repadded", repadded_batch), ("padded once", new))[:: 1 if step % 2 else -1]
        for name, make in order:
            seconds = timed(make, indices)
            if step >= per_epoch:  # the warm-up epoch pads every batch once
                times[name].append(seconds)
    medians = {name: statistics.median(values) for name, values in times.items()}
    return {"batches": len(times["repadded"]), "per_epoch": per_epoch, "device": device,
            "batch_seconds": batch_seconds, "minutes": minutes, **medians,
            "ratio": medians["repadded"] / medians["padded once"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-path", action="store_true", help="time the cached-feature data path instead")
    parser.add_argument("--epochs", type=int, default=5, help="--data-path: timed epochs after a warm-up one")
    parser.add_argument("--device", default="cpu", help="--data-path: where the feature cache is")
    parser.add_argument("--size", default="micro", choices=sorted(common.ARCHITECTURES))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the demo's: 1)")
    parser.add_argument("--rows", type=int, default=15)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    print("machine:", common.machine())
    if args.data_path:
        result = data_path(epochs=args.epochs, device=args.device)
        print(common.line("data path per cached batch (re-padded every step / padded once)", result["ratio"],
                          note=f"{result['repadded'] * 1e3:.2f} vs {result['padded once'] * 1e3:.2f} ms per "
                               f"{result['batch_seconds']:g} s batch, median of {result['batches']} batches each "
                               f"({result['per_epoch']} per epoch, {result['minutes']:g} min of audio), "
                               f"{result['device']}"))
        return
    profile(args.size, args.steps, args.rows)


if __name__ == "__main__":
    main()
