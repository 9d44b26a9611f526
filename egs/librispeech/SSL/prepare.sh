#!/usr/bin/env bash
# Prepares LibriSpeech for k2SSL pretraining and fine-tuning. Run from egs/librispeech/SSL:
#
#   ./prepare.sh [--stage N] [--stop-stage M] [--dl-dir DIR] [--parts "dev-clean ..."]
#                [--finetuning-dir DIR] [--num-jobs J] [--seed S] [--bpe-vocab-size V]
#                [--num-clusters-1 K1] [--kmeans-fit-hours F] [--device cpu|cuda]
#                [--iter1-ckpt PATH --iter2-layer N [--num-clusters-2 K2]]   (stage 6 only)
#                [--lm-url URL]                                             (stage 7 only)
#
# Stages (each is skipped when its outputs exist, so re-running is cheap):
#   0  download the parts (skipped for $dl_dir/LibriSpeech/<part> already there) and Libri-light's
#      limited-resource sets (librispeech_finetuning.tgz -> --finetuning-dir, default
#      $dl_dir/librispeech_finetuning; skipped when there)
#   1  lhotse manifests                        -> data/manifests/librispeech_{recordings,supervisions}_<part>
#        and of the fine-tuning sets the papers use: train-10min (1h/0), train-1h (1h/*),
#        train-10h (1h/* + 9h); train-clean-100 is the 100 h set
#   2  fbank (80-dim, 100 Hz, lilcom)          -> data/fbank/librispeech_cuts_<part or set>.jsonl.gz
#   3  pretraining split                       -> data/fbank/librispeech_cuts_train-all-shuf.jsonl.gz
#        all training parts present (960 h), shuffled with --seed (icefall/data/librispeech.py)
#   4  token sets: BPE (--bpe-vocab-size, 500) and characters -> data/lang_bpe_<V>/, data/lang_char/
#   5  k-means iteration 1: MFCC-39, K1 (100) clusters, 100 Hz -> data/kmeans-mfcc-<K1>/
#   6  k-means iteration 2, after the first pretraining: layer N of --iter1-ckpt, K2 (500)
#      clusters, 50 Hz                          -> data/kmeans-l<N>-<K2>/
#   7  (on request: --stage 7 --stop-stage 7) the official LM files of openslr 11 (downloads
#      skipped for files already in $dl_dir/lm): librispeech-lm-norm.txt.gz, 3-gram.arpa.gz,
#      4-gram.arpa.gz, librispeech-lexicon.txt, librispeech-vocab.txt -> data/lm/{3,4}gram.arpa
#      and a lexicon of the vocabulary per lang dir -> data/lang_{bpe_<V>,char}/lexicon.txt
# Stages 5-6 fit on the first --kmeans-fit-hours (100) of train-all-shuf and label
# train-all-shuf and the dev parts. docs/librispeech.md describes sizes, times and next steps.
set -euo pipefail

stage=0
stop_stage=5
dl_dir=download
parts="dev-clean dev-other test-clean test-other train-clean-100 train-clean-360 train-other-500"
num_jobs=15
seed=42
finetuning_dir=""
ft_sets="train-10min train-1h train-10h"
ft_url=https://dl.fbaipublicfiles.com/librilight/data/librispeech_finetuning.tgz
bpe_vocab_size=500
num_clusters_1=100
num_clusters_2=500
kmeans_fit_hours=100
iter1_ckpt=""
iter2_layer=""
device=cpu
lm_url=https://www.openslr.org/resources/11
PY=${PYTHON:-python3}  # the interpreter with icefall installed

while [ $# -gt 0 ]; do
  case "$1" in
    --stage) stage=$2; shift 2 ;;
    --stop-stage) stop_stage=$2; shift 2 ;;
    --dl-dir) dl_dir=$2; shift 2 ;;
    --parts) parts=$2; shift 2 ;;
    --num-jobs) num_jobs=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    --finetuning-dir) finetuning_dir=$2; shift 2 ;;
    --bpe-vocab-size) bpe_vocab_size=$2; shift 2 ;;
    --num-clusters-1) num_clusters_1=$2; shift 2 ;;
    --num-clusters-2) num_clusters_2=$2; shift 2 ;;
    --kmeans-fit-hours) kmeans_fit_hours=$2; shift 2 ;;
    --iter1-ckpt) iter1_ckpt=$2; shift 2 ;;
    --iter2-layer) iter2_layer=$2; shift 2 ;;
    --device) device=$2; shift 2 ;;
    --lm-url) lm_url=$2; shift 2 ;;
    -h|--help) sed -n '2,29p' "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 1 ;;
  esac
done

manifests=data/manifests
fbank=data/fbank
corpus=$dl_dir/LibriSpeech
[ -n "$finetuning_dir" ] || finetuning_dir=$dl_dir/librispeech_finetuning

log() {
  local fname=${BASH_SOURCE[1]##*/}
  echo -e "$(date '+%Y-%m-%d %H:%M:%S') (${fname}:${BASH_LINENO[0]}:${FUNCNAME[1]}) $*"
}

# The parts of $parts that are on disk (stage 0 makes them all present, or fails).
present_parts() {
  local p out=""
  for p in $parts; do [ -d $corpus/$p ] && out="$out $p"; done
  echo $out
}

# "dev-clean dev-other" among the present parts: validation splits that get labels.
dev_parts() {
  local p out=""
  for p in $(present_parts); do case $p in dev-*) out="$out $p" ;; esac; done
  echo $out
}

log "parts: $parts; stages $stage..$stop_stage"

if [ $stage -le 0 ] && [ $stop_stage -ge 0 ]; then
  log "Stage 0: download LibriSpeech to $dl_dir"
  for part in $parts; do
    if [ -d $corpus/$part ]; then
      log "  $corpus/$part exists"
      continue
    fi
    log "  downloading $part (lhotse download_librispeech)"
    if ! $PY -c "from lhotse.recipes import download_librispeech as d; d('$dl_dir', ['$part'])" \
        || [ ! -d $corpus/$part ]; then
      log "Could not download $part. Without internet access, fetch $part.tar.gz from"
      log "https://www.openslr.org/12 elsewhere and extract it here: tar xzf $part.tar.gz -C $dl_dir"
      log "(it unpacks to $corpus/$part/<speaker>/<chapter>/), or point --dl-dir at a directory"
      log "holding LibriSpeech/, or leave $part out of --parts."
      exit 1
    fi
  done
  if [ -d $finetuning_dir/1h ] && [ -d $finetuning_dir/9h ]; then
    log "  $finetuning_dir exists"
  else
    log "  downloading Libri-light's fine-tuning sets ($ft_url)"
    mkdir -p $dl_dir
    if ! $PY -c "import urllib.request as u; u.urlretrieve('$ft_url', '$dl_dir/librispeech_finetuning.tgz')" \
        || ! tar xzf $dl_dir/librispeech_finetuning.tgz -C $(dirname $finetuning_dir) \
        || [ ! -d $finetuning_dir/9h ]; then
      log "Could not download $ft_url. Without internet access, fetch it elsewhere and"
      log "extract it: tar xzf librispeech_finetuning.tgz -C $dl_dir (it unpacks to"
      log "$dl_dir/librispeech_finetuning/{1h,9h}/), or point --finetuning-dir at that directory."
      exit 1
    fi
  fi
fi

if [ $stage -le 1 ] && [ $stop_stage -ge 1 ]; then
  log "Stage 1: lhotse manifests"
  mkdir -p $manifests
  todo=""
  for part in $(present_parts); do
    if [ -f $manifests/.$part.done ]; then log "  $part done before"; else todo="$todo $part"; fi
  done
  if [ -n "$todo" ]; then
    # lhotse's recipe reads the *.trans.txt files and the audio headers; recording and
    # supervision ids are the utterance ids (e.g. 1089-134686-0000).
    list=$(printf "'%s'," $todo)
    # (icefall's wrapper first checks that every transcript is UTF-8, naming a file that is not.)
    $PY -c "from icefall.data.librispeech import prepare_manifests as p; \
p('$corpus', [$list], '$manifests', num_jobs=$num_jobs)"
    for part in $todo; do touch $manifests/.$part.done; done
  fi
  if [ -f $manifests/.finetuning.done ]; then
    log "  $ft_sets done before"
  else
    $PY -m icefall.data.librispeech finetuning-manifests --finetuning-dir $finetuning_dir \
      --manifest-dir $manifests
    touch $manifests/.finetuning.done
  fi
fi

if [ $stage -le 2 ] && [ $stop_stage -ge 2 ]; then
  log "Stage 2: compute fbank ($num_jobs jobs)"
  # icefall.data.features skips a part whose cuts already exist.
  $PY -m icefall.data.features --manifest-dir $manifests --fbank-dir $fbank \
    --prefix librispeech --splits $(present_parts) $ft_sets --num-jobs $num_jobs
fi

if [ $stage -le 3 ] && [ $stop_stage -ge 3 ]; then
  log "Stage 3: train-all-shuf"
  if [ ! -f $fbank/.splits.done ]; then
    $PY -m icefall.data.librispeech splits --fbank-dir $fbank --seed $seed
    touch $fbank/.splits.done
  else
    log "  done before ($fbank/.splits.done)"
  fi
fi

if [ $stage -le 4 ] && [ $stop_stage -ge 4 ]; then
  log "Stage 4: token sets (BPE $bpe_vocab_size; characters)"
  # The transcripts of the training parts present (all 960 h, as icefall's LibriSpeech BPE).
  texts=""
  for part in $(present_parts); do
    case $part in train-*) texts="$texts $manifests/librispeech_supervisions_$part.jsonl.gz" ;; esac
  done
  if [ ! -f data/lang_bpe_$bpe_vocab_size/tokens.txt ]; then
    $PY -m icefall.data.tokenizer --type bpe --vocab-size $bpe_vocab_size \
      --lang-dir data/lang_bpe_$bpe_vocab_size --supervisions $texts
  else
    log "  data/lang_bpe_$bpe_vocab_size done before"
  fi
  if [ ! -f data/lang_char/tokens.txt ]; then
    $PY -m icefall.data.tokenizer --type char --lang-dir data/lang_char --supervisions $texts
  else
    log "  data/lang_char done before"
  fi
fi

label_splits="train-all-shuf $(dev_parts)"

if [ $stage -le 5 ] && [ $stop_stage -ge 5 ]; then
  out=data/kmeans-mfcc-$num_clusters_1
  log "Stage 5: k-means iteration 1 (MFCC, $num_clusters_1 clusters, 100 Hz) -> $out"
  if [ ! -f $out/.done ]; then
    $PY -m icefall.ssl.labels --manifest-dir $fbank --out-dir $out --prefix librispeech \
      --features mfcc --num-clusters $num_clusters_1 --fit-split train-all-shuf \
      --splits $label_splits --max-fit-frames $((kmeans_fit_hours * 3600 * 100)) --seed $seed
    touch $out/.done
  else
    log "  done before ($out/.done)"
  fi
fi

if [ $stage -le 6 ] && [ $stop_stage -ge 6 ]; then
  if [ -z "$iter1_ckpt" ] || [ -z "$iter2_layer" ]; then
    log "Stage 6 needs --iter1-ckpt PATH (a checkpoint of the first pretraining, e.g."
    log "zipformer/exp-iter1/epoch-45.pt) and --iter2-layer N (the encoder layer to cluster)"
    exit 1
  fi
  out=data/kmeans-l$iter2_layer-$num_clusters_2
  log "Stage 6: k-means iteration 2 (layer $iter2_layer of $iter1_ckpt, $num_clusters_2 clusters, 50 Hz) -> $out"
  if [ ! -f $out/.done ]; then
    $PY -m icefall.ssl.labels --manifest-dir $fbank --out-dir $out --prefix librispeech \
      --features layer --checkpoint $iter1_ckpt --layer $iter2_layer --device $device \
      --num-clusters $num_clusters_2 --fit-split train-all-shuf --splits $label_splits \
      --max-fit-frames $((kmeans_fit_hours * 3600 * 50)) --seed $seed
    touch $out/.done
  else
    log "  done before ($out/.done)"
  fi
fi

if [ $stage -le 7 ] && [ $stop_stage -ge 7 ]; then
  log "Stage 7: LM files and lexicons (openslr 11) -> $dl_dir/lm/, data/lm/, data/lang_*/lexicon.txt"
  $PY -m icefall.data.lm_text librispeech --dl-dir $dl_dir/lm --url $lm_url
  mkdir -p data/lm
  for n in 3 4; do
    if [ ! -f data/lm/${n}gram.arpa ]; then  # KenLM reads plain ARPA (or its own binary)
      gunzip -c $dl_dir/lm/$n-gram.arpa.gz > data/lm/.${n}gram.arpa.tmp
      mv data/lm/.${n}gram.arpa.tmp data/lm/${n}gram.arpa
    else
      log "  data/lm/${n}gram.arpa done before"
    fi
  done
  for d in data/lang_bpe_$bpe_vocab_size data/lang_char; do
    if [ ! -f $d/lexicon.txt ]; then
      $PY -m icefall.asr.lm lexicon --lang-dir $d --words $dl_dir/lm/librispeech-vocab.txt
    else
      log "  $d/lexicon.txt done before"
    fi
  done
fi

log "Done"
