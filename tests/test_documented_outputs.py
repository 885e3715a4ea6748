"""What README.md, TOOLS.md and REPRODUCTION.md quote a command printing, with figures in it, is
what it prints now: each quote is read from the doc and matched against the command's output in
shape (tests/documented.py), and the figures the docs state as this project's (the grid's
hours on the CPU) against the dry runs that print them. The launcher's quotes are checked in
test_launcher.py, train's stop line in test_train.py and merge-results' refusal in
test_merge_results.py."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shlex
import shutil
from types import SimpleNamespace

import pytest

import psa.memory
from documented import ROOT, assert_block_printed, assert_printed, doc_text, quoted, quoted_block
from psa.arch import parse_key
from psa.cli import run
from psa.cloud.progress import Progress
from psa.commands import sweep as sweep_command
from psa.store import ResultsStore
from psa.sweep.events import BatchStarted
from psa.sweep.plan import assign, store_plan

GOLDEN = ROOT / "tests" / "golden" / "outputs"
SHARD_COMMAND = "scripts/poetry run sweep --trials 10 --meta-loops 100 --seed 1234 --results-dir "
SHARD_COMMAND += "results/paper --shard 1/10 --dry-run"
AMPLE_MEMORY = 64 * 2**30  # the docs' figures are of a CPU whose batches the work per step caps


def unmasked(golden: str) -> str:
    """A golden output with its masked durations put back as durations."""
    return golden.replace("~<s>", "~1.0h").replace("<s>", "1.0s")


def printed(capsys, argv: list[str]) -> str:
    capsys.readouterr()
    assert run(argv[0], argv[1:]) in (0, None)
    return capsys.readouterr().out


@pytest.fixture(scope="module")
def paper_plan(tmp_path_factory):
    """REPRODUCTION.md's shard dry run of the paper grid, as written, on the CPU, in a folder
    without any device's stored figures: what it prints, and the batch plan it printed."""
    folder = tmp_path_factory.mktemp("paper")
    (folder / "reproduction").mkdir()
    shutil.copy(ROOT / "reproduction" / "configurations.txt", folder / "reproduction")
    assert f"    {SHARD_COMMAND}" in doc_text("REPRODUCTION.md").splitlines()
    plans = []
    original = sweep_command.print_shard_line

    def keep(console, plan, shard):
        plans.append(plan)
        original(console, plan, shard)

    out = io.StringIO()  # capsys is a test's own: this fixture serves the module
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(out):
        patch.chdir(folder)
        patch.setattr(sweep_command, "print_shard_line", keep)
        patch.setattr(psa.memory, "memory_budget", lambda device: AMPLE_MEMORY)
        words = shlex.split(SHARD_COMMAND)[2:]
        assert run(words[0], [*words[1:], "--device", "cpu"]) in (0, None)
    [plan] = plans
    assert not (folder / "results").exists()
    return out.getvalue(), plan


def hours(seconds: float) -> int:
    return round(seconds / 3600)


def test_the_shard_line_reproduction_quotes_is_what_the_dry_run_prints(paper_plan):
    """REPRODUCTION.md once quoted `Shard 1/10 of batch plan a641f4078752: 73 of 726 batches,
    ~18.6h of ~185.8h`, long after the command printed 62 of 641 batches, ~25.4h of ~253.8h."""
    out, _ = paper_plan
    assert_printed(quoted("REPRODUCTION.md", "Shard 1/10 of batch plan"), out, figures=False)


def test_the_grids_hours_reproduction_states_are_the_dry_runs(paper_plan):
    _, plan = paper_plan
    text = " ".join(doc_text("REPRODUCTION.md").split())
    total = hours(sum(plan.costs))
    owners = assign(plan.costs, 10)
    shards = [
        hours(sum(c for c, o in zip(plan.costs, owners, strict=True) if o == i))
        for i in range(1, 11)
    ]
    stated = re.search(
        r"shard 1 is ~(\d+) h of ~(\d+) h, and every other shard of the ten is ~(\d+) h", text
    )
    assert stated and [int(x) for x in stated.groups()] == [shards[0], total, shards[0]]
    assert set(shards) == {shards[0]}
    per_shard = re.search(
        r"~(\d+) h per shard \(the cost model above; (\d+) h for the grid\)", text
    )
    assert per_shard and [int(x) for x in per_shard.groups()] == [shards[0], total]
    said = re.search(
        r"the dry-run now says \*\*about (\d+) hours\*\* of one idle core, of which `\[1\*2048\]` "
        r"is (\d+) h, `\[1\*1024\]` (\d+) h and `\[2048\*1\]` (\d+) h",
        text,
    )
    assert said, "REPRODUCTION.md no longer states the grid's hours as this test reads them"
    by_arch: dict[str, float] = {}
    for batch, cost in zip(plan.batches, plan.costs, strict=True):
        by_arch[batch.arch.key] = by_arch.get(batch.arch.key, 0.0) + cost
    expected = [total, *(hours(by_arch[key]) for key in ("1*2048", "1*1024", "2048*1"))]
    assert [int(x) for x in said.groups()] == expected


@pytest.mark.parametrize(
    "command",
    [
        'sweep --arch "[2048*1]" --trials 2 --meta-loops 1',
        'sweep --arch "[1*8]" --trials 1 --meta-loops 10',
    ],
)
def test_the_dry_run_column_of_the_cost_models_check_is_what_it_prints(
    command, tmp_path, capsys, monkeypatch
):
    row = f"| `{command}` (K="
    [line] = [line for line in doc_text("REPRODUCTION.md").splitlines() if line.startswith(row)]
    estimate = line.split("|")[2].strip()  # "58 s"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(psa.memory, "memory_budget", lambda device: AMPLE_MEMORY)
    argv = [*shlex.split(command), "--results-dir", str(tmp_path / "r"), "--device", "cpu"]
    out = printed(capsys, [*argv, "--dry-run"])
    assert f"Estimated time: ~{estimate.replace(' ', '')} in one process, by " in out


def test_trains_loop_line_and_version_line_have_the_shape_tools_quotes(capsys):
    golden = unmasked((GOLDEN / "train-full" / "stdout" / "first.txt").read_text())
    assert_printed(quoted("TOOLS.md", "Loop 3/5 (Global: 8)"), golden)
    capsys.readouterr()
    run("train", ["--version"])
    version = capsys.readouterr().out.replace("-dirty)", ")")  # as TOOLS.md says beside it
    assert_printed(quoted("TOOLS.md", "train 0.1.0 (git"), version)


def test_the_decay_line_tools_quotes_has_the_dry_runs_shape():
    golden = unmasked((GOLDEN / "sweep" / "stdout" / "dry-run.txt").read_text())
    assert_printed(quoted("TOOLS.md", "6 decay trials not trained: ..."), golden)


def test_the_resume_line_tools_quotes_is_what_a_resumed_batch_prints(capsys):
    batch = SimpleNamespace(arch=parse_key("4*17"), trials=list(range(12)), saved_loops=12)
    printer = sweep_command.SweepPrinter()
    printer(BatchStarted(batch, 1, 2, 30))
    quote = quoted("TOOLS.md", "[4*17] batch 1/2 (K=12) resuming at")
    assert capsys.readouterr().out.strip() == quote


def test_the_progress_line_tools_quotes_has_the_shape_of_the_results_parsers(capsys):
    with Progress("sagemaker-results-parser", "jobs read", 98) as progress:
        for job in range(98):
            progress.advance(f"job-{job}")
    assert_printed(quoted("TOOLS.md", "sagemaker-results-parser: 10/98"), capsys.readouterr().err)


def test_the_status_blocks_reproduction_quotes_are_what_status_prints(
    tmp_path, capsys, monkeypatch
):
    """Before any task started, and while they run (SLURM's states as the quote gives them)."""
    from psa.sweep import slurm

    results = tmp_path / "paper"
    store = ResultsStore(results)
    jobs = [f"123456_{index}" for index in range(10)]
    submitted = {"launcher": "slurm", "jobs": jobs, "submitted": "2026-12-03T17:50:12Z"}
    (results / "launcher").mkdir(parents=True)
    (results / "launcher" / "submitted.json").write_text(json.dumps(submitted))
    states = {job: {"state": "PENDING", "reason": "Priority", "restarts": 0} for job in jobs}
    monkeypatch.setattr(slurm, "scheduler_states", lambda asked: states)
    out = printed(capsys, ["sweep", "--status", "--results-dir", str(results)])
    block = quoted_block("REPRODUCTION.md", "/shared/psa/paper: submitted;")
    assert_block_printed(
        [line.replace("/shared/psa/paper", str(results)) for line in block], out, figures=False
    )

    plans = []
    monkeypatch.setattr(sweep_command, "print_shard_line", lambda c, plan, s: plans.append(plan))
    grid = [flag for key in ("4*17", "2*8", "1*8", "3*3") for flag in ("--arch", f"[{key}]")]
    printed(capsys, ["sweep", *grid, "--trials", "2", "--results-dir", str(results), "--dry-run"])
    store_plan(store, plans[0])
    (results / "settings.json").write_text(json.dumps({"model": "resmlp"}))
    batches = [batch.members for batch in plans[0].batches]
    assert len(batches) == 4  # two done, two running: the quote's plurals
    done = {trial for members in batches[:2] for trial in members}
    running = {members[0] for members in batches[2:]}
    monkeypatch.setattr(
        ResultsStore,
        "status",
        lambda self, asked, model: SimpleNamespace(done=done, running=running, saved_loops={}),
    )
    states.update(
        {
            jobs[0]: {"state": "RUNNING", "runtime": "01:12:09", "restarts": 0},
            jobs[1]: {"state": "PENDING", "reason": "BeginTime", "restarts": 1},
            jobs[2]: {"state": "COMPLETED", "restarts": 0},
        }
    )
    out = printed(capsys, ["sweep", "--status", "--results-dir", str(results)])
    block = quoted_block("REPRODUCTION.md", "/shared/psa/paper: batch plan")
    assert_block_printed(
        [line.replace("/shared/psa/paper", str(results)) for line in block], out, figures=False
    )


def test_the_claim_counts_the_docs_state_are_the_claims_files_and_check_reproductions():
    counts = {
        name: (ROOT / "reproduction" / "claims" / f"{name}.toml").read_text().count("[[claim]]")
        for name in ("shipped", "smoke")
    }
    golden = (GOLDEN / "report" / "check-reproduction" / "stdout.txt").read_text()
    assert golden.splitlines()[-1] == f"{counts['shipped']} of {counts['shipped']} claims pass"
    tools = " ".join(doc_text("TOOLS.md").split())
    shipped = f"`reproduction/claims/shipped.toml`, {counts['shipped']} claims about the shipped"
    assert shipped in tools
    assert f"`reproduction/claims/smoke.toml`, {counts['smoke']} about the smoke grid" in tools
    reproduction = " ".join(doc_text("REPRODUCTION.md").split())
    assert f"toml`, {counts['shipped']} claims, in seconds" in reproduction
    assert f"toml`, {counts['smoke']} claims whose expected values" in reproduction
    assert f"all {counts['smoke']} claims passed" in reproduction
