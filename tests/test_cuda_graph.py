"""On CUDA the engine replays its full-batch training steps from a graph captured each loop
(psa.cuda_graph). These tests need a CUDA device and skip without one; scripts/cuda_checks.sh
runs them on a GPU machine (REPRODUCTION.md's GPU section has the last run)."""

from __future__ import annotations

import pytest
import torch

from psa.arch import parse_arch
from psa.config import Hyperparameters
from psa.data import MnistSplits
from psa.engine import FIRST_LOOP_OF_RUN, Engine, TrialSpec
from psa.model import build_network
from psa.modes import MODES
from psa.seeds import run_seeds, trial_run_seed

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

BATCH = 64
TRAIN_ROWS = 4 * BATCH + 20  # four full batches (one eager, one captured, two replays), one short


def on_cuda(mnist: MnistSplits) -> MnistSplits:
    return MnistSplits(
        train_x=mnist.train_x[:TRAIN_ROWS].cuda(),
        train_y=mnist.train_y[:TRAIN_ROWS].cuda(),
        val_x=mnist.val_x[:2000].cuda(),
        val_y=mnist.val_y[:2000].cuda(),
        test_x=mnist.test_x[:500].cuda(),
        test_y=mnist.test_y[:500].cuda(),
    )


def grid_trials(trials: int, modes: tuple[str, ...] = MODES) -> list[TrialSpec]:
    return [
        TrialSpec(mode, run_seeds(trial_run_seed(7, index), mode))
        for index in range(1, trials + 1)
        for mode in modes
    ]


def three_loops(model, arch, specs, hyper, data, cuda_graph: bool):
    engine = Engine(
        build_network(model, parse_arch(arch)),
        specs,
        hyper,
        data,
        first_loop=FIRST_LOOP_OF_RUN,
        cuda_graph=cuda_graph,
    )
    engine.revalidate()
    reports = [engine.run_loop() for _ in range(3)]  # loop 1 unablated, 2 and 3 ablated
    seen = [(r.targets, r.val_accuracy, r.promoted) for r in reports]
    return engine.params.flat.cpu(), engine.lkg.flat.cpu(), seen


@pytest.mark.parametrize(
    ("model", "arch", "trials", "modes", "hyper"),
    [
        # A sweep batch: every mode, trials sharing batches in groups of six, dropout drawn.
        ("resmlp", "[2*8]", 2, MODES, Hyperparameters(batch_size=BATCH)),
        # train: one trial, a group of one.
        ("resmlp", "[3*6]", 1, ("dropout",), Hyperparameters(batch_size=BATCH)),
        # A decay factor that is not 1 (its multiply is in the graph), and the plain MLP.
        ("mlp", "[2*12]", 1, MODES, Hyperparameters(batch_size=BATCH, lr=1e-3, weight_decay=0.5)),
        # bf16 autocast.
        ("resmlp", "[1*32]", 1, MODES, Hyperparameters(batch_size=BATCH, precision="bf16")),
    ],
)
def test_steps_replayed_from_a_cuda_graph_give_the_bits_of_eager_steps(
    mnist, model, arch, trials, modes, hyper
):
    data, specs = on_cuda(mnist), grid_trials(trials, modes)
    eager = three_loops(model, arch, specs, hyper, data, cuda_graph=False)
    graphed = three_loops(model, arch, specs, hyper, data, cuda_graph=True)
    assert torch.equal(graphed[0], eager[0])
    assert torch.equal(graphed[1], eager[1])
    assert graphed[2] == eager[2]
    assert any(any(promoted) for _, _, promoted in eager[2][1:])  # LKGs moved after loop 1
