"""Resume files written off the training step: a snapshot of the tensors is taken on the step (a copy in
host memory), and written atomically by a background thread while training goes on. Due every N steps
and after a wall-clock interval (the recipe's `checkpoint_minutes`), whichever comes first. A resume file
leaves out the frozen parameters (`trained_state`): they are the pre-trained ones, identified by a digest."""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from crossling.atomic import atomic_path

log = logging.getLogger(__name__)

def trained_state(model) -> dict:
    """The model's state dict without its frozen parameters (the CNN feature encoder when the recipe
    freezes it): what a resume file needs of the weights, the rest being the pre-trained checkpoint's."""
    frozen = set(frozen_names(model))
    return {name: value for name, value in model.state_dict().items() if name not in frozen}


def frozen_names(model) -> list[str]:
    return sorted(name for name, parameter in model.named_parameters() if not parameter.requires_grad)


def frozen_digest(model) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of the model's frozen parameters."""
    import torch

    digest = hashlib.sha256()
    parameters = dict(model.named_parameters())
    for name in frozen_names(model):
        tensor = parameters[name].detach().to("cpu").contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def snapshot(value: Any) -> Any:
    """`value` (a state dict, nested dicts and lists of tensors) with every tensor copied to host memory,
    so that training may go on changing the originals while the copy is written."""
    import torch

    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {key: snapshot(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(snapshot(item) for item in value)
    return value


class CheckpointWriter:
    """Writes one resume file at a time: in a background thread (`background`), else on the caller's
    thread. A new write waits for the previous one; a failed write raises at the next `write` or `wait`.
    `every_seconds`: the wall-clock interval after which a write is `due` (inf: by steps only)."""

    def __init__(self, *, background: bool = True, every_seconds: float = math.inf,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.background, self.every_seconds, self.clock = background, every_seconds, clock
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._last = clock()

    def due(self) -> bool:
        """Whether the wall-clock interval has passed since the last write started."""
        return self.clock() - self._last >= self.every_seconds

    def write(self, path: Path, checkpoint: dict) -> None:
        """Write `checkpoint` (already a snapshot) to `path` atomically."""
        self.wait()
        self._last = self.clock()
        if not self.background:
            _save(path, checkpoint)
            return
        self._thread = threading.Thread(target=self._run, args=(path, checkpoint), name="crossling-checkpoint")
        self._thread.start()

    def join(self) -> None:
        """Until the write in flight has ended (its error, if any, is kept for `wait`)."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def wait(self) -> None:
        """Until the write in flight is on disk; raises its error."""
        self.join()
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _run(self, path: Path, checkpoint: dict) -> None:
        try:
            _save(path, checkpoint)
        except BaseException as error:  # re-raised on the training thread by `wait`
            self._error = error


def _save(path: Path, checkpoint: dict) -> None:
    import torch

    started = time.monotonic()
    with atomic_path(path) as tmp:
        torch.save(checkpoint, tmp)
    log.debug("resume file %s written in %.2f s", path, time.monotonic() - started)
