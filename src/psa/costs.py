"""What a sweep batch costs: seconds per meta-loop of K trials of one network.

The model behind ``sweep --dry-run``, the order in which a sweep runs its batches and the split
of a grid among shards. A loop is an epoch of training steps, a validation pass and the batch's
save, and each splits into two kinds of cost:

- **dispatch**: a fixed cost per step, a cost per Linear per step (the ops each layer issues:
  matmuls, their backward, ReLU, the optimizer; what bounds deep narrow networks, where
  ``[2048*1]`` runs 4,098 Linears of a few units each) and a cost per Linear per trial (the
  per-matrix work of batched matmuls and per-trial tensors);
- **arithmetic**: 6 x parameters FLOP per image per trial at a sustained rate, plus the memory
  traffic of the activations (per trial, image and unit of width summed over the Linears).

``CPU_MODEL`` holds coefficients fitted to the engine on a 2-core CPU. A device's own figures
(``check-device``'s timings, stored by it in ``results/devices/``) rescale the two kinds
separately: :meth:`CostModel.calibrated`.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, replace
from pathlib import Path

TRAIN_ROWS = 50_000
VAL_ROWS = 10_000
# Where check-device stores each device's figures and sweep looks for them, relative to the
# working directory as sweep's own default results dir is.
DEVICE_COSTS_DIR = Path("results/devices")


@dataclass(frozen=True)
class CostModel:
    step: float  # s per training step
    step_per_linear: float  # s per Linear per step
    step_per_trial_linear: float  # s per Linear per trial per step
    train_flop_rate: float  # FLOP/s of training arithmetic
    step_per_activation: float  # s per trial, image and unit of width, training
    validate: float  # s per validation pass
    validate_per_trial_linear: float  # s per Linear per trial, validation
    validate_flop_rate: float  # FLOP/s of the validation forward
    validate_per_activation: float  # s per trial, image and unit, validation
    save_per_trial_linear: float  # s per Linear per trial to save the batch each loop
    dispatch_scale: float = 1.0  # a device's measured figures over the model's, per kind
    arithmetic_scale: float = 1.0
    source: str = "a model fitted to one core of an idle CPU"

    def loop_parts(self, network, trials: int, batch_size: int = 256) -> tuple[float, float]:
        """(dispatch, arithmetic) seconds of one loop of ``trials`` trials, before scaling."""
        linears = len(network.linears)
        parameters = network.parameter_count()
        units = sum(spec.out_features for spec in network.linears)
        steps = math.ceil(TRAIN_ROWS / batch_size)
        dispatch = steps * (
            self.step
            + self.step_per_linear * linears
            + self.step_per_trial_linear * trials * linears
        )
        dispatch += self.validate + (
            self.validate_per_trial_linear + self.save_per_trial_linear
        ) * (trials * linears)
        arithmetic = (
            trials
            * TRAIN_ROWS
            * (6 * parameters / self.train_flop_rate + self.step_per_activation * units)
        )
        arithmetic += (
            trials
            * VAL_ROWS
            * (2 * parameters / self.validate_flop_rate + self.validate_per_activation * units)
        )
        return dispatch, arithmetic

    def loop_seconds(self, network, trials: int, batch_size: int = 256) -> float:
        """Seconds of one meta-loop of ``trials`` trials of ``network``."""
        dispatch, arithmetic = self.loop_parts(network, trials, batch_size)
        return self.dispatch_scale * dispatch + self.arithmetic_scale * arithmetic

    def calibrated(self, timings: list[dict], source: str) -> CostModel:
        """This model rescaled to measured loops: ``timings`` of (network, trials, seconds); the
        dispatch and arithmetic scales that fit them best in relative error (both >= 0; one
        scale for both where the timings cannot tell them apart)."""
        rows = []
        for timing in timings:
            dispatch, arithmetic = self.loop_parts(timing["network"], timing["trials"])
            rows.append((dispatch / timing["seconds"], arithmetic / timing["seconds"]))
        if not rows:
            return self
        dd = sum(d * d for d, _ in rows)
        da = sum(d * a for d, a in rows)
        aa = sum(a * a for _, a in rows)
        d1 = sum(d for d, _ in rows)
        a1 = sum(a for _, a in rows)
        determinant = dd * aa - da * da
        scales = None
        if determinant > 1e-9 * dd * aa:
            dispatch = (d1 * aa - a1 * da) / determinant
            arithmetic = (a1 * dd - d1 * da) / determinant
            if dispatch > 0 and arithmetic > 0:
                scales = (dispatch, arithmetic)
        if scales is None:  # one scale: least squares of sum((s * (d + a) - 1)^2)
            total = [d + a for d, a in rows]
            one = sum(total) / sum(t * t for t in total)
            scales = (one, one)
        return replace(self, dispatch_scale=scales[0], arithmetic_scale=scales[1], source=source)


# Fitted (non-negative least squares in relative error) to the process CPU time of training
# steps and validation passes of the engine (flat trial state), one thread, for [1*8] and [2*8]
# K=6, [1*64] K=18, [4*17], [18*18], [64*4], [256*1] and [1024*1] K=60, [256*1] and [2048*1]
# K=12, [2*256] K=6, [1*1024] and [1*2048] K=1 (steps within 26 %, validation within 23 %), on
# this project's 2-core machine while other processes ran (CPU time, so their share of the
# cores does not count). The batch's save is a handful of flat tensors: no cost per layer.
CPU_MODEL = CostModel(
    step=6.7e-4,
    step_per_linear=4.46e-5,
    step_per_trial_linear=4.1e-7,
    train_flop_rate=103.9e9,
    step_per_activation=7.0e-9,
    validate=9.1e-4,
    validate_per_trial_linear=8.8e-5,
    validate_flop_rate=135.3e9,
    validate_per_activation=1.08e-9,
    save_per_trial_linear=0.0,
    source="a model fitted to one core of an idle CPU (this project's machine)",
)


def device_costs_path(device_model: str | None, directory: Path = DEVICE_COSTS_DIR) -> Path:
    """The file of a device's figures: its model's name as a file name."""
    slug = re.sub(r"[^a-z0-9]+", "-", (device_model or "unknown").lower()).strip("-")
    return directory / f"{slug or 'unknown'}.json"


def model_for(device_model: str | None, directory: Path = DEVICE_COSTS_DIR) -> CostModel:
    """The cost model of a device: calibrated by its check-device figures where stored and
    readable, else ``CPU_MODEL``."""
    from psa.arch import parse_key
    from psa.model import build_network

    path = device_costs_path(device_model, directory)
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
        timings = [
            {
                "network": build_network("resmlp", parse_key(t["arch"])),
                "trials": int(t["trials"]),
                "seconds": float(t["seconds_per_loop"]),
            }
            for t in report["timings"]
            if float(t["seconds_per_loop"]) > 0
        ]
        if report["environment"]["device_model"] != device_model:
            return CPU_MODEL
        spread = max((float(t.get("spread", 0.0)) for t in report["timings"]), default=0.0)
    except (OSError, ValueError, KeyError, TypeError):
        return CPU_MODEL
    when = report.get("measured_at", "at an unrecorded time")
    source = (
        f"check-device figures of this device ({path}, measured {when}, repeated timings within "
        f"{spread:.0%})"
    )
    return CPU_MODEL.calibrated(timings, source)
