"""The ablation modes: their candidate neurons, how they draw, exactly what they zero, and that
ablations never pile up across meta-loops."""

from __future__ import annotations

import random
from collections import Counter

import pytest
import torch

import psa.engine
from psa.ablation import AblationTarget, apply_ablation, draw_target, hidden_candidates
from psa.arch import Arch
from psa.engine import Engine, Hyperparameters, TrialSpec
from psa.model import build_network, init_parameters
from psa.modes import ABLATIVE_MODES, BASELINE_MODES
from psa.seeds import run_seeds

ARCHS = [
    ("resmlp", [(2, 5), (1, 7)]),
    ("resmlp", [(3, 4)]),
    ("mlp", [(2, 6), (1, 4)]),
]


def expected_zeroing(network, state: dict, target: AblationTarget, mode: str) -> dict:
    """What spec 2.3 says a target does, computed on the upstream [out, in] layout."""
    expected = {name: tensor.clone() for name, tensor in state.items()}
    layer = network.linears[target.linear].name
    expected[f"{layer}.weight"][target.neuron, :] = 0.0
    expected[f"{layer}.bias"][target.neuron] = 0.0
    if mode == "hidden":
        successor = network.linears[target.linear + 1].name
        expected[f"{successor}.weight"][:, target.neuron] = 0.0
    return expected


@pytest.mark.parametrize(("model", "stacks"), ARCHS)
@pytest.mark.parametrize("mode", ABLATIVE_MODES)
def test_ablation_zeroes_exactly_the_specified_elements_of_the_chosen_trial(model, stacks, mode):
    network = build_network(model, Arch(stacks))
    params = init_parameters(network, [5, 6, 7])
    before = [params.state_dict(network, k) for k in range(3)]
    rng = random.Random(f"{model}-{stacks}-{mode}")
    for _ in range(25):
        target = draw_target(network, mode, rng)
        trial = rng.randrange(3)
        copy = params.clone()
        apply_ablation(copy, trial, target)
        for k in range(3):
            after = copy.state_dict(network, k)
            expected = (
                expected_zeroing(network, before[k], target, mode) if k == trial else before[k]
            )
            for name in before[k]:
                assert torch.equal(after[name], expected[name]), (mode, name, k, target)
        zeroed = sum(
            int((before[trial][n] != copy.state_dict(network, trial)[n]).sum())
            for n in before[trial]
        )
        spec = network.linears[target.linear]
        successor_column = (
            network.linears[target.linear + 1].out_features if mode == "hidden" else 0
        )
        assert zeroed == spec.in_features + 1 + successor_column
    # The source parameters are untouched: ablation worked on a copy.
    for k in range(3):
        for name, tensor in params.state_dict(network, k).items():
            assert torch.equal(tensor, before[k][name])


@pytest.mark.parametrize("mode", BASELINE_MODES)
def test_non_ablative_modes_draw_no_target(mode):
    network = build_network("resmlp", Arch([(2, 5)]))
    rng = random.Random(0)
    assert all(draw_target(network, mode, rng) is None for _ in range(20))


def test_hidden_candidates_of_18x18_resmlp_are_36_layers_with_648_neurons():
    network = build_network("resmlp", Arch([(18, 18)]))
    candidates = hidden_candidates(network)
    assert len(network.linears) == 38
    assert len(candidates) == 36
    assert sum(network.linears[i].out_features for i in candidates) == 648
    assert 0 not in candidates and len(network.linears) - 1 not in candidates


def test_hidden_mode_never_targets_the_resmlp_input_projection_or_final_layer():
    network = build_network("resmlp", Arch([(1, 4), (1, 40)]))
    rng = random.Random(1)
    drawn = Counter(draw_target(network, "hidden", rng).linear for _ in range(4000))
    roles = {network.linears[i].role for i in drawn}
    assert roles == {"block_l1", "block_l2", "transition"}
    assert set(drawn) == set(hidden_candidates(network))


def test_hidden_mode_of_the_plain_mlp_includes_its_first_layer():
    network = build_network("mlp", Arch([(3, 6)]))
    assert hidden_candidates(network) == {0: (1,), 1: (2,), 2: (3,)}
    rng = random.Random(2)
    assert {draw_target(network, "hidden", rng).linear for _ in range(500)} == {0, 1, 2}


def test_hidden_mode_draws_uniformly_over_neurons_not_layers():
    # Candidate widths 4, 4, 40, 40, 40: a neuron-uniform draw hits the narrow layers rarely.
    network = build_network("resmlp", Arch([(1, 4), (1, 40)]))
    candidates = hidden_candidates(network)
    total = sum(network.linears[i].out_features for i in candidates)
    rng = random.Random(3)
    draws = 20_000
    counts = Counter()
    for _ in range(draws):
        target = draw_target(network, "hidden", rng)
        assert target.consumers == (target.linear + 1,)
        counts[(target.linear, target.neuron)] += 1
    assert len(counts) == total  # every neuron of every candidate layer is reachable
    for linear in candidates:
        share = sum(n for (layer, _), n in counts.items() if layer == linear) / draws
        assert share == pytest.approx(network.linears[linear].out_features / total, abs=0.015)


def test_full_mode_draws_a_layer_uniformly_then_a_row_uniformly():
    # Rows per Linear: 200, 200, 200, 10; neuron-uniform would give the final layer 1.6%.
    network = build_network("resmlp", Arch([(1, 200)]))
    rng = random.Random(4)
    draws = 8_000
    targets = [draw_target(network, "full", rng) for _ in range(draws)]
    layers = Counter(t.linear for t in targets)
    assert set(layers) == set(range(len(network.linears)))
    for count in layers.values():
        assert count / draws == pytest.approx(1 / len(network.linears), abs=0.03)
    assert all(t.consumers == () for t in targets)
    final_rows = Counter(t.neuron for t in targets if t.linear == len(network.linears) - 1)
    assert set(final_rows) == set(range(10))


def test_full_mode_of_a_single_stack_chooses_among_2l_plus_2_layers():
    network = build_network("resmlp", Arch([(32, 4)]))
    assert len(network.linears) == 66
    rng = random.Random(5)
    assert {draw_target(network, "full", rng).linear for _ in range(3000)} == set(range(66))


def test_output_mode_targets_only_rows_of_the_final_layer():
    network = build_network("resmlp", Arch([(2, 6)]))
    last = len(network.linears) - 1
    rng = random.Random(6)
    targets = [draw_target(network, "output", rng) for _ in range(500)]
    assert {t.linear for t in targets} == {last}
    assert {t.neuron for t in targets} == set(range(10))
    assert all(t.consumers == () for t in targets)


def test_draws_are_reproducible_from_the_generator_seed():
    network = build_network("resmlp", Arch([(3, 8)]))
    for mode in ABLATIVE_MODES:
        first = [draw_target(network, mode, random.Random(9)) for _ in range(3)]
        assert first[0] == first[1] == first[2]


def test_describe_names_the_upstream_layer_and_neuron():
    network = build_network("resmlp", Arch([(2, 4)]))
    target = AblationTarget(linear=2, neuron=3, consumers=(3,))
    assert target.describe(network) == {"layer": "layer_stack.3.blocks.0.layers.3", "neuron": 3}


def test_engine_loops_start_from_the_lkg_with_at_most_one_new_ablation(mnist_small, monkeypatch):
    network = build_network("resmlp", Arch([(2, 6)]))
    modes = ["full", "hidden", "output", "none"]
    trials = [TrialSpec(mode, run_seeds(31, mode)) for mode in modes]
    engine = Engine(network, trials, Hyperparameters(lr=3e-3, batch_size=500), mnist_small)

    starts = []
    real_forward = psa.engine.forward

    def spy(arch_, params, *args, **kwargs):
        if params is engine.params and capture["armed"]:
            capture["armed"] = False
            starts.append(params.clone())
        return real_forward(arch_, params, *args, **kwargs)

    capture = {"armed": False}
    monkeypatch.setattr(psa.engine, "forward", spy)
    promotions = 0
    for session_loop in range(1, 7):
        lkg = engine.lkg.clone()
        capture["armed"] = True
        report = engine.run_loop(ablate=session_loop > 1)
        start = starts[-1]
        promotions += sum(report.promoted)
        for k, mode in enumerate(modes):
            target = report.targets[k]
            if session_loop == 1 or mode not in ABLATIVE_MODES:
                assert target is None
            else:
                assert target is not None
            expected = lkg.clone()
            if target is not None:
                apply_ablation(expected, k, target)
            restored, wanted = start.state_dict(network, k), expected.state_dict(network, k)
            for name in wanted:
                assert torch.equal(restored[name], wanted[name]), (session_loop, mode, name)
    assert len(starts) == 6
    assert promotions >= 4  # the LKG moved, so "start == LKG + one ablation" was tested live


def test_corrected_hidden_targets_are_the_real_hidden_units_with_every_reader_zeroed():
    network = build_network("resmlp", Arch([(2, 3), (1, 5)]))
    names = {i: spec.name for i, spec in enumerate(network.linears)}
    candidates = {
        names[i]: [names[j] for j in readers]
        for i, readers in hidden_candidates(network, "corrected").items()
    }
    assert candidates == {
        "layer_stack.0": [
            "layer_stack.3.blocks.0.layers.0",
            "layer_stack.3.blocks.1.layers.0",
            "layer_stack.4",
        ],
        "layer_stack.3.blocks.0.layers.0": ["layer_stack.3.blocks.0.layers.3"],
        "layer_stack.3.blocks.1.layers.0": ["layer_stack.3.blocks.1.layers.3"],
        "layer_stack.4": ["layer_stack.7.blocks.0.layers.0", "layer_stack.8"],
        "layer_stack.7.blocks.0.layers.0": ["layer_stack.7.blocks.0.layers.3"],
    }


def test_corrected_hidden_ablation_zeroes_the_unit_and_its_columns_in_every_reader():
    network = build_network("resmlp", Arch([(2, 4)]))
    params = init_parameters(network, [11, 12])
    before = params.state_dict(network, 0)
    target = AblationTarget(linear=0, neuron=2, consumers=(1, 3, 5))
    apply_ablation(params, 0, target)
    after = params.state_dict(network, 0)
    expected = {name: tensor.clone() for name, tensor in before.items()}
    expected["layer_stack.0.weight"][2, :] = 0.0
    expected["layer_stack.0.bias"][2] = 0.0
    for reader in (1, 3, 5):
        expected[f"{network.linears[reader].name}.weight"][:, 2] = 0.0
    for name in expected:
        assert torch.equal(after[name], expected[name]), name
    assert after.keys() == before.keys()
    untouched = params.state_dict(network, 1)
    assert all(untouched[name].count_nonzero() == untouched[name].numel() for name in untouched)


def test_neuron_sampling_of_full_mode_is_uniform_over_all_neurons():
    network = build_network("resmlp", Arch([(1, 200)]))  # rows 200, 200, 200, 10
    rng = random.Random(8)
    draws = 12_000
    targets = [draw_target(network, "full", rng, full_sampling="neuron") for _ in range(draws)]
    final_share = sum(t.linear == len(network.linears) - 1 for t in targets) / draws
    assert final_share == pytest.approx(10 / 610, abs=0.005)
    assert all(t.consumers == () for t in targets)
