"""Model cards: Hugging Face model-index metadata (base checkpoint, language, data, recipe, test CER/WER)
that huggingface_hub reads back."""

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from grid_factory import toy_record
from huggingface_hub import ModelCard

from crossling import paths
from crossling.config import TrainConfig
from crossling.modelcard import CardFacts, write_model_card
from crossling.records import PreparedSummary, RunCost, SplitScores, run_identity
from crossling.schedule import describe


def _run(tmp_path, language="pt", kind="hub", location="facebook/wav2vec2-large-xlsr-53"):
    """A finished run's record and card facts, its data prepared from a Common Voice release folder."""
    config = TrainConfig()
    identity = run_identity(model="xlsr53", weights=location, language=language, seed=1, recipe=config,
                            data={"source": "prepared", "content": "0" * 16})
    scores = {"dev": SplitScores(cer=0.1012, wer=0.3, char_edits=1, chars=10, word_edits=3, words=10, utterances=4),
              "test": SplitScores(cer=0.1234, wer=0.3456, char_edits=1, chars=8, word_edits=3, words=9, utterances=4)}
    record = replace(toy_record(identity, 0.1234, steps=4000), scores=scores, schedule=describe(config),
                     cost=RunCost(wall_seconds=5400.0, device="cuda", device_hours=1.5, audio_seconds_trained=1.0,
                                  audio_seconds_per_second=1.0, peak_memory_mb=1.0, threads=8))
    summary = PreparedSummary(language=language, source="/data/cv-corpus-7.0-2021-07-21", seed=0, train_hours=5.0,
                              train_utterances=3512, train_speakers=120, dev_utterances=400, test_utterances=500,
                              vocab=list("abcde"), vocab_threshold=0.0, char_map={}, skipped={}, normalization={},
                              oov_rate={"dev": 0.001, "test": 0.002})
    facts = CardFacts(source_kind=kind, source_location=location, precision="bf16", data=summary)
    return tmp_path / f"xlsr53-{language}-s1-abc", record, facts


def test_card_metadata_is_a_model_index_huggingface_hub_reads(tmp_path):
    run, record, facts = _run(tmp_path)
    path = write_model_card(run, record, facts)
    assert path == paths.run_model_dir(run) / "README.md"
    card = ModelCard.load(path)
    data = card.data
    assert data.base_model == "facebook/wav2vec2-large-xlsr-53" and data.language == ["pt"]
    assert data.pipeline_tag == "automatic-speech-recognition" and data.model_name == run.name
    results = {r.metric_type: r for r in data.eval_results}
    assert results["cer"].metric_value == 12.34 and results["wer"].metric_value == 34.56
    assert results["cer"].dataset_split == "test" and results["cer"].dataset_config == "pt"
    assert results["cer"].dataset_name == "Common Voice (cv-corpus-7.0-2021-07-21)"
    text = card.text
    for expected in ("Portuguese (pt)", "5.0 h, 3512 utterances, 120 speakers", "4000 steps", "tri_stage_linear",
                     "| CER (%) | 10.12 | 12.34 |", "frozen", "precision bf16", "in 90 min", 'pipeline("automatic-speech'):
        assert expected in text, expected


def test_card_leaves_wer_out_for_unsegmented_scripts_and_names_no_hub_base_for_local_models(tmp_path):
    run, record, facts = _run(tmp_path, language="ja", kind="zoo", location="/x/zoo/zoo-es")
    card = ModelCard.load(write_model_card(run, record, facts))
    assert [r.metric_type for r in card.data.eval_results] == ["cer"] and card.data.base_model is None
    assert "WER (%)" not in card.text and "written without spaces" in card.text
    assert "mini-zoo model `xlsr53`" in card.text


def test_card_says_when_the_data_summary_is_missing(tmp_path):
    run, record, facts = _run(tmp_path)
    card = ModelCard.load(write_model_card(run, record, replace(facts, data=None)))
    assert "prepared.json) was not found" in card.text


# --- a real run's model folder, loaded by the newest and the oldest transformers pyproject allows ----------

REPO = Path(__file__).resolve().parent.parent
FLOOR_VENV = Path(os.environ.get("CROSSLING_FLOOR_VENV", REPO / ".test-artifacts" / "venv-transformers-floor"))
LOADER = """
import json, sys
import numpy as np, torch, transformers
from transformers import AutoModelForCTC, Wav2Vec2Processor, pipeline

folder = sys.argv[1]
processor = Wav2Vec2Processor.from_pretrained(folder)
model = AutoModelForCTC.from_pretrained(folder).eval()
audio = np.random.default_rng(0).standard_normal(16000).astype("float32") * 0.1
inputs = processor(audio, sampling_rate=16000, return_tensors="pt")
with torch.no_grad():
    logits = model(**inputs).logits[0]
asr = pipeline("automatic-speech-recognition", model=folder)
print(json.dumps({"version": transformers.__version__, "vocab": processor.tokenizer.get_vocab(),
                  "decoded": processor.tokenizer.decode([3, 3, 4, 0, 2, 5]), "text": asr(audio)["text"],
                  "mask": "attention_mask" in inputs, "input": inputs.input_values[0, :50].tolist(),
                  "logits": logits.tolist()}))
"""


def _floor() -> str:
    """The lowest transformers version pyproject.toml allows (its `transformers>=X` requirement)."""
    import re
    import tomllib

    requirements = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    return next(re.fullmatch(r"transformers>=([\d.]+)", r).group(1) for r in requirements if r.startswith("transformers"))


def _floor_python() -> Path:
    """A second virtualenv with the floor transformers (and the one CPU torch this machine holds), built once
    and kept in .test-artifacts/ (CROSSLING_FLOOR_VENV chooses another folder); a stamp written last marks it."""
    python, stamp = FLOOR_VENV / "bin" / "python", FLOOR_VENV / "crossling-floor.txt"
    if stamp.is_file() and stamp.read_text() == _floor():
        return python
    shutil.rmtree(FLOOR_VENV, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(FLOOR_VENV)], check=True)
    pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    for packages in (["torch==2.13.0"], [f"transformers=={_floor()}.*"]):  # torch first: never a CUDA build
        done = subprocess.run(pip + packages, capture_output=True, text=True, timeout=1500)
        assert done.returncode == 0, done.stderr[-3000:]
    stamp.write_text(_floor())
    return python


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    from tinydata_factory import make_prepared, make_tiny_checkpoint

    from crossling.finetune import finetune

    root = tmp_path_factory.mktemp("card-run")
    prepared = make_prepared(root / "prepared")
    recipe = TrainConfig(learning_rate=2e-3, max_steps=6, batch_seconds=8.0, checkpoint_every=6, eval_every=3)
    record = finetune(prepared, "xx", str(make_tiny_checkpoint(root / "ckpt")), out=root / "run", config=recipe,
                      device="cpu")
    return paths.run_model_dir(root / "run"), record


def _load(python, folder) -> dict:
    done = subprocess.run([str(python), "-c", LOADER, str(folder)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_every_run_saves_a_card_and_the_layout_every_transformers_reads(model_folder):
    folder, record = model_folder
    names = {p.name for p in folder.iterdir()}
    assert {"README.md", "preprocessor_config.json", "tokenizer_config.json", "vocab.json", "config.json"} <= names
    assert "processor_config.json" not in names  # transformers 5's file, which 4.x misreads
    card = ModelCard.load(folder / "README.md")
    assert card.data.eval_results[0].metric_value == round(100 * record.test_cer(), 2)
    newest = _load(sys.executable, folder)
    assert newest["mask"] and newest["decoded"] == "ab c"


@pytest.mark.slow
def test_a_saved_model_loads_the_same_on_the_floor_transformers(model_folder):
    """Wav2Vec2Processor, AutoModelForCTC and pipeline on the oldest transformers pyproject allows give the
    same vocabulary, inputs, logits and transcript as on the newest."""
    from crossling.modelcard import TRANSFORMERS_FLOOR

    assert TRANSFORMERS_FLOOR == _floor()  # the card names the version this test loads with
    folder, _ = model_folder
    oldest, newest = _load(_floor_python(), folder), _load(sys.executable, folder)
    assert oldest["version"].startswith(_floor() + ".") and oldest["version"] != newest["version"]
    assert oldest["vocab"] == newest["vocab"] and oldest["decoded"] == newest["decoded"] == "ab c"
    assert oldest["mask"] == newest["mask"] and oldest["text"] == newest["text"]
    assert np.allclose(oldest["input"], newest["input"], atol=1e-6)
    assert np.allclose(oldest["logits"], newest["logits"], atol=1e-4)
