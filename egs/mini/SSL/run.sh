#!/usr/bin/env bash
# The mini recipe end to end, on CPU: what self-supervised pretraining buys with 10 minutes of
# labeled speech.
#
#   egs/mini/SSL/run.sh [--stage N] [--stop-stage M] [--tiny] [--work-dir DIR] [--loss ctc|rnnt]
#
# Stages (each re-runnable; finished training stages are skipped):
#   0  prepare the corpus (prepare.sh: synthesize, fbank, tokens, k-means labels, LM text,
#      lexicons and a 3-gram LM)
#   1  pretrain a small (3.6M) Zipformer HuBERT-style on the ~2 h unlabeled split
#   2  fine-tune it with CTC (letters; --loss rnnt: pruned RNN-T) on the 10-minute labeled
#      split (20 epochs)
#   3  train the same model from scratch with the same fine-tuning budget (the baseline);
#      stages 2 and 3 run side by side, each on half the cores
#   4  decode dev and test with both: CTC greedy search, then word-level with the lexicon
#      alone and with the lexicon and the 3-gram LM (flashlight-text), word score and LM weight
#      tuned on dev for each model (zipformer/tune_lm.py); with --loss rnnt, modified beam search
#   5  export the fine-tuned model (pretrained.pt, TorchScript, ONNX) and decode test with ONNX
#   6  print the table of WERs
#
# --tiny runs everything on a few dozen utterances in a few minutes (the test suite uses it);
# the WERs it prints mean nothing. --loss rnnt fine-tunes (stages 2-3) with pruned RNN-T on BPE
# pieces instead of CTC on letters and decodes with modified beam search (k2SSL's headline
# setting; slower, outside the 15-minute budget); its runs live in zipformer/rnnt/.
# --work-dir (default: this directory) holds data/ and the experiment directories. docs/mini.md explains the recipe and the numbers to expect.
set -euo pipefail

recipe_dir=$(cd "$(dirname "$0")" && pwd)
stage=0
stop_stage=100
tiny=false
work_dir=$recipe_dir
loss=ctc

while [ $# -gt 0 ]; do
  case "$1" in
    --stage) stage=$2; shift 2 ;;
    --stop-stage) stop_stage=$2; shift 2 ;;
    --tiny) tiny=true; shift ;;
    --work-dir) work_dir=$2; shift 2 ;;
    --loss) loss=$2; shift 2 ;;
    -h|--help) sed -n "2,/^set -euo/p" "$0" | grep "^#" | sed "s/^# \{0,1\}//"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 1 ;;
  esac
done

mkdir -p "$work_dir"
cd "$work_dir"
export PYTHONPATH="$(cd "$recipe_dir/../../.." && pwd)${PYTHONPATH:+:$PYTHONPATH}"

if $tiny; then
  prepare_opts="--tiny"
  # The 1M zipformer-tiny instead of the recipe's wider default (zipformer/defaults.py): the
  # test suite checks the plumbing, fast.
  model_opts="--encoder-overrides frontend_layer3_channels=32,dropout=0.0"
  pretrain_opts="--num-epochs 2 --max-duration 40 $model_opts"
  # 12 labeled utterances: the test checks the plumbing by fitting them (decoded below).
  finetune_opts="--num-epochs 60 --max-duration 8 $model_opts"
  ft_epoch=60; ft_avg=1
  decode_splits="train-labeled test"
  tune_split=train-labeled  # the tiny corpus's dev is tiny too; only the plumbing counts
else
  prepare_opts=""
  pretrain_opts="--num-epochs 2 --max-duration 40"
  finetune_opts="--num-epochs 20"
  ft_epoch=20; ft_avg=5
  decode_splits="dev test"
  tune_split=dev
fi
pre_epoch=2
common="--tensorboard false"

# The fine-tuning head: CTC on letters, or pruned RNN-T on BPE pieces (prepare.sh's vocabulary).
case $loss in
  ctc) exp_root=zipformer; method=ctc-greedy-search; lang_dir=data/lang_char; head="CTC, letters"
       methods="$method ctc-lexicon ctc-lexicon-lm"
       head_opts="--use-ctc true --use-transducer false" ;;
  rnnt) exp_root=zipformer/rnnt; method=modified_beam_search; head="pruned RNN-T, BPE"; methods=$method
        if $tiny; then lang_dir=data/lang_bpe_64; else lang_dir=data/lang_bpe_256; fi
        head_opts="--use-ctc false --use-transducer true" ;;
  *) echo "--loss: ctc or rnnt, not $loss" >&2; exit 1 ;;
esac
finetune_opts="$finetune_opts $head_opts --lang-dir $lang_dir"

log() {
  local fname=${BASH_SOURCE[1]##*/}
  echo -e "$(date '+%Y-%m-%d %H:%M:%S') (${fname}:${BASH_LINENO[0]}:${FUNCNAME[1]}) $*"
}

# A training stage is done when its last epoch checkpoint exists.
trained() { [ -f "$1/epoch-$2.pt" ]; }

if [ $stage -le 0 ] && [ $stop_stage -ge 0 ]; then
  log "Stage 0: prepare the mini corpus"
  "$recipe_dir/prepare.sh" $prepare_opts
fi

if [ $stage -le 1 ] && [ $stop_stage -ge 1 ]; then
  log "Stage 1: pretrain (HuBERT-style, fbank k-means labels)"
  if ! trained zipformer/exp-pretrain $pre_epoch; then
    python3 "$recipe_dir/zipformer/pretrain.py" $common $pretrain_opts --exp-dir zipformer/exp-pretrain
  fi
fi

# finetune <exp> <init-ckpt>: fine-tuning into $exp_root/<exp>, unless already done.
finetune() {
  if ! trained $exp_root/$1 $ft_epoch; then
    python3 "$recipe_dir/zipformer/finetune.py" $common $finetune_opts --init-ckpt $2 --exp-dir $exp_root/$1
  fi
}
pretrained_ckpt=zipformer/exp-pretrain/epoch-$pre_epoch.pt

if [ $stage -le 2 ] && [ $stop_stage -ge 3 ]; then
  # The two runs train the same small model, which does not keep two threads busy: side by
  # side, each on half the cores, they finish sooner than one after the other.
  log "Stages 2 and 3: fine-tune the pretrained encoder and, alongside, the same model from scratch ($head)"
  threads=$(( $(nproc) / 2 )); [ $threads -ge 1 ] || threads=1
  pids=()
  for run in "exp-ft $pretrained_ckpt" "exp-scratch none"; do
    set -- $run
    mkdir -p $exp_root/$1
    (export OMP_NUM_THREADS=$threads; finetune $1 $2) > $exp_root/$1/finetune.out 2>&1 &
    pids+=($!)
    log "  $1: log in $exp_root/$1/finetune.out"
  done
  failed=false
  for pid in "${pids[@]}"; do wait $pid || failed=true; done
  if $failed; then
    tail -n 20 $exp_root/exp-ft/finetune.out $exp_root/exp-scratch/finetune.out >&2
    exit 1
  fi
else
  if [ $stage -le 2 ] && [ $stop_stage -ge 2 ]; then
    log "Stage 2: fine-tune the pretrained encoder ($head)"
    finetune exp-ft $pretrained_ckpt
  fi
  if [ $stage -le 3 ] && [ $stop_stage -ge 3 ]; then
    log "Stage 3: the same model from scratch, same fine-tuning budget"
    finetune exp-scratch none
  fi
fi

if [ $stage -le 4 ] && [ $stop_stage -ge 4 ]; then
  log "Stage 4: decode"
  for exp in exp-ft exp-scratch; do
    python3 "$recipe_dir/zipformer/decode.py" --exp-dir $exp_root/$exp --lang-dir $lang_dir \
      --epoch $ft_epoch --avg $ft_avg --use-averaged-model true \
      --decoding-method $method --test-splits $decode_splits
  done
  if [ $loss = ctc ]; then  # lexicon and LM decoding are for the CTC letter model
    # One model per core, side by side (each run is single-threaded search): ~1 min saved.
    threads=$(( $(nproc) / 2 )); [ $threads -ge 1 ] || threads=1
    pids=()
    for exp in exp-ft exp-scratch; do
      (export OMP_NUM_THREADS=$threads
       python3 "$recipe_dir/zipformer/tune_lm.py" --exp-dir $exp_root/$exp \
         --epoch $ft_epoch --avg $ft_avg --use-averaged-model true \
         --methods ctc-lexicon ctc-lexicon-lm --tune-split $tune_split --test-splits $decode_splits
      ) > $exp_root/$exp/tune_lm.out 2>&1 &
      pids+=($!)
    done
    for pid in "${pids[@]}"; do wait $pid || { tail -n 20 $exp_root/exp-*/tune_lm.out >&2; exit 1; }; done
  fi
fi

if [ $stage -le 5 ] && [ $stop_stage -ge 5 ]; then
  log "Stage 5: export the fine-tuned model and decode test with onnxruntime"
  python3 "$recipe_dir/zipformer/export.py" --exp-dir $exp_root/exp-ft --lang-dir $lang_dir \
    --epoch $ft_epoch --avg $ft_avg --use-averaged-model true
  python3 "$recipe_dir/zipformer/onnx_decode.py" --model-dir $exp_root/exp-ft/onnx \
    --decoding-method $method --test-splits test
fi

if [ $stage -le 6 ] && [ $stop_stage -ge 6 ]; then
  log "Stage 6: results"
  python3 "$recipe_dir/local/summarize.py" --exp-root $exp_root --splits $decode_splits \
    --methods $methods
fi
