"""What one task of a submitit launch runs: ``sweep --shard I/N``, in process, requeued on timeout
or preemption. Imported only where submitit is installed (the launcher and the task itself)."""

from __future__ import annotations

import argparse
import os
import signal

import submitit
from submitit.helpers import DelayedSubmission

from psa import interrupts


class ShardTask(submitit.helpers.Checkpointable):
    """``sweep --shard I/N`` with the launching command's flags, as a requeueable submitit job.

    submitit warns a job of a coming timeout or preemption with SIGUSR2 (SLURM's ``--signal``;
    the local executor does the same before its time limit). The task turns it into the sweep's
    own stop (SIGTERM: the loop in flight is committed or dropped, the batch's progress is on
    disk), then lets submitit's handler checkpoint and requeue it. The requeued task runs the
    same shard again and resumes through sweep's resume.
    """

    def __init__(self, args: argparse.Namespace, threads: int | None = None):
        self.args = args
        self.threads = threads

    def __call__(self) -> int:
        import torch

        from psa.commands import sweep

        threads = os.environ.get("SLURM_CPUS_PER_TASK") or self.threads
        if threads:
            torch.set_num_threads(int(threads))
        warned: list[int] = []
        requeue = signal.getsignal(signal.SIGUSR2)  # submitit's checkpoint-and-requeue handler

        def stop(signum, frame) -> None:
            warned.append(signum)
            os.kill(os.getpid(), signal.SIGTERM)

        signal.signal(signal.SIGUSR2, stop)
        try:
            with interrupts.sigterm_stops():  # submitit itself ignores SIGTERM
                sweep.execute(self.args)
        except (SystemExit, KeyboardInterrupt):
            if warned and callable(requeue):
                requeue(signal.SIGUSR2, None)  # checkpoints, requeues and exits
            raise
        finally:
            signal.signal(signal.SIGUSR2, requeue)
        return 0

    def checkpoint(self) -> DelayedSubmission:
        """The same shard again: its progress lives in the results dir, not in this object."""
        return DelayedSubmission(ShardTask(self.args, self.threads))
