#!/usr/bin/env bash
# Spoken language modelling on the mini corpus (SpidR Tables 2-3 at mini scale): discrete units
# -> unit quality -> unit LM -> zero-shot lexical / syntactic / story accuracy, on one CPU thread.
#
#   egs/mini/SSL/slm/run_slm.sh [--stage N] [--stop-stage M] [--work-dir DIR]
#       [--vocab-sizes "50 100 200 500"] [--lm-units "fbank-km100"] [--num-pairs 300]
#       [--epochs 5] [--lm-opts "--num-layers 4 --dim 256"]
#       [--checkpoint CKPT --layer L --name NAME]   # also the units of a pretrained model
#       [--codebook-layer C]   # SpidR/DinoSR: codebook units of target layer C (default: L)
#
# Stages (re-runnable; finished outputs are skipped):
#   0  benchmarks -> data/slm-bench/ (pairs.jsonl, FLAC, manifests) and their fbank
#   1  units, each set in data/slm/<units>/mini_cuts_{train-unlabeled,dev,bench}.jsonl.gz:
#      fbank-km<K> (k-means of the stored fbank, 100 Hz) for each K of --vocab-sizes; with
#      --checkpoint: <name>-l<L>-km<K> (k-means of layer L, 50 Hz) and, for a SpidR/DinoSR
#      checkpoint, <name>-l<C>-cb (codebook predictions of target layer C)
#   2  unit quality on dev -> data/slm/<units>/quality-dev.json (ABX one-hot, PNMI, units/s)
#   3  a unit LM on the train-unlabeled units of each set of --lm-units -> slm/exp-<units>
#   4  zero-shot scores of its averaged model -> slm/exp-<units>/zero-shot-epoch-E.json
#   5  the table -> slm/results.md (local/slm_table.py)
# Needs a prepared corpus (prepare.sh stages 1-2) in --work-dir (default: egs/mini/SSL).
set -euo pipefail

recipe_dir=$(cd "$(dirname "$0")/.." && pwd)
stage=0
stop_stage=100
work_dir=$recipe_dir
vocab_sizes="50 100 200 500"
lm_units="fbank-km100"
num_pairs=300
epochs=5
lm_opts=""
checkpoint=""
layer=""
name="model"
codebook_layer=""

while [ $# -gt 0 ]; do
  case "$1" in
    --stage) stage=$2; shift 2 ;;
    --stop-stage) stop_stage=$2; shift 2 ;;
    --work-dir) work_dir=$2; shift 2 ;;
    --vocab-sizes) vocab_sizes=$2; shift 2 ;;
    --lm-units) lm_units=$2; shift 2 ;;
    --num-pairs) num_pairs=$2; shift 2 ;;
    --epochs) epochs=$2; shift 2 ;;
    --lm-opts) lm_opts=$2; shift 2 ;;
    --checkpoint) checkpoint=$2; shift 2 ;;
    --layer) layer=$2; shift 2 ;;
    --name) name=$2; shift 2 ;;
    --codebook-layer) codebook_layer=$2; shift 2 ;;
    -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 1 ;;
  esac
done

cd "$work_dir"
export PYTHONPATH="$(cd "$recipe_dir/../../.." && pwd)${PYTHONPATH:+:$PYTHONPATH}"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
log() { echo "$(date '+%F %T') (run_slm.sh) $*"; }
bench=data/slm-bench

# a training option stored in --checkpoint (read with the project's safe loader)
ckpt_param() {
  python3 -c "import sys; from icefall.checkpoint import load_file; print(load_file(sys.argv[1])['params'].get(sys.argv[2], ''))" "$checkpoint" "$1"
}

# <units> -> "key frame_rate num_units" of its cuts
describe() {
  case "$1" in
    fbank-km*) echo "kmeans 100 ${1#fbank-km}" ;;
    *-km*) echo "kmeans 50 ${1##*-km}" ;;
    *-cb) echo "units 50 $(ckpt_param codebook_size)" ;;
  esac
}

unit_sets=""
for k in $vocab_sizes; do unit_sets="$unit_sets fbank-km$k"; done
if [ -n "$checkpoint" ]; then
  for k in $vocab_sizes; do unit_sets="$unit_sets $name-l$layer-km$k"; done
  # codebook predictions exist for SpidR and DinoSR only
  method=$(ckpt_param method)
  codebook_layer=${codebook_layer:-$layer}
  case "$method" in spidr|dinosr) unit_sets="$unit_sets $name-l$codebook_layer-cb" ;; esac
fi

if [ $stage -le 0 ] && [ $stop_stage -ge 0 ]; then
  if [ ! -f $bench/pairs.jsonl ]; then
    log "Stage 0: benchmarks ($num_pairs pairs per task)"
    python3 "$recipe_dir/slm/build_benchmarks.py" --out-dir $bench --num-pairs $num_pairs
  fi
  python3 -m icefall.data.features --manifest-dir $bench --fbank-dir $bench/fbank --prefix mini --splits bench
fi

if [ $stage -le 1 ] && [ $stop_stage -ge 1 ]; then
  for units in $unit_sets; do
    out=data/slm/$units
    [ -f $out/mini_cuts_bench.jsonl.gz ] && { log "Stage 1: $out done"; continue; }
    log "Stage 1: units $units"
    case "$units" in
      fbank-km*)
        k=${units#fbank-km}
        python3 -m icefall.ssl.labels --manifest-dir data/fbank --out-dir $out --prefix mini --features stored \
          --num-clusters $k --max-fit-frames 200000 --splits train-unlabeled dev
        python3 -m icefall.ssl.labels --manifest-dir $bench/fbank --out-dir $out --prefix mini --features stored \
          --kmeans-model $out/kmeans.pt --splits bench ;;
      *-km*)
        k=${units##*-km}
        python3 "$recipe_dir/spidr/extract_units.py" --checkpoint $checkpoint --layer $layer --units kmeans \
          --num-clusters $k --splits train-unlabeled dev --out-dir $out
        python3 "$recipe_dir/spidr/extract_units.py" --checkpoint $checkpoint --layer $layer --units kmeans \
          --kmeans-model $out/kmeans.pt --manifest-dir $bench/fbank --splits bench --out-dir $out ;;
      *-cb)
        python3 "$recipe_dir/spidr/extract_units.py" --checkpoint $checkpoint --layer $codebook_layer --units codebook \
          --splits train-unlabeled dev --out-dir $out
        python3 "$recipe_dir/spidr/extract_units.py" --checkpoint $checkpoint --layer $codebook_layer --units codebook \
          --manifest-dir $bench/fbank --splits bench --out-dir $out ;;
    esac
  done
fi

if [ $stage -le 2 ] && [ $stop_stage -ge 2 ]; then
  for units in $unit_sets; do
    out=data/slm/$units/quality-dev.json
    [ -f $out ] && continue
    read -r key rate num <<< "$(describe $units)"
    log "Stage 2: unit quality of $units on dev"
    python3 "$recipe_dir/slm/unit_quality.py" --cuts data/slm/$units/mini_cuts_dev.jsonl.gz --key $key \
      --num-units $num --frame-rate $rate --out $out
  done
fi

if [ $stage -le 3 ] && [ $stop_stage -ge 3 ]; then
  for units in $lm_units; do
    [ -f slm/exp-$units/epoch-$epochs.pt ] && { log "Stage 3: slm/exp-$units/epoch-$epochs.pt exists"; continue; }
    read -r key rate num <<< "$(describe $units)"
    log "Stage 3: unit LM on $units"
    python3 "$recipe_dir/slm/train_lm.py" --train-units data/slm/$units/mini_cuts_train-unlabeled.jsonl.gz \
      --valid-units data/slm/$units/mini_cuts_dev.jsonl.gz --units-key $key --num-units $num \
      --num-epochs $epochs --exp-dir slm/exp-$units $lm_opts
  done
fi

if [ $stage -le 4 ] && [ $stop_stage -ge 4 ]; then
  for units in $lm_units; do
    read -r key rate num <<< "$(describe $units)"
    log "Stage 4: zero-shot scores of slm/exp-$units/epoch-$epochs.pt"
    python3 "$recipe_dir/slm/evaluate.py" --checkpoint slm/exp-$units/epoch-$epochs.pt --pairs $bench/pairs.jsonl \
      --units data/slm/$units/mini_cuts_bench.jsonl.gz --units-key $key --out slm/exp-$units/zero-shot-epoch-$epochs.json
  done
fi

if [ $stage -le 5 ] && [ $stop_stage -ge 5 ]; then
  log "Stage 5: table"
  python3 "$recipe_dir/local/slm_table.py" --units $unit_sets --epoch $epochs | tee slm/results.md
fi
