#!/usr/bin/env bash
# SpidR vs DinoSR on the mini corpus, on one CPU thread: the same encoder (hubert-tiny with the
# fbank front end, 2 codebooks of 64), the same data and budget, then every layer's ABX / PNMI /
# MAP@R on dev against the input fbank. (With the tiny waveform CNN both collapse: docs/spidr.md.)
#
#   egs/mini/SSL/spidr/run_spidr.sh [--stage N] [--stop-stage M] [--work-dir DIR] [--epochs E (6)]
#
# Stages (re-runnable; finished stages are skipped):
#   0  a seeded third of train-unlabeled (40 min) in data/fbank-third/
#   1  SpidR pretraining   -> spidr/exp-spidr
#   2  DinoSR pretraining  -> spidr/exp-dinosr
#   3  per-layer evaluation of epoch E of both on dev -> <exp>/eval-epoch-E/layers.{md,png,json}
#   4  the side-by-side table (local/spidr_table.py) -> spidr/results-epoch-E.md
# Needs a prepared corpus (prepare.sh stages 1-2: audio, fbank cuts with alignments) in
# --work-dir (default: egs/mini/SSL). docs/spidr.md shows the measured results.
set -euo pipefail

recipe_dir=$(cd "$(dirname "$0")/.." && pwd)
stage=0
stop_stage=100
work_dir=$recipe_dir
epochs=6

while [ $# -gt 0 ]; do
  case "$1" in
    --stage) stage=$2; shift 2 ;;
    --stop-stage) stop_stage=$2; shift 2 ;;
    --work-dir) work_dir=$2; shift 2 ;;
    --epochs) epochs=$2; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 1 ;;
  esac
done

cd "$work_dir"
export PYTHONPATH="$(cd "$recipe_dir/../../.." && pwd)${PYTHONPATH:+:$PYTHONPATH}"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
log() { echo "$(date '+%F %T') (run_spidr.sh) $*"; }

# Same options for both methods; only --method differs.
train_opts="--frontend fbank --manifest-dir data/fbank-third --num-epochs $epochs --max-duration 60 --tensorboard false"

if [ $stage -le 0 ] && [ $stop_stage -ge 0 ]; then
  if [ ! -f data/fbank-third/mini_cuts_train-unlabeled.jsonl.gz ]; then
    log "Stage 0: a third of train-unlabeled"
    python3 "$recipe_dir/local/subset_cuts.py" data/fbank/mini_cuts_train-unlabeled.jsonl.gz \
      data/fbank-third/mini_cuts_train-unlabeled.jsonl.gz --fraction 0.3333
    ln -sfn ../fbank/mini_cuts_dev.jsonl.gz data/fbank-third/mini_cuts_dev.jsonl.gz
  fi
fi

for s in 1 2; do
  method=$([ $s = 1 ] && echo spidr || echo dinosr)
  if [ $stage -le $s ] && [ $stop_stage -ge $s ]; then
    if [ -f spidr/exp-$method/epoch-$epochs.pt ]; then
      log "Stage $s: spidr/exp-$method/epoch-$epochs.pt exists, skipping"
    else
      log "Stage $s: $method pretraining"
      python3 "$recipe_dir/spidr/pretrain.py" --method $method --exp-dir spidr/exp-$method $train_opts
    fi
  fi
done

if [ $stage -le 3 ] && [ $stop_stage -ge 3 ]; then
  for method in spidr dinosr; do
    out=spidr/exp-$method/eval-epoch-$epochs
    if [ -f $out/layers.json ]; then
      log "Stage 3: $out exists, skipping"
    else
      log "Stage 3: evaluating every layer of $method epoch $epochs on dev"
      python3 "$recipe_dir/spidr/evaluate.py" --checkpoint spidr/exp-$method/epoch-$epochs.pt \
        --out-dir $out --title "$method, epoch $epochs (mini, dev)"
    fi
  done
fi

if [ $stage -le 4 ] && [ $stop_stage -ge 4 ]; then
  log "Stage 4: table"
  python3 "$recipe_dir/local/spidr_table.py" --epoch $epochs \
    --runs SpidR=spidr/exp-spidr DinoSR=spidr/exp-dinosr | tee spidr/results-epoch-$epochs.md
fi
