"""Exceptions for people: each says what was wrong, where, and what was expected."""


class CrosslingError(Exception):
    """Base class of every error crossling raises for bad user input; the CLI prints it and exits 2."""


class DataError(CrosslingError):
    """A corpus, manifest or prepared language is missing or malformed."""


class CorruptArtifactError(DataError, ValueError):
    """A JSON artifact on disk cannot be parsed (e.g. edited by hand); also a ValueError, as json's is."""


class ConfigError(CrosslingError):
    """A study file, run config or command-line value is invalid."""


class ModelError(CrosslingError):
    """A checkpoint cannot be resolved or does not fit the data."""


class OutputError(CrosslingError):
    """An output cannot be written where the user pointed it (a directory, read-only, full disk)."""


def did_you_mean(word: str, choices) -> str:
    """' (did you mean 'x'?)' naming the choices closest to a mistyped `word`, or '' when none is close.
    `choices`: the valid spellings, or a mapping of spelling -> how to name it (e.g. a language name ->
    "'pt' (Portuguese)")."""
    from difflib import get_close_matches

    shown = dict(choices) if isinstance(choices, dict) else {str(c): repr(str(c)) for c in choices}
    lowered = {spelling.lower(): spelling for spelling in shown}
    close = get_close_matches(str(word).lower(), list(lowered), n=6, cutoff=0.6)
    named = list(dict.fromkeys(shown[lowered[match]] for match in close))[:3]
    return f" (did you mean {' or '.join(named)}?)" if named else ""
