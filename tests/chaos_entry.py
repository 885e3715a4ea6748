"""Run ``sweep`` or ``train`` through the console entry layer, in a process that signals itself
at a chosen instant: the chaos test's way of landing a stop inside a critical section.

    python tests/chaos_entry.py {sweep,train} ARGS...

``PSA_CHAOS=module:Qualified.name:N:SIGNAL:WHEN`` makes the N-th call of that function send
this process SIGNAL (``INT``, ``TERM`` or ``KILL``) ``before`` or ``after`` the call; ``torn``
(for ``psa.store.jsonlines:LineLog._write`` only) writes half of the bytes, then SIGKILLs. When it
fires it appends a line to the file ``PSA_CHAOS_FIRED``. ``PSA_CHAOS_SUBSET=1`` trains on the
first rows of the real MNIST splits, as tests/conftest.py's ``mnist_small``. Once the entry layer
handles signals, the file ``PSA_CHAOS_STARTED`` (when set) is created.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
from pathlib import Path

from psa import cli

SUBSET_TRAIN, SUBSET_VAL, SUBSET_TEST = 2_000, 1_000, 1_000


def fire(name: str) -> None:
    with open(os.environ["PSA_CHAOS_FIRED"], "a") as marker:
        marker.write(name + "\n")


def patch(spec: str) -> None:
    module_name, qualified, nth, signal_name, when = spec.split(":")
    owner = importlib.import_module(module_name)
    *path, attribute = qualified.split(".")
    for part in path:
        owner = getattr(owner, part)
    original = getattr(owner, attribute)
    number = getattr(signal, f"SIG{signal_name}")
    calls = [0]

    def chaotic(*args, **kwargs):
        calls[0] += 1
        if calls[0] != int(nth):
            return original(*args, **kwargs)
        fire(spec)
        if when == "torn":
            self, data = args
            os.write(self._descriptor, data[: max(1, len(data) // 2)])
            os.kill(os.getpid(), signal.SIGKILL)
        if when == "before":
            os.kill(os.getpid(), number)
        result = original(*args, **kwargs)
        if when == "after":
            os.kill(os.getpid(), number)
        return result

    setattr(owner, attribute, chaotic)


def subset_data() -> None:
    from psa import data

    load = data.load_mnist

    def load_subset(*args, **kwargs):
        full = load(*args, **kwargs)
        return data.MnistSplits(
            full.train_x[:SUBSET_TRAIN],
            full.train_y[:SUBSET_TRAIN],
            full.val_x[:SUBSET_VAL],
            full.val_y[:SUBSET_VAL],
            full.test_x[:SUBSET_TEST],
            full.test_y[:SUBSET_TEST],
        )

    data.load_mnist = load_subset


def prepared(command: str):
    def main(argv: list[str]):
        if os.environ.get("PSA_CHAOS_STARTED"):
            Path(os.environ["PSA_CHAOS_STARTED"]).touch()
        if os.environ.get("PSA_CHAOS_SUBSET"):
            subset_data()
        if os.environ.get("PSA_CHAOS"):
            patch(os.environ["PSA_CHAOS"])
        module = importlib.import_module(f"psa.commands.{command}")
        return module.main(argv)

    return main


sweep_main = prepared("sweep")
train_main = prepared("train")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    command = sys.argv[1]
    cli.COMMANDS[f"chaos-{command}"] = f"chaos_entry:{command}_main"
    sys.exit(cli.finished_process(cli.run(f"chaos-{command}", sys.argv[2:])))
