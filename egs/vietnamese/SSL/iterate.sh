#!/usr/bin/env bash
# VietASR's iterative loop, one iteration per call. Run from egs/vietnamese/SSL after prepare.sh:
#
#   ./iterate.sh --iter 0            # ASR from scratch on the labeled set (train-50h)
#   ./iterate.sh --iter 1            # k-means on iteration 0's ASR encoder -> pretrain -> fine-tune
#   ./iterate.sh --iter 2 ...        # the same on iteration 1's fine-tuned model
#
# Iteration n >= 1:
#   1  k-means (--num-clusters, 500) on layer --layer of zipformer/exp-ft-iter<n-1>/epoch-<ft-epochs>.pt,
#      fitted on --kmeans-fit-hours of gigaspeech2-train -> data/kmeans-asr<n-1>-<K>/
#   2  pretrain on gigaspeech2-train with those labels  -> zipformer/exp-pretrain-iter<n>/
#   3  fine-tune from the last pretraining epoch        -> zipformer/exp-ft-iter<n>/
# Every iteration then decodes the test sets and, with --pseudo-label true, pseudo-labels the
# unlabeled audio (CTC confidence >= --pl-threshold) into data/fbank/vietnamese_cuts_<labeled>-pl<n>,
# which iteration n+1 fine-tunes on when called with --use-pseudo-labels true.
# Finished steps are skipped (their outputs exist). --dry-run true prints the commands only.
#
# Options (default): --iter N (required) --labeled-hours H (50) --bpe-vocab-size V (2000)
#   --num-clusters K (500) --layer L (16: the last layer of zipformer-ssl-base; 0 = front end)
#   --kmeans-fit-hours F (2000, VietASR's k-means subset) --pt-epochs P (20) --ft-epochs E (60)
#   --avg A (10) --world-size W (1) --pseudo-label B (false) --use-pseudo-labels B (false)
#   --pl-threshold T (0.9) --device cpu|cuda (cuda) --dry-run B (false)
#   --pretrain-args "..." --finetune-args "..." --decode-args "..."  (extra script options)
set -euo pipefail

iter=""
labeled_hours=50
bpe_vocab_size=2000
num_clusters=500
layer=16
kmeans_fit_hours=2000
pt_epochs=20
ft_epochs=60
avg=10
world_size=1
pseudo_label=false
use_pseudo_labels=false
pl_threshold=0.9
device=cuda
dry_run=false
pretrain_args=""
finetune_args=""
decode_args=""
seed=42
PY=${PYTHON:-python3}

while [ $# -gt 0 ]; do
  case "$1" in
    --iter) iter=$2; shift 2 ;;
    --labeled-hours) labeled_hours=$2; shift 2 ;;
    --bpe-vocab-size) bpe_vocab_size=$2; shift 2 ;;
    --num-clusters) num_clusters=$2; shift 2 ;;
    --layer) layer=$2; shift 2 ;;
    --kmeans-fit-hours) kmeans_fit_hours=$2; shift 2 ;;
    --pt-epochs) pt_epochs=$2; shift 2 ;;
    --ft-epochs) ft_epochs=$2; shift 2 ;;
    --avg) avg=$2; shift 2 ;;
    --world-size) world_size=$2; shift 2 ;;
    --pseudo-label) pseudo_label=$2; shift 2 ;;
    --use-pseudo-labels) use_pseudo_labels=$2; shift 2 ;;
    --pl-threshold) pl_threshold=$2; shift 2 ;;
    --device) device=$2; shift 2 ;;
    --dry-run) dry_run=$2; shift 2 ;;
    --pretrain-args) pretrain_args=$2; shift 2 ;;
    --finetune-args) finetune_args=$2; shift 2 ;;
    --decode-args) decode_args=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    -h|--help) awk 'NR > 1 && /^#/ {print; next} NR > 1 {exit}' "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 1 ;;
  esac
done
if [ -z "$iter" ]; then echo "--iter N is required (0 = ASR from scratch); see --help" >&2; exit 1; fi

log() {
  local fname=${BASH_SOURCE[1]##*/}
  echo -e "$(date '+%Y-%m-%d %H:%M:%S') (${fname}:${BASH_LINENO[0]}:${FUNCNAME[1]}) $*"
}

# Runs a command, or only prints it with --dry-run true.
run() {
  echo "+ $*"
  [ "$dry_run" = true ] || "$@"
}

labeled=train-$(printf %g $labeled_hours)h
lang=data/lang_bpe_$bpe_vocab_size
ft_dir=zipformer/exp-ft-iter$iter
train_split=$labeled
if [ "$use_pseudo_labels" = true ]; then
  [ $iter -ge 1 ] || { log "--use-pseudo-labels needs --iter >= 1"; exit 1; }
  train_split=$labeled-pl$((iter - 1))
fi

log "Iteration $iter: fine-tuning on $train_split, tokens $lang"

if [ $iter -eq 0 ]; then
  log "ASR from scratch -> $ft_dir"
  if [ -f $ft_dir/epoch-$ft_epochs.pt ]; then log "  done before"; else
    run ./zipformer/finetune.py --init-ckpt none --base-lr 0.045 --train-split $train_split \
      --lang-dir $lang --exp-dir $ft_dir --num-epochs $ft_epochs --world-size $world_size \
      $finetune_args
  fi
else
  prev=zipformer/exp-ft-iter$((iter - 1))/epoch-$ft_epochs.pt
  km=data/kmeans-asr$((iter - 1))-$num_clusters
  pt_dir=zipformer/exp-pretrain-iter$iter
  log "Step 1: k-means ($num_clusters) on layer $layer of $prev -> $km"
  if [ -f $km/.done ]; then log "  done before"; else
    run $PY -m icefall.ssl.labels --manifest-dir data/fbank --out-dir $km --prefix vietnamese \
      --features layer --checkpoint $prev --layer $layer --device $device \
      --num-clusters $num_clusters --fit-split gigaspeech2-train \
      --splits gigaspeech2-train gigaspeech2-dev \
      --max-fit-frames $((kmeans_fit_hours * 3600 * 50)) --seed $seed
    [ "$dry_run" = true ] || touch $km/.done
  fi
  log "Step 2: pretrain on gigaspeech2-train -> $pt_dir"
  if [ -f $pt_dir/epoch-$pt_epochs.pt ]; then log "  done before"; else
    run ./zipformer/pretrain.py --manifest-dir $km --num-classes $num_clusters --label-rate 50 \
      --exp-dir $pt_dir --num-epochs $pt_epochs --world-size $world_size $pretrain_args
  fi
  log "Step 3: fine-tune -> $ft_dir"
  if [ -f $ft_dir/epoch-$ft_epochs.pt ]; then log "  done before"; else
    run ./zipformer/finetune.py --init-ckpt $pt_dir/epoch-$pt_epochs.pt --train-split $train_split \
      --lang-dir $lang --exp-dir $ft_dir --num-epochs $ft_epochs --world-size $world_size \
      $finetune_args
  fi
fi

log "Decode $ft_dir (epoch $ft_epochs, avg $avg)"
run ./zipformer/decode.py --exp-dir $ft_dir --lang-dir $lang --epoch $ft_epochs --avg $avg \
  $decode_args

if [ "$pseudo_label" = true ]; then
  out=data/fbank/vietnamese_cuts_$labeled-pl$iter.jsonl.gz
  log "Pseudo-labels (CTC confidence >= $pl_threshold) -> $out"
  if [ -f $out ]; then log "  done before"; else
    run ./zipformer/pseudo_label.py --exp-dir $ft_dir --lang-dir $lang --epoch $ft_epochs \
      --avg $avg --split gigaspeech2-train --threshold $pl_threshold --merge-with $labeled \
      --out $out
  fi
fi

log "Iteration $iter done"
