#!/usr/bin/env bash
# A single-node Apache Kafka (KRaft: broker and controller in one JVM) on 127.0.0.1:9092 for the
# Kafka tests and benchmarks.
#
#   tools/kafka.sh start    fetch the jars if needed, start with a fresh data directory, wait
#                           until a metadata request lists the broker
#   tools/kafka.sh stop     stop it cleanly (SIGTERM, then SIGKILL after KAFKA_STOP_TIMEOUT s)
#   tools/kafka.sh status   exit 0 if it is running and answering, 1 otherwise
#   tools/kafka.sh kill     SIGKILL it (for fault tests)
#   tools/kafka.sh resume   start again on the data directory left by stop or kill
#
# Needs only Java 17 and Maven. Jars are cached under .cache/kafka/libs (keyed by a hash of
# tools/kafka/pom.xml); the broker log is .cache/kafka/kafka.log.
# Environment: KAFKA_HEAP (default 1g), KAFKA_START_TIMEOUT (default 120 s),
# KAFKA_STOP_TIMEOUT (default 60 s). A second broker of one's own (fault tests restart it, never
# the shared one): KAFKA_PORT (default 9092), KAFKA_CONTROLLER_PORT (default 9093) and KAFKA_DIR
# (data, log, pid and config; default .cache/kafka); the jars stay shared.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
POM="$ROOT/tools/kafka/pom.xml"
JARS="$ROOT/.cache/kafka"
LIBS="$JARS/libs"
CACHE="${KAFKA_DIR:-$JARS}"
DATA="$CACHE/data"
LOG="$CACHE/kafka.log"
PIDFILE="$CACHE/kafka.pid"
CONFIG="$CACHE/server.properties"
LOG4J="$CACHE/log4j.properties"
HOST=127.0.0.1
PORT="${KAFKA_PORT:-9092}"
CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-9093}"
DEPENDENCY_PLUGIN=org.apache.maven.plugins:maven-dependency-plugin:3.8.1

say() { echo "kafka.sh: $*" >&2; }
die() {
  say "$*"
  exit 1
}
now_ms() { date +%s%3N; }

# The pid of the broker this script started, if that process is still the broker.
broker_pid() {
  [[ -f "$PIDFILE" ]] || return 1
  local pid
  pid="$(cat "$PIDFILE")"
  [[ -n "$pid" && -r "/proc/$pid/cmdline" ]] || return 1
  # Guards against a recycled pid belonging to something else.
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q 'kafka\.Kafka' || return 1
  echo "$pid"
}

# Sends a Metadata v4 request (all topics) over bash's /dev/tcp and succeeds only if the reply
# carries our correlation id and lists at least one broker: an open port alone does not mean the
# KRaft broker has registered and been unfenced. v4 is accepted by every broker from 1.0 to 4.x.
probe() {
  local bytes
  bytes="$(timeout 3 bash -c '
    exec 3<>"/dev/tcp/$0/$1" || exit 1
    printf "\x00\x00\x00\x14\x00\x03\x00\x04\x00\x00\x00\x2a\x00\x05ready\xff\xff\xff\xff\x00" >&3
    head -c 16 <&3 | od -An -v -tu1
  ' "$HOST" "$PORT" 2>/dev/null)" || return 1
  local -a b
  read -r -a b <<<"$(echo $bytes)"
  ((${#b[@]} == 16)) || return 1
  # bytes 4..7: correlation id 42; 8..11: throttle time; 12..15: broker count.
  ((b[4] == 0 && b[5] == 0 && b[6] == 0 && b[7] == 42)) || return 1
  local brokers=$(((b[12] << 24) | (b[13] << 16) | (b[14] << 8) | b[15]))
  ((brokers >= 1))
}

port_in_use() { timeout 1 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$1" "$2" 2>/dev/null; }

fetch() {
  command -v mvn >/dev/null || die "mvn not found: Maven is needed to fetch Kafka's jars"
  local hash
  hash="$(sha256sum "$POM" | cut -d' ' -f1)"
  if [[ -f "$LIBS/.pom-sha256" && "$(cat "$LIBS/.pom-sha256")" == "$hash" ]]; then return 0; fi
  say "fetching Kafka jars from Maven Central into $LIBS"
  local started tmp
  started="$(now_ms)"
  mkdir -p "$JARS"
  tmp="$JARS/libs.tmp"
  rm -rf "$tmp"
  mkdir -p "$tmp"
  if ! mvn -B -q -Dstyle.color=never -f "$POM" "$DEPENDENCY_PLUGIN:copy-dependencies" \
    -DincludeScope=runtime -DoutputDirectory="$tmp" >"$JARS/mvn.log" 2>&1; then
    tail -n 30 "$JARS/mvn.log" >&2
    die "mvn dependency:copy-dependencies failed; see $JARS/mvn.log"
  fi
  echo "$hash" >"$tmp/.pom-sha256"
  rm -rf "$LIBS"
  mv "$tmp" "$LIBS"
  say "fetched $(ls "$LIBS" | wc -l) jars in $(($(now_ms) - started)) ms"
}

write_config() {
  cat >"$CONFIG" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$HOST:$CONTROLLER_PORT
listeners=PLAINTEXT://$HOST:$PORT,CONTROLLER://$HOST:$CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$HOST:$PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$DATA
num.partitions=1
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
# Tests join and leave groups often: no initial delay, and short session timeouts allowed.
group.initial.rebalance.delay.ms=0
group.min.session.timeout.ms=1000
num.network.threads=2
num.io.threads=4
EOF
  cat >"$LOG4J" <<EOF
log4j.rootLogger=INFO, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.request.logger=WARN
log4j.logger.state.change.logger=WARN
log4j.logger.org.apache.kafka.controller=WARN
log4j.logger.kafka.log.LogCleaner=WARN
EOF
}

java_cmd() {
  JAVA=(java -Xms256m "-Xmx${KAFKA_HEAP:-1g}" -XX:+UseG1GC -XX:MaxGCPauseMillis=20
    -Djava.awt.headless=true "-Dlog4j.configuration=file:$LOG4J" -cp "$LIBS/*")
}

start() {
  command -v java >/dev/null || die "java not found: Java 17 is needed to run Kafka"
  mkdir -p "$CACHE"
  fetch
  # Each start begins empty, so a broker left by an earlier run is replaced rather than reused.
  if broker_pid >/dev/null; then
    say "a broker started earlier is running; stopping it first"
    stop
  fi
  free_ports
  local started
  started="$(now_ms)"
  rm -rf "$DATA"
  mkdir -p "$DATA"
  write_config
  : >"$LOG"
  # A KRaft cluster id is 16 random bytes in URL-safe base64 without padding. It starts with
  # "-" about once in 64 starts, which "-t <id>" takes for an option ("expected one argument"):
  # hence the one-word "--cluster-id=<id>".
  local cluster_id
  cluster_id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')"
  java_cmd
  "${JAVA[@]}" kafka.tools.StorageTool format "--cluster-id=$cluster_id" -c "$CONFIG" >>"$LOG" 2>&1 ||
    die "formatting storage failed; see $LOG"
  local formatted
  formatted="$(now_ms)"
  launch "$started" "$formatted"
}

free_ports() {
  if port_in_use "$HOST" "$PORT" || port_in_use "$HOST" "$CONTROLLER_PORT"; then
    die "port $PORT or $CONTROLLER_PORT on $HOST is taken by a process this script did not start"
  fi
}

# Starts the broker on the formatted data directory and waits until it answers.
launch() {
  local started="$1" formatted="$2"
  java_cmd
  # setsid detaches the broker from the caller's process group, so that the caller's job control
  # (or a CI step ending) does not signal it; it is stopped only through `stop`.
  setsid "${JAVA[@]}" kafka.Kafka "$CONFIG" >>"$LOG" 2>&1 </dev/null &
  echo $! >"$PIDFILE"
  local deadline=$((started + ${KAFKA_START_TIMEOUT:-120} * 1000))
  until probe; do
    if ! broker_pid >/dev/null; then
      tail -n 30 "$LOG" >&2
      die "the broker exited during start; see $LOG"
    fi
    if (($(now_ms) > deadline)); then
      tail -n 30 "$LOG" >&2
      stop || true
      die "the broker did not answer a metadata request within ${KAFKA_START_TIMEOUT:-120} s"
    fi
    sleep 0.2
  done
  local ready
  ready="$(now_ms)"
  say "started on $HOST:$PORT (pid $(cat "$PIDFILE")): format $((formatted - started)) ms," \
    "broker ready $((ready - formatted)) ms; log $LOG"
}

resume() {
  [[ -f "$CONFIG" && -d "$DATA" ]] || die "no data directory under $CACHE to resume: start first"
  if broker_pid >/dev/null; then
    say "already running"
    return 0
  fi
  free_ports
  local started
  started="$(now_ms)"
  launch "$started" "$started"
}

kill_broker() {
  local pid
  if ! pid="$(broker_pid)"; then
    say "not running"
    return 0
  fi
  kill -KILL "$pid"
  while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  rm -f "$PIDFILE"
  say "killed (pid $pid)"
}

stop() {
  local pid
  if ! pid="$(broker_pid)"; then
    rm -f "$PIDFILE"
    say "not running"
    return 0
  fi
  local started
  started="$(now_ms)"
  kill -TERM "$pid"
  local deadline=$((started + ${KAFKA_STOP_TIMEOUT:-60} * 1000))
  while kill -0 "$pid" 2>/dev/null; do
    if (($(now_ms) > deadline)); then
      say "no exit after ${KAFKA_STOP_TIMEOUT:-60} s; killing pid $pid"
      kill -KILL "$pid" 2>/dev/null || true
      break
    fi
    sleep 0.2
  done
  rm -f "$PIDFILE"
  say "stopped (pid $pid) in $(($(now_ms) - started)) ms"
}

status() {
  local pid
  if pid="$(broker_pid)" && probe; then
    say "running on $HOST:$PORT (pid $pid)"
    return 0
  fi
  if [[ -n "${pid:-}" ]]; then say "process $pid is up but not answering metadata requests"; else say "not running"; fi
  return 1
}

case "${1:-}" in
start) start ;;
stop) stop ;;
status) status ;;
kill) kill_broker ;;
resume) resume ;;
*) die "usage: tools/kafka.sh start|stop|status|kill|resume" ;;
esac
