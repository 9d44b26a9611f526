#!/usr/bin/env bash
# Sparsity sweep on the mini corpus: self-pinching gates (one pass) vs uniform magnitude pruning
# (UMP), mixed sparsity and NAS-CP, against the dense model fine-tuned with the same budget.
#
#   egs/mini/SSL/local/prune_sweep.sh [--work-dir DIR] [--pretrained CKPT] [--epochs N]
#       [--targets "0.5 0.7 0.9"] [--eta 1.0] [--threshold-lr 5e-4] [--split test]
#       [--systems "gates ump mixed"] [--patterns zipformer] [--from-dense] [--root DIR]
#       [--stage N] [--stop-stage M] [-- extra prune.py options]
#
# --systems: any of gates, gates-rms (scale-aware gates, --gate-scale rms), nas (NAS-CP; Transformer
# encoders only), ump, mixed (needs gates). --from-dense: gates, gates-rms and nas start from the
# dense model of stage 1 too (the paper's setting: prune a fine-tuned model) instead of --pretrained.
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
    --) shift; break ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 1 ;;
  esac
done

cd "$work_dir"
export PYTHONPATH="$(cd "$recipe_dir/../../.." && pwd)${PYTHONPATH:+:$PYTHONPATH}"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
extra=("$@")
has() { case " $systems " in *" $1 "*) return 0 ;; esac; return 1; }
[ -f "$pretrained" ] || { echo "$0: pretrained checkpoint $pretrained not found (run run.sh first)" >&2; exit 1; }

log() { echo "$(date '+%F %T') (prune_sweep.sh) $*"; }
pct() { python3 -c "print(round(100 * $1))"; }

prune() {  # prune <exp-name> <prune.py options...>
  local exp=$root/exp-$1; shift
  if [ -f "$exp/pruned.pt" ]; then log "$exp done, skipping"; return; fi
  log "training $exp"
  local t0=$SECONDS
  python3 "$recipe_dir/zipformer/prune.py" --init-ckpt "$pretrained" --exp-dir "$exp" \
    --num-epochs "$epochs" --tensorboard false --eta "$eta" --threshold-lr "$threshold_lr" \
    --patterns $patterns "$@" ${extra[@]+"${extra[@]}"} \
    > "$exp.log" 2>&1 || { echo "$0: $exp failed, see $exp.log" >&2; exit 1; }
  echo $((SECONDS - t0)) > "$exp/wall-seconds"
  log "$exp: $((SECONDS - t0)) s"
}

if [ $stage -le 1 ] && [ $stop_stage -ge 1 ]; then
  mkdir -p $root
  prune dense --method none
fi
if [ $stage -le 2 ] && [ $stop_stage -ge 2 ]; then
  start=()
  $from_dense && start=(--dense-ckpt $root/exp-dense/pruned.pt)
  for t in $targets; do
    has gates && prune gates-$(pct $t) --method gates --target-sparsity $t "${start[@]}"
    has gates-rms && prune gates-rms-$(pct $t) --method gates --gate-scale rms --target-sparsity $t "${start[@]}"
    has nas && prune nas-$(pct $t) --method nas --target-sparsity $t "${start[@]}"
  done
fi
if [ $stage -le 3 ] && [ $stop_stage -ge 3 ] && has ump; then
  for t in $targets; do
    prune ump-$(pct $t) --method uniform --target-sparsity $t --dense-ckpt $root/exp-dense/pruned.pt
  done
fi
if [ $stage -le 4 ] && [ $stop_stage -ge 4 ] && has mixed; then
  for t in $targets; do
    prune mixed-$(pct $t) --method mixed --target-sparsity $t --dense-ckpt $root/exp-dense/pruned.pt \
      --sparsity-from $root/exp-gates-$(pct $t)/sparsity.json
  done
fi
if [ $stage -le 5 ] && [ $stop_stage -ge 5 ]; then
  for exp in $root/exp-*/; do
    exp=${exp%/}
    [ -f "$exp/pruned.pt" ] || continue
    if [ -f "$exp/ctc-greedy-search/recogs-$split-ctc-greedy-search-pruned.txt" ]; then continue; fi
    log "decoding $exp ($split)"
    python3 "$recipe_dir/zipformer/decode.py" --checkpoint "$exp/pruned.pt" --exp-dir "$exp" \
      --test-splits "$split" > "$exp/decode-$split.log" 2>&1
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
fi
