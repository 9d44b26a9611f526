#!/usr/bin/env bash
# Every benchmark of test/benchmarks on one CUDA GPU, in under 8 minutes, into one markdown file.
#
#   ./install.sh && . .venv/bin/activate          # a fresh install (CUDA torch on the machine)
#   test/benchmarks/gpu_suite.sh [--out gpu_suite.md]
#   test/benchmarks/gpu_suite.sh --dry-run --out /tmp/dry.md   # CPU, tiny sizes (test_gpu_suite.py)
#
# The file starts with one summary table (a row per run: benchmark, precision, wall seconds,
# exit status: "timeout" when a run passed its share of the 8 minutes) and then the tables each
# run printed, under the command that printed them. A failed run does not stop the others.
set -uo pipefail
cd "$(dirname "$0")/../.."
export PYTHONPATH="${PYTHONPATH:-$PWD}"

out=gpu_suite.md
dry=0
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) dry=1 ;;
    --out) out="$2"; shift ;;
    *) echo "usage: $0 [--dry-run] [--out FILE]" >&2; exit 2 ;;
  esac
  shift
done

B=test/benchmarks
if [ $dry = 1 ]; then
  dev=cpu
  # name | precision | time limit (s) | command
  runs=(
    "encoders fwd+bwd|fp32|120|$B/bench_encoders.py --device cpu --tiny --batch 1 --seconds 0.5 --reps 1"
    "pruned RNN-T vs full loss|fp32|120|$B/bench_rnnt_loss.py --only losses --device cpu --batch 2 --frames 20 --symbols 5 --vocab 10"
    "HuBERT loss memory|fp32|120|$B/bench_hubert_loss.py --device cpu --batch 1 --seconds 1"
    "k-means fit + label|fp32|120|$B/bench_kmeans.py --dry-run --methods ours faiss"
    "training steps, compiled vs eager|fp32|120|$B/bench_compile.py --dry-run"
  )
else
  dev=cuda
  python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: use --dry-run on CPU')" || exit 1
  runs=(
    "encoders fwd+bwd|fp32|35|$B/bench_encoders.py --device cuda --batch 8 --seconds 10 --reps 3"
    "encoders fwd+bwd|fp16|35|$B/bench_encoders.py --device cuda --dtype fp16 --batch 8 --seconds 10 --reps 3"
    "encoders fwd+bwd|bf16|35|$B/bench_encoders.py --device cuda --dtype bf16 --batch 8 --seconds 10 --reps 3"
    "encoders fwd+bwd, batch 32 (the host's share per audio second shrinks)|bf16|35|$B/bench_encoders.py --device cuda --dtype bf16 --batch 32 --seconds 10 --reps 3"
    "pruned RNN-T vs full loss|fp32|30|$B/bench_rnnt_loss.py --only losses --device cuda"
    "HuBERT loss memory|fp32|30|$B/bench_hubert_loss.py --device cuda --batch 8 --seconds 15"
    "k-means fit + label (ours on GPU, faiss-cpu 16 threads)|fp32|50|$B/bench_kmeans.py --device cuda --methods ours faiss --threads 16 --frames 1000000 --layer-frames 1000000"
    "200 training steps, hubert-base vs zipformer-ssl-base, compiled vs eager|bf16|220|$B/bench_compile.py --device cuda --dtype bf16 --encoders hubert-base zipformer-ssl-base --batch 8 --seconds 10 --steps 200"
  )
fi

body=$(mktemp)
summary=$(mktemp)
trap 'rm -f "$body" "$summary"' EXIT
for run in "${runs[@]}"; do
  IFS='|' read -r name prec limit cmd <<<"$run"
  echo ">> $name ($prec): python3 $cmd" >&2
  start=$(date +%s.%N)
  log=$(timeout "$limit" python3 $cmd 2>&1)
  rc=$?
  secs=$(python3 -c "print(f'{$(date +%s.%N) - $start:.0f}')")
  case $rc in 0) status=ok ;; 124) status=timeout ;; *) status="failed ($rc)" ;; esac
  echo "| $name | $prec | $secs | $status |" >>"$summary"
  {
    echo "### $name ($prec)"
    echo
    echo "\`python3 $cmd\`: $status after $secs s"
    echo
    # the benchmark's own tables and result lines; the whole log when it failed
    # (torch's log lines, warnings and indented context left out)
    if [ $rc = 0 ]; then grep -v -E '^[WIE][0-9]{4} |^USDT:|Warning|^\s|^$' <<<"$log"; else tail -n 20 <<<"$log" | sed 's/^/    /'; fi
    echo
  } >>"$body"
done

{
  echo "# GPU suite ($dev$([ $dry = 1 ] && echo ', dry run'))"
  echo
  echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(python3 -c 'import torch; print("torch", torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU")'), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
  echo
  echo "| benchmark | precision | wall s | status |"
  echo "|---|---|---|---|"
  cat "$summary"
  echo
  cat "$body"
} >"$out"
echo "wrote $out" >&2
! grep -q -E '\| (timeout|failed)' "$summary"
