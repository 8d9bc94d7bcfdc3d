#!/usr/bin/env bash
# The speed suite's GPU set: every section of benchmarks/run.py on CUDA, quiet and beside busy
# processes (one per core beyond the first), sized to finish in under 5 minutes on one GPU so that
# it fits one session on a lent device. Run from anywhere:
#
#     bash benchmarks/gpu.sh
#
# It prints the GPU, then each section's markdown tables. Sizes are smaller than the CPU suite's
# (1000 seed steps, 1000 demo steps with a frame every 200, 50 timed training steps x 2 repeats),
# flowforge's fits use compile="auto" (eager at these lengths: no cold triton compile in the
# budget), and the memory section runs quiet only (each probe is a fresh CUDA process). Every
# section runs under a share of a 285-second deadline: a section that would overrun is stopped
# and says so, and the ones after it still run when time is left.
set -uo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "(no nvidia-smi)"
"$PYTHON" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "torch sees no CUDA device")' || exit 1

DEADLINE=285
section() {  # section SECONDS ARGS...: one section of the suite on CUDA, stopped after SECONDS (or the deadline)
    local budget=$1 left=$((DEADLINE - SECONDS))
    shift
    if [ "$left" -lt 10 ]; then echo "(skipped, no time left: $*)"; return; fi
    if [ "$budget" -gt "$left" ]; then budget=$left; fi
    local began=$SECONDS
    timeout --kill-after=10 "$budget" "$PYTHON" -m benchmarks.run --device cuda --compile auto --no-cold "$@"
    local rc=$?
    if [ "$rc" -ne 0 ]; then echo "(stopped with status $rc after $((SECONDS - began)) s: $*)"; fi
    echo "[$((SECONDS - began)) s; $SECONDS s in all]"
}

section 70 --only demo --demo-iterations 1000 --demo-repeats 1
section 50 --only seed --iterations 1000 --block 250
section 50 --only coupling --steps-2d 50 --repeats 2
section 60 --only ar64 --steps-64d 50 --repeats 2 --density-batch 100000 --sample-batch 10000
section 60 --only memory --conditions quiet
