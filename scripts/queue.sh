#!/usr/bin/env bash
# A re-orderable sweep queue: each line of the queue file is "<slug part> <grid> [<grid> ...]"; the first line
# not yet taken is run with `python -m lib sweep <grids> --only <slug part> --no-footprint --refresh-outdated`
# (pending rows first, then rows decoded with an older recipe), then the file is read
# again, so lines can be added, removed or reordered while it runs. Taken lines are listed in <queue file>.taken.
#   nohup bash scripts/queue.sh logs/queue-a.txt > logs/queue-a.log 2>&1 &
# WAIT_PID=<pid>: first wait for that process (a sweep already running) to end.
set -uo pipefail
cd "$(dirname "$0")/.."
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
QUEUE=$1
TAKEN="$QUEUE.taken"
touch "$TAKEN"
if [ -n "${WAIT_PID:-}" ]; then while kill -0 "$WAIT_PID" 2>/dev/null; do sleep 20; done; fi
while true; do
  line=$(grep -v -x -F -f "$TAKEN" "$QUEUE" | grep -v '^\s*#' | grep -v '^\s*$' | head -1)
  [ -z "$line" ] && break
  echo "$line" >> "$TAKEN"
  read -r only grids <<< "$line"
  echo "[$(date +%T)] queue: $only"
  .venv/bin/python -m lib sweep $grids --only "$only" --no-footprint --refresh-outdated --pause-file "${PAUSE_FILE:-logs/sweep.pause}" \
    ${QUEUE_COMMIT:+--commit}
done
echo "[$(date +%T)] queue empty"
