"""Pick the torch device: CUDA, then Apple MPS, then CPU, unless the user names one."""

from __future__ import annotations

import torch

from psa.errors import PsaError

CHOICES = ("auto", "cpu", "cuda", "mps")


class DeviceError(PsaError):
    """The requested device does not exist on this machine; the message says what to use."""


def resolve_device(name: str | None) -> torch.device:
    """``None``/"auto" picks the best available device; anything else must be available."""
    if name is None or name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DeviceError(
            f"unknown device {name!r}; use one of {', '.join(CHOICES)} (or cuda:N)"
        ) from None
    if device.type == "cuda":
        _require_cuda(device)
    elif device.type == "mps":
        if not _mps_available():
            raise DeviceError(
                "--device mps was requested but Apple MPS is not available on this machine; "
                "omit --device to pick the best available device, or use --device cpu"
            )
    elif device.type != "cpu":
        raise DeviceError(f"device {name!r} is not supported; use one of {', '.join(CHOICES)}")
    return device


def _require_cuda(device: torch.device) -> None:
    if not torch.cuda.is_available():
        reason = (
            "this torch build has no CUDA support"
            if torch.version.cuda is None
            else "no CUDA GPU is visible"
        )
        raise DeviceError(
            f"--device {device} was requested but {reason}; "
            "omit --device to pick the best available device, or use --device cpu"
        )
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise DeviceError(
            f"--device {device} was requested but only {count} CUDA device(s) exist "
            f"(cuda:0 to cuda:{count - 1})"
        )


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return backend is not None and backend.is_available()
