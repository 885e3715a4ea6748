"""Spec 2.2 written plainly in torch.nn, one network at a time: the reference the batched engine
is checked against (tests) and the upstream-style network bench times the engine against.

Each dropout layer comes from ``dropout(kind)``, kind "transition" (after a width change) or
"block" (inside a residual block); by default a MaskDropout, dropout as a given mask."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

DropoutFactory = Callable[[str], nn.Module]


class MaskDropout(nn.Module):
    """Dropout as a given multiplicative mask (None: identity): a deterministic reference."""

    def __init__(self):
        super().__init__()
        self.mask: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.mask is None else x * self.mask


def mask_dropout(kind: str) -> nn.Module:
    return MaskDropout()


class ReferenceBlock(nn.Module):
    def __init__(self, width: int, dropout: DropoutFactory = mask_dropout):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(width, width), nn.ReLU(), dropout("block"), nn.Linear(width, width)
        )

    def forward(self, x):
        return torch.relu(x + self.layers(x))


class ReferenceStack(nn.Module):
    def __init__(self, depth: int, width: int, dropout: DropoutFactory = mask_dropout):
        super().__init__()
        self.blocks = nn.Sequential(*[ReferenceBlock(width, dropout) for _ in range(depth)])

    def forward(self, x):
        return self.blocks(x)


class ReferenceResMLP(nn.Module):
    """Spec 2.2 written plainly: transitions Linear+ReLU+Dropout, residual stacks, final Linear."""

    def __init__(self, stacks, dropout: DropoutFactory = mask_dropout):
        super().__init__()
        modules, current = [], 784
        for depth, width in stacks:
            if width != current:
                modules += [nn.Linear(current, width), nn.ReLU(), dropout("transition")]
            modules.append(ReferenceStack(depth, width, dropout))
            current = width
        modules.append(nn.Linear(current, 10))
        self.layer_stack = nn.Sequential(*modules)

    def forward(self, x):
        return self.layer_stack(x.flatten(1))


class ReferenceMLP(nn.Module):
    """The first paper's plain MLP: per hidden layer Linear, ReLU, Dropout; then Linear to 10."""

    def __init__(self, stacks):
        super().__init__()
        modules, current = [], 784
        for depth, width in stacks:
            for _ in range(depth):
                modules += [nn.Linear(current, width), nn.ReLU(), MaskDropout()]
                current = width
        modules.append(nn.Linear(current, 10))
        self.layers = nn.Sequential(*modules)

    def forward(self, x):
        return self.layers(x.flatten(1))


def reference(model: str, stacks, dropout: DropoutFactory = mask_dropout) -> nn.Module:
    """The reference network of ``model`` with ``stacks`` ((depth, width) pairs)."""
    if model == "resmlp":
        return ReferenceResMLP(stacks, dropout)
    return ReferenceMLP(stacks)


def dropout_modules(module: nn.Module) -> list[MaskDropout]:
    return [m for m in module.modules() if isinstance(m, MaskDropout)]
