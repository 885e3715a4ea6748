"""Stacked ResMLP / MLP parameters: counts, upstream names, and a forward pass equal to torch.nn."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from psa.arch import Arch
from psa.model import (
    build_network,
    forward,
    init_parameters,
    layout_description,
    trial_state_dict,
)
from psa.reference import dropout_modules, reference


def resmlp_formula(depth: int, width: int) -> int:
    return 785 * width + 2 * depth * (width * width + width) + 10 * (width + 1)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 100), st.integers(1, 3000).filter(lambda w: w != 784))
def test_resmlp_parameter_count_follows_the_single_stack_formula(depth, width):
    assert Arch([(depth, width)]).resmlp_parameters == resmlp_formula(depth, width)


@settings(max_examples=15, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 3), st.integers(1, 24)), min_size=1, max_size=3).filter(
        lambda s: all(a[1] != b[1] for a, b in zip(s, s[1:]))
    ),
    st.sampled_from(["resmlp", "mlp"]),
)
def test_parameter_counts_without_torch_equal_the_reference_modules_parameters(stacks, model):
    expected = sum(p.numel() for p in reference(model, stacks).parameters())
    assert Arch(stacks).parameters(model) == expected
    network = build_network(model, Arch(stacks))
    assert network.parameter_count() == expected
    params = init_parameters(network, [0])
    assert sum(t.numel() for t in params.tensors()) == expected


@pytest.mark.parametrize(
    ("stacks", "resmlp", "mlp"),
    [
        ([(1, 2048)], 10_020_874, 1_628_170),
        ([(115, 115)], 3_159_635, 1_612_195),
        ([(18, 18)], 26_632, 20_134),
        ([(32, 4)], 4_470, 3_810),
    ],
)
def test_parameter_counts_match_the_spec(stacks, resmlp, mlp):
    assert Arch(stacks).resmlp_parameters == resmlp
    assert Arch(stacks).mlp_parameters == mlp
    assert build_network("mlp", Arch(stacks)).parameter_count() == mlp


def test_a_first_stack_of_width_784_has_no_input_projection():
    network = build_network("resmlp", Arch([(1, 784)]))
    assert [spec.role for spec in network.linears] == ["block_l1", "block_l2", "final"]
    assert network.parameter_count() == 2 * (784 * 784 + 784) + 10 * 785


@pytest.mark.parametrize(
    ("model", "stacks"),
    [
        ("resmlp", [(4, 4), (2, 8)]),
        ("resmlp", [(3, 5)]),
        ("resmlp", [(1, 784), (2, 6)]),
        ("mlp", [(2, 7), (1, 3)]),
    ],
)
def test_state_dict_uses_upstream_names_and_shapes(model, stacks):
    network = build_network(model, Arch(stacks))
    params = init_parameters(network, [1, 2])
    state = params.state_dict(network, 1)
    expected = reference(model, stacks).state_dict()
    assert list(state) == list(expected)
    assert {k: tuple(v.shape) for k, v in state.items()} == {
        k: tuple(v.shape) for k, v in expected.items()
    }


def test_upstream_names_of_a_two_stack_resmlp():
    network = build_network("resmlp", Arch([(2, 4), (1, 8)]))
    assert [spec.name for spec in network.linears] == [
        "layer_stack.0",
        "layer_stack.3.blocks.0.layers.0",
        "layer_stack.3.blocks.0.layers.3",
        "layer_stack.3.blocks.1.layers.0",
        "layer_stack.3.blocks.1.layers.3",
        "layer_stack.4",
        "layer_stack.7.blocks.0.layers.0",
        "layer_stack.7.blocks.0.layers.3",
        "layer_stack.8",
    ]


def test_weights_are_stored_transposed_in_out_and_state_dict_restores_out_in():
    network = build_network("resmlp", Arch([(1, 6)]))
    params = init_parameters(network, [3, 4, 5])
    assert tuple(params.weights[0].shape) == (3, 784, 6)
    assert tuple(params.biases[0].shape) == (3, 6)
    state = params.state_dict(network, 2)
    assert tuple(state["layer_stack.0.weight"].shape) == (6, 784)
    assert torch.equal(state["layer_stack.0.weight"], params.weights[0][2].t())


def test_load_state_dict_round_trips_into_one_trial_only():
    network = build_network("resmlp", Arch([(2, 5)]))
    params = init_parameters(network, [1, 2, 3])
    donor = init_parameters(network, [99]).state_dict(network, 0)
    before = [params.state_dict(network, k) for k in range(3)]
    params.load_state_dict(network, 1, donor)
    after = [params.state_dict(network, k) for k in range(3)]
    for name in donor:
        assert torch.equal(after[1][name], donor[name])
        assert torch.equal(after[0][name], before[0][name])
        assert torch.equal(after[2][name], before[2][name])


def test_load_state_dict_refuses_another_architecture():
    small = build_network("resmlp", Arch([(2, 5)]))
    other = build_network("resmlp", Arch([(2, 6)]))
    params = init_parameters(small, [1])
    with pytest.raises(ValueError, match="shape"):
        params.load_state_dict(small, 0, init_parameters(other, [1]).state_dict(other, 0))
    deeper = build_network("resmlp", Arch([(3, 5)]))
    with pytest.raises(ValueError, match="missing|unexpected"):
        params.load_state_dict(small, 0, init_parameters(deeper, [1]).state_dict(deeper, 0))


def test_a_trials_initial_weights_depend_only_on_its_seed():
    network = build_network("resmlp", Arch([(2, 9)]))
    together = init_parameters(network, [11, 22, 33])
    alone = init_parameters(network, [22])
    for name, tensor in alone.state_dict(network, 0).items():
        assert torch.equal(together.state_dict(network, 1)[name], tensor)
    different = together.state_dict(network, 0)["layer_stack.0.weight"]
    assert not torch.equal(different, alone.state_dict(network, 0)["layer_stack.0.weight"])


def test_initialisation_is_pytorchs_default_uniform_bound():
    network = build_network("resmlp", Arch([(1, 64)]))
    params = init_parameters(network, [7])
    for spec, w, b in zip(network.linears, params.weights, params.biases):
        bound = 1.0 / math.sqrt(spec.in_features)
        assert w.abs().max() <= bound and b.abs().max() <= bound
        # Spread over the interval, not concentrated near zero.
        assert w.abs().max() > 0.9 * bound
        assert w.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.1)


CASES = [
    ("resmlp", [(3, 6)], 3, 1),
    ("resmlp", [(2, 5), (1, 9), (2, 9 + 3)], 4, 2),
    ("resmlp", [(1, 784), (1, 7)], 2, 1),
    ("resmlp", [(1, 784), (1, 7)], 4, 2),
    ("mlp", [(2, 8), (1, 5)], 3, 3),
    ("mlp", [(1, 6)], 6, 2),
]


@pytest.mark.parametrize(("model", "stacks", "trials", "group_size"), CASES)
def test_batched_forward_equals_a_torch_nn_reference_for_every_trial(
    model, stacks, trials, group_size
):
    network = build_network(model, Arch(stacks))
    params = init_parameters(network, [100 + k for k in range(trials)])
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(trials // group_size, 13, 784, generator=generator)
    logits = forward(network, params, x, group_size)
    assert tuple(logits.shape) == (trials, 13, 10)
    for k in range(trials):
        net = reference(model, stacks)
        net.load_state_dict(params.state_dict(network, k))
        expected = net(x[k // group_size])
        torch.testing.assert_close(logits[k], expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("model", "stacks", "trials", "group_size"), CASES)
def test_dropout_masks_act_where_given_and_nowhere_else(model, stacks, trials, group_size):
    network = build_network(model, Arch(stacks))
    params = init_parameters(network, [200 + k for k in range(trials)])
    generator = torch.Generator().manual_seed(1)
    batch = 11
    x = torch.randn(trials // group_size, batch, 784, generator=generator)
    dropped = 1  # only this trial gets a non-trivial mask
    masks = []
    for width in network.dropout_sites:
        scale = torch.ones(trials, batch, width)
        keep = torch.rand(batch, width, generator=generator) >= 0.5
        scale[dropped] = keep.float() / 0.5
        masks.append(scale)
    plain = forward(network, params, x, group_size)
    masked = forward(network, params, x, group_size, masks)
    for k in range(trials):
        net = reference(model, stacks)
        net.load_state_dict(params.state_dict(network, k))
        sites = dropout_modules(net)
        assert len(sites) == len(masks)
        if k == dropped:
            for module, mask in zip(sites, masks):
                module.mask = mask[k]
            torch.testing.assert_close(masked[k], net(x[k // group_size]), atol=1e-5, rtol=1e-5)
            assert not torch.allclose(masked[k], plain[k])
        else:
            assert torch.equal(masked[k], plain[k])


def test_dropout_sites_are_the_transitions_and_block_inner_activations():
    network = build_network("resmlp", Arch([(2, 4), (1, 8)]))
    assert network.dropout_sites == (4, 4, 4, 8, 8)
    assert build_network("mlp", Arch([(2, 4), (1, 8)])).dropout_sites == (4, 4, 8)


@pytest.mark.parametrize("stacks", [[(2, 5)], [(1, 4), (3, 6)], [(3, 1)]])
def test_every_layer_is_a_view_of_one_flat_tensor_laid_out_as_the_saved_layout_says(stacks):
    network = build_network("resmlp", Arch(stacks))
    params = init_parameters(network, [4, 5])
    assert tuple(params.flat.shape) == (2 * network.parameter_count(),)
    for tensor in params.tensors():
        assert tensor.untyped_storage().data_ptr() == params.flat.untyped_storage().data_ptr()
    layout = layout_description(network)
    for k in range(2):
        from_row = trial_state_dict(layout, params.flat, k)
        wanted = params.state_dict(network, k)
        assert from_row.keys() == wanted.keys()
        assert all(torch.equal(from_row[name], wanted[name]) for name in wanted)
