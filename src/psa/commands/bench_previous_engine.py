"""The engine as it was before flat trial state (one tensor per layer for parameters, LKG and
Adam moments), frozen so that ``bench --compare-engines`` can time it side by side with
``psa.engine``. Nothing else imports it; it goes once the comparison is recorded.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch.optim.adam import adam

from psa import interrupts
from psa.ablation import AblationTarget, draw_target
from psa.config import Hyperparameters
from psa.data import MnistSplits
from psa.model import Network
from psa.seeds import RunSeeds, loop_seed

ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
EVAL_BYTES = 256 * 2**20  # activation budget of one evaluation chunk
FIRST_LOOP_EACH_SESSION = "each-session"
FIRST_LOOP_OF_RUN = "of-run"
FIRST_LOOP_POLICIES = (FIRST_LOOP_EACH_SESSION, FIRST_LOOP_OF_RUN)


@dataclass(frozen=True)
class TrialSpec:
    mode: str
    seeds: RunSeeds


@dataclass
class LoopReport:
    loop: int  # global loop number, 1-based
    targets: list[AblationTarget | None]
    val_accuracy: list[float]
    lkg_accuracy: list[float]
    promoted: list[bool]
    train_seconds: float  # wall time of the batched epoch (all K trials)


@dataclass
class TrialState:
    lkg_accuracy: float = -1.0
    bounty_loop: int = 0
    history: list[str] = field(default_factory=list)


class Engine:
    def __init__(
        self,
        network: Network,
        trials: list[TrialSpec],
        hyper: Hyperparameters,
        data: MnistSplits,
        loops_completed: int = 0,
        first_loop: str = FIRST_LOOP_EACH_SESSION,
    ):
        if first_loop not in FIRST_LOOP_POLICIES:
            raise ValueError(
                f"unknown first-loop policy {first_loop!r}; choose one of "
                f"{', '.join(FIRST_LOOP_POLICIES)}"
            )
        self.network, self.trials, self.hyper, self.data = network, trials, hyper, data
        self.device = data.train_x.device
        self.loops_completed = loops_completed
        self.first_loop = first_loop
        self.session_loops = 0  # loops this engine has run
        self.group_size, self.data_seeds = _data_groups(trials)
        self.params = init_parameters(network, [t.seeds.init for t in trials], self.device)
        for tensor in self.params.tensors():
            tensor.requires_grad_(True)
        self.lkg = self.params.clone()
        self.state = [TrialState() for _ in trials]
        self._decay = self._decay_factors(
            [hyper.weight_decay if t.mode == "decay" else 0.0 for t in trials]
        )
        self._dropout_trials = [k for k, t in enumerate(trials) if t.mode == "dropout"]
        self._dropout_rows = torch.tensor(self._dropout_trials, device=self.device)

    @property
    def size(self) -> int:
        return len(self.trials)

    def load_lkg(self, trial: int, state_dict: dict[str, torch.Tensor]) -> None:
        """Start trial ``trial`` from saved LKG weights (upstream names); then ``revalidate``."""
        self.lkg.load_state_dict(self.network, trial, state_dict)
        self.params.copy_(self.lkg)

    def revalidate(self, bounty_loops: list[int] | None = None) -> list[float]:
        """Re-evaluate every LKG on the validation set and take that as its accuracy."""
        accuracies = self.evaluate(self.lkg, self.data.val_x, self.data.val_y)
        for k, accuracy in enumerate(accuracies):
            self.state[k].lkg_accuracy = accuracy
            if bounty_loops is not None:
                self.state[k].bounty_loop = bounty_loops[k]
        return accuracies

    def run_loop(self, ablate: bool | None = None) -> LoopReport:
        """One meta-loop for every trial. Whether it ablates follows the engine's ``first_loop``
        policy; ``ablate`` overrides that for this loop (tools that time or check one loop)."""
        loop = self.loops_completed + 1
        if ablate is None:
            ablate = self._ablates(loop)
        self.session_loops += 1
        self.params.copy_(self.lkg)
        targets = self._ablate(loop) if ablate else [None] * self.size
        train_seconds = self._train_epoch(loop)
        val = self.evaluate(self.params, self.data.val_x, self.data.val_y)
        promoted = [v > s.lkg_accuracy for v, s in zip(val, self.state)]
        with interrupts.held():  # never a half-copied LKG or a promotion without its count
            self._promote(promoted, val, loop)
            self.loops_completed = loop
        return LoopReport(
            loop=loop,
            targets=targets,
            val_accuracy=val,
            lkg_accuracy=[s.lkg_accuracy for s in self.state],
            promoted=promoted,
            train_seconds=train_seconds,
        )

    def test_accuracy(self) -> list[float]:
        """Test accuracy of every trial's LKG."""
        return self.evaluate(self.lkg, self.data.test_x, self.data.test_y)

    def _ablates(self, loop: int) -> bool:
        if self.first_loop == FIRST_LOOP_EACH_SESSION:
            return self.session_loops > 0
        return loop > 1

    def _ablate(self, loop: int) -> list[AblationTarget | None]:
        targets = []
        for k, trial in enumerate(self.trials):
            rng = random.Random(loop_seed(trial.seeds.ablation, loop))
            target = draw_target(
                self.network, trial.mode, rng, self.hyper.hidden_targets, self.hyper.full_sampling
            )
            if target is not None:
                apply_ablation(self.params, k, target)
            targets.append(target)
        return targets

    def _train_epoch(self, loop: int) -> float:
        hyper, params = self.hyper, self.params
        optimizer = _AdamW(params.tensors(), hyper.lr)  # fresh each loop; outside the timing
        start = time.perf_counter()
        n = self.data.train_x.shape[0]
        orders = torch.stack(
            [
                torch.randperm(n, generator=torch.Generator().manual_seed(loop_seed(seed, loop)))
                for seed in self.data_seeds
            ]
        ).to(self.device)  # [G, N]: one batch order per data group
        dropout_rngs = self._dropout_generators(loop)
        dropout_buffers: dict[int, list[torch.Tensor]] = {}
        tensors = params.tensors()
        for first in range(0, n, hyper.batch_size):
            index = orders[:, first : first + hyper.batch_size]
            rows = index.reshape(-1)  # one gather per data group: [G, b, 784], [G, b]
            x = self.data.train_x.index_select(0, rows).view(*index.shape, -1)
            y = self.data.train_y.index_select(0, rows).view(index.shape)
            masks = self._dropout_masks(y.shape[1], dropout_rngs, dropout_buffers)
            with self._autocast():
                logits = forward(self.network, params, x, self.group_size, masks)
            targets = y.repeat_interleave(self.group_size, dim=0)
            # Sum over trials of each trial's mean loss: every trial gets its own gradient.
            # Classes on dim 1 ([K, 10, b]): the softmax then runs across the batch, which on
            # a CPU is several times faster than along a dimension of 10.
            loss = (
                F.cross_entropy(logits.float().transpose(1, 2), targets, reduction="sum")
                / y.shape[1]
            )
            optimizer.zero_grad()
            loss.backward()
            if self._decay is not None:  # AdamW's decoupled decay, per trial, before the step
                with torch.no_grad():
                    for tensor, factor in zip(tensors, self._decay):
                        tensor.mul_(factor)
            optimizer.step()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter() - start

    @torch.no_grad()
    def evaluate(self, params: StackedParameters, x: torch.Tensor, y: torch.Tensor) -> list[float]:
        """Accuracy in % of every trial on (x, y); every trial reads the same inputs."""
        widest = max(spec.out_features for spec in self.network.linears)
        chunk = max(256, min(x.shape[0], EVAL_BYTES // (12 * self.size * widest)))
        correct = torch.zeros(self.size, dtype=torch.int64, device=self.device)
        for first in range(0, x.shape[0], chunk):
            with self._autocast():
                logits = forward(self.network, params, x[None, first : first + chunk], self.size)
            correct += (logits.argmax(-1) == y[first : first + chunk]).sum(-1)
        return (correct.double() * 100.0 / x.shape[0]).tolist()

    def _promote(self, promoted: list[bool], val: list[float], loop: int) -> None:
        if not any(promoted):
            return
        mask = torch.tensor(promoted, device=self.device)
        self.lkg.copy_(self.params, mask)
        for k, better in enumerate(promoted):
            if better:
                self.state[k].lkg_accuracy = val[k]
                self.state[k].bounty_loop = loop

    def _decay_factors(self, weight_decays: list[float]) -> list[torch.Tensor] | None:
        """Per-trial AdamW decay factors 1 - lr * wd, shaped to broadcast over each tensor; None
        when every factor is exactly 1 in float32 (then decay cannot change a weight, as with the
        paper's lr 1e-4 and wd 1e-4, and skipping the multiply changes nothing)."""
        factor = torch.tensor(
            [1.0 - self.hyper.lr * wd for wd in weight_decays], dtype=torch.float32
        )
        if bool((factor == 1.0).all()):
            return None
        factor = factor.to(self.device)
        return [factor.view(-1, *([1] * (t.dim() - 1))) for t in self.params.tensors()]

    def _dropout_generators(self, loop: int) -> list[torch.Generator]:
        return [
            torch.Generator(device=self.device).manual_seed(
                loop_seed(self.trials[k].seeds.ablation ^ 0x5EED, loop)
            )
            for k in self._dropout_trials
        ]

    def _dropout_masks(
        self, batch: int, rngs: list[torch.Generator], buffers: dict[int, list[torch.Tensor]]
    ) -> list[torch.Tensor] | None:
        """Per dropout site, a [K, batch, width] scale: 0 or 1/(1-p) for dropout-mode trials, 1
        elsewhere. Each dropout trial draws from its own generator, whatever else is batched.

        The scales live in buffers kept for the epoch (``buffers``, by batch size): only the
        dropout trials' rows are rewritten each step, the ones of every other trial stay."""
        if not rngs:
            return None
        p = self.hyper.dropout
        widths = self.network.dropout_sites
        draws = torch.stack(
            [torch.rand(batch, sum(widths), generator=rng, device=self.device) for rng in rngs]
        )
        scale = (draws >= p).float().div_(1.0 - p)  # [dropout trials, batch, units]
        if batch not in buffers:
            buffers[batch] = [torch.ones(self.size, batch, w, device=self.device) for w in widths]
        rows = self._dropout_rows
        for site, part in zip(buffers[batch], torch.split(scale, list(widths), dim=2)):
            site[rows] = part
        return buffers[batch]

    def _autocast(self):
        if self.hyper.precision == "bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()


class _AdamW:
    """A fresh AdamW without weight decay (the engine decays per trial), stepped through torch's
    functional ``adam``: the update ``torch.optim.AdamW`` makes, bit for bit, without building a
    ``torch.optim.Optimizer``, whose first use imports torch._dynamo and sympy (2-3 s of every
    command's start-up, over 10 s where no bytecode is cached). The fused kernel (CPU, CUDA)
    does one pass over each tensor instead of several; MPS takes the foreach one."""

    def __init__(self, tensors: list[torch.Tensor], lr: float, fused: bool | None = None):
        self.tensors, self.lr = tensors, lr
        device = tensors[0].device
        self.fused = device.type in ("cpu", "cuda") if fused is None else fused
        # Where and in which dtype torch.optim keeps the step counts of these kernels.
        step_device = device if self.fused else torch.device("cpu")
        self.steps = [torch.zeros((), dtype=torch.float32, device=step_device) for _ in tensors]
        self.exp_avgs = [torch.zeros_like(t, memory_format=torch.preserve_format) for t in tensors]
        self.exp_avg_sqs = [
            torch.zeros_like(t, memory_format=torch.preserve_format) for t in tensors
        ]

    def zero_grad(self) -> None:
        for tensor in self.tensors:
            tensor.grad = None

    @torch.no_grad()
    def step(self) -> None:
        adam(
            self.tensors,
            [tensor.grad for tensor in self.tensors],
            self.exp_avgs,
            self.exp_avg_sqs,
            [],
            self.steps,
            foreach=None if self.fused else True,
            fused=self.fused,
            decoupled_weight_decay=True,
            amsgrad=False,
            beta1=ADAM_BETAS[0],
            beta2=ADAM_BETAS[1],
            lr=self.lr,
            weight_decay=0.0,
            eps=ADAM_EPS,
            maximize=False,
        )


def _data_groups(trials: list[TrialSpec]) -> tuple[int, list[int]]:
    """(group size, data seed per group) when trials come in equal consecutive runs of one data
    seed; otherwise every trial is its own group (still correct, one gather per trial)."""
    seeds = [t.seeds.data for t in trials]
    runs: list[list[int]] = []
    for seed in seeds:
        if runs and runs[-1][0] == seed:
            runs[-1].append(seed)
        else:
            runs.append([seed])
    sizes = {len(run) for run in runs}
    if len(sizes) == 1 and len({run[0] for run in runs}) == len(runs):
        return sizes.pop(), [run[0] for run in runs]
    return 1, seeds


class StackedParameters:
    """Weights and biases of every Linear, in compute order, stacked on a leading trial axis.

    Weights are kept transposed, [K, in, out], so that forward and backward run as batched
    matmuls without copying a transposed weight gradient every step. ``state_dict`` and
    ``load_state_dict`` convert to and from the usual [out, in] layout.
    """

    def __init__(self, weights: list[torch.Tensor], biases: list[torch.Tensor]):
        self.weights = weights
        self.biases = biases

    @property
    def trials(self) -> int:
        return self.weights[0].shape[0]

    def tensors(self) -> list[torch.Tensor]:
        return [t for pair in zip(self.weights, self.biases) for t in pair]

    def clone(self) -> StackedParameters:
        return StackedParameters(
            [w.detach().clone() for w in self.weights], [b.detach().clone() for b in self.biases]
        )

    def copy_(self, source: StackedParameters, trials: torch.Tensor | None = None) -> None:
        """Copy ``source`` in: every trial, or those where the bool mask ``trials`` is set."""
        with torch.no_grad():
            for dst, src in zip(self.tensors(), source.tensors()):
                if trials is None:
                    dst.copy_(src)
                else:
                    dst[trials] = src[trials]

    def state_dict(self, network: Network, trial: int) -> dict[str, torch.Tensor]:
        """One trial's parameters under upstream state-dict names (CPU copies)."""
        state = {}
        for spec, w, b in zip(network.linears, self.weights, self.biases):
            state[f"{spec.name}.weight"] = w[trial].detach().t().cpu().contiguous()
            state[f"{spec.name}.bias"] = b[trial].detach().cpu().clone()
        return state

    def load_state_dict(self, network: Network, trial: int, state: dict[str, torch.Tensor]):
        """Put an upstream-named state dict into one trial's slice; shapes must match exactly."""
        expected = {f"{s.name}.{part}" for s in network.linears for part in ("weight", "bias")}
        if set(state) != expected:
            missing, unexpected = expected - set(state), set(state) - expected
            raise ValueError(
                f"state dict does not fit {network.model} {network.arch.flag}: "
                f"{len(missing)} missing and {len(unexpected)} unexpected tensors"
            )
        with torch.no_grad():
            for spec, w, b in zip(network.linears, self.weights, self.biases):
                for target, tensor in (
                    (w[trial].t(), state[f"{spec.name}.weight"]),
                    (b[trial], state[f"{spec.name}.bias"]),
                ):
                    if tuple(tensor.shape) != tuple(target.shape):
                        raise ValueError(
                            f"tensor {spec.name} has shape {tuple(tensor.shape)}, "
                            f"{network.model} {network.arch.flag} needs {tuple(target.shape)}"
                        )
                    target.copy_(tensor)


def init_parameters(
    network: Network, init_seeds: list[int], device: torch.device | str = "cpu"
) -> StackedParameters:
    """PyTorch's default Linear init, U(-1/sqrt(in), 1/sqrt(in)) for weights and biases, per trial.

    Drawn on the CPU from each trial's own generator, so a trial's weights depend only on its
    seed, not on the device or on which other trials share the batch.
    """
    per_trial = []
    for seed in init_seeds:
        generator = torch.Generator().manual_seed(seed)
        tensors = []
        for spec in network.linears:
            bound = 1.0 / math.sqrt(spec.in_features)
            w = torch.empty(spec.out_features, spec.in_features).uniform_(
                -bound, bound, generator=generator
            )
            b = torch.empty(spec.out_features).uniform_(-bound, bound, generator=generator)
            tensors.append((w.t(), b))
        per_trial.append(tensors)
    weights, biases = [], []
    for index in range(len(network.linears)):
        weights.append(torch.stack([t[index][0] for t in per_trial]).to(device))
        biases.append(torch.stack([t[index][1] for t in per_trial]).to(device))
    return StackedParameters(weights, biases)


def forward(
    network: Network,
    params: StackedParameters,
    x: torch.Tensor,
    group_size: int,
    dropout_masks: list[torch.Tensor] | None = None,
) -> torch.Tensor:
    """Logits [K, B, 10] for inputs x [G, B, 784] shared by consecutive groups of trials.

    Trials g*group_size … (g+1)*group_size-1 see input group g; their first Linear runs as one
    GEMM against the group's concatenated weights, so a shared batch is read once.
    ``dropout_masks``: one [K, B, width] scale tensor per dropout site (``dropout_sites``), or
    None for no dropout.
    """
    # Activations of a batch of trials outgrow the caches, so every elementwise pass costs a trip
    # to memory: ReLUs run in place on fresh GEMM outputs, and the residual add rides in the GEMM.
    h = None  # [K, B, width] once past the first Linear
    for site, step in enumerate(network.steps):
        first = step.linears[0]
        if step.kind == "block":
            if h is None:  # a block straight on the 784 inputs: every trial needs its own copy
                h = x.repeat_interleave(group_size, dim=0)
            inner = torch.relu_(_linear(h, params.weights[first], params.biases[first]))
            inner = _dropout(inner, dropout_masks, site)
            w2, b2 = params.weights[step.linears[1]], params.biases[step.linears[1]]
            h = torch.relu_(torch.baddbmm(h, inner, w2).add_(b2.unsqueeze(1)))  # h + L2(inner)
        else:
            w, b = params.weights[first], params.biases[first]
            pre = _grouped_linear(x, w, b, group_size) if h is None else _linear(h, w, b)
            if step.kind == "final":
                return pre
            h = _dropout(torch.relu_(pre), dropout_masks, site)
    raise ValueError(f"architecture {network.arch.flag} has no final layer")


def _linear(h: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    # h [K, B, in], w [K, in, out], b [K, out] -> [K, B, out]
    return torch.baddbmm(b.unsqueeze(1), h, w)


def _grouped_linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, group_size: int):
    # x [G, B, in] with trials grouped G x group_size: one [B, in] x [in, group_size*out] GEMM
    # per group, then back to the trial axis [K, B, out].
    groups, batch, inputs = x.shape
    out = w.shape[2]
    if group_size == 1:
        return _linear(x, w, b)
    # [G*gs, in, out] -> [G, in, gs*out]: each group's weights side by side
    w_cat = w.reshape(groups, group_size, inputs, out).permute(0, 2, 1, 3)
    w_cat = w_cat.reshape(groups, inputs, group_size * out)
    b_cat = b.reshape(groups, 1, group_size * out)
    y = torch.baddbmm(b_cat, x, w_cat)  # [G, B, group_size*out]
    y = y.reshape(groups, batch, group_size, out).transpose(1, 2)
    return y.reshape(groups * group_size, batch, out)


def _dropout(h: torch.Tensor, masks: list[torch.Tensor] | None, site: int) -> torch.Tensor:
    return h if masks is None else h * masks[site]


def apply_ablation(params: StackedParameters, trial: int, target: AblationTarget) -> None:
    """Zero ``target`` in trial ``trial`` of ``params`` (in place)."""
    with torch.no_grad():
        # Weights are stored [K, in, out]: a neuron's row is a column here, and vice versa.
        params.weights[target.linear][trial, :, target.neuron] = 0.0
        params.biases[target.linear][trial, target.neuron] = 0.0
        for consumer in target.consumers:
            params.weights[consumer][trial, target.neuron, :] = 0.0
