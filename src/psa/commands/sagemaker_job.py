"""What runs inside a SageMaker training job (aws/sagemaker/train.py calls `main`).

The job runs a sweep (psa.sweep) of one architecture: all its trials batched, or one mode as
upstream did. The sweep writes into /opt/ml/checkpoints (synced to S3 and restored after a spot
interruption, so a restarted job skips the trials it already finished); at the end everything is
copied to /opt/ml/model, which SageMaker packs into model.tar.gz, together with upstream's
results.txt. Per-loop and per-trial records are echoed to stdout as JSON lines so CloudWatch
holds them too.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from psa.arch import ArchError, argparse_arch, parse_key
from psa.arguments import argparse_shard, mode_list, trial_count
from psa.atomic import write_text_atomically
from psa.config import RunConfig
from psa.modes import MODES
from psa.store import ResultsStore, upstream_results_name
from psa.sweep import SweepRequest
from psa.sweep.process import Printer, run_reported

CHECKPOINT_DIR = Path("/opt/ml/checkpoints")
MODEL_DIR = Path("/opt/ml/model")
RESULTS_SUBDIR = "sweep"
RELAY_SECONDS = 30.0


@dataclass(frozen=True)
class JobPaths:
    model_dir: Path  # packed into model.tar.gz at the end of the job
    work_dir: Path  # where the sweep writes; survives spot interruptions when checkpointed
    data_channel: Path | None  # the "training" input channel with the MNIST .gz files


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="train.py", description="Run one SageMaker job's share of the PSA grid."
    )
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--arch", type=argparse_arch)
    where.add_argument(
        "--archs", type=arch_keys, help="the grid of a shard job: L*W keys separated by ';'"
    )
    parser.add_argument("--shard", type=argparse_shard, help="the shard I/N of --archs to run")
    parser.add_argument("--modes", type=mode_list, default=MODES)
    parser.add_argument("--trials", type=trial_count, required=True)
    # The run configuration, with the checks sagemaker-runner made before launching the job.
    RunConfig.add_flags(parser)
    return parser.parse_args(argv)


def job_paths(environ: dict[str, str], checkpoint_dir: Path | None = None) -> JobPaths:
    checkpoint_dir = CHECKPOINT_DIR if checkpoint_dir is None else checkpoint_dir
    model_dir = Path(environ.get("SM_MODEL_DIR", str(MODEL_DIR)))
    work_dir = checkpoint_dir / RESULTS_SUBDIR if checkpoint_dir.is_dir() else model_dir
    channel = environ.get("SM_CHANNEL_TRAINING")
    return JobPaths(model_dir, work_dir, Path(channel) if channel else None)


def arch_keys(text: str) -> list:
    """``"4*17;2*8"`` -> the Arch of each key."""
    try:
        return [parse_key(key) for key in text.split(";") if key.strip()]
    except ArchError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def sweep_request(args: argparse.Namespace, results_dir: Path, data_dir: Path | None):
    """The sweep this job runs: its architecture's trials (or its shard of the grid), batched,
    on the best device."""
    return SweepRequest(
        archs=tuple(args.archs) if args.archs else (args.arch,),
        modes=tuple(args.modes),
        trials=args.trials,
        config=RunConfig.from_args(args),
        results_dir=results_dir,
        data_dir=data_dir,
        shard=args.shard if args.archs else None,
    )


def stage_dataset(channel: Path, destination: Path) -> Path:
    """Copy the channel's files to a writable folder: the data module unpacks next to them."""
    destination.mkdir(parents=True, exist_ok=True)
    for source in sorted(channel.iterdir()):
        if source.is_file():
            shutil.copy2(source, destination / source.name)
    return destination


def read_trial_records(results_dir: Path) -> list[dict]:
    return ResultsStore(results_dir).records()


def write_results_txt(results_dir: Path, modes: tuple[str, ...]) -> list[Path]:
    """Upstream's results.txt: one ``%.2f`` validation bounty per line, in trial order.

    A one-mode job writes results.txt; a job of several modes writes results-<mode>.txt each.
    """
    records = read_trial_records(results_dir)
    written = []
    for mode in modes:
        bounties = [
            record["val_bounty"]
            for record in sorted(records, key=lambda r: r["trial"])
            if record["mode"] == mode
        ]
        path = results_dir / upstream_results_name(mode, modes)
        write_text_atomically(path, "".join(f"{bounty:.2f}\n" for bounty in bounties))
        written.append(path)
    return written


class RecordRelay:
    """Echo new lines of the results dir's loop logs and records to stdout, each read once."""

    def __init__(self, results_dir: Path, out=None):
        self.results_dir = results_dir
        self.out = out or sys.stdout
        self.offsets: dict[Path, int] = {}
        self.lock = threading.Lock()

    def flush(self) -> int:
        """Print every complete line not printed yet; return how many."""
        with self.lock:
            printed = 0
            store = ResultsStore(self.results_dir)
            # trials.jsonl only without batch files: its merge repeats what they hold.
            files = store.log_files() + (store.batch_record_files() or [store.trials_path])
            for path in files:
                printed += self._relay(path)
            self.out.flush()
            return printed

    def _relay(self, path: Path) -> int:
        if not path.is_file():
            return 0
        offset = self.offsets.get(path, 0)
        if path.stat().st_size < offset:  # rewritten by a resumed sweep: echo it again
            offset = 0
        with path.open("rb") as handle:
            handle.seek(offset)
            chunk = handle.read()
        complete = chunk[: chunk.rfind(b"\n") + 1]
        self.offsets[path] = offset + len(complete)
        lines = [line for line in complete.decode().splitlines() if line.strip()]
        for line in lines:
            self.out.write(line + "\n")
        return len(lines)

    def run_every(self, seconds: float, stop: threading.Event) -> None:
        while not stop.wait(seconds):
            self.flush()


def publish(work_dir: Path, model_dir: Path) -> None:
    """Copy the sweep's results into the model dir (skipped when the sweep wrote there)."""
    if work_dir.resolve() == model_dir.resolve():
        return
    model_dir.mkdir(parents=True, exist_ok=True)
    shutil.copytree(work_dir, model_dir, dirs_exist_ok=True)


def main(
    argv: list[str] | None = None,
    environ: dict[str, str] | None = None,
    printer: Printer | None = None,
) -> int:
    """Run the job's sweep; ``printer`` shows its progress (the job's script hands it the
    command line's printer)."""
    args = parse_args(argv)
    paths = job_paths(os.environ if environ is None else environ)
    paths.work_dir.mkdir(parents=True, exist_ok=True)
    data_dir = None
    if paths.data_channel is not None:
        data_dir = stage_dataset(paths.data_channel, Path(tempfile.gettempdir()) / "psa-dataset")
    request = sweep_request(args, paths.work_dir, data_dir)
    where = [f"--arch {arch.flag}" for arch in request.archs]
    where += [f"--shard {request.shard}"] if request.shard else []
    flags = {"modes": ",".join(request.modes), "trials": request.trials}
    flags.update(request.config.flag_values())
    shown = " ".join([*where, *(f"--{name} {value}" for name, value in flags.items())])
    print(f"psa job: sweep {shown} --results-dir {paths.work_dir}", flush=True)

    relay = RecordRelay(paths.work_dir)
    stop = threading.Event()
    thread = threading.Thread(target=relay.run_every, args=(RELAY_SECONDS, stop), daemon=True)
    thread.start()
    try:
        run_reported(request, printer)
    finally:
        stop.set()
        thread.join()
        relay.flush()
        if not args.archs:  # upstream's results.txt holds one architecture's bounties
            write_results_txt(paths.work_dir, args.modes)
        publish(paths.work_dir, paths.model_dir)
    return 0
