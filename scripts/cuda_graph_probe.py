"""Does the engine's training step gain from a CUDA graph, and does a graphed step give the same
bits? For a few grid architectures on a CUDA device: seconds a step with ``--no-cuda-graph``
(every kernel launched from Python) and replayed from the graph the engine captures each loop,
the share of an eager step's wall time the GPU spends in kernels, and whether the weights and
accuracies after three loops (one unablated, two ablated) are identical.

    python scripts/cuda_graph_probe.py --out probe.json

A measurement for REPRODUCTION.md's GPU section, not part of the package.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

import torch

from psa.arch import parse_arch
from psa.config import Hyperparameters
from psa.data import load_mnist
from psa.engine import Engine, TrialSpec
from psa.model import build_network
from psa.modes import MODES
from psa.seeds import run_seeds, trial_run_seed


def trials(k: int) -> list[TrialSpec]:
    per_mode = k // len(MODES)
    return [
        TrialSpec(mode, run_seeds(trial_run_seed(2026, 1 + index), mode))
        for index in range(per_mode)
        for mode in MODES
    ]


def kernel_share(engine: Engine, steps: int) -> tuple[float, float]:
    """(wall seconds a step, kernel seconds a step) over ``steps`` eager steps."""
    from torch.profiler import ProfilerActivity, profile

    data = engine.data
    cut = replace(data, train_x=data.train_x[: steps * 256], train_y=data.train_y[: steps * 256])
    engine.data = cut
    engine.run_loop(ablate=False)  # warm
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        report = engine.run_loop(ablate=False)
    engine.data = data
    kernels = sum(
        getattr(e, "device_time", 0.0)
        for e in prof.events()
        if e.device_type == torch.autograd.DeviceType.CUDA
    )
    return report.train_seconds / steps, kernels / 1e6 / steps


def probe(arch_flag: str, k: int, steps: int, data_full, profile_steps: int) -> dict:
    network = build_network("resmlp", parse_arch(arch_flag))
    hyper = Hyperparameters()
    n = steps * hyper.batch_size + 80  # a short last batch as in MNIST's 50,000
    data = replace(data_full, train_x=data_full.train_x[:n], train_y=data_full.train_y[:n])
    specs = trials(k)
    result: dict = {"arch": arch_flag, "trials": k, "steps": steps + 1}
    finals = {}
    for name, graphed in (("eager", False), ("graph", True)):
        engine = Engine(network, specs, hyper, data, first_loop="of-run", cuda_graph=graphed)
        engine.revalidate()
        seconds, accuracies = [], []
        for _ in range(3):
            report = engine.run_loop()
            seconds.append(report.train_seconds)
            accuracies.append(report.val_accuracy)
        finals[name] = (engine.params.flat.clone(), engine.lkg.flat.clone(), accuracies)
        result[f"{name}_step_seconds"] = min(seconds[1:]) / (steps + 1)
        del engine
    result["identical_bits"] = bool(
        torch.equal(finals["eager"][0], finals["graph"][0])
        and torch.equal(finals["eager"][1], finals["graph"][1])
        and finals["eager"][2] == finals["graph"][2]
    )
    result["max_abs_difference"] = float((finals["eager"][0] - finals["graph"][0]).abs().max())
    result["speedup"] = result["eager_step_seconds"] / result["graph_step_seconds"]
    try:
        wall, kernels = kernel_share(
            Engine(network, specs, hyper, data_full, cuda_graph=False), profile_steps
        )
    except Exception as error:  # a probe: report and go on
        result["kernel_share_error"] = f"{type(error).__name__}: {error}"
        return result
    result["profiled_step_wall_seconds"] = wall
    result["kernel_seconds_per_step"] = kernels
    result["kernel_share"] = kernels / wall
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--cases", default="4*17:60:20,18*18:60:20,1*1024:60:20,2048*1:6:3")
    parser.add_argument("--profile-steps", type=int, default=6)
    args = parser.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    data = load_mnist(None, "cuda")
    results = []
    for case in args.cases.split(","):
        arch, k, steps = case.split(":")
        try:
            result = probe(f"[{arch}]", int(k), int(steps), data, args.profile_steps)
        except Exception as error:  # a probe: report and go on to the next case
            result = {"arch": arch, "error": f"{type(error).__name__}: {error}"}
        print(json.dumps(result), flush=True)
        results.append(result)
        with open(args.out, "w") as out:
            json.dump(results, out, indent=1)


if __name__ == "__main__":
    main()
