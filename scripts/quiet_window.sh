#!/usr/bin/env bash
# Run one timing command on a quiet CPU: stop (SIGSTOP) every background sweep of this checkout and everything
# it started (papermill kernels included), run the command, then let them go on (SIGCONT), even when the
# command fails or is interrupted.
#   bash scripts/quiet_window.sh .venv/bin/python benchmarks/cpu_class_latency.py --only hqq-wo-int3-g64__
set -uo pipefail
cd "$(dirname "$0")/.."
descendants() { local p; for p in "$@"; do echo "$p"; descendants $(pgrep -P "$p"); done; }
mapfile -t roots < <(pgrep -f "^\.venv/bin/python -m lib (sweep|nonspeech)|^\.venv/bin/python benchmarks/peak_memory" || true)
mapfile -t pids < <(descendants "${roots[@]}")
resume() { [ ${#pids[@]} -gt 0 ] && kill -CONT "${pids[@]}" 2>/dev/null; echo "resumed ${#pids[@]} process(es)"; }
trap resume EXIT
trap 'exit 130' INT TERM
[ ${#pids[@]} -gt 0 ] && kill -STOP "${pids[@]}"
echo "stopped ${#pids[@]} process(es) of ${#roots[@]} background job(s): ${pids[*]:-none}"
sleep 5  # let the stopped processes' threads leave the cores
"$@"
