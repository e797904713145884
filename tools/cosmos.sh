#!/usr/bin/env bash
# A local Cosmos DB (SQL API) for the Cosmos store, source, leases and checkpoints tests and
# benchmarks: `@vercel/cosmosdb-server` (npm; an in-memory server speaking Cosmos's REST protocol,
# pinned below), installed under .cache/cosmos, plain HTTP (`--no-ssl`: its bundled TLS
# certificate has expired) on 127.0.0.1:8081. It keeps everything in memory: a restart is empty.
# Its change feed answers the first read with every document and any read with a continuation
# with 304 (README, "Cosmos DB"): catch-up can be tested against it, tailing cannot.
#
#   tools/cosmos.sh start    install if needed, start, wait until it answers (idempotent)
#   tools/cosmos.sh stop     stop the instance this script started
#   tools/cosmos.sh status   exit 0 if it answers, 1 otherwise
#   tools/cosmos.sh restart  stop and start: a fresh, empty server
#   tools/cosmos.sh fetch    only install
#
# Environment: COSMOS_PORT (8081), COSMOS_START_TIMEOUT seconds (60), COSMOS_RUN_DIR
# (.cache/cosmos): where the pid and log go, so that a second instance has its own.
# Clients: endpoint http://127.0.0.1:8081, any key (the server checks none).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
version="1.0.1"
cache="$root/.cache/cosmos"
install="$cache/npm"
run_dir="${COSMOS_RUN_DIR:-$cache}"
pidfile="$run_dir/cosmos.pid"
logfile="$run_dir/cosmos.log"
host="127.0.0.1"
port="${COSMOS_PORT:-8081}"
start_timeout="${COSMOS_START_TIMEOUT:-60}"

log() { printf 'cosmos: %s\n' "$*" >&2; }

# True when an HTTP server answers on host:port. Uses bash's /dev/tcp so that curl is not needed.
answers() {
  local line=""
  { exec 3<>"/dev/tcp/$host/$port"; } 2>/dev/null || return 1
  printf 'GET / HTTP/1.0\r\nHost: %s\r\n\r\n' "$host" >&3 || true
  IFS= read -r -t 3 line <&3 || true
  exec 3<&- 3>&-
  [[ "$line" == HTTP/* ]]
}

ours_running() {
  [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

fetch() {
  if [[ -x "$install/node_modules/.bin/cosmosdb-server" && "$(cat "$install/.version" 2>/dev/null)" == "$version" ]]; then
    return 0
  fi
  command -v npm >/dev/null || { log "npm not found (Node's npm is needed to install the server)"; exit 1; }
  command -v node >/dev/null || { log "node not found (the server runs on Node)"; exit 1; }
  log "installing @vercel/cosmosdb-server@$version into $install"
  rm -rf "$install"
  mkdir -p "$install"
  # A prefix of its own keeps the server's dependencies out of the project's node_modules.
  npm install --prefix "$install" --no-save --no-audit --no-fund --loglevel=error \
    "@vercel/cosmosdb-server@$version" >&2
  echo "$version" >"$install/.version"
}

start() {
  if ours_running && answers; then log "already running on $host:$port (pid $(cat "$pidfile"))"; return 0; fi
  if answers; then log "something already answers on $host:$port; not starting another"; return 0; fi
  fetch
  mkdir -p "$run_dir"
  log "starting on $host:$port"
  # setsid detaches it from the caller's process group so that it outlives the starting shell.
  setsid node "$install/node_modules/@vercel/cosmosdb-server/lib/cli.js" --no-ssl \
    --host "$host" --port "$port" >"$logfile" 2>&1 </dev/null &
  echo $! >"$pidfile"
  local deadline=$((SECONDS + start_timeout))
  until answers; do
    if ! ours_running; then log "exited during start; log follows"; cat "$logfile" >&2; rm -f "$pidfile"; exit 1; fi
    if ((SECONDS >= deadline)); then log "no answer after ${start_timeout}s; see $logfile"; stop; exit 1; fi
    sleep 0.2
  done
  log "ready (pid $(cat "$pidfile"))"
}

stop() {
  if ! ours_running; then rm -f "$pidfile"; log "not running"; return 0; fi
  local pid
  pid="$(cat "$pidfile")"
  kill "$pid"
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  if kill -0 "$pid" 2>/dev/null; then log "pid $pid ignored TERM; killing"; kill -9 "$pid"; fi
  rm -f "$pidfile"
  log "stopped"
}

status() {
  if answers; then
    if ours_running; then log "running on $host:$port (pid $(cat "$pidfile"))"; else log "answering on $host:$port (not started by this script)"; fi
    return 0
  fi
  log "not answering on $host:$port"
  return 1
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  restart) stop; start ;;
  fetch) fetch ;;
  *) echo "usage: $0 start|stop|status|restart|fetch" >&2; exit 2 ;;
esac
