"""Self-supervised wav2vec 2.0 pre-training (contrastive + diversity loss) on prepared audio.

Inputs: prepared languages (train manifests) and a controlled mix (languages x hours). Outputs, in `out`:
`model/` (Hugging Face format, loadable by AutoModelForCTC), `resume.pt` (exact resume), `pretrain.json`."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import platform
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import crossling
from crossling import paths
from crossling.atomic import atomic_path, read_json, write_json_atomic
from crossling.config import from_mapping, read_toml
from crossling.errors import ConfigError, DataError, OutputError
from crossling.manifest import SAMPLE_RATE, Utterance, read_manifest
from crossling.progress import Track, no_progress
from crossling.rundir import save_model_folder
from crossling.safeload import load_resume_file

# Before torch loads OpenMP, as in `crossling.finetune` (none of the modules above imports torch).
crossling.short_openmp_spin()

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

log = logging.getLogger(__name__)

#: Named architectures (Wav2Vec2Config keyword overrides); both train on 2 CPU cores.
ARCHITECTURES: dict[str, dict[str, Any]] = {
    "micro": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 256,
              "conv_dim": [32] * 7, "num_codevectors_per_group": 32, "codevector_dim": 64,
              "proj_codevector_dim": 64, "num_conv_pos_embeddings": 64, "num_conv_pos_embedding_groups": 8},
    "tiny": {"hidden_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4, "intermediate_size": 512,
             "conv_dim": [64] * 7, "num_codevectors_per_group": 64, "codevector_dim": 128,
             "proj_codevector_dim": 128, "num_conv_pos_embeddings": 64, "num_conv_pos_embedding_groups": 16},
}

#: Settings shared by every architecture: layer-norm feature encoder (so fine-tuning passes an attention
#: mask), no dropout (tiny models on little data), and the study's fine-tuning masking defaults saved in
#: the config, so a fine-tune that does not override them gets the study's values, not pre-training's.
_COMMON_CONFIG = {
    "feat_extract_norm": "layer", "do_stable_layer_norm": True, "conv_bias": True,
    "num_codevector_groups": 2, "num_negatives": 20, "diversity_loss_weight": 0.1,
    "hidden_dropout": 0.0, "attention_dropout": 0.0, "activation_dropout": 0.0, "feat_proj_dropout": 0.0,
    "feat_quantizer_dropout": 0.0, "final_dropout": 0.0, "layerdrop": 0.0,
    "mask_time_prob": 0.05, "mask_time_length": 10,
}


@dataclass(frozen=True)
class PretrainConfig:
    """The pre-training recipe. The learning rate warms up linearly for `warmup_fraction` of the steps,
    then decays linearly to 0; the Gumbel temperature decays geometrically from `gumbel_start` to
    `gumbel_end` over the run."""

    steps: int = 600
    learning_rate: float = 2e-3
    warmup_fraction: float = 0.1
    batch_size: int = 8
    crop_seconds: float = 3.0
    mask_prob: float = 0.5
    mask_length: int = 5
    num_negatives: int = 20
    diversity_loss_weight: float = 0.1
    gumbel_start: float = 2.0
    gumbel_end: float = 0.5
    adam_beta1: float = 0.9
    adam_beta2: float = 0.98
    weight_decay: float = 0.01
    max_grad_norm: float = 5.0
    checkpoint_every: int = 100
    log_every: int = 10

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "mask_length", "num_negatives", "checkpoint_every", "log_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"pretrain {name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 < self.mask_prob < 1.0:
            raise ConfigError(f"pretrain mask_prob must be in (0, 1), got {self.mask_prob}")
        if not (self.learning_rate > 0 and self.crop_seconds > 0):  # NaN fails too
            raise ConfigError("pretrain learning_rate and crop_seconds must be > 0")


@dataclass(frozen=True)
class Clip:
    """One pre-training clip held in memory (16 kHz int16 samples)."""

    language: str
    id: str
    samples: np.ndarray


# --- architecture ------------------------------------------------------------------------------------


def model_config(architecture: str | dict[str, Any], recipe: PretrainConfig):
    """A `Wav2Vec2Config` for a named architecture ('micro', 'tiny') or a dict of config overrides."""
    from transformers import Wav2Vec2Config

    if isinstance(architecture, str):
        if architecture not in ARCHITECTURES:
            raise ConfigError(f"unknown architecture {architecture!r}; choose one of {', '.join(ARCHITECTURES)}"
                              " or pass a dict of Wav2Vec2Config values")
        architecture = ARCHITECTURES[architecture]
    values = {**_COMMON_CONFIG, **architecture}
    values.update(num_negatives=recipe.num_negatives, diversity_loss_weight=recipe.diversity_loss_weight)
    try:
        return Wav2Vec2Config(**values)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"invalid architecture values {architecture}: {error}") from None


# --- data ----------------------------------------------------------------------------------------------


def select_utterances(prepared: Path, languages: list[str], hours_per_language: list[float] | None,
                      seed: int) -> dict[str, list[Utterance]]:
    """A seeded subset of each language's train manifest totalling its hours (None: all its audio).

    `hours_per_language` has one value per language, or one value for all."""
    hours = _hours_list(languages, hours_per_language)
    chosen = {}
    for language, budget in zip(languages, hours, strict=True):
        utterances = read_manifest(paths.manifest_path(prepared, language, "train"))
        chosen[language] = _take_hours(utterances, budget, random.Random(f"{seed}:{language}"), language)
    return chosen


def _hours_list(languages: list[str], hours: list[float] | None) -> list[float | None]:
    if not languages:
        raise ConfigError("pretrain needs at least one language")
    if hours is None or len(hours) == 0:
        return [None] * len(languages)
    if len(hours) == 1:
        return list(hours) * len(languages)
    if len(hours) != len(languages):
        raise ConfigError(f"--hours-per-language has {len(hours)} values for {len(languages)} languages "
                          f"({' '.join(languages)}); give one value, or one per language")
    return list(hours)


def _take_hours(utterances: list[Utterance], hours: float | None, rng: random.Random,
                language: str) -> list[Utterance]:
    available = sum(u.duration for u in utterances) / 3600
    if hours is None:
        return list(utterances)
    if hours > available * 1.001:
        raise DataError(f"{language}: {hours:g} h requested for pre-training but its train split holds only "
                        f"{available:.3f} h; prepare more audio or lower --hours-per-language")
    order = list(utterances)
    rng.shuffle(order)
    taken, seconds = [], 0.0
    for utterance in order:
        if seconds >= hours * 3600:
            break
        taken.append(utterance)
        seconds += utterance.duration
    return taken


def load_clips(prepared: Path, chosen: dict[str, list[Utterance]], track: Track = no_progress) -> list[Clip]:
    """Decode every chosen utterance once into memory (int16 keeps 1 h at ~115 MB)."""
    items = [(lang, u) for lang, utterances in chosen.items() for u in utterances]
    clips = []
    for language, utterance in track(items, len(items), "loading audio"):
        samples, rate = sf.read(Path(prepared) / utterance.audio, dtype="int16")
        if rate != SAMPLE_RATE or samples.ndim != 1:
            raise DataError(f"{utterance.audio}: expected 16 kHz mono audio, got {rate} Hz, shape {samples.shape}")
        clips.append(Clip(language, utterance.id, samples))
    return clips


def make_batch(clips: list[Clip], recipe: PretrainConfig, seed: int, step: int) -> torch.Tensor:
    """The batch of `step`: a pure function of (seed, step), which is what makes resume exact.

    Clips are visited in a seeded per-epoch order; every clip of a batch is cropped at a random offset
    to the shortest one (capped at `crop_seconds`), so no padding or attention mask is needed."""
    per_epoch = max(1, len(clips) // recipe.batch_size)
    epoch, position = divmod(step, per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(len(clips))
    picked = [clips[i] for i in order[position * recipe.batch_size:(position + 1) * recipe.batch_size]]
    length = min(int(recipe.crop_seconds * SAMPLE_RATE), *(len(c.samples) for c in picked))
    rng = np.random.default_rng([seed, epoch, position, 1])
    crops = []
    for clip in picked:
        start = int(rng.integers(0, len(clip.samples) - length + 1))
        crop = clip.samples[start:start + length].astype(np.float32) / 32768.0
        crops.append((crop - crop.mean()) / np.sqrt(crop.var() + 1e-7))  # the feature extractor's normalisation
    return torch.from_numpy(np.stack(crops))


# --- schedules (pure functions of the step) ----------------------------------------------------------


def learning_rate(step: int, recipe: PretrainConfig) -> float:
    warmup = max(1, int(recipe.warmup_fraction * recipe.steps))
    if step < warmup:
        return recipe.learning_rate * (step + 1) / warmup
    return recipe.learning_rate * max(0.0, (recipe.steps - step) / max(1, recipe.steps - warmup))


def gumbel_temperature(step: int, recipe: PretrainConfig) -> float:
    fraction = step / max(1, recipe.steps - 1)
    return recipe.gumbel_start * (recipe.gumbel_end / recipe.gumbel_start) ** fraction


# --- one step ------------------------------------------------------------------------------------------


def _mask_and_negatives(model, batch: torch.Tensor, recipe: PretrainConfig, seed: int, step: int):
    """Time masks and negative indices from transformers' (private) samplers, seeded per step."""
    from transformers.models.wav2vec2.modeling_wav2vec2 import _compute_mask_indices, _sample_negative_indices

    frames = int(model._get_feat_extract_output_lengths(batch.shape[1]))
    np.random.seed((seed * 1_000_003 + step) % 2**32)  # the samplers draw from numpy's global RNG
    mask_length = min(recipe.mask_length, max(1, frames // 2))
    mask = _compute_mask_indices((batch.shape[0], frames), recipe.mask_prob, mask_length, min_masks=2)
    negatives = _sample_negative_indices((batch.shape[0], frames), recipe.num_negatives, mask)
    return torch.from_numpy(mask).bool().to(batch.device), torch.from_numpy(negatives).long().to(batch.device)


def _contrastive_accuracy(outputs, mask: torch.Tensor, negatives: torch.Tensor) -> float:
    """Fraction of masked frames whose true quantized target is the most similar candidate."""
    with torch.no_grad():
        context, targets = outputs.projected_states, outputs.projected_quantized_states
        batch, frames, dim = targets.shape
        negative_targets = targets.reshape(-1, dim)[negatives.reshape(-1)].view(batch, frames, -1, dim)
        positive = torch.cosine_similarity(context, targets, dim=-1)
        negative = torch.cosine_similarity(context[:, :, None], negative_targets, dim=-1)
        same = (negative_targets == targets[:, :, None]).all(-1)
        negative = negative.masked_fill(same, float("-inf"))
        correct = positive > negative.max(-1).values
        return float(correct[mask].float().mean())


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, batch: torch.Tensor, recipe: PretrainConfig, *,
               seed: int, step: int) -> dict[str, float]:
    """One optimisation step; losses are per masked frame (transformers returns sums)."""
    for group in optimizer.param_groups:
        group["lr"] = learning_rate(step, recipe)
    model.set_gumbel_temperature(gumbel_temperature(step, recipe))
    torch.manual_seed(seed * 1_000_003 + step)  # Gumbel noise; re-seeded per step so resume is exact
    mask, negatives = _mask_and_negatives(model, batch, recipe, seed, step)
    outputs = model(batch, mask_time_indices=mask, sampled_negative_indices=negatives)
    masked = mask.sum().clamp(min=1)
    loss = outputs.loss / masked
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.max_grad_norm)
    optimizer.step()
    return {"loss": loss.item(), "contrastive_loss": (outputs.contrastive_loss / masked).item(),
            "diversity_loss": (outputs.diversity_loss / masked).item(),
            "perplexity": outputs.codevector_perplexity.item(), "grad_norm": float(grad_norm),
            "accuracy": _contrastive_accuracy(outputs, mask, negatives), "lr": optimizer.param_groups[0]["lr"]}


# --- the resume file -----------------------------------------------------------------------------------


def _save_resume(out: Path, model: nn.Module, optimizer: torch.optim.Optimizer, *, step: int,
                 history: list[dict], state: dict, wall_seconds: float) -> None:
    checkpoint = {
        "model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
        "wall_seconds": wall_seconds,
        # plain tensors, lists and numbers only, so that resuming never needs to unpickle code
        "rng": {"torch": torch.get_rng_state(), "numpy": _numpy_state(), "python": random.getstate()},
        "history": history, **state,
    }
    with atomic_path(paths.pretrain_resume_path(out)) as tmp:
        torch.save(checkpoint, tmp)


def _load_resume(out: Path, model, optimizer, state: dict) -> tuple[int, list[dict], float]:
    """Restore the resume file of the same run (under its earlier name too); one of a different run is an
    error, not silently reused."""
    path = next((p for p in (paths.pretrain_resume_path(out), paths.pretrain_legacy_resume_path(out))
                 if p.is_file()), None)
    if path is None:
        return 0, [], 0.0
    checkpoint = load_resume_file(path)
    for key in ("recipe", "architecture", "mix", "seed"):
        if checkpoint.get(key) != state[key]:
            raise ConfigError(f"{path} belongs to a different pre-training run ({key} differs: "
                              f"{checkpoint.get(key)!r} vs {state[key]!r}); use another --out or delete it")
    if path != paths.pretrain_resume_path(out):
        os.replace(path, paths.pretrain_resume_path(out))
    model.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    torch.set_rng_state(checkpoint["rng"]["torch"])
    name, keys, *rest = checkpoint["rng"]["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), *rest))
    random.setstate(_as_tuples(checkpoint["rng"]["python"]))
    log.info("resuming pre-training from step %d (%s)", checkpoint["step"], path)
    return checkpoint["step"], checkpoint["history"], checkpoint["wall_seconds"]


def _numpy_state() -> tuple:
    name, keys, *rest = np.random.get_state()
    return (name, keys.tolist(), *rest)


def _as_tuples(value):
    """`random.setstate` wants the nested tuples it gave out (a save/load round trip may yield lists)."""
    return tuple(_as_tuples(v) for v in value) if isinstance(value, list | tuple) else value


def save_model(model, out_dir: Path) -> None:
    """Save model + feature extractor in Hugging Face format (config.json, model.safetensors,
    preprocessor_config.json), atomically as a folder: built in a crossling-marked staging folder beside
    `out_dir`, then renamed into place (`check_model_folder` made sure a folder already there is ours)."""
    from transformers import Wav2Vec2FeatureExtractor
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    def write(staging: Path) -> None:
        model.save_pretrained(staging, safe_serialization=True)
        Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=SAMPLE_RATE, padding_value=0.0, do_normalize=True,
                                 return_attention_mask=True).save_pretrained(staging)

    save_model_folder(Path(out_dir), write)


def check_model_folder(out: Path) -> None:
    """Refuse before training to replace a model folder this pre-training did not write. One is ours while
    our resume file sits beside it (a run killed between saving the model and its record), or when it holds
    nothing but the files `save_model` writes (a finished pre-training whose record was deleted to run it
    again); a folder holding anything else may be somebody's work."""
    model = paths.pretrain_model_dir(out)
    if not model.exists() or paths.pretrain_resume_path(out).is_file():
        return
    others = sorted(p.name for p in model.iterdir()) if model.is_dir() else [model.name]
    others = [name for name in others if name not in paths.PRETRAINED_MODEL_FILES]
    if others:
        raise OutputError(f"{model}: a folder this pre-training did not write (it holds {', '.join(others[:3])}); "
                          "crossling would replace it: move it away or use another --out")


# --- the whole run -------------------------------------------------------------------------------------


def resolve_recipe(config: str | dict[str, Any], steps: int | None, overrides: dict[str, Any] | None
                   ) -> tuple[str | dict[str, Any], PretrainConfig]:
    """(architecture, recipe) from a config name ('micro', 'tiny'), a TOML file of the same shape, or a
    dict {"architecture": name-or-Wav2Vec2Config-values, recipe keys...}."""
    if isinstance(config, str | Path) and str(config).endswith(".toml"):
        config = read_toml(Path(config))
    values = dict(overrides or {})
    architecture: str | dict[str, Any] = config
    if isinstance(config, dict):
        values = {**{k: v for k, v in config.items() if k != "architecture"}, **values}
        architecture = config.get("architecture", "micro")
    if steps is not None:
        values["steps"] = steps
    return architecture, from_mapping(PretrainConfig, values, "pretrain recipe")


def pretrain(prepared: Path, languages: list[str], hours_per_language: list[float] | None,
             config: str | dict[str, Any] = "micro", out: Path = Path("pretrained"), seed: int = 0,
             steps: int | None = None, recipe: dict[str, Any] | None = None, threads: int | None = None,
             track: Track = no_progress, device: str = "cpu") -> dict:
    """Pre-train a wav2vec2 model from scratch on a mix of prepared languages, on `device` (cpu, cuda,
    cuda:k or auto); returns the pretrain.json record. Resumes from `out/resume.pt` if a previous run of the
    same recipe was interrupted (on any device)."""
    from crossling.evaluate import pick_device

    device = pick_device(device)
    out = Path(out)
    architecture, settings = resolve_recipe(config, steps, recipe)
    chosen = select_utterances(Path(prepared), list(languages), hours_per_language, seed)
    mix = {lang: round(sum(u.duration for u in us) / 3600, 4) for lang, us in chosen.items()}
    state = {"recipe": dataclasses.asdict(settings), "architecture": architecture, "mix": mix, "seed": seed}
    finished = _finished_record(out, state)
    if finished is not None:
        return finished
    check_model_folder(out)
    if threads:
        torch.set_num_threads(threads)
    clips = load_clips(Path(prepared), chosen, track)
    if len(clips) < settings.batch_size:
        raise DataError(f"only {len(clips)} clips selected for pre-training; need at least a batch of "
                        f"{settings.batch_size}")
    return _train(out, clips, settings, state, track=track, device=device)


def _finished_record(out: Path, state: dict) -> dict | None:
    """The record of a finished run with the same settings; a different finished run is an error."""
    path = paths.pretrain_record_path(out)
    if not path.is_file():
        return None
    record = read_json(path)
    recorded = {"recipe": record["recipe"], "architecture": record["architecture"], "mix": record["hours"],
                "seed": record["seed"]}
    if json.loads(json.dumps(state)) != recorded:
        raise ConfigError(f"{path}: {out} holds a finished pre-training with other settings; use another --out "
                          "or delete it")
    log.info("%s already done; delete it to pre-train again", path)
    return record


def _train(out: Path, clips: list[Clip], recipe: PretrainConfig, state: dict, *, track: Track, device: str) -> dict:
    from transformers import Wav2Vec2ForPreTraining

    torch.manual_seed(state["seed"])
    model = Wav2Vec2ForPreTraining(model_config(state["architecture"], recipe))
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.learning_rate, weight_decay=recipe.weight_decay,
                                  betas=(recipe.adam_beta1, recipe.adam_beta2))
    start, history, wall_before = _load_resume(out, model, optimizer, state)
    started = time.time() - wall_before
    for step in track(range(start, recipe.steps), recipe.steps - start, "pre-training"):
        metrics = train_step(model, optimizer, make_batch(clips, recipe, state["seed"], step).to(device), recipe,
                             seed=state["seed"], step=step)
        if not math.isfinite(metrics["loss"]):
            raise DataError(f"pre-training loss became {metrics['loss']} at step {step}; lower the learning rate")
        history.append({"step": step, **{k: round(v, 6) for k, v in metrics.items()}})
        if step % recipe.log_every == 0:
            log.info("step %d loss %.4f acc %.3f ppl %.1f", step, metrics["loss"], metrics["accuracy"],
                     metrics["perplexity"])
        if (step + 1) % recipe.checkpoint_every == 0 and step + 1 < recipe.steps:
            _save_resume(out, model, optimizer, step=step + 1, history=history, state=state,
                         wall_seconds=time.time() - started)
    save_model(model, paths.pretrain_model_dir(out))
    record = _record(model, clips, recipe, state=state, history=history, wall_seconds=time.time() - started)
    write_json_atomic(paths.pretrain_record_path(out), record)
    paths.pretrain_resume_path(out).unlink(missing_ok=True)
    return record


def _record(model: nn.Module, clips: list[Clip], recipe: PretrainConfig, *, state: dict, history: list[dict],
            wall_seconds: float) -> dict:
    import transformers

    tail = history[-min(len(history), max(1, recipe.steps // 10)):]
    head = history[:max(1, recipe.steps // 10)]

    def mean(rows, key):
        return round(float(np.mean([r[key] for r in rows])), 4)

    return {
        "languages": list(state["mix"]), "hours": state["mix"], "total_hours": round(sum(state["mix"].values()), 4),
        "clips": len(clips), "seed": state["seed"], "steps": recipe.steps, "architecture": state["architecture"],
        "recipe": state["recipe"], "parameters": sum(p.numel() for p in model.parameters()),
        "initial": {k: mean(head, k) for k in ("loss", "contrastive_loss", "accuracy")},
        "final": {k: mean(tail, k) for k in ("loss", "contrastive_loss", "diversity_loss", "accuracy", "perplexity")},
        "history": [{k: r[k] for k in ("step", "loss", "accuracy")} for r in history[:: max(1, recipe.log_every)]],
        "wall_seconds": round(wall_seconds, 1), "threads": torch.get_num_threads(),
        "versions": {"crossling": crossling.__version__, "torch": torch.__version__,
                     "transformers": transformers.__version__, "python": platform.python_version()},
    }
