"""The device self-check: does this device compute what a float64 CPU reference computes, and how
fast does it train the grid?

Three comparisons, each against the same network written plainly in float64 on the CPU from the
engine's own initial weights (spec 2.2; upstream state-dict names):

- forward logits of K trials on one batch;
- gradients of the summed per-trial mean cross-entropy on one training batch per data group;
- two whole meta-loops without dropout (restore, ablate, one epoch of AdamW with decay, validate,
  promote), on a small synthetic task: accuracies, promotions and the LKG weights.

Then a few grid architectures are timed for some training steps at the batch size the sweep
would use on this device, and the paper grid is projected from them. The library prints nothing:
:func:`run_selfcheck` returns a :class:`SelfCheck` that the command renders.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import torch
import torch.nn.functional as F

from psa import engine as engine_module
from psa.ablation import AblationTarget
from psa.arch import parse_key
from psa.config import Hyperparameters
from psa.costs import CPU_MODEL, TRAIN_ROWS, VAL_ROWS, CostModel
from psa.data import MnistSplits
from psa.engine import ADAM_BETAS, ADAM_EPS, Engine, TrialSpec
from psa.memory import batch_limit, memory_budget
from psa.model import StackedParameters, build_network
from psa.provenance import device_model
from psa.seeds import loop_seed, run_seeds, trial_run_seed

# Networks the comparisons run: a ResMLP with an input projection, blocks and a transition, and
# the plain MLP. Small, so the float64 reference stays quick; every code path of the forward.
NUMERIC_NETWORKS = (("resmlp", "[2*24, 1*12]"), ("mlp", "[2*16]"))
# Every mode but dropout (its masks come from the device's generator, which no CPU reproduces),
# for two trial indices: two data groups of five trials.
NUMERIC_MODES = ("none", "decay", "full", "hidden", "output")
NUMERIC_TRIALS = 2
# A learning rate and weight decay where a loop moves the weights and 1 - lr * wd != 1 in
# float32, so the decay path runs; the paper's settings skip it.
NUMERIC_HYPER = Hyperparameters(lr=1e-3, batch_size=64, weight_decay=0.1)
NUMERIC_ROWS = (512, 512)  # synthetic training and validation rows: 8 steps an epoch
LOOPS = 2

# Tolerances, each |device - reference| against the float64 value. fp32 rounding of these small
# networks stays near 1e-6; TF32 matmuls (10-bit mantissa) or a wrong kernel land well above.
LOGITS_TOLERANCE = 1e-4  # absolute, on logits of order 1
GRADIENT_TOLERANCE = 1e-4  # relative to each tensor's largest reference entry
# LKG weights after the loops, per tensor: |device - reference| / |reference - initial| (norms),
# the error relative to how far the loops moved it. Adam divides each gradient by its own size,
# so the relative rounding of a near-zero gradient reaches the weights undamped: fp32 lands near
# 1e-4 here.
WEIGHT_TOLERANCE = 1e-3
ACCURACY_TOLERANCE_IMAGES = 1  # a near-tie argmax may flip one validation image

# Grid architectures timed by default: wide, square, deep narrow.
TIMED_ARCHS = ("[1*1024]", "[18*18]", "[4*17]", "[64*4]")
TIMED_STEPS = 6
# Timings are stored only when they agree: two timings of the same steps within 25 %, and the
# process on the CPU for 80 % of the wall time of each of its threads.
MOST_SPREAD = 0.25
LEAST_CPU_SHARE = 0.8
GRID_TRIALS = 60  # six modes x ten trials per architecture
GRID_LOOPS = 100


@dataclass
class Comparison:
    """One comparison against the float64 reference."""

    check: str
    network: str
    error: float  # the largest error found, in the tolerance's unit
    tolerance: float
    unit: str

    @property
    def passed(self) -> bool:
        return math.isfinite(self.error) and self.error <= self.tolerance


@dataclass
class Timing:
    """Training speed of one grid architecture at the sweep's batch size on this device."""

    arch: str
    trials: int
    steps_timed: int
    seconds_per_step: float
    seconds_per_loop: float  # one epoch of 50,000 images and validation on 10,000, K trials
    # How far two timings of the same steps lay apart (relative), and the share of its threads'
    # time the process got on the CPU (CPU time / wall time / threads): a busy machine shows in
    # either, and its figures would skew every plan made by them.
    spread: float = 0.0
    cpu_share: float | None = None

    @property
    def trial_epochs_per_second(self) -> float:
        return self.trials / self.seconds_per_loop


@dataclass
class SelfCheck:
    environment: dict
    comparisons: list[Comparison] = field(default_factory=list)
    timings: list[Timing] = field(default_factory=list)
    grid_hours: float | None = None  # projected hours of the paper grid on this device
    model: CostModel | None = None  # the cost model calibrated by the timings
    measured_at: str = field(
        default_factory=lambda: datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    )

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.comparisons)

    def load_signs(self) -> list[str]:
        """What says the machine was busy while timing (empty when the timings can be trusted)."""
        signs = []
        for t in self.timings:
            if t.spread > MOST_SPREAD:
                signs.append(f"{t.arch}: two timings of the same steps {t.spread:.0%} apart")
            if t.cpu_share is not None and t.cpu_share < LEAST_CPU_SHARE:
                signs.append(f"{t.arch}: the process ran {t.cpu_share:.0%} of the time")
        return signs

    def as_json(self) -> dict:
        return {
            "passed": self.passed,
            "measured_at": self.measured_at,
            "environment": self.environment,
            "comparisons": [{**asdict(c), "passed": c.passed} for c in self.comparisons],
            "timings": [
                {**asdict(t), "trial_epochs_per_second": t.trial_epochs_per_second}
                for t in self.timings
            ],
            "grid": {
                "architectures": len(grid_archs()),
                "trials_per_architecture": GRID_TRIALS,
                "meta_loops": GRID_LOOPS,
                "projected_hours": self.grid_hours,
            },
            "cost_model_scales": None
            if self.model is None
            else {
                "dispatch": self.model.dispatch_scale,
                "arithmetic": self.model.arithmetic_scale,
            },
        }


def run_selfcheck(
    device: torch.device, timed_archs: tuple[str, ...] = TIMED_ARCHS, steps: int = TIMED_STEPS
) -> SelfCheck:
    """Compare this device with the float64 CPU reference, then time ``timed_archs``."""
    result = SelfCheck(environment(device))
    for model, key in NUMERIC_NETWORKS:
        result.comparisons += compare_network(device, model, key)
    for key in timed_archs:
        result.timings.append(time_architecture(device, key, steps))
    if result.timings:
        result.model = calibrated_model(result.timings)
        result.grid_hours = project_grid_seconds(device, result.timings) / 3600
    return result


def environment(device: torch.device) -> dict:
    """The device, its software and the numerical settings that decide its fp32 results."""
    cuda = device.type == "cuda"
    return {
        "device": str(device),
        "device_model": device_model(device),
        "torch_version": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda_version": torch.version.cuda if cuda else None,
        "cuda_driver": _nvidia_driver() if cuda else None,
        "cublas_version": _package_version("nvidia-cublas", "nvidia-cublas-cu12") if cuda else None,
        "cudnn_version": torch.backends.cudnn.version() if cuda else None,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "cuda_matmul_allow_tf32": bool(torch.backends.cuda.matmul.allow_tf32) if cuda else None,
        "cudnn_allow_tf32": bool(torch.backends.cudnn.allow_tf32) if cuda else None,
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "cudnn_deterministic": bool(torch.backends.cudnn.deterministic) if cuda else None,
        "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG") if cuda else None,
    }


def synthetic_splits(device: torch.device, rows: tuple[int, int] = NUMERIC_ROWS) -> MnistSplits:
    """A learnable MNIST-shaped task: Gaussian images labelled by a fixed random linear teacher."""
    generator = torch.Generator().manual_seed(20240501)
    teacher = torch.randn(784, 10, generator=generator)

    def part(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randn(n, 784, generator=generator)
        return x.to(device), (x @ teacher).argmax(1).to(device)

    train, val = part(rows[0]), part(rows[1])
    return MnistSplits(*train, *val, *val)


def numeric_trials() -> list[TrialSpec]:
    return [
        TrialSpec(mode, run_seeds(trial_run_seed(0, index), mode))
        for index in range(1, NUMERIC_TRIALS + 1)
        for mode in NUMERIC_MODES
    ]


def compare_network(device: torch.device, model: str, key: str) -> list[Comparison]:
    """Logits, gradients and whole loops of one network on ``device`` vs the reference."""
    network = build_network(model, parse_key(key))
    name = f"{model} {network.arch.flag}"
    data = synthetic_splits(device)
    trials = numeric_trials()
    engine = Engine(network, trials, NUMERIC_HYPER, data)
    initial = [_float64(engine.lkg.state_dict(network, k)) for k in range(engine.size)]
    x = data.val_x[:256]
    reference = torch.stack(
        [reference_logits(network, state, x.double().cpu()) for state in initial]
    )
    with torch.no_grad():
        logits = engine_module.forward(network, engine.params, x[None], engine.size)
    comparisons = [
        Comparison("forward logits", name, _max_error(logits, reference), LOGITS_TOLERANCE, "abs")
    ]
    comparisons.append(_compare_gradients(engine, initial, data, name))
    comparisons += _compare_loops(engine, initial, data, name)
    return comparisons


def _compare_gradients(
    engine: Engine, initial: list[dict], data: MnistSplits, name: str
) -> Comparison:
    network, batch = engine.network, NUMERIC_HYPER.batch_size
    groups = engine.size // engine.group_size
    x = data.train_x[: groups * batch].view(groups, batch, -1)
    y = data.train_y[: groups * batch].view(groups, batch)
    params = engine.params
    with params.as_leaves() as leaves:  # as the engine trains: a leaf per layer's tensor
        logits = engine_module.forward(network, params, x, engine.group_size)
        targets = y.repeat_interleave(engine.group_size, dim=0)
        loss = F.cross_entropy(logits.reshape(-1, 10), targets.reshape(-1), reduction="sum")
        layer_grads = torch.autograd.grad(loss.div(batch), leaves)
    grads = StackedParameters(network, torch.zeros_like(params.flat), engine.size)
    for view, grad in zip(grads.tensors(), layer_grads):
        view.copy_(grad)
    worst = 0.0
    for k, state in enumerate(initial):
        g = k // engine.group_size
        expected = reference_gradients(network, state, x[g].double().cpu(), y[g].cpu())
        found = grads.state_dict(network, k)
        for tensor, value in expected.items():
            scale = float(value.abs().max())
            if scale > 0:
                worst = max(worst, _max_error(found[tensor], value) / scale)
    return Comparison("gradients", name, worst, GRADIENT_TOLERANCE, "rel")


def _compare_loops(
    engine: Engine, initial: list[dict], data: MnistSplits, name: str
) -> list[Comparison]:
    network = engine.network
    cpu = MnistSplits(
        *(t.cpu() for t in (data.train_x, data.train_y, data.val_x, data.val_y)),
        data.val_x.cpu(),
        data.val_y.cpu(),
    )
    references = [
        ReferenceTrial(network, spec, state) for spec, state in zip(engine.trials, initial)
    ]
    accuracy_error = weight_error = 0.0
    promotions_differ = 0
    for loop in range(1, LOOPS + 1):
        report = engine.run_loop(ablate=loop > 1)
        for k, trial in enumerate(references):
            val, promoted = trial.run_loop(loop, report.targets[k], cpu)
            accuracy_error = max(accuracy_error, abs(val - report.val_accuracy[k]))
            promotions_differ += promoted != report.promoted[k]
    for k, trial in enumerate(references):
        found = engine.lkg.state_dict(network, k)
        for tensor, value in trial.lkg.items():
            moved = float((value - initial[k][tensor]).norm())
            error = float((found[tensor].double().cpu() - value).norm())
            if error > 0:
                weight_error = max(weight_error, error / moved if moved > 0 else math.inf)
    image = 100.0 / data.val_x.shape[0]
    return [
        Comparison(
            f"{LOOPS} loops: val accuracy",
            name,
            accuracy_error / image,
            ACCURACY_TOLERANCE_IMAGES,
            "images",
        ),
        Comparison(f"{LOOPS} loops: promotions", name, float(promotions_differ), 0, "differ"),
        Comparison(f"{LOOPS} loops: LKG weights", name, weight_error, WEIGHT_TOLERANCE, "rel"),
    ]


def reference_logits(network, state: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Spec 2.2 written plainly: logits [B, 10] of one trial's upstream-named weights."""
    h = x
    for step in network.steps:
        names = [network.linears[i].name for i in step.linears]
        if step.kind == "block":
            inner = torch.relu(_affine(h, state, names[0]))
            h = torch.relu(h + _affine(inner, state, names[1]))
        elif step.kind == "dense":
            h = torch.relu(_affine(h, state, names[0]))
        else:
            return _affine(h, state, names[0])
    raise ValueError(f"architecture {network.arch.flag} has no final layer")


def reference_gradients(
    network, state: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Gradients of one trial's mean cross-entropy on (x, y), float64."""
    leaves = {name: tensor.clone().requires_grad_(True) for name, tensor in state.items()}
    F.cross_entropy(reference_logits(network, leaves, x), y).backward()
    return {name: leaf.grad for name, leaf in leaves.items()}


class ReferenceTrial:
    """One trial's meta-loop in float64 on the CPU: the batch order of its data seed, a fresh
    AdamW each loop with the decoupled decay of its mode, promotion on strict improvement."""

    def __init__(self, network, spec: TrialSpec, state: dict[str, torch.Tensor]):
        self.network, self.spec = network, spec
        self.lkg = {name: tensor.clone() for name, tensor in state.items()}
        self.lkg_accuracy = -1.0
        hyper = NUMERIC_HYPER
        self.decay = 1.0 - hyper.lr * (hyper.weight_decay if spec.mode == "decay" else 0.0)

    def run_loop(
        self, loop: int, target: AblationTarget | None, data: MnistSplits
    ) -> tuple[float, bool]:
        params = {name: tensor.clone() for name, tensor in self.lkg.items()}
        if target is not None:
            self._ablate(params, target)
        self._train_epoch(params, loop, data)
        with torch.no_grad():
            logits = reference_logits(self.network, params, data.val_x.double())
        val = float((logits.argmax(1) == data.val_y).double().mean() * 100.0)
        promoted = val > self.lkg_accuracy
        if promoted:
            self.lkg, self.lkg_accuracy = params, val
        return val, promoted

    def _ablate(self, params: dict[str, torch.Tensor], target: AblationTarget) -> None:
        linears = self.network.linears
        params[f"{linears[target.linear].name}.weight"][target.neuron, :] = 0.0
        params[f"{linears[target.linear].name}.bias"][target.neuron] = 0.0
        for consumer in target.consumers:
            params[f"{linears[consumer].name}.weight"][:, target.neuron] = 0.0

    def _train_epoch(self, params: dict[str, torch.Tensor], loop: int, data: MnistSplits) -> None:
        hyper, n = NUMERIC_HYPER, data.train_x.shape[0]
        order = torch.randperm(
            n, generator=torch.Generator().manual_seed(loop_seed(self.spec.seeds.data, loop))
        )
        moments = {name: (torch.zeros_like(p), torch.zeros_like(p)) for name, p in params.items()}
        beta1, beta2 = ADAM_BETAS
        for step, first in enumerate(range(0, n, hyper.batch_size), start=1):
            rows = order[first : first + hyper.batch_size]
            grads = reference_gradients(
                self.network, params, data.train_x[rows].double(), data.train_y[rows]
            )
            for name, p in params.items():
                m, v = moments[name]
                g = grads[name]
                p.mul_(self.decay)
                m.mul_(beta1).add_(g, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                denom = (v.sqrt() / math.sqrt(1 - beta2**step)).add_(ADAM_EPS)
                p.addcdiv_(m, denom, value=-hyper.lr / (1 - beta1**step))


def time_architecture(device: torch.device, key: str, steps: int = TIMED_STEPS) -> Timing:
    """Seconds of one sweep loop of ``key`` at the batch size K the sweep takes on ``device``,
    from a loop of ``steps`` timed training steps and a timed validation pass, scaled to 50,000
    and 10,000 images. Where the engine replays steps from a CUDA graph, a loop also pays once
    for its eager first step and the capture: a second loop of twice the steps is timed, and
    the difference is the cost of a step."""
    hyper = Hyperparameters()
    network = build_network("resmlp", parse_key(key))
    trials = sweep_batch_size(network, device)
    rows = steps * hyper.batch_size
    longer = synthetic_splits(device, (2 * rows, min(VAL_ROWS, 2048)))
    data = replace(longer, train_x=longer.train_x[:rows], train_y=longer.train_y[:rows])
    specs = [
        TrialSpec(mode, run_seeds(trial_run_seed(0, 1 + index // 6), mode))
        for index, mode in enumerate(_modes_cycle(trials))
    ]
    engine = Engine(network, specs, hyper, data)
    engine.run_loop(ablate=False)  # warm-up: allocator, kernels, lazy imports
    wall, cpu = time.perf_counter(), time.process_time()
    first = engine.run_loop().train_seconds
    short = engine.run_loop().train_seconds
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    spread = abs(first - short) / max(min(first, short), 1e-9)
    share = cpu / (wall * torch.get_num_threads()) if device.type == "cpu" else None
    short = min(first, short)
    per_step, once, timed = short / steps, 0.0, steps
    if engine.cuda_graph:
        engine.data = longer
        per_step = max(engine.run_loop().train_seconds - short, 0.0) / steps
        once, timed = max(short - per_step * steps, 0.0), 3 * steps
    start = time.perf_counter()
    engine.evaluate(engine.params, data.val_x, data.val_y)
    validate = (time.perf_counter() - start) * VAL_ROWS / data.val_x.shape[0]
    loop = once + per_step * math.ceil(TRAIN_ROWS / hyper.batch_size) + validate
    return Timing(network.arch.flag, trials, timed, per_step, loop, spread, share)


def sweep_batch_size(network, device: torch.device) -> int:
    """K: the trials of one architecture a sweep of the paper grid trains together here."""
    budget = memory_budget(device)
    return min(GRID_TRIALS, batch_limit(network, Hyperparameters().batch_size, budget, device))


def grid_archs() -> list[str]:
    """The paper grid's 98 architectures (the package's reproduction/configurations.txt)."""
    from psa.arch import read_config_file
    from psa.reproduction import PAPER_GRID

    return [arch.flag for arch in read_config_file(PAPER_GRID)]


def project_grid_seconds(device: torch.device, timings: list[Timing]) -> float:
    """Seconds of the paper grid here: the cost model calibrated by the timed architectures,
    summed over the grid's batches."""
    model = calibrated_model(timings)
    total = 0.0
    for key in grid_archs():
        network = build_network("resmlp", parse_key(key))
        batches = math.ceil(GRID_TRIALS / sweep_batch_size(network, device))
        total += batches * model.loop_seconds(network, GRID_TRIALS / batches) * GRID_LOOPS
    return total


def calibrated_model(timings: list[Timing]) -> CostModel:
    measured = [
        {
            "network": build_network("resmlp", parse_key(t.arch)),
            "trials": t.trials,
            "seconds": t.seconds_per_loop,
        }
        for t in timings
    ]
    return CPU_MODEL.calibrated(measured, "these timings")


def _modes_cycle(count: int) -> list[str]:
    from psa.modes import MODES

    return [MODES[index % len(MODES)] for index in range(count)]


def _affine(h: torch.Tensor, state: dict[str, torch.Tensor], name: str) -> torch.Tensor:
    return h @ state[f"{name}.weight"].t() + state[f"{name}.bias"]


def _float64(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().double().cpu() for name, tensor in state.items()}


def _max_error(found: torch.Tensor, expected: torch.Tensor) -> float:
    difference = (found.detach().double().cpu() - expected.detach().double().cpu()).abs()
    return float(difference.max()) if difference.numel() else 0.0


def _nvidia_driver() -> str | None:
    """The NVIDIA kernel driver's version, as its proc file gives it (Linux)."""
    try:
        text = Path("/proc/driver/nvidia/version").read_text()
    except OSError:
        return None
    words = text.split()
    return next((w for w in words if w[:1].isdigit() and "." in w), None)


def _package_version(*names: str) -> str | None:
    for name in names:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None
