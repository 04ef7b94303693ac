"""Design checks of a study before any run: which questions its numbers of languages, checkpoints and
seeds can answer (smallest achievable p, Holm family sizes, the CER difference detectable with 80 % power
under a seed-noise prior) and what it costs (FLOPs from the architecture's config values, device-hours
from a documented throughput; memory and disk measured on torch's meta device, nothing allocated). Input: a
`Study`; output: a `DesignCheck`. Imports no torch at import time."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import cache
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import optimize
from scipy import stats as st

from crossling.errors import ConfigError
from crossling.frontend import log_mel_rows
from crossling.languages import find_language
from crossling.registry import Checkpoint, find_checkpoint
from crossling.study import Study

log = logging.getLogger(__name__)

POWER = 0.8
SAMPLE_RATE = 16_000
#: Permutations of the typology test (as `crossling.factors.typology_correlation` draws them).
PERMUTATIONS = 4999
#: Asymptotic relative efficiency of a rank test against the t-test under normal errors (3/π): a
#: Conover-Iman comparison with n runs per checkpoint has about the power of a t-test with 0.955 n.
RANK_TEST_EFFICIENCY = 3 / math.pi
TYPOLOGY_DISTANCES = 5


# --- smallest achievable p-values: scipy's own test on the most extreme data the design allows ----------


def min_p_mann_whitney(n1: int, n2: int) -> float:
    """Two-sided Mann-Whitney U of n1 vs n2 perfectly separated values (exact for small samples:
    2 / C(n1 + n2, n1), e.g. 0.667 for 2 vs 1 and 0.029 for 4 vs 4)."""
    if n1 < 1 or n2 < 1:
        return math.nan
    return float(st.mannwhitneyu(np.arange(n1), np.arange(n1, n1 + n2), alternative="two-sided").pvalue)


def min_p_wilcoxon(n: int) -> float:
    """Two-sided Wilcoxon signed-rank over n paired differences all of one sign (exact: 2 / 2^n)."""
    if n < 1:
        return math.nan
    return float(st.wilcoxon(np.arange(1, n + 1)).pvalue)


def min_p_kruskal(sizes: Sequence[int]) -> float:
    """Kruskal-Wallis over groups of these sizes whose values do not overlap at all."""
    sizes = [s for s in sizes if s > 0]
    if len(sizes) < 2:
        return math.nan
    edges = np.cumsum([0, *sizes])
    return float(st.kruskal(*(np.arange(a, b) for a, b in zip(edges[:-1], edges[1:], strict=True))).pvalue)


def min_p_friedman(blocks: int, treatments: int) -> float:
    """Friedman test when every block ranks the treatments the same way."""
    if blocks < 2 or treatments < 3:
        return math.nan
    return float(st.friedmanchisquare(*(np.full(blocks, float(j)) for j in range(treatments))).pvalue)


def min_p_kendall(n: int) -> float:
    """Kendall's τ test of two identical rankings of n items."""
    return float(st.kendalltau(np.arange(n), np.arange(n)).pvalue) if n >= 2 else math.nan


def min_p_permutation(cells_per_block: Sequence[int], permutations: int = PERMUTATIONS) -> float:
    """A permutation test shuffling within blocks: 1 / (1 + B), or fewer when the blocks allow fewer
    distinct arrangements than B."""
    arrangements = math.prod(math.factorial(c) for c in cells_per_block)
    return max(1 / (1 + permutations), 1 / arrangements) if arrangements > 1 else 1.0


def baseline_separation_p(checkpoints: int, seeds: int, p_adjust: str = "holm") -> float:
    """The largest Holm-adjusted Conover-Iman p of a pre-trained checkpoint against the baseline on one
    language when every baseline run is worse than every pre-trained run and the pre-trained
    checkpoints' runs interleave (their order among themselves unknown): the p the design can promise
    for "beats the baseline" however the others fare. NaN when untestable (one seed)."""
    from crossling import stats

    if seeds < 2 or checkpoints < 2:
        return math.nan
    others = checkpoints - 1
    rows = [{"checkpoint": f"c{r % others}", "language": "x", "seed": r // others, "cer": float(r)}
            for r in range(others * seeds)]
    rows += [{"checkpoint": "baseline", "language": "x", "seed": s, "cer": float(others * seeds + s)}
             for s in range(seeds)]
    pvalues = stats.conover(pd.DataFrame(rows), p_adjust=p_adjust)
    return float(max(pvalues.loc[f"c{j}", "baseline"] for j in range(others)))


# --- power -------------------------------------------------------------------------------------------


def detectable_difference(seeds: int, checkpoints: int, alpha: float, pairs: int, power: float = POWER) -> float:
    """The difference in mean CER between two checkpoints on one language, in units of the seed sd,
    that a pairwise comparison detects with `power`: a two-sided t-test on the pooled within-checkpoint
    variance (df = checkpoints × (seeds − 1), as Conover-Iman pools it) at the Bonferroni bound
    alpha / pairs of a Holm family, with seeds scaled by the rank test's efficiency 3/π."""
    df = checkpoints * (seeds - 1)
    if seeds < 2 or df < 1:
        return math.nan
    level = alpha / max(pairs, 1)
    critical = st.t.ppf(1 - level / 2, df)
    scale = math.sqrt(RANK_TEST_EFFICIENCY * seeds / 2)

    def shortfall(d: float) -> float:  # the lower tail is below 1e-6 wherever power is near 0.8
        return st.nct.sf(critical, df, d * scale) - power

    high = 1.0
    while shortfall(high) < 0:
        high *= 2
    return float(optimize.brentq(shortfall, 1e-6, high))


@dataclass(frozen=True, kw_only=True)
class SeedNoise:
    """A prior for the sd of test CER over seeds within one checkpoint × language cell, and where it
    comes from."""

    sd: float
    source: str


#: Measured, not assumed: the pooled within-cell sd of test CER over 4 seeds of the 12 pre-trained cells of
#: `crossling demo` (zoo-es, zoo-de x pt ca nl sv-SE da is, demo.toml's recipe: 2-4 of the 30 most frequent
#: words, 560 steps of 6 s), 2026-12-02, 2-core AMD EPYC (0.067 with the previous recipe's 3-6 words of 5000,
#: 280 steps of 12 s). No figure for LARGE models is bundled.
SEED_NOISE: dict[str, SeedNoise] = {
    "micro": SeedNoise(sd=0.066, source="measured: pooled sd over 4 seeds of the 12 pre-trained cells of "
                                        "`crossling demo` (demo.toml recipe)"),
}
NO_PRIOR = ("no seed-noise figure for this model size is bundled (none measured here, no published value "
            "found offline): the detectable difference is given in seed sds; pass --seed-sd")


def seed_noise(size: str, override: float | None = None) -> SeedNoise | None:
    """The prior for a model size: `override` (a user's figure), else a bundled measurement, else None."""
    if override is not None:
        if not override > 0:
            raise ConfigError(f"the seed sd must be a positive CER (e.g. 0.01), got {override}")
        return SeedNoise(sd=override, source="given on the command line")
    return SEED_NOISE.get(size)


# --- questions ---------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class QuestionCheck:
    """One question the study asks: its test, the unit of analysis and how many, the smallest p the design
    allows (times the Holm family where one applies) and whether that can reach alpha; `reason` says why
    not when it is not a matter of p (e.g. one seed), `note` adds what the figure assumes."""

    key: str
    question: str
    test: str
    unit: str
    n: str
    min_p: float
    family: int
    testable: bool
    reason: str = ""
    note: str = ""


def _check(key: str, *, question: str, test: str, unit: str, n: str, min_p: float, alpha: float,
           family: int = 1, note: str = "", reason: str = "") -> QuestionCheck:
    adjusted = min(1.0, min_p * family) if math.isfinite(min_p) else math.nan
    testable = not reason and math.isfinite(adjusted) and adjusted < alpha
    return QuestionCheck(key=key, question=question, test=test, unit=unit, n=n, min_p=adjusted, family=family,
                         testable=testable, reason=reason, note=note)


def baseline_alias(checkpoints: Sequence[str]) -> str | None:
    """The study's random-init baseline (the first checkpoint with no pre-training), if any."""
    for name in checkpoints:
        facts = find_checkpoint(name)
        if facts is not None and (facts.is_random_init or facts.pretrain_hours == 0):
            return name
    return None


RUNS = "runs (seeds) of one test set"


def _per_language_checks(study: Study, alpha: float) -> list[QuestionCheck]:
    k, seeds = len(study.checkpoints), len(study.seeds)
    pairs = k * (k - 1) // 2
    out = [_check("kruskal", question="checkpoints differ on a language", test="Kruskal-Wallis per language",
                  unit=RUNS, n=f"{k} checkpoints x {seeds} seeds", min_p=min_p_kruskal([seeds] * k), alpha=alpha)]
    baseline = baseline_alias(study.checkpoints)
    if baseline is not None and k >= 2:
        reason = "one seed per cell: Conover-Iman needs variation within checkpoints" if seeds < 2 else ""
        out.append(_check("baseline", question=f"every pre-trained checkpoint beats {baseline} on every language",
                          test=f"Conover-Iman, Holm over {pairs} pairs per language", unit=RUNS,
                          n=f"{seeds} seeds per cell", min_p=baseline_separation_p(k, seeds), alpha=alpha,
                          note="min p: the worst pre-trained checkpoint when every baseline run is last",
                          reason=reason))
    return out


def _across_language_checks(study: Study, alpha: float) -> list[QuestionCheck]:
    n, k = len(study.languages), len(study.checkpoints)
    friedman = _check("friedman", question="checkpoints differ across languages", test="Friedman (languages as blocks)",
                      unit="languages (seed-mean cells)", n=f"{n} languages x {k} checkpoints",
                      min_p=min_p_friedman(n, k), alpha=alpha,
                      reason="needs >= 2 languages and >= 3 checkpoints" if n < 2 or k < 3 else "")
    cd = _critical_difference(k, n, alpha)
    nemenyi = _check("nemenyi", question="which checkpoints rank apart across languages",
                     test="Nemenyi (critical difference)", unit="languages", n=f"{n} languages",
                     min_p=min_p_nemenyi(n, k), alpha=alpha,
                     note=f"critical difference {cd:.2f} vs the largest possible rank difference {k - 1}"
                     if math.isfinite(cd) else "")
    return [friedman, nemenyi]


def min_p_nemenyi(blocks: int, treatments: int) -> float:
    """Nemenyi p (as scikit-posthocs computes it) of two treatments ranked first and last in every block."""
    if blocks < 1 or treatments < 2:
        return math.nan
    q = (treatments - 1) / math.sqrt(treatments * (treatments + 1) / (6 * blocks))
    return float(st.studentized_range.sf(q * math.sqrt(2), treatments, np.inf))


def _critical_difference(k: int, n: int, alpha: float) -> float:
    from crossling.stats import critical_difference

    return critical_difference(k, n, alpha) if k >= 2 and n >= 1 else math.nan


def _family_checks(study: Study, alpha: float) -> list[QuestionCheck]:
    ie = sum(1 for lang in study.languages if _indo_european(lang))
    other = len(study.languages) - ie
    one_group = f"all {len(study.languages)} targets are {'Indo-European' if ie else 'outside Indo-European'}"
    families = _check("families", question="Indo-European and other targets differ", test="Mann-Whitney U",
                      unit="languages", n=f"{ie} vs {other} languages", min_p=min_p_mann_whitney(ie, other), alpha=alpha,
                      reason=one_group if not (ie and other) else "")
    blocks = subgroup_blocks(study.checkpoints, study.languages)
    subgroup = _check("subgroup", question="monolingual checkpoints transfer differently within their own subgroup",
                      test="Wilcoxon signed-rank (same- minus other-subgroup relative CER per target)",
                      unit="target languages", n=f"{len(blocks)} targets with both",
                      min_p=min_p_wilcoxon(len(blocks)), alpha=alpha,
                      note=f"targets with a same- and an other-subgroup monolingual checkpoint: {' '.join(blocks) or 'none'}")
    return [families, subgroup]


def _indo_european(code: str) -> bool:
    lang = find_language(code)
    return lang is not None and lang.indo_european


def subgroup_blocks(checkpoints: Sequence[str], languages: Sequence[str]) -> list[str]:
    """Targets having a monolingual checkpoint of their own subgroup and one of another subgroup (neither
    pre-trained on the target itself): the blocks of the same-subgroup transfer test."""
    from crossling.factors import monolingual_languages

    sources = [find_language(code) for code in monolingual_languages(checkpoints).values()]
    out = []
    for code in languages:
        target = find_language(code)
        if target is None:
            continue
        relations = {s.lineage == target.lineage for s in sources if s is not None and s != target}
        if relations == {True, False}:
            out.append(code)
    return out


def _other_checks(study: Study, alpha: float) -> list[QuestionCheck]:
    pretrained = [c for c in study.checkpoints if (f := find_checkpoint(c)) is not None and f.pretrain_languages]
    typology = _check("typology", question="CER follows the typological distance of the pre-training languages",
                      test="Spearman, permutation within languages", unit="checkpoint x language cells",
                      n=f"{len(pretrained)} x {len(study.languages)} cells",
                      min_p=min_p_permutation([len(pretrained)] * len(study.languages)), alpha=alpha,
                      family=TYPOLOGY_DISTANCES,
                      reason="needs >= 3 cells" if len(pretrained) * len(study.languages) < 3 else "")
    cells = len(study.checkpoints) * len(study.languages)
    gender = _check("gender", question="CER differs between female and male test speakers",
                    test="Wilcoxon signed-rank", unit="checkpoint x language cells (seed-mean gap)", n=f"{cells} cells",
                    min_p=min_p_wilcoxon(cells), alpha=alpha, note="needs gender labels on the test speakers")
    out = [typology, gender]
    for name, values in study.sweep:
        out.append(_check(f"sensitivity/{name}", question=f"checkpoint rankings agree across {name} values",
                          test="Kendall's tau", unit="checkpoints", n=f"{len(study.checkpoints)} checkpoints",
                          min_p=min_p_kendall(len(study.checkpoints)), alpha=alpha, family=math.comb(len(values), 2)))
    return out


def question_checks(study: Study, alpha: float = 0.05) -> list[QuestionCheck]:
    """Every question of the report, with what this design allows it to show."""
    return [*_per_language_checks(study, alpha), *_across_language_checks(study, alpha),
            *_family_checks(study, alpha), *_other_checks(study, alpha)]


# --- architecture and cost ------------------------------------------------------------------------------


#: Model types whose front end is a CNN over the waveform and whose encoder is a post- or pre-LN transformer
#: with one convolutional positional embedding (WavLM's gated relative position bias, < 0.1 % of its
#: parameters, is left out of its count).
_CNN_TRANSFORMERS = ("wav2vec2", "hubert", "unispeech", "unispeech-sat", "wavlm")


@dataclass(frozen=True, kw_only=True)
class Architecture:
    """The config values of a wav2vec2-family model that set its size and cost: a CNN over the waveform
    with a transformer (wav2vec2, HuBERT, WavLM, UniSpeech(-SAT); data2vec-audio with its stacked
    positional convolutions) or stacked log-mel rows into a Conformer (w2v-BERT 2.0)."""

    model_type: str
    hidden: int
    layers: int
    ffn: int
    conv_dim: tuple[int, ...] = ()  # empty: log-mel input
    conv_kernel: tuple[int, ...] = ()
    conv_stride: tuple[int, ...] = ()
    pos_conv_kernel: int = 0
    pos_conv_groups: int = 1
    pos_conv_layers: int = 1  # data2vec-audio stacks several positional convolutions
    input_dim: int = 0  # w2v-BERT: the stacked log-mel row's size
    depthwise_kernel: int = 0  # w2v-BERT: the Conformer's depthwise convolution
    relative_positions: int = 0  # w2v-BERT: relative_key distances (left + right + 1)
    heads: int = 1
    source: str

    @classmethod
    def from_config(cls, config: Mapping, source: str) -> Architecture:
        model_type = config.get("model_type", "wav2vec2")
        try:
            return cls(model_type=model_type, hidden=int(config["hidden_size"]),
                       layers=int(config["num_hidden_layers"]), ffn=int(config["intermediate_size"]),
                       heads=int(config["num_attention_heads"]), source=source, **_front_end(config, source))
        except KeyError as error:
            raise ConfigError(f"{source}: model config lacks {error.args[0]!r}, needed to count its parameters") from None
        except (TypeError, ValueError) as error:
            raise ConfigError(f"{source}: model config value of the wrong type ({error}), needed to count its "
                              f"parameters") from None

    @property
    def log_mel(self) -> bool:
        return not self.conv_dim

    def frames(self, samples: int) -> int:
        """Encoder frames for `samples` input samples: the CNN's output frames, or stacked log-mel rows."""
        if self.log_mel:
            return log_mel_rows(samples)[0]
        for kernel, stride in zip(self.conv_kernel, self.conv_stride, strict=True):
            samples = max((samples - kernel) // stride + 1, 0)
        return samples

    def trainable_parameters(self, vocab_size: int) -> int:
        """Parameters trained when the CNN (if any) is frozen: feature projection, positional embedding,
        encoder layers, encoder layer norm, the masked-frame embedding and the CTC head."""
        h = self.hidden
        head = h * vocab_size + vocab_size
        if self.log_mel:
            projection = 2 * self.input_dim + self.input_dim * h + h
            return projection + self.layers * self._conformer_layer() + h + head
        projection = 2 * self.conv_dim[-1] + self.conv_dim[-1] * h + h
        return projection + self._positional() + self.layers * self._transformer_layer() + 2 * h + h + head

    def _positional(self) -> int:
        h, k = self.hidden, self.pos_conv_kernel
        if self.model_type == "data2vec-audio":  # plain grouped convolutions (no weight norm)
            return self.pos_conv_layers * (h * (h // self.pos_conv_groups) * k + h)
        return h * (h // self.pos_conv_groups) * k + h + k  # weight norm: weight_v, weight_g per kernel tap

    def _transformer_layer(self) -> int:
        h, f = self.hidden, self.ffn
        return 4 * (h * h + h) + 2 * 2 * h + (h * f + f) + (f * h + h)

    def _conformer_layer(self) -> int:
        """Two half-step feed-forward blocks, relative-key self-attention, the convolution module (bias-free
        pointwise and depthwise convolutions) and six layer norms."""
        h, f = self.hidden, self.ffn
        feed_forward = (h * f + f) + (f * h + h)
        attention = 4 * (h * h + h) + self.relative_positions * (h // self.heads)
        convolution = 2 * h * h + h * self.depthwise_kernel + h * h
        return 2 * feed_forward + attention + convolution + 6 * 2 * h

    def train_step_flops(self, batch_seconds: float, clip_seconds: float, vocab_size: int) -> float:
        """Model FLOPs of one training step on `batch_seconds` of clips `clip_seconds` long: forward and
        backward (3x the forward's matmuls) of everything after the frozen CNN, whose features are cached
        (w2v-BERT: after the log-mel features, computed on the CPU by its feature extractor)."""
        frames = self.frames(int(clip_seconds * SAMPLE_RATE))
        h = self.hidden
        if self.log_mel:
            layer = 2 * 2 * h * self.ffn + 4 * h * h + 3 * h * h + h * self.depthwise_kernel
            per_frame = 2 * (self.input_dim * h + self.layers * layer + h * vocab_size)
            attention = self.layers * 6 * frames * frames * h  # scores, values, relative-key scores
        else:
            per_frame = 2 * (self.conv_dim[-1] * h + self._positional()
                             + self.layers * (4 * h * h + 2 * h * self.ffn) + h * vocab_size)
            attention = self.layers * 4 * frames * frames * h
        clips = batch_seconds / clip_seconds
        return 3 * clips * (frames * per_frame + attention)


def _front_end(config: Mapping, source: str) -> dict:
    """The architecture's front-end and positional fields from its config values, by model type."""
    model_type = config.get("model_type", "wav2vec2")
    if model_type == "wav2vec2-bert":
        if config.get("add_adapter") or config.get("position_embeddings_type", "relative_key") != "relative_key":
            raise ConfigError(f"{source}: crossling counts w2v-BERT with relative_key positions and no adapter; "
                              f"this config has position_embeddings_type "
                              f"{config.get('position_embeddings_type')!r}, add_adapter {config.get('add_adapter')}")
        return {"input_dim": int(config["feature_projection_input_dim"]),
                "depthwise_kernel": int(config["conv_depthwise_kernel_size"]),
                "relative_positions": int(config["left_max_position_embeddings"])
                + int(config["right_max_position_embeddings"]) + 1}
    if model_type not in (*_CNN_TRANSFORMERS, "data2vec-audio"):
        raise ConfigError(f"{source}: crossling cannot count the parameters of model type {model_type!r} "
                          f"(it counts {', '.join((*_CNN_TRANSFORMERS, 'data2vec-audio', 'wav2vec2-bert'))})")
    cnn = {"conv_dim": tuple(config["conv_dim"]), "conv_kernel": tuple(config["conv_kernel"]),
           "conv_stride": tuple(config["conv_stride"]),
           "pos_conv_groups": int(config["num_conv_pos_embedding_groups"])}
    if model_type == "data2vec-audio":
        return {**cnn, "pos_conv_kernel": int(config["conv_pos_kernel_size"]),
                "pos_conv_layers": int(config["num_conv_pos_embeddings"])}
    return {**cnn, "pos_conv_kernel": int(config["num_conv_pos_embeddings"])}


@cache
def _bundled_config(name: str) -> dict:
    return json.loads(resources.files("crossling").joinpath("data", name).read_text(encoding="utf-8"))


#: Every reference checkpoint's config that could be read gives the LARGE transformer (24 layers, hidden
#: 1024, FFN 4096, positional conv 128 / 16 groups, 7 x 512 CNN); the complete XLS-R 300M config is bundled.
LARGE_CONFIG = "facebook__wav2vec2-xls-r-300m.json"


def architecture_of(checkpoint: str, base: Path | None = None) -> Architecture:
    """The architecture of `checkpoint` from its config values (see `config_values`)."""
    return Architecture.from_config(*config_values(checkpoint, base))


def config_values(checkpoint: str, base: Path | None = None) -> tuple[dict, str]:
    """(config.json values, where they come from) of `checkpoint`: a mini-zoo model's own config.json, the
    bundled config of a reference checkpoint (else the bundled LARGE config), a local model folder's
    config.json (relative to `base`, the study's folder), or a hub id's config.json in the Hugging Face cache.
    Raises ConfigError naming what was looked at when none is known (nothing is downloaded). `random:<alias>`
    has the architecture of `<alias>`."""
    facts = find_checkpoint(checkpoint)
    if facts is None and checkpoint.startswith("random:"):
        facts = find_checkpoint(checkpoint.removeprefix("random:"))
    if facts is None:
        return _unregistered_config(checkpoint, base or Path.cwd())
    folder = _zoo_folder(facts)
    if folder is not None:
        path = Path(str(resources.files("crossling").joinpath("zoo", folder, "config.json")))
        return json.loads(path.read_text(encoding="utf-8")), str(path)
    name = facts.config_name if resources.files("crossling").joinpath("data", facts.config_name).is_file() else LARGE_CONFIG
    return _bundled_config(name), f"crossling/data/{name}"


def _unregistered_config(checkpoint: str, base: Path) -> tuple[dict, str]:
    local = Path(checkpoint).expanduser()
    local = local if local.is_absolute() else base / local
    path = local / "config.json" if local.is_dir() else _cached_hub_config(checkpoint)
    if path is None or not path.is_file():
        raise ConfigError(f"cannot size checkpoint {checkpoint!r}: it is not registered (`crossling models`), "
                          f"not a local model folder with a config.json, and its config.json is not in the "
                          f"Hugging Face cache")
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot size checkpoint {checkpoint!r}: {path} is not readable JSON ({exc})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"cannot size checkpoint {checkpoint!r}: {path} holds {type(values).__name__}, "
                          f"expected a JSON object")
    return values, str(path)


def _cached_hub_config(checkpoint: str) -> Path | None:
    """The cached config.json of hub id `checkpoint`, or None (never downloads)."""
    if checkpoint.count("/") != 1:
        return None
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(checkpoint, "config.json")
    except ValueError:  # not a valid repo id
        return None
    return Path(found) if isinstance(found, str) else None


def _zoo_folder(facts: Checkpoint) -> str | None:
    source = facts.source.removeprefix("random:")
    return source.removeprefix("zoo:") if source.startswith("zoo:") else None


@dataclass(frozen=True, kw_only=True)
class Throughput:
    """Model FLOP/s a device sustains in training, plus a fixed cost per run (start-up, evaluation), and how
    many runs share a machine at once (two one-thread runs on 2 cores)."""

    name: str
    flops_per_second: float
    source: str
    seconds_per_run: float = 0.0
    at_once: int = 1


#: Documented: NVIDIA's dense bf16 peaks (A100 312 TFLOP/s, H100 SXM 989 TFLOP/s) at an assumed 45 % model
#: FLOPs utilisation (the middle of the 40-50 % that well-tuned transformer training reaches; not measured
#: here, no GPU). Measured on CPU: the previous demo (45 runs x 400 steps of 16 s batches = 1.38e13 model
#: FLOPs by `Architecture.train_step_flops`) took 4 min 42 s on an idle 2-core AMD EPYC with AVX-512 and
#: 15 min 57 s on one without, with two one-thread runs at a time: model FLOPs per thread-second with data
#: preparation, start-up and the report included. An A/B of one run of each recipe on one machine (0.53x the
#: time) agrees with scaling by FLOPs (0.56x).
OLD_DEMO_FLOPS = 1.38e13
THROUGHPUTS = {
    "large": (Throughput(name="A100 bf16", flops_per_second=0.45 * 312e12,
                         source="NVIDIA peak 312 TFLOP/s x assumed 45 % MFU"),
              Throughput(name="H100 SXM bf16", flops_per_second=0.45 * 989e12,
                         source="NVIDIA peak 989 TFLOP/s x assumed 45 % MFU")),
    "micro": (Throughput(name="CPU thread, 2-core EPYC with AVX-512", flops_per_second=OLD_DEMO_FLOPS / (282 * 2),
                         source="measured: the previous demo's wall time, idle", at_once=2),
              Throughput(name="CPU thread, 2-core EPYC without AVX-512", flops_per_second=OLD_DEMO_FLOPS / (957 * 2),
                         source="measured: the previous demo's wall time, idle", at_once=2)),
}
#: Typical clip lengths: Common Voice clips average about 5 s; `crossling synth` sentences of 3-6 words ~2 s.
CLIP_SECONDS = {"synthetic": 2.0, "common-voice": 5.0, "prepared": 5.0}
VOCAB_SIZE = 50  # characters + specials; the head is < 1 % of a step's FLOPs for any alphabet


@dataclass(frozen=True, kw_only=True)
class RunMemory:
    """Memory and disk of one run (`budget.measure_step_memory`: a meta-device measurement, nothing run):
    device memory for weights, gradients and Adam (`state_bytes`) plus the activations of the recipe's whole
    batch in one pass; the resume file (the trained fp32 weights + Adam moments: the frozen CNN is left out)
    while it runs; the final model."""

    precision: str
    state_bytes: float
    activation_bytes: float
    peak_bytes: float
    resume_file_bytes: float
    model_bytes: float


@dataclass(frozen=True, kw_only=True)
class CheckpointCost:
    checkpoint: str
    parameters: int
    step_flops: float
    run_flops: float
    architecture: str
    memory: RunMemory | None = None


@dataclass(frozen=True, kw_only=True)
class DeviceCost:
    """Hours on one device type: per run, in all, and the wall time of one machine running `at_once` runs."""

    device: str
    hours_per_run: float
    device_hours: float
    wall_hours: float
    at_once: int
    source: str


@dataclass(frozen=True, kw_only=True)
class Cost:
    """Training cost of the whole grid. Evaluation (one forward pass over dev and test) is left out of
    the FLOPs; a CPU throughput's per-run seconds include it."""

    runs: int
    steps: int
    batch_seconds: float
    clip_seconds: float
    checkpoints: tuple[CheckpointCost, ...]
    total_flops: float
    devices: tuple[DeviceCost, ...]
    unsized: tuple[str, ...] = ()  # why a checkpoint's size is unknown; then no total and no device-hours
    disk_bytes: float = math.nan  # every run's final model (resume files come and go: one per run in flight)


def study_cost(study: Study, *, memory: bool = True) -> Cost:
    """FLOPs per step, per run and in total from each checkpoint's architecture, and device-hours on the
    documented or measured throughputs for the study's model size; with `memory`, each run's memory and
    disk, measured on torch's meta device (imports torch; the analysis half passes False)."""
    steps, batch = study.recipe.max_steps, study.recipe.batch_seconds
    clip = min(CLIP_SECONDS.get(study.data.kind, 5.0), batch)
    runs_per_checkpoint = study.size // len(study.checkpoints)
    rows, unsized = [], []
    for name in study.checkpoints:
        try:
            arch = architecture_of(name, study.data.base)
        except ConfigError as error:
            unsized.append(str(error))
            continue
        step = arch.train_step_flops(batch, clip, VOCAB_SIZE)
        rows.append(CheckpointCost(checkpoint=name, parameters=arch.trainable_parameters(VOCAB_SIZE), step_flops=step,
                                   run_flops=step * steps, architecture=arch.source,
                                   memory=run_memory(name, study, on_gpu=_size(study) == "large") if memory else None))
    if unsized:  # a total over part of the grid would understate the cost: none is given
        return Cost(runs=study.size, steps=steps, batch_seconds=batch, clip_seconds=clip, checkpoints=tuple(rows),
                    total_flops=math.nan, devices=(), unsized=tuple(unsized))
    total = sum(r.run_flops for r in rows) * runs_per_checkpoint
    devices = tuple(_device_cost(t, total, study.size) for t in THROUGHPUTS.get(_size(study), ()))
    sized = all(r.memory is not None for r in rows)
    disk = sum(r.memory.model_bytes for r in rows) * runs_per_checkpoint if sized else math.nan
    return Cost(runs=study.size, steps=steps, batch_seconds=batch, clip_seconds=clip, checkpoints=tuple(rows),
                total_flops=total, devices=devices, disk_bytes=disk)


def run_memory(checkpoint: str, study: Study, *, on_gpu: bool) -> RunMemory | None:
    """One run's memory and disk: bf16 on a GPU (LARGE studies), fp32 on CPU (micro studies); None when
    transformers cannot build the architecture of its config (then the plan says so)."""
    values, _ = config_values(checkpoint, study.data.base)
    dtype = "bfloat16" if on_gpu else "float32"
    recipe = study.recipe
    try:
        memory = _measured(json.dumps(values, sort_keys=True), dtype,
                           min(recipe.max_utterance_seconds, recipe.batch_seconds))
    except (ValueError, KeyError, TypeError, RuntimeError) as error:
        log.warning("cannot measure the memory of %s's architecture: %s", checkpoint, error)
        return None
    activations = memory.activations_per_second * recipe.batch_seconds
    return RunMemory(precision="bf16 on GPU" if on_gpu else "fp32 on CPU", state_bytes=memory.state,
                     activation_bytes=activations, peak_bytes=memory.state + activations,
                     resume_file_bytes=memory.trained * (4 + 8), model_bytes=memory.parameters * 4)


@cache
def _measured(values: str, dtype: str, clip_seconds: float):
    from crossling.budget import measure_step_memory

    return measure_step_memory(json.loads(values), vocab_size=VOCAB_SIZE, clip_seconds=clip_seconds, dtype=dtype)


def _size(study: Study) -> str:
    sizes = {(find_checkpoint(c).size if find_checkpoint(c) else "large") for c in study.checkpoints}
    return "micro" if sizes <= {"micro", "tiny"} else "large"


def _device_cost(throughput: Throughput, total_flops: float, runs: int) -> DeviceCost:
    hours = (total_flops / throughput.flops_per_second + runs * throughput.seconds_per_run) / 3600
    return DeviceCost(device=throughput.name, hours_per_run=hours / runs, device_hours=hours,
                      wall_hours=hours / throughput.at_once, at_once=throughput.at_once, source=throughput.source)


# --- the whole check -----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Power:
    """The mean CER difference between two checkpoints on one language that the per-language comparison
    detects with 80 % power: in seed sds, and in CER when a seed-noise prior is known."""

    in_seed_sd: float
    cer: float
    seed_sd: float
    prior: str
    alpha_per_pair: float


@dataclass(frozen=True, kw_only=True)
class DesignCheck:
    """What a study can answer and what it costs, before any run."""

    study: str
    alpha: float
    runs: int
    checkpoints: int
    languages: int
    seeds: int
    questions: tuple[QuestionCheck, ...]
    holm_families: dict[str, int]
    power: Power
    cost: Cost

    def to_json(self) -> dict:
        """A JSON-ready dict (NaN and infinities as None)."""
        return _finite(asdict(self))


def _finite(value):
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return None if isinstance(value, float) and not math.isfinite(value) else value


def design_check(study: Study, alpha: float = 0.05, seed_sd: float | None = None, *, memory: bool = False
                 ) -> DesignCheck:
    """The design checks of `study` at significance level `alpha` (see the module docstring); `memory`
    adds each run's measured memory and disk to the cost (`crossling study plan` does; it imports torch)."""
    if not 0 < alpha < 1:
        raise ConfigError(f"alpha (the significance level) must be between 0 and 1, e.g. 0.05; got {alpha}")
    k, seeds = len(study.checkpoints), len(study.seeds)
    pairs = k * (k - 1) // 2
    families = {"Conover-Iman pairs per language": pairs, "typology distances": TYPOLOGY_DISTANCES,
                "families per checkpoint": k}
    return DesignCheck(study=study.name, alpha=alpha, runs=study.size, checkpoints=k, languages=len(study.languages),
                       seeds=seeds, questions=tuple(question_checks(study, alpha)), holm_families=families,
                       power=_power(study, alpha, pairs, seed_sd), cost=study_cost(study, memory=memory))


def _power(study: Study, alpha: float, pairs: int, seed_sd: float | None) -> Power:
    d = detectable_difference(len(study.seeds), len(study.checkpoints), alpha, pairs)
    prior = seed_noise(_size(study), seed_sd)
    if prior is None:
        return Power(in_seed_sd=d, cer=math.nan, seed_sd=math.nan, prior=NO_PRIOR, alpha_per_pair=alpha / max(pairs, 1))
    return Power(in_seed_sd=d, cer=d * prior.sd, seed_sd=prior.sd, prior=prior.source, alpha_per_pair=alpha / max(pairs, 1))
