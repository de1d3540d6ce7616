#!/usr/bin/env bash
# Can several PTB rows share one GPU? Trains the PTB recipe (full softmax, CUDA graphs, fp32) for
# EPOCHS epochs in 1, 2 and 4 processes started together on the one GPU, and reports for each
# process its training seconds (the checkpoint's train_seconds: start-up and the final
# validation left out) and its wall time, so that the combined epochs per second of N processes
# can be set against one's. From the repository root on a machine with a GPU, seqvae importable:
#
#   bash benchmarks/share_gpu.sh PTB_DIR OUT_DIR      # EPOCHS=3, COUNTS="1 2 4"
#
# OUT_DIR/share.txt holds one line per process and a summary per count.
set -uo pipefail
data=${1:?usage: bash benchmarks/share_gpu.sh PTB_DIR OUT_DIR}
out=${2:?usage: bash benchmarks/share_gpu.sh PTB_DIR OUT_DIR}
epochs=${EPOCHS:-3}
counts=${COUNTS:-1 2 4}
steps=${STEPS:-$((epochs * 1315))}   # 42,068 training sentences in batches of 32
device=${DEVICE:-cuda}   # DEVICE=cpu (without graphs) only to try the script itself
graphs=(train.cuda_graphs=true); [ "$device" = cpu ] && graphs=()
mkdir -p "$out"
: > "$out/share.txt"
for count in $counts; do
  start=$(date +%s.%N)
  for i in $(seq 1 "$count"); do
    python recipes/ptb/run.py --data-dir "$data" --eval none --overwrite "run.device=$device" model.output_layer=softmax \
      "${graphs[@]}" "train.max_steps=$steps" "run.seed=$i" "run.dir=$out/n$count-$i" \
      > "$out/n$count-$i.out" 2> "$out/n$count-$i.err" &
  done
  wait
  wall=$(python -c "import time; print(round(time.time() - $start, 1))")
  python - "$out" "$count" "$steps" "$wall" <<'EOF' | tee -a "$out/share.txt"
import sys
import torch
out, count, steps, wall = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
seconds = []
for i in range(1, count + 1):
    payload = torch.load(f"{out}/n{count}-{i}/checkpoints/last.pt", map_location="cpu", weights_only=True)
    seconds.append(payload["train_seconds"])
    print(f"{count} processes, process {i}: step {payload['step']}, {payload['train_seconds']:.1f} s of training")
epochs = steps / 1315
print(f"{count} processes: {wall:.1f} s wall for all; {epochs * count / max(seconds):.3f} epochs/s together "
      f"({epochs / max(seconds):.3f} per process, slowest)")
EOF
done
