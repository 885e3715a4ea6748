"""Seeds of a run or a trial, derived deterministically from one integer.

A trial of a sweep is (arch, mode, trial index t, base seed). Its run seed is derived from
(base, t); from the run seed come the init and data-order seeds, which the six modes of trial t
therefore share (a paired design), and the ablation seed, which also depends on the mode.
``train --seed S`` uses S as the run seed, so a sweep trial is the same computation as
``train --seed <its run seed> --ablation-mode <its mode>``.
"""

from __future__ import annotations

import secrets
from dataclasses import asdict, dataclass

import numpy as np

from psa.modes import MODES

_INIT, _DATA, _ABLATION, _TRIAL, _LOOP = 1, 2, 3, 4, 5


def derive(*parts: int) -> int:
    """A 63-bit seed from a sequence of non-negative integers (numpy's SeedSequence hashing)."""
    state = np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def fresh_seed() -> int:
    """A seed for a run started without --seed; it is printed and recorded."""
    return secrets.randbelow(2**31)


@dataclass(frozen=True)
class RunSeeds:
    run: int
    init: int
    data: int
    ablation: int

    def as_record(self, base: int | None = None) -> dict:
        record = asdict(self)
        if base is not None:
            record["base"] = base
        return record


def run_seeds(seed: int, mode: str, data_seed: int | None = None) -> RunSeeds:
    return RunSeeds(
        run=seed,
        init=derive(seed, _INIT),
        data=derive(seed, _DATA) if data_seed is None else data_seed,
        ablation=derive(seed, _ABLATION, MODES.index(mode)),
    )


def trial_run_seed(base: int, trial: int) -> int:
    """The run seed of trial index ``trial`` (1-based) of a sweep with base seed ``base``."""
    return derive(base, _TRIAL, trial) % 2**31


def loop_seed(seed: int, loop: int) -> int:
    """Per-loop stream of a seed: a resumed run draws what an uninterrupted one would."""
    return derive(seed, _LOOP, loop)
