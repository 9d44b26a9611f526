#!/usr/bin/env bash
# kNN-VC and kNN-TTS on the mini corpus, on one CPU thread: a vocoder per feature kind trained on
# prematched features, then the evaluation on the unseen test speakers (docs/knn-vc.md).
#
#   egs/mini/SSL/knn_vc/run_knn_vc.sh [--stage N] [--stop-stage M] [--work-dir DIR]
#       [--ssl-ckpt zipformer/exp-pretrain/epoch-2.pt] [--layer 2]
#       [--spidr-ckpt spidr/exp-spidr/epoch-3.pt] [--spidr-layer 0]
#       [--asv-upstream CKPT|fbank] [--asr-ckpt zipformer/exp-ft/pretrained.pt] [--epochs 28]
#
# Stages (a rerun resumes a vocoder's training from its newest checkpoint):
#   1  vocoder on prematched fbank                                  -> knn_vc/exp-fbank
#   2  vocoder on prematched layer --layer of --ssl-ckpt            -> knn_vc/exp-ssl   (skipped without it)
#   3  vocoder on prematched layer --spidr-layer of --spidr-ckpt    -> knn_vc/exp-spidr (skipped without it)
#   4  evaluation: speaker similarity (the ASV probe of --asv-upstream, default --ssl-ckpt or
#      fbank; and pooled log-mel statistics), WER/CER (with --asr-ckpt), k = 1 4 8, kNN-TTS
#      -> knn_vc/eval/results.{md,json}, wavs/
#   5  examples: convert.py and tts.py on one test utterance / one sentence -> knn_vc/examples/
# Needs a prepared corpus (prepare.sh: audio and fbank cuts) in --work-dir (default egs/mini/SSL).
set -euo pipefail

recipe_dir=$(cd "$(dirname "$0")/.." && pwd)
stage=1
stop_stage=100
work_dir=$recipe_dir
ssl_ckpt=zipformer/exp-pretrain/epoch-2.pt
layer=2
spidr_ckpt=spidr/exp-spidr/epoch-3.pt
spidr_layer=0
asv_upstream=""
asr_ckpt=zipformer/exp-ft/pretrained.pt
epochs=28

while [ $# -gt 0 ]; do
  case "$1" in
    --stage) stage=$2; shift 2 ;;
    --stop-stage) stop_stage=$2; shift 2 ;;
    --work-dir) work_dir=$2; shift 2 ;;
    --ssl-ckpt) ssl_ckpt=$2; shift 2 ;;
    --layer) layer=$2; shift 2 ;;
    --spidr-ckpt) spidr_ckpt=$2; shift 2 ;;
    --spidr-layer) spidr_layer=$2; shift 2 ;;
    --asv-upstream) asv_upstream=$2; shift 2 ;;
    --asr-ckpt) asr_ckpt=$2; shift 2 ;;
    --epochs) epochs=$2; shift 2 ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 1 ;;
  esac
done

cd "$work_dir"
export PYTHONPATH="$(cd "$recipe_dir/../../.." && pwd)${PYTHONPATH:+:$PYTHONPATH}"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
log() { echo "$(date '+%F %T') (run_knn_vc.sh) $*"; }
knn=$recipe_dir/knn_vc

vocoders="knn_vc/exp-fbank/epoch-$epochs.pt"
if [ $stage -le 1 ] && [ $stop_stage -ge 1 ]; then
  log "Stage 1: vocoder on prematched fbank"
  python3 "$knn/train_vocoder.py" --features fbank --num-epochs "$epochs" --exp-dir knn_vc/exp-fbank --tensorboard false
fi
# ssl_vocoder <stage> <name> <checkpoint> <layer> <option>: a vocoder on prematched features of
# one layer of a checkpoint, into knn_vc/exp-<name>, when the checkpoint exists.
ssl_vocoder() {
  if [ -f "$3" ]; then
    vocoders="$vocoders knn_vc/exp-$2/epoch-$epochs.pt"
    if [ $stage -le $1 ] && [ $stop_stage -ge $1 ]; then
      log "Stage $1: vocoder on prematched layer $4 of $3"
      python3 "$knn/train_vocoder.py" --features "$3" --layer "$4" --num-epochs "$epochs" \
        --exp-dir knn_vc/exp-$2 --tensorboard false
    fi
  else
    log "No $3: no $2 vocoder (give $5)"
  fi
}
ssl_vocoder 2 ssl "$ssl_ckpt" "$layer" --ssl-ckpt
ssl_vocoder 3 spidr "$spidr_ckpt" "$spidr_layer" --spidr-ckpt
if [ -z "$asv_upstream" ]; then
  asv_upstream=fbank
  [ -f "$ssl_ckpt" ] && asv_upstream=$ssl_ckpt
fi

asr_opt=""
[ -f "$asr_ckpt" ] && asr_opt="--asr-checkpoint $asr_ckpt"
if [ $stage -le 4 ] && [ $stop_stage -ge 4 ]; then
  log "Stage 4: evaluation on the unseen test speakers (ASV probe of $asv_upstream)"
  # shellcheck disable=SC2086
  python3 "$knn/evaluate.py" --vocoders $vocoders $asr_opt --ks 1 4 8 --asv-upstream "$asv_upstream" \
    --out-dir knn_vc/eval
fi

if [ $stage -le 5 ] && [ $stop_stage -ge 5 ]; then
  log "Stage 5: examples"
  src=$(ls download/mini/test/en901/*.flac | head -n 1)
  refs=$(ls download/mini/test/en902/*.flac | tail -n +5)
  # shellcheck disable=SC2086
  python3 "$knn/convert.py" --vocoder knn_vc/exp-fbank/epoch-$epochs.pt --source "$src" \
    --reference $refs --output knn_vc/examples/en901-as-en902.wav
  # shellcheck disable=SC2086
  python3 "$knn/tts.py" --vocoder knn_vc/exp-fbank/epoch-$epochs.pt --text "ISABEL REMEMBERED THE LITTLE KNIFE AT NIGHT" \
    --reference $refs --output knn_vc/examples/tts-en902.wav
fi
log "Done"
