"""Hand-made study files whose run ids are frozen in tests/data/run_ids.json (recorded before the
records refactor): a [sweep], a local-directory checkpoint, a hub id, and each data source."""

from __future__ import annotations

from pathlib import Path

_COMMON = 'languages = ["pt", "nl"]\nseeds = [0, 3]\n'
_RECIPE = "[recipe]\nlearning_rate = 2e-3\nmax_steps = 50\nbatch_seconds = 16.0\n"


def hand_made_studies(root: Path) -> dict[str, Path]:
    """Write the studies under `root` (run ids must not depend on where `root` is)."""
    (root / "models" / "mine").mkdir(parents=True, exist_ok=True)
    texts = {
        "swept-local": 'checkpoints = ["models/mine", "xlsr53", "someone/w2v-tiny", "zoo-random"]\n' + _COMMON
        + '[data]\nsource = "prepared"\npath = "prepared"\n' + _RECIPE
        + '[sweep]\nmax_grad_norm = [1.0, 5]\nschedule = ["tri_stage_linear", "tri_stage_exponential"]\n',
        "common-voice": 'checkpoints = ["zoo-es", "random-init"]\n' + _COMMON
        + '[data]\nsource = "common-voice"\nrelease = "cv7"\ntrain_hours = 1.5\ndev_max = 100\n'
        + 'eval_seed = 4\nmax_hours_per_speaker = 0.2\nout = "elsewhere"\n' + _RECIPE,
        "synthetic": 'checkpoints = ["zoo-de"]\n' + _COMMON
        + '[data]\nsource = "synthetic"\nhours = 0.2\ntrain_hours = 0.1\nspeakers = [10, 3, 3]\nnoise = true\n'
        + 'test_max = 20\n' + _RECIPE,
    }
    written = {}
    for name, text in texts.items():
        path = root / f"{name}.toml"
        path.write_text(text)
        written[name] = path
    return written
