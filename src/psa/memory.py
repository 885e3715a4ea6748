"""The memory training takes, against what the device has free: one estimate, used both to
choose how many trials sweep trains together and to refuse, before anything is allocated, a run
whose training state cannot fit.

The estimate of one trial is its weights, their gradients, AdamW's two moments and the LKG copy
(five float32 copies of the parameters) plus the activations autograd keeps for one batch (with
dropout masks); K trials trained together take K times that.
"""

from __future__ import annotations

import torch

from psa.errors import PsaError
from psa.model import Network

MEMORY_FRACTION = 0.5  # of the free memory, what sweep plans its batches in
CPU_FLOP_PER_STEP = 4e9
UNKNOWN_FREE_BYTES = 8 * 2**30  # planning's assumption where the free memory cannot be read
PARAMETER_COPIES = 5  # weights, gradients, two Adam moments, the LKG


class MemoryLimitError(PsaError):
    """Training state that cannot fit in the device's free memory; the message gives both."""


def trial_bytes(network: Network, batch_size: int) -> int:
    """Bytes one trial takes in the engine (see the module docstring)."""
    activations = batch_size * sum(spec.out_features for spec in network.linears)
    return 4 * (PARAMETER_COPIES * network.parameter_count() + 4 * activations)


def free_bytes(device: torch.device) -> int | None:
    """Memory free now: the GPU's on CUDA, available RAM otherwise (MPS shares it); None where
    the system does not say."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as meminfo:
            fields = dict(line.split(":", 1) for line in meminfo)
        return int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return None


def memory_budget(device: torch.device) -> int:
    """The share of free memory a sweep plans its batches in."""
    free = free_bytes(device)
    return int((UNKNOWN_FREE_BYTES if free is None else free) * MEMORY_FRACTION)


def batch_limit(network: Network, batch_size: int, budget: int, device: torch.device) -> int:
    """How many trials to train together: as many as fit in ``budget`` bytes, and on a CPU no
    more than keep one step's arithmetic near ``CPU_FLOP_PER_STEP``. Batching pays where
    per-step overhead dominates (small networks); a large network already keeps the cores busy
    on its own, and stacking more of them only adds memory traffic (bench: [1*1024] trains a
    trial-epoch in 5.6 s alone and 7.0 s in a batch of 60)."""
    by_memory = max(1, budget // trial_bytes(network, batch_size))
    if device.type != "cpu":
        return by_memory
    by_work = max(1, int(CPU_FLOP_PER_STEP // (6 * network.parameter_count() * batch_size)))
    return min(by_memory, by_work)


def check_fits(network: Network, batch_size: int, trials: int, device: torch.device) -> None:
    """Refuse ``trials`` trials of ``arch`` whose training state exceeds the free memory."""
    free = free_bytes(device)
    needed = trials * trial_bytes(network, batch_size)
    if free is None or needed <= free:
        return
    what = f"{trials} trials" if trials > 1 else "one trial"
    raise MemoryLimitError(
        f"{network.model} {network.arch.flag} at batch size {batch_size} needs about "
        f"{_gib(needed)} "
        f"for {what} (weights, gradients, two Adam moments, the LKG copy and a batch's "
        f"activations) but {device} has {_gib(free)} free; choose a smaller --arch or "
        "--batch-size, fewer trials per batch, or a device with more memory"
    )


def _gib(count: int) -> str:
    return f"{count / 2**30:.1f} GiB"
