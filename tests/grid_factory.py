"""Small grids for the study/store/grid/executor tests: a tiny prepared corpus (tone 'speech' whose
pitch spells the transcript), study files, and `toy_finetune`, a quick run function with the real
contract (resumes from its checkpoint, writes result.json last) for testing the grid mechanics."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from crossling import paths
from crossling.atomic import read_json, write_json_atomic
from crossling.manifest import SAMPLE_RATE, Utterance, write_manifest
from crossling.progress import no_progress
from crossling.records import Collapse, PreparedSummary, RunCost, RunIdentity, RunRecord, SplitScores

TESTS = Path(__file__).parent
SRC = TESTS.parent / "src"
TOY = "grid_factory:toy_finetune"
LETTERS = "abcd"
WORDS = ["ab", "ba", "cad", "dab", "bad", "cab", "dc", "ac"]


# --- data ----------------------------------------------------------------------------------------


def _spoken(text: str, rng: np.random.Generator, base: float) -> np.ndarray:
    """Each letter a 120 ms tone of its own pitch, words separated by short silences."""
    pieces = []
    for char in text:
        n = int(0.12 * SAMPLE_RATE)
        if char == " ":
            pieces.append(0.003 * rng.standard_normal(n // 2))
            continue
        f = base * (1.0 + 0.5 * LETTERS.index(char))
        t = np.arange(n) / SAMPLE_RATE
        pieces.append(0.3 * np.sin(2 * np.pi * f * t) + 0.01 * rng.standard_normal(n))
    return np.concatenate(pieces).astype(np.float32)


def make_prepared(root: Path, languages: tuple[str, ...] = ("aa", "bb"), counts=(8, 3, 3), seed: int = 0) -> Path:
    """A prepared root in the shared contract (WAVs, manifests, vocab.json, prepared.json last)."""
    rng = np.random.default_rng(seed)
    for k, language in enumerate(languages):
        splits = {}
        for split, count in zip(paths.SPLITS, counts, strict=True):
            splits[split] = [_utterance(root, language, split, i, rng, 220.0 + 40 * k) for i in range(count)]
            write_manifest(paths.manifest_path(root, language, split), splits[split])
        vocab = {"<pad>": 0, "<unk>": 1, "|": 2, **{c: 3 + i for i, c in enumerate(LETTERS)}}
        write_json_atomic(paths.vocab_path(root, language), vocab)
        write_json_atomic(paths.prepared_summary_path(root, language), _summary(language, splits))
    return root


def _utterance(root: Path, language: str, split: str, i: int, rng, base: float) -> Utterance:
    text = " ".join(rng.choice(WORDS, size=2))
    audio = _spoken(text, rng, base)
    relative = f"_audio/{language}/{split}_{i:03d}.wav"
    (root / relative).parent.mkdir(parents=True, exist_ok=True)
    sf.write(root / relative, audio, SAMPLE_RATE, subtype="PCM_16")
    return Utterance(id=f"{split}_{i:03d}", audio=relative, num_samples=len(audio), text=text, sentence=text,
                     speaker=f"{split}{i % 2}", gender=("female", "male")[i % 2])


def _summary(language: str, splits: dict) -> dict:
    return PreparedSummary(
        language=language, source="grid_factory", seed=0,
        train_hours=sum(u.num_samples for u in splits["train"]) / SAMPLE_RATE / 3600,
        train_utterances=len(splits["train"]), dev_utterances=len(splits["dev"]), test_utterances=len(splits["test"]),
        vocab=list(LETTERS), vocab_threshold=1e-5, char_map={}, oov_rate={"dev": 0.0, "test": 0.0}, skipped={},
        normalization={},
    ).to_json()


# --- study files ---------------------------------------------------------------------------------

TOY_RECIPE = {"max_steps": 12, "checkpoint_every": 2, "learning_rate": 1e-3}


def write_study(path: Path, checkpoints, languages=("aa", "bb"), seeds=(0,), recipe=None, sweep=None,
                prepared: str = "prepared") -> Path:
    """A study file over a prepared root (relative to the study file)."""
    lines = [f'name = "{path.stem}"', f"checkpoints = {json.dumps(list(checkpoints))}",
             f"languages = {json.dumps(list(languages))}", f"seeds = {json.dumps(list(seeds))}",
             "", "[data]", 'source = "prepared"', f'path = "{prepared}"', "", "[recipe]"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in (recipe or TOY_RECIPE).items()]
    if sweep:
        lines += ["", "[sweep]", *(f"{key} = {json.dumps(values)}" for key, values in sweep.items())]
    path.write_text("\n".join(lines) + "\n")
    return path


# --- a quick run function with the real contract --------------------------------------------------


def toy_finetune(*, identity: RunIdentity, model: str, prepared: Path, out: Path, device: str = "auto",
                 track=no_progress) -> RunRecord:
    """Deterministic 'training': a hash chain over the steps, with a resume file every `checkpoint_every`
    steps, so a resumed run ends exactly where an uninterrupted one does. Each step sleeps
    $GRID_TOY_STEP_SECONDS. Fails when `<prepared>/fail-<model>` exists."""
    if (Path(prepared) / f"fail-{model.replace('/', '_')}").exists():
        raise RuntimeError(f"deliberate failure of {model}")
    config, language = identity.recipe, identity.language
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    resume = paths.run_resume_path(out)
    state = read_json(resume) if resume.is_file() else {"step": 0, "value": identity.seed + 7, "resumed_from": []}
    if state["step"]:
        state["resumed_from"].append(state["step"])
    delay = float(os.environ.get("GRID_TOY_STEP_SECONDS", "0"))
    for step in track(range(state["step"], config.max_steps), config.max_steps - state["step"], "toy steps"):
        state["value"] = (state["value"] * 31 + step + len(model) * 17 + len(language) + int(config.learning_rate * 1e6)) % 1_000_003
        state["step"] = step + 1
        time.sleep(delay)
        if state["step"] % config.checkpoint_every == 0:
            write_json_atomic(resume, state)
    result = toy_record(identity, state["value"] / 1_000_003, steps=state["step"], resumed_from=state["resumed_from"])
    write_json_atomic(paths.run_result_path(out), result.to_json())
    return result


def toy_record(identity: RunIdentity, cer: float, steps: int, resumed_from=()) -> RunRecord:
    """A finished run's record with test CER `cer` (1.5 s of wall time, 100 reference characters)."""
    counts = {"cer": cer, "wer": min(1.0, 2 * cer), "char_edits": round(cer * 100), "chars": 100,
              "word_edits": round(min(1.0, 2 * cer) * 20), "words": 20, "utterances": 3}
    group = SplitScores(**counts)
    return RunRecord(
        identity=identity, steps=steps,
        skipped={"label_too_long": 0, "audio_too_long": 0, "nonfinite_loss_steps": 0},
        scores={"test": SplitScores(**counts, by_gender={"female": group, "male": group}), "dev": group},
        cost=RunCost(wall_seconds=1.5, device="cpu", device_hours=1.5 / 3600, audio_seconds_trained=30.0,
                     audio_seconds_per_second=20.0, peak_memory_mb=100.0, threads=1),
        collapse=Collapse(blank_only_fraction=0.0, warned=False), versions={"crossling": "test"},
        schedule="toy", resumed_from=tuple(resumed_from),
    )


# --- grid processes -------------------------------------------------------------------------------

DRIVER = """
import os, sys, time
from pathlib import Path
from crossling.grid import run_study
from crossling.store import Store
from crossling.study import load_study
study = load_study(sys.argv[1])
store = Store(sys.argv[2], heartbeat_seconds=0.2, stale_seconds=2.0)
go = os.environ.get("GRID_GO_FILE")
if go:  # a start line: several drivers reach their first claim at the same moment
    Path(go + "." + str(os.getpid())).touch()
    while not Path(go).exists():
        time.sleep(0.005)
summary = run_study(study, store, run_function=sys.argv[3])
print(summary.executed, summary.done_now, summary.failed, flush=True)
"""


def environment(**extra: str) -> dict[str, str]:
    """A subprocess environment that imports crossling from src/ and this folder's helpers."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SRC), str(TESTS)]), OMP_NUM_THREADS="1")
    env.update(extra)
    return env


def start_driver(study: Path, store: Path, run_function: str = TOY, **env: str) -> subprocess.Popen:
    """A separate grid process running `run_study` on `study` with a fast heartbeat."""
    return subprocess.Popen([sys.executable, "-c", DRIVER, str(study), str(store), run_function],
                            env=environment(**env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(predicate, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


def starts(store_root: Path, run_id: str) -> list[dict]:
    """The 'start' events of a run's attempt log."""
    path = paths.store_attempts_path(store_root, run_id)
    if not path.is_file():
        return []
    events = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [e for e in events if e["event"] == "start"]


# --- a real grid: tiny random wav2vec2 checkpoints fine-tuned by crossling.finetune ----------------

REAL_RECIPE = {"learning_rate": 2e-3, "max_steps": 40, "batch_seconds": 8.0, "checkpoint_every": 5,
               "collapse_patience": 30}


def make_real_grid(root: Path, checkpoints: tuple[str, ...] = ("ckpt-a", "ckpt-b"),
                   languages: tuple[str, ...] = ("xx", "yy")) -> Path:
    """A study file `real.toml` in `root` over tiny prepared languages and tiny random checkpoints
    (local HF dirs beside it); returns the study path."""
    from tinydata_factory import make_prepared as make_tiny_language
    from tinydata_factory import make_tiny_checkpoint

    for k, language in enumerate(languages):
        make_tiny_language(root / "prepared", language, n_train=12, n_dev=3, n_test=4, seed=k)
    for k, name in enumerate(checkpoints):
        make_tiny_checkpoint(root / name, "wav2vec2", seed=k)
    return write_study(root / "real.toml", checkpoints, languages=languages, recipe=REAL_RECIPE)


def model_digest(run_dir: Path) -> str:
    """A hash of the fine-tuned weights (equal weights <=> equal digests)."""
    import hashlib

    from safetensors.numpy import load_file

    weights = load_file(paths.run_model_dir(run_dir) / "model.safetensors")
    digest = hashlib.sha256()
    for name in sorted(weights):
        digest.update(name.encode() + weights[name].tobytes())
    return digest.hexdigest()


def cli(*args: str, **env: str) -> subprocess.Popen:
    """`python -m crossling ARGS` as a separate process (one thread, like a grid worker)."""
    return subprocess.Popen([sys.executable, "-m", "crossling", *args], env=environment(**env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def threads_finetune(**run) -> RunRecord:
    """`toy_finetune`, also writing the torch thread count of the process into `<out>/threads.txt`."""
    import torch

    (Path(run["out"]) / "threads.txt").parent.mkdir(parents=True, exist_ok=True)
    (Path(run["out"]) / "threads.txt").write_text(str(torch.get_num_threads()))
    return toy_finetune(**run)


def forgetful_finetune(**run) -> None:
    """A broken run function: returns without writing result.json."""


def gpu_finetune(**run) -> RunRecord:
    """`toy_finetune`, also writing the process's CUDA_VISIBLE_DEVICES and the device it was asked for into
    `<out>/gpu.txt` (one line)."""
    out = Path(run["out"])
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu.txt").write_text(f"{os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>')} {run.get('device')}")
    return toy_finetune(**run)


def memory_finetune(**run) -> RunRecord:
    """`toy_finetune`, also writing the run options it was given into `<out>/memory.txt`."""
    out = Path(run["out"])
    out.mkdir(parents=True, exist_ok=True)
    (out / "memory.txt").write_text(repr(run.pop("options", None)))
    return toy_finetune(**run)


def sticky_finetune(**run) -> RunRecord:
    """`toy_finetune`, except that a model named '*bad*' fails as a sticky CUDA error does (the process's GPU
    is then unusable); writes the process id into `<out>/pid.txt`."""
    out = Path(run["out"])
    out.mkdir(parents=True, exist_ok=True)
    (out / "pid.txt").write_text(str(os.getpid()))
    if "bad" in run["model"]:
        raise RuntimeError("CUDA error: an illegal memory access was encountered")
    return toy_finetune(**run)
