"""Every artifact path of every stage, built in one place (so a writer and a reader never disagree).

Prepared data:  <prepared>/<lang>/{train,dev,test}.jsonl, vocab.json, prepared.json
Decode cache:   <prepared>/_audio/<lang>/<clip stem>.wav  (+ index.jsonl of decoded lengths)
Run directory:  <run>/config.json, resume.pt, model/ (+ README.md model card), scores.json,
                hypotheses-<split>.jsonl, train.log, metrics.jsonl, tensorboard/, result.json (written
                last), error.json (failed runs)
Study store:    <store>/plan.json, <store>/runs/<run id>/ (a run directory + attempts.jsonl),
                <store>/claims/<run id>/<generation>.claim (or .released),
                <store>/data/<source>-<hash>/ (prepared data),
                <store>/rank/<lang>.json (checkpoints ranked before fine-tuning)
Rank record:    <prepared>/_rank/<lang>.json (crossling rank)
Pre-training:   <out>/model/, resume.pt, pretrain.json (written last)
Exports:        <out>/<lang>_{recordings,supervisions}_<split>.jsonl.gz (lhotse), <out>/<lang>/ (HF dataset)

A "checkpoint" is a pre-trained model a run starts from; the file a killed run resumes from is its
"resume file" (named checkpoint.pt by earlier versions, and still read under that name).
"""

from __future__ import annotations

from pathlib import Path

SPLITS = ("train", "dev", "test")


# --- prepared data -------------------------------------------------------------------------------


def language_dir(prepared_root: Path, language: str) -> Path:
    return Path(prepared_root) / language


def manifest_path(prepared_root: Path, language: str, split: str) -> Path:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    return language_dir(prepared_root, language) / f"{split}.jsonl"


def vocab_path(prepared_root: Path, language: str) -> Path:
    return language_dir(prepared_root, language) / "vocab.json"


def prepared_summary_path(prepared_root: Path, language: str) -> Path:
    """JSON summary of a prepared language; written last, so its presence marks completion."""
    return language_dir(prepared_root, language) / "prepared.json"


def audio_cache_dir(prepared_root: Path, language: str) -> Path:
    return Path(prepared_root) / "_audio" / language


def audio_cache_path(prepared_root: Path, language: str, clip_name: str) -> Path:
    return audio_cache_dir(prepared_root, language) / (Path(clip_name).stem + ".wav")


def audio_cache_index_path(prepared_root: Path, language: str) -> Path:
    return audio_cache_dir(prepared_root, language) / "index.jsonl"


# --- one run ---------------------------------------------------------------------------------------


def run_config_path(run_dir: Path) -> Path:
    return Path(run_dir) / "config.json"


def run_resume_path(run_dir: Path) -> Path:
    """Everything an interrupted run continues from (weights, optimizer, RNG states, data position)."""
    return Path(run_dir) / "resume.pt"


def run_legacy_resume_path(run_dir: Path) -> Path:
    """The resume file's name in earlier versions: read (and renamed) when a run resumes."""
    return Path(run_dir) / "checkpoint.pt"


def run_model_dir(run_dir: Path) -> Path:
    """The fine-tuned model + processor in Hugging Face format."""
    return Path(run_dir) / "model"


def run_scores_path(run_dir: Path) -> Path:
    return Path(run_dir) / "scores.json"


def run_hypotheses_path(run_dir: Path, split: str) -> Path:
    return Path(run_dir) / f"hypotheses-{split}.jsonl"


def run_log_path(run_dir: Path) -> Path:
    return Path(run_dir) / "train.log"


def run_metrics_path(run_dir: Path) -> Path:
    """One JSON line per training step (loss, learning rate, gradient norm) and per dev evaluation."""
    return Path(run_dir) / "metrics.jsonl"


def run_tensorboard_dir(run_dir: Path) -> Path:
    """TensorBoard event files of the same metrics (written when tensorboard is installed)."""
    return Path(run_dir) / "tensorboard"


def run_model_card_path(run_dir: Path) -> Path:
    """The model card (Hugging Face README.md with model-index metadata) of the run's model."""
    return run_model_dir(run_dir) / "README.md"


def run_result_path(run_dir: Path) -> Path:
    """The run's final record; written last and atomically: its presence means the run is done."""
    return Path(run_dir) / "result.json"


def run_error_path(run_dir: Path) -> Path:
    return Path(run_dir) / "error.json"


# --- a study's store -------------------------------------------------------------------------------


def store_run_dir(store_root: Path, run_id: str) -> Path:
    return Path(store_root) / "runs" / run_id


def store_claims_dir(store_root: Path, run_id: str) -> Path:
    """A run's claim files, one per claim generation (only the newest is kept)."""
    return Path(store_root) / "claims" / run_id


def store_claim_path(store_root: Path, run_id: str, generation: int, released: bool = False) -> Path:
    """The claim of `run_id`'s `generation` (1, 2, ...): `<n>.claim` while held, `<n>.released` after."""
    return store_claims_dir(store_root, run_id) / f"{generation}.{'released' if released else 'claim'}"


def quarantine_path(path: Path, stamp: str) -> Path:
    """Where a corrupt record is renamed aside: `<name>.corrupt-<stamp>` beside it."""
    return Path(path).with_name(f"{Path(path).name}.corrupt-{stamp}")


# --- self-supervised pre-training ------------------------------------------------------------------


def pretrain_model_dir(pretrain_dir: Path) -> Path:
    """The pre-trained model + feature extractor in Hugging Face format (the files `PRETRAINED_MODEL_FILES`)."""
    return Path(pretrain_dir) / "model"


#: What a pre-trained model folder crossling saves holds (and a mini-zoo model is copied with).
PRETRAINED_MODEL_FILES = ("config.json", "model.safetensors", "preprocessor_config.json")


def pretrain_resume_path(pretrain_dir: Path) -> Path:
    """Everything interrupted pre-training continues from."""
    return Path(pretrain_dir) / "resume.pt"


def pretrain_legacy_resume_path(pretrain_dir: Path) -> Path:
    """The pre-training resume file's name in earlier versions: read (and renamed) on resume."""
    return Path(pretrain_dir) / "checkpoint.pt"


def pretrain_record_path(pretrain_dir: Path) -> Path:
    """The pre-training record; written last: its presence means pre-training is done."""
    return Path(pretrain_dir) / "pretrain.json"


def store_plan_path(store_root: Path) -> Path:
    """The study's planned runs (ids, checkpoints, languages, seeds, settings), so a store alone can be read."""
    return Path(store_root) / "plan.json"


def store_attempts_path(store_root: Path, run_id: str) -> Path:
    """One JSON line per attempt event (start / done / failed) of a run: who ran it, where, when."""
    return store_run_dir(store_root, run_id) / "attempts.jsonl"


# --- synthetic Common Voice (crossling synth) ------------------------------------------------------


def synthetic_clips_dir(corpus_root: Path, language: str) -> Path:
    """Where a synthetic corpus keeps a language's MP3 clips (Common Voice's own layout)."""
    return Path(corpus_root) / language / "clips"


def synthetic_tsv_path(corpus_root: Path, language: str, name: str) -> Path:
    """`<corpus>/<lang>/<name>.tsv` for name in train, dev, test, validated."""
    return Path(corpus_root) / language / f"{name}.tsv"


def synthetic_summary_path(corpus_root: Path, language: str) -> Path:
    """A synthesized language's settings and sizes; written last, so its presence marks completion."""
    return Path(corpus_root) / language / "synth.json"


# --- a study's store: data and default location ----------------------------------------------------


def default_store_dir(study_file: Path) -> Path:
    """Where a study file's runs go unless it names a store: `<stem>.runs/` beside it."""
    study_file = Path(study_file)
    return study_file.parent / f"{study_file.stem}.runs"


def store_prepared_dir(store_root: Path, data_kind: str, data_hash: str) -> Path:
    """Prepared data of a study, named after the data identity (changed options never reuse old data)."""
    return Path(store_root) / "data" / f"{data_kind}-{data_hash}"


def store_corpus_dir(prepared_dir: Path) -> Path:
    """The synthetic corpus a store's prepared data was made from, beside it."""
    prepared_dir = Path(prepared_dir)
    return prepared_dir.parent / f"{prepared_dir.name}-corpus"


# --- report ------------------------------------------------------------------------------------------


def report_page_path(report_dir: Path, extension: str) -> Path:
    """report.html (written last) or report.md."""
    return Path(report_dir) / f"report.{extension}"


def report_figure_path(report_dir: Path, name: str) -> Path:
    return Path(report_dir) / "figures" / f"{name}.png"


def report_table_path(report_dir: Path, name: str, extension: str) -> Path:
    return Path(report_dir) / "tables" / f"{name}.{extension}"


# --- demo and mini-zoo build --------------------------------------------------------------------------


def demo_store_dir(demo_dir: Path) -> Path:
    return Path(demo_dir) / "store"


def demo_report_dir(demo_dir: Path) -> Path:
    return Path(demo_dir) / "report"


def demo_summary_path(demo_dir: Path) -> Path:
    """demo.json: the demo's CER table and checks; written last."""
    return Path(demo_dir) / "demo.json"


def zoo_corpus_dir(work_dir: Path) -> Path:
    return Path(work_dir) / "corpus"


def zoo_prepared_dir(work_dir: Path) -> Path:
    return Path(work_dir) / "prepared"


def zoo_pretrain_dir(work_dir: Path, alias: str) -> Path:
    return Path(work_dir) / "pretrain" / alias


def prepare_lock_path(prepared_root: Path, language: str) -> Path:
    """Empty file a running `crossling prepare` holds an advisory lock on, per language."""
    return Path(prepared_root) / ".locks" / f"{language}.prepare"


# --- exports of a prepared language ------------------------------------------------------------------


def export_lhotse_path(out_dir: Path, language: str, kind: str, split: str) -> Path:
    """A lhotse manifest named as lhotse recipes name theirs: `<lang>_<recordings|supervisions>_<split>.jsonl.gz`."""
    if kind not in ("recordings", "supervisions"):
        raise ValueError(f"unknown lhotse manifest kind {kind!r}")
    return Path(out_dir) / f"{language}_{kind}_{split}.jsonl.gz"


def export_hf_dir(out_dir: Path, language: str) -> Path:
    """A prepared language as a Hugging Face `datasets` DatasetDict saved with save_to_disk."""
    return Path(out_dir) / language


# --- ranking checkpoints before fine-tuning (crossling rank) -------------------------------------------


def rank_record_path(prepared_root: Path, language: str) -> Path:
    """The latest `crossling rank` record of a prepared language (read by `crossling recommend --data`)."""
    return Path(prepared_root) / "_rank" / f"{language}.json"


def store_rank_path(store_root: Path, language: str) -> Path:
    """A study's rank record of one language (the demo writes it; the report compares it with the runs)."""
    return Path(store_root) / "rank" / f"{language}.json"
