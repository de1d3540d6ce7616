#!/usr/bin/env bash
# The CUDA checks of data-parallel / mixed-precision training, as one script for a machine with a
# GPU (never run in CI or the tests). From the repository root, with seqvae and its dependencies
# importable (installed, or on PYTHONPATH; `datasets` too):
#
#   bash benchmarks/cuda.sh PTB_DIR OUT_DIR     # STEPS=400, BATCHES="32 128", STEP_TIMEOUT=180
#   EVAL_RUN=runs/ptb-seqvae-best bash benchmarks/cuda.sh PTB_DIR OUT_DIR    # also step 5
#   PARTS="graphs" bash benchmarks/cuda.sh PTB_DIR OUT_DIR    # only step 6 (about 5 minutes)
#   PARTS="resume" bash benchmarks/cuda.sh PTB_DIR OUT_DIR    # only step 7 (about 2 minutes)
#
# PARTS (default "throughput curves methods ddp graphs resume") picks the numbered steps below by
# name: throughput = 1, curves = 2, methods = 3, ddp = 4, graphs = 6, resume = 7.
#
# 1. benchmarks/throughput.py on CUDA in fp32 and bf16, and benchmarks/profile_step.py in fp32,
#    at each batch size of BATCHES (32 is the PTB recipe's): the VAE's tokens/s beside a cuDNN
#    LSTM language model (and, in the profile, a plain two-LSTM autoencoder) of the same sizes
#    measured in the same run (OUT_DIR/throughput-PRECISION-bBATCH.out, profile-bBATCH.out: one
#    JSON object each).
# 2. The PTB recipe for STEPS steps on CUDA in fp32, bf16 and fp16 (with the gradient scaler), on
#    the CPU in fp32, and on CUDA in fp32 under `torchrun --nproc_per_node 1` (the same run with
#    its noise drawn differently: the reference for what sampling alone changes);
#    benchmarks/compare_curves.py then says whether each curve agrees with CUDA fp32 within that
#    noise (OUT_DIR/curves.txt).
# 3. The methods that need care on CUDA, each for STEPS steps: bn-vae, aggressive, iaf.
# 4. Two processes on one GPU each when there are two: a short torchrun training with nccl
#    (DistributedDataParallel with device_ids; SyncBatchNorm with bn-vae).
# 5. With EVAL_RUN set: `seqvae eval EVAL_RUN --device cuda --split test --iw-samples 500`, to set
#    beside the run's CPU evaluation (the run's data paths must exist on this machine).
# 6. CUDA graphs (train.cuda_graphs, seqvae/cuda_graphs.py): throughput.py --cuda-graphs in fp32
#    and bf16 at each batch size (the graphed VAE beside the eager floor, the target, and beside
#    the floor given the same capture), and at batch 32 with a graph for every width (no padding);
#    profile_step.py --cuda-graphs at batch 32 (how much of the graphed step is kernels); the PTB recipe with the full softmax for STEPS steps eager,
#    eager under torchrun (the noise reference), graphed (widths padded to 8), graphed in bf16,
#    and graphed at width 1; OUT_DIR/graphs.txt says whether the graphed curves agree with the
#    eager one within noise and whether the graphed run at width 1 has the eager run's weights.
# 7. Exact resume on CUDA: the PTB recipe (full softmax) for STEPS steps, and to STEPS/2 then
#    resumed to STEPS, eager and graphed; OUT_DIR/resume.txt says whether each resumed run ends
#    with the uninterrupted one's weights.
#
# Each step runs under its own time limit and a failed step does not stop the others; the steps'
# exit statuses are in OUT_DIR/steps.txt. PTB_DIR must be on the GPU machine (copy
# ../shared/data/ptb into an ignored folder of the checkout and carry it). On an H200 its steps 1-2
# took about 5 minutes in fp32/bf16 (benchmarks/README.md); with the profile, fp16 and the three
# methods added since, plan on about 8 (give the device call 10).
set -uo pipefail
data=${1:?usage: bash benchmarks/cuda.sh PTB_DIR OUT_DIR}
out=${2:?usage: bash benchmarks/cuda.sh PTB_DIR OUT_DIR}
steps=${STEPS:-400}
batches=${BATCHES:-32 128}
limit=${STEP_TIMEOUT:-180}
parts=" ${PARTS:-throughput curves methods ddp graphs resume} "
wants() { [[ $parts == *" $1 "* ]]; }
mkdir -p "$out"
: > "$out/steps.txt"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$out/gpu.txt" 2>&1 || true
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version())" >> "$out/gpu.txt" 2>&1 || true

# step NAME COMMAND...: runs COMMAND under the time limit, its stdout in OUT_DIR/NAME.out and its
# stderr (progress bars, notes) in OUT_DIR/NAME.err.
step() {
  local name=$1; shift
  local start=$SECONDS
  timeout "$limit" "$@" > "$out/$name.out" 2> "$out/$name.err"
  local status=$?
  echo "$name: exit $status, $((SECONDS - start)) s" | tee -a "$out/steps.txt"
}

if wants throughput; then
for batch in $batches; do
  for precision in fp32 bf16; do
    step "throughput-$precision-b$batch" python benchmarks/throughput.py --data-dir "$data" --device cuda \
      --precision "$precision" --batch-size "$batch" --json
  done
  step "profile-b$batch" python benchmarks/profile_step.py --data-dir "$data" --device cuda --batch-size "$batch" --json
done
fi

common=(--data-dir "$data" --eval none "train.max_steps=$steps" train.log_every=10 --overwrite)
if wants curves; then
step cuda-fp32 python recipes/ptb/run.py "${common[@]}" "run.dir=$out/cuda-fp32" run.device=cuda
step cuda-bf16 python recipes/ptb/run.py "${common[@]}" "run.dir=$out/cuda-bf16" run.device=cuda train.precision=bf16
step cuda-fp16 python recipes/ptb/run.py "${common[@]}" "run.dir=$out/cuda-fp16" run.device=cuda train.precision=fp16
step cuda-fp32-torchrun torchrun --nproc_per_node 1 recipes/ptb/run.py "${common[@]}" "run.dir=$out/cuda-fp32-torchrun" run.device=cuda
step cpu-fp32 python recipes/ptb/run.py "${common[@]}" "run.dir=$out/cpu-fp32" run.device=cpu
for other in cuda-bf16 cuda-fp16 cpu-fp32; do
  echo "$other against cuda-fp32:"
  python benchmarks/compare_curves.py "$out/cuda-fp32" "$out/$other" --reference "$out/cuda-fp32-torchrun" 2>&1
done | tee "$out/curves.txt"
fi

if wants methods; then
for method in bn-vae aggressive iaf; do
  step "method-$method" python recipes/ptb/run.py "${common[@]}" --method "$method" "run.dir=$out/method-$method" run.device=cuda
done
fi

if wants ddp && [ "$(nvidia-smi -L 2>/dev/null | wc -l)" -ge 2 ]; then
  step cuda-ddp torchrun --nproc_per_node 2 recipes/ptb/run.py "${common[@]}" "run.dir=$out/cuda-ddp" run.device=cuda train.precision=bf16
  step cuda-ddp-bn-vae torchrun --nproc_per_node 2 recipes/ptb/run.py "${common[@]}" --method bn-vae "run.dir=$out/cuda-ddp-bn-vae" run.device=cuda
fi

if [ -n "${EVAL_RUN:-}" ]; then
  step eval-k500 python -m seqvae eval "$EVAL_RUN" --device cuda --split test --iw-samples 500 --seed 0 --json
fi
if wants graphs; then
  for batch in $batches; do
    for precision in fp32 bf16; do
      step "graphs-throughput-$precision-b$batch" python benchmarks/throughput.py --data-dir "$data" --device cuda \
        --precision "$precision" --batch-size "$batch" --cuda-graphs --json
    done
  done
  step graphs-profile-b32 python benchmarks/profile_step.py --data-dir "$data" --device cuda --batch-size 32 --cuda-graphs --json
  # every width its own graph: no padding, more graphs (and their memory)
  step graphs-throughput-fp32-b32-w1 python benchmarks/throughput.py --data-dir "$data" --device cuda \
    --batch-size 32 --cuda-graphs --graph-width 1 --json
  soft=(--data-dir "$data" --eval none train.log_every=10 run.device=cuda model.output_layer=softmax)
  step graphs-eager python recipes/ptb/run.py "${soft[@]}" "train.max_steps=$steps" --overwrite "run.dir=$out/graphs-eager"
  step graphs-eager-torchrun torchrun --nproc_per_node 1 recipes/ptb/run.py "${soft[@]}" "train.max_steps=$steps" --overwrite \
    "run.dir=$out/graphs-eager-torchrun"
  graphed=("${soft[@]}" train.cuda_graphs=true)
  step graphs-w8 python recipes/ptb/run.py "${graphed[@]}" "train.max_steps=$steps" --overwrite "run.dir=$out/graphs-w8"
  step graphs-bf16 python recipes/ptb/run.py "${graphed[@]}" "train.max_steps=$steps" --overwrite "run.dir=$out/graphs-bf16" \
    train.precision=bf16
  step graphs-w1 python recipes/ptb/run.py "${graphed[@]}" "train.max_steps=$steps" --overwrite "run.dir=$out/graphs-w1" \
    train.cuda_graph_width=1
  {
    for other in graphs-w8 graphs-bf16 graphs-w1; do
      echo "$other against graphs-eager:"
      python benchmarks/compare_curves.py "$out/graphs-eager" "$out/$other" --reference "$out/graphs-eager-torchrun" 2>&1
    done
    echo "weights, graphed at width 1 against eager:"
    python benchmarks/compare_weights.py "$out/graphs-eager" "$out/graphs-w1" 2>&1
  } | tee "$out/graphs.txt"
fi
if wants resume; then
  soft=(--data-dir "$data" --eval none train.log_every=10 run.device=cuda model.output_layer=softmax)
  for mode in eager graphed; do
    extra=(); [ $mode = graphed ] && extra=(train.cuda_graphs=true)
    step "resume-$mode-whole" python recipes/ptb/run.py "${soft[@]}" "${extra[@]}" "train.max_steps=$steps" --overwrite \
      "run.dir=$out/resume-$mode-whole"
    step "resume-$mode-half" python recipes/ptb/run.py "${soft[@]}" "${extra[@]}" "train.max_steps=$((steps / 2))" --overwrite \
      "run.dir=$out/resume-$mode-half"
    step "resume-$mode-resumed" python recipes/ptb/run.py "${soft[@]}" "${extra[@]}" "train.max_steps=$steps" --resume \
      "run.dir=$out/resume-$mode-half"
  done
  for mode in eager graphed; do
    echo "weights, $mode, stopped at step $((steps / 2)) and resumed, against $mode without a stop:"
    python benchmarks/compare_weights.py "$out/resume-$mode-whole" "$out/resume-$mode-half" 2>&1
  done | tee "$out/resume.txt"
fi
echo "done: $out"
