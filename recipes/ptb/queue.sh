#!/bin/bash
# The PTB rows and fourth-setting candidates still being trained (RESULTS.md, "Rows not trained"
# and "The fourth setting: how it will be chosen"), as one background lane: the named jobs run
# one after another, each on one thread in fp32 and with --resume, so a lane started again with
# the same jobs continues each from its last checkpoint (after a SIGTERM, a session's end or a
# machine's loss of the process). Run two lanes to use two cores:
#
#   setsid nohup recipes/ptb/queue.sh iaf cand-floor-0.2 cand-bn-vae aggressive > /dev/null 2>&1 &
#   setsid nohup recipes/ptb/queue.sh ae cand-iaf-fb cand-longer > /dev/null 2>&1 &
#
# Jobs: a method name (its row: --eval both, results/NAME.json), `aggressive` (the same, with a
# checkpoint every 150 steps, since one epoch of its aggressive phase takes 88 minutes on one
# thread), `ae` (the autoencoder stage shared by the full-softmax rows and the candidates, in
# runs/ptb-ae-fb-softmax-ae), and `cand-NAME` (a candidate, --eval valid only; each waits until
# `ae` has finished; `cand-longer` trains its own autoencoder from the seed when there is no
# shared one to copy). Logs go to runs/ptb-JOB.log, and a line per start and end to
# runs/queue.log. Stop a lane with `kill -TERM -PGID`: the running job saves its checkpoint.
# THREADS=2 gives a lane both cores (one lane only; the default is one thread).
set -u
cd "$(dirname "$0")/../.."
[ -f .venv/bin/activate ] && . .venv/bin/activate
THREADS=${THREADS:-1}
export OMP_NUM_THREADS=$THREADS PYTHONDONTWRITEBYTECODE=1
mkdir -p runs
run() { python recipes/ptb/run.py --data-dir ../shared/data/ptb "$@" run.threads=$THREADS train.precision=fp32; }
AE=runs/ptb-ae-fb-softmax-ae
SGD=(model.output_layer=softmax model.init=uniform train.optimizer=sgd train.learning_rate=0.5 train.lr_patience=5)
candidate() { local name=$1 from=$2; shift 2
  while [ ! -f "$from/.finished" ]; do sleep 120; done
  run --method ae-fb --from "$from" --resume --eval valid "${SGD[@]}" run.dir=runs/ptb-cand-"$name" "$@"; }
log() { echo "$(date -u '+%F %T') $*" >> runs/queue.log; }
for job in "$@"; do
  log "start $job"
  case $job in
    ae) run --method seqvae-best-sgd --earlier-stages --resume && touch $AE/.finished ;;
    cand-floor-0.2) candidate floor-0.2 $AE objective.free_bits_lambda=0.2 ;;
    cand-iaf-fb) candidate iaf-fb $AE model.flow=iaf model.flow_steps=2 model.flow_hidden=320 \
        objective.free_bits=total_hinge objective.free_bits_lambda=8 train.init_parts=encoder,posterior.projection ;;
    cand-bn-vae) candidate bn-vae $AE model.posterior=batchnorm model.posterior_gamma=0.7 \
        objective.free_bits=none train.init_parts=encoder,posterior.projection ;;
    cand-longer)
      # a copy of the shared autoencoder when it exists; without one, the same config and seed
      # from the start (its first 100 epochs are the shared stage's, whose 100th is its cap); a
      # shared one still training is not waited for
      [ -d runs/ptb-cand-longer-ae ] || [ ! -f $AE/.finished ] \
        || { cp -r $AE runs/ptb-cand-longer-ae && rm runs/ptb-cand-longer-ae/.finished; }
      run --method seqvae-best-sgd --earlier-stages --resume run.dir=runs/ptb-cand-longer train.epochs=200 \
        && touch runs/ptb-cand-longer-ae/.finished && candidate longer runs/ptb-cand-longer-ae ;;
    aggressive) run --method aggressive --resume --eval both --results recipes/ptb/results/aggressive.json \
        train.checkpoint_every=150 ;;
    *) run --method "$job" --resume --eval both --results recipes/ptb/results/"$job".json ;;
  esac > runs/ptb-"$job".log 2>&1
  log "end $job rc=$?"
done
