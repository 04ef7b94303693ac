"""URIEL distances: definitions checked by hand against the raw database, ranges, checkpoints."""

import math

import numpy as np
import pytest
from scipy.spatial.distance import cosine

from crossling import typology as ty
from crossling.errors import ConfigError
from crossling.languages import STUDY_LANGUAGES, all_languages

SYNTHETIC_CORPUS = "es it pt nl de fi tr ca ro fr sv-SE pl hu".split()


@pytest.mark.parametrize(("code", "lat", "lon"), [("en", 52, -1), ("ja", 35, 135), ("zh-CN", 40, 116), ("th", 14, 100)])
def test_coordinates_recovered_from_uriel(code, lat, lon):
    found = ty.coordinates(code)
    assert found[0] == pytest.approx(lat, abs=2) and found[1] == pytest.approx(lon, abs=2)


def test_recovered_coordinates_reproduce_the_stored_features():
    for code in ("pt", "id", "ar"):
        stored = ty._row("geocoord_features.npz", ty.uriel_code(code))
        again = ty._arc(np.array(ty.coordinates(code))[None, :], ty._grid_points())
        assert np.abs(again - stored).max() < 5e-3  # stored to 4 decimals, maybe on an ellipsoid: < 1 degree


def test_genetic_distance_by_hand():
    es, pt = ty._families("spa"), ty._families("por")
    assert "Italic" in es and "Italic" in pt
    assert ty.genetic_distance("es", "pt") == pytest.approx(1 - len(es & pt) / max(len(es), len(pt)))
    assert ty.genetic_distance("es", "es") == 0.0
    assert ty.genetic_distance("es", "ja") == 1.0
    assert ty.genetic_distance("eu", "es") == 1.0  # an isolate shares no ancestor
    assert ty.genetic_distance("es", "pt") < ty.genetic_distance("es", "de") < 1.0


@pytest.mark.parametrize("kind", ["syntactic", "phonological", "inventory"])
def test_feature_distance_is_cosine_of_knn_vectors(kind):
    _, feats, _ = ty._database("feature_predictions.npz")
    mask = np.array([f.startswith(ty._PREFIX[kind]) for f in feats])
    a = ty._row("feature_predictions.npz", "deu")[mask]
    b = ty._row("feature_predictions.npz", "jpn")[mask]
    assert ty.distance("de", "ja", kind) == pytest.approx(cosine(a, b))


def test_geographic_distance_is_a_fraction_of_half_the_earth():
    # Madrid-ish to Lisbon-ish is small, English to Japanese about 0.47 of the way to the antipodes
    assert ty.geographic_distance("es", "pt") < 0.05
    assert ty.geographic_distance("en", "ja") == pytest.approx(0.467, abs=0.02)


def test_all_distances_in_range_and_symmetric():
    for kind in ty.DISTANCE_KINDS:
        matrix = ty.language_distance_matrix(STUDY_LANGUAGES, kind)
        values = matrix.to_numpy()
        assert np.isfinite(values).all(), kind
        assert (values >= 0).all() and (values <= 1).all(), kind
        np.testing.assert_allclose(values, values.T, atol=1e-12)
        np.testing.assert_allclose(np.diag(values), 0, atol=1e-9)


def test_study_and_synthetic_languages_have_uriel_entries():
    assert all(ty.has_uriel(code) for code in (*STUDY_LANGUAGES, *SYNTHETIC_CORPUS))


def test_language_families_agree_with_glottolog_in_uriel():
    top_level = {"Indo-European", "Uralic", "Turkic", "Afro-Asiatic", "Sino-Tibetan", "Austronesian", "Dravidian"}
    for lang in all_languages():
        if not lang.uriel:
            continue
        families = ty._families(lang.uriel)
        for family in top_level:
            assert (family in families) == (lang.family == family), (lang.code, family)


def test_unknown_language_and_kind():
    with pytest.raises(ConfigError, match="no URIEL entry"):
        ty.distance("tok", "es")
    with pytest.raises(ConfigError, match="genetic"):
        ty.distance("es", "pt", "spiritual")


def test_checkpoint_distance_min_and_mean():
    assert ty.checkpoint_distance("vp-es", "pt", "genetic") == ty.genetic_distance("es", "pt")
    assert ty.checkpoint_distance("facebook/wav2vec2-large-es-voxpopuli", "pt") == ty.genetic_distance("es", "pt")
    assert ty.checkpoint_distance("xlsr53", "es", "genetic", "min") == 0.0
    languages = ty.pretrain_languages("unispeech-cv-multi")
    expected = np.mean([ty.distance(lang, "pt", "syntactic") for lang in languages])
    assert ty.checkpoint_distance("unispeech-cv-multi", "pt", "syntactic", "mean") == pytest.approx(expected)
    assert math.isnan(ty.checkpoint_distance("random-init", "pt"))
    assert math.isnan(ty.checkpoint_distance("some/unregistered-model", "pt"))
    with pytest.raises(ConfigError, match="min"):
        ty.checkpoint_distance("vp-es", "pt", how="median")


def test_checkpoint_distance_table():
    table = ty.checkpoint_distance_table(["vp-es", "lv60", "random-init"], ["pt", "ja"])
    assert len(table) == 6
    assert {"genetic", "genetic_mean", "inventory", "inventory_mean"} <= set(table.columns)
    row = table.set_index(["checkpoint", "language"]).loc[("lv60", "ja")]
    assert row["geographic"] == pytest.approx(ty.geographic_distance("en", "ja"))
    assert table[table["checkpoint"] == "random-init"]["genetic"].isna().all()
