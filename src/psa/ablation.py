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

Two documented departures are available behind flags: ``hidden_targets="corrected"`` targets
the ResMLP's real hidden units with every reader zeroed, and ``full_sampling="neuron"`` draws
``full``'s neuron uniformly over all neurons instead of layer first.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from psa.model import Network, StackedParameters
from psa.modes import ABLATIVE_MODES


@dataclass(frozen=True)
class AblationTarget:
    linear: int  # index into Network.linears
    neuron: int  # output row of that Linear
    consumers: tuple[int, ...] = ()  # Linears whose input column ``neuron`` is zeroed too

    def describe(self, network: Network) -> dict:
        return {"layer": network.linears[self.linear].name, "neuron": self.neuron}


def hidden_candidates(network: Network, targets: str = "upstream") -> dict[int, tuple[int, ...]]:
    """The Linears whose neurons hidden mode may target, each with the Linears reading them.

    ``upstream``: every Linear but the last in compute order (ResMLP: but the first and last),
    paired with the next one. ``corrected`` (ResMLP): the real hidden units, i.e. each block's
    first Linear (read by the block's second) and the input projection and transitions (read by
    every block of their stack and by the Linear after it, since the skip path carries them).
    """
    last = len(network.linears) - 1
    if targets == "upstream" or network.model == "mlp":
        first = 1 if network.model == "resmlp" else 0
        return {i: (i + 1,) for i in range(first, last)}
    candidates = {}
    for i, spec in enumerate(network.linears):
        if spec.role == "block_l1":
            candidates[i] = (i + 1,)
        elif spec.role in ("projection", "transition"):
            readers = []
            for j in range(i + 1, last + 1):
                role = network.linears[j].role
                if role == "block_l1":
                    readers.append(j)
                elif role != "block_l2":
                    readers.append(j)
                    break
            candidates[i] = tuple(readers)
    return candidates


def draw_target(
    network: Network,
    mode: str,
    rng: random.Random,
    hidden_targets: str = "upstream",
    full_sampling: str = "layer",
) -> AblationTarget | None:
    """One ablation target for ``mode``, or None for the non-ablative modes."""
    if mode not in ABLATIVE_MODES:
        return None
    last = len(network.linears) - 1
    if mode == "output":
        return AblationTarget(last, rng.randrange(network.linears[last].out_features))
    if mode == "full" and full_sampling == "layer":
        linear = rng.randrange(len(network.linears))
        return AblationTarget(linear, rng.randrange(network.linears[linear].out_features))
    if mode == "full":
        candidates = {i: () for i in range(len(network.linears))}
    else:
        candidates = hidden_candidates(network, hidden_targets)
    total = sum(network.linears[i].out_features for i in candidates)
    if total == 0:
        return None
    pick = rng.randrange(total)  # uniform over the candidates' neurons
    for linear, consumers in candidates.items():
        width = network.linears[linear].out_features
        if pick < width:
            return AblationTarget(linear, pick, consumers)
        pick -= width
    raise AssertionError("neuron index beyond the candidate layers")


def apply_ablation(params: StackedParameters, trial: int, target: AblationTarget) -> None:
    """Zero ``target`` in trial ``trial`` of ``params`` (in place)."""
    with torch.no_grad():
        # Weights are stored [K, in, out]: a neuron's row is a column here, and vice versa.
        params.weights[target.linear][trial, :, target.neuron] = 0.0
        params.biases[target.linear][trial, target.neuron] = 0.0
        for consumer in target.consumers:
            params.weights[consumer][trial, target.neuron, :] = 0.0
