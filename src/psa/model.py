"""ResMLP and plain MLP as parameter sets stacked on a leading trial axis.

K trials of one architecture live in one set of tensors: every Linear is a weight [K, in, out]
and a bias [K, out], so a forward pass is a chain of batched matmuls. Tensor names follow the
upstream state dicts (``layer_stack.{i}.weight``,
``layer_stack.{i}.blocks.{j}.layers.{0|3}.weight``), so one trial's slice converts to an
upstream-compatible state dict.
"""

from __future__ import annotations

import math
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
