#!/usr/bin/env bash
# The CUDA checks of data-parallel / mixed-precision training, as one script for a machine with a
# GPU (never run in CI or the tests). From the repository root, with seqvae installed:
#
#   bash benchmarks/cuda.sh PTB_DIR OUT_DIR        # STEPS=400 by default
#
# 1. The PTB recipe for STEPS steps on CUDA in fp32 and in bf16, on the CPU in fp32, and on CUDA in
#    fp32 under `torchrun --nproc_per_node 1` (the same run with its noise drawn differently: the
#    reference for what sampling alone changes); benchmarks/compare_curves.py then says whether the
#    bf16 and CPU loss curves agree with CUDA fp32 within that noise (OUT_DIR/curves.txt).
# 2. benchmarks/throughput.py on CUDA in fp32 and bf16: the VAE's tokens/s beside a cuDNN LSTM
#    language model of the same sizes measured in the same run (OUT_DIR/throughput-*.json).
# 3. Two processes on one GPU each when there are two: a short torchrun training with nccl.
#
# PTB_DIR must be on the GPU machine (copy ../shared/data/ptb into an ignored folder of the
# checkout and carry it).
set -euo pipefail
data=${1:?usage: bash benchmarks/cuda.sh PTB_DIR OUT_DIR}
out=${2:?usage: bash benchmarks/cuda.sh PTB_DIR OUT_DIR}
steps=${STEPS:-400}
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total --format=csv > "$out/gpu.txt" || true
common=(--data-dir "$data" --eval none "train.max_steps=$steps" train.log_every=10 --overwrite)

python recipes/ptb/run.py "${common[@]}" "run.dir=$out/cuda-fp32" run.device=cuda > "$out/cuda-fp32.log" 2>&1
python recipes/ptb/run.py "${common[@]}" "run.dir=$out/cuda-bf16" run.device=cuda train.precision=bf16 > "$out/cuda-bf16.log" 2>&1
torchrun --nproc_per_node 1 recipes/ptb/run.py "${common[@]}" "run.dir=$out/cuda-fp32-torchrun" run.device=cuda > "$out/cuda-fp32-torchrun.log" 2>&1
python recipes/ptb/run.py "${common[@]}" "run.dir=$out/cpu-fp32" run.device=cpu > "$out/cpu-fp32.log" 2>&1
{
  echo "CUDA bf16 against CUDA fp32:"
  python benchmarks/compare_curves.py "$out/cuda-fp32" "$out/cuda-bf16" --reference "$out/cuda-fp32-torchrun" || true
  echo "CPU fp32 against CUDA fp32:"
  python benchmarks/compare_curves.py "$out/cuda-fp32" "$out/cpu-fp32" --reference "$out/cuda-fp32-torchrun" || true
} | tee "$out/curves.txt"

for precision in fp32 bf16; do
  python benchmarks/throughput.py --data-dir "$data" --device cuda --precision "$precision" --json > "$out/throughput-$precision.json"
done

if [ "$(nvidia-smi -L | wc -l)" -ge 2 ]; then
  torchrun --nproc_per_node 2 recipes/ptb/run.py "${common[@]}" "run.dir=$out/cuda-ddp" run.device=cuda train.precision=bf16 > "$out/cuda-ddp.log" 2>&1
fi
echo "done: $out"
