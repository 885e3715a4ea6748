"""The engine against the method written plainly: dropout masks captured from the engine and
checked against their definition, and whole meta-loops (ablation, dropout, a fresh AdamW, strict
promotion) replayed on the torch.nn reference network of psa.reference."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from psa.arch import Arch
from psa.engine import ADAM_BETAS, ADAM_EPS, Engine, Hyperparameters, TrialSpec
from psa.model import build_network
from psa.reference import dropout_modules, reference
from psa.seeds import loop_seed, run_seeds, trial_run_seed

NETWORK = build_network("resmlp", Arch([(2, 8)]))
P = 0.3
# A moderate lr: the reference and the engine differ by float rounding only, which a large lr
# lets Adam amplify into visible drift within a few loops.
HYPER = Hyperparameters(lr=5e-4, batch_size=250, weight_decay=0.05, dropout=P)
BASE_SEED = 1234


def spec(mode: str, trial: int = 1) -> TrialSpec:
    return TrialSpec(mode, run_seeds(trial_run_seed(BASE_SEED, trial), mode))


def captured_masks(monkeypatch, engine: Engine) -> list[list[torch.Tensor]]:
    """Every training step's dropout scales of ``engine`` ([K, batch, width] per site), copied
    as the engine made them."""
    steps: list[list[torch.Tensor]] = []
    make = engine._dropout_masks

    def recording(*args, **kwargs):
        masks = make(*args, **kwargs)
        if masks is not None:
            steps.append([site.clone() for site in masks])
        return masks

    monkeypatch.setattr(engine, "_dropout_masks", recording)
    return steps


def assert_same_weights(engine_state: dict, net_state: dict, atol: float = 1e-5) -> None:
    assert engine_state.keys() == net_state.keys()
    for name in engine_state:
        torch.testing.assert_close(engine_state[name], net_state[name], atol=atol, rtol=0, msg=name)


def test_dropout_keeps_1_minus_p_of_units_and_scales_kept_ones_by_exactly_1_over_1_minus_p(
    monkeypatch, mnist_small
):
    engine = Engine(NETWORK, [spec("none"), spec("dropout"), spec("decay")], HYPER, mnist_small)
    steps = captured_masks(monkeypatch, engine)
    engine.run_loop(ablate=False)
    assert len(steps) == math.ceil(mnist_small.train_x.shape[0] / HYPER.batch_size)
    scale = torch.tensor(1.0 / (1.0 - P), dtype=torch.float32)
    dropout_row = torch.cat([site[1].flatten() for masks in steps for site in masks])
    kept = dropout_row[dropout_row != 0]
    assert torch.equal(kept, scale.expand_as(kept))  # every kept unit, the one exact scale
    # Each unit is kept with probability 1 - p, independently: a binomial count.
    n = dropout_row.numel()
    assert n == mnist_small.train_x.shape[0] * sum(NETWORK.dropout_sites)
    assert abs(kept.numel() / n - (1 - P)) <= 5 * math.sqrt(P * (1 - P) / n)
    for masks in steps:  # trials in other modes are never dropped
        for site in masks:
            assert torch.equal(site[[0, 2]], torch.ones_like(site[[0, 2]]))
        widths = [site.shape[2] for site in masks]
        assert tuple(widths) == NETWORK.dropout_sites


def test_each_dropout_trial_draws_the_same_masks_whatever_is_batched_with_it(
    monkeypatch, mnist_small
):
    alone = Engine(NETWORK, [spec("dropout", 1)], HYPER, mnist_small)
    alone_steps = captured_masks(monkeypatch, alone)
    batched = Engine(
        NETWORK, [spec("none", 2), spec("dropout", 2), spec("dropout", 1)], HYPER, mnist_small
    )
    batched_steps = captured_masks(monkeypatch, batched)
    for _ in range(2):  # and each loop draws afresh
        alone.run_loop(ablate=False)
        batched.run_loop(ablate=False)
    assert len(alone_steps) == len(batched_steps) > 0
    for mine, ours in zip(alone_steps, batched_steps):
        for site_alone, site_batched in zip(mine, ours):
            assert torch.equal(site_alone[0], site_batched[2])
    half = len(alone_steps) // 2
    assert not torch.equal(alone_steps[0][0][0], alone_steps[half][0][0])  # loop 2 is new
    other = torch.cat([masks[0][1] for masks in batched_steps])
    mine = torch.cat([masks[0][2] for masks in batched_steps])
    assert not torch.equal(other, mine)  # trial index 2 has its own stream


def epoch_order(trial: TrialSpec, loop: int, n: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(loop_seed(trial.seeds.data, loop))
    return torch.randperm(n, generator=generator)


def reference_epoch(net: nn.Module, data, order, hyper, decay: float, masks=None) -> None:
    """One epoch of spec 2.4 in plain torch: a fresh torch.optim.AdamW, mean cross-entropy over
    each batch of ``order``; ``masks`` (per step, per dropout site) replaces dropout's draws."""
    optimizer = torch.optim.AdamW(
        net.parameters(), lr=hyper.lr, betas=ADAM_BETAS, eps=ADAM_EPS, weight_decay=decay
    )
    sites = dropout_modules(net)
    for step, first in enumerate(range(0, len(order), hyper.batch_size)):
        index = order[first : first + hyper.batch_size]
        for module, mask in zip(sites, masks[step] if masks else [None] * len(sites)):
            module.mask = mask
        loss = F.cross_entropy(net(data.train_x[index]), data.train_y[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    for module in sites:
        module.mask = None


def reference_accuracy(net: nn.Module, x, y) -> float:
    with torch.no_grad():
        return 100.0 * (net(x).argmax(1) == y).sum().item() / len(y)


def test_a_dropout_loop_equals_the_reference_network_trained_with_the_engines_masks(
    monkeypatch, mnist_small
):
    trial = spec("dropout")
    engine = Engine(NETWORK, [trial], HYPER, mnist_small)
    steps = captured_masks(monkeypatch, engine)
    net = reference("resmlp", NETWORK.arch.stacks)
    net.load_state_dict(engine.lkg.state_dict(NETWORK, 0))
    report = engine.run_loop(ablate=False)

    order = epoch_order(trial, 1, mnist_small.train_x.shape[0])
    masks = [[site[0] for site in step] for step in steps]
    reference_epoch(net, mnist_small, order, HYPER, decay=0.0, masks=masks)
    assert_same_weights(engine.params.state_dict(NETWORK, 0), net.state_dict())
    accuracy = reference_accuracy(net, mnist_small.val_x, mnist_small.val_y)
    assert report.val_accuracy[0] == pytest.approx(accuracy, abs=0.11)


def linears_in_compute_order(net: nn.Module) -> list[tuple[str, nn.Linear]]:
    return [(name, m) for name, m in net.named_modules() if isinstance(m, nn.Linear)]


def ablate_reference(net: nn.Module, mode: str, layer: str, neuron: int) -> None:
    """Zero a neuron as spec 2.3 says, on the reference: its row and bias; in hidden mode also
    its column in the next Linear. Checks first that ``mode`` may target that Linear."""
    linears = linears_in_compute_order(net)
    names = [name for name, _ in linears]
    position = names.index(layer)
    if mode == "output":
        assert position == len(linears) - 1
    if mode == "hidden":  # upstream's set: neither the input projection nor the final Linear
        assert 0 < position < len(linears) - 1
    linear = linears[position][1]
    assert 0 <= neuron < linear.out_features
    with torch.no_grad():
        linear.weight[neuron, :] = 0.0
        linear.bias[neuron] = 0.0
        if mode == "hidden":
            linears[position + 1][1].weight[:, neuron] = 0.0


@pytest.mark.parametrize("mode", ["full", "hidden", "output"])
def test_the_engine_equals_the_reference_meta_loop_over_several_loops(mode, mnist_small):
    """Spec 2.4 loop after loop: restore the LKG, ablate one neuron (not in loop 1), train an
    epoch with a fresh AdamW, validate, keep on strict improvement. The first loops improve (tiny
    nets on a small split always do); the last ones cannot, so they must restart from the LKG."""
    trial = spec(mode)
    engine = Engine(NETWORK, [trial], HYPER, mnist_small)
    net = reference("resmlp", NETWORK.arch.stacks)
    lkg = {name: t.clone() for name, t in engine.lkg.state_dict(NETWORK, 0).items()}
    lkg_accuracy, promotions = -1.0, 0
    for loop in range(1, 6):
        if loop == 4:  # from here no loop can improve: each must start again from the LKG
            engine.state[0].lkg_accuracy = lkg_accuracy = 100.0
        report = engine.run_loop(ablate=loop > 1)
        net.load_state_dict(lkg)
        if loop == 1:
            assert report.targets == [None]
        else:
            described = report.targets[0].describe(NETWORK)
            ablate_reference(net, mode, described["layer"], described["neuron"])
        order = epoch_order(trial, loop, mnist_small.train_x.shape[0])
        reference_epoch(net, mnist_small, order, HYPER, decay=0.0)
        assert_same_weights(engine.params.state_dict(NETWORK, 0), net.state_dict())
        accuracy = reference_accuracy(net, mnist_small.val_x, mnist_small.val_y)
        assert report.val_accuracy[0] == pytest.approx(accuracy, abs=0.11), loop
        promoted = report.val_accuracy[0] > lkg_accuracy
        assert report.promoted == [promoted], loop
        if promoted:
            lkg = {name: t.detach().clone() for name, t in net.state_dict().items()}
            lkg_accuracy, promotions = report.val_accuracy[0], promotions + 1
        assert_same_weights(engine.lkg.state_dict(NETWORK, 0), lkg)
        assert engine.state[0].lkg_accuracy == lkg_accuracy
    assert promotions == 3  # the LKG really moved after ablated loops, then stayed
