#!/usr/bin/env bash
# Sparsity sweep on the mini corpus: self-pinching gates (one pass) vs uniform magnitude pruning
# (UMP), mixed sparsity and NAS-CP, against the dense model fine-tuned with the same budget.
#
#   egs/mini/SSL/local/prune_sweep.sh [--work-dir DIR] [--pretrained CKPT] [--epochs N]
#       [--targets "0.5 0.7 0.9"] [--eta 1.0] [--threshold-lr 5e-4] [--split test]
#       [--systems "gates ump mixed"] [--patterns zipformer] [--from-dense] [--root DIR]
#       [--dense CKPT] [--seed S] [--lm ARPA --lm-weight W --word-score S]
#       [--stage N] [--stop-stage M] [-- extra prune.py options]
#
# --systems: any of gates, gates-rms (scale-aware gates, --gate-scale rms), nas (NAS-CP; Transformer
# encoders only), ump, mixed (needs gates). --from-dense: gates, gates-rms and nas start from the
# dense model of stage 1 too (the paper's setting: prune a fine-tuned model) instead of --pretrained.
# --pretrained names the architecture (none: the recipe's default, as prune.py --init-ckpt none).
# --dense CKPT: an already fine-tuned dense model (e.g. <ft-dir>/epoch-20.pt) that every system
# starts from (the paper's setting); stage 1 then continues it without pruning for --epochs epochs,
# the baseline with the same budget. --seed goes to every run (one root per seed for the noise).
# --lm: stage 5 also decodes with the lexicon and this n-gram LM (ctc-lexicon-lm; weights as tuned
# on dev for the dense model) and stage 6 prints that table too.
# Options after "--" go to every prune.py run (e.g. --encoder-overrides "" for a hubert-tiny).
#
# --work-dir holds data/ (and download/) as made by run.sh; experiments go to
# <work-dir>/<root>/exp-<system> (root: zipformer/prune-sweep). Every system fine-tunes --epochs epochs:
#   1  dense: CTC fine-tuning of --pretrained without pruning (prune.py --method none)
#   2  gates-<T> (gates-rms-<T>, nas-<T>): one pass with self-pinching gates (scale-aware gates,
#      NAS-CP), target T
#   3  ump-<T>: the dense model of stage 1 pruned by uniform magnitude, then fine-tuned
#   4  mixed-<T>: the dense model pruned by magnitude to the per-layer sparsities of gates-<T>
#   5  decode --split of every system (decode.py --checkpoint <exp>/pruned.pt)
#   6  print the table (icefall.prune.compare) and write <exp-root>/sweep.png
# Finished systems (pruned.pt present) and decodes (recogs present) are skipped on re-runs.
set -euo pipefail

recipe_dir=$(cd "$(dirname "$0")/.." && pwd)
work_dir=$PWD
pretrained=zipformer/exp-pretrain/epoch-2.pt
epochs=8
targets="0.5 0.7 0.9"
eta=1.0
threshold_lr=5e-4
split=test
stage=1
stop_stage=6
systems="gates ump mixed"
patterns=zipformer
from_dense=false
root=zipformer/prune-sweep
dense=""
seed=42
lm=""
lm_weight=1.0
word_score=0.0

while [ $# -gt 0 ]; do
  case "$1" in
    --work-dir) work_dir=$2; shift 2 ;;
    --pretrained) pretrained=$2; shift 2 ;;
    --epochs) epochs=$2; shift 2 ;;
    --targets) targets=$2; shift 2 ;;
    --eta) eta=$2; shift 2 ;;
    --threshold-lr) threshold_lr=$2; shift 2 ;;
    --split) split=$2; shift 2 ;;
    --stage) stage=$2; shift 2 ;;
    --stop-stage) stop_stage=$2; shift 2 ;;
    --systems) systems=$2; shift 2 ;;
    --patterns) patterns=$2; shift 2 ;;
    --from-dense) from_dense=true; shift ;;
    --root) root=$2; shift 2 ;;
    --dense) dense=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    --lm) lm=$2; shift 2 ;;
    --lm-weight) lm_weight=$2; shift 2 ;;
    --word-score) word_score=$2; shift 2 ;;
    --) shift; break ;;
    -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 1 ;;
  esac
done

cd "$work_dir"
export PYTHONPATH="$(cd "$recipe_dir/../../.." && pwd)${PYTHONPATH:+:$PYTHONPATH}"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
extra=("$@")
has() { case " $systems " in *" $1 "*) return 0 ;; esac; return 1; }
[ "$pretrained" = none ] || [ -f "$pretrained" ] || {
  echo "$0: pretrained checkpoint $pretrained not found (run run.sh first)" >&2; exit 1; }
[ -z "$dense" ] || [ -f "$dense" ] || { echo "$0: --dense $dense not found" >&2; exit 1; }
[ -z "$lm" ] || [ -f "$lm" ] || { echo "$0: --lm $lm not found" >&2; exit 1; }
# The model the pruned systems start from: the given fine-tuned one, else stage 1's.
start_dense=${dense:-$root/exp-dense/pruned.pt}

log() { echo "$(date '+%F %T') (prune_sweep.sh) $*"; }
pct() { python3 -c "print(round(100 * $1))"; }

prune() {  # prune <exp-name> <prune.py options...>
  local exp=$root/exp-$1; shift
  if [ -f "$exp/pruned.pt" ]; then log "$exp done, skipping"; return; fi
  log "training $exp"
  local t0=$SECONDS
  python3 "$recipe_dir/zipformer/prune.py" --init-ckpt "$pretrained" --exp-dir "$exp" \
    --num-epochs "$epochs" --tensorboard false --eta "$eta" --threshold-lr "$threshold_lr" --seed "$seed" \
    --patterns $patterns "$@" ${extra[@]+"${extra[@]}"} \
    > "$exp.log" 2>&1 || { echo "$0: $exp failed, see $exp.log" >&2; exit 1; }
  echo $((SECONDS - t0)) > "$exp/wall-seconds"
  log "$exp: $((SECONDS - t0)) s"
}

if [ $stage -le 1 ] && [ $stop_stage -ge 1 ]; then
  mkdir -p $root
  prune dense --method none ${dense:+--dense-ckpt "$dense"}
fi
# Stages 2-4 go target by target, so a stopped sweep has every method at the targets it reached.
in_stage() { [ $stage -le $1 ] && [ $stop_stage -ge $1 ]; }
start=()
{ $from_dense || [ -n "$dense" ]; } && start=(--dense-ckpt "$start_dense")
for t in $targets; do
  T=$(pct $t)
  if in_stage 2; then
    has gates && prune gates-$T --method gates --target-sparsity $t "${start[@]}"
    has gates-rms && prune gates-rms-$T --method gates --gate-scale rms --target-sparsity $t "${start[@]}"
    has nas && prune nas-$T --method nas --target-sparsity $t "${start[@]}"
  fi
  in_stage 3 && has ump && prune ump-$T --method uniform --target-sparsity $t --dense-ckpt "$start_dense"
  in_stage 4 && has mixed && prune mixed-$T --method mixed --target-sparsity $t --dense-ckpt "$start_dense" \
    --sparsity-from $root/exp-gates-$T/sparsity.json
done
if [ $stage -le 5 ] && [ $stop_stage -ge 5 ]; then
  for exp in $root/exp-*/; do
    exp=${exp%/}
    [ -f "$exp/pruned.pt" ] || continue
    if [ ! -f "$exp/ctc-greedy-search/recogs-$split-ctc-greedy-search-pruned.txt" ]; then
      log "decoding $exp ($split)"
      python3 "$recipe_dir/zipformer/decode.py" --checkpoint "$exp/pruned.pt" --exp-dir "$exp" \
        --test-splits "$split" > "$exp/decode-$split.log" 2>&1
    fi
    if [ -n "$lm" ] && ! ls "$exp"/ctc-lexicon-lm/recogs-$split-*-pruned.txt > /dev/null 2>&1; then
      log "decoding $exp ($split) with the lexicon and $lm"
      python3 "$recipe_dir/zipformer/decode.py" --checkpoint "$exp/pruned.pt" --exp-dir "$exp" \
        --test-splits "$split" --decoding-method ctc-lexicon-lm --lm "$lm" --lm-weight "$lm_weight" \
        --word-score "$word_score" > "$exp/decode-lm-$split.log" 2>&1
    fi
  done
fi
if [ $stage -le 6 ] && [ $stop_stage -ge 6 ]; then
  found=""
  for kind in $systems; do
    for t in $targets; do
      exp=$root/exp-$kind-$(pct $t)
      [ -f "$exp/ctc-greedy-search/recogs-$split-ctc-greedy-search-pruned.txt" ] && found="$found $kind-$(pct $t)=$exp"
    done
  done
  python3 -m icefall.prune.compare --split "$split" --baseline dense=$root/exp-dense --systems $found \
    --png $root/sweep.png --title "mini corpus, $split, $epochs epochs per system" | tee $root/table.md
  if [ -n "$lm" ]; then
    python3 -m icefall.prune.compare --split "$split" --decoding-method ctc-lexicon-lm \
      --baseline dense=$root/exp-dense --systems $found --png $root/sweep-lm.png \
      --title "mini corpus, $split, lexicon + LM, $epochs epochs per system" | tee $root/table-lm.md
  fi
fi
