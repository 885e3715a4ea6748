"""``train``: PSA on one network, resumable from its LKG checkpoint."""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

from psa import interrupts
from psa.arch import argparse_arch
from psa.arguments import add_cuda_graph_flag, add_device_flag, existing_path
from psa.checkpoint import (
    DEFAULT_NAME,
    CheckpointError,
    check_compatible,
    check_tensors,
    load_checkpoint,
    make_metadata,
    save_checkpoint,
)
from psa.cli import CommandParser, running
from psa.cli import run as run_command
from psa.commands.console import TrainingDisplay
from psa.config import HYPERPARAMETER_NAMES, Hyperparameters, RunConfig
from psa.data import load_mnist
from psa.device import resolve_device, set_threads
from psa.engine import FIRST_LOOP_EACH_SESSION, Engine, TrialSpec, TrialState
from psa.errors import exit_status, stopped_line
from psa.memory import check_fits
from psa.model import build_network
from psa.modes import MODES
from psa.provenance import capture
from psa.seeds import fresh_seed, run_seeds
from psa.store import LineLog, repair_run_logs, run_log_path
from psa.store.provenance import recording
from psa.store.schema import loop_record


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog="train",
        description="Train one network with Persistent Stochastic Ablation on MNIST. Rerunning "
        "on the same --model-dir resumes from its last-known-good checkpoint.",
    )
    parser.add_argument(
        "--arch",
        type=argparse_arch,
        default="[1*1024]",
        help='layers as COUNT*WIDTH segments, e.g. "[4*4, 2*8]"',
    )
    parser.add_argument(
        "--ablation-mode", choices=MODES, default="none", help="the PSA mode of this run"
    )
    RunConfig.add_flags(
        parser,
        helps={
            "meta_loops": "meta-loops in this run (a rerun on the same model dir adds to them)",
            "seed": "run seed (initialisation, ablation draws, dropout); drawn and printed when "
            "omitted; a resumed run keeps its stored seed (and hyperparameters)",
        },
    )
    parser.add_argument(
        "--model-dir",
        type=Path,
        default=Path("models"),
        help="where the LKG checkpoint and run logs live (SAGEMAKER_MODEL_DIR overrides it)",
    )
    parser.add_argument(
        "--data-seed",
        type=int,
        default=None,
        help="seed of the batch order (default: derived from --seed)",
    )
    add_device_flag(parser)
    add_cuda_graph_flag(parser)
    parser.add_argument(
        "--data-dir",
        type=existing_path,
        default=None,
        help="MNIST folder (default: the shipped dataset/)",
    )
    parser.add_argument(
        "--num-workers",
        type=int,
        default=4,
        help="accepted for compatibility; not needed, the data stays on the device",
    )
    parser.add_argument(
        "--debug", action="store_true", help="print the ablation target and timings of every loop"
    )
    parser.add_argument(
        "--tensorboard",
        action="store_true",
        help="write TensorBoard event files of the loops as they run, with the run's HParams "
        "and its final test accuracy, into MODEL_DIR/tensorboard (the optional extra "
        "tensorboard)",
    )
    return parser


# Settings a resumed run keeps from its checkpoint: given again, they must be the same.
KEPT_ON_RESUME = ("seed", "data_seed", "threads", *HYPERPARAMETER_NAMES)
_UNSET = object()


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--"]:  # `poetry run train -- --flags`, the upstream README's form
        argv = argv[1:]
    parser = build_parser()
    # Preset attributes are not given their defaults: what is still unset was not given.
    args = parser.parse_args(argv, argparse.Namespace(**dict.fromkeys(KEPT_ON_RESUME, _UNSET)))
    given = {name for name in KEPT_ON_RESUME if getattr(args, name) is not _UNSET}
    for name in set(KEPT_ON_RESUME) - given:
        setattr(args, name, parser.get_default(name))
    run(args, given)


def kept_settings(
    args: argparse.Namespace, given: set[str], metadata: dict, checkpoint: Path
) -> tuple[int, int, int | None, Hyperparameters]:
    """The seed, data seed, torch threads and hyperparameters a resumed run continues with: the
    checkpoint's. A flag given again with another value is refused, as sweep refuses a changed
    setting."""
    stored = {
        **asdict(Hyperparameters()),  # keys a checkpoint written before them lacks: upstream's
        **metadata["hyperparameters"],
        "seed": metadata["seed"],
        "data_seed": metadata["data_seed"],
        # A checkpoint written before the count was recorded holds a resume to none.
        "threads": metadata.get("threads", args.threads),
    }
    changed = [
        name for name in KEPT_ON_RESUME if name in given and getattr(args, name) != stored[name]
    ]
    if changed:
        was = ", ".join(f"{name} {stored[name]!r}" for name in changed)
        asked = " ".join(f"--{name.replace('_', '-')} {getattr(args, name)}" for name in changed)
        raise CheckpointError(
            f"{checkpoint} was trained with {was}, and a resumed run keeps its settings; drop "
            f"{asked} to resume it, or give another --model-dir to start a run with them"
        )
    hyper = Hyperparameters(**{name: stored[name] for name in HYPERPARAMETER_NAMES})
    return stored["seed"], stored["data_seed"], stored["threads"], hyper


def run(args: argparse.Namespace, given: set[str] = frozenset()) -> None:
    """Train as ``args`` ask; ``given`` names the flags of KEPT_ON_RESUME on the command line."""
    model_dir = Path(os.environ.get("SAGEMAKER_MODEL_DIR") or args.model_dir)
    checkpoint = model_dir / DEFAULT_NAME
    network = build_network(args.model, args.arch)
    device = resolve_device(args.device, args.matmul_precision)
    hyper = RunConfig.from_args(args).hyper
    metadata = None
    if checkpoint.exists():
        tensors, metadata = load_checkpoint(checkpoint)
        check_compatible(metadata, args.model, args.arch, checkpoint)
        check_tensors(tensors, network, checkpoint)
        seed, data_seed, threads, hyper = kept_settings(args, given, metadata, checkpoint)
        # What the display shows and the run records.
        vars(args).update(asdict(hyper), seed=seed, data_seed=data_seed, threads=threads)
    args.threads = set_threads(args.threads)
    if metadata is not None:
        metadata.setdefault("threads", args.threads)  # recorded from this run on
    check_fits(network, hyper.batch_size, 1, device)  # before anything is allocated
    if args.tensorboard:
        from psa.store import tensorboard

        tensorboard.require()

    started = time.perf_counter()
    data = load_mnist(args.data_dir, device)
    data_seconds = time.perf_counter() - started

    if metadata is None:
        seed = fresh_seed() if args.seed is None else args.seed
        seeds = run_seeds(seed, args.ablation_mode, args.data_seed)
        metadata = make_metadata(
            model=args.model,
            arch=args.arch,
            hyperparameters=asdict(hyper),
            seed=seeds.run,
            data_seed=seeds.data,
            mode=args.ablation_mode,
            threads=args.threads,
        )
    else:
        seeds = run_seeds(seed, args.ablation_mode, data_seed)
    engine = Engine(
        network,
        [TrialSpec(args.ablation_mode, seeds)],
        hyper,
        data,
        loops_completed=metadata["loops_completed"],
        first_loop=FIRST_LOOP_EACH_SESSION,
        cuda_graph=args.cuda_graph,
    )

    planned = metadata["loops_completed"] + args.meta_loops  # the loops this run is to reach
    display = TrainingDisplay(network, args, device, seeds)
    stop, board, log = None, None, None
    # A stop from here on ends with the summary of what is on disk.
    try:
        this_run = capture(device)
        run_id = this_run.id  # names the run's log and its provenance (to the microsecond, unique)
        log = LineLog(run_log_path(model_dir, checkpoint, run_id))
        with interrupts.sigterm_stops(), recording(model_dir, this_run):
            display.header(data_seconds, checkpoint)
            resumed = metadata["loops_completed"] > 0
            if resumed:
                engine.load_lkg(0, tensors)
                engine.revalidate([metadata["bounty_loop"] or 0])
                last_mode = metadata["mode_history"][-1]["mode"]
                if last_mode != args.ablation_mode:
                    metadata["mode_history"].append(
                        {"mode": args.ablation_mode, "first_loop": engine.loops_completed + 1}
                    )
                display.resumed(metadata, engine.state[0].lkg_accuracy, last_mode)
            with display.progress(args.meta_loops) as advance:
                # Lines of a loop the checkpoint does not hold (a kill between the two) go first.
                repair_run_logs(model_dir, checkpoint, metadata["loops_completed"])
                board = live_board(args, model_dir, checkpoint, metadata)
                for session_loop in range(1, args.meta_loops + 1):
                    report = engine.run_loop()
                    state = engine.state[0]
                    # The loop is committed whole: a stop waits until its log line and then its
                    # checkpoint are written. A kill between the two leaves a line that the next
                    # run drops (above).
                    with interrupts.held():
                        line = loop_record(
                            run_id=run_id,
                            network=network,
                            mode=args.ablation_mode,
                            trial=1,
                            loop=report.loop,
                            target=report.targets[0],
                            val_accuracy=report.val_accuracy[0],
                            lkg_accuracy=state.lkg_accuracy,
                            promoted=report.promoted[0],
                            train_seconds=report.train_seconds,
                            provenance=run_id,
                        )
                        log.append(line)
                        if board is not None:
                            board.append(line)
                        metadata.update(
                            loops_completed=report.loop,
                            bounty=state.lkg_accuracy,
                            bounty_loop=state.bounty_loop,
                        )
                        save_checkpoint(checkpoint, engine.lkg.state_dict(network, 0), metadata)
                    display.loop(session_loop, report, state)
                    advance()
    except KeyboardInterrupt as error:
        stop = error
    finally:
        for stream in (log, board):
            if stream is not None:
                stream.close()
    if stop is None:
        test = engine.test_accuracy()[0]
        if board is not None:
            board.append_test(test)
        display.finished(engine.state[0], test, metadata["loops_completed"], checkpoint)
        return
    # The loop in flight is discarded: the summary is of what is on disk.
    if not checkpoint.exists():
        detail = "no meta-loop was completed and nothing was saved; rerun the same command"
    else:
        tensors, on_disk = load_checkpoint(checkpoint)
        engine.load_lkg(0, tensors)
        test = engine.test_accuracy()[0]
        if board is not None:  # its last loop is the checkpoint's: both are written together
            board.append_test(test)
        display.finished(
            TrialState(on_disk["bounty"], on_disk["bounty_loop"]),
            test,
            on_disk["loops_completed"],
            checkpoint,
        )
        detail = (
            f"the LKG checkpoint holds every completed meta-loop ({on_disk['loops_completed']}); "
            + continue_hint(on_disk["loops_completed"], planned)
        )
    print(stopped_line(running("train"), stop, detail), file=sys.stderr)
    sys.exit(exit_status(stop))


def continue_hint(completed: int, planned: int) -> str:
    """How a stopped run reaches the loops it planned: a rerun adds --meta-loops loops to the
    checkpoint's (upstream's meaning of the flag), so the same command would overshoot."""
    left = planned - completed
    if left <= 0:
        return "every planned meta-loop is done"
    return (
        f"rerun with --meta-loops {left} to reach the {planned} planned (the same command "
        "runs its --meta-loops again, from the checkpoint's loops on)"
    )


def live_board(args: argparse.Namespace, model_dir: Path, checkpoint: Path, metadata: dict):
    """With --tensorboard, the model dir's runs rebuilt from its (repaired) run logs and this
    run's TensorBoard run, open for its loops; else None. Their HParams are ``metadata``'s (the
    checkpoint's, or this fresh run's)."""
    if not args.tensorboard:
        return None
    from psa.store import tensorboard

    runs = tensorboard.model_dir_runs(model_dir, checkpoint, metadata)
    tensorboard.rebuild(model_dir, runs)
    key = (args.arch.slug, args.ablation_mode, 1)
    kept = runs.get(key) or tensorboard.Run([], tensorboard.train_trial(metadata, key[1]))
    return tensorboard.LiveRun(tensorboard.run_dir(model_dir, *key), kept)


if __name__ == "__main__":
    sys.exit(run_command("train", sys.argv[1:]))
