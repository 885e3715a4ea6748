"""The engine's training step replayed from a CUDA graph.

On a GPU a step of a narrow network is a few hundred small kernels, each launched from Python:
on an H200 the kernels of a ``[4*17]`` step at K=60 keep the GPU busy about a tenth of the
step's wall time. A graph launches them all at once. Captured once per loop and replayed for
every full batch, it gives the eager step's bits (the same kernels on the same addresses, the
dropout generators registered with the graph draw what they would have drawn eagerly; measured
in REPRODUCTION.md's GPU section)."""

from __future__ import annotations

from collections.abc import Callable

import torch


class GraphedStep:
    """``step(index)`` for one loop: the first full batch runs eagerly on a side stream (the
    warm-up a capture needs), the second is captured on that stream and replayed, and every
    later full batch copies its indices into the captured input and replays; a short batch
    runs eagerly. ``generators``: the CUDA generators the step draws from."""

    def __init__(
        self,
        step: Callable[[torch.Tensor], None],
        shape: tuple[int, int],
        generators: list[torch.Generator],
        device: torch.device,
    ):
        self.step, self.shape, self.generators = step, shape, generators
        self.stream = torch.cuda.Stream(device)
        self.index = torch.empty(shape, dtype=torch.long, device=device)
        self.warmed = False
        self.graph: torch.cuda.CUDAGraph | None = None

    def __call__(self, index: torch.Tensor) -> None:
        if tuple(index.shape) != self.shape or not self.warmed:
            self._eager(index)
            self.warmed = self.warmed or tuple(index.shape) == self.shape
            return
        self.index.copy_(index)
        if self.graph is None:
            self.graph = torch.cuda.CUDAGraph()
            for generator in self.generators:
                self.graph.register_generator_state(generator)
            self.stream.wait_stream(torch.cuda.current_stream(self.stream.device))
            with torch.cuda.graph(self.graph, stream=self.stream):
                self.step(self.index)
        self.graph.replay()

    def _eager(self, index: torch.Tensor) -> None:
        current = torch.cuda.current_stream(self.stream.device)
        self.stream.wait_stream(current)
        with torch.cuda.stream(self.stream):
            self.step(index)
        current.wait_stream(self.stream)
