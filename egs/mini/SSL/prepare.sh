#!/usr/bin/env bash
# Prepares the mini corpus (synthesized offline with espeak-ng). Run from egs/mini/SSL:
#
#   ./prepare.sh [--stage N] [--stop-stage M] [--tiny] [--seed S] [--num-workers W] [--num-clusters K]
#                [--lm-sentences N] [--lm-order O]
#
# Stages (each is skipped when its outputs exist, so re-running is cheap):
#   1  synthesize audio + lhotse manifests        -> download/mini/, data/manifests/
#   2  validate manifests (lhotse.qa, alignments) and print the corpus sizes
#   3  fbank (80-dim, 100 Hz, lilcom)             -> data/fbank/mini_cuts_<split>.jsonl.gz
#   4  token sets: BPE and characters             -> data/lang_bpe_<N>/, data/lang_char/
#   5  k-means labels (iteration 1) on the stored fbank, 100 clusters at 100 Hz
#                                                  -> data/kmeans-fbank-100/ (cuts with custom["kmeans"])
#   6  LM text: --lm-sentences (100000) generator sentences from a seed stream of their own, no
#      dev or test sentence among them; a lexicon of their words per lang dir; an --lm-order
#      (3) gram LM estimated with IRSTLM, and a token 4-gram per BPE lang dir (shallow fusion
#      in the transducer's beam search)    -> data/lm/{text,words}.txt, data/lm/<O>gram.arpa,
#                                    data/lang_*/lexicon.txt, data/lang_bpe_*/token-4gram.arpa
#
# --tiny makes a few dozen short utterances (for tests). Tiny and full outputs use the same
# paths: use a fresh directory (or remove data/ and download/) to switch size.
# docs/mini-corpus.md describes the corpus.
set -euo pipefail

stage=1
stop_stage=100
tiny=false
seed=0
num_workers=2
lang=en
vocab_sizes=""
num_clusters=100
lm_sentences=""
lm_order=3
PY=${PYTHON:-python3}  # the interpreter with icefall installed

while [ $# -gt 0 ]; do
  case "$1" in
    --stage) stage=$2; shift 2 ;;
    --stop-stage) stop_stage=$2; shift 2 ;;
    --tiny) tiny=true; shift ;;
    --seed) seed=$2; shift 2 ;;
    --num-workers) num_workers=$2; shift 2 ;;
    --lang) lang=$2; shift 2 ;;
    --vocab-sizes) vocab_sizes=$2; shift 2 ;;
    --num-clusters) num_clusters=$2; shift 2 ;;
    --lm-sentences) lm_sentences=$2; shift 2 ;;
    --lm-order) lm_order=$2; shift 2 ;;
    -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 1 ;;
  esac
done

if $tiny; then size=tiny; else size=full; fi
# A tiny transcript set cannot support a large BPE vocabulary.
if [ -z "$vocab_sizes" ]; then
  if $tiny; then vocab_sizes="64"; else vocab_sizes="256"; fi
fi
if [ -z "$lm_sentences" ]; then
  if $tiny; then lm_sentences=2000; else lm_sentences=100000; fi
fi

splits="train-unlabeled train-labeled dev test"
manifests=data/manifests
fbank=data/fbank

log() {
  local fname=${BASH_SOURCE[1]##*/}
  echo -e "$(date '+%Y-%m-%d %H:%M:%S') (${fname}:${BASH_LINENO[0]}:${FUNCNAME[1]}) $*"
}

log "size=$size lang=$lang seed=$seed stages $stage..$stop_stage"
mkdir -p $manifests

# Refuse to mix sizes in one directory: the markers say which size is there.
for other in tiny full; do
  if [ $other != $size ] && [ -f $manifests/.mini.$other.done ]; then
    log "data/ holds the $other corpus; remove data/ and download/ (or use another directory)"
    exit 1
  fi
done

if [ $stage -le 1 ] && [ $stop_stage -ge 1 ]; then
  log "Stage 1: synthesize the $size mini corpus"
  if [ ! -f $manifests/.mini.$size.done ]; then
    $PY -m icefall.data.corpus --out-dir download/mini --manifest-dir $manifests \
      --size $size --lang $lang --seed $seed --num-workers $num_workers
    touch $manifests/.mini.$size.done
  else
    log "  done before ($manifests/.mini.$size.done)"
  fi
fi

if [ $stage -le 2 ] && [ $stop_stage -ge 2 ]; then
  log "Stage 2: validate manifests"
  $PY -m icefall.data.corpus --manifest-dir $manifests --validate
fi

if [ $stage -le 3 ] && [ $stop_stage -ge 3 ]; then
  log "Stage 3: compute fbank"
  $PY -m icefall.data.features --manifest-dir $manifests --fbank-dir $fbank \
    --prefix mini --splits $splits --num-jobs $num_workers
fi

if [ $stage -le 4 ] && [ $stop_stage -ge 4 ]; then
  log "Stage 4: token sets (BPE: $vocab_sizes; characters)"
  # The text of both training splits: the unlabeled split's transcripts only shape the
  # token inventory, as LibriSpeech's full text does for its BPE models.
  texts="$manifests/mini_supervisions_train-unlabeled.jsonl.gz $manifests/mini_supervisions_train-labeled.jsonl.gz"
  for v in $vocab_sizes; do
    if [ ! -f data/lang_bpe_$v/tokens.txt ]; then
      $PY -m icefall.data.tokenizer --type bpe --vocab-size $v \
        --lang-dir data/lang_bpe_$v --supervisions $texts
    else
      log "  data/lang_bpe_$v done before"
    fi
  done
  if [ ! -f data/lang_char/tokens.txt ]; then
    $PY -m icefall.data.tokenizer --type char --lang-dir data/lang_char --supervisions $texts
  else
    log "  data/lang_char done before"
  fi
fi

if [ $stage -le 5 ] && [ $stop_stage -ge 5 ]; then
  log "Stage 5: k-means labels on stored fbank ($num_clusters clusters)"
  # MFCC-39 (--features mfcc) is HuBERT's choice for iteration 1; on this corpus the stored
  # fbank gives a similar PNMI (docs/RESULTS.md) at a fraction of the cost.
  python -m icefall.ssl.labels --manifest-dir $fbank --out-dir data/kmeans-fbank-$num_clusters \
    --prefix mini --features stored --num-clusters $num_clusters \
    --fit-split train-unlabeled --splits train-unlabeled dev --seed $seed
fi

if [ $stage -le 6 ] && [ $stop_stage -ge 6 ]; then
  log "Stage 6: LM text ($lm_sentences sentences), lexicons, ${lm_order}-gram LM"
  if [ ! -f data/lm/words.txt ]; then
    $PY -m icefall.data.lm_text generate --num-sentences $lm_sentences --lang $lang --seed $seed \
      --exclude $manifests/mini_supervisions_dev.jsonl.gz $manifests/mini_supervisions_test.jsonl.gz \
      --out-dir data/lm
  else
    log "  data/lm/words.txt done before"
  fi
  for d in data/lang_char $(for v in $vocab_sizes; do echo data/lang_bpe_$v; done); do
    if [ ! -f $d/lexicon.txt ]; then
      $PY -m icefall.asr.lm lexicon --lang-dir $d --words data/lm/words.txt
    else
      log "  $d/lexicon.txt done before"
    fi
  done
  if [ ! -f data/lm/${lm_order}gram.arpa ]; then
    $PY -m icefall.asr.lm arpa --text data/lm/text.txt --order $lm_order --out data/lm/${lm_order}gram.arpa
  else
    log "  data/lm/${lm_order}gram.arpa done before"
  fi
  for v in $vocab_sizes; do
    if [ ! -f data/lang_bpe_$v/token-4gram.arpa ]; then
      $PY -m icefall.asr.lm token-arpa --text data/lm/text.txt --lang-dir data/lang_bpe_$v \
        --order 4 --out data/lang_bpe_$v/token-4gram.arpa
    else
      log "  data/lang_bpe_$v/token-4gram.arpa done before"
    fi
  done
fi

log "Done"
