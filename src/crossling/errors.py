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
