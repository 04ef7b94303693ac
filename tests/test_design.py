"""crossling.design: smallest achievable p-values, power, parameter and FLOP counts from config values, and
`crossling study plan` printing the checks for the shipped studies."""

import json
import math
from dataclasses import replace

import pytest
from scipy import stats as st

from crossling import design, registry
from crossling.study import find_study, load_study


def test_smallest_p_values_by_hand():
    assert design.min_p_mann_whitney(2, 1) == pytest.approx(2 / 3)  # the old demo's families test
    assert design.min_p_mann_whitney(4, 4) == pytest.approx(2 / 70)
    assert design.min_p_wilcoxon(5) == pytest.approx(2 / 2**5) and design.min_p_wilcoxon(6) == pytest.approx(2 / 2**6)
    assert design.min_p_friedman(3, 5) == pytest.approx(st.chi2.sf(3 * 4, 4))  # chi2 = n (k - 1) at most
    assert design.min_p_kendall(5) == pytest.approx(2 / math.factorial(5))
    assert design.min_p_permutation([2] * 6) == pytest.approx(1 / 64)
    assert design.min_p_permutation([5] * 6) == pytest.approx(1 / 5000)
    assert math.isnan(design.min_p_mann_whitney(6, 0))


def test_baseline_question_needs_few_checkpoints_or_many_seeds():
    """Even when every baseline run is last, 5 checkpoints x 3 seeds (the old demo) cannot reach 0.05 after Holm;
    3 x 4 (the new one) can; one seed cannot be tested at all."""
    assert design.baseline_separation_p(5, 3) > 0.4
    assert design.baseline_separation_p(3, 3) > 0.05
    assert design.baseline_separation_p(3, 4) < 0.02
    assert design.baseline_separation_p(2, 3) < 0.05
    assert math.isnan(design.baseline_separation_p(3, 1))


def test_detectable_difference_agrees_with_statsmodels_power():
    from statsmodels.stats.power import TTestIndPower

    d = design.detectable_difference(seeds=10, checkpoints=2, alpha=0.05, pairs=1)
    # the same t-test with the rank test's efficiency; statsmodels' df (2 n_eff - 2) differs slightly
    expected = TTestIndPower().solve_power(nobs1=10 * 3 / math.pi, alpha=0.05, power=0.8)
    assert d == pytest.approx(expected, rel=0.03)
    assert design.detectable_difference(4, 3, 0.05, 3) < design.detectable_difference(3, 3, 0.05, 3)
    assert math.isnan(design.detectable_difference(1, 3, 0.05, 3))


def _ctc_model(config: dict, vocab_size: int, **overrides):
    """transformers' CTC model of `config` (any model type) on the meta device: shapes without memory."""
    import torch
    from transformers import AutoConfig, AutoModelForCTC

    values = {k: v for k, v in config.items() if not k.startswith("_") and k not in ("architectures",)}
    values.update(vocab_size=vocab_size, pad_token_id=0, **overrides)
    with torch.device("meta"):
        return AutoModelForCTC.from_config(AutoConfig.for_model(values.pop("model_type"), **values))


def _trainable(config: dict, vocab_size: int) -> int:
    model = _ctc_model(config, vocab_size)
    if config["model_type"] != "wav2vec2-bert":  # w2v-BERT has no CNN to freeze
        model.freeze_feature_encoder()
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("checkpoint", ["zoo-es", "random-init", "mms-300m", "mms-1b", "xlsr-1b", "xlsr-2b",
                                        "data2vec-base", "data2vec-large", "w2v-bert-2"])
def test_parameter_count_matches_transformers(checkpoint):
    config, source = design.config_values(checkpoint)
    assert design.architecture_of(checkpoint).trainable_parameters(50) == _trainable(config, 50)
    facts = registry.find_checkpoint(checkpoint)
    if facts.config_name:  # today's checkpoints are sized from their own packaged config, not the LARGE one
        assert source == f"crossling/data/{facts.config_name}"


@pytest.mark.parametrize("checkpoint", ["xlsr300m", "data2vec-large", "w2v-bert-2"])
def test_forward_flops_match_torch_flop_counter(checkpoint):
    """The step FLOPs are 3x the forward's after the CNN; the forward's (two layers of the real widths, one
    5 s clip) agree with what torch counts for transformers' model: a CNN + transformer, data2vec's stacked
    positional convolutions, and w2v-BERT's Conformer over log-mel rows."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    config = {**design.config_values(checkpoint)[0], "num_hidden_layers": 2}
    arch = design.Architecture.from_config(config, checkpoint)
    model = _ctc_model(config, 50, mask_time_prob=0.0, layerdrop=0.0).eval()
    samples = 5 * 16_000
    with torch.device("meta"):
        if arch.log_mel:
            inputs, cnn = torch.zeros(1, arch.frames(samples), arch.input_dim), None
        else:
            inputs, cnn = torch.zeros(1, samples), model.base_model.feature_extractor
        with FlopCounterMode(display=False) as everything:
            model(inputs)
        with FlopCounterMode(display=False) as front:
            if cnn is not None:
                cnn(inputs)
    counted = everything.get_total_flops() - front.get_total_flops()
    assert arch.train_step_flops(5.0, 5.0, 50) / 3 == pytest.approx(counted, rel=2e-3)


def test_a_study_of_todays_checkpoints_is_sized(tmp_path, capsys):
    """Each registered checkpoint of today, and random:<alias>, is sized from its packaged architecture; a
    model type crossling has no count for is 'cannot be estimated' (why), never a wrong figure."""
    study = tmp_path / "s.toml"
    names = ["mms-300m", "mms-1b", "xlsr-1b", "xlsr-2b", "w2v-bert-2", "data2vec-large", "random:w2v-bert-2"]
    study.write_text(f"checkpoints = {json.dumps(names)}\nlanguages = ['pt']\nseeds = [0]\n"
                     "[data]\nsource = 'prepared'\npath = 'p'\n")
    cost = design.study_cost(load_study(study))
    assert not cost.unsized and [c.checkpoint for c in cost.checkpoints] == names
    by_name = {c.checkpoint: c for c in cost.checkpoints}
    assert by_name["random:w2v-bert-2"] == replace(by_name["w2v-bert-2"], checkpoint="random:w2v-bert-2")
    assert by_name["xlsr-2b"].parameters > by_name["mms-1b"].parameters > by_name["mms-300m"].parameters
    from crossling.cli import main

    assert main(["study", "plan", str(study), "--store", str(tmp_path / "store")]) == 0
    out = capsys.readouterr().out
    cost_line = next(line for line in out.splitlines() if line.startswith("cost:"))
    assert "h per run on average, " in out  # sizes differ: a mean over the grid
    assert "mms-300m 311M params" in cost_line and "xlsr-2b 2.16B params" in cost_line  # each size once
    assert "w2v-bert-2, random:w2v-bert-2 581M params" in cost_line
    conformer, _ = design.config_values("zoo-es")
    (tmp_path / "conformer").mkdir()
    (tmp_path / "conformer" / "config.json").write_text(json.dumps({**conformer, "model_type": "wav2vec2-conformer"}))
    study.write_text(study.read_text().replace('"mms-300m"', '"conformer"'))
    (reason,) = design.study_cost(load_study(study)).unsized
    assert "cannot count the parameters of model type 'wav2vec2-conformer'" in reason


def test_large_step_flops_match_the_reference_arithmetic():
    """OFFLINE-FACTS: 311.3M trainable parameters with the CNN frozen; batch_seconds 200 of 5 s clips
    ≈ 6 x 311.3M x 9,960 frames + attention ≈ 19.3 TFLOP per step."""
    arch = design.architecture_of("xlsr300m")
    assert arch.trainable_parameters(50) == pytest.approx(311.3e6, rel=1e-3)
    assert arch.train_step_flops(200.0, 5.0, 50) == pytest.approx(19.3e12, rel=0.02)
    cost = design.study_cost(find_study("reference"))
    assert cost.runs == 864 and cost.total_flops == pytest.approx(864 * 4000 * 19.3e12, rel=0.02)
    a100 = next(d for d in cost.devices if d.device.startswith("A100"))
    assert 120 <= a100.device_hours <= 150


def test_shipped_demo_can_answer_its_questions_and_the_old_one_could_not(tmp_path):
    checks = {q.key: q for q in design.question_checks(find_study("demo"))}
    for key in ("kruskal", "baseline", "friedman", "subgroup"):
        assert checks[key].testable, checks[key]
    assert not checks["families"].testable and "Indo-European" in checks["families"].reason
    old = tmp_path / "old-demo.toml"
    old.write_text('checkpoints = ["zoo-es", "zoo-de", "zoo-multi4", "zoo-romance", "zoo-random"]\n'
                   'languages = ["pt", "nl", "tr"]\nseeds = [0, 1, 2]\n[data]\nsource = "synthetic"\n'
                   '[recipe]\nlearning_rate = 4e-3\nmax_steps = 400\n')
    before = {q.key: q for q in design.question_checks(load_study(old))}
    assert not before["baseline"].testable and before["baseline"].min_p > 0.4
    assert not before["families"].testable and before["families"].min_p == pytest.approx(2 / 3)
    assert not before["subgroup"].testable
    quick = {q.key: q for q in design.question_checks(find_study("demo-quick"))}
    assert quick["baseline"].testable and not quick["friedman"].testable


def test_study_plan_prints_design_checks_and_cost(tmp_path, capsys):
    from crossling.cli import main

    assert main(["study", "plan", "demo", "--store", str(tmp_path / "d")]) == 0
    out = capsys.readouterr().out
    assert "72 runs" in out and "yes every pre-trained checkpoint beats zoo-random on every language" in out
    assert "NO  Indo-European and other targets differ" in out and "CPU thread, 2-core EPYC without AVX-512" in out
    assert "wall with 2 at once" in out and "seed sd 0.0660" in out
    assert main(["study", "plan", "reference", "--store", str(tmp_path / "r"), "--json", "--seed-sd", "0.01"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["runs"]["total"] == 864
    questions = {q["key"]: q for q in plan["design"]["questions"]}
    assert questions["baseline"]["testable"] is False and questions["friedman"]["testable"] is True
    assert plan["design"]["power"]["seed_sd"] == 0.01 and plan["design"]["power"]["cer"] > 0.02
    assert {d["device"] for d in plan["design"]["cost"]["devices"]} == {"A100 bf16", "H100 SXM bf16"}


def test_study_plan_rejects_a_bad_prior(tmp_path, capsys):
    from crossling.cli import main

    assert main(["study", "plan", "demo", "--store", str(tmp_path / "d"), "--seed-sd", "-1"]) == 2
    assert "seed sd must be a positive CER" in capsys.readouterr().err


def test_study_plan_sizes_local_folders_and_says_when_a_hub_id_cannot_be_sized(tmp_path, capsys, monkeypatch):
    """A local model folder is sized from its config.json; a hub id not in the Hugging Face cache makes the
    cost 'cannot be estimated' (naming why) instead of failing the plan or guessing."""
    from crossling.cli import main

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    source, _ = design.config_values("zoo-es")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "config.json").write_text(json.dumps(source))
    study = tmp_path / "s.toml"
    study.write_text('checkpoints = ["mine", "zoo-random"]\nlanguages = ["pt"]\nseeds = [0, 1, 2]\n'
                     '[data]\nsource = "synthetic"\n')
    cost = design.study_cost(load_study(study))
    assert not cost.unsized and cost.checkpoints[0].architecture == str(tmp_path / "mine" / "config.json")
    assert cost.checkpoints[0].parameters == design.architecture_of("zoo-es").trainable_parameters(design.VOCAB_SIZE)
    study.write_text(study.read_text().replace('"mine"', '"someone/not-cached"'))
    assert main(["study", "plan", str(study), "--store", str(tmp_path / "store")]) == 0
    out = capsys.readouterr().out
    assert "cost: cannot be estimated for 6 runs: cannot size checkpoint 'someone/not-cached'" in out
    assert "device-hours" not in out
    assert main(["study", "plan", str(study), "--store", str(tmp_path / "store"), "--json"]) == 0
    cost = json.loads(capsys.readouterr().out)["design"]["cost"]
    assert cost["total_flops"] is None and cost["devices"] == [] and len(cost["unsized"]) == 1
    (tmp_path / "mine" / "config.json").write_text("{not json")
    study.write_text(study.read_text().replace('"someone/not-cached"', '"mine"'))
    assert "is not readable JSON" in design.study_cost(load_study(study)).unsized[0]


def test_study_plan_states_gpu_memory_per_run_and_disk(tmp_path, capsys):
    """The reference study: XLS-R-sized runs in bf16 (meta-device measurement, checked against real tensors
    in test_budget): fp32 weights + gradients + Adam + a bf16 copy, activations of a 200 s batch, 864 fp32
    final models and a resume file per run in flight."""
    from crossling.cli import main

    cost = design.study_cost(find_study("reference"))
    memory = max((c.memory for c in cost.checkpoints), key=lambda m: m.peak_bytes)
    assert memory.precision == "bf16 on GPU"
    assert 300e6 * 18 < memory.state_bytes < 330e6 * 18
    assert 4 * 2**30 < memory.activation_bytes < 20 * 2**30
    assert memory.peak_bytes == memory.state_bytes + memory.activation_bytes
    assert memory.resume_file_bytes == pytest.approx(3 * memory.model_bytes, rel=0.05)  # weights + 2 Adam moments
    assert cost.disk_bytes == pytest.approx(864 * memory.model_bytes, rel=0.05)
    assert main(["study", "plan", "reference", "--store", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert f"= {memory.peak_bytes / 2**30:.3g} GiB GPU" in out and "per run in flight" in out
    assert f"864 final models, {cost.disk_bytes / 2**40:.3g} TiB in all" in out
