"""Every statistic against scipy / scikit-posthocs / statsmodels and on small hand-computed cases."""

import math

import numpy as np
import pandas as pd
import pytest
import scikit_posthocs as sp
from analysis_factory import synthetic_table
from scipy import stats as st
from statsmodels.stats.multitest import multipletests

from crossling import stats
from crossling.errors import ConfigError, DataError


def _runs(cells: dict[tuple[str, str], list[float]]) -> pd.DataFrame:
    rows = [{"run_id": f"{c}-{lang}-{s}", "checkpoint": c, "language": lang, "seed": s, "status": "done", "cer": v}
            for (c, lang), values in cells.items() for s, v in enumerate(values)]
    return pd.DataFrame(rows)


# --- missing runs ----------------------------------------------------------------------------------


def test_split_missing_lists_failed_pending_and_nan_runs():
    table = synthetic_table(checkpoints=("xlsr53", "lv60"), languages=("de", "ja"), seeds=(0, 1))
    table.loc[0, "status"] = "failed"
    table.loc[1, "status"] = "pending"
    table.loc[2, "cer"] = math.nan
    usable, missing = stats.split_missing(table)
    assert len(usable) == len(table) - 3
    assert list(missing["reason"]) == ["status failed", "status pending", "no cer"]
    assert set(missing["run_id"]) == set(table.loc[:2, "run_id"])


def test_partial_grid_never_propagates_nan():
    table = synthetic_table(checkpoints=("xlsr53", "lv60", "vp-es"), languages=("de", "ja", "es"), seeds=(0, 1, 2))
    table.loc[table["checkpoint"].eq("vp-es") & table["language"].eq("ja"), "status"] = "failed"
    table.loc[5, "cer"] = math.nan
    omnibus = stats.kruskal_by_language(table)
    assert omnibus[["H", "p", "epsilon2"]].notna().all().all()
    assert omnibus.set_index("language").loc["ja", "k"] == 2
    friedman = stats.friedman(table)
    assert friedman.dropped_languages == ("ja",)
    assert friedman.matrix.notna().all().all()
    groups = stats.language_groups(table)
    assert groups["mean"].notna().all() and len(groups) == 8
    summary = stats.cell_summary(table)
    assert summary["n"].min() == 2  # the NaN run is excluded, not counted


def test_missing_column_is_a_data_error():
    with pytest.raises(DataError, match="cer"):
        stats.split_missing(pd.DataFrame({"checkpoint": ["a"], "language": ["de"], "seed": [0]}))


# --- Kruskal-Wallis, Conover-Iman, letters ---------------------------------------------------------


def test_kruskal_hand_computed_and_scipy():
    values = pd.Series([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    groups = pd.Series(list("aaabbb"))
    result = stats.kruskal(values, groups)
    # ranks sum 6 and 15: H = 12/(6*7) * (36/3 + 225/3) - 3*7 = 27/7
    assert result.statistic == pytest.approx(27 / 7)
    assert result.effect == pytest.approx(27 / 7 / 5)
    assert result.p == pytest.approx(st.kruskal([1, 2, 3], [4, 5, 6]).pvalue)


def test_kruskal_by_language_matches_scipy_on_study_grid():
    table = synthetic_table(noise=0.03)
    omnibus = stats.kruskal_by_language(table).set_index("language")
    for language in ("de", "th", "zh-CN"):
        part = table[table["language"] == language]
        expected = st.kruskal(*[g["cer"].to_numpy() for _, g in part.groupby("checkpoint")])
        assert omnibus.loc[language, "H"] == pytest.approx(expected.statistic)
        assert omnibus.loc[language, "p"] == pytest.approx(expected.pvalue)
        assert omnibus.loc[language, "epsilon2"] == pytest.approx(expected.statistic / (len(part) - 1))


def _conover_by_hand(groups: dict[str, list[float]]) -> pd.DataFrame:
    """Conover-Iman (1979) t statistics without ties, written out from the formula."""
    values = np.concatenate(list(groups.values()))
    n, k = len(values), len(groups)
    ranks = st.rankdata(values)
    sizes = {g: len(v) for g, v in groups.items()}
    start, mean_rank = 0, {}
    for g, size in sizes.items():
        mean_rank[g] = ranks[start:start + size].mean()
        start += size
    h = st.kruskal(*groups.values()).statistic
    s2 = (np.sum(ranks ** 2) - n * (n + 1) ** 2 / 4) / (n - 1)
    names = list(groups)
    out = pd.DataFrame(1.0, index=names, columns=names)
    for a in names:
        for b in names:
            if a != b:
                se = math.sqrt(s2 * (n - 1 - h) / (n - k) * (1 / sizes[a] + 1 / sizes[b]))
                out.loc[a, b] = 2 * st.t.sf(abs(mean_rank[a] - mean_rank[b]) / se, n - k)
    return out


def test_conover_matches_hand_formula_and_holm_correction():
    groups = {"a": [0.11, 0.12, 0.135], "b": [0.14, 0.155, 0.16], "c": [0.30, 0.31, 0.32], "d": [0.125, 0.145, 0.29]}
    part = _runs({(name, "de"): values for name, values in groups.items()})
    raw = stats.conover(part, p_adjust="none")
    hand = _conover_by_hand(groups)
    np.testing.assert_allclose(raw.loc[list(groups), list(groups)].to_numpy(), hand.to_numpy(), rtol=1e-9)
    holm = stats.conover(part, p_adjust="holm")
    pairs = [("a", "b"), ("a", "c"), ("a", "d"), ("b", "c"), ("b", "d"), ("c", "d")]
    expected = multipletests([hand.loc[i, j] for i, j in pairs], method="holm")[1]
    assert [holm.loc[i, j] for i, j in pairs] == pytest.approx(list(expected))
    assert (holm.to_numpy() >= raw.to_numpy() - 1e-12).all()
    frame = pd.DataFrame({"value": part["cer"], "group": part["checkpoint"]})
    reference = sp.posthoc_conover(frame, val_col="value", group_col="group", p_adjust="bonferroni")
    np.testing.assert_allclose(stats.conover(part, p_adjust="bonferroni").to_numpy(), reference.to_numpy())


def test_unknown_correction_lists_choices():
    part = _runs({("a", "de"): [1, 2], ("b", "de"): [3, 4]})
    with pytest.raises(ConfigError, match="holm"):
        stats.conover(part, p_adjust="tukey")


def test_compact_letters_hand_cases():
    names = ["x", "y", "z"]
    only_xz = pd.DataFrame(1.0, index=names, columns=names)
    only_xz.loc["x", "z"] = only_xz.loc["z", "x"] = 0.01
    assert stats.compact_letters(names, only_xz) == {"x": "a", "y": "ab", "z": "b"}
    every = pd.DataFrame(0.001, index=names, columns=names)
    assert stats.compact_letters(names, every) == {"x": "a", "y": "b", "z": "c"}
    none = pd.DataFrame(0.9, index=names, columns=names)
    assert stats.compact_letters(names, none) == {"x": "a", "y": "a", "z": "a"}


def test_compact_letters_never_share_a_letter_across_a_significant_pair():
    table = synthetic_table(noise=0.02, languages=("pt", "ja"))
    for language, part in table.groupby("language"):
        groups = stats.language_groups(part)
        letters = dict(zip(groups["checkpoint"], groups["letters"], strict=True))
        p = stats.conover(part)
        for a in letters:
            for b in letters:
                shares = bool(set(letters[a]) & set(letters[b]))
                assert shares == (p.loc[a, b] >= 0.05 or a == b), (language, a, b)


def test_mean_ranks_hand_case():
    part = _runs({("a", "de"): [0.1, 0.4], ("b", "de"): [0.2, 0.3]})
    assert stats.mean_ranks(part).to_dict() == {"a": 2.5, "b": 2.5}


def test_best_with_ties_and_wins():
    cells = {}
    for language in ("de", "fr", "ja"):
        cells[("good", language)] = [0.10, 0.11, 0.12, 0.105, 0.115]
        cells[("same", language)] = [0.101, 0.111, 0.121, 0.106, 0.116]
        cells[("bad", language)] = [0.50, 0.51, 0.52, 0.505, 0.515]
    cells[("alone", "ja")] = [0.01, 0.011, 0.012, 0.0105, 0.0115]
    groups = stats.language_groups(_runs(cells))
    best = groups[groups["best"]].groupby("language")["checkpoint"].apply(set).to_dict()
    assert best == {"de": {"good", "same"}, "fr": {"good", "same"}, "ja": {"alone"}}
    wins = stats.wins(groups).set_index("checkpoint")
    assert wins.loc["good", "wins"] == 2 and wins.loc["good", "sole_wins"] == 0
    assert wins.loc["alone", "sole_wins"] == 1 and wins.loc["bad", "wins"] == 0
    assert (wins["languages"] == 3).all()


def test_no_pair_is_different_when_kruskal_is_not_significant():
    cells = {("a", "de"): [0.1, 0.3], ("b", "de"): [0.2, 0.25]}
    groups = stats.language_groups(_runs(cells))
    assert groups["best"].all() and set(groups["letters"]) == {"a"}


# --- Friedman ------------------------------------------------------------------------------------------


def test_friedman_matches_scipy_and_posthocs():
    table = synthetic_table(noise=0.03)
    result = stats.friedman(table)
    matrix = table.pivot_table(index="language", columns="checkpoint", values="cer", aggfunc="mean")
    expected = st.friedmanchisquare(*(matrix[c] for c in matrix.columns))
    assert result.result.statistic == pytest.approx(expected.statistic)
    assert result.result.p == pytest.approx(expected.pvalue)
    assert result.kendall_w == pytest.approx(expected.statistic / (18 * 15))
    nemenyi = sp.posthoc_nemenyi_friedman(matrix.to_numpy())
    np.testing.assert_allclose(result.nemenyi.to_numpy(), nemenyi.to_numpy())
    conover = sp.posthoc_conover_friedman(matrix.to_numpy(), p_adjust="holm")
    np.testing.assert_allclose(result.conover.to_numpy(), conover.to_numpy())
    assert result.average_ranks.index[0] == "xlsr300m" and result.average_ranks.index[-1] == "random-init"
    assert result.average_ranks.sum() == pytest.approx(16 * 17 / 2)


def test_friedman_hand_case_and_critical_difference():
    cells = {("a", lang): [v] for lang, v in zip("xyz", (0.1, 0.2, 0.3), strict=True)}
    cells |= {("b", lang): [v] for lang, v in zip("xyz", (0.2, 0.3, 0.4), strict=True)}
    cells |= {("c", lang): [v] for lang, v in zip("xyz", (0.3, 0.1, 0.5), strict=True)}
    result = stats.friedman(_runs(cells))
    # ranks per block: x (1,2,3), y (2,3,1), z (1,2,3): R = (4, 7, 7); chi2 = 12/(3*3*4) * 114 - 3*3*4
    assert result.average_ranks.to_dict() == pytest.approx({"a": 4 / 3, "b": 7 / 3, "c": 7 / 3})
    assert result.result.statistic == pytest.approx(12 / 36 * (16 + 49 + 49) - 36)
    # Demšar (2006), Table 5: q_0.05 = 2.569 for k = 4, 2.728 for k = 5
    assert stats.critical_difference(4, 10) == pytest.approx(2.569 * math.sqrt(4 * 5 / 60), abs=1e-3)
    assert stats.critical_difference(5, 20, 0.05) == pytest.approx(2.728 * math.sqrt(5 * 6 / 120), abs=1e-3)


def test_friedman_needs_complete_blocks():
    with pytest.raises(DataError, match="complete languages"):
        stats.friedman(_runs({("a", "de"): [0.1], ("b", "fr"): [0.2]}))


# --- families and transfer -------------------------------------------------------------------------


def test_mann_whitney_hand_and_scipy():
    result = stats.mann_whitney([1, 2], [3, 4])
    assert result.statistic == 0 and result.effect == -1
    a, b = [0.1, 0.5, 0.3, 0.8], [0.2, 0.9, 0.7]
    expected = st.mannwhitneyu(a, b, alternative="two-sided")
    result = stats.mann_whitney(a, b)
    assert result.p == pytest.approx(expected.pvalue)
    assert result.effect == pytest.approx(2 * expected.statistic / 12 - 1)


def test_indo_european_targets_compared_per_checkpoint_and_overall():
    table = synthetic_table()
    comparison = stats.group_comparison(table).set_index("checkpoint")
    overall = comparison.loc["(all checkpoints)"]
    assert overall["groups"] == "Indo-European vs other"
    assert overall["n[Indo-European]"] == 12 and overall["n[other]"] == 6
    assert overall["median[Indo-European]"] < overall["median[other]"]
    assert overall["effect"] == pytest.approx(-1.0) and overall["p"] < 0.01
    matrix = table.pivot_table(index="language", columns="checkpoint", values="cer", aggfunc="mean")
    ie = [lang for lang in matrix.index if stats.indo_european(lang) == "Indo-European"]
    other = [lang for lang in matrix.index if lang not in ie]
    expected = st.mannwhitneyu(matrix.loc[ie, "lv60"], matrix.loc[other, "lv60"], alternative="two-sided")
    assert comparison.loc["lv60", "p"] == pytest.approx(expected.pvalue)


def test_any_grouping_with_three_groups_uses_kruskal():
    table = synthetic_table(checkpoints=("xlsr53", "lv60"))
    script = {"ar": "Arabic", "fa": "Arabic", "ja": "CJK", "zh-CN": "CJK", "th": "Thai"}
    comparison = stats.group_comparison(table, lambda lang: script.get(lang, "Latin/Cyrillic"))
    assert set(comparison["test"]) == {"kruskal"}
    assert comparison["n[CJK]"].iloc[0] == 2


def test_transfer_matrix_and_same_subgroup_advantage():
    table = synthetic_table(noise=0.005)
    matrix = stats.transfer_matrix(table)
    assert {"en", "es", "fr", "it", "nl", "sv-SE"} <= set(matrix.index)
    vp = table[(table["checkpoint"] == "vp-es") & (table["language"] == "pt")]["cer"].mean()
    assert matrix.loc["es", "pt"] == pytest.approx(vp)
    cells, result = stats.subgroup_transfer(table)
    relation = cells.set_index(["checkpoint", "language"])["relation"]
    assert relation[("vp-es", "pt")] == "same subgroup"
    assert relation[("vp-es", "es")] == "same language"
    assert relation[("vp-nl", "pt")] == "other subgroup"
    same = cells[cells["relation"] == "same subgroup"]["relative"]
    assert same.median() < cells[cells["relation"] == "other subgroup"]["relative"].median()
    assert result.p < 0.001 and result.effect < 0


# --- typology, gender, settings, variance ----------------------------------------------------------


def test_permutation_spearman_agrees_with_scipy():
    rng = np.random.default_rng(1)
    x = rng.normal(size=30)
    y = 0.4 * x + rng.normal(size=30)
    result = stats.permutation_spearman(x, y, seed=3, n_permutations=4999)
    assert result.statistic == pytest.approx(st.spearmanr(x, y).statistic)
    reference = st.permutation_test((x, y), lambda a, b: st.spearmanr(a, b).statistic, permutation_type="pairings",
                                    n_resamples=4999, rng=np.random.default_rng(0))
    assert result.p == pytest.approx(reference.pvalue, abs=0.02)
    assert stats.permutation_spearman(x, y, seed=3).p == result.p  # seeded


def test_stratified_permutation_keeps_blocks():
    # y differs only between strata: within strata x carries no signal, so the stratified p is large
    x = np.tile(np.arange(10.0), 2)
    y = np.r_[np.full(10, 1.0), np.full(10, 2.0)] + np.r_[np.arange(10)[::-1], np.arange(10)] * 1e-3
    assert stats.permutation_spearman(x, y, seed=0, strata=np.repeat(["a", "b"], 10)).p > 0.5


def test_typology_correlation_finds_planted_relation():
    table = synthetic_table(checkpoints=("vp-es", "vp-nl", "lv60", "vp-it"), noise=0.002)
    cells = table.groupby(["checkpoint", "language"])["cer"].mean().reset_index()
    rng = np.random.default_rng(0)
    distances = cells.assign(planted=cells["cer"] + rng.normal(0, 0.001, len(cells)),
                             noise=rng.normal(size=len(cells)))[["checkpoint", "language", "planted", "noise"]]
    result = stats.typology_correlation(table, distances, seed=0, n_permutations=999).set_index("distance")
    assert result.loc["planted", "rho"] > 0.9 and result.loc["planted", "p_permutation"] < 0.01
    assert result.loc["noise", "p_permutation"] > 0.01
    assert result.loc["planted", "n"] == 72
    relative = stats.typology_correlation(table, distances, n_permutations=99, relative=True).set_index("distance")
    matrix = table.pivot_table(index="language", columns="checkpoint", values="cer", aggfunc="mean")
    ratio = matrix.div(matrix.median(axis=1), axis=0).stack().rename("ratio").reset_index()
    expected = st.spearmanr(ratio["ratio"], ratio.merge(distances)["noise"]).statistic
    assert relative.loc["noise", "rho"] == pytest.approx(expected)


def test_gender_gap_matches_scipy_wilcoxon():
    table = synthetic_table(checkpoints=("xlsr53", "lv60"), languages=("de", "ja", "fr"), gender_gap=0.01)
    table.loc[0, "cer_male"] = math.nan
    runs, result = stats.gender_gap(table)
    gaps = (table["cer_female"] - table["cer_male"]).dropna()
    assert result.n == len(table) - 1
    assert result.p == pytest.approx(st.wilcoxon(gaps).pvalue)
    assert result.effect > 0.9 and result.p < 0.001
    no_gap = synthetic_table(checkpoints=("xlsr53", "lv60"), languages=("de", "ja", "fr"), gender_gap=0.0)
    assert stats.gender_gap(no_gap)[1].p > 0.01


def test_setting_sensitivity_kendall_tau():
    same = synthetic_table(checkpoints=("xlsr53", "lv60", "vp-es", "hubert"), languages=("de", "ja"))
    other = same.copy()
    other["setting.learning_rate"] = 1e-4
    flipped = other.copy()
    flipped["cer"] = 1 - flipped["cer"]
    assert stats.setting_sensitivity(pd.concat([same, other]))["tau"].iloc[0] == pytest.approx(1.0)
    row = stats.setting_sensitivity(pd.concat([same, flipped])).iloc[0]
    assert row["tau"] == pytest.approx(-1.0) and row["setting"] == "learning_rate"
    assert stats.setting_sensitivity(same).empty
    primary = stats.primary_slice(pd.concat([same, other, other]))  # the most frequent value wins
    assert len(primary) == 2 * len(same) and set(primary["setting.learning_rate"]) == {1e-4}


def test_variance_decomposition_balanced_by_hand():
    table = synthetic_table(checkpoints=("xlsr53", "lv60", "vp-es"), languages=("de", "ja"), noise=0.02)
    shares = stats.variance_decomposition(table).set_index("source")
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
    ours = stats.variance_decomposition(table).set_index("source")["sum_sq"]
    frame = table.assign(seed=table["seed"].astype(str))
    reference = anova_lm(ols("cer ~ C(checkpoint) + C(language) + C(checkpoint):C(language) + C(seed)",
                             data=frame).fit(), typ=1)["sum_sq"]
    assert list(ours) == pytest.approx(list(reference), rel=1e-6, abs=1e-12)


def test_posthoc_by_language_long_form_and_reuse():
    table = synthetic_table(checkpoints=("xlsr53", "lv60", "vp-es", "hubert"), languages=("de", "ja"), noise=0.02)
    matrices = stats.conover_by_language(table, p_adjust="fdr_bh")
    long = stats.posthoc_long(matrices)
    assert len(long) == 2 * 6 and (long["checkpoint_a"] < long["checkpoint_b"]).all()
    ja = stats.conover(table[table["language"] == "ja"], p_adjust="fdr_bh")
    row = long[(long["language"] == "ja") & (long["checkpoint_a"] == "hubert") & (long["checkpoint_b"] == "vp-es")]
    assert row["p"].iloc[0] == pytest.approx(ja.loc["hubert", "vp-es"])
    reused = stats.language_groups(table, p_adjust="fdr_bh", posthoc=matrices)
    pd.testing.assert_frame_equal(reused, stats.language_groups(table, p_adjust="fdr_bh"))


def test_untestable_pairs_are_not_declared_different():
    names = ["x", "y"]
    pvalues = pd.DataFrame([[1.0, np.nan], [np.nan, 1.0]], index=names, columns=names)
    assert stats.compact_letters(names, pvalues) == {"x": "a", "y": "a"}


def test_single_runs_make_conover_untestable_not_significant():
    part = _runs({("a", "de"): [0.1], ("b", "de"): [0.5], ("c", "de"): [0.9]})
    p = stats.conover(part)
    assert np.isnan(p.loc["a", "c"]) and p.loc["a", "a"] == 1.0
    groups = stats.language_groups(part)
    assert groups["best"].all() and set(groups["letters"]) == {"a"}


def test_gender_effect_size_by_hand():
    table = _runs({("a", "de"): [0.2, 0.2, 0.2]})
    table["cer_female"] = [0.21, 0.22, 0.17]  # gaps +0.01, +0.02, -0.03: signed ranks +1 +2 -3
    table["cer_male"] = [0.2, 0.2, 0.2]
    runs, result = stats.gender_gap(table)
    assert list(runs["gap"]) == pytest.approx([0.01, 0.02, -0.03])
    assert result.effect == pytest.approx(0.0) and result.statistic == pytest.approx(3.0)
