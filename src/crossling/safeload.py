"""Reading torch files without running code: resume files through `torch.load(weights_only=True)`, model
folders through transformers (which loads .bin weights the same way); a refused file -- a crafted pickle,
a torn or foreign file -- is a clear error naming it, never an unpickling traceback."""

from __future__ import annotations

import pickle
from pathlib import Path

from crossling.errors import ConfigError, ModelError

REFUSED = ("refused to load: it holds more than tensors and numbers (a pickle that would run code when "
           "loaded; crossling never loads such files)")


def load_resume_file(path: Path) -> dict:
    """A resume file (fine-tuning or pre-training) as a dict of tensors, numbers, strings and containers;
    anything else is a `ConfigError` naming the file."""
    import torch

    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ConfigError(f"{path}: {REFUSED}; crossling did not write it this way: delete it to start "
                          "afresh") from None
    except Exception as error:  # noqa: BLE001 - a torn or foreign file fails in many ways (EOF, index, zip)
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ConfigError(f"{path}: cannot read this resume file ({reason}); delete it to start afresh") from None
    if not isinstance(checkpoint, dict):
        raise ConfigError(f"{path}: not a crossling resume file; delete it to start afresh")
    return checkpoint


def refused_weights(directory: Path, error: BaseException) -> ModelError:
    """The error for a model folder whose pickled weights transformers refused to unpickle, naming them."""
    pickled = sorted(p.name for p in Path(directory).glob("*.bin")) or ["its weights"]
    first = str(error).splitlines()[0] if str(error) else type(error).__name__
    return ModelError(f"{Path(directory) / pickled[0]}: {REFUSED} ({first[:120]})")
