"""The bundled mini-zoo: tiny wav2vec2 checkpoints pre-trained on synthetic speech, and how to rebuild them.

recipe.toml (the exact recipe) -> synth -> prepare -> pretrain per model -> <alias>/ (Hugging Face format)
+ zoo.toml (the registry facts read by `crossling.registry.zoo_checkpoints`)."""

from __future__ import annotations

import logging
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from importlib import resources
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from crossling import paths
from crossling.atomic import write_bytes_atomic, write_text_atomic
from crossling.config import check_keys, from_mapping, read_toml
from crossling.errors import ConfigError
from crossling.progress import Track, no_progress

log = logging.getLogger(__name__)

#: Files copied from a pre-training run into the zoo (the checkpoint.pt of training is not shipped).
MODEL_FILES = paths.PRETRAINED_MODEL_FILES
_SECTIONS = {"corpus": ("languages", "hours", "seed", "dev_fraction", "test_fraction"),
             "prepare": ("train_hours", "seed"), "pretrain": None, "model": None}


@dataclass(frozen=True)
class ZooModel:
    """One zoo entry of the recipe: pre-trained on `languages` x `hours_per_language`, or random init."""

    alias: str
    languages: tuple[str, ...] = ()
    hours_per_language: tuple[float, ...] = ()
    families: tuple[str, ...] = ()
    notes: str = ""
    random: bool = False


@dataclass(frozen=True)
class ZooRecipe:
    corpus: dict[str, Any]
    prepare: dict[str, Any]
    pretrain: dict[str, Any]
    models: tuple[ZooModel, ...]


def zoo_dir() -> Path:
    """The installed zoo folder (holds recipe.toml, zoo.toml and one folder per checkpoint)."""
    return Path(str(resources.files("crossling").joinpath("zoo")))


def read_recipe(path: Path | None = None) -> ZooRecipe:
    """Read recipe.toml strictly (default: the bundled one); errors name the key and the valid keys."""
    path = Path(path) if path else zoo_dir() / "recipe.toml"
    data = read_toml(path)
    for section, valid in _SECTIONS.items():
        if section not in data:
            raise ConfigError(f"{path}: missing [{section}] table")
        if valid is not None:
            check_keys(data[section], valid, f"{path} [{section}]")
    check_keys(data, tuple(_SECTIONS), str(path))
    models = tuple(from_mapping(ZooModel, entry, f"{path} [[model]] #{i + 1}") for i, entry in enumerate(data["model"]))
    return ZooRecipe(data["corpus"], data["prepare"], data["pretrain"], models)


# --- building --------------------------------------------------------------------------------------


def build_zoo(work: Path, out: Path | None = None, recipe_path: Path | None = None, workers: int = 2,
              track: Track = no_progress) -> list[dict]:
    """Rebuild the zoo from its recipe: corpus and pre-training runs under `work` (reused when already
    done), checkpoints + zoo.toml into `out` (default: the installed zoo folder). Returns one pretrain
    record per model (None-free: random-init models get a short record)."""
    recipe = read_recipe(recipe_path)
    out = Path(out) if out else zoo_dir()
    prepared = _prepare_corpus(recipe, Path(work), workers, track)
    records = _pretrain_all(recipe, prepared, Path(work), workers)
    for model, record in zip(recipe.models, records, strict=True):
        _export(model, record, paths.zoo_pretrain_dir(work, model.alias), out / model.alias, recipe)
    write_text_atomic(out / "zoo.toml", zoo_toml(recipe, records))
    if recipe_path is not None or out != zoo_dir():
        write_bytes_atomic(out / "recipe.toml", Path(recipe_path or zoo_dir() / "recipe.toml").read_bytes())
    return records


def _prepare_corpus(recipe: ZooRecipe, work: Path, workers: int, track: Track) -> Path:
    from crossling.prepare import PrepareOptions, prepare_release
    from crossling.synth import SynthOptions, synthesize_corpus

    corpus = recipe.corpus
    languages = list(corpus["languages"])
    synth = SynthOptions(hours=corpus["hours"], seed=corpus["seed"], dev_fraction=corpus["dev_fraction"],
                         test_fraction=corpus["test_fraction"])
    synthesize_corpus(paths.zoo_corpus_dir(work), languages, synth, workers=workers, track=track)
    prepare = PrepareOptions(train_hours=recipe.prepare["train_hours"], seed=recipe.prepare["seed"])
    prepare_release(paths.zoo_corpus_dir(work), languages, paths.zoo_prepared_dir(work), prepare, workers=workers,
                    track=track)
    return paths.zoo_prepared_dir(work)


def pretrain_job(prepared: Path, model: ZooModel, pretrain: dict[str, Any], out: Path) -> dict:
    """Pre-train one zoo model (module-level so worker processes can run it)."""
    from crossling.pretrain import pretrain as run_pretrain

    config = {k: v for k, v in pretrain.items() if k not in ("seed", "threads", "steps")}
    return run_pretrain(prepared, list(model.languages), list(model.hours_per_language), config=config, out=out,
                        seed=pretrain["seed"], steps=pretrain["steps"], threads=pretrain["threads"])


def random_job(model: ZooModel, pretrain: dict[str, Any], out: Path) -> dict:
    """Save the architecture with random weights (seeded), in the same format as pre-trained models."""
    import torch
    from transformers import Wav2Vec2ForPreTraining

    from crossling.pretrain import model_config, resolve_recipe, save_model

    architecture, settings = resolve_recipe({k: v for k, v in pretrain.items() if k not in ("seed", "threads")},
                                            None, None)
    torch.manual_seed(pretrain["seed"])
    net = Wav2Vec2ForPreTraining(model_config(architecture, settings))
    save_model(net, paths.pretrain_model_dir(out))
    return {"languages": [], "hours": {}, "total_hours": 0.0, "steps": 0, "architecture": architecture,
            "seed": pretrain["seed"], "parameters": sum(p.numel() for p in net.parameters())}


def _pretrain_all(recipe: ZooRecipe, prepared: Path, work: Path, workers: int) -> list[dict]:
    """Every model of the recipe, `workers` at a time, each process with the recipe's thread count."""
    with ProcessPoolExecutor(max_workers=max(1, workers), mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(random_job, m, recipe.pretrain, paths.zoo_pretrain_dir(work, m.alias)) if m.random
                   else pool.submit(pretrain_job, prepared, m, recipe.pretrain, paths.zoo_pretrain_dir(work, m.alias))
                   for m in recipe.models]
        return [future.result() for future in futures]


def _export(model: ZooModel, record: dict, run_dir: Path, target: Path, recipe: ZooRecipe) -> None:
    """Copy the Hugging Face files (and the pre-training record) of one model into the zoo."""
    source = paths.pretrain_model_dir(run_dir)
    staging = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for name in MODEL_FILES:
        shutil.copyfile(source / name, staging / name)
    if not model.random:
        shutil.copyfile(paths.pretrain_record_path(run_dir), paths.pretrain_record_path(staging))
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)


# --- the registry file -----------------------------------------------------------------------------


def zoo_toml(recipe: ZooRecipe, records: list[dict]) -> str:
    """zoo.toml: one [[checkpoint]] per model with the registry's facts plus family and recipe facts."""
    blocks = ["# The bundled mini-zoo, written by `crossling zoo build` from recipe.toml: do not edit by hand.\n"
              "# Read by crossling.registry.zoo_checkpoints(); sources are folders beside this file.\n"]
    for model, record in zip(recipe.models, records, strict=True):
        blocks.append(_checkpoint_block(model, record, recipe.pretrain))
    return "\n".join(blocks)


def _checkpoint_block(model: ZooModel, record: dict, pretrain: dict[str, Any]) -> str:
    final = record.get("final", {})
    values: dict[str, Any] = {
        # a random model's weights in the zoo are the seed-0 start of pre-training; fine-tuning draws its
        # own per run seed from the architecture, as `random-init` does for the reference study
        "alias": model.alias, "source": f"random:zoo:{model.alias}" if model.random else f"zoo:{model.alias}",
        "model_type": "wav2vec2",
        "pretrain_hours": round(float(record.get("total_hours", 0.0)), 3),
        "pretrain_languages": list(model.languages),
        "domain": "none (random init)" if model.random else "synthetic read speech (eSpeak NG)",
        "size": pretrain["architecture"] if isinstance(pretrain["architecture"], str) else "custom",
        "notes": model.notes, "pretrain_families": list(model.families),
        "pretrain_steps": int(record.get("steps", 0)), "parameters": int(record.get("parameters", 0)),
    }
    if final:
        values["contrastive_accuracy"] = final["accuracy"]
        values["contrastive_loss"] = final["contrastive_loss"]
    return "[[checkpoint]]\n" + "".join(f"{key} = {_toml_value(value)}\n" for key, value in values.items())


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    escaped = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'
