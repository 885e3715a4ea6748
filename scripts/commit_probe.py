"""How much of a sweep's wall time writing each loop's state costs, in line and on the commit
thread (psa.sweep.commits): the same sweep of one wide architecture both ways, timed whole.

    python scripts/commit_probe.py --device cuda --results-dir /tmp/commit-probe

A measurement for REPRODUCTION.md's GPU section, not part of the package.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import time

from psa.commands import sweep
from psa.sweep.runner import BatchRunner


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--arch", default="[1*1024]")
    parser.add_argument("--trials", default="10")
    parser.add_argument("--meta-loops", default="4")
    parser.add_argument("--results-dir", required=True)
    args = parser.parse_args()
    figures = {}
    for name, background in (("in line", False), ("background", True)):
        BatchRunner._background_commits = lambda self, engine, on=background: on
        argv = ["--arch", args.arch, "--trials", args.trials, "--meta-loops", args.meta_loops]
        argv += ["--seed", "5", "--device", args.device]
        argv += ["--results-dir", f"{args.results_dir}/{name.replace(' ', '-')}"]
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            sweep.main(argv)
        figures[name] = round(time.perf_counter() - start, 2)
    print(json.dumps({"arch": args.arch, "trials": args.trials, "wall_seconds": figures}))


if __name__ == "__main__":
    main()
