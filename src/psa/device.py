"""Pick the torch device: CUDA, then Apple MPS, then CPU, unless the user names one."""

from __future__ import annotations

import torch

from psa.errors import PsaError
from psa.wording import count

CHOICES = ("auto", "cpu", "cuda", "mps")
# torch's names for the precision of float32 matmuls; "highest" is full fp32.
MATMUL_PRECISIONS = ("highest", "high", "medium")


class DeviceError(PsaError):
    """The requested device does not exist on this machine; the message says what to use."""


def resolve_device(name: str | None, matmul_precision: str = "highest") -> torch.device:
    """``None``/"auto" picks the best available device; anything else must be available.
    On CUDA, float32 matmuls are set to ``matmul_precision`` (see :func:`set_matmul_precision`)."""
    device = _pick_device(name)
    if device.type == "cuda":
        set_matmul_precision(matmul_precision)
    return device


def set_matmul_precision(precision: str = "highest") -> None:
    """float32 matmuls at ``precision``: "highest" keeps them full fp32, with TF32 off in cuBLAS
    and cuDNN whatever a library or an earlier call set; "high" and "medium" let CUDA use TF32
    (faster, about 3 decimal digits)."""
    if precision not in MATMUL_PRECISIONS:
        raise DeviceError(
            f"unknown matmul precision {precision!r}; use one of {', '.join(MATMUL_PRECISIONS)}"
        )
    torch.set_float32_matmul_precision(precision)
    torch.backends.cuda.matmul.allow_tf32 = precision != "highest"
    torch.backends.cudnn.allow_tf32 = precision != "highest"


def _pick_device(name: str | None) -> torch.device:
    if name is None or name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = parse_device(name)
    reason = absence(device)
    if reason is not None:
        raise DeviceError(
            f"--device {device} was requested but {reason}; "
            "omit --device to pick the best available device, or use --device cpu"
        )
    return device


def parse_device(name: str) -> torch.device:
    """The torch device ``name`` names; refuses a name that is none, or one psa cannot use."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DeviceError(
            f"unknown device {name!r}; use one of {', '.join(CHOICES)} (or cuda:N)"
        ) from None
    if device.type not in ("cpu", "cuda", "mps"):
        raise DeviceError(f"device {name!r} is not supported; use one of {', '.join(CHOICES)}")
    return device


def absence(device: torch.device) -> str | None:
    """Why this machine lacks ``device`` ("this torch build has no CUDA support"), or None
    when it has it."""
    if device.type == "cuda":
        if not torch.cuda.is_available():
            if torch.version.cuda is None:
                return "this torch build has no CUDA support"
            return "no CUDA GPU is visible"
        gpus = torch.cuda.device_count()
        if device.index is not None and device.index >= gpus:
            verb = "exists" if gpus == 1 else "exist"
            return f"only {count(gpus, 'CUDA device')} {verb} ({_cuda_range(gpus)})"
    elif device.type == "mps" and not _mps_available():
        return "Apple MPS is not available on this machine"
    return None


def _cuda_range(gpus: int) -> str:
    return "cuda:0" if gpus == 1 else f"cuda:0 to cuda:{gpus - 1}"


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return backend is not None and backend.is_available()


def set_threads(count: int | None) -> int:
    """Give this process's torch ``count`` intra-op threads (None: DEFAULT_THREADS, psa's
    choice); the count used, which runs print and record."""
    from psa.config import DEFAULT_THREADS

    count = DEFAULT_THREADS if count is None else count
    if torch.get_num_threads() != count:
        torch.set_num_threads(count)
    return count
