"""What one task of a submitit launch runs: ``sweep --shard I/N``, in process, requeued on timeout
or preemption. Imported only where submitit is installed (the launcher and the task itself)."""

from __future__ import annotations

import argparse
import os
import signal
import sys

import submitit
from submitit.helpers import DelayedSubmission

from psa import interrupts

# Requeues in a row that made no progress (not one more loop saved) before a task gives up.
STALLED_RUNS = 5


class ShardTask(submitit.helpers.Checkpointable):
    """``sweep --shard I/N`` with the launching command's flags, as a requeueable submitit job.

    submitit warns a job of a coming timeout or preemption with SIGUSR2 (SLURM's ``--signal``;
    the local executor does the same before its time limit). The task turns it into the sweep's
    own stop (SIGTERM: the loop in flight is committed or dropped, the batch's progress is on
    disk), then lets submitit's handler checkpoint and requeue it. The requeued task runs the
    same shard again and resumes through sweep's resume. A run that saved progress does not
    count against the task; ``STALLED_RUNS`` runs in a row that saved none end it, failed, with
    one line. A task whose sweep has finished exits 0 whatever signal comes after.
    """

    def __init__(self, args: argparse.Namespace, threads: int | None = None, stalled: int = 0):
        self.args = args
        self.threads = threads
        self.stalled = stalled  # runs in a row, before this one, that saved no progress

    def __call__(self) -> int:
        import torch

        from psa.commands import sweep

        threads = os.environ.get("SLURM_CPUS_PER_TASK") or self.threads
        if threads:
            torch.set_num_threads(int(threads))
        start = shard_progress(self.args)
        warned: list[bool] = []  # whether this warning requeues the task
        requeue = signal.getsignal(signal.SIGUSR2)  # submitit's checkpoint-and-requeue handler

        def stop(signum, frame) -> None:
            if warned:
                return
            progressed = shard_progress(self.args) > start
            self.stalled = 0 if progressed else self.stalled + 1
            warned.append(self.stalled < STALLED_RUNS)
            interrupts.announce_requeue(warned[0])
            os.kill(os.getpid(), signal.SIGTERM)

        signal.signal(signal.SIGUSR2, stop)
        try:
            with interrupts.sigterm_stops():  # submitit itself ignores SIGTERM
                sweep.execute(self.args)
        except (SystemExit, KeyboardInterrupt):
            if warned and not warned[0]:
                sys.exit(
                    f"sweep: shard {self.args.shard} was warned of its end {STALLED_RUNS} runs "
                    "in a row before it saved a loop; not requeued: give a longer --time-limit "
                    "and rerun the same command"
                )
            if warned and callable(requeue):
                requeue(signal.SIGUSR2, None)  # checkpoints, requeues and exits
            raise
        finally:
            signal.signal(signal.SIGUSR2, requeue)
            interrupts.announce_requeue(False)
        # The shard's work is done: a warning or a stop that comes now (the time limit, a
        # requeue in flight) must not turn the finished task into a failed one.
        for number in (signal.SIGUSR2, signal.SIGTERM):
            signal.signal(number, signal.SIG_IGN)
        return 0

    def checkpoint(self) -> DelayedSubmission:
        """The same shard again: its progress lives in the results dir, not in this object."""
        return DelayedSubmission(ShardTask(self.args, self.threads, self.stalled))


def shard_progress(args: argparse.Namespace) -> int:
    """Loops the shard has saved so far: the lines of its trials' loop logs (0 before its
    sweep has planned the results dir)."""
    from psa.shard import read_plan
    from psa.store import ResultsStore

    store = ResultsStore(args.results_dir)
    try:
        batch_plan = read_plan(store.root) if store.exists() else None
    except Exception:  # an unreadable plan: the sweep itself says what is wrong
        return 0
    if batch_plan is None or args.shard is None:
        return 0
    total = 0
    for batch in batch_plan.shard_part(args.shard):
        for trial in batch.trials:
            try:
                with store.log_path(trial).open("rb") as stream:
                    total += sum(1 for _ in stream)
            except OSError:
                continue
    return total
