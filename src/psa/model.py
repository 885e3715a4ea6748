"""ResMLP and plain MLP as parameter sets stacked on a leading trial axis.

K trials of one architecture live in one set of tensors: every Linear is a weight [K, in, out]
and a bias [K, out], so a forward pass is a chain of batched matmuls. Tensor names follow the
upstream state dicts (``layer_stack.{i}.weight``,
``layer_stack.{i}.blocks.{j}.layers.{0|3}.weight``), so one trial's slice converts to an
upstream-compatible state dict.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from psa.arch import CLASSES, INPUT_FEATURES, Arch
from psa.config import MODELS


@dataclass(frozen=True)
class LinearSpec:
    name: str  # upstream state-dict prefix of this Linear
    in_features: int
    out_features: int
    role: str  # projection | transition | block_l1 | block_l2 | hidden | final


@dataclass(frozen=True)
class Step:
    """One step of the forward pass, over indices into ``Network.linears``.

    ``dense``: h = dropout(relu(L(h))).  ``block``: h = relu(h + L2(dropout(relu(L1(h))))).
    ``final``: logits = L(h).
    """

    kind: str
    linears: tuple[int, ...]


@dataclass(frozen=True)
class Network:
    model: str
    arch: Arch
    linears: tuple[LinearSpec, ...]  # compute order
    steps: tuple[Step, ...]

    @property
    def dropout_sites(self) -> tuple[int, ...]:
        """Widths of the activations that dropout acts on, in forward order."""
        widths = []
        for step in self.steps:
            if step.kind in ("dense", "block"):
                widths.append(self.linears[step.linears[0]].out_features)
        return tuple(widths)

    def parameter_count(self) -> int:
        return sum(s.out_features * (s.in_features + 1) for s in self.linears)


def build_network(model: str, arch: Arch) -> Network:
    if model == "resmlp":
        return _resmlp(arch)
    if model == "mlp":
        return _mlp(arch)
    raise ValueError(f"unknown model {model!r}; choose one of {', '.join(MODELS)}")


def _resmlp(arch: Arch) -> Network:
    # Mirrors upstream's nn.Sequential indices: a transition is Linear, ReLU, Dropout (3 slots),
    # a residual stack one slot; block layers are Linear(0), ReLU(1), Dropout(2), Linear(3).
    linears: list[LinearSpec] = []
    steps: list[Step] = []
    slot, current = 0, INPUT_FEATURES
    for depth, width in arch.stacks:
        if width != current:
            role = "projection" if not linears else "transition"
            linears.append(LinearSpec(f"layer_stack.{slot}", current, width, role))
            steps.append(Step("dense", (len(linears) - 1,)))
            slot += 3
        for block in range(depth):
            prefix = f"layer_stack.{slot}.blocks.{block}.layers"
            linears.append(LinearSpec(f"{prefix}.0", width, width, "block_l1"))
            linears.append(LinearSpec(f"{prefix}.3", width, width, "block_l2"))
            steps.append(Step("block", (len(linears) - 2, len(linears) - 1)))
        slot += 1
        current = width
    linears.append(LinearSpec(f"layer_stack.{slot}", current, CLASSES, "final"))
    steps.append(Step("final", (len(linears) - 1,)))
    return Network("resmlp", arch, tuple(linears), tuple(steps))


def _mlp(arch: Arch) -> Network:
    # The first paper's plain MLP: per hidden layer Linear, ReLU, Dropout; then Linear to 10.
    linears: list[LinearSpec] = []
    steps: list[Step] = []
    current = INPUT_FEATURES
    for depth, width in arch.stacks:
        for _ in range(depth):
            linears.append(LinearSpec(f"layers.{3 * len(linears)}", current, width, "hidden"))
            steps.append(Step("dense", (len(linears) - 1,)))
            current = width
    linears.append(LinearSpec(f"layers.{3 * len(linears)}", current, CLASSES, "final"))
    steps.append(Step("final", (len(linears) - 1,)))
    return Network("mlp", arch, tuple(linears), tuple(steps))


@dataclass(frozen=True)
class LayerGroup:
    """A run of consecutive Linears of one shape, stored together for all K trials: their
    weights [count, K, in, out] from ``weight_offset``, then their biases [count, K, out]
    (offsets per trial: multiply by K)."""

    first: int  # index of its first Linear in compute order
    count: int
    in_features: int
    out_features: int
    weight_offset: int

    @property
    def bias_offset(self) -> int:
        return self.weight_offset + self.count * self.in_features * self.out_features

    @property
    def end(self) -> int:
        return self.bias_offset + self.count * self.out_features


def layer_groups(network: Network) -> tuple[LayerGroup, ...]:
    """How the Linears lie in the flat parameter tensor (offsets per trial)."""
    groups: list[LayerGroup] = []
    for index, spec in enumerate(network.linears):
        last = groups[-1] if groups else None
        if last and (last.in_features, last.out_features) == (spec.in_features, spec.out_features):
            groups[-1] = LayerGroup(
                last.first, last.count + 1, last.in_features, last.out_features, last.weight_offset
            )
        else:
            offset = last.end if last else 0
            groups.append(LayerGroup(index, 1, spec.in_features, spec.out_features, offset))
    return tuple(groups)


def layout_description(network: Network) -> list[list]:
    """The flat layout as plain data, per Linear: its upstream name, in and out features, and
    where its weight [K, in, out] and its bias [K, out] start, in units of K floats."""
    rows = []
    for group in layer_groups(network):
        size = group.in_features * group.out_features
        for i in range(group.count):
            rows.append(
                [
                    network.linears[group.first + i].name,
                    group.in_features,
                    group.out_features,
                    group.weight_offset + i * size,
                    group.bias_offset + i * group.out_features,
                ]
            )
    return rows


def trial_state_dict(layout: list[list], flat: torch.Tensor, trial: int) -> dict[str, torch.Tensor]:
    """One trial's parameters under upstream names ([out, in] weights) from a saved flat tensor
    of K trials and the ``layout_description`` saved with it."""
    trials = flat.numel() // sum(i * o + o for _, i, o, _, _ in layout)
    state = {}
    for name, inputs, outputs, weight, bias in layout:
        w = flat[weight * trials : (weight + inputs * outputs) * trials]
        state[f"{name}.weight"] = w.view(trials, inputs, outputs)[trial].t().contiguous()
        b = flat[bias * trials : (bias + outputs) * trials]
        state[f"{name}.bias"] = b.view(trials, outputs)[trial].clone()
    return state


def layer_views(
    network: Network, flat: torch.Tensor, trials: int
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Every Linear's weight [K, in, out] and bias [K, 1, out] as contiguous views of the 1-D
    ``flat``, in compute order: one split, and a view and an unbind per group of same-shaped
    Linears. Each view is laid out as the separate tensor of that layer would be."""
    groups = layer_groups(network)
    sizes = []
    for group in groups:
        sizes += [
            (group.bias_offset - group.weight_offset) * trials,
            (group.end - group.bias_offset) * trials,
        ]
    parts = flat.split(sizes)
    weights, biases = [], []
    for group, w, b in zip(groups, parts[0::2], parts[1::2]):
        weights += w.view(group.count, trials, group.in_features, group.out_features).unbind(0)
        biases += b.view(group.count, trials, 1, group.out_features).unbind(0)
    return weights, biases


class StackedParameters:
    """Weights and biases of every Linear, stacked on a leading trial axis, all in one 1-D
    tensor ``flat`` (K x ``parameter_count()`` floats, laid out by ``layer_groups``).

    ``weights`` ([K, in, out]: kept transposed, so that forward and backward run as batched
    matmuls without copying a transposed weight gradient every step), ``biases`` ([K, out]) and
    ``bias_rows`` ([K, 1, out]) are contiguous views of ``flat``, one per Linear, laid out as
    separate tensors would be (so a fused optimizer step over them rounds as it did over
    separate tensors). ``as_leaves`` makes them autograd leaves aliasing ``flat`` while a
    model trains. ``state_dict`` and ``load_state_dict`` convert to and from the usual [out, in]
    layout under upstream names.
    """

    def __init__(self, network: Network, flat: torch.Tensor, trials: int):
        self.network, self.flat, self.trials = network, flat, trials
        self.weights, self.bias_rows = layer_views(network, flat, trials)
        self.biases = [b.squeeze(1) for b in self.bias_rows]

    @contextlib.contextmanager
    def as_leaves(self) -> Iterator[list[torch.Tensor]]:
        """Within this context ``weights`` and ``bias_rows`` are autograd leaves, one per tensor,
        yielded in ``tensors`` order for ``torch.autograd.grad``. Each is a detached view of
        ``flat``: it aliases its memory, so in-place updates of ``flat`` reach it, and made once
        it costs no view op per step, nor its gradient a copy back into a flat tensor."""
        weights, bias_rows = self.weights, self.bias_rows
        self.weights = [w.detach().requires_grad_() for w in weights]
        self.bias_rows = [b.detach().requires_grad_() for b in bias_rows]
        try:
            yield self.tensors()
        finally:
            self.weights, self.bias_rows = weights, bias_rows

    def tensors(self) -> list[torch.Tensor]:
        return [t for pair in zip(self.weights, self.bias_rows) for t in pair]

    def blocks(self, flat: torch.Tensor | None = None) -> list[torch.Tensor]:
        """``flat`` (default: this one's) as one [count, K, ...] view per group's weights and
        biases: per-trial operations over all parameters take an op per block."""
        flat = self.flat if flat is None else flat
        views = []
        for group in layer_groups(self.network):
            weights = flat[group.weight_offset * self.trials : group.bias_offset * self.trials]
            biases = flat[group.bias_offset * self.trials : group.end * self.trials]
            views.append(weights.view(group.count, self.trials, -1))
            views.append(biases.view(group.count, self.trials, -1))
        return views

    def clone(self) -> StackedParameters:
        return StackedParameters(self.network, self.flat.detach().clone(), self.trials)

    def copy_(self, source: StackedParameters, trials: torch.Tensor | None = None) -> None:
        """Copy ``source`` in: every trial, or those where the bool mask ``trials`` is set (a
        ``where`` per block on the device: no host sync)."""
        with torch.no_grad():
            if trials is None:
                self.flat.copy_(source.flat)
                return
            mask = trials.view(1, -1, 1)
            for mine, theirs in zip(self.blocks(), source.blocks()):
                torch.where(mask, theirs, mine, out=mine)

    def state_dict(self, network: Network, trial: int) -> dict[str, torch.Tensor]:
        """One trial's parameters under upstream state-dict names (CPU copies)."""
        state = {}
        for spec, w, b in zip(network.linears, self.weights, self.biases):
            state[f"{spec.name}.weight"] = w[trial].detach().t().cpu().contiguous()
            state[f"{spec.name}.bias"] = b[trial].detach().cpu().clone()
        return state

    def load_state_dict(self, network: Network, trial: int, state: dict[str, torch.Tensor]):
        """Put an upstream-named state dict into one trial's slice; shapes must match exactly."""
        expected = set(upstream_shapes(network))
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


def upstream_shapes(network: Network) -> dict[str, tuple[int, ...]]:
    """The shape of each tensor of a trial's state dict under upstream's names (nn.Linear's
    weight is out x in)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for spec in network.linears:
        shapes[f"{spec.name}.weight"] = (spec.out_features, spec.in_features)
        shapes[f"{spec.name}.bias"] = (spec.out_features,)
    return shapes


def init_parameters(
    network: Network, init_seeds: list[int], device: torch.device | str = "cpu"
) -> StackedParameters:
    """PyTorch's default Linear init, U(-1/sqrt(in), 1/sqrt(in)) for weights and biases, per trial.

    Drawn on the CPU from each trial's own generator, so a trial's weights depend only on its
    seed, not on the device or on which other trials share the batch.
    """
    trials = len(init_seeds)
    params = StackedParameters(network, torch.empty(trials * network.parameter_count()), trials)
    for trial, seed in enumerate(init_seeds):
        generator = torch.Generator().manual_seed(seed)
        for spec, w, b in zip(network.linears, params.weights, params.biases):
            bound = 1.0 / math.sqrt(spec.in_features)
            # Drawn as upstream's [out, in] tensor, in that order, then put in place.
            weight = torch.empty(spec.out_features, spec.in_features)
            w[trial].t().copy_(weight.uniform_(-bound, bound, generator=generator))
            bias = torch.empty(spec.out_features)
            b[trial].copy_(bias.uniform_(-bound, bound, generator=generator))
    return StackedParameters(network, params.flat.to(device), trials)


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
            inner = torch.relu_(_linear(h, params.weights[first], params.bias_rows[first]))
            inner = _dropout(inner, dropout_masks, site)
            w2, b2 = params.weights[step.linears[1]], params.bias_rows[step.linears[1]]
            h = torch.relu_(torch.baddbmm(h, inner, w2).add_(b2))  # h + L2(inner)
        else:
            w, b = params.weights[first], params.bias_rows[first]
            pre = _grouped_linear(x, w, b, group_size) if h is None else _linear(h, w, b)
            if step.kind == "final":
                return pre
            h = _dropout(torch.relu_(pre), dropout_masks, site)
    raise ValueError(f"architecture {network.arch.flag} has no final layer")


def _linear(h: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    # h [K, B, in], w [K, in, out], b [K, 1, out] -> [K, B, out]
    return torch.baddbmm(b, h, w)


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
    b_cat = b.reshape(groups, 1, group_size * out)  # from [K, 1, out]
    y = torch.baddbmm(b_cat, x, w_cat)  # [G, B, group_size*out]
    y = y.reshape(groups, batch, group_size, out).transpose(1, 2)
    return y.reshape(groups * group_size, batch, out)


def _dropout(h: torch.Tensor, masks: list[torch.Tensor] | None, site: int) -> torch.Tensor:
    return h if masks is None else h * masks[site]
