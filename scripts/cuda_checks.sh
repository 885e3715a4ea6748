#!/usr/bin/env bash
# The CUDA checks behind REPRODUCTION.md's GPU figures, in one run: the CUDA-graph tests,
# check-device, a three-architecture sweep with and without CUDA graphs (the same bits?), a wide
# sweep writing its state in line and in the background, the CUDA-graph probe, bench's engine
# comparison and trial-epochs per second. Each step has a time limit, so one stuck step cannot
# eat the rest.
#
#   scripts/cuda_checks.sh OUT_DIR [PSA COMMAND...]
#
# PSA COMMAND runs psa's commands (default: scripts/poetry run psa; on a machine with torch but
# without the project installed: env PYTHONPATH=src python3 -m psa). OUT_DIR gets log.txt and
# results.tar.gz (the JSON figures, both sweeps' records and loop logs).
set -uo pipefail
out=${1:?usage: scripts/cuda_checks.sh OUT_DIR [PSA COMMAND...]}
shift
if (($#)); then psa=("$@"); else psa=(scripts/poetry run psa); fi
python=(python3)
[[ ${psa[0]} == scripts/poetry ]] && python=(scripts/poetry run python)
device=${PSA_CHECK_DEVICE:-cuda}  # cpu: try the script itself on a machine without a GPU
mkdir -p "$out"
work=$(mktemp -d)
exec > >(tee "$out/log.txt") 2>&1

step() {
    local limit=$1 started=$SECONDS
    shift
    echo "== $* (limit ${limit} s)"
    timeout "$limit" "$@"
    echo "== exit $? after $((SECONDS - started)) s"
    tar -czf "$out/results.tar.gz" -C "$work" .  # what is done so far, should a later step hang
}

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
"${python[@]}" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'
step 120 env PYTHONPATH=src "${python[@]}" -m pytest -q -p no:cacheprovider tests/test_cuda_graph.py
step 80 "${psa[@]}" check-device --device "$device" --output "$work/check-device.json"
cp results/devices/*.json "$work/" 2>/dev/null
sweep=(sweep --arch "[4*17]" --arch "[18*18]" --arch "[1*1024]" --trials 2 --meta-loops 3 --seed 2026
    --device "$device")
step 70 "${psa[@]}" "${sweep[@]}" --results-dir "$work/sweep-graph"
step 70 "${psa[@]}" "${sweep[@]}" --results-dir "$work/sweep-eager" --no-cuda-graph
env PYTHONPATH=src "${python[@]}" - "$work" <<'PY'
import json, sys
from pathlib import Path
from psa.store.schema import PER_RUN_FIELDS

def records(run):
    lines = (Path(sys.argv[1]) / run / "trials.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in PER_RUN_FIELDS} for line in lines]

a, b = records("sweep-graph"), records("sweep-eager")
print(f"== sweeps with and without CUDA graphs: {len(a)} and {len(b)} records, "
      f"identical but for per-run fields: {a == b}")
PY
step 120 env PYTHONPATH=src "${python[@]}" scripts/commit_probe.py --device "$device" \
    --results-dir "$work/commit-probe" | tee "$work/commit-probe.json"
step 100 env PYTHONPATH=src "${python[@]}" scripts/cuda_graph_probe.py \
    --cases "4*17:60:20,18*18:60:20,1*1024:60:20" --out "$work/cuda-graph-probe.json"
step 90 "${psa[@]}" bench --compare-engines --device "$device" --archs "4*17,18*18,1*1024" \
    --output "$work/bench-engines.json"
step 60 "${psa[@]}" bench --device "$device" --trials 1,60 --output "$work/bench.json"
step 80 env PYTHONPATH=src "${python[@]}" scripts/cuda_graph_probe.py --cases "2048*1:6:2" \
    --profile-steps 2 --out "$work/cuda-graph-probe-2048x1.json"
