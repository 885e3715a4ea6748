"""The ablation modes: which neurons each mode may target, one draw, and zeroing it.

Targets are indexed on the architecture (never on a live model) and applied to one trial's
slice of the stacked parameters. Upstream's target sets are kept exactly (parity):

- output: one of the 10 logits; its row and bias in the final Linear.
- full: a Linear chosen uniformly among all of them, then one of its rows uniformly; row and bias.
  (Layer-uniform, not neuron-uniform: small layers are hit more often per neuron.)
- hidden: uniform over the neurons of every Linear except the first and last in compute order
  (ResMLP: the input projection is never a target, and a block's second Linear counts as a
  neuron even though the skip path still carries that channel); the plain MLP uses every Linear
  but the last. The row and bias are zeroed and so is the neuron's column in the next Linear.

Nothing masks the zeroed weights afterwards: they may regrow during the epoch, as upstream.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from psa.model import Architecture, StackedParameters
from psa.modes import ABLATIVE_MODES


@dataclass(frozen=True)
class AblationTarget:
    linear: int  # index into Architecture.linears
    neuron: int  # output row of that Linear
    successor: int | None  # Linear whose input column ``neuron`` is zeroed too (hidden mode)

    def describe(self, arch: Architecture) -> dict:
        return {"layer": arch.linears[self.linear].name, "neuron": self.neuron}


def hidden_candidates(arch: Architecture) -> list[int]:
    """Indices of the Linears whose neurons hidden mode may target."""
    last = len(arch.linears) - 1
    first = 1 if arch.model == "resmlp" else 0
    return list(range(first, last))


def draw_target(arch: Architecture, mode: str, rng: random.Random) -> AblationTarget | None:
    """One ablation target for ``mode``, or None for the non-ablative modes."""
    if mode not in ABLATIVE_MODES:
        return None
    last = len(arch.linears) - 1
    if mode == "output":
        return AblationTarget(last, rng.randrange(arch.linears[last].out_features), None)
    if mode == "full":
        linear = rng.randrange(len(arch.linears))
        return AblationTarget(linear, rng.randrange(arch.linears[linear].out_features), None)
    candidates = hidden_candidates(arch)
    total = sum(arch.linears[i].out_features for i in candidates)
    if total == 0:
        return None
    pick = rng.randrange(total)
    for linear in candidates:
        width = arch.linears[linear].out_features
        if pick < width:
            return AblationTarget(linear, pick, linear + 1)
        pick -= width
    raise AssertionError("neuron index beyond the candidate layers")


def apply_ablation(params: StackedParameters, trial: int, target: AblationTarget) -> None:
    """Zero ``target`` in trial ``trial`` of ``params`` (in place)."""
    with torch.no_grad():
        # Weights are stored [K, in, out]: a neuron's row is a column here, and vice versa.
        params.weights[target.linear][trial, :, target.neuron] = 0.0
        params.biases[target.linear][trial, target.neuron] = 0.0
        if target.successor is not None:
            params.weights[target.successor][trial, target.neuron, :] = 0.0
