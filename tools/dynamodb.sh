#!/usr/bin/env bash
# DynamoDB Local for tests and benchmarks: fetched from Maven Central through tools/dynamodb/pom.xml,
# cached under .cache/dynamodb, run in memory and bound to 127.0.0.1 only.
#
#   tools/dynamodb.sh start    fetch if needed, start, wait until it answers (idempotent)
#   tools/dynamodb.sh stop     stop the instance this script started
#   tools/dynamodb.sh status   exit 0 if it answers, 1 otherwise
#   tools/dynamodb.sh restart  stop and start: a fresh, empty instance (DynamoDB Local slows down
#                              as streams accumulate, even of deleted tables, over many test runs)
#   tools/dynamodb.sh kill     SIGKILL the instance this script started (a crash: DYNAMODB_DB_PATH)
#   tools/dynamodb.sh fetch    only download the jars and native libraries
#
# Needs Java 17 (JDK: a small launcher is compiled once) and Maven. Environment:
#   DYNAMODB_PORT (8000), DYNAMODB_JAVA_OPTS (-Xmx1g), DYNAMODB_START_TIMEOUT seconds (60);
#   DYNAMODB_RUN_DIR (.cache/dynamodb): where the pid and log files go, so that a second instance
#   on another port has its own; DYNAMODB_DB_PATH: keep the tables in this directory (DynamoDB
#   Local's -dbPath) instead of in memory, so that they survive a stop or kill.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="$root/.cache/dynamodb"
lib="$cache/lib"
launcher="$cache/launcher"
run_dir="${DYNAMODB_RUN_DIR:-$cache}"
pidfile="$run_dir/dynamodb.pid"
logfile="$run_dir/dynamodb.log"
db_path="${DYNAMODB_DB_PATH:-}"
host="127.0.0.1"
port="${DYNAMODB_PORT:-8000}"
java_opts="${DYNAMODB_JAVA_OPTS:--Xmx1g}"
start_timeout="${DYNAMODB_START_TIMEOUT:-60}"
pom="$root/tools/dynamodb/pom.xml"

log() { printf 'dynamodb: %s\n' "$*" >&2; }

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
  # The stamp records which pom the cache was filled from, so a version bump refetches.
  local stamp="$lib/.pom.sha256" want
  want="$(sha256sum "$pom" | cut -d' ' -f1)"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then return 0; fi
  command -v mvn >/dev/null || { log "mvn not found (Maven 3 is needed to fetch DynamoDB Local)"; exit 1; }
  log "fetching DynamoDB Local from Maven Central into $lib"
  rm -rf "$lib" "$launcher"
  mkdir -p "$lib"
  # A repository of our own under .cache keeps the fetch self-contained and removable.
  mvn -q -B -Dstyle.color=never -f "$pom" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$lib" -Dmaven.repo.local="$cache/m2"
  [[ -f "$(ls "$lib"/DynamoDBLocal-*.jar 2>/dev/null | head -1)" ]] || { log "DynamoDBLocal jar missing after fetch"; exit 1; }
  ls "$lib"/libsqlite4java-linux-amd64-*.so >/dev/null 2>&1 || { log "sqlite4java native library missing after fetch"; exit 1; }
  echo "$want" >"$stamp"
}

# DynamoDB Local has no option for the listen address and its Jetty server binds every interface;
# this launcher sets the connector's host before starting so that it listens on 127.0.0.1 only.
build_launcher() {
  if [[ -f "$launcher/ImpelDynamoDBLocal.class" ]]; then return 0; fi
  mkdir -p "$launcher"
  cat >"$launcher/ImpelDynamoDBLocal.java" <<'JAVA'
import java.lang.reflect.Field;
import org.eclipse.jetty.server.AbstractNetworkConnector;
import org.eclipse.jetty.server.Connector;
import org.eclipse.jetty.server.Server;
import software.amazon.dynamodb.services.local.main.ServerRunner;
import software.amazon.dynamodb.services.local.server.DynamoDBProxyServer;

public final class ImpelDynamoDBLocal {
  public static void main(String[] args) throws Exception {
    String host = System.getProperty("impel.dynamodb.host", "127.0.0.1");
    DynamoDBProxyServer proxy = ServerRunner.createServerFromCommandLineArgs(args);
    Field field = DynamoDBProxyServer.class.getDeclaredField("server");
    field.setAccessible(true);
    Server server = (Server) field.get(proxy);
    int bound = 0;
    for (Connector connector : server.getConnectors()) {
      if (connector instanceof AbstractNetworkConnector network) {
        network.setHost(host);
        bound++;
      }
    }
    if (bound == 0) throw new IllegalStateException("no network connector found to bind to " + host);
    proxy.start();
    System.out.println("DynamoDB Local listening on " + host);
    proxy.join();
  }
}
JAVA
  javac -cp "$lib/*" -d "$launcher" "$launcher/ImpelDynamoDBLocal.java"
}

start() {
  if ours_running && answers; then log "already running on $host:$port (pid $(cat "$pidfile"))"; return 0; fi
  if answers; then log "something already answers on $host:$port; not starting another"; return 0; fi
  fetch
  build_launcher
  mkdir -p "$run_dir"
  local storage=(-inMemory)
  if [[ -n "$db_path" ]]; then mkdir -p "$db_path"; storage=(-dbPath "$db_path"); fi
  log "starting on $host:$port (${db_path:-in memory})"
  # setsid detaches it from the caller's process group so that it outlives the starting shell.
  setsid java $java_opts -Djava.library.path="$lib" -Dimpel.dynamodb.host="$host" \
    -cp "$launcher:$lib/*" ImpelDynamoDBLocal \
    "${storage[@]}" -sharedDb -disableTelemetry -port "$port" \
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

kill_now() {
  if ! ours_running; then rm -f "$pidfile"; log "not running"; return 0; fi
  local pid
  pid="$(cat "$pidfile")"
  kill -9 "$pid"
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  rm -f "$pidfile"
  log "killed"
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
  kill) kill_now ;;
  fetch) fetch ;;
  *) echo "usage: $0 start|stop|status|restart|kill|fetch" >&2; exit 2 ;;
esac
