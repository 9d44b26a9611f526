#!/usr/bin/env bash
# Every pretraining objective side by side on the mini corpus at equal pretraining time: the
# demo's 3.6M Zipformer (and a Transformer of the same size for HuBERT, the k2SSL comparison)
# pretrained for the same budget of one CPU thread, then probed per layer (ABX, PNMI, MAP@R on
# dev) and fine-tuned and decoded as the demo does (CTC on letters, 20 epochs; greedy and
# lexicon + 3-gram LM).
#
#   egs/mini/SSL/objectives/run_objectives.sh [--work-dir DIR] [--budget-hours H (0.1)]
#       [--clock cpu|wall] [--jobs N (2)] [--stage N] [--stop-stage M] [--tiny] [SYSTEM ...]
#
# SYSTEM: hubert spidr dinosr wav2vec2 data2vec wavlm byol (the Zipformer), hubert-transformer,
# scratch (fine-tuning from random weights: the reference row); default: all of them.
# Stages, per system (each re-runnable; finished work is skipped):
#   1  pretrain for --budget-hours of --clock time (pretrain.py --stop-time-hours), one thread
#   2  per-layer ABX / PNMI / MAP@R of the pretrained model on dev (spidr/evaluate.py), the
#      fbank input as the reference row
#   3  fine-tune with CTC on the 10-minute split (the demo's settings, zipformer/finetune.py)
#   4  decode dev and test: greedy, and lexicon + 3-gram LM tuned on dev (zipformer/tune_lm.py)
# then the table (local/objectives_table.py) -> objectives/results.md.
# --jobs N runs N systems at a time, one thread each: the budget counts this process's CPU time
# (--clock cpu, the default), so systems sharing the machine still get equal compute.
# --work-dir holds a prepared corpus (run.sh stage 0: data/); runs go to <work-dir>/objectives/.
# docs/objectives.md shows the measured table.
set -euo pipefail

recipe_dir=$(cd "$(dirname "$0")/.." && pwd)
work_dir=$recipe_dir
budget=0.1
clock=cpu
jobs=2
stage=1
stop_stage=100
tiny=false
systems=()

while [ $# -gt 0 ]; do
  case "$1" in
    --work-dir) work_dir=$2; shift 2 ;;
    --budget-hours) budget=$2; shift 2 ;;
    --clock) clock=$2; shift 2 ;;
    --jobs) jobs=$2; shift 2 ;;
    --stage) stage=$2; shift 2 ;;
    --stop-stage) stop_stage=$2; shift 2 ;;
    --tiny) tiny=true; shift ;;
    -h|--help) sed -n "2,/^set -euo/p" "$0" | grep "^#" | sed "s/^# \{0,1\}//"; exit 0 ;;
    -*) echo "unknown option $1" >&2; exit 1 ;;
    *) systems+=("$1"); shift ;;
  esac
done
[ ${#systems[@]} -gt 0 ] || systems=(hubert spidr dinosr wav2vec2 data2vec wavlm byol hubert-transformer scratch)

cd "$work_dir"
export PYTHONPATH="$(cd "$recipe_dir/../../.." && pwd)${PYTHONPATH:+:$PYTHONPATH}"
export OMP_NUM_THREADS=1
log() { echo "$(date '+%F %T') (run_objectives.sh) $*"; }

common="--tensorboard false"
# A Transformer as large as the Zipformer (3.60M vs 3.55M parameters): hubert-tiny widened
# to 4 layers of 256, no dropout (the mini model underfits, as the Zipformer's defaults say).
transformer_overrides=frontend_layer3_channels=32,embed_dim=256,ffn_dim=1024,num_heads=4,num_layers=4,dropout=0.0,attention_dropout=0.0
if $tiny; then  # the plumbing on the tiny corpus (the test suite)
  pretrain_opts="--max-duration 40 --save-every-n 2 --encoder-overrides frontend_layer3_channels=32,dropout=0.0"
  eval_opts="--max-cuts 8"
  finetune_opts="--num-epochs 2 --max-duration 8 --encoder-overrides frontend_layer3_channels=32,dropout=0.0"
  ft_epoch=2; ft_avg=1; splits="test"; tune_split=test
  transformer_overrides=frontend_layer3_channels=32,dropout=0.0
else
  pretrain_opts="--max-duration 40"
  eval_opts=""
  finetune_opts="--num-epochs 20"
  ft_epoch=20; ft_avg=5; splits="dev test"; tune_split=dev
fi

# The newest checkpoint of a pretraining run: where --stop-time-hours stopped it.
pretrained() { ls -v "$1"/checkpoint-*.pt 2>/dev/null | tail -n 1; }

run_system() {
  local sys=$1 method=$1 model_opts="" exp=objectives/exp-$1 ft=objectives/ft-$1 ckpt=none
  case $sys in
    hubert-transformer) method=hubert; model_opts="--encoder hubert-tiny --encoder-overrides $transformer_overrides" ;;
    # SpidR/DinoSR on 4 Zipformer stacks: codebooks on the top 2, the teacher's EMA timescale
    # scaled to a run of a few hundred updates (the spidr/ recipe's mini settings).
    spidr|dinosr) model_opts="--num-codebooks 2 --codebook-size 64 --ema-timescale 300" ;;
    hubert|wav2vec2|data2vec|wavlm|byol|scratch) ;;
    *) echo "unknown system $sys" >&2; return 1 ;;
  esac
  if [ $sys != scratch ]; then
    if [ $stage -le 1 ] && [ $stop_stage -ge 1 ]; then
      if grep -qs -e "--stop-time-hours .* spent" -e "Training is complete" $exp/log/log-pretrain-*; then
        log "$sys: pretraining done"
      else
        log "$sys: pretraining for $budget h of $clock time -> $exp"
        python3 "$recipe_dir/zipformer/pretrain.py" $common $pretrain_opts --method $method $model_opts \
          --num-epochs 1000 --stop-time-hours $budget --stop-time-clock $clock --exp-dir $exp
      fi
    fi
    ckpt=$(pretrained $exp)
    [ -n "$ckpt" ] || { echo "$exp: no checkpoint-*.pt (run stage 1)" >&2; return 1; }
    if [ $stage -le 2 ] && [ $stop_stage -ge 2 ] && [ ! -f $exp/eval/layers.json ]; then
      log "$sys: per-layer evaluation of $ckpt"
      python3 "$recipe_dir/spidr/evaluate.py" --checkpoint $ckpt --out-dir $exp/eval $eval_opts \
        --title "$sys, $(basename $ckpt .pt) ($budget h of $clock time)"
    fi
  fi
  # Fine-tuning takes the pretrained model's architecture; from scratch, the Zipformer's.
  local ft_model_opts=""
  [ $sys != hubert-transformer ] || ft_model_opts="--encoder-overrides $transformer_overrides"
  if [ $stage -le 3 ] && [ $stop_stage -ge 3 ] && [ ! -f $ft/epoch-$ft_epoch.pt ]; then
    log "$sys: fine-tuning -> $ft"
    python3 "$recipe_dir/zipformer/finetune.py" $common $finetune_opts $ft_model_opts --init-ckpt $ckpt --exp-dir $ft
  fi
  if [ $stage -le 4 ] && [ $stop_stage -ge 4 ] && ! ls $ft/ctc-lexicon-lm/recogs-test-* > /dev/null 2>&1; then
    local avg="--epoch $ft_epoch --avg $ft_avg --use-averaged-model true"
    log "$sys: decoding"
    python3 "$recipe_dir/zipformer/decode.py" --exp-dir $ft $avg --decoding-method ctc-greedy-search --test-splits $splits
    python3 "$recipe_dir/zipformer/tune_lm.py" --exp-dir $ft $avg --methods ctc-lexicon-lm \
      --tune-split $tune_split --test-splits $splits
  fi
}

# N streams, one thread each; systems dealt round robin.
pids=()
for ((j = 0; j < jobs; j++)); do
  (
    for ((i = j; i < ${#systems[@]}; i += jobs)); do
      sys=${systems[$i]}
      mkdir -p objectives
      run_system $sys > objectives/$sys.out 2>&1 || { log "$sys FAILED: objectives/$sys.out"; exit 1; }
      log "$sys: finished"
    done
  ) &
  pids+=($!)
done
failed=false
for pid in "${pids[@]}"; do wait $pid || failed=true; done
$failed && exit 1

log "table -> objectives/results.md"
python3 "$recipe_dir/local/objectives_table.py" "${systems[@]}" --root objectives --splits $splits \
  | tee objectives/results.md
