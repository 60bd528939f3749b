#!/usr/bin/env bash
# The GPU checks, on a machine with a CUDA GPU and the project installed (make venv, or the
# packages on PYTHONPATH): each step runs whatever the one before it did, and the script ends
# with a summary of which passed.
#
#   benchmarks/gpu_checks.sh [RESULTS_DIR]          # PY=python3 to pick the interpreter
#
# 1. pytest -m gpu (tests/train/test_gpu.py): one Ray Train GPU worker learns with nccl and
#    mixed precision (bf16, or fp16 with a GradScaler that the checkpoint keeps), the artifact
#    records where it trained and predicts the same on the CPU.
# 2. benchmarks/train_throughput.py --gpu: images/s of the plain loop and of Ray Train on the GPU
#    (benchmarks/results/train_throughput_gpu.md).
# 3. benchmarks/inference_throughput.py --device cuda (benchmarks/results/inference_throughput_gpu.md).
# 4. the GPU quick search (search_spaces/quick_gpu.yaml: 16 trials, 4 at a time on one GPU) into
#    RESULTS_DIR (default: a temp folder), then its report's leaderboard.
set -u
PY=${PY:-python}
results=${1:-$(mktemp -d)}
export HF_HUB_OFFLINE=1 NO_ALBUMENTATIONS_UPDATE=1 PYTHONUNBUFFERED=1
declare -A status
step() {  # step NAME COMMAND...: run it, time it, remember its exit status
    local name=$1
    shift
    echo "=== $name: $*"
    local t0=$SECONDS
    "$@"
    status[$name]="rc $? in $((SECONDS - t0)) s"
    echo "=== $name: ${status[$name]}"
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))"
step tests "$PY" -m pytest -m gpu -q -p no:cacheprovider tests/train/test_gpu.py
step train_throughput "$PY" benchmarks/train_throughput.py --gpu --epochs 3
step inference_throughput "$PY" benchmarks/inference_throughput.py --device cuda --threads 4
step search "$PY" -m emseg_search.run search_spaces/quick_gpu.yaml --results "$results" --name quick_gpu
echo "=== summary"
for name in tests train_throughput inference_throughput search; do
    echo "$name: ${status[$name]:-not run}"
done
