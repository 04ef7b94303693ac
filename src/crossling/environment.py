"""Where a run ran: software versions, platform, processor or GPU name and the crossling source commit ->
a flat {name: text} dict (a run record's `versions`, the report's methods). No torch at module level."""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path

import crossling


def run_environment(device: str) -> dict[str, str]:
    """crossling, torch, transformers and Python versions, the OS, the processor (or the GPU on CUDA) and
    the git commit crossling was run from (when it runs from a git checkout)."""
    import torch
    import transformers

    values = {"crossling": crossling.__version__, "torch": torch.__version__,
              "transformers": transformers.__version__, "python": platform.python_version(),
              "platform": platform.platform(terse=True), "processor": processor_name()}
    if device.startswith("cuda"):
        values["gpu"] = torch.cuda.get_device_name(torch.device(device))
    commit = source_commit()
    return {**values, "commit": commit} if commit else values


def processor_name() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux), else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def source_commit() -> str:
    """The git commit of the checkout crossling is imported from ('' for an installed package or without
    git); '+changes' marks uncommitted edits to tracked files."""
    source = Path(crossling.__file__).resolve().parent
    try:
        head = subprocess.run(["git", "-C", str(source), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                              text=True, timeout=10)
        if head.returncode != 0:
            return ""
        dirty = subprocess.run(["git", "-C", str(source), "status", "--porcelain", "--untracked-files=no", "."],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return ""
    return head.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")
