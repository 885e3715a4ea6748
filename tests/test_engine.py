"""The batched meta-loop engine: K trials in lockstep are the same computation as K single runs,
and each is the PSA meta-loop of spec 2.4."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from psa.arch import Arch
from psa.engine import (
    ADAM_BETAS,
    ADAM_EPS,
    FIRST_LOOP_EACH_SESSION,
    FIRST_LOOP_OF_RUN,
    Engine,
    Hyperparameters,
    TrialSpec,
    _AdamW,
)
from psa.model import build_network
from psa.modes import MODES
from psa.reference import reference
from psa.seeds import RunSeeds, derive, loop_seed, run_seeds, trial_run_seed

NETWORK = build_network("resmlp", Arch([(2, 8)]))
HYPER = Hyperparameters(lr=2e-3, batch_size=250, weight_decay=0.05, dropout=0.3)
# Batched and single runs differ by float rounding only; a large lr lets Adam amplify that into
# visible drift within a few loops, so the equivalence tests use a moderate one.
EQUIVALENCE = Hyperparameters(lr=5e-4, batch_size=250, weight_decay=0.05, dropout=0.3)
BASE_SEED = 1234


def spec(mode: str, trial: int = 1) -> TrialSpec:
    return TrialSpec(mode, run_seeds(trial_run_seed(BASE_SEED, trial), mode))


def state(engine: Engine, k: int, which: str = "lkg") -> dict[str, torch.Tensor]:
    return getattr(engine, which).state_dict(engine.network, k)


def assert_same_weights(a: dict, b: dict, atol: float = 1e-5) -> None:
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=atol, rtol=0, msg=name)


def assert_batched_equals_singles(trials, data, loops, network=NETWORK, hyper=EQUIVALENCE):
    batched = Engine(network, trials, hyper, data)
    singles = [Engine(network, [trial], hyper, data) for trial in trials]
    for loop in range(1, loops + 1):
        report = batched.run_loop(ablate=True)
        single_reports = [engine.run_loop(ablate=True) for engine in singles]
        for k, single in enumerate(single_reports):
            assert report.targets[k] == single.targets[0], (loop, k)
            assert report.promoted[k] == single.promoted[0], (loop, k)
            assert report.val_accuracy[k] == pytest.approx(single.val_accuracy[0], abs=0.11)
            # Every loop, trained and kept weights: a batched trial drifting from its single run
            # (a shared optimizer state, another trial's mask or ablation) shows here.
            for which in ("params", "lkg"):
                assert_same_weights(state(batched, k, which), state(singles[k], 0, which))
        assert [s.bounty_loop for s in batched.state] == [e.state[0].bounty_loop for e in singles]
    return batched, singles


def test_three_paired_modes_batched_equal_three_single_runs(mnist_small):
    trials = [spec("hidden"), spec("decay"), spec("dropout")]
    batched, _ = assert_batched_equals_singles(trials, mnist_small, loops=3)
    assert batched.group_size == 3  # the paired trials really shared one gather


def test_three_trial_indices_batched_equal_three_single_runs(mnist_small):
    trials = [spec("hidden", 1), spec("hidden", 2), spec("full", 3)]
    batched, _ = assert_batched_equals_singles(trials, mnist_small, loops=3)
    assert batched.group_size == 1


def test_all_six_modes_of_two_trial_indices_agree_with_single_runs_over_many_loops(mnist_small):
    trials = [spec(mode, t) for t in (1, 2) for mode in MODES]
    batched, singles = assert_batched_equals_singles(trials, mnist_small, loops=5)
    assert batched.group_size == 6
    for k, engine in enumerate(singles):
        assert batched.state[k].lkg_accuracy == pytest.approx(engine.state[0].lkg_accuracy)


@pytest.mark.parametrize(
    "modes", [("dropout", "none", "dropout", "none"), ("dropout", "dropout", "none", "dropout")]
)
def test_dropout_trials_at_spaced_or_uneven_rows_equal_single_runs(mnist_small, modes):
    # Evenly spaced rows take the scales as one strided view, uneven ones site by site.
    trials = [spec(mode, t) for t, mode in enumerate(modes, start=1)]
    assert_batched_equals_singles(trials, mnist_small, loops=2)


def test_modes_of_one_trial_index_start_from_identical_weights(mnist_small):
    engine = Engine(NETWORK, [spec(mode) for mode in MODES] + [spec("none", 2)], HYPER, mnist_small)
    first = state(engine, 0, "params")
    for k in range(1, len(MODES)):
        for name, tensor in state(engine, k, "params").items():
            assert torch.equal(tensor, first[name])
    other_index = state(engine, len(MODES), "params")
    assert not torch.equal(other_index["layer_stack.0.weight"], first["layer_stack.0.weight"])


def test_modes_of_one_trial_index_see_the_same_batches(mnist_small):
    # No ablation, decay or dropout in loop 1: paired trials differ in nothing, so they must
    # come out of the epoch with the same weights; another trial index must not.
    modes = ["none", "full", "hidden", "output"]
    engine = Engine(NETWORK, [spec(mode) for mode in modes], HYPER, mnist_small)
    engine.run_loop(ablate=False)
    for k in range(1, len(modes)):
        assert_same_weights(state(engine, k, "params"), state(engine, 0, "params"), atol=1e-7)
    other = Engine(NETWORK, [spec("none", 2)], HYPER, mnist_small)
    other.load_lkg(
        0, Engine(NETWORK, [spec("none")], HYPER, mnist_small).lkg.state_dict(NETWORK, 0)
    )
    other.run_loop(ablate=False)  # same start, other batch order
    moved = state(other, 0, "params")["layer_stack.0.weight"]
    assert (moved - state(engine, 0, "params")["layer_stack.0.weight"]).abs().max() > 1e-5


def test_seeds_pair_init_and_data_order_but_not_ablation():
    seeds = {mode: run_seeds(77, mode) for mode in MODES}
    assert len({s.init for s in seeds.values()}) == 1
    assert len({s.data for s in seeds.values()}) == 1
    assert len({s.ablation for s in seeds.values()}) == len(MODES)
    assert run_seeds(78, "none").init != seeds["none"].init
    runs = [trial_run_seed(base, trial) for base, trial in ((1, 1), (1, 2), (2, 1), (2, 2))]
    assert len(set(runs)) == len(runs)
    assert run_seeds(77, "none", data_seed=5).data == 5


def test_seed_derivations_are_pinned_by_value():
    """Every stored result was drawn from these numbers: a change to a derivation (or to numpy's
    SeedSequence) would silently make new runs incomparable with old ones."""
    assert derive(0) == 6375474604893067239
    assert derive(1, 2, 3) == 8208089874740249663
    assert [trial_run_seed(1234, t) for t in (1, 2)] == [1917753852, 1517412644]
    assert [trial_run_seed(1, 1), trial_run_seed(1, 2), trial_run_seed(2, 1)] == [
        483274683,
        1564279569,
        1318843610,
    ]
    assert run_seeds(77, "none") == RunSeeds(
        run=77, init=7505851809903197846, data=8563005085006002480, ablation=7062465930631684757
    )
    assert run_seeds(77, "hidden").ablation == 3541978567575989658
    assert [loop_seed(5, 1), loop_seed(5, 2)] == [9127364161705339435, 1455304595883690642]


def test_a_loop_equals_a_plain_torch_training_epoch_with_adamw(mnist_small):
    """One engine loop is spec 2.4: fresh AdamW, one shuffled epoch of mean CE, then validation."""
    for mode, decay in (("none", 0.0), ("decay", HYPER.weight_decay)):
        trial = spec(mode)
        engine = Engine(NETWORK, [trial], HYPER, mnist_small)
        net = reference("resmlp", NETWORK.arch.stacks)
        net.load_state_dict(state(engine, 0))
        report = engine.run_loop(ablate=False)

        optimizer = torch.optim.AdamW(
            net.parameters(), lr=HYPER.lr, betas=ADAM_BETAS, eps=ADAM_EPS, weight_decay=decay
        )
        n = mnist_small.train_x.shape[0]
        order = torch.randperm(
            n, generator=torch.Generator().manual_seed(loop_seed(trial.seeds.data, 1))
        )
        for first in range(0, n, HYPER.batch_size):
            index = order[first : first + HYPER.batch_size]
            loss = F.cross_entropy(net(mnist_small.train_x[index]), mnist_small.train_y[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        assert_same_weights(state(engine, 0, "params"), net.state_dict())
        with torch.no_grad():
            predicted = net(mnist_small.val_x).argmax(1)
        accuracy = 100.0 * (predicted == mnist_small.val_y).sum().item() / len(predicted)
        assert report.val_accuracy[0] == pytest.approx(accuracy, abs=0.11)


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "foreach"])
def test_the_engine_adamw_steps_exactly_as_torch_optim_adamw(fused):
    generator = torch.Generator().manual_seed(3)
    start = [torch.randn(3, 5, 7, generator=generator), torch.randn(3, 7, generator=generator)]
    inputs = [torch.randn(3, 4, 5, generator=generator) for _ in range(12)]

    def train(step, tensors):
        for x in inputs:
            for tensor in tensors:
                tensor.grad = None
            ((x @ tensors[0]).sum(1) * tensors[1]).pow(2).sum().backward()
            step()
        return tensors

    ours = [tensor.clone().requires_grad_(True) for tensor in start]
    optimizer = _AdamW(ours, lr=1e-3, fused=fused)
    theirs = [tensor.clone().requires_grad_(True) for tensor in start]
    reference_adamw = torch.optim.AdamW(
        theirs, lr=1e-3, betas=ADAM_BETAS, eps=ADAM_EPS, weight_decay=0.0,
        fused=fused, foreach=None if fused else True,
    )  # fmt: skip
    train(optimizer.step, ours)
    train(reference_adamw.step, theirs)
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs))


def test_the_engine_adamw_never_imports_torch_dynamo():
    code = (
        "import sys; from psa.engine import _AdamW; import torch; "
        "p = torch.ones(3, requires_grad=True); p.sum().backward(); "
        "o = _AdamW([p], 1e-3); o.step(); o.zero_grad(); print('torch._dynamo' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True
    )
    assert done.stdout.strip() == "False"


def test_evaluate_matches_the_reference_accuracy_on_the_full_validation_set(mnist):
    engine = Engine(NETWORK, [spec("none", 1), spec("none", 2)], HYPER, mnist)
    accuracies = engine.evaluate(engine.lkg, mnist.val_x, mnist.val_y)
    for k in range(2):
        net = reference("resmlp", NETWORK.arch.stacks)
        net.load_state_dict(state(engine, k))
        with torch.no_grad():
            correct = (net(mnist.val_x).argmax(1) == mnist.val_y).sum().item()
        assert accuracies[k] == pytest.approx(correct / 100.0, abs=0.011)


def test_weight_decay_acts_only_in_decay_mode(mnist_small):
    batched = Engine(NETWORK, [spec("none"), spec("decay"), spec("hidden")], HYPER, mnist_small)
    batched.run_loop(ablate=False)
    for k, mode in ((0, "none"), (2, "hidden")):
        alone = Engine(NETWORK, [spec(mode)], HYPER, mnist_small)
        alone.run_loop(ablate=False)
        assert_same_weights(state(batched, k, "params"), state(alone, 0, "params"))
    none_w = state(batched, 0, "params")["layer_stack.0.weight"]
    decay_w = state(batched, 1, "params")["layer_stack.0.weight"]
    # Same init, same batches, no ablation in loop 1: only the decay separates them, and it
    # shrinks the weights.
    assert (none_w - decay_w).abs().max() > 1e-4
    assert decay_w.norm() < none_w.norm()


def test_paper_default_decay_is_a_float32_no_op_in_torch_adamw_and_in_the_engine(mnist_small):
    # lr 1e-4 x wd 1e-4: the decoupled factor 1 - 1e-8 rounds to 1.0 in float32.
    paper = Hyperparameters(lr=1e-4, batch_size=250, weight_decay=1e-4)
    weights = torch.randn(50, 20)
    grads = torch.randn(50, 20)
    stepped = []
    for decay in (0.0, paper.weight_decay):
        p = weights.clone().requires_grad_(True)
        p.grad = grads.clone()
        torch.optim.AdamW([p], lr=paper.lr, weight_decay=decay).step()
        stepped.append(p.detach())
    assert torch.equal(stepped[0], stepped[1])
    engine = Engine(NETWORK, [spec("none"), spec("decay")], paper, mnist_small)
    engine.run_loop(ablate=False)
    none_state, decay_state = state(engine, 0, "params"), state(engine, 1, "params")
    assert all(torch.equal(none_state[name], decay_state[name]) for name in none_state)


def test_dropout_acts_only_in_dropout_mode_and_only_in_training(mnist_small):
    batched = Engine(NETWORK, [spec("none"), spec("dropout"), spec("decay")], HYPER, mnist_small)
    batched.run_loop(ablate=False)
    alone = Engine(NETWORK, [spec("none")], HYPER, mnist_small)
    alone.run_loop(ablate=False)
    assert_same_weights(state(batched, 0, "params"), state(alone, 0, "params"))
    none_w = state(batched, 0, "params")["layer_stack.0.weight"]
    dropout_w = state(batched, 1, "params")["layer_stack.0.weight"]
    assert (none_w - dropout_w).abs().max() > 1e-4
    # Evaluation is deterministic and dropout-free: the same weights score the same.
    first = batched.evaluate(batched.lkg, mnist_small.val_x, mnist_small.val_y)
    assert batched.evaluate(batched.lkg, mnist_small.val_x, mnist_small.val_y) == first
    net = reference("resmlp", NETWORK.arch.stacks)
    net.load_state_dict(state(batched, 1))
    with torch.no_grad():
        correct = (net(mnist_small.val_x).argmax(1) == mnist_small.val_y).sum().item()
    assert first[1] == pytest.approx(100.0 * correct / len(mnist_small.val_y), abs=0.11)


def test_promotion_requires_strict_improvement(mnist_small):
    frozen = Hyperparameters(lr=0.0, batch_size=500)
    engine = Engine(NETWORK, [spec("none")], frozen, mnist_small)
    first = engine.run_loop(ablate=False)
    assert first.promoted == [True]  # anything beats "no LKG yet"
    assert engine.state[0].bounty_loop == 1
    # lr 0: the loop reproduces the LKG's accuracy exactly, which is not an improvement.
    again = engine.run_loop(ablate=False)
    assert again.val_accuracy == first.val_accuracy
    assert again.promoted == [False]
    assert engine.state[0].bounty_loop == 1
    assert engine.state[0].lkg_accuracy == first.val_accuracy[0]
    engine.state[0].lkg_accuracy -= 0.01  # now the same accuracy is strictly better
    third = engine.run_loop(ablate=False)
    assert third.promoted == [True]
    assert engine.state[0].bounty_loop == 3


def test_a_loop_that_does_not_improve_leaves_the_lkg_untouched(mnist_small):
    engine = Engine(NETWORK, [spec("hidden"), spec("none")], HYPER, mnist_small)
    engine.run_loop(ablate=False)
    before = [state(engine, k) for k in range(2)]
    engine.state[0].lkg_accuracy = 100.0  # trial 0 cannot improve; trial 1 still can
    report = engine.run_loop(ablate=True)
    assert report.promoted[0] is False
    assert_same_weights(state(engine, 0), before[0], atol=0)
    assert engine.state[0].lkg_accuracy == 100.0
    trained = state(engine, 0, "params")
    assert any(not torch.equal(trained[n], before[0][n]) for n in trained)
    if report.promoted[1]:
        assert_same_weights(state(engine, 1), state(engine, 1, "params"), atol=0)


def test_a_resumed_engine_continues_exactly_like_an_uninterrupted_one(mnist_small):
    trial = spec("hidden")
    straight = Engine(NETWORK, [trial], HYPER, mnist_small)
    for _ in range(2):
        straight.run_loop(ablate=True)
    resumed = Engine(NETWORK, [trial], HYPER, mnist_small, loops_completed=2)
    resumed.load_lkg(0, state(straight, 0))
    revalidated = resumed.revalidate([straight.state[0].bounty_loop])
    assert revalidated[0] == straight.state[0].lkg_accuracy
    a, b = straight.run_loop(ablate=True), resumed.run_loop(ablate=True)
    assert a.loop == b.loop == 3
    assert a.targets == b.targets
    assert a.promoted == b.promoted
    assert_same_weights(state(straight, 0, "params"), state(resumed, 0, "params"), atol=0)


@pytest.mark.parametrize(
    ("policy", "ablated"),
    [
        (FIRST_LOOP_EACH_SESSION, [False, True, False, True]),
        (FIRST_LOOP_OF_RUN, [False, True, True, True]),
    ],
    ids=["train-each-session", "sweep-of-run"],
)
def test_the_first_loop_policy_decides_which_loops_train_unablated(mnist_small, policy, ablated):
    """Two sessions of two loops each: train's policy leaves each session's first loop
    unablated, sweep's only loop 1 (a resumed sweep ablates as an uninterrupted one)."""
    tiny = Hyperparameters(lr=2e-3, batch_size=2500)
    first = Engine(NETWORK, [spec("hidden")], tiny, mnist_small, first_loop=policy)
    reports = [first.run_loop(), first.run_loop()]
    second = Engine(NETWORK, [spec("hidden")], tiny, mnist_small, 2, first_loop=policy)
    second.load_lkg(0, state(first, 0))
    reports += [second.run_loop(), second.run_loop()]
    assert [r.loop for r in reports] == [1, 2, 3, 4]
    assert [r.targets[0] is not None for r in reports] == ablated


def test_an_unknown_first_loop_policy_is_refused(mnist_small):
    with pytest.raises(ValueError, match="first-loop policy"):
        Engine(NETWORK, [spec("none")], HYPER, mnist_small, first_loop="sometimes")


def test_bf16_trains_and_keeps_fp32_master_weights(mnist_small):
    bf16 = Hyperparameters(lr=2e-3, batch_size=250, precision="bf16")
    fp32 = Hyperparameters(lr=2e-3, batch_size=250, precision="fp32")
    low = Engine(NETWORK, [spec("none"), spec("dropout")], bf16, mnist_small)
    high = Engine(NETWORK, [spec("none"), spec("dropout")], fp32, mnist_small)
    initial = state(low, 0, "params")
    for _ in range(2):
        low_report = low.run_loop(ablate=True)
        high_report = high.run_loop(ablate=True)
    for params in (low.params, low.lkg):
        assert all(t.dtype == torch.float32 for t in params.tensors())
    trained = state(low, 0, "params")
    # Updates smaller than bf16's resolution survive only in fp32 master weights.
    delta = (trained["layer_stack.0.weight"] - initial["layer_stack.0.weight"]).abs()
    assert delta.max() > 0
    assert not torch.equal(
        trained["layer_stack.0.weight"].bfloat16().float(), trained["layer_stack.0.weight"]
    )
    # Autocast really ran in bf16: the two precisions took different paths.
    assert not torch.equal(
        trained["layer_stack.0.weight"], state(high, 0, "params")["layer_stack.0.weight"]
    )
    for low_acc, high_acc in zip(low_report.val_accuracy, high_report.val_accuracy):
        assert low_acc > 40.0
        assert low_acc == pytest.approx(high_acc, abs=5.0)


def test_an_unknown_precision_is_refused(mnist_small):
    with pytest.raises(ValueError, match="precision"):
        Engine(NETWORK, [spec("none")], Hyperparameters(precision="fp16"), mnist_small)


def test_test_accuracy_scores_the_lkg_not_the_last_trained_weights(mnist_small):
    engine = Engine(NETWORK, [spec("none")], HYPER, mnist_small)
    engine.run_loop(ablate=False)
    engine.state[0].lkg_accuracy = 100.0
    engine.run_loop(ablate=False)  # trained further but not promoted
    lkg_test = engine.evaluate(engine.lkg, mnist_small.test_x, mnist_small.test_y)
    assert engine.test_accuracy() == lkg_test
