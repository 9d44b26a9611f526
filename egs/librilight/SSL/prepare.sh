#!/usr/bin/env bash
# Prepares Libri-Light (unlabelled audiobooks, 60k h) for k2SSL Large pretraining. Run from
# egs/librilight/SSL:
#
#   ./prepare.sh [--stage N] [--stop-stage M] [--dl-dir DIR] [--subsets "small medium large"]
#                [--num-jobs J] [--seed S] [--segment-seconds W] [--min-segment-seconds T]
#                [--cuts-per-piece P] [--shard-size Z] [--dev-files F] [--frontend cnn|fbank]
#                [--num-clusters K] [--kmeans-fit-hours H]
#                [--label-ckpt PATH --label-layer N] [--device cpu|cuda]
#
# Stages (each is skipped when its outputs exist, so re-running is cheap):
#   0  download the subsets (skipped for $dl_dir/LibriLight/<subset> already there)
#   1  manifests of each subset          -> data/manifests/librilight_{recordings,supervisions}_<subset>
#   2  W-second segments (15 s), in lazy pieces of P (10000) cuts, files in a seeded order;
#      F (20) whole files of the first subset held out as dev
#                                        -> data/segments/librilight_cuts_{<subset>.NNNNNN,dev}
#   3  --frontend fbank only: 80-dim fbank per piece, J parallel jobs -> data/fbank/
#   4  k-means fit on a seeded H-hour (100) sample of the first subset's segments:
#      MFCC-39 at 100 Hz, or with --label-ckpt layer N of a pretrain.py checkpoint (50 Hz)
#                                        -> data/kmeans-{mfcc,l<N>}-<K>/kmeans.pt
#   5  labels for every piece and dev, J parallel jobs (icefall.ssl.labels --kmeans-model)
#                                        -> data/kmeans-*/librilight_cuts_{<subset>.NNNNNN,dev}
#   6  Lhotse Shar shards of each subset (audio as flac; fbank: lilcom features), J parallel
#      jobs, and the lazy training manifest of all subsets -> data/kmeans-*/shar/<subset>/,
#      data/kmeans-*/librilight_cuts_train.jsonl.gz
# docs/librilight.md describes sizes, times and pretraining.
set -euo pipefail

stage=0
stop_stage=6
dl_dir=download
subsets="small medium large"
num_jobs=16
seed=42
segment_seconds=15
min_segment_seconds=2
cuts_per_piece=10000
shard_size=1000
dev_files=20
frontend=cnn
num_clusters=""
kmeans_fit_hours=100
label_ckpt=""
label_layer=""
device=cpu
PY=${PYTHON:-python3}  # the interpreter with icefall installed

while [ $# -gt 0 ]; do
  case "$1" in
    --stage) stage=$2; shift 2 ;;
    --stop-stage) stop_stage=$2; shift 2 ;;
    --dl-dir) dl_dir=$2; shift 2 ;;
    --subsets) subsets=$2; shift 2 ;;
    --num-jobs) num_jobs=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    --segment-seconds) segment_seconds=$2; shift 2 ;;
    --min-segment-seconds) min_segment_seconds=$2; shift 2 ;;
    --cuts-per-piece) cuts_per_piece=$2; shift 2 ;;
    --shard-size) shard_size=$2; shift 2 ;;
    --dev-files) dev_files=$2; shift 2 ;;
    --frontend) frontend=$2; shift 2 ;;
    --num-clusters) num_clusters=$2; shift 2 ;;
    --kmeans-fit-hours) kmeans_fit_hours=$2; shift 2 ;;
    --label-ckpt) label_ckpt=$2; shift 2 ;;
    --label-layer) label_layer=$2; shift 2 ;;
    --device) device=$2; shift 2 ;;
    -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 1 ;;
  esac
done

case $frontend in cnn|fbank) ;; *) echo "--frontend must be cnn or fbank" >&2; exit 1 ;; esac
if [ $((cuts_per_piece % shard_size)) -ne 0 ]; then
  echo "--cuts-per-piece ($cuts_per_piece) must be a multiple of --shard-size ($shard_size)" >&2
  exit 1
fi

corpus=$dl_dir/LibriLight
manifests=data/manifests
segments=data/segments
LL="$PY -m icefall.data.librilight"

log() {
  local fname=${BASH_SOURCE[1]##*/}
  echo -e "$(date '+%Y-%m-%d %H:%M:%S') (${fname}:${BASH_LINENO[0]}:${FUNCNAME[1]}) $*"
}

# The subsets of $subsets that are on disk (stage 0 makes them all present, or fails).
present_subsets() {
  local s out=""
  for s in $subsets; do [ -d $corpus/$s ] && out="$out $s"; done
  echo $out
}

# Runs "$@ <items...>" over the items on stdin in $num_jobs parallel processes, each taking an
# equal share (one start-up per process); fails if any process fails.
parallel() {
  local items n
  items=$(cat)
  n=$(echo "$items" | grep -c . || true)
  [ "$n" -eq 0 ] && return 0
  echo "$items" | xargs -P "$num_jobs" -n $(((n + num_jobs - 1) / num_jobs)) "$@"
}

# librilight_cuts_<split>.jsonl.gz paths -> split names (small.000003, dev).
split_names() { sed -e 's|.*/librilight_cuts_||' -e 's|\.jsonl\.gz$||'; }

# Where labelling reads cuts from, and the label directory.
if [ $frontend = fbank ]; then src=data/fbank; else src=$segments; fi
if [ -n "$label_ckpt" ]; then
  [ -n "$label_layer" ] || { echo "--label-ckpt needs --label-layer N" >&2; exit 1; }
  num_clusters=${num_clusters:-500}
  kmeans=data/kmeans-l$label_layer-$num_clusters
  label_opts="--features layer --checkpoint $label_ckpt --layer $label_layer --device $device"
  label_rate=50
else
  num_clusters=${num_clusters:-100}
  kmeans=data/kmeans-mfcc-$num_clusters
  label_opts="--features mfcc"
  label_rate=100
fi

log "subsets: $subsets; stages $stage..$stop_stage; frontend $frontend; labels -> $kmeans"

if [ $stage -le 0 ] && [ $stop_stage -ge 0 ]; then
  log "Stage 0: download Libri-Light to $corpus"
  mkdir -p $corpus
  for s in $subsets; do
    if [ -d $corpus/$s ]; then
      log "  $corpus/$s exists"
      continue
    fi
    url=https://dl.fbaipublicfiles.com/librilight/data/$s.tar
    log "  downloading $url (resumable), then unpacking"
    if ! $PY -c "from lhotse.utils import resumable_download as d; d('$url', '$dl_dir/$s.tar')" \
        || ! tar xf $dl_dir/$s.tar -C $corpus || [ ! -d $corpus/$s ]; then
      log "Could not download $s. Without internet access, fetch $url elsewhere"
      log "(small 35 GB, medium 321 GB, large 3.05 TB) and unpack it here: tar xf $s.tar -C $corpus"
      log "(it unpacks to $corpus/$s/<speaker>/<book>/), or leave $s out of --subsets."
      exit 1
    fi
    rm -f $dl_dir/$s.tar
  done
fi

if [ $stop_stage -ge 1 ] && [ -z "$(present_subsets)" ]; then
  log "No subset of \"$subsets\" in $corpus: run stage 0 or point --dl-dir at the directory holding LibriLight/"
  exit 1
fi

if [ $stage -le 1 ] && [ $stop_stage -ge 1 ]; then
  log "Stage 1: manifests"
  for s in $(present_subsets); do
    if [ -f $manifests/.$s.done ]; then log "  $s done before"; continue; fi
    $LL manifests --corpus-dir $corpus --subset $s --manifest-dir $manifests --num-jobs $num_jobs
    touch $manifests/.$s.done
  done
fi

if [ $stage -le 2 ] && [ $stop_stage -ge 2 ]; then
  log "Stage 2: ${segment_seconds}-second segments in pieces of $cuts_per_piece"
  dev=$dev_files  # the dev files come from the first subset present
  for s in $(present_subsets); do
    if [ -f $segments/.$s.done ]; then log "  $s done before"; dev=0; continue; fi
    $LL segment --subset $s --manifest-dir $manifests --out-dir $segments \
      --segment-seconds $segment_seconds --min-segment-seconds $min_segment_seconds \
      --cuts-per-piece $cuts_per_piece --dev-files $dev --seed $seed
    touch $segments/.$s.done
    dev=0
  done
fi

first=$(present_subsets | awk '{print $1}')

# The pieces of subset $2 in directory $1, and dev with the first subset.
pieces() {
  ls $1/librilight_cuts_$2.[0-9]*.jsonl.gz
  if [ $2 = $first ] && [ -f $1/librilight_cuts_dev.jsonl.gz ]; then
    echo $1/librilight_cuts_dev.jsonl.gz
  fi
}

if [ $stage -le 3 ] && [ $stop_stage -ge 3 ] && [ $frontend = fbank ]; then
  log "Stage 3: fbank ($num_jobs jobs)"
  for s in $(present_subsets); do
    if [ -f data/fbank/.$s.done ]; then log "  $s done before"; continue; fi
    pieces $segments $s | parallel $LL fbank --out-dir data/fbank
    touch data/fbank/.$s.done
  done
fi

if [ $stage -le 4 ] && [ $stop_stage -ge 4 ]; then
  log "Stage 4: k-means fit ($num_clusters clusters, ${kmeans_fit_hours} h of $first) -> $kmeans"
  if [ -f $kmeans/kmeans.pt ]; then
    log "  done before ($kmeans/kmeans.pt)"
  else
    $LL fit-sample --out $src/librilight_cuts_kmeans-fit.jsonl.gz --hours $kmeans_fit_hours \
      --seed $seed $src/librilight_cuts_$first.[0-9]*.jsonl.gz
    # labels.py labels at least one split: the fit sample is small.
    $PY -m icefall.ssl.labels --manifest-dir $src --out-dir $kmeans --prefix librilight \
      $label_opts --num-clusters $num_clusters --fit-split kmeans-fit --splits kmeans-fit \
      --seed $seed
  fi
fi

if [ $stage -le 5 ] && [ $stop_stage -ge 5 ]; then
  log "Stage 5: labels ($label_rate Hz) for every piece and dev, $num_jobs jobs -> $kmeans"
  for s in $(present_subsets); do
    if [ -f $kmeans/.$s.labels.done ]; then log "  $s done before"; continue; fi
    # Each job labels its share of the pieces with the fitted model; a piece whose output
    # exists is skipped, so an interrupted stage resumes where it stopped.
    pieces $src $s | split_names | parallel $PY -m icefall.ssl.labels --manifest-dir $src \
      --out-dir $kmeans --prefix librilight $label_opts --kmeans-model $kmeans/kmeans.pt --splits
    touch $kmeans/.$s.labels.done
  done
fi

if [ $stage -le 6 ] && [ $stop_stage -ge 6 ]; then
  if [ $frontend = fbank ]; then fields=features=lilcom; else fields=recording=flac; fi
  log "Stage 6: Shar shards ($fields, $shard_size cuts each) and the training manifest"
  train=""
  for s in $(present_subsets); do
    train="$train $(ls $kmeans/librilight_cuts_$s.[0-9]*.jsonl.gz | tr '\n' ' ')"
    if [ -f $kmeans/shar/.$s.done ]; then log "  $s done before"; continue; fi
    ls $kmeans/librilight_cuts_$s.[0-9]*.jsonl.gz | parallel $LL shar --shar-dir $kmeans/shar/$s \
      --fields $fields --cuts-per-piece $cuts_per_piece --shard-size $shard_size
    touch $kmeans/shar/.$s.done
  done
  # Rebuilt when the subsets change (e.g. medium added to small).
  if [ -f $kmeans/librilight_cuts_train.jsonl.gz ] \
      && [ "$(cat $kmeans/.train.subsets 2>/dev/null)" = "$(present_subsets)" ]; then
    log "  training manifest done before"
  else
    $LL concat --out $kmeans/librilight_cuts_train.jsonl.gz $train
    present_subsets > $kmeans/.train.subsets
  fi
fi

log "Done"
