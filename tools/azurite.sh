#!/usr/bin/env bash
# Azurite (Microsoft's Azure Storage emulator, npm `azurite`) for the event stream's append-blob
# tests and benchmarks: installed from npm under .cache/azurite (pinned below), its blob service
# bound to 127.0.0.1:10000, its data under .cache/azurite/data.
#
#   tools/azurite.sh start    install if needed, start, wait until it answers (idempotent)
#   tools/azurite.sh stop     stop the instance this script started
#   tools/azurite.sh status   exit 0 if it answers, 1 otherwise
#   tools/azurite.sh fetch    only install
#
# Environment: AZURITE_PORT (10000), AZURITE_START_TIMEOUT seconds (60), AZURITE_RUN_DIR
# (.cache/azurite): where the pid, log and data go, so that a second instance has its own.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
version="3.37.0"
cache="$root/.cache/azurite"
install="$cache/npm"
run_dir="${AZURITE_RUN_DIR:-$cache}"
pidfile="$run_dir/azurite.pid"
logfile="$run_dir/azurite.log"
data="$run_dir/data"
host="127.0.0.1"
port="${AZURITE_PORT:-10000}"
start_timeout="${AZURITE_START_TIMEOUT:-60}"

log() { printf 'azurite: %s\n' "$*" >&2; }

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
  if [[ -x "$install/node_modules/.bin/azurite-blob" && "$(cat "$install/.version" 2>/dev/null)" == "$version" ]]; then
    return 0
  fi
  command -v npm >/dev/null || { log "npm not found (Node's npm is needed to install Azurite)"; exit 1; }
  command -v node >/dev/null || { log "node not found (Azurite runs on Node)"; exit 1; }
  log "installing azurite@$version into $install"
  rm -rf "$install"
  mkdir -p "$install"
  # A prefix of its own keeps Azurite's many dependencies out of the project's node_modules.
  npm install --prefix "$install" --no-save --no-audit --no-fund --loglevel=error "azurite@$version" >&2
  echo "$version" >"$install/.version"
}

start() {
  if ours_running && answers; then log "already running on $host:$port (pid $(cat "$pidfile"))"; return 0; fi
  if answers; then log "something already answers on $host:$port; not starting another"; return 0; fi
  fetch
  mkdir -p "$run_dir" "$data"
  log "starting on $host:$port (data in $data)"
  # setsid detaches it from the caller's process group so that it outlives the starting shell.
  setsid "$install/node_modules/.bin/azurite-blob" --blobHost "$host" --blobPort "$port" \
    --location "$data" --skipApiVersionCheck --disableProductStyleUrl --silent \
    >"$logfile" 2>&1 </dev/null &
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
  fetch) fetch ;;
  *) echo "usage: $0 start|stop|status|fetch" >&2; exit 2 ;;
esac
