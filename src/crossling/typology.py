"""Language distances from URIEL (the database the `lang2vec` package ships): genetic, geographic,
syntactic, phonological and inventory distance between two languages, and between a checkpoint's
pre-training languages and a target language (registry facts)."""

from __future__ import annotations

import math
from functools import cache
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd

from crossling.errors import ConfigError
from crossling.languages import find_language

DISTANCE_KINDS = ("genetic", "geographic", "syntactic", "phonological", "inventory")
_PREFIX = {"syntactic": "S_", "phonological": "P_", "inventory": "INV_"}


# --- URIEL data ------------------------------------------------------------------------------------
# lang2vec's own module imports `pkg_resources`, which current setuptools no longer provides, so the
# arrays it ships are read directly: data[language, feature, source], languages by ISO 639-3 code.


def uriel_dir() -> Path:
    """lang2vec's data directory, found through the installed distribution (the package also installs a
    `lang2vec.py` script that shadows the package whenever the scripts directory is on sys.path)."""
    try:
        data = Path(str(metadata.distribution("lang2vec").locate_file("lang2vec/data")))
    except metadata.PackageNotFoundError:
        data = None
    if data is None or not (data / "family_features.npz").is_file():
        raise ConfigError("language distances need the 'lang2vec' package and its URIEL data (pip install lang2vec)")
    return data


@cache
def _database(name: str) -> tuple[dict[str, int], np.ndarray, np.ndarray]:
    """(language → row, feature names, data[language, feature]) of one URIEL file (loaded once)."""
    with np.load(uriel_dir() / name) as z:
        langs = {str(code): i for i, code in enumerate(z["langs"])}
        return langs, np.asarray(z["feats"]).astype(str), np.asarray(z["data"][:, :, 0])


def uriel_code(language: str) -> str:
    """The ISO 639-3 code URIEL files `language` under (a Common Voice code, alias or ISO 639-3 code)."""
    lang = find_language(language)
    code = lang.uriel if lang is not None else str(language).lower()
    if not code or code not in _database("feature_predictions.npz")[0]:
        raise ConfigError(f"no URIEL entry for language {language!r}; use a Common Voice code "
                          f"(crossling.languages) or an ISO 639-3 code URIEL knows")
    return code


def _row(name: str, code: str) -> np.ndarray:
    langs, _, data = _database(name)
    return data[langs[code]].astype(np.float64)


# --- the five distances ----------------------------------------------------------------------------


@cache
def _families(code: str) -> frozenset[str]:
    _, feats, _ = _database("family_features.npz")
    return frozenset(str(f).removeprefix("F_") for f in feats[_row("family_features.npz", code) > 0])


def genetic_distance(a: str, b: str) -> float:
    """1 − shared Glottolog ancestor nodes / the longer of the two lineages (0 for the same language;
    1 for unrelated languages and for isolates such as Basque)."""
    ca, cb = uriel_code(a), uriel_code(b)
    if ca == cb:
        return 0.0
    fa, fb = _families(ca), _families(cb)
    longest = max(len(fa), len(fb))
    return 1.0 - len(fa & fb) / longest if longest else 1.0


@cache
def _grid_points() -> np.ndarray:
    _, feats, _ = _database("geocoord_features.npz")
    return np.array([[float(v) for v in f.removeprefix("GC_").split("_")] for f in feats])


def _arc(lat_lon_a: np.ndarray, lat_lon_b: np.ndarray) -> np.ndarray:
    """Great-circle distance in units of half the circumference (0 same place, 1 antipodes)."""
    la, lo = np.radians(lat_lon_a[..., 0]), np.radians(lat_lon_a[..., 1])
    lb, lob = np.radians(lat_lon_b[..., 0]), np.radians(lat_lon_b[..., 1])
    cos = np.sin(la) * np.sin(lb) + np.cos(la) * np.cos(lb) * np.cos(lo - lob)
    return np.arccos(np.clip(cos, -1.0, 1.0)) / math.pi


@cache
def coordinates(language: str) -> tuple[float, float]:
    """(latitude, longitude) of `language`, recovered from URIEL's geographic features: they are the
    language's great-circle distances (÷ π) to 299 fixed points p_i, so cos(π d_i) = p_i · x for the
    unit vector x of the location — a linear least-squares problem."""
    target = _row("geocoord_features.npz", uriel_code(language))
    lat, lon = np.radians(_grid_points()[:, 0]), np.radians(_grid_points()[:, 1])
    points = np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], axis=1)
    x = np.linalg.lstsq(points, np.cos(math.pi * target), rcond=None)[0]
    x /= np.linalg.norm(x)
    return round(math.degrees(math.asin(x[2])), 2), round(math.degrees(math.atan2(x[1], x[0])), 2)


def geographic_distance(a: str, b: str) -> float:
    """Great-circle distance between the languages' URIEL locations ÷ the antipodal distance (URIEL's)."""
    return float(_arc(np.array(coordinates(a)), np.array(coordinates(b))))


def feature_distance(a: str, b: str, kind: str) -> float:
    """Cosine distance between the languages' kNN-imputed URIEL feature vectors of one kind
    ('syntactic', 'phonological' or 'inventory'), as URIEL computes its typological distances."""
    _, feats, _ = _database("feature_predictions.npz")
    mask = np.char.startswith(feats, _PREFIX[kind])
    va = _row("feature_predictions.npz", uriel_code(a))[mask]
    vb = _row("feature_predictions.npz", uriel_code(b))[mask]
    norm = np.linalg.norm(va) * np.linalg.norm(vb)
    return float(np.clip(1.0 - va @ vb / norm, 0.0, 1.0)) if norm > 0 else 1.0


def distance(a: str, b: str, kind: str = "genetic") -> float:
    """One URIEL distance in [0, 1] between two languages; `kind` is one of DISTANCE_KINDS."""
    if kind in DISTANCE_KINDS and uriel_code(a) == uriel_code(b):
        return 0.0  # exactly, not arccos rounding
    if kind == "genetic":
        return genetic_distance(a, b)
    if kind == "geographic":
        return geographic_distance(a, b)
    if kind in _PREFIX:
        return feature_distance(a, b, kind)
    raise ConfigError(f"unknown distance kind {kind!r}; choose one of {', '.join(DISTANCE_KINDS)}")


def distances(a: str, b: str) -> dict[str, float]:
    """Every kind of distance between two languages."""
    return {kind: distance(a, b, kind) for kind in DISTANCE_KINDS}


def has_uriel(language: str) -> bool:
    try:
        uriel_code(language)
    except ConfigError:
        return False
    return True


# --- checkpoints -----------------------------------------------------------------------------------


def pretrain_languages(checkpoint: str) -> tuple[str, ...]:
    """The registered pre-training languages of `checkpoint` (alias or hub id) that URIEL knows;
    empty for random init and for checkpoints the registry does not know."""
    from crossling.registry import find_checkpoint

    facts = find_checkpoint(checkpoint)
    return tuple(lang for lang in (facts.pretrain_languages if facts else ()) if has_uriel(lang))


def checkpoint_distance(checkpoint: str, target: str, kind: str = "genetic", how: str = "min") -> float:
    """Distance from a checkpoint's pre-training languages to `target`: the minimum over them (the
    closest language it has heard; 'min') or their mean ('mean'). NaN when no pre-training language is
    known (random init, unregistered models). For checkpoints whose registered list is partial (XLSR-53,
    XLS-R), 'min' is an upper bound of the true minimum and 'mean' covers the listed languages only."""
    sources = pretrain_languages(checkpoint)
    if not sources or not has_uriel(target):
        return math.nan
    values = [distance(source, target, kind) for source in sources]
    if how == "min":
        return min(values)
    if how == "mean":
        return float(np.mean(values))
    raise ConfigError(f"unknown aggregation {how!r} over pre-training languages; choose 'min' or 'mean'")


def checkpoint_distance_table(checkpoints, languages, kinds=DISTANCE_KINDS) -> pd.DataFrame:
    """Rows (checkpoint, language) with one column per distance kind (minimum over the checkpoint's
    pre-training languages) and `<kind>_mean` (their mean); NaN where undefined."""
    rows = []
    for checkpoint in sorted(set(checkpoints)):
        for language in sorted(set(languages)):
            row = {"checkpoint": checkpoint, "language": language}
            for kind in kinds:
                row[kind] = checkpoint_distance(checkpoint, language, kind, "min")
                row[f"{kind}_mean"] = checkpoint_distance(checkpoint, language, kind, "mean")
            rows.append(row)
    return pd.DataFrame(rows)


def language_distance_matrix(languages, kind: str = "genetic") -> pd.DataFrame:
    """Symmetric language × language matrix of one distance kind (NaN for languages URIEL lacks)."""
    names = list(dict.fromkeys(languages))
    known = {name: has_uriel(name) for name in names}
    out = pd.DataFrame(np.nan, index=names, columns=names)
    for a in names:
        for b in names:
            if known[a] and known[b]:
                out.loc[a, b] = distance(a, b, kind)
    return out
