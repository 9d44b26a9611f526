#!/usr/bin/env bash
# Every probing task for the fbank baseline and every upstream given, filling one table.
#
#   egs/mini/SSL/probe/run_probe.sh [--tasks "pr asr sid asv ks rate qbe"] [--work-dir DIR] \
#       [--out probe/results] [NAME=CHECKPOINT ...]
#   e.g. probe/run_probe.sh hubert=zipformer/exp-pretrain/epoch-2.pt spidr=spidr/exp-spidr/epoch-6.pt
#
# For each upstream (fbank always first) and task: probe/probe.py with the features cached in
# probe/cache/<name>/ and the probe in probe/exp/<name>/<task>/ (a finished probe is only
# rescored; an interrupted one resumes). Then <out>.md (the table) and <out>-weights.png (the
# learned layer weights). Needs a prepared corpus (prepare.sh stages 1-2) in --work-dir
# (default egs/mini/SSL). One CPU thread per probe.
set -euo pipefail

recipe_dir=$(cd "$(dirname "$0")/.." && pwd)
work_dir=$recipe_dir
tasks="pr asr sid asv ks rate qbe"
out=probe/results
upstreams=("fbank=fbank")

while [ $# -gt 0 ]; do
  case "$1" in
    --tasks) tasks=$2; shift 2 ;;
    --work-dir) work_dir=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *=*) upstreams+=("$1"); shift ;;
    *) echo "unknown option $1 (upstreams are NAME=CHECKPOINT)" >&2; exit 1 ;;
  esac
done

cd "$work_dir"
export PYTHONPATH="$(cd "$recipe_dir/../../.." && pwd)${PYTHONPATH:+:$PYTHONPATH}"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
log() { echo "$(date '+%F %T') (run_probe.sh) $*"; }

for entry in "${upstreams[@]}"; do
  name=${entry%%=*}
  ckpt=${entry#*=}
  for task in $tasks; do
    log "$name: $task"
    python3 "$recipe_dir/probe/probe.py" --upstream "$ckpt" --task "$task" \
      --cache-dir "probe/cache/$name" --exp-dir "probe/exp/$name/$task"
  done
done
python3 -m icefall.probe.report --exp-dir probe/exp --out "$out"
log "table: $out.md, layer weights: $out-weights.png"
