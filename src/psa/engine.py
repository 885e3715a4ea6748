"""The PSA meta-loop over K trials of one architecture, trained in lockstep.

Each trial has its own LKG weights, LKG accuracy (its bounty), optimizer state, ablation draws and
mode; trials that share a data-order seed (the modes of one trial index) share every batch. One
loop, for every trial at once:

    restore LKG -> ablate (ablative modes) -> train one epoch with a fresh AdamW
    -> validate -> promote to LKG on strict improvement

A single ``train`` run is this engine with K = 1.

Every trial's parameters, LKG and AdamW moments live in flat tensors (``StackedParameters``).
An epoch trains through one autograd leaf per layer's weight and bias, each a view aliasing the
flat parameters, made once: a step takes no op to cut the layers out, and its gradients go to
one fused AdamW step as the backward ops made them.

Which loop trains the LKG unablated is the engine's ``first_loop`` policy, chosen by its caller:

- ``FIRST_LOOP_EACH_SESSION`` (``train``, upstream's behaviour): the first loop an engine runs is
  unablated, whatever its number, so every resumed session starts by training its LKG as saved.
- ``FIRST_LOOP_OF_RUN`` (``sweep``): only loop 1 is unablated; a resumed batch ablates its first
  loop as an uninterrupted run would, so a resumed sweep equals one that was never stopped.
"""

from __future__ import annotations

import contextlib
import random
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch.optim.adam import adam

from psa import interrupts
from psa.ablation import AblationTarget, apply_ablation, draw_target
from psa.config import Hyperparameters
from psa.cuda_graph import GraphedStep
from psa.data import MnistSplits
from psa.model import Network, StackedParameters, forward, init_parameters, layer_views
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
        cuda_graph: bool = True,
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
        # On CUDA, full-batch steps replay a graph captured each loop (psa.cuda_graph): the same
        # bits, without launching each of a step's kernels from Python.
        self.cuda_graph = cuda_graph and self.device.type == "cuda"
        self.session_loops = 0  # loops this engine has run
        self.group_size, self.data_seeds = _data_groups(trials)
        self.params = init_parameters(network, [t.seeds.init for t in trials], self.device)
        self.lkg = self.params.clone()
        # AdamW's moments live as long as the engine and are zeroed at the start of each loop:
        # a fresh optimizer every loop, without allocating one.
        self._optimizer = _AdamW.over(network, self.params.flat, self.size, hyper.lr)
        self.state = [TrialState() for _ in trials]
        self._decay = self._decay_factors(
            [hyper.weight_decay if t.mode == "decay" else 0.0 for t in trials]
        )
        self._dropout_trials = [k for k, t in enumerate(trials) if t.mode == "dropout"]
        self._dropout_rows = _rows(self._dropout_trials, self.device)
        self._dropout_buffers: dict[int, _DropoutBuffers] = {}
        self._inverses: dict[int, torch.Tensor] = {}

    @property
    def size(self) -> int:
        return len(self.trials)

    def load_lkg(self, trial: int, state_dict: dict[str, torch.Tensor]) -> None:
        """Start trial ``trial`` from saved LKG weights (upstream names); then ``revalidate``."""
        self.lkg.load_state_dict(self.network, trial, state_dict)
        self.params.copy_(self.lkg)

    def lkg_rows(self) -> torch.Tensor:
        """Every trial's LKG as one flat CPU tensor, laid out by ``layout_description``: a copy,
        which later loops leave as it is (a sweep may write it while the next loop trains)."""
        return self.lkg.flat.detach().to("cpu", copy=True)

    def load_lkg_rows(self, rows: torch.Tensor) -> None:
        """Start every trial from ``lkg_rows`` saved earlier; then ``revalidate``."""
        if rows.numel() != self.lkg.flat.numel():
            raise ValueError(
                f"saved LKG rows of shape {tuple(rows.shape)} do not fit "
                f"{self.size} trials of {self.network.arch.flag}"
            )
        with torch.no_grad():
            self.lkg.flat.copy_(rows)
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
        hyper = self.hyper
        self._optimizer.reset()
        start = time.perf_counter()
        n = self.data.train_x.shape[0]
        orders = torch.stack(
            [
                torch.randperm(n, generator=torch.Generator().manual_seed(loop_seed(seed, loop)))
                for seed in self.data_seeds
            ]
        ).to(self.device)  # [G, N]: one batch order per data group
        dropout_rngs = self._dropout_generators(loop)
        # The parameters as autograd sees them: a leaf per layer's tensor, aliasing ``flat``.
        with self.params.as_leaves() as leaves:

            def step(index: torch.Tensor) -> None:  # index [G, b]: one batch of each data group
                rows = index.reshape(-1)  # one gather per data group: [G, b, 784], [G, b]
                x = self.data.train_x.index_select(0, rows).view(*index.shape, -1)
                y = self.data.train_y.index_select(0, rows).view(index.shape)
                masks = self._dropout_masks(y.shape[1], dropout_rngs, self._dropout_buffers)
                self._train_step(leaves, x, y, masks)

            if self.cuda_graph:
                step = GraphedStep(
                    step, (len(self.data_seeds), hyper.batch_size), dropout_rngs, self.device
                )
            for first in range(0, n, hyper.batch_size):
                step(orders[:, first : first + hyper.batch_size])
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter() - start

    def _train_step(
        self, leaves: list[torch.Tensor], x, y, masks: list[torch.Tensor] | None
    ) -> None:
        with self._autocast():
            logits = forward(self.network, self.params, x, self.group_size, masks)
        if logits.dtype != torch.float32:
            logits = logits.float()
        targets = y.repeat_interleave(self.group_size, dim=0)
        # Sum over trials of each trial's mean loss: every trial gets its own gradient.
        # Classes on dim 1 ([K, 10, b]): the softmax then runs across the batch, which on a CPU
        # is several times faster than along a dimension of 10 (bench: [K*b, 10] costs [4*17]
        # at K=60 about 5 ms more a step).
        loss = F.cross_entropy(logits.transpose(1, 2), targets, reduction="sum")
        # Each layer's gradient as its backward op made it: nothing to zero, accumulate or copy.
        # The mean's 1/b enters as the loss's gradient (what dividing it would pass back), and
        # the fused step reads a gradient's memory as contiguous: the first layer's, through the
        # grouped GEMM of a single data group, can come back as a permuted view.
        grads = [
            g if g.is_contiguous() else g.contiguous()
            for g in torch.autograd.grad(loss, leaves, self._inverse(y.shape[1]))
        ]
        with torch.no_grad():
            if self._decay is not None:  # AdamW's decoupled decay, per trial, before the step
                for block in self.params.blocks():
                    block.mul_(self._decay)
            self._optimizer.step(grads)

    def _inverse(self, batch: int) -> torch.Tensor:
        """1/batch as float32 rounds it, made once per batch size."""
        if batch not in self._inverses:
            self._inverses[batch] = torch.ones((), device=self.device).div_(batch)
        return self._inverses[batch]

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
        mask = torch.tensor(promoted).to(self.device, non_blocking=True)
        self.lkg.copy_(self.params, mask)
        for k, better in enumerate(promoted):
            if better:
                self.state[k].lkg_accuracy = val[k]
                self.state[k].bounty_loop = loop

    def _decay_factors(self, weight_decays: list[float]) -> torch.Tensor | None:
        """Per-trial AdamW decay factors 1 - lr * wd, shaped [1, K, 1] for ``blocks``; None when
        every factor is exactly 1 in float32 (then decay cannot change a weight, as with the
        paper's lr 1e-4 and wd 1e-4, and skipping the multiply changes nothing)."""
        factor = torch.tensor(
            [1.0 - self.hyper.lr * wd for wd in weight_decays], dtype=torch.float32
        )
        if bool((factor == 1.0).all()):
            return None
        return factor.to(self.device).view(1, -1, 1)

    def _dropout_generators(self, loop: int) -> list[torch.Generator]:
        return [
            torch.Generator(device=self.device).manual_seed(
                loop_seed(self.trials[k].seeds.ablation ^ 0x5EED, loop)
            )
            for k in self._dropout_trials
        ]

    def _dropout_masks(
        self, batch: int, rngs: list[torch.Generator], buffers: dict[int, _DropoutBuffers]
    ) -> list[torch.Tensor] | None:
        """Per dropout site, a [K, batch, width] scale: 0 or 1/(1-p) for dropout-mode trials, 1
        elsewhere. Each dropout trial draws from its own generator, whatever else is batched.

        The scales of all sites are views of one buffer per batch size, kept for the engine's
        life (``buffers``): each step draws the dropout trials' units and turns them into scales
        in the trials' rows; the other trials' rows stay 1."""
        if not rngs:
            return None
        if batch not in buffers:
            buffers[batch] = _DropoutBuffers(
                self.size,
                self._dropout_rows,
                batch,
                self.network.dropout_sites,
                self.hyper.dropout,
                self.device,
            )
        buffer = buffers[batch]
        for draw, rng in zip(buffer.draws_by_trial, rngs):
            draw.uniform_(generator=rng)  # what torch.rand draws, without its resize
        buffer.fill()
        return buffer.sites

    def _autocast(self):
        if self.hyper.precision == "bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()


class _AdamW:
    """AdamW without weight decay (the engine decays per trial), stepped through torch's
    functional ``adam``: the update ``torch.optim.AdamW`` makes, bit for bit, without building a
    ``torch.optim.Optimizer``, whose first use imports torch._dynamo and sympy (2-3 s of every
    command's start-up, over 10 s where no bytecode is cached). The fused kernel (CPU, CUDA)
    does one pass over each tensor instead of several; MPS takes the foreach one. ``reset``
    makes it fresh again (moments and step counts zeroed in place)."""

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

    @classmethod
    def over(cls, network: Network, flat: torch.Tensor, trials: int, lr: float) -> _AdamW:
        """One fused AdamW over every layer of a flat parameter tensor, stepping each layer's
        view as it stepped the layer's own tensor (the fused kernel rounds the last elements
        of a tensor apart from the rest, so one tensor for all would change the numbers); its
        moments and step counts are views of flat tensors too, each zeroed in one op."""
        optimizer = cls.__new__(cls)
        optimizer.lr, optimizer.fused = lr, flat.device.type in ("cpu", "cuda")
        step_device = flat.device if optimizer.fused else torch.device("cpu")
        optimizer._flat = [torch.zeros_like(flat), torch.zeros_like(flat)]
        views = [layer_views(network, tensor, trials) for tensor in (flat, *optimizer._flat)]
        optimizer.tensors, optimizer.exp_avgs, optimizer.exp_avg_sqs = (
            [t for pair in zip(*view) for t in pair] for view in views
        )
        steps = torch.zeros(len(optimizer.tensors), device=step_device)
        optimizer._flat.append(steps)
        optimizer._one = torch.ones((), device=step_device)  # an int would be converted each step
        optimizer.steps = list(steps.unbind(0))
        return optimizer

    def reset(self) -> None:
        flat = getattr(self, "_flat", None)
        for state in flat or (*self.steps, *self.exp_avgs, *self.exp_avg_sqs):
            state.zero_()

    def zero_grad(self) -> None:
        for tensor in self.tensors:
            tensor.grad = None

    @torch.no_grad()
    def step(self, grads: list[torch.Tensor] | None = None) -> None:
        """One step with ``grads`` (default: the tensors' own ``.grad``)."""
        if getattr(self, "_flat", None) and self.fused:
            # What ``adam`` below runs, without its per-tensor step increments: the step
            # counts are one tensor, counted up in one op.
            self._flat[2].add_(self._one)
            torch._fused_adamw_(
                self.tensors,
                grads,
                self.exp_avgs,
                self.exp_avg_sqs,
                [],
                self.steps,
                amsgrad=False,
                lr=self.lr,
                beta1=ADAM_BETAS[0],
                beta2=ADAM_BETAS[1],
                weight_decay=0.0,
                eps=ADAM_EPS,
                maximize=False,
                grad_scale=None,
                found_inf=None,
            )
            return
        adam(
            self.tensors,
            [tensor.grad for tensor in self.tensors] if grads is None else grads,
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


class _DropoutBuffers:
    """The dropout scales of one batch size, each site's a contiguous [K, batch, width] view of
    one buffer (1 outside the dropout trials' ``rows``; a strided mask would slow every multiply
    by it about 3x), and the dropout trials' draws [D, batch, units], laid out as each trial's
    generator draws them. Every view a step writes through is made here, once: a step's ops are
    the draws, one comparison and one ``where`` (where every site has one width, as in every
    grid architecture, and the rows are evenly spaced, as the modes of a grid batch are)."""

    def __init__(self, trials, rows, batch, widths, p: float, device: torch.device):
        units = sum(widths)
        self.rows = rows
        self.buffer = torch.ones(trials * batch * units, device=device)
        self.sites, offset = [], 0
        for width in widths:
            size = trials * batch * width
            self.sites.append(self.buffer[offset : offset + size].view(trials, batch, width))
            offset += size
        self.widths = widths
        drawing = len(range(trials)[rows]) if isinstance(rows, slice) else len(rows)
        self.draws = torch.empty(drawing, batch, units, device=device)
        self.draws_by_trial = self.draws.unbind(0)
        self.kept = torch.ones((), device=device).div_(1.0 - p)  # 1/(1-p) as float32 rounds it
        self.dropped = torch.zeros((), device=device)
        self.p = torch.tensor(p, device=device)  # a Python float would be converted every step
        self.survives = torch.empty_like(self.draws, dtype=torch.bool)
        self.by_site = None
        if len(set(widths)) == 1 and isinstance(rows, slice):
            # draws [D, b, sites, width] land in the rows of [sites, K, b, width] in one op
            sites, width = len(widths), widths[0]
            self.by_site = self.buffer.view(sites, trials, batch, width)[:, rows]
            survives = self.survives.view(drawing, batch, sites, width)
            self.survives_by_site = survives.permute(2, 0, 1, 3)

    def fill(self) -> None:
        """Turn the draws into the scales of the dropout trials' rows."""
        torch.ge(self.draws, self.p, out=self.survives)
        if self.by_site is not None:
            torch.where(self.survives_by_site, self.kept, self.dropped, out=self.by_site)
            return
        scales = torch.where(self.survives, self.kept, self.dropped)  # [D, b, units]
        for site, part in zip(self.sites, scales.split(list(self.widths), dim=2)):
            site[self.rows] = part


def _rows(trials: list[int], device: torch.device) -> slice | torch.Tensor:
    """Trial indices as a slice where they are evenly spaced (the rows are then a view)."""
    step = trials[1] - trials[0] if len(trials) > 1 else 1
    if trials and step > 0 and trials == list(range(trials[0], trials[-1] + 1, step)):
        return slice(trials[0], trials[-1] + 1, step)
    return torch.tensor(trials, device=device, dtype=torch.long)


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
