"""Checkpoints -> CTC models: resolve `--model` (alias, hub id, local dir, 'zoo:<dir>', 'random-init',
'random:<alias>'), load any type with a transformers CTC head through AutoModelForCTC with a fresh head sized
from the vocabulary, and say how the checkpoint wants its input (waveform or log-mel, normalization, mask)."""

from __future__ import annotations

import json
import logging
import pickle
import re
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from crossling.config import TrainConfig
from crossling.errors import ModelError
from crossling.frontend import (
    LOG_MEL,
    MEL_BINS,
    MEL_STACK,
    WAVEFORM,
    adapter_frames,
    conv_frames,
    feature_norm,
    front_end,
    input_name,
    log_mel_rows,
    pad_features,
    pad_inputs,
    takes_attention_mask,
)
from crossling.frontend import freeze_feature_encoder as freeze_cnn
from crossling.registry import RANDOM_INIT, alias_suggestions, all_checkpoints, find_checkpoint
from crossling.safeload import refused_weights

log = logging.getLogger(__name__)

#: Every model type transformers has a CTC head for (AutoModelForCTC) that crossling fine-tunes.
MODEL_TYPES = ("wav2vec2", "hubert", "wavlm", "unispeech", "unispeech-sat", "data2vec-audio", "wav2vec2-conformer",
               "wav2vec2-bert")
SPECIAL_TOKENS = {"unk_token": "<unk>", "pad_token": "<pad>", "word_delimiter_token": "|"}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


@dataclass(frozen=True)
class ModelSource:
    """Where a model comes from. `kind`: 'hub' (hub id), 'local' (HF directory), 'zoo' (bundled
    mini-zoo directory), 'random' (`location` is the architecture's config file, weights drawn from the
    run's seed); `alias` if registered."""

    given: str
    kind: str
    location: str
    alias: str = ""


@dataclass(frozen=True)
class InputSpec:
    """How a checkpoint expects its input. `features`: 'waveform' (normalized or not) or 'log-mel'
    (w2v-BERT's stacked fbank rows, padded with `padding_value`). Attention mask or not: yes for layer-norm
    feature encoders and log-mel; group-norm ones were trained on zero-padded input without a mask, so
    training gives them none and decoding batches them by computing their CNN features per utterance.
    `feat_extract_norm` is 'layer', 'group' or 'none' (no CNN)."""

    do_normalize: bool
    use_attention_mask: bool
    feat_extract_norm: str
    features: str = WAVEFORM
    padding_value: float = 0.0


def resolve(model: str) -> ModelSource:
    """Turn a `--model` value into a `ModelSource`; an unknown name lists the registered aliases."""
    if model.startswith("random:") and find_checkpoint(model) is None:
        return _random_architecture(model)
    checkpoint = find_checkpoint(model)
    if model == RANDOM_INIT or (checkpoint is not None and checkpoint.is_random_init):
        checkpoint = checkpoint or find_checkpoint(RANDOM_INIT)
        return ModelSource(model, "random", str(_architecture_file(checkpoint)), checkpoint.alias)
    alias = checkpoint.alias if checkpoint else ""
    location = checkpoint.source if checkpoint else model
    if location.startswith("zoo:"):
        return ModelSource(model, "zoo", str(_zoo_dir(location.removeprefix("zoo:"))), alias)
    if Path(location).expanduser().is_dir():
        return ModelSource(model, "local", str(Path(location).expanduser().resolve()), alias)
    if _HUB_ID.match(location) and not location.startswith((".", "~")):
        return ModelSource(model, "hub", location, alias)
    valid = ", ".join(c.alias for c in all_checkpoints())
    raise ModelError(
        f"--model {model!r}{alias_suggestions(model)} is not a registered alias, an existing directory or a "
        "hub id (owner/name); "
        f"registered aliases: {valid}"
    )


def _random_architecture(model: str) -> ModelSource:
    """'random:<alias>': the registered checkpoint's architecture (its packaged config values) with random
    weights drawn from the run's seed."""
    alias = model.removeprefix("random:")
    checkpoint = find_checkpoint(alias)
    config_file = _packaged_config(checkpoint.config_name) if checkpoint and checkpoint.config_name else None
    if config_file is None or not config_file.is_file():
        with_config = ", ".join(f"random:{c.alias}" for c in all_checkpoints()
                                if c.config_name and _packaged_config(c.config_name).is_file())
        raise ModelError(f"--model {model!r}: no packaged architecture for {alias!r}; choose one of {with_config}")
    return ModelSource(model, "random", str(config_file), "")


def _packaged_config(name: str) -> Path:
    return Path(str(resources.files("crossling").joinpath("data", name)))


def _zoo_dir(name: str) -> Path:
    directory = Path(str(resources.files("crossling").joinpath("zoo", name)))
    if not (directory / "config.json").is_file():
        raise ModelError(f"mini-zoo checkpoint {name!r} not found: expected {directory}/config.json")
    return directory


def _architecture_file(checkpoint) -> Path:
    """The config file a random-init checkpoint draws its weights for: 'random:zoo:<dir>' -> that mini-zoo
    model's config.json, else the packaged config named by `config_name` (XLS-R 300M's LARGE values)."""
    architecture = checkpoint.source.removeprefix("random:")
    if architecture.startswith("zoo:"):
        return _zoo_dir(architecture.removeprefix("zoo:")) / "config.json"
    return _packaged_config(checkpoint.config_name)


def random_init_config(config_file: str):
    """An architecture config file (a random-init source's location) as a transformers config."""
    from transformers import AutoConfig

    text = Path(config_file).read_text(encoding="utf-8")
    values = {k: v for k, v in json.loads(text).items() if not k.startswith("_")}
    for key in ("architectures", "transformers_version", "torch_dtype"):
        values.pop(key, None)
    return AutoConfig.for_model(values.pop("model_type"), **values)


def recipe_overrides(config: TrainConfig, vocab_size: int) -> dict:
    """Config fields the recipe sets on every checkpoint: CTC head size, SpecAugment, dropouts."""
    return {
        "vocab_size": vocab_size,
        "pad_token_id": 0,
        "ctc_loss_reduction": "mean",  # per-utterance loss / label length, batch mean (HF recipes)
        "ctc_zero_infinity": False,  # infinite losses must surface so they are counted, not hidden
        "apply_spec_augment": True,
        "mask_time_prob": config.mask_time_prob,
        "mask_time_length": config.mask_time_length,
        "mask_feature_prob": config.mask_feature_prob,
        "mask_feature_length": config.mask_feature_length,
        "layerdrop": config.layerdrop,
        "hidden_dropout": config.hidden_dropout,
        "activation_dropout": config.activation_dropout,
        "attention_dropout": config.attention_dropout,
        "feat_proj_dropout": config.feat_proj_dropout,
        "final_dropout": config.final_dropout,
    }


def quiet_transformers() -> None:
    """transformers 5 prints load reports and progress bars for every load; our logs say what matters."""
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def load_for_finetuning(source: ModelSource, vocab_size: int, config: TrainConfig, seed: int):
    """A CTC model with a freshly initialised head of `vocab_size` outputs (seeded), the recipe's
    config values applied and the CNN feature encoder frozen if the recipe says so (a no-op for log-mel
    front ends, see `crossling.frontend`) -> (model, InputSpec)."""
    import torch
    from transformers import AutoModelForCTC

    quiet_transformers()
    overrides = recipe_overrides(config, vocab_size)
    torch.manual_seed(seed)
    if source.kind == "random":
        model_config = random_init_config(source.location)
        for key, value in overrides.items():
            setattr(model_config, key, value)
        model = AutoModelForCTC.from_config(model_config)
    else:
        model = _from_pretrained(source, overrides)
    _check_model_type(model.config.model_type, source)
    if config.freeze_feature_encoder:
        freeze_cnn(model)
    model = model.float()
    spec = input_spec(model.config, _read_preprocessor_config(source))
    log.info("loaded %s (%s, %s); input: %s", source.given, source.kind, model.config.model_type, spec)
    return model, spec


def _from_pretrained(source: ModelSource, overrides: dict):
    from transformers import AutoConfig, AutoModelForCTC

    local = source.kind != "hub"
    try:
        # set on the config, not passed as keywords: a value some config class lacks (data2vec-audio has no
        # `apply_spec_augment`; its model reads it with a default) would otherwise reach the model's __init__
        model_config = AutoConfig.from_pretrained(source.location, trust_remote_code=False, local_files_only=local)
        for key, value in overrides.items():
            setattr(model_config, key, value)
        return AutoModelForCTC.from_pretrained(
            source.location,
            config=model_config,
            trust_remote_code=False,
            use_safetensors=_prefer_safetensors(source),
            ignore_mismatched_sizes=True,  # a checkpoint fine-tuned on another vocabulary: new head
            local_files_only=local,
        )
    except pickle.UnpicklingError as error:
        raise refused_weights(Path(source.location), error) from None
    except (OSError, ValueError) as error:
        where = "directory" if local else "hub id (not downloadable here or not in the local HF cache)"
        raise ModelError(f"cannot load {source.given!r} from {where} {source.location}: {error}") from None


def _prefer_safetensors(source: ModelSource) -> bool | None:
    """True for a directory holding safetensors weights (then nothing else is read); None lets a hub
    checkpoint fall back to a .bin, which transformers reads with torch.load(weights_only=True)."""
    if source.kind == "hub":
        return None
    directory = Path(source.location)
    if any(directory.glob("*.safetensors")):
        return True
    if not any(directory.glob("*.bin")):
        raise ModelError(f"{directory}: no model weights (*.safetensors or *.bin) found")
    return None


def _check_model_type(model_type: str, source: ModelSource) -> None:
    if model_type not in MODEL_TYPES:
        raise ModelError(
            f"{source.given!r} is a {model_type!r} model; crossling fine-tunes {', '.join(MODEL_TYPES)}"
        )


def input_spec(model_config, preprocessor: dict) -> InputSpec:
    """How the model takes its input, from its architecture and its preprocessor config: `do_normalize`
    defaults to True when there is none (as the wav2vec2-family LARGE checkpoints expect, and random init);
    a log-mel front end pads with the preprocessor's `padding_value` (transformers' default 0.0 without one)."""
    features = front_end(model_config.model_type)
    if features == LOG_MEL and int(preprocessor.get("stride", 2)) != 2:
        raise ModelError(f"log-mel input stacked by {preprocessor['stride']} frames; crossling supports 2 (w2v-BERT)")
    return InputSpec(
        do_normalize=bool(preprocessor.get("do_normalize", True)),
        use_attention_mask=takes_attention_mask(model_config),
        feat_extract_norm=feature_norm(model_config),
        features=features,
        padding_value=float(preprocessor.get("padding_value", 0.0)) if features == LOG_MEL else 0.0,
    )


def _read_preprocessor_config(source: ModelSource) -> dict:
    if source.kind == "hub":
        from transformers.utils import cached_file

        try:
            path = cached_file(source.location, "preprocessor_config.json",
                               _raise_exceptions_for_missing_entries=False)
        except OSError:
            path = None
    elif source.kind == "random" and "values" in _packaged_preprocessor(source.location):
        return _packaged_preprocessor(source.location)["values"]
    else:  # a directory, or (random init) the config file whose folder may hold one
        folder = Path(source.location).parent if source.kind == "random" else Path(source.location)
        path = folder / "preprocessor_config.json"
    if path is None or not Path(path).is_file():
        return {}
    values = json.loads(Path(path).read_text(encoding="utf-8"))
    return values.get("feature_extractor", values)


def _packaged_preprocessor(config_file: str) -> dict:
    """What a packaged architecture file records of the checkpoint's preprocessor_config.json."""
    values = json.loads(Path(config_file).read_text(encoding="utf-8")).get("_preprocessor_config", {})
    return values if isinstance(values, dict) else {}


# --- the fine-tuned model in Hugging Face format ---------------------------------------------------


def load_tokenizer(vocab_file: Path):
    """The CTC tokenizer of a prepared vocabulary (`<pad>` = blank, `<unk>`, `|` = word delimiter)."""
    from transformers import Wav2Vec2CTCTokenizer

    # bos/eos off: otherwise they are appended to the vocabulary and the head size no longer matches
    return Wav2Vec2CTCTokenizer(
        str(vocab_file), bos_token=None, eos_token=None, clean_up_tokenization_spaces=False, **SPECIAL_TOKENS
    )


def build_processor(tokenizer, spec: InputSpec):
    """Feature extractor + tokenizer as one processor (`Wav2Vec2Processor`, or `Wav2Vec2BertProcessor`
    for log-mel input), saved next to the model so that plain transformers prepares the input exactly as
    crossling did."""
    from transformers import Wav2Vec2BertProcessor, Wav2Vec2FeatureExtractor, Wav2Vec2Processor

    from crossling.frontend import log_mel_extractor

    if spec.features == LOG_MEL:
        return Wav2Vec2BertProcessor(feature_extractor=log_mel_extractor(spec.padding_value), tokenizer=tokenizer)
    extractor = Wav2Vec2FeatureExtractor(
        feature_size=1,
        sampling_rate=16_000,
        padding_value=0.0,
        do_normalize=spec.do_normalize,
        return_attention_mask=spec.use_attention_mask,
    )
    return Wav2Vec2Processor(feature_extractor=extractor, tokenizer=tokenizer)


def load_finetuned(model_dir: Path):
    """A fine-tuned CTC model directory (model + processor) -> (model in eval mode, processor, InputSpec)."""
    from transformers import AutoModelForCTC, AutoProcessor

    quiet_transformers()
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise ModelError(f"{model_dir}: not a Hugging Face model directory (no config.json)")
    source = ModelSource(str(model_dir), "local", str(model_dir))
    try:
        model = AutoModelForCTC.from_pretrained(
            model_dir, trust_remote_code=False, use_safetensors=_prefer_safetensors(source), local_files_only=True
        )
        processor = AutoProcessor.from_pretrained(model_dir, local_files_only=True, trust_remote_code=False)
    except pickle.UnpicklingError as error:
        raise refused_weights(model_dir, error) from None
    except (OSError, ValueError) as error:
        raise ModelError(f"{model_dir}: cannot load model and processor: {error}") from None
    _check_model_type(model.config.model_type, source)
    extractor = processor.feature_extractor
    spec = input_spec(model.config, {"do_normalize": getattr(extractor, "do_normalize", True),
                                     "padding_value": extractor.padding_value,
                                     "stride": getattr(extractor, "stride", 2)})
    return model.float().eval(), processor, spec


def check_vocabulary(model, tokenizer, vocab: dict[str, int], vocab_file: Path) -> None:
    """Refuse to score a model against a vocabulary its head was not trained on."""
    head = model.config.vocab_size
    model_vocab = tokenizer.get_vocab()
    if model_vocab == vocab and head == len(vocab):
        return
    missing = sorted(set(vocab) - set(model_vocab))
    extra = sorted(set(model_vocab) - set(vocab))
    raise ModelError(
        f"the model's vocabulary ({len(model_vocab)} tokens, CTC head of {head}) does not match {vocab_file} "
        f"({len(vocab)} tokens): missing from the model {missing[:20]}, not in the data {extra[:20]}"
        + ("" if missing or extra else "; same tokens but different ids")
        + " — was it fine-tuned on another language?"
    )


def frames_for_samples(model_config, num_samples: int) -> int:
    """How many unmasked output frames (the CTC loss's input length) the model makes from `num_samples`
    samples: the CNN's frames, or w2v-BERT's valid stacked log-mel rows after its optional adapter."""
    if front_end(model_config.model_type) == LOG_MEL:
        return adapter_frames(model_config, log_mel_rows(num_samples)[1])
    return conv_frames(model_config, num_samples)


def decoded_frames(model_config, num_samples: int) -> int:
    """How many output frames the model gives an utterance fed alone, which greedy decoding reads (as
    transformers' pipeline does). Equal to `frames_for_samples` except for w2v-BERT with an odd fbank frame
    count, whose last stacked row is masked but still decoded by the pipeline."""
    if front_end(model_config.model_type) == LOG_MEL:
        return adapter_frames(model_config, log_mel_rows(num_samples)[0])
    return frames_for_samples(model_config, num_samples)


# --- caching the frozen feature encoder ------------------------------------------------------------


class FrozenFeatureCache:
    """Features that are a fixed function of the audio, computed once per training utterance and replayed:
    the frozen CNN feature encoder's outputs, or w2v-BERT's log-mel rows (its front end has no parameters).

    Exact (up to float summation order) when a CNN is frozen, has no dropout (none of the CTC types has any)
    and uses layer norm: each output frame then depends only on its own samples, and the padded frames are
    masked out downstream. Group-norm encoders normalise over time, padding included. Log-mel rows are what
    the feature extractor computes for the utterance alone, whatever the recipe freezes. CNN features are
    computed under the run's autocast (`autocast_dtype`, None: fp32), as the uncached encoder runs inside
    the training step, so caching never changes a run's precision. `store` may be a
    view of one shared by the runs of a process (`sharing.feature_store`, `sharing.RunView`)."""

    def __init__(self, model, spec: InputSpec | None = None, autocast_dtype=None, on_device: bool = False) -> None:
        self.spec = spec or InputSpec(True, True, "layer")
        self.encoder = feature_encoder(model) if self.spec.features == WAVEFORM else None
        self.model_config = model.config
        self.autocast_dtype = autocast_dtype
        self.on_device = on_device  # keep the features where the encoder ran (a GPU), else in host memory
        self.store: dict = {}
        #: padded model inputs by batch (its utterance indices): a batch met again is not padded again
        self.batches: dict[frozenset[int], tuple[list[int], dict]] = {}
        self._batch_of: dict[int, frozenset[int]] = {}

    @staticmethod
    def applies(model, spec: InputSpec, config: TrainConfig) -> bool:
        if spec.features == LOG_MEL:
            return True
        return config.freeze_feature_encoder and spec.use_attention_mask and spec.feat_extract_norm == "layer"

    @staticmethod
    def bytes_per_utterance(model_config, spec: InputSpec, num_samples: int) -> int:
        """Memory one cached utterance takes (float32)."""
        if spec.features == LOG_MEL:
            return log_mel_rows(num_samples)[0] * MEL_STACK * MEL_BINS * 4
        return frames_for_samples(model_config, num_samples) * model_config.conv_dim[-1] * 4

    def features(self, key, model_input):
        """The cached features of utterance `key` (CNN outputs (channels, frames) or log-mel rows);
        `model_input()` gives its model input when not cached."""
        import torch

        if key not in self.store:
            if self.encoder is None:
                self.store[key] = torch.from_numpy(model_input())
            else:
                device = self._device()
                with torch.no_grad(), torch.autocast(device_type=device.type, dtype=self.autocast_dtype,
                                                     enabled=self.autocast_dtype is not None):
                    values = torch.from_numpy(model_input()).to(device)[None]
                    features = self.encoder(values)[0]
                    self.store[key] = features if self.on_device else features.cpu()
        return self.store[key]

    def model_inputs(self, features: list, lengths: list[int]) -> dict:
        """Model keyword inputs of a batch of cached features of utterances of `lengths` samples, padded;
        CNN outputs come under 'features' (for `replay`), the waveform they stand for is not made."""
        import torch

        if self.encoder is None:
            values, mask = pad_inputs([f.numpy() for f in features], [log_mel_rows(n)[1] for n in lengths],
                                      self.spec.padding_value)
            return {input_name(self.spec): values, "attention_mask": mask}
        mask = torch.arange(max(lengths))[None, :] < torch.tensor(lengths)[:, None]
        return {"attention_mask": mask,
                "features": pad_features(features, frames_for_samples(self.model_config, max(lengths)))}

    def padded(self, indices: list[int], build) -> dict:
        """The padded inputs of the batch `indices` (`build()` makes them the first time): kept, so that a
        later epoch's same batch does no padding. Ties in length are broken anew each epoch, so the same
        utterances may come in another order: the rows that moved are swapped in place (a few rows, not
        the batch). The utterances' cached features become views of their rows (one copy in memory); a
        batch that shared an utterance with a new one is dropped (ties may also regroup utterances: such a
        batch is padded anew, as every batch was before)."""
        key, indices = frozenset(indices), list(indices)
        if key not in self.batches:
            inputs = build()
            for index in indices:
                self.batches.pop(self._batch_of.get(index), None)
                self._batch_of[index] = key
            self.batches[key] = (indices, inputs)
            self._share_rows(list(enumerate(indices)), inputs)
        order, inputs = self.batches[key]
        if order != indices:
            self._reorder(key, indices)
        return inputs

    def _reorder(self, key: frozenset[int], indices: list[int]) -> None:
        order, inputs = self.batches[key]
        moved = [row for row, (was, now) in enumerate(zip(order, indices, strict=True)) if was != now]
        sources = [order.index(indices[row]) for row in moved]
        for value in inputs.values():
            value[moved] = value[sources]  # the right side is a copy: rows may trade places
        self.batches[key] = (indices, inputs)
        self._share_rows([(row, indices[row]) for row in moved], inputs)

    def _share_rows(self, rows: list[tuple[int, int]], inputs: dict) -> None:
        """Point the cached features of utterance `index` at row `row` of the padded batch (same values)."""
        padded = inputs["features"] if self.encoder is not None else inputs[input_name(self.spec)]
        for row, index in rows:
            own = self.store[index]
            self.store[index] = padded[row, :, : own.shape[1]] if self.encoder is not None else padded[row, : own.shape[0]]

    def _device(self):
        return next(self.encoder.parameters()).device

    def replay(self, padded_features):
        """A block in which the model uses these CNN features (`replaying`); nothing to replay for log-mel."""
        if self.encoder is None or padded_features is None:
            return nullcontext()
        return replaying(self.encoder, padded_features)


def feature_encoder(model):
    """The CNN feature encoder (waveform -> (batch, channels, frames)) of a waveform CTC type."""
    return getattr(model, model.base_model_prefix).feature_extractor


@contextmanager
def replaying(encoder, padded_features):
    """Within the block `encoder` returns `padded_features` (batch, channels, frames) instead of running;
    the model's own forward does everything else, so its RNG use is unchanged."""
    encoder.forward = lambda input_values: padded_features
    try:
        yield
    finally:
        del encoder.forward
