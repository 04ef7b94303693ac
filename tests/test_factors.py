"""crossling.factors: family, transfer, typology, gender, settings and variance analyses, checked against scipy/statsmodels and by hand."""

import math

import numpy as np
import pandas as pd
import pytest
from analysis_factory import synthetic_table
from scipy import stats as st

from crossling import factors, findings, stats


def _runs(cells: dict[tuple[str, str], list[float]]) -> pd.DataFrame:
    rows = [{"run_id": f"{c}-{lang}-{s}", "checkpoint": c, "language": lang, "seed": s, "status": "done", "cer": v}
            for (c, lang), values in cells.items() for s, v in enumerate(values)]
    return pd.DataFrame(rows)


# --- missing runs ----------------------------------------------------------------------------------


def test_mann_whitney_hand_and_scipy():
    result = factors.mann_whitney([1, 2], [3, 4])
    assert result.statistic == 0 and result.effect == -1
    a, b = [0.1, 0.5, 0.3, 0.8], [0.2, 0.9, 0.7]
    expected = st.mannwhitneyu(a, b, alternative="two-sided")
    result = factors.mann_whitney(a, b)
    assert result.p == pytest.approx(expected.pvalue)
    assert result.effect == pytest.approx(2 * expected.statistic / 12 - 1)


def test_indo_european_targets_compared_per_checkpoint_and_overall():
    table = synthetic_table()
    comparison = factors.group_comparison(table).set_index("checkpoint")
    overall = comparison.loc["(all checkpoints)"]
    assert overall["groups"] == "Indo-European vs other"
    assert overall["n[Indo-European]"] == 12 and overall["n[other]"] == 6
    assert overall["median[Indo-European]"] < overall["median[other]"]
    assert overall["effect"] == pytest.approx(-1.0) and overall["p"] < 0.01
    matrix = table.pivot_table(index="language", columns="checkpoint", values="cer", aggfunc="mean")
    ie = [lang for lang in matrix.index if factors.indo_european(lang) == "Indo-European"]
    other = [lang for lang in matrix.index if lang not in ie]
    expected = st.mannwhitneyu(matrix.loc[ie, "lv60"], matrix.loc[other, "lv60"], alternative="two-sided")
    assert comparison.loc["lv60", "p"] == pytest.approx(expected.pvalue)


def test_any_grouping_with_three_groups_uses_kruskal():
    table = synthetic_table(checkpoints=("xlsr53", "lv60"))
    script = {"ar": "Arabic", "fa": "Arabic", "ja": "CJK", "zh-CN": "CJK", "th": "Thai"}
    comparison = factors.group_comparison(table, lambda lang: script.get(lang, "Latin/Cyrillic"))
    assert set(comparison["test"]) == {"kruskal"}
    assert comparison["n[CJK]"].iloc[0] == 2


def test_transfer_matrix_and_same_subgroup_advantage():
    table = synthetic_table(noise=0.005)
    matrix = factors.transfer_matrix(table)
    assert {"en", "es", "fr", "it", "nl", "sv-SE"} <= set(matrix.index)
    vp = table[(table["checkpoint"] == "vp-es") & (table["language"] == "pt")]["cer"].mean()
    assert matrix.loc["es", "pt"] == pytest.approx(vp)
    cells, result = factors.subgroup_transfer(table)
    relation = cells.set_index(["checkpoint", "language"])["relation"]
    assert relation[("vp-es", "pt")] == "same subgroup"
    assert relation[("vp-es", "es")] == "same language"
    assert relation[("vp-nl", "pt")] == "other subgroup"
    same = cells[cells["relation"] == "same subgroup"]["relative"]
    assert same.median() < cells[cells["relation"] == "other subgroup"]["relative"].median()
    # languages are the blocks: every target with both kinds of checkpoint favours its own subgroup
    blocks = factors.subgroup_blocks(cells)
    assert result.n == len(blocks) == 8 and (blocks["difference"] < 0).all()
    assert result.p == pytest.approx(2 / 2**8) and result.effect == pytest.approx(-1.0)


# --- typology, gender, settings, variance ----------------------------------------------------------


def test_permutation_spearman_agrees_with_scipy():
    rng = np.random.default_rng(1)
    x = rng.normal(size=30)
    y = 0.4 * x + rng.normal(size=30)
    result = factors.permutation_spearman(x, y, seed=3, n_permutations=4999)
    assert result.statistic == pytest.approx(st.spearmanr(x, y).statistic)
    reference = st.permutation_test((x, y), lambda a, b: st.spearmanr(a, b).statistic, permutation_type="pairings",
                                    n_resamples=4999, rng=np.random.default_rng(0))
    assert result.p == pytest.approx(reference.pvalue, abs=0.02)
    assert factors.permutation_spearman(x, y, seed=3).p == result.p  # seeded


def test_stratified_permutation_keeps_blocks():
    # y differs only between strata: within strata x carries no signal, so the stratified p is large
    x = np.tile(np.arange(10.0), 2)
    y = np.r_[np.full(10, 1.0), np.full(10, 2.0)] + np.r_[np.arange(10)[::-1], np.arange(10)] * 1e-3
    assert factors.permutation_spearman(x, y, seed=0, strata=np.repeat(["a", "b"], 10)).p > 0.5


def test_typology_correlation_finds_planted_relation():
    table = synthetic_table(checkpoints=("vp-es", "vp-nl", "lv60", "vp-it"), noise=0.002)
    cells = table.groupby(["checkpoint", "language"])["cer"].mean().reset_index()
    rng = np.random.default_rng(0)
    distances = cells.assign(planted=cells["cer"] + rng.normal(0, 0.001, len(cells)),
                             noise=rng.normal(size=len(cells)))[["checkpoint", "language", "planted", "noise"]]
    result = factors.typology_correlation(table, distances, seed=0, n_permutations=999).set_index("distance")
    assert result.loc["planted", "rho"] > 0.9 and result.loc["planted", "p_permutation"] < 0.01
    assert result.loc["noise", "p_permutation"] > 0.01
    assert result.loc["planted", "n"] == 72
    relative = factors.typology_correlation(table, distances, n_permutations=99, relative=True).set_index("distance")
    matrix = table.pivot_table(index="language", columns="checkpoint", values="cer", aggfunc="mean")
    ratio = matrix.div(matrix.median(axis=1), axis=0).stack().rename("ratio").reset_index()
    expected = st.spearmanr(ratio["ratio"], ratio.merge(distances)["noise"]).statistic
    assert relative.loc["noise", "rho"] == pytest.approx(expected)


def test_gender_gap_matches_scipy_wilcoxon():
    table = synthetic_table(checkpoints=("xlsr53", "lv60"), languages=("de", "ja", "fr"), gender_gap=0.01)
    table.loc[0, "cer_male"] = math.nan
    runs, result = factors.gender_gap(table)
    table["gap"] = table["cer_female"] - table["cer_male"]
    cells = table.dropna(subset=["gap"]).groupby(["checkpoint", "language"])["gap"].mean()
    assert result.n == len(cells) == 6  # checkpoint x language cells, not 17 runs sharing 3 test sets
    assert result.p == pytest.approx(st.wilcoxon(cells).pvalue) == pytest.approx(2 / 2**6)
    assert result.effect == pytest.approx(1.0)
    no_gap = synthetic_table(checkpoints=("xlsr53", "lv60"), languages=("de", "ja", "fr"), gender_gap=0.0)
    assert factors.gender_gap(no_gap)[1].p > 0.01


def test_kendall_tau_b_matches_scipy_with_ties():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 4, size=(5, 8)).astype(float)
    y = x + rng.integers(0, 3, size=(5, 8))
    expected = [st.kendalltau(x[i], y[i]).statistic for i in range(5)]
    np.testing.assert_allclose(factors.kendall_tau_b(x, y), expected)


def test_setting_sensitivity_gives_tau_a_ci_over_checkpoints():
    """A swept setting that reorders two of six checkpoints: tau < 1 with a CI around it (the agreement
    finding's effect, which had none)."""
    same = synthetic_table(checkpoints=("xlsr53", "lv60", "vp-es", "hubert", "wavlm", "vp-nl"), languages=("de", "ja"))
    other = same.assign(**{"setting.learning_rate": 1e-4})
    swap = {"xlsr53": "lv60", "lv60": "xlsr53"}
    other["checkpoint"] = other["checkpoint"].map(lambda c: swap.get(c, c))
    row = factors.setting_sensitivity(pd.concat([same, other])).iloc[0]
    assert row["tau"] < 1 and -1 <= row["tau_low"] <= row["tau"] <= row["tau_high"] <= 1 and row["tau_low"] < row["tau_high"]
    finding = findings.sensitivity_findings(factors.setting_sensitivity(pd.concat([same, other])).assign(
        p_holm=lambda f: f["p"]), 0.05)[0]
    assert finding.effect.low == row["tau_low"] and "95 % CI" in finding.sentence()


def test_setting_sensitivity_kendall_tau():
    same = synthetic_table(checkpoints=("xlsr53", "lv60", "vp-es", "hubert"), languages=("de", "ja"))
    other = same.copy()
    other["setting.learning_rate"] = 1e-4
    flipped = other.copy()
    flipped["cer"] = 1 - flipped["cer"]
    assert factors.setting_sensitivity(pd.concat([same, other]))["tau"].iloc[0] == pytest.approx(1.0)
    row = factors.setting_sensitivity(pd.concat([same, flipped])).iloc[0]
    assert row["tau"] == pytest.approx(-1.0) and row["setting"] == "learning_rate"
    assert factors.setting_sensitivity(same).empty
    primary = stats.primary_slice(pd.concat([same, other, other]))  # the most frequent value wins
    assert len(primary) == 2 * len(same) and set(primary["setting.learning_rate"]) == {1e-4}


def test_variance_decomposition_balanced_by_hand():
    table = synthetic_table(checkpoints=("xlsr53", "lv60", "vp-es"), languages=("de", "ja"), noise=0.02)
    shares = factors.variance_decomposition(table).set_index("source")
    y = table["cer"]
    total = ((y - y.mean()) ** 2).sum()
    by_checkpoint = table.groupby("checkpoint")["cer"].transform("mean")
    assert shares.loc["checkpoint", "sum_sq"] == pytest.approx(((by_checkpoint - y.mean()) ** 2).sum())
    by_seed = table.groupby("seed")["cer"].transform("mean")
    assert shares.loc["seed", "sum_sq"] == pytest.approx(((by_seed - y.mean()) ** 2).sum())
    assert shares["share"].sum() == pytest.approx(1.0)
    assert shares["sum_sq"].sum() == pytest.approx(total)


def test_variance_decomposition_unbalanced_matches_statsmodels():
    from statsmodels.formula.api import ols
    from statsmodels.stats.anova import anova_lm

    table = synthetic_table(checkpoints=("xlsr53", "lv60", "vp-es"), languages=("de", "ja", "fr"), noise=0.02)
    table = table.drop(index=[0, 4, 11]).reset_index(drop=True)
    ours = factors.variance_decomposition(table).set_index("source")["sum_sq"]
    frame = table.assign(seed=table["seed"].astype(str))
    reference = anova_lm(ols("cer ~ C(checkpoint) + C(language) + C(checkpoint):C(language) + C(seed)",
                             data=frame).fit(), typ=1)["sum_sq"]
    assert list(ours) == pytest.approx(list(reference), rel=1e-6, abs=1e-12)


def test_gender_effect_size_by_hand():
    table = _runs({("a", "de"): [0.2], ("b", "de"): [0.2], ("c", "de"): [0.2, 0.2]})
    table["cer_female"] = [0.21, 0.22, 0.17, 0.17]  # cell gaps +0.01, +0.02, -0.03: signed ranks +1 +2 -3
    table["cer_male"] = [0.2, 0.2, 0.2, 0.2]
    runs, result = factors.gender_gap(table)
    assert list(runs["gap"]) == pytest.approx([0.01, 0.02, -0.03, -0.03])
    assert result.n == 3  # the two runs of cell c share its test set: one observation
    assert result.effect == pytest.approx(0.0) and result.statistic == pytest.approx(3.0)


def test_typology_ignores_a_missing_cell_instead_of_returning_nan():
    """pandas 3's stack() keeps NaN cells: one missing cell used to make scipy's p NaN for every distance."""
    table = synthetic_table(checkpoints=("vp-es", "vp-nl", "vp-fr"), languages=("pt", "nl", "ja", "de"))
    table.loc[(table["checkpoint"] == "vp-fr") & (table["language"] == "ja"), "status"] = "failed"
    distances = pd.DataFrame([{"checkpoint": c, "language": lang, "genetic": 0.1 * i + 0.03 * j}
                              for i, c in enumerate(("vp-es", "vp-nl", "vp-fr")) for j, lang in
                              enumerate(("pt", "nl", "ja", "de"))])
    result = factors.typology_correlation(table, distances, n_permutations=199).iloc[0]
    assert result["n"] == 11 and math.isfinite(result["p_scipy"]) and math.isfinite(result["p_holm"])
