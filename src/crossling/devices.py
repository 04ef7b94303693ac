"""Device decisions as functions of device facts (visible GPUs, compute capability, memory): which GPU each
run gets, which precision a device runs, and the facts a run record keeps (name, driver, CUDA, peak memory).
Every decision takes the facts as inputs, so it is tested on CPU; only the `*_of_this_process` readers touch
CUDA."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from crossling.errors import ConfigError
from crossling.records import DeviceFacts

log = logging.getLogger(__name__)

#: bf16 runs natively (tensor cores) from Ampere on; below, torch emulates it (slow) and fp16 is the choice.
BF16_MIN_CAPABILITY = (8, 0)
NONDETERMINISM = ("on CUDA, training is not bit-reproducible (the CTC loss's backward and several cuDNN kernels "
                  "are nondeterministic): this run's weights differ in the last digits from an uninterrupted "
                  "or repeated run")


# --- which GPU each run gets -----------------------------------------------------------------------------


def visible_gpu_ids(environ: Mapping[str, str], count: int) -> list[str]:
    """The GPUs this process may hand out, as CUDA_VISIBLE_DEVICES entries: its own CUDA_VISIBLE_DEVICES
    if set (so a grid started on GPUs 2,5 hands out 2 and 5), else 0..count-1."""
    given = environ.get("CUDA_VISIBLE_DEVICES")
    if given is None:
        return [str(index) for index in range(count)]
    return [entry.strip() for entry in given.split(",") if entry.strip()][:count]


def assign_gpus(workers: int, device: str, gpus: Sequence[str]) -> list[str | None]:
    """CUDA_VISIBLE_DEVICES for each of `workers` grid processes (None: leave it as it is): one GPU each.

    A grid that would put two concurrent runs on one GPU, or train on CPU while asking for CUDA, is refused:
    more workers than GPUs, or one explicit `cuda:k` for several workers."""
    if device == "cpu":
        return ["" for _ in range(workers)]  # no CUDA context, no memory taken on any GPU
    if not gpus:
        if device.startswith("cuda"):
            raise ConfigError(f"--device {device}: this machine shows no GPU to the grid processes; use cpu or auto")
        return [None] * workers  # no GPU exists: auto means CPU
    if device.startswith("cuda:"):
        if workers > 1:
            raise ConfigError(f"--device {device} with --workers {workers} would put every run on one GPU; "
                              f"use --device auto (one GPU per grid process, {len(gpus)} visible)")
        return [None]
    if workers > len(gpus):
        raise ConfigError(f"--workers {workers} but {len(gpus)} GPU(s) visible ({','.join(gpus)}): runs would "
                          f"share a GPU; use --workers {len(gpus)} (one run per GPU), or --device cpu")
    return [gpus[index] for index in range(workers)]


def pinned_device(device: str, pin: str | None) -> str:
    """The device a pinned grid process asks for: 'auto' becomes 'cuda' once it owns a GPU, so that a GPU
    it cannot use is an error instead of a silent fall-back to CPU."""
    return "cuda" if pin and device == "auto" else device


def ray_gpus_per_run(requested: float | None, *, cluster_gpus: float, device: str) -> float:
    """GPUs each Ray task requests: 1 by default when the cluster has GPUs (Ray then pins the task to its
    own), else 0. Refused: 0 GPUs on a GPU cluster with a device other than cpu (Ray >= 2.x shows such a
    task every GPU, so every run trains on GPU 0; older Ray hides them all, so runs train on CPU)."""
    if requested is None:
        requested = 1.0 if cluster_gpus > 0 and device != "cpu" else 0.0
    if requested == 0 and cluster_gpus > 0 and device != "cpu":
        raise ConfigError(f"--gpus-per-run 0 on a Ray cluster with {cluster_gpus:g} GPU(s) would pile every run "
                          f"on GPU 0 (or train on CPU, depending on the Ray version); use --gpus-per-run 1, "
                          f"or --device cpu to train on CPU")
    if requested > 0 and device == "cpu":
        raise ConfigError(f"--gpus-per-run {requested:g} with --device cpu would hold GPUs no run uses")
    if requested > 0 and device.startswith("cuda:"):
        raise ConfigError(f"--device {device} with Ray: each task sees only the GPU Ray gave it (as cuda:0); "
                          f"use --device auto or cuda")
    if 0 < requested < 1:
        log.warning("--gpus-per-run %g: %d runs share each GPU's memory and compute", requested, round(1 / requested))
    return requested


def ray_device(device: str, gpus_per_run: float) -> str:
    """The device a Ray task asks for: 'auto' becomes 'cuda' when the task holds a GPU (no silent CPU)."""
    return "cuda" if gpus_per_run > 0 and device == "auto" else device


# --- precision ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Precision:
    """How a run computes: the autocast dtype (None: fp32) and whether fp16's loss scaler is on."""

    autocast: str | None  # 'bfloat16', 'float16' or None

    @property
    def scaled(self) -> bool:
        return self.autocast == "float16"

    @property
    def name(self) -> str:
        return {"bfloat16": "bf16", "float16": "fp16"}.get(self.autocast or "", "fp32")


def choose_precision(precision: str, device: str, capability: tuple[int, int] | None) -> Precision:
    """The recipe's `precision` on this device: fp32 on CPU under 'auto'; bf16 only where it is native
    (compute capability >= 8.0), else fp16 with a loss scaler."""
    on_gpu = device.startswith("cuda")
    if precision == "fp32" or (precision == "auto" and not on_gpu):
        return Precision(None)
    if precision == "fp16" and not on_gpu:
        raise ConfigError("precision = 'fp16' needs a CUDA device; use fp32, bf16 or auto on CPU")
    native_bf16 = not on_gpu or (capability is not None and capability >= BF16_MIN_CAPABILITY)
    if precision == "bf16" and not native_bf16:
        raise ConfigError(f"precision = 'bf16' on a GPU of compute capability {_capability(capability)}: bf16 is "
                          f"emulated below 8.0 (slow); use fp16 or auto (fp16 with a loss scaler there)")
    if precision == "auto":
        return Precision("bfloat16" if native_bf16 else "float16")
    return Precision("bfloat16" if precision == "bf16" else "float16")


def _capability(capability: tuple[int, int] | None) -> str:
    return "unknown" if capability is None else f"{capability[0]}.{capability[1]}"


# --- facts of this process's devices (the only functions here that ask CUDA) ---------------------------


def cuda_index(device: str) -> int:
    """'cuda:k' -> k; 'cuda' -> the current device."""
    import torch

    _, _, index = device.partition(":")
    return int(index) if index else torch.cuda.current_device()


def capability_of(device: str) -> tuple[int, int] | None:
    import torch

    return tuple(torch.cuda.get_device_capability(cuda_index(device))) if device.startswith("cuda") else None


def facts_of(device: str) -> DeviceFacts:
    """Which device a run used: GPU name, compute capability, memory, driver and CUDA versions."""
    import platform

    import torch

    if not device.startswith("cuda"):
        return DeviceFacts(device=device, name=platform.processor() or platform.machine(), cuda=torch.version.cuda or "")
    index = cuda_index(device)
    properties = torch.cuda.get_device_properties(index)
    return DeviceFacts(device=f"cuda:{index}", name=properties.name, capability=_capability(capability_of(device)),
                       memory_mb=properties.total_memory / 2**20, driver=_driver_version(),
                       cuda=torch.version.cuda or "", visible=os.environ.get("CUDA_VISIBLE_DEVICES", ""))


def _driver_version() -> str:
    """The NVIDIA driver's version through NVML (as nvidia-smi shows it); '' where NVML is missing."""
    try:
        import pynvml

        pynvml.nvmlInit()
        version = pynvml.nvmlSystemGetDriverVersion()
        return version.decode() if isinstance(version, bytes) else str(version)
    except Exception:  # NVML absent or failing: the record says unknown rather than the run failing
        return ""


def reset_peak_memory(device: str) -> None:
    """Start the run's peak-memory count from now (a grid process runs many runs)."""
    import torch

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(cuda_index(device))


def peak_memory_mb(device: str) -> tuple[float, float]:
    """(allocated, reserved) peak MiB on the run's own device since `reset_peak_memory`; reserved includes
    the allocator's cache. On CPU both are the process's peak resident set (Linux reports KiB)."""
    import resource

    import torch

    if device.startswith("cuda"):
        index = cuda_index(device)
        return torch.cuda.max_memory_allocated(index) / 2**20, torch.cuda.max_memory_reserved(index) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return rss, rss


def cuda_rng_state(device: str):
    """The CUDA RNG state of the run's own device (not every visible GPU's: those differ between machines)."""
    import torch

    return torch.cuda.get_rng_state(cuda_index(device)) if device.startswith("cuda") else None


def restore_cuda_rng(saved, device: str) -> None:
    """Put a saved CUDA RNG state on the run's device, whatever device wrote it. `saved` is one state, or
    (resume files of earlier versions) the list of every GPU the writer saw: its first entry, the GPU an
    unpinned run used, is taken."""
    import torch

    if not device.startswith("cuda") or saved is None or (isinstance(saved, list) and not saved):
        return
    state = saved[0] if isinstance(saved, list) else saved
    torch.cuda.set_rng_state(state, cuda_index(device))


def warn_nondeterminism(device: str, resumed: bool) -> None:
    """Say that a resumed CUDA run is not bit-identical to an uninterrupted one (CPU runs are)."""
    if device.startswith("cuda") and resumed:
        log.warning("resumed: %s", NONDETERMINISM)


def memory_bytes(device: str) -> float | None:
    """Total memory of the run's GPU (None on CPU: no memory budget there)."""
    import torch

    return float(torch.cuda.get_device_properties(cuda_index(device)).total_memory) if device.startswith("cuda") else None


def release_cached_memory(device: str) -> None:
    """After an out-of-memory error: hand the allocator's cached blocks back so that a retry starts clean."""
    import gc

    import torch

    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def to_device(tensor, device: str):
    """A host tensor on `device`: on a GPU through pinned (page-locked) memory with a non-blocking copy, so
    that the copy overlaps the host's work; on CPU the tensor itself."""
    if device.startswith("cuda") and tensor.device.type == "cpu":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)  # already there (a feature cache kept on the GPU), or CPU


#: The share of a GPU's memory the frozen-CNN feature cache may take there (LARGE: ~0.36 GiB per hour of
#: training audio, so 5 h take 1.8 GiB: on the device for 24 GiB cards and up).
FEATURE_CACHE_SHARE = 0.1


def cache_fits_on_device(size_bytes: float, device_bytes: float | None) -> bool:
    """Whether the feature cache stays on the GPU (no re-upload each step) rather than in host memory."""
    return device_bytes is not None and size_bytes <= FEATURE_CACHE_SHARE * device_bytes


#: Messages of CUDA errors that leave a process's CUDA context unusable (every later call fails).
STICKY_CUDA_ERRORS = ("CUDA error", "device-side assert", "illegal memory access", "CUBLAS_STATUS", "cuDNN error")


def is_sticky_cuda_error(error: BaseException) -> bool:
    """Whether `error` poisoned the process's GPU (out of memory does not: the next allocation may succeed)."""
    if type(error).__name__ == "OutOfMemoryError":
        return False
    return any(marker in str(error) for marker in STICKY_CUDA_ERRORS)
