"""Shows that the speed-ups keep results: the same tiny fine-tuning run (tone-per-character data from the
tests) with the fused Adam + 16 s CPU decoding batches now used, and with the previous per-tensor Adam +
400 s batches; prints both runs' dev/test CER and how many test transcripts are identical.

    .venv/bin/python -m bench.check_numerics [--steps 200]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

from bench import common


def previous_optimizer(model, config):
    """crossling's optimizer before the change: Adam with torch's per-tensor loop."""
    import torch

    parameters = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.Adam(parameters, lr=config.learning_rate, betas=(config.adam_beta1, config.adam_beta2),
                            eps=config.adam_epsilon, weight_decay=config.weight_decay, foreach=False)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "crossling-bench" / "numerics"))
    args = parser.parse_args(argv)
    sys.path.insert(0, str(common.ROOT / "tests"))
    from tinydata_factory import make_prepared, make_tiny_checkpoint

    from crossling import decoding, paths
    from crossling import finetune as module
    from crossling.config import TrainConfig

    work = Path(args.work)
    prepared = make_prepared(work / "prepared", n_train=32, n_dev=8, n_test=16)
    checkpoint = make_tiny_checkpoint(work / "checkpoint", "wav2vec2")
    config = TrainConfig(learning_rate=2e-3, max_steps=args.steps, batch_seconds=8.0,
                         checkpoint_every=args.steps, collapse_patience=10**6)
    variants = {"now": (module.make_optimizer, decoding.CPU_BATCH_SECONDS),
                "before": (previous_optimizer, 400.0)}
    results = {}
    for name, (optimizer, batch_cap) in variants.items():
        module.make_optimizer, decoding.CPU_BATCH_SECONDS = optimizer, batch_cap
        out = work / f"run-{name}"
        shutil.rmtree(out, ignore_errors=True)  # a finished run would be returned as it is
        record = module.finetune(prepared, "xx", str(checkpoint), seed=0, out=out, config=config, device="cpu")
        rows = paths.run_hypotheses_path(out, "test").read_text().splitlines()
        results[name] = {"dev_cer": record.scores["dev"].cer, "test_cer": record.scores["test"].cer,
                         "hypotheses": [json.loads(row)["hypothesis"] for row in rows]}
    now, before = results["now"], results["before"]
    same = sum(a == b for a, b in zip(now["hypotheses"], before["hypotheses"], strict=True))
    for name, r in results.items():
        print(f"{name:7s} dev CER {r['dev_cer']:.4f}  test CER {r['test_cer']:.4f}")
    print(f"NUMERICS identical test transcripts: {same}/{len(now['hypotheses'])}; "
          f"test CER difference {abs(now['test_cer'] - before['test_cer']):.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
