#!/usr/bin/env bash
# Real Kafka (KRaft), Valkey, OpenSearch and Alertmanager on loopback, for the integration tests and for trying
# flowshard's sinks. Installs on first use (Maven Central, Debian), idempotent, state under
# .cache/services (git-ignored).
#
#   scripts/services.sh up [kafka|valkey|opensearch|alertmanager]...  install if needed, start, wait healthy
#   scripts/services.sh down [name]...                        stop (data kept)
#   scripts/services.sh stop|start name                       same as down/up, for outage tests
#   scripts/services.sh kill name                              SIGKILL (crash), for outage tests
#   scripts/services.sh status                                one line per service
#   scripts/services.sh env                                   the addresses, as shell variables
#   scripts/services.sh wipe                                  stop and delete all service state
#
# Ports (override with the variables): KAFKA_PORT=19092 (controller +1), VALKEY_PORT=16379,
# OPENSEARCH_PORT=19200 (transport +100), ALERTMANAGER_PORT=19393 (Debian's prometheus-alertmanager). Versions: Kafka 4.1.1, OpenSearch 2.19.6 with
# opensearch-job-scheduler and a lang-painless module assembled from its Maven Central jars.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SVC="${FLOWSHARD_SERVICES_DIR:-$ROOT/.cache/services}"
DL="${FLOWSHARD_DOWNLOADS_DIR:-$ROOT/.cache/downloads}"
KAFKA_VERSION=4.1.1
OS_VERSION=2.19.6
KAFKA_PORT="${KAFKA_PORT:-19092}"
VALKEY_PORT="${VALKEY_PORT:-16379}"
OPENSEARCH_PORT="${OPENSEARCH_PORT:-19200}"
ALERTMANAGER_PORT="${ALERTMANAGER_PORT:-19393}"
KAFKA_TOPICS="${KAFKA_TOPICS:-flowshard.rollups flowshard.alerts flowshard.incidents flowshard.flows flowshard.feedback}"
mkdir -p "$SVC" "$DL"
JAVA_HOME="${JAVA_HOME:-$(dirname "$(dirname "$(readlink -f "$(command -v java)")")")}"
export JAVA_HOME OPENSEARCH_JAVA_HOME="${OPENSEARCH_JAVA_HOME:-$JAVA_HOME}"

log() { echo "services: $*" >&2; }
die() { echo "services: error: $*" >&2; exit 1; }
pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_for() { # seconds, description, command...
  local t=$1 what=$2; shift 2
  for _ in $(seq 1 $((t * 2))); do "$@" && return 0; sleep 0.5; done
  die "$what did not become ready within ${t}s (logs under $SVC)"
}

mvn_fetch_pom() { # dir, dependency xml
  local dir=$1 deps=$2
  mkdir -p "$dir"
  cat > "$dir/pom.xml" <<POM
<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>
<groupId>flowshard</groupId><artifactId>runtime</artifactId><version>1</version><packaging>pom</packaging>
<dependencies>$deps</dependencies></project>
POM
  (cd "$dir" && mvn -q -B dependency:copy-dependencies -DoutputDirectory=lib -DincludeScope=runtime) \
    || die "maven could not fetch the jars for $dir"
}

# ---------------------------------------------------------------- Kafka
kafka_install() {
  local k="$DL/kafka-$KAFKA_VERSION"
  [ -f "$k/.done" ] && return 0
  command -v java >/dev/null || die "Java 17 is required for Kafka"
  log "fetching Kafka $KAFKA_VERSION jars from Maven Central"
  mvn_fetch_pom "$k" "
<dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$KAFKA_VERSION</version></dependency>
<dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-tools</artifactId><version>$KAFKA_VERSION</version></dependency>
<dependency><groupId>org.slf4j</groupId><artifactId>slf4j-api</artifactId><version>2.0.16</version></dependency>
<dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j2-impl</artifactId><version>2.24.3</version></dependency>
<dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>2.24.3</version></dependency>"
  # slf4j 1.x may come in transitively; the 2.x binding needs the 2.x API only.
  rm -f "$k"/lib/slf4j-api-1.*.jar
  touch "$k/.done"
}
kafka_java() { # class, args...
  local k="$DL/kafka-$KAFKA_VERSION" d="$SVC/kafka"
  java -Xms256m -Xmx512m -Dlog4j2.configurationFile="$d/log4j2.properties" \
    -cp "$k/lib/*" "$@"
}
kafka_up() {
  local d="$SVC/kafka"
  if pid_alive "$d/pid"; then return 0; fi
  kafka_install
  mkdir -p "$d/data"
  cat > "$d/server.properties" <<CONF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$((KAFKA_PORT + 1))
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$((KAFKA_PORT + 1))
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$d/data
num.partitions=4
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
auto.create.topics.enable=false
group.initial.rebalance.delay.ms=0
log.retention.hours=24
CONF
  cat > "$d/log4j2.properties" <<CONF
status = error
appender.f.type = File
appender.f.name = F
appender.f.fileName = $d/server.log
appender.f.layout.type = PatternLayout
appender.f.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.f.ref = F
logger.k.name = kafka.server.KafkaRaftServer
logger.k.level = INFO
CONF
  if [ ! -f "$d/data/meta.properties" ]; then
    log "formatting Kafka storage"
    kafka_java kafka.tools.StorageTool format -t "flowshard-local-cluster0" \
      -c "$d/server.properties" >"$d/format.log" 2>&1 || { cat "$d/format.log" >&2; die "kafka storage format failed"; }
  fi
  : > "$d/server.log"
  log "starting Kafka on 127.0.0.1:$KAFKA_PORT"
  nohup java -Xms512m -Xmx1g -XX:+UseG1GC -Dlog4j2.configurationFile="$d/log4j2.properties" \
    -cp "$DL/kafka-$KAFKA_VERSION/lib/*" kafka.Kafka "$d/server.properties" >"$d/stdout.log" 2>&1 &
  echo $! > "$d/pid"
  wait_for 90 "Kafka" kafka_ready
  local existing
  existing=$(kafka_java org.apache.kafka.tools.TopicCommand --bootstrap-server "127.0.0.1:$KAFKA_PORT" --list 2>/dev/null || true)
  for t in $KAFKA_TOPICS; do
    grep -qx "$t" <<<"$existing" && continue
    kafka_java org.apache.kafka.tools.TopicCommand --bootstrap-server "127.0.0.1:$KAFKA_PORT" \
      --create --if-not-exists --topic "$t" --partitions 4 --replication-factor 1 >/dev/null 2>&1 \
      || die "cannot create topic $t"
  done
}
kafka_ready() {
  pid_alive "$SVC/kafka/pid" || { tail -20 "$SVC/kafka/stdout.log" "$SVC/kafka/server.log" >&2 2>/dev/null; die "Kafka exited"; }
  port_open "$KAFKA_PORT" && grep -q "Kafka Server started" "$SVC/kafka/server.log" 2>/dev/null
}

# ---------------------------------------------------------------- Valkey
valkey_bin() {
  command -v valkey-server 2>/dev/null || command -v redis-server 2>/dev/null || true
}
valkey_install() {
  [ -n "$(valkey_bin)" ] && return 0
  log "installing redis-server (Debian) as the Valkey stand-in"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends redis-server >/dev/null \
    || die "cannot install redis-server (apt)"
}
valkey_up() {
  local d="$SVC/valkey"
  if pid_alive "$d/pid"; then return 0; fi
  valkey_install
  mkdir -p "$d"
  log "starting $(basename "$(valkey_bin)") on 127.0.0.1:$VALKEY_PORT"
  "$(valkey_bin)" --bind 127.0.0.1 --port "$VALKEY_PORT" --save "" --appendonly no \
    --daemonize yes --pidfile "$d/pid" --logfile "$d/server.log" --dir "$d" --maxmemory 2gb \
    --maxmemory-policy volatile-ttl >/dev/null
  wait_for 20 "Valkey" port_open "$VALKEY_PORT"
  wait_for 5 "Valkey pid file" test -s "$d/pid"
}

# ---------------------------------------------------------------- OpenSearch
os_module() { # distribution dir, module name, plugin class, jar names...
  local o=$1 name=$2 class=$3; shift 3
  mvn_fetch_pom "$o/$name" "
<dependency><groupId>org.opensearch.plugin</groupId><artifactId>$name</artifactId><version>$OS_VERSION</version></dependency>"
  local m="$o/dist/modules/$name"
  mkdir -p "$m"
  for j in "$@"; do cp "$o/$name"/lib/"$j"-[0-9]*.jar "$m/"; done
  cat > "$m/plugin-descriptor.properties" <<CONF
description=$name (assembled from Maven Central by scripts/services.sh)
version=$OS_VERSION
name=$name
classname=$class
java.version=11
opensearch.version=$OS_VERSION
extended.plugins=
has.native.controller=false
CONF
  cat > "$m/plugin-security.policy" <<'CONF'
grant {
  permission java.lang.RuntimePermission "createClassLoader";
  permission java.lang.RuntimePermission "getClassLoader";
};
CONF
}
os_install() {
  local o="$DL/opensearch-$OS_VERSION"
  [ -f "$o/.done-2" ] && return 0
  command -v java >/dev/null || die "Java 17 is required for OpenSearch"
  command -v unzip >/dev/null || { apt-get update -qq && apt-get install -y -qq unzip >/dev/null; }
  log "fetching OpenSearch $OS_VERSION (integ-test-zip) and plugins from Maven Central"
  rm -rf "$o" && mkdir -p "$o/zips"
  local a
  for a in "org.opensearch.distribution.integ-test-zip:opensearch:$OS_VERSION:zip" \
           "org.opensearch.plugin:opensearch-job-scheduler:$OS_VERSION.0:zip"; do
    mvn -q -B dependency:copy -Dartifact="$a" -DoutputDirectory="$o/zips" >/dev/null \
      || die "maven could not fetch $a"
  done
  # The AD plugin (opensearch-anomaly-detection) is not published on Maven Central; install it
  # when a zip is dropped here by hand: $DL/opensearch-anomaly-detection-$OS_VERSION.0.zip
  (cd "$o" && unzip -q "zips/opensearch-$OS_VERSION.zip" && mv "opensearch-$OS_VERSION" dist)
  # The minimal distribution carries only transport-netty4; painless (scripts in layer-2
  # aggregations) and search-pipeline-common (the hot-window search pipeline) are assembled as
  # modules from their published jars.
  os_module "$o" lang-painless org.opensearch.painless.PainlessPlugin \
    lang-painless opensearch-scripting-painless-spi antlr4-runtime asm asm-analysis asm-commons asm-tree asm-util
  os_module "$o" search-pipeline-common org.opensearch.search.pipeline.common.SearchPipelineCommonModulePlugin \
    search-pipeline-common
  "$o/dist/bin/opensearch-plugin" install --batch "file://$o/zips/opensearch-job-scheduler-$OS_VERSION.0.zip" >/dev/null \
    || die "cannot install opensearch-job-scheduler"
  local ad="$DL/opensearch-anomaly-detection-$OS_VERSION.0.zip"
  if [ -f "$ad" ]; then
    "$o/dist/bin/opensearch-plugin" install --batch "file://$ad" >/dev/null || die "cannot install the AD plugin"
  fi
  touch "$o/.done-2"
}
os_home() { # where the extracted distribution runs from
  local o="$DL/opensearch-$OS_VERSION/dist"
  # As root, OpenSearch runs as an unprivileged user, who must be able to read the
  # distribution and write its data: if this checkout is not reachable for it (e.g. under
  # /root), run from a copy under /var/tmp.
  if [ "$(id -u)" = 0 ] && ! setpriv --reuid=nobody --regid=nogroup --clear-groups test -r "$o/bin/opensearch" 2>/dev/null; then
    local alt=/var/tmp/flowshard-services/opensearch-$OS_VERSION
    if [ ! -f "$alt/.done-2" ]; then rm -rf "$alt"; mkdir -p "$alt" && cp -a "$o/." "$alt/" && touch "$alt/.done-2"; fi
    echo "$alt"
  else
    echo "$o"
  fi
}
os_up() {
  local d="$SVC/opensearch"
  if pid_alive "$d/pid"; then return 0; fi
  os_install
  local home; home=$(os_home)
  if [ "$home" != "$DL/opensearch-$OS_VERSION/dist" ]; then d=/var/tmp/flowshard-services/opensearch-data; mkdir -p "$SVC/opensearch"; fi
  mkdir -p "$d/data" "$d/logs" "$d/config"
  cp -rn "$home/config/." "$d/config/"
  cat > "$d/config/opensearch.yml" <<CONF
cluster.name: flowshard-local
node.name: node-1
path.data: $d/data
path.logs: $d/logs
network.host: 127.0.0.1
http.port: $OPENSEARCH_PORT
transport.port: $((OPENSEARCH_PORT + 100))
discovery.type: single-node
cluster.routing.allocation.disk.threshold_enabled: false
action.auto_create_index: false
# tests create many small per-minute indices
cluster.max_shards_per_node: 20000
CONF
  # The stock options name logs/ and data/ relative to the distribution; keep them under $d.
  sed -i -e "s#file=logs/#file=$d/logs/#" -e "s#HeapDumpPath=data#HeapDumpPath=$d/data#" \
    -e "s#ErrorFile=logs/#ErrorFile=$d/logs/#" "$d/config/jvm.options"
  printf -- '-Xms1g\n-Xmx1g\n' > "$d/config/jvm.options.d/heap.options"
  # OpenSearch refuses to run as root: as root, run it as an unprivileged service user.
  local as=()
  if [ "$(id -u)" = 0 ]; then
    id flowshard-svc >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin flowshard-svc
    chown -R flowshard-svc "$d"
    as=(setpriv --reuid=flowshard-svc --regid="$(id -g flowshard-svc)" --init-groups)
  fi
  log "starting OpenSearch on 127.0.0.1:$OPENSEARCH_PORT"
  # Foreground under nohup so that the recorded pid is the JVM's (bin/opensearch execs java).
  (cd "$d" && exec "${as[@]}" env OPENSEARCH_PATH_CONF="$d/config" OPENSEARCH_JAVA_HOME="$OPENSEARCH_JAVA_HOME" \
    nohup "$home/bin/opensearch" >"$d/stdout.log" 2>&1) &
  echo $! > "$SVC/opensearch/pid"
  wait_for 180 "OpenSearch" os_ready
}
os_ready() {
  pid_alive "$SVC/opensearch/pid" || die "OpenSearch exited (see its stdout.log and logs/)"
  curl -sf "http://127.0.0.1:$OPENSEARCH_PORT/_cluster/health?wait_for_status=yellow&timeout=1s" >/dev/null
}

# ---------------------------------------------------------------- Alertmanager
am_bin() { command -v prometheus-alertmanager 2>/dev/null || command -v alertmanager 2>/dev/null || true; }
am_up() {
  local d="$SVC/alertmanager"
  if pid_alive "$d/pid"; then return 0; fi
  if [ -z "$(am_bin)" ]; then
    log "installing prometheus-alertmanager (Debian)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus-alertmanager >/dev/null \
      || die "cannot install prometheus-alertmanager (apt)"
  fi
  mkdir -p "$d/data"
  # incidents are grouped by key; a receiver that drops everything (tests read the API)
  cat > "$d/alertmanager.yml" <<'YML'
route:
  receiver: drop
  group_by: [alertname, dimension, key]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: drop
YML
  log "starting Alertmanager on 127.0.0.1:$ALERTMANAGER_PORT"
  nohup "$(am_bin)" --config.file="$d/alertmanager.yml" --storage.path="$d/data" \
    --web.listen-address="127.0.0.1:$ALERTMANAGER_PORT" --cluster.listen-address= \
    >"$d/server.log" 2>&1 < /dev/null &
  echo $! > "$d/pid"
  wait_for 30 "Alertmanager" port_open "$ALERTMANAGER_PORT"
}

# ---------------------------------------------------------------- common
stop_pid() { # name, pidfile
  local p=$2
  pid_alive "$p" || { rm -f "$p"; return 0; }
  local pid; pid=$(cat "$p")
  log "stopping $1 (pid $pid)"
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$p"
}
port_of() { case "$1" in kafka) echo "$KAFKA_PORT" ;; valkey) echo "$VALKEY_PORT" ;; opensearch) echo "$OPENSEARCH_PORT" ;; alertmanager) echo "$ALERTMANAGER_PORT" ;; esac; }
up_one() {
  if ! pid_alive "$SVC/$1/pid" && port_open "$(port_of "$1")"; then
    die "port $(port_of "$1") for $1 is taken by another process (another checkout's services?): stop it, or choose another port with ${1^^}_PORT"
  fi
  case "$1" in kafka) kafka_up ;; valkey) valkey_up ;; opensearch) os_up ;; alertmanager) am_up ;; *) die "unknown service $1 (kafka|valkey|opensearch|alertmanager)" ;; esac
}
down_one() { case "$1" in kafka|valkey|opensearch|alertmanager) stop_pid "$1" "$SVC/$1/pid" ;; *) die "unknown service $1" ;; esac; }
status_one() {
  local n=$1 port
  port=$(port_of "$n")
  if pid_alive "$SVC/$n/pid"; then echo "$n: running (pid $(cat "$SVC/$n/pid"), 127.0.0.1:$port)"; else echo "$n: stopped"; fi
}
ALL=(valkey kafka opensearch alertmanager)
cmd="${1:-status}"; shift || true
names=("$@"); [ ${#names[@]} -eq 0 ] && names=("${ALL[@]}")
case "$cmd" in
  up|start)
    # Install everything first (downloads in parallel would fight over ~/.m2), then start.
    for n in "${names[@]}"; do up_one "$n"; done
    for n in "${names[@]}"; do status_one "$n"; done ;;
  down|stop) for n in "${names[@]}"; do down_one "$n"; done ;;
  kill)
    for n in "${names[@]}"; do
      if pid_alive "$SVC/$n/pid"; then log "killing $n (SIGKILL)"; kill -9 "$(cat "$SVC/$n/pid")"; fi
      rm -f "$SVC/$n/pid"
    done ;;
  status) for n in "${names[@]}"; do status_one "$n"; done ;;
  env)
    echo "FLOWSHARD_KAFKA=127.0.0.1:$KAFKA_PORT"
    echo "FLOWSHARD_VALKEY=redis://127.0.0.1:$VALKEY_PORT"
    echo "FLOWSHARD_OPENSEARCH=http://127.0.0.1:$OPENSEARCH_PORT"
    echo "FLOWSHARD_ALERTMANAGER=http://127.0.0.1:$ALERTMANAGER_PORT" ;;
  wipe) for n in "${ALL[@]}"; do down_one "$n"; done; rm -rf "$SVC" /var/tmp/flowshard-services ;;
  *) die "usage: $0 up|down|start|stop|kill|status|env|wipe [kafka|valkey|opensearch|alertmanager]..." ;;
esac
