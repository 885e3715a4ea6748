"""One table: psa.results.load and export-results (CSV always, parquet with pyarrow) give the trial
records flattened and the loop logs in long form, and round-trip through pandas with their types
and row counts; results-value prints one number of them."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest

import psa.errors
import psa.provenance
import psa.results
from psa.cli import run
from psa.commands import export
from psa.commands import sweep as sweep_command
from psa.report.regimes import REGIMES
from psa.store import ResultsStore
from psa.sweep import runner as sweep_runner

ROOT = Path(psa.results.__file__).resolve().parents[2]
SHIPPED = ROOT / "results"


@pytest.fixture(scope="module")
def swept(tmp_path_factory, repo_dataset, mnist_small) -> Path:
    """A small new sweep (it has provenance): [1*8] and [2*4] x none,output x 2 trials x 2 loops."""
    results = tmp_path_factory.mktemp("export") / "results"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sweep_runner, "load_mnist", lambda *args, **kwargs: mnist_small)
        argv = ["--arch", "[1*8]", "--arch", "[2*4]", "--modes", "none,output", "--trials", "2"]
        argv += ["--meta-loops", "2", "--seed", "9", "--results-dir", str(results)]
        sweep_command.main([*argv, "--data-dir", str(repo_dataset), "--device", "cpu"])
    return results


def test_load_flattens_every_record_and_joins_its_provenance(swept):
    tables = psa.results.load(swept)
    records = ResultsStore(swept).records()
    assert len(tables.trials) == len(records) == 8
    for column in ("seeds.run", "hyperparameters.lr", "val_bounty", "test_accuracy"):
        assert column in tables.trials.columns
    assert {"provenance.host", "provenance.torch_version", "provenance.command"} <= set(
        tables.trials.columns
    )
    assert tables.trials["provenance.outcome"].eq("finished").all()
    assert tables.trials[["depth", "width", "parameters"]].iloc[0].tolist() == [1, 8, 6514]
    assert len(tables.runs) == 1


def test_loops_are_the_logs_in_long_form(swept):
    loops = psa.results.load(swept).loops
    lines = [json.loads(x) for p in ResultsStore(swept).log_files() for x in p.open()]
    assert len(loops) == len(lines) == 16
    assert list(loops.columns) == psa.results.LOOP_COLUMNS
    two = loops[(loops["arch"] == "2*4") & (loops["mode"] == "output") & (loops["trial"] == 2)]
    assert two["loop"].tolist() == [1, 2] and two["depth"].tolist() == [2, 2]
    assert two["ablation_layer"].isna().tolist() == [True, False]  # loop 1 ablates nothing
    assert loops["promoted"].dtype == "boolean" and loops["loop"].dtype == "Int64"


@pytest.mark.parametrize("table", ["trials", "loops", "runs"])
def test_export_results_csv_round_trips_through_pandas_with_types_and_rows(
    swept, tmp_path, capsys, table
):
    assert run("export-results", ["--results-dir", str(swept), "--output-dir", str(tmp_path)]) == 0
    loaded = getattr(psa.results.load(swept), table)
    plain = pd.read_csv(tmp_path / f"{table}.csv")
    assert len(plain) == len(loaded) and list(plain.columns) == list(loaded.columns)
    read = getattr(psa.results.read_export(tmp_path), table)
    assert read.dtypes.to_dict() == loaded.dtypes.to_dict()
    pd.testing.assert_frame_equal(read, loaded, check_exact=True)


def test_export_results_parquet_round_trips_exactly(swept, tmp_path):
    pytest.importorskip("pyarrow")
    argv = ["--results-dir", str(swept), "--format", "parquet", "--output-dir", str(tmp_path)]
    assert run("export-results", argv) == 0
    tables, read = psa.results.load(swept), psa.results.read_export(tmp_path, "parquet")
    for name in ("trials", "loops", "runs"):
        pd.testing.assert_frame_equal(getattr(read, name), getattr(tables, name))


def test_the_shipped_results_load_whole():
    tables = psa.results.load(SHIPPED)
    assert len(tables.trials) == 360 and len(tables.loops) == 3600
    assert tables.trials.groupby(["arch", "mode"]).size().eq(3).all()


def test_results_value_prints_a_statistic_of_the_rows_a_query_keeps(swept, capsys):
    argv = ["--results-dir", str(swept), "--where", "arch == '1*8' and mode == 'none'"]
    assert run("results-value", [*argv, "--stat", "count"]) == 0
    assert capsys.readouterr().out == "2\n"
    records = [r for r in ResultsStore(swept).records() if r["arch"] == "1*8"]
    best = max(r["val_bounty"] for r in records if r["mode"] == "none")
    assert run("results-value", [*argv, "--stat", "max"]) == 0
    assert float(capsys.readouterr().out) == best


def test_results_value_reads_the_summary_its_regimes_and_either_std(capsys):
    def value(*argv: str) -> str:
        assert run("results-value", ["--results-dir", str(SHIPPED), *argv]) == 0
        return capsys.readouterr().out

    where = ["--where", "arch == '1*64' and mode == 'none'"]
    assert value(*where, "--stat", "std") == "0.1854723699\n"  # population, as psa's tables
    assert value(*where, "--stat", "std", "--ddof", "1") == "0.2271563338\n"
    summary = ["--table", "summary", *where, "--stat", "first"]
    assert value(*summary, "--column", "std", "--ddof", "1") == "0.2271563338\n"
    assert value(*summary, "--column", "regime") == "optimally-sized\n"
    assert value("--table", "loops", "--where", "loop == 1", "--column", "ablation_neuron",
                 "--stat", "first") == "nan\n"  # fmt: skip


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--column", "nope"], "has no column 'nope'"),
        (["--where", "arch ==="], "is not a query"),
        (["--where", "arch == 'x'"], "keeps no row"),
        (["--column", "arch", "--stat", "mean"], "column 'arch' holds words"),
        (["--where", "arch.str.len() > 3"], "remove its Call"),
        (["--where", "mode.__class__ == 1"], "remove its Attribute"),
        (["--where", "@open('x', 'w') == 1"], "remove its Call"),
    ],
)
def test_results_value_refuses_a_bad_request_in_one_line(swept, capsys, argv, message):
    assert run("results-value", ["--results-dir", str(swept), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_export_of_a_dir_without_results_is_refused(tmp_path, capsys):
    assert run("export-results", ["--results-dir", str(tmp_path)]) == 1
    assert "holds no trial records" in capsys.readouterr().err
    assert not (tmp_path / "export").exists()
    assert export.FORMATS == ("csv", "parquet")


def test_parquet_without_pyarrow_is_refused_in_one_line(swept, tmp_path, monkeypatch, capsys):
    for name in [n for n in sys.modules if n.split(".")[0] == "pyarrow"]:
        monkeypatch.delitem(sys.modules, name)  # restored after the test
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow fails
    argv = ["--results-dir", str(swept), "--format", "parquet", "--output-dir", str(tmp_path / "o")]
    assert run("export-results", argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "needs pyarrow" in err and "--format csv" in err
    assert not (tmp_path / "o").exists()


def test_summary_states_its_std_and_takes_either(capsys):
    trials = psa.results.load(SHIPPED).trials
    population, sample = psa.results.summary(trials), psa.results.summary(trials, ddof=1)
    assert population.attrs["ddof"] == 0 and sample.attrs["ddof"] == 1
    assert list(population.columns) == psa.results.SUMMARY_COLUMNS
    assert len(population) == 20 * 6 and population["n"].eq(3).all()
    cell = population[(population["arch"] == "1*64") & (population["mode"] == "none")].iloc[0]
    values = trials.query("arch == '1*64' and mode == 'none'")["val_bounty"]
    assert cell["mean"] == pytest.approx(values.mean())
    assert cell["std"] == pytest.approx(values.std(ddof=0)) == pytest.approx(0.18547, abs=1e-5)
    assert sample["std"].tolist() == pytest.approx(
        trials.groupby(["arch", "mode"], sort=False)["val_bounty"].std().tolist()
    )
    assert psa.results.std_sentence(1) == (
        "Std is the sample standard deviation over the trials (ddof=1)."
    )


def test_summary_names_the_regime_classify_regimes_gives_each_architecture(capsys):
    regimes = psa.results.summary(psa.results.load(SHIPPED).trials).groupby("arch")["regime"]
    assert regimes.nunique().eq(1).all()
    argv = ["--trials-file", str(SHIPPED), "--format", "json"]
    assert run("classify-regimes", argv) == 0
    classified = json.loads(capsys.readouterr().out)["architectures"]
    labels = {key: regime.label for key, regime in REGIMES.items()}
    assert {row["architecture"]: row["regime"] for row in classified} == {
        arch: labels[regime] for arch, regime in regimes.first().items()
    }


def test_load_of_several_dirs_names_each_rows_source():
    fp32 = SHIPPED / "precision" / "fp32"
    tables = psa.results.load(SHIPPED, fp32)
    assert tables.trials.columns[0] == tables.loops.columns[0] == "source"
    assert tables.trials["source"].value_counts().to_dict() == {str(SHIPPED): 360, str(fp32): 72}
    assert len(tables.loops) == 3600 + 72 * 5
    assert list(tables.trials.columns[1:]) == list(psa.results.TRIAL_TYPES)
    summary = psa.results.summary(tables.trials)
    assert summary.groupby("source").size().to_dict() == {str(SHIPPED): 120, str(fp32): 24}
    with pytest.raises(psa.errors.PsaError, match="given twice"):
        psa.results.load(SHIPPED, fp32, SHIPPED)


def tables_with_twins(folder: Path) -> psa.results.Results:
    """The tables of a dir whose decay records are copies of their none twins (sweep's own)."""
    folder.mkdir()
    records = ResultsStore(SHIPPED).records()[:2]
    twin = {**records[0], "mode": "decay", "twin_of": "none", "twin_reason": "factor is 1.0"}
    lines = [records[0], twin]
    (folder / "trials.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    return psa.results.load(folder)


def test_the_tables_have_their_fixed_columns_whatever_the_dir_holds(swept, tmp_path):
    empty = psa.results.load(tmp_path)
    for source in (psa.results.load(SHIPPED), psa.results.load(swept), empty):
        assert source.trials.dtypes.astype(str).to_dict() == psa.results.TRIAL_TYPES
        assert source.loops.dtypes.astype(str).to_dict() == psa.results.LOOP_TYPES
        assert source.runs.dtypes.astype(str).to_dict() == psa.results.RUN_TYPES
    assert set(psa.results.PROVENANCE_TYPES) == set(psa.provenance.FIELDS)
    twins = tables_with_twins(tmp_path / "twins")
    assert twins.trials.dtypes.astype(str).to_dict() == psa.results.TRIAL_TYPES
    assert twins.trials["twin_of"].eq("none").sum() == twins.trials["mode"].eq("decay").sum() > 0
    shipped = psa.results.load(SHIPPED)
    assert shipped.trials["provenance.host"].isna().all()  # logged before provenance existed
    neurons = shipped.loops["ablation_neuron"]
    assert neurons.isna().sum() == (shipped.loops["ablation_layer"].isna()).sum() > 0
    assert neurons.dropna().eq(neurons.dropna().round()).all()


def test_export_writes_integers_as_integers_and_absent_values_empty(tmp_path, capsys):
    argv = ["--results-dir", str(SHIPPED), "--output-dir", str(tmp_path)]
    assert run("export-results", argv) == 0
    assert "trials.csv: 360 rows, 63 columns" in capsys.readouterr().out
    header, *rows = (tmp_path / "loops.csv").read_text().splitlines()
    assert header.split(",")[11:13] == ["ablation_layer", "ablation_neuron"]
    targets = [row.split(",")[11:13] for row in rows]
    assert ["", ""] in targets  # a loop that ablates nothing
    neurons = [neuron for layer, neuron in targets if layer]
    assert neurons and all(neuron.isdigit() for neuron in neurons)  # 7, not 7.0
    schema = json.loads((tmp_path / "schema.json").read_text())
    assert schema["loops"]["ablation_neuron"] == "Int64" and schema["trials"]["trial"] == "Int64"
