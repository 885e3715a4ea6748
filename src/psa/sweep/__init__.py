"""A sweep: a grid of trials (architectures x modes x trial indices) run on the batched engine.

A :class:`SweepRequest` goes in, trial records and loop logs come out in the results dir (written
only through its store, psa.store, which documents the files and what stays true at any
instant), and progress comes back as events (psa.sweep.events); nothing here prints.

    request.py   the SweepRequest, the one value that crosses a process boundary; Shard
    plan.py      the batch plan: batches, the cost model, the split among shards
    runner.py    run(request, on_event) and the BatchRunner that trains one batch
    events.py    what a run reports as it goes
    slurm.py     shards as submitit jobs: a SLURM job array, or submitit's local executor
    devices.py   shards as worker processes of this machine, one per device

A batch is the planned group of pending trials of one architecture trained together. At every
loop boundary a batch logs the loop and saves its progress, so a killed sweep continues each
unfinished batch from its last completed loop; a finished batch's trials are recorded once and
never run again. Trials are claimed before they run, so several sweeps (or shards) can share one
results dir. ``psa.commands.sweep`` is the command line.
"""

from psa.sweep.request import Shard, SweepError, SweepRequest, parse_shard

__all__ = ["Shard", "SweepError", "SweepRequest", "parse_shard"]
