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


@pytest.mark.parametrize("names", [("a", "b"), ("b", "a")])
def test_equal_lowest_means_are_both_best_whatever_their_names(names):
    """Two checkpoints with exactly the same mean CER (0.203125) whose runs Conover-Iman separates: both
    have the lowest mean, so both are best; which is named first alphabetically decides nothing."""
    skewed, steady = names
    cells = {(skewed, "pt"): [0.125] * 7 + [0.75], (steady, "pt"): [0.203125] * 8,
             ("worst", "pt"): [0.9, 0.91, 0.92, 0.93, 0.94, 0.95, 0.96, 0.97]}
    groups = stats.language_groups(_runs(cells)).set_index("checkpoint")
    assert stats.conover(_runs(cells)).loc["a", "b"] < 0.05
    assert groups["best"].to_dict() == {"a": True, "b": True, "worst": False}
    assert groups.loc["worst", "p_vs_best"] == max(stats.conover(_runs(cells)).loc[["a", "b"], "worst"])
    wins = stats.wins(groups.reset_index()).set_index("checkpoint")
    assert wins["sole_wins"].eq(0).all() and wins.loc[["a", "b"], "rank"].eq(1).all()


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


# --- regressions (issue 11) ------------------------------------------------------------------------


def test_an_infinite_cer_is_missing_not_averaged_in():
    table = _runs({("a", "de"): [0.1, 0.2, 0.3], ("b", "de"): [0.4, 0.5, 0.6]})
    table.loc[0, "cer"] = math.inf
    usable, missing = stats.split_missing(table)
    assert list(missing["reason"]) == ["cer is infinite"] and len(usable) == 5
    summary = stats.cell_summary(table).set_index("checkpoint")
    assert summary.loc["a", "mean"] == pytest.approx(0.25) and summary.loc["a", "n"] == 2


@pytest.mark.parametrize(("column", "values", "expected"), [
    ("setting.learning_rate", (1e-4, 6e-5), 6e-5), ("setting.max_steps", (500, 1000), 500),
    ("setting.schedule", ("tri_stage_linear", "tri_stage_exponential"), "tri_stage_exponential"),
])
def test_primary_slice_breaks_a_tie_by_the_smallest_value_as_a_number(column, values, expected):
    base = _runs({("a", "de"): [0.1, 0.2], ("b", "de"): [0.3, 0.4]})
    table = pd.concat([base.assign(**{column: value}) for value in values])
    assert set(stats.primary_slice(table)[column]) == {expected}


def _valid_and_irredundant(order, pvalues, letters, alpha=0.05) -> tuple[bool, bool]:
    share = {(a, b): bool(set(letters[a]) & set(letters[b])) for a in order for b in order if a != b}
    valid = all(share[a, b] == (not pvalues.loc[a, b] < alpha) for a, b in share)
    redundant = False
    for name in order:
        for letter in letters[name]:
            rest = letters[name].replace(letter, "")
            if rest and all(set(rest) & set(letters[b]) for b in order if b != name and share[name, b]):
                redundant = True  # dropping this letter from this checkpoint loses no pair
    return valid, not redundant


def test_compact_letters_are_valid_and_irredundant_on_random_patterns():
    rng = np.random.default_rng(11)
    for _ in range(3000):
        k = int(rng.integers(3, 8))
        order = [f"c{i}" for i in range(k)]
        upper = np.triu(rng.random((k, k)) < rng.uniform(0.1, 0.7), 1)
        pvalues = pd.DataFrame(np.where(upper | upper.T, 0.001, 0.5), index=order, columns=order)
        letters = stats.compact_letters(order, pvalues)
        valid, irredundant = _valid_and_irredundant(order, pvalues, letters)
        assert valid and irredundant, (pvalues.to_numpy() < 0.05, letters)
        assert "a" in letters[order[0]]


def test_compact_letters_sweep_removes_a_redundant_letter():
    """Insert-and-absorb alone gives c3 'abcd' here (c0 ab, c1 cd, c2 ac, c4 bd); two of its letters are
    redundant and the sweep drops them."""
    order = ["c0", "c1", "c2", "c3", "c4"]
    significant = {("c0", "c1"), ("c2", "c4")}
    pvalues = pd.DataFrame(0.5, index=order, columns=order)
    for a, b in significant:
        pvalues.loc[a, b] = pvalues.loc[b, a] = 0.001
    letters = stats.compact_letters(order, pvalues)
    assert _valid_and_irredundant(order, pvalues, letters) == (True, True)
    assert len(letters["c3"]) == 2 and letters["c0"] == "ab"


def test_friedman_with_every_cer_equal_is_no_evidence_not_nan():
    result = stats.friedman(_runs({(c, lang): [0.5, 0.5] for c in "abc" for lang in ("de", "fr")}))
    assert result.result.statistic == 0 and result.result.p == 1 and result.kendall_w == 0
