"""Persistent Stochastic Ablation on MNIST: trainer, batched sweeps, reporting and cloud tooling."""

__version__ = "0.1.0"
