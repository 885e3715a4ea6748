"""check-device: this device against a float64 CPU reference (run here on the CPU, as in CI), its
report, and the float32 matmul precision it and every training command pin on CUDA."""

from __future__ import annotations

import json
import re

import pytest
import torch

from psa import cli, selfcheck
from psa import engine as engine_module
from psa.costs import device_costs_path
from psa.device import resolve_device, set_matmul_precision


def check_device(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        status = cli.run("check-device", argv)
    except SystemExit as done:
        status = done.code
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_the_cpu_matches_the_float64_reference_and_the_grid_is_projected(
    capsys, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    # The machine running the tests is shared: store the figures whatever its load.
    argv = ["--device", "cpu", "--archs", "4*17", "--steps", "2", "--json", "--store-when-busy"]
    status, out, err = check_device([*argv, "--output", str(tmp_path / "device.json")], capsys)
    assert status == 0, err
    report = json.loads(out)
    assert report == json.loads((tmp_path / "device.json").read_text())
    assert report["passed"] is True
    checks = {(c["check"], c["network"]) for c in report["comparisons"]}
    assert len(checks) == 5 * len(selfcheck.NUMERIC_NETWORKS)
    for comparison in report["comparisons"]:
        assert comparison["passed"] and 0 <= comparison["error"] <= comparison["tolerance"]
    assert report["environment"]["device"] == "cpu"
    assert report["environment"]["float32_matmul_precision"] == "highest"
    (timing,) = report["timings"]
    assert timing["arch"] == "[4*17]" and timing["trials"] == 60 and timing["steps_timed"] == 2
    assert timing["trial_epochs_per_second"] == pytest.approx(60 / timing["seconds_per_loop"])
    assert report["grid"]["architectures"] == 98 and report["grid"]["projected_hours"] > 0
    stored = tmp_path / device_costs_path(report["environment"]["device_model"])
    assert stored.parent == tmp_path / "results" / "devices"
    assert json.loads(stored.read_text()) == report  # where sweep finds this device's figures


def test_no_save_stores_no_figures(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = ["--device", "cpu", "--archs", "4*17", "--steps", "1", "--json", "--no-save"]
    assert check_device(argv, capsys)[0] == 0
    assert not (tmp_path / "results").exists()


def test_the_table_names_every_check_and_says_pass(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    status, out, err = check_device(["--device", "cpu", "--archs", ""], capsys)
    assert status == 0, err
    for check in ("forward logits", "gradients", "2 loops: LKG weights", "device_model"):
        assert check in out
    assert out.rstrip().endswith("PASS") and "FAIL" not in out


def test_piped_tables_are_plain_aligned_text(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    status, out, err = check_device(["--device", "cpu", "--archs", ""], capsys)
    assert status == 0, err
    assert not re.search("[\u2500-\u257f]", out)  # no box-drawing characters
    lines = out.splitlines()
    header = next(line for line in lines if line.startswith("check "))
    rows = lines[lines.index(header) + 1 :][: len(selfcheck.NUMERIC_NETWORKS) * 5]
    for row in rows:  # "result" left-aligned, "tolerance" right-aligned, as the table says
        assert row.index("PASS") == header.index("result")
        end = header.index("tolerance") + len("tolerance")
        assert row[end - 1] != " " and row[end] == " "


def test_a_perturbed_engine_forward_fails_the_check(capsys, monkeypatch):
    forward = engine_module.forward

    def perturbed(*args, **kwargs):
        logits = forward(*args, **kwargs)
        return logits + 1e-3 * torch.arange(10, dtype=logits.dtype, device=logits.device)

    monkeypatch.setattr(engine_module, "forward", perturbed)
    status, out, err = check_device(["--device", "cpu", "--archs", "", "--json"], capsys)
    assert status == 1
    assert err.startswith("check-device: ") and err.count("\n") == 1
    assert "comparisons with the float64 reference failed on cpu" in err
    failed = {c["check"] for c in json.loads(out)["comparisons"] if not c["passed"]}
    assert {"forward logits", "gradients", "2 loops: LKG weights"} <= failed


def test_an_optimizer_step_off_by_one_percent_fails_the_loop_check(capsys, monkeypatch):
    over = engine_module._AdamW.over.__func__

    def off(cls, network, flat, trials, lr):
        return over(cls, network, flat, trials, lr * 1.01)

    monkeypatch.setattr(engine_module._AdamW, "over", classmethod(off))
    status, out, _ = check_device(["--device", "cpu", "--archs", "", "--json"], capsys)
    assert status == 1
    failed = {c["check"] for c in json.loads(out)["comparisons"] if not c["passed"]}
    assert "2 loops: LKG weights" in failed and not failed & {"forward logits", "gradients"}


@pytest.fixture
def restored_matmul_settings():
    saved = (
        torch.get_float32_matmul_precision(),
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
    )
    yield
    torch.set_float32_matmul_precision(saved[0])
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved[1:]


def test_highest_matmul_precision_turns_tf32_off_whatever_was_set(restored_matmul_settings):
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    set_matmul_precision("highest")
    assert torch.get_float32_matmul_precision() == "highest"
    assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    set_matmul_precision("high")
    assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32


def test_the_cpu_keeps_torchs_matmul_settings(restored_matmul_settings):
    torch.backends.cudnn.allow_tf32 = True
    assert resolve_device("cpu", "medium") == torch.device("cpu")
    assert torch.get_float32_matmul_precision() == "highest" and torch.backends.cudnn.allow_tf32


def test_training_commands_take_the_matmul_precision_flag():
    from psa.commands import bench, sweep, train

    for command in (train, sweep, bench):
        parser = command.build_parser()
        assert parser.parse_args([]).matmul_precision == "highest"
        assert parser.parse_args(["--matmul-precision", "high"]).matmul_precision == "high"


def busy_result(spread: float, cpu_share: float | None) -> selfcheck.SelfCheck:
    timing = selfcheck.Timing("[4*17]", 60, 2, 0.01, 2.0, spread, cpu_share)
    return selfcheck.SelfCheck({"device": "cpu", "device_model": "Test CPU"}, [], [timing])


@pytest.mark.parametrize(
    ("spread", "cpu_share", "sign"),
    [(0.4, 1.0, "two timings of the same steps 40% apart"), (0.0, 0.5, "ran 50% of the time")],
)
def test_timings_taken_on_a_busy_machine_are_named_and_not_stored(
    capsys, tmp_path, monkeypatch, spread, cpu_share, sign
):
    from psa.commands import check_device as command

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(command, "run_selfcheck", lambda *a, **k: busy_result(spread, cpu_share))
    monkeypatch.setattr(command, "print_report", lambda result: None)
    status, _, err = check_device(["--device", "cpu", "--archs", "4*17"], capsys)
    assert status == 0
    [line] = err.splitlines()
    assert line.startswith("check-device: the machine looked busy while timing ([4*17]: ")
    assert sign in line and "were not stored" in line
    assert not (tmp_path / "results").exists()


def test_consistent_timings_are_no_sign_of_load():
    assert busy_result(0.1, 0.95).load_signs() == []
    assert busy_result(0.1, None).load_signs() == []  # a GPU's process time says nothing
