#!/usr/bin/env bash
# Prepares Vietnamese data for the VietASR-style recipe: GigaSpeech 2 Vietnamese (training audio,
# a labeled subset, dev/test) and the Common Voice and FLEURS Vietnamese test sets. Run from
# egs/vietnamese/SSL:
#
#   ./prepare.sh [--stage N] [--stop-stage M] [--dl-dir DIR] [--gigaspeech2 DIR]
#                [--commonvoice DIR] [--fleurs DIR] [--num-jobs J] [--seed S]
#                [--labeled-hours H] [--bpe-vocab-size V] [--lm-order O]
#
# Stages (each is skipped when its outputs exist, so re-running is cheap):
#   0  check the corpora (GigaSpeech 2 is gated: no automatic download) and extract their
#      audio archives in place (GigaSpeech 2 train/*.tar.gz, dev.tar.gz, test.tar.gz; FLEURS
#      audio/{dev,test}.tar.gz)
#   1  lhotse manifests, normalised text     -> data/manifests/vietnamese_{recordings,supervisions}_<split>
#        gigaspeech2-train (all training audio: the unlabeled pool), gigaspeech2-{dev,test},
#        commonvoice-{dev,test}, fleurs-{dev,test}; supervisions of gigaspeech2-train-refined
#   2  fbank (80-dim, 100 Hz, lilcom)        -> data/fbank/vietnamese_cuts_<split>.jsonl.gz
#   3  labeled subset: H (50) hours of GigaSpeech 2 training cuts with refined transcripts
#                                            -> data/fbank/vietnamese_cuts_train-<H>h.jsonl.gz
#   4  token sets on the labeled transcripts: BPE (--bpe-vocab-size, 2000) and characters
#                                            -> data/lang_bpe_<V>/, data/lang_char/
#   5  LM from the training transcripts (GigaSpeech 2's refined training text; no dev/test
#      text): a --lm-order (3) gram LM by IRSTLM and a lexicon of its words per lang dir
#                                            -> data/lm/{text,words}.txt, data/lm/<O>gram.arpa,
#                                               data/lang_{bpe_<V>,char}/lexicon.txt
# Then ./iterate.sh runs VietASR's loop (ASR -> k-means on its encoder -> pretrain -> fine-tune).
# Defaults: --dl-dir download, --gigaspeech2 $dl_dir/gigaspeech2/data/vi,
# --commonvoice $dl_dir/cv-corpus-*/vi (the newest), --fleurs $dl_dir/fleurs/data/vi_vn.
# docs/vietnamese.md describes the layouts, sizes, times and the iterative loop.
set -euo pipefail

stage=0
stop_stage=5
dl_dir=download
gigaspeech2=""
commonvoice=""
fleurs=""
num_jobs=15
seed=42
labeled_hours=50
bpe_vocab_size=2000
lm_order=3
PY=${PYTHON:-python3}  # the interpreter with icefall installed

while [ $# -gt 0 ]; do
  case "$1" in
    --stage) stage=$2; shift 2 ;;
    --stop-stage) stop_stage=$2; shift 2 ;;
    --dl-dir) dl_dir=$2; shift 2 ;;
    --gigaspeech2) gigaspeech2=$2; shift 2 ;;
    --commonvoice) commonvoice=$2; shift 2 ;;
    --fleurs) fleurs=$2; shift 2 ;;
    --num-jobs) num_jobs=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    --labeled-hours) labeled_hours=$2; shift 2 ;;
    --bpe-vocab-size) bpe_vocab_size=$2; shift 2 ;;
    --lm-order) lm_order=$2; shift 2 ;;
    -h|--help) awk 'NR > 1 && /^#/ {print; next} NR > 1 {exit}' "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 1 ;;
  esac
done

[ -n "$gigaspeech2" ] || gigaspeech2=$dl_dir/gigaspeech2/data/vi
if [ -z "$commonvoice" ]; then
  commonvoice=$(ls -d $dl_dir/cv-corpus-*/vi 2>/dev/null | sort -V | tail -n 1 || true)
  [ -n "$commonvoice" ] || commonvoice=$dl_dir/cv-corpus-missing/vi
fi
[ -n "$fleurs" ] || fleurs=$dl_dir/fleurs/data/vi_vn

manifests=data/manifests
fbank=data/fbank
labeled=train-$(printf %g $labeled_hours)h  # the name Python gives it

log() {
  local fname=${BASH_SOURCE[1]##*/}
  echo -e "$(date '+%Y-%m-%d %H:%M:%S') (${fname}:${BASH_LINENO[0]}:${FUNCNAME[1]}) $*"
}

# Extracts $1 into $2 once (a marker next to the archive records it).
extract() {
  if [ -f $1.extracted ]; then log "  $1 extracted before"; return; fi
  log "  extracting $1 -> $2"
  mkdir -p $2
  tar xzf $1 -C $2
  touch $1.extracted
}

# The evaluation splits whose corpora are present.
eval_splits() {
  local out="gigaspeech2-dev gigaspeech2-test"
  [ -f $commonvoice/test.tsv ] && out="$out commonvoice-dev commonvoice-test"
  [ -f $fleurs/test.tsv ] && out="$out fleurs-dev fleurs-test"
  echo $out
}

log "GigaSpeech 2: $gigaspeech2; Common Voice: $commonvoice; FLEURS: $fleurs; stages $stage..$stop_stage"

if [ $stage -le 0 ] && [ $stop_stage -ge 0 ]; then
  log "Stage 0: check the corpora, extract audio archives"
  if [ ! -f $gigaspeech2/train_raw.tsv ]; then
    log "GigaSpeech 2 Vietnamese is not in $gigaspeech2. It is gated on the Hugging Face hub:"
    log "accept the terms at https://huggingface.co/datasets/speechcolab/gigaspeech2, then"
    log "  huggingface-cli download speechcolab/gigaspeech2 --repo-type dataset \\"
    log "    --include 'data/vi/*' --local-dir $dl_dir/gigaspeech2"
    log "(or pass --gigaspeech2 DIR pointing at a data/vi directory) and re-run this stage."
    exit 1
  fi
  for f in $gigaspeech2/train/*.tar.gz; do [ -f $f ] && extract $f $gigaspeech2/train; done
  for part in dev test; do
    [ -f $gigaspeech2/$part.tar.gz ] && extract $gigaspeech2/$part.tar.gz $gigaspeech2
  done
  if [ -f $commonvoice/test.tsv ]; then
    log "  Common Voice: $commonvoice"
  else
    log "  No Common Voice Vietnamese under $dl_dir (cv-corpus-*/vi): its test set is skipped."
    log "  Download it from https://commonvoice.mozilla.org/vi/datasets and extract it in $dl_dir."
  fi
  if [ -f $fleurs/test.tsv ]; then
    for part in dev test; do
      [ -f $fleurs/audio/$part.tar.gz ] && extract $fleurs/audio/$part.tar.gz $fleurs/audio
    done
  else
    log "  No FLEURS Vietnamese in $fleurs: its test set is skipped. To get it:"
    log "  huggingface-cli download google/fleurs --repo-type dataset \\"
    log "    --include 'data/vi_vn/*.tsv' 'data/vi_vn/audio/dev.tar.gz' 'data/vi_vn/audio/test.tar.gz' \\"
    log "    --local-dir $dl_dir/fleurs"
  fi
fi

if [ $stage -le 1 ] && [ $stop_stage -ge 1 ]; then
  log "Stage 1: lhotse manifests (text: NFC, lower case, no punctuation, Vietnamese letters)"
  mkdir -p $manifests
  [ -f $gigaspeech2/train_raw.tsv ] || { log "  no $gigaspeech2/train_raw.tsv: run stage 0 first"; exit 1; }
  todo=""; args=""
  for corpus in gigaspeech2 commonvoice fleurs; do
    dir=${!corpus}
    if [ -f $manifests/.$corpus.done ]; then log "  $corpus done before"; continue; fi
    if [ $corpus != gigaspeech2 ] && [ ! -f $dir/test.tsv ]; then log "  $corpus absent: skipped"; continue; fi
    todo="$todo $corpus"; args="$args --$corpus $dir"
  done
  if [ -n "$todo" ]; then
    $PY -m icefall.data.vietnamese manifests --manifest-dir $manifests --num-jobs $num_jobs $args
    for corpus in $todo; do touch $manifests/.$corpus.done; done
  fi
fi

if [ $stage -le 2 ] && [ $stop_stage -ge 2 ]; then
  log "Stage 2: compute fbank ($num_jobs jobs)"
  # icefall.data.features skips a split whose cuts already exist.
  $PY -m icefall.data.features --manifest-dir $manifests --fbank-dir $fbank \
    --prefix vietnamese --splits gigaspeech2-train $(eval_splits) --num-jobs $num_jobs
fi

if [ $stage -le 3 ] && [ $stop_stage -ge 3 ]; then
  log "Stage 3: labeled subset $labeled (refined transcripts)"
  if [ ! -f $fbank/vietnamese_cuts_$labeled.jsonl.gz ]; then
    $PY -m icefall.data.vietnamese labeled --fbank-dir $fbank --manifest-dir $manifests \
      --hours $labeled_hours --seed $seed
  else
    log "  done before ($fbank/vietnamese_cuts_$labeled.jsonl.gz)"
  fi
fi

if [ $stage -le 4 ] && [ $stop_stage -ge 4 ]; then
  log "Stage 4: token sets on $labeled (BPE $bpe_vocab_size; characters)"
  sups=$manifests/vietnamese_supervisions_$labeled.jsonl.gz
  if [ ! -f data/lang_bpe_$bpe_vocab_size/tokens.txt ]; then
    $PY -m icefall.data.tokenizer --type bpe --vocab-size $bpe_vocab_size \
      --lang-dir data/lang_bpe_$bpe_vocab_size --supervisions $sups
  else
    log "  data/lang_bpe_$bpe_vocab_size done before"
  fi
  if [ ! -f data/lang_char/tokens.txt ]; then
    $PY -m icefall.data.tokenizer --type char --lang-dir data/lang_char --supervisions $sups
  else
    log "  data/lang_char done before"
  fi
fi

if [ $stage -le 5 ] && [ $stop_stage -ge 5 ]; then
  log "Stage 5: ${lm_order}-gram LM and lexicons from the training transcripts"
  if [ ! -f data/lm/words.txt ]; then
    $PY -m icefall.data.lm_text transcripts --out-dir data/lm \
      --supervisions $manifests/vietnamese_supervisions_gigaspeech2-train-refined.jsonl.gz
  else
    log "  data/lm/words.txt done before"
  fi
  if [ ! -f data/lm/${lm_order}gram.arpa ]; then
    $PY -m icefall.asr.lm arpa --text data/lm/text.txt --order $lm_order --out data/lm/${lm_order}gram.arpa
  else
    log "  data/lm/${lm_order}gram.arpa done before"
  fi
  for d in data/lang_bpe_$bpe_vocab_size data/lang_char; do
    if [ ! -f $d/lexicon.txt ]; then
      $PY -m icefall.asr.lm lexicon --lang-dir $d --words data/lm/words.txt
    else
      log "  $d/lexicon.txt done before"
    fi
  done
fi

log "Done"
