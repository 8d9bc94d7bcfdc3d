#!/usr/bin/env bash
# The CUDA checks of training across processes and of streamed tables, for a machine with a GPU (a few
# minutes): run from the repository root, `bash benchmarks/distributed_cuda.sh [OUT]`.
#
# 1. A process group of one on CUDA (NCCL): the distributed path (DDP, the reductions, the synchronised
#    batch statistics, the gathered random streams, a resumed reverse-KL fit) against the fits without a
#    group: the largest parameter difference of each.
# 2. `torchrun --nproc-per-node 1 -m flowforge fit --data two-moons --epochs 3 --device cuda`: the
#    command on one GPU (with one process torchrun's run is the one-process fit; several processes need
#    as many GPUs, which `python -m benchmarks.distributed --device cuda --processes N` measures).
# 3. A table of 2,000,000 x 16 rows streamed from a .npy file (`--stream`) with the model on CUDA.
# 4. tests/test_streaming.py and tests/test_distributed.py on this machine.
set -u
root=$PWD
out=${1:-/tmp/flowforge-cuda-checks}
mkdir -p "$out"
export PYTHONPATH="$root/src${PYTHONPATH:+:$PYTHONPATH}" OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))"

echo "== 1. a process group of one on CUDA (NCCL) against the fits without one"
(cd "$out" && WORKER_DEVICE=cuda timeout 300 python "$root/tests/distributed/fit_worker.py" one.pt \
    plain conditional mapped reverse reverse-resume --group-of-one "file://$out/rendezvous-$$") && python - "$out/one.pt" <<'EOF'
import sys

import torch

runs = torch.load(sys.argv[1])
for kind, alone in runs["alone"].items():
    group = runs["group"][kind]
    difference = max(
        float((value.double() - group["state"][name].double()).abs().max())
        for name, value in alone["state"].items()
        if value.is_floating_point()
    )
    print(f"{kind:15s} largest parameter difference {difference:.3g}, losses equal: {torch.equal(alone['train'], group['train'])}")
EOF

echo "== 2. torchrun -m flowforge fit --data two-moons --epochs 3 --device cuda"
start=$(date +%s.%N)
timeout 300 python -m torch.distributed.run --standalone --nproc-per-node 1 -m flowforge fit --data two-moons \
    --epochs 3 --device cuda --no-progress --out "$out/moons" 2>&1 | tail -3
echo "wall $(python -c "print(f'{$(date +%s.%N) - $start:.1f}')") s"
python -c "import json; m = json.load(open('$out/moons/metrics.json')); print({k: m[k] for k in ('world_size', 'test_nll', 'train_time_s')})"

echo "== 3. a streamed table (2,000,000 x 16 float32) with the model on CUDA"
python - "$out/table.npy" <<'EOF'
import sys

import numpy as np

rng = np.random.default_rng(0)
centres = 3 * rng.standard_normal((8, 16))
np.save(sys.argv[1], (centres[rng.integers(0, 8, 2_000_000)] + rng.standard_normal((2_000_000, 16))).astype(np.float32))
EOF
timeout 300 python -m flowforge fit --data "$out/table.npy" --stream --device cuda --flow maf --layers 4 --hidden 64 \
    --epochs 1 --batch-size 1024 --split 0.2,0.01,0.79 --num-samples 100000 --no-progress --out "$out/streamed" 2>&1 | tail -2
python -c "import json; m = json.load(open('$out/streamed/metrics.json')); print({k: m[k] for k in ('test_nll', 'train_time_s', 'rows')})"

echo "== 4. tests"
timeout 400 python -m pytest -q -x -p no:cacheprovider tests/test_streaming.py tests/test_distributed.py 2>&1 | tail -3
