#!/usr/bin/env bash
# Sparsity sweep on the mini corpus: self-pinching gates (one pass) vs uniform magnitude pruning
# (UMP) and mixed sparsity, against the dense model fine-tuned with the same budget.
#
#   egs/mini/SSL/local/prune_sweep.sh [--work-dir DIR] [--pretrained CKPT] [--epochs N]
#       [--targets "0.5 0.7 0.9"] [--eta 1.0] [--threshold-lr 5e-4] [--split test]
#       [--stage N] [--stop-stage M]
#
# --work-dir holds data/ (and download/) as made by run.sh; experiments go to
# <work-dir>/zipformer/prune-sweep/exp-<system>. Every system fine-tunes --epochs epochs:
#   1  dense: CTC fine-tuning of --pretrained without pruning (prune.py --method none)
#   2  gates-<T>: one pass from --pretrained with self-pinching gates, target T
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
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 1 ;;
  esac
done

cd "$work_dir"
export PYTHONPATH="$(cd "$recipe_dir/../../.." && pwd)${PYTHONPATH:+:$PYTHONPATH}"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
root=zipformer/prune-sweep
[ -f "$pretrained" ] || { echo "$0: pretrained checkpoint $pretrained not found (run run.sh first)" >&2; exit 1; }

log() { echo "$(date '+%F %T') (prune_sweep.sh) $*"; }
pct() { python3 -c "print(round(100 * $1))"; }

prune() {  # prune <exp-name> <prune.py options...>
  local exp=$root/exp-$1; shift
  if [ -f "$exp/pruned.pt" ]; then log "$exp done, skipping"; return; fi
  log "training $exp"
  local t0=$SECONDS
  python3 "$recipe_dir/zipformer/prune.py" --init-ckpt "$pretrained" --exp-dir "$exp" \
    --num-epochs "$epochs" --tensorboard false --eta "$eta" --threshold-lr "$threshold_lr" "$@" \
    > "$exp.log" 2>&1 || { echo "$0: $exp failed, see $exp.log" >&2; exit 1; }
  log "$exp: $((SECONDS - t0)) s"
}

if [ $stage -le 1 ] && [ $stop_stage -ge 1 ]; then
  mkdir -p $root
  prune dense --method none
fi
if [ $stage -le 2 ] && [ $stop_stage -ge 2 ]; then
  for t in $targets; do prune gates-$(pct $t) --method gates --target-sparsity $t; done
fi
if [ $stage -le 3 ] && [ $stop_stage -ge 3 ]; then
  for t in $targets; do
    prune ump-$(pct $t) --method uniform --target-sparsity $t --dense-ckpt $root/exp-dense/pruned.pt
  done
fi
if [ $stage -le 4 ] && [ $stop_stage -ge 4 ]; then
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
  systems=""
  for kind in gates ump mixed; do
    for t in $targets; do
      exp=$root/exp-$kind-$(pct $t)
      [ -f "$exp/ctc-greedy-search/recogs-$split-ctc-greedy-search-pruned.txt" ] && systems="$systems $kind-$(pct $t)=$exp"
    done
  done
  python3 -m icefall.prune.compare --split "$split" --baseline dense=$root/exp-dense --systems $systems \
    --png $root/sweep.png --title "mini corpus, $split, $epochs epochs per system" | tee $root/table.md
fi
