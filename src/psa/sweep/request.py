"""The one value a sweep is asked with: a frozen SweepRequest, built by the command line, by a
SageMaker job and handed (pickled) to every shard's process; never an argparse Namespace."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from psa.arch import Arch
from psa.config import RunConfig
from psa.errors import PsaError


class SweepError(PsaError):
    """A sweep that cannot start as asked; the message says what to do."""


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (1-based)."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str) -> Shard:
    """``"2/5"`` -> Shard(2, 5); raises ValueError unless 1 <= I <= N, both ASCII digits."""
    parts = text.strip().split("/")
    if len(parts) != 2 or not all(part.isascii() and part.isdigit() for part in parts):
        raise ValueError(f"shard {text!r} is not I/N, e.g. 2/4")
    index, count = (int(part) for part in parts)
    if not 1 <= index <= count:
        raise ValueError(f"shard {text!r} needs 1 <= I <= N, e.g. 2/4")
    return Shard(index, count)


@dataclass(frozen=True)
class SweepRequest:
    """What one sweep process runs: a grid of architectures x modes x trials with one run
    configuration (its seed None: the results dir's, or drawn), and where."""

    archs: tuple[Arch, ...]
    modes: tuple[str, ...]
    trials: int
    config: RunConfig
    results_dir: Path
    device: str = "auto"
    data_dir: Path | None = None
    max_batch: int | None = None
    shard: Shard | None = None
    dry_run: bool = False
    tensorboard: bool = False
    matmul_precision: str = "highest"  # float32 matmuls on CUDA (psa.device)
    cuda_graph: bool = True  # replay training steps from a CUDA graph on CUDA (psa.cuda_graph)
    # Train decay trials even where they compute exactly what their none twin does (see
    # psa.sweep.plan.decay_is_none); by default they are copied from it.
    train_decay: bool = False

    def for_shard(self, shard: Shard, device: str | None = None) -> SweepRequest:
        """This request as one shard's process runs it: that shard, absolute paths (the process
        may start elsewhere), a real run."""
        data_dir = self.data_dir.absolute() if self.data_dir is not None else None
        return replace(
            self,
            shard=shard,
            device=self.device if device is None else device,
            results_dir=self.results_dir.absolute(),
            data_dir=data_dir,
            dry_run=False,
        )
