#!/usr/bin/env bash
# Two bbc1k app replicas behind HAProxy on this machine (deploy/haproxy.cfg).
#
#   MODELS_DIR=models deploy/replicas.sh                 # options go to every `python -m app serve`
#   deploy/replicas.sh --classifier models/bbc-classifier.onnx
#
# Clients use http://HOST:$LB_PORT (8080); HAProxy's status page is on
# $STATS_PORT (8404). The replicas listen on 127.0.0.1, ports $REPLICA_PORTS
# ("5001 5002"), each with $THREADS ONNX Runtime threads (default: this
# machine's CPUs shared between them). HAProxy starts once every replica's
# /readyz is 200; until then, and whenever a replica is down, it sends it
# nothing. A replica sent SIGTERM answers 503 on /readyz for $DRAIN seconds (3)
# while it still serves, so HAProxy takes it out before it closes its
# connections. Ctrl-C or SIGTERM stops everything (the replicas finish the
# requests they hold); if any process dies, the others are stopped and the
# exit status is 1. Needs haproxy (Debian: apt-get install haproxy).
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PY:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
LB_PORT="${LB_PORT:-8080}"
STATS_PORT="${STATS_PORT:-8404}"
read -r -a PORTS <<<"${REPLICA_PORTS:-5001 5002}"
if [ "${#PORTS[@]}" -ne 2 ]; then
  echo "replicas.sh: REPLICA_PORTS must name two ports (deploy/haproxy.cfg has two servers)" >&2
  exit 2
fi
THREADS="${THREADS:-$(( $(nproc) / 2 > 0 ? $(nproc) / 2 : 1 ))}"
DRAIN="${DRAIN:-3}"  # > HAProxy's time to mark a replica down (fall 2: 1 s + 0.5 s)
READY_TIMEOUT="${READY_TIMEOUT:-300}"
PATH="$PATH:/usr/sbin:/usr/local/sbin"  # where Debian puts haproxy; not on every user's PATH
command -v haproxy >/dev/null || { echo "replicas.sh: haproxy is not installed (apt-get install haproxy)" >&2; exit 2; }

pids=()
stop() {  # SIGTERM to everything still running, then wait for it
  trap - INT TERM EXIT
  kill -TERM "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
}
trap 'stop; exit 0' INT TERM
trap stop EXIT

for port in "${PORTS[@]}"; do
  THREADS="$THREADS" DRAIN="$DRAIN" "$PY" -m app serve --host 127.0.0.1 --port "$port" "$@" &
  pids+=($!)
done

ready() {  # ready PORT: the replica's /readyz answers 200
  "$PY" -c "import sys, urllib.request
try: sys.exit(urllib.request.urlopen('http://127.0.0.1:$1/readyz', timeout=2).status != 200)
except OSError: sys.exit(1)"
}
deadline=$(( SECONDS + READY_TIMEOUT ))
for i in "${!PORTS[@]}"; do
  until ready "${PORTS[$i]}"; do
    if ! kill -0 "${pids[$i]}" 2>/dev/null; then
      echo "replicas.sh: the replica on port ${PORTS[$i]} exited before it was ready" >&2
      exit 1
    fi
    if (( SECONDS > deadline )); then
      echo "replicas.sh: the replica on port ${PORTS[$i]} is not ready after ${READY_TIMEOUT} s" >&2
      exit 1
    fi
    sleep 0.2
  done
done

LB_PORT="$LB_PORT" STATS_PORT="$STATS_PORT" REPLICA1="127.0.0.1:${PORTS[0]}" REPLICA2="127.0.0.1:${PORTS[1]}" \
  haproxy -db -f deploy/haproxy.cfg &
pids+=($!)
echo "replicas.sh: serving on http://127.0.0.1:$LB_PORT (status: http://127.0.0.1:$STATS_PORT)" >&2

wait -n "${pids[@]}" || true  # one of them stopped on its own: stop the rest
echo "replicas.sh: a process exited; stopping the others" >&2
exit 1
