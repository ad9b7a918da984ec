#!/usr/bin/env bash
# Provision this machine for NOC Stream (Debian 12, run as root). Idempotent: every step
# checks the state first and does nothing when it is already right, so a re-run takes a
# few seconds. Steps (one function each, called from main at the bottom):
#   1. Debian packages (TimescaleDB build deps, chromium, prometheus/promtool, PostGIS,
#      mosquitto-clients)
#   2. TimescaleDB Apache-2 edition built from Debian trixie's source package into the
#      PostgreSQL 15 cluster 15/main, preloaded; database `noc`
#   3. Mosquitto: deploy/mosquitto/noc-stream.conf into the system broker on :1883
#   4. PGlite + TimescaleDB community edition test server (tools/pglite-server) on :5499
#   5. Python environment (uv sync --frozen --extra dev)
# Progress goes to stderr as "provision: ..."; a failure ends with one
# "provision: ERROR: ..." line. Logs of long commands: /var/cache/noc-stream/logs/.
# Details and the meaning of every setting: docs/operations.md.
#
# Environment overrides: NOC_CACHE_DIR, NOC_PGLITE_PORT, NOC_SKIP_PYTHON=1.
set -Eeuo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE_DIR="${NOC_CACHE_DIR:-/var/cache/noc-stream}"
LOG_DIR="$CACHE_DIR/logs"

PG_MAJOR=15
PG_CLUSTER=main
PG_HOST=127.0.0.1
PG_PORT=5432
PG_CONFIG_BIN="/usr/lib/postgresql/$PG_MAJOR/bin/pg_config"
PG_CONF_D="/etc/postgresql/$PG_MAJOR/$PG_CLUSTER/conf.d"
PG_PRELOAD_CONF_SRC="$REPO_ROOT/deploy/postgresql/50-noc-stream-timescaledb.conf"
PG_DEMO_DB=noc
PG_SCRATCH_DB=noc_provision_scratch

TSDB_UPSTREAM_VERSION=2.19.3
TSDB_APT_SOURCE=/etc/apt/sources.list.d/noc-stream-trixie-src.sources

MQTT_HOST=127.0.0.1
MQTT_PORT=1883
MOSQ_MAIN_CONF=/etc/mosquitto/mosquitto.conf
MOSQ_CONF_D=/etc/mosquitto/conf.d
MOSQ_CONF_SRC="$REPO_ROOT/deploy/mosquitto/noc-stream.conf"
MOSQ_TEST_TEMPLATE="$REPO_ROOT/deploy/mosquitto/test-broker.conf.in"
MOSQ_PID_FILE=/run/mosquitto/mosquitto.pid

PGLITE_DIR="$REPO_ROOT/tools/pglite-server"
PGLITE_HOST=127.0.0.1
PGLITE_PORT="${NOC_PGLITE_PORT:-5499}"
PGLITE_RUN_DIR=/run/noc-stream
PGLITE_PID_FILE="$PGLITE_RUN_DIR/pglite-$PGLITE_PORT.pid"
PGLITE_LOG_FILE="/var/log/noc-stream/pglite-$PGLITE_PORT.log"
# PGlite accepts any user name, database name and password (it asks for a password
# in clear text, then runs everything as postgres in its single database), and it
# does not answer SSL negotiation, so sslmode must be disable.
PGLITE_USER=postgres
PGLITE_PASSWORD=postgres
PGLITE_DB=postgres

UV_VERSION=0.13.9

APT_PACKAGES=(
  # TimescaleDB build: headers + pg_config, cmake, a C toolchain, dpkg-source (for
  # apt-get source) and OpenSSL headers (USE_OPENSSL). libkrb5-dev is not needed: the
  # build includes no GSSAPI header.
  "postgresql-server-dev-$PG_MAJOR" cmake build-essential dpkg-dev libssl-dev
  # headless browser tests (+ a font so pages render text)
  chromium fonts-liberation
  # prometheus and promtool binaries (no daemon is kept running)
  prometheus
  # benchmarks compare with PostGIS
  "postgresql-$PG_MAJOR-postgis-3"
  mosquitto-clients
)

CURRENT_STEP=setup
APT_UPDATED=0

# ---------------------------------------------------------------------------- helpers

log() { printf 'provision: %s\n' "$*" >&2; }

# die prints the one error line and exits with DIED_RC; the ERR trap of an enclosing
# shell (die may run in a command substitution) then exits quietly with the same code.
DIED_RC=111
die() {
  printf 'provision: ERROR: %s\n' "$*" >&2
  exit "$DIED_RC"
}
on_error() {
  local rc=$? cmd=$BASH_COMMAND
  trap - ERR
  ((rc == DIED_RC)) && exit "$rc"
  die "step '$CURRENT_STEP': command failed (exit $rc): $cmd"
}
trap on_error ERR

# run_logged NAME CMD...: run CMD with its output in $LOG_DIR/NAME.log; on failure,
# stop with one line that names the log and quotes its last line. (For another working
# directory: run_logged NAME env -C DIR CMD...)
run_logged() {
  local name=$1
  shift
  local logfile="$LOG_DIR/$name.log"
  mkdir -p "$LOG_DIR"
  if ! "$@" >"$logfile" 2>&1; then
    local last
    last=$(grep -v '^[[:space:]]*$' "$logfile" | tail -n 1 || true)
    die "step '$CURRENT_STEP': '$*' failed; see $logfile (last line: ${last:-none})"
  fi
}

# tcp_open HOST PORT: true when something accepts TCP connections there.
tcp_open() { timeout 2 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null; }

# wait_for SECONDS CMD...: poll CMD every 0.2 s until it succeeds; false on timeout.
wait_for() {
  local deadline=$((SECONDS + $1))
  shift
  until "$@"; do
    ((SECONDS < deadline)) || return 1
    sleep 0.2
  done
}

# psql against the system cluster as postgres (trust auth on 127.0.0.1).
pg() {
  PGOPTIONS='-c client_min_messages=warning' \
    psql -h "$PG_HOST" -p "$PG_PORT" -U postgres -XAtq -v ON_ERROR_STOP=1 "$@"
}

# psql against the PGlite server. One session at a time: a connection waits while
# another client holds the server, so bound that wait.
pglite_sql() {
  PGPASSWORD=$PGLITE_PASSWORD PGSSLMODE=disable PGCONNECT_TIMEOUT=5 \
    psql -h "$PGLITE_HOST" -p "$PGLITE_PORT" -U "$PGLITE_USER" -d "$PGLITE_DB" \
    -XAtq -v ON_ERROR_STOP=1 "$@"
}

apt_update_once() {
  ((APT_UPDATED)) && return 0
  log "apt: apt-get update"
  run_logged apt-update apt-get -o DPkg::Lock::Timeout=300 update
  APT_UPDATED=1
}

apt_install() {
  apt_update_once
  run_logged apt-install env DEBIAN_FRONTEND=noninteractive \
    apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends "$@"
}

# install_file SRC DEST: copy when different; true (0) when DEST changed.
install_file() {
  local src=$1 dest=$2
  [[ -f $src ]] || die "missing $src (run from a checkout of the repository)"
  if [[ -f $dest ]] && cmp -s "$src" "$dest"; then
    return 1
  fi
  install -D -m 0644 "$src" "$dest"
  return 0
}

# ------------------------------------------------------------- 1. Debian packages

ensure_debian_packages() {
  CURRENT_STEP="debian packages"
  local missing=() pkg status
  declare -A installed=()
  while read -r pkg status; do
    [[ $status == installed ]] && installed[$pkg]=1
  done < <(dpkg-query -W -f='${Package} ${db:Status-Status}\n' "${APT_PACKAGES[@]}" 2>/dev/null || true)
  for pkg in "${APT_PACKAGES[@]}"; do
    [[ -n ${installed[$pkg]:-} ]] || missing+=("$pkg")
  done
  if ((${#missing[@]} == 0)); then
    log "debian packages ... already installed (${#APT_PACKAGES[@]} packages)"
  else
    log "debian packages ... installing ${missing[*]}"
    apt_install "${missing[@]}"
    log "debian packages ... installed"
  fi
  command -v promtool >/dev/null || die "promtool not on PATH after installing prometheus"
  [[ -x /usr/bin/chromium ]] || die "/usr/bin/chromium missing after installing chromium"
  stop_packaged_prometheus
}

# The prometheus package may start its daemon (user prometheus, :9090) where the init
# system allows it; the project only needs the binaries, and tests run their own
# Prometheus as the invoking user. Stop the packaged daemon, leave any other alone.
stop_packaged_prometheus() {
  local pids
  pids=$(pgrep -u prometheus -x prometheus 2>/dev/null || true)
  if [[ -n $pids ]]; then
    log "prometheus ... stopping the packaged daemon (pid $pids): only the binaries are wanted"
    # shellcheck disable=SC2086
    kill $pids 2>/dev/null || true
    wait_for 15 bash -c "! pgrep -u prometheus -x prometheus >/dev/null 2>&1" ||
      die "packaged prometheus daemon (pid $pids) did not stop"
  fi
  if tcp_open 127.0.0.1 9090; then
    log "prometheus ... note: something not started by the package listens on 127.0.0.1:9090"
  fi
}

# ------------------------------------------------------------ 2. PostgreSQL + TimescaleDB

pg_is_ready() { pg_isready -q -h "$PG_HOST" -p "$PG_PORT"; }

ensure_pg_running() {
  if pg_is_ready; then
    return 0
  fi
  log "postgresql ... cluster $PG_MAJOR/$PG_CLUSTER not accepting connections, starting it"
  run_logged pg-start pg_ctlcluster --skip-systemctl-redirect "$PG_MAJOR" "$PG_CLUSTER" start
  wait_for 60 pg_is_ready ||
    die "PostgreSQL $PG_MAJOR/$PG_CLUSTER did not accept connections on $PG_HOST:$PG_PORT within 60 s"
}

tsdb_available_version() {
  pg -d postgres -c "SELECT default_version FROM pg_available_extensions WHERE name = 'timescaledb'"
}

# Full Debian version (e.g. 2.19.3+dfsg-1+deb13u1) of the timescaledb source package
# for TSDB_UPSTREAM_VERSION, or "".
tsdb_source_version() {
  { apt-cache showsrc timescaledb 2>/dev/null || true; } |
    awk -v v="$TSDB_UPSTREAM_VERSION" '$1 == "Version:" && (index($2, v "-") == 1 || index($2, v "+") == 1) {print $2; exit}'
}

build_timescaledb() {
  local src_root="$CACHE_DIR/timescaledb"
  mkdir -p "$src_root"

  # deb-src only: trixie's source packages become visible, none of its binaries.
  local want
  want=$(
    cat <<'EOF'
# NOC Stream (scripts/provision.sh): Debian trixie SOURCE packages only, to build the
# TimescaleDB Apache-2 edition for bookworm's PostgreSQL 15. No binary packages.
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  )
  if [[ ! -f $TSDB_APT_SOURCE ]] || [[ $(cat "$TSDB_APT_SOURCE") != "$want" ]]; then
    log "timescaledb ... adding deb-src trixie ($TSDB_APT_SOURCE)"
    printf '%s\n' "$want" >"$TSDB_APT_SOURCE"
    APT_UPDATED=0
  fi

  local version
  version=$(tsdb_source_version)
  if [[ -z $version ]]; then
    apt_update_once
    version=$(tsdb_source_version)
  fi
  [[ -n $version ]] ||
    die "Debian source package timescaledb $TSDB_UPSTREAM_VERSION not found in trixie (apt-cache showsrc timescaledb)"

  # dpkg-source unpacks into timescaledb-<version without the Debian revision>
  local srcdir="$src_root/timescaledb-${version%-*}"
  if [[ ! -f $srcdir/CMakeLists.txt ]]; then
    log "timescaledb ... fetching source package timescaledb=$version"
    rm -rf "$srcdir"
    run_logged tsdb-source env -C "$src_root" apt-get source -q "timescaledb=$version"
    [[ -f $srcdir/CMakeLists.txt ]] || die "apt-get source did not unpack $srcdir"
  fi

  log "timescaledb ... building $TSDB_UPSTREAM_VERSION (Apache-2 only) against $PG_CONFIG_BIN"
  local builddir="$srcdir/build-pg$PG_MAJOR"
  run_logged tsdb-cmake cmake -S "$srcdir" -B "$builddir" \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DPG_CONFIG="$PG_CONFIG_BIN" \
    -DAPACHE_ONLY=ON \
    -DREGRESS_CHECKS=OFF \
    -DTAP_CHECKS=OFF \
    -DWARNINGS_AS_ERRORS=OFF \
    -DSEND_TELEMETRY_DEFAULT=OFF
  run_logged tsdb-build cmake --build "$builddir" -j "$(nproc)"
  run_logged tsdb-install cmake --install "$builddir"
}

ensure_timescaledb() {
  CURRENT_STEP="timescaledb"
  [[ -x $PG_CONFIG_BIN ]] || die "$PG_CONFIG_BIN missing (postgresql-server-dev-$PG_MAJOR not installed?)"
  ensure_pg_running

  local available built=0
  available=$(tsdb_available_version)
  if [[ -z $available ]]; then
    build_timescaledb
    built=1
    available=$(tsdb_available_version)
    [[ -n $available ]] || die "timescaledb built and installed but not in pg_available_extensions"
  fi

  local conf_changed=0
  if install_file "$PG_PRELOAD_CONF_SRC" "$PG_CONF_D/$(basename "$PG_PRELOAD_CONF_SRC")"; then
    conf_changed=1
    log "timescaledb ... installed $PG_CONF_D/$(basename "$PG_PRELOAD_CONF_SRC")"
  fi

  local preload
  preload=$(pg -d postgres -c "SHOW shared_preload_libraries")
  if [[ ",${preload// /}," != *,timescaledb,* ]]; then
    log "postgresql ... restarting $PG_MAJOR/$PG_CLUSTER to preload timescaledb"
    run_logged pg-restart pg_ctlcluster --skip-systemctl-redirect "$PG_MAJOR" "$PG_CLUSTER" restart
    wait_for 60 pg_is_ready || die "PostgreSQL did not come back within 60 s after the restart"
    preload=$(pg -d postgres -c "SHOW shared_preload_libraries")
    [[ ",${preload// /}," == *,timescaledb,* ]] ||
      die "timescaledb still not in shared_preload_libraries ('$preload'): check $PG_CONF_D for a later file overriding it"
  elif ((conf_changed)); then
    log "postgresql ... conf changed but timescaledb already preloaded; settings apply at the next restart"
  fi

  # Verify in a scratch database, then drop it.
  local out extversion license
  pg -d postgres -c "DROP DATABASE IF EXISTS $PG_SCRATCH_DB WITH (FORCE)" -c "CREATE DATABASE $PG_SCRATCH_DB"
  out=$(pg -d "$PG_SCRATCH_DB" -F ' ' \
    -c "SET client_min_messages = warning" \
    -c "CREATE EXTENSION IF NOT EXISTS timescaledb" \
    -c "SELECT extversion, current_setting('timescaledb.license') FROM pg_extension WHERE extname = 'timescaledb'") ||
    die "CREATE EXTENSION timescaledb failed in scratch database $PG_SCRATCH_DB"
  pg -d postgres -c "DROP DATABASE $PG_SCRATCH_DB"
  read -r extversion license <<<"$out"
  if ((built)); then
    log "timescaledb ... installed ($extversion, $license)"
  else
    log "timescaledb ... already installed ($extversion, $license)"
  fi
  [[ $license == apache ]] || log "timescaledb ... note: license is '$license', expected apache"

  if [[ -z $(pg -d postgres -c "SELECT 1 FROM pg_database WHERE datname = '$PG_DEMO_DB'") ]]; then
    pg -d postgres -c "CREATE DATABASE $PG_DEMO_DB OWNER postgres"
    log "postgresql ... created database $PG_DEMO_DB"
  else
    log "postgresql ... database $PG_DEMO_DB already exists"
  fi
}

# --------------------------------------------------------------------- 3. Mosquitto

MOSQ_LIMIT_OPTIONS='max_inflight_messages|max_queued_messages|max_queued_bytes|persistence|autosave_interval|autosave_on_changes|set_tcp_nodelay'

mosq_limits() { grep -E "^($MOSQ_LIMIT_OPTIONS)[[:space:]]" "$1" | sort; }

mosq_pid() {
  local pid
  [[ -f $MOSQ_PID_FILE ]] || return 1
  pid=$(<"$MOSQ_PID_FILE")
  [[ $pid =~ ^[0-9]+$ ]] && [[ $(cat "/proc/$pid/comm" 2>/dev/null) == mosquitto ]] || return 1
  echo "$pid"
}

mosq_ready() { tcp_open "$MQTT_HOST" "$MQTT_PORT"; }

restart_mosquitto() {
  local pid
  if pid=$(mosq_pid); then
    kill "$pid"
    # On SIGTERM the broker saves its persistence file before exiting.
    wait_for 30 bash -c "! kill -0 $pid 2>/dev/null" || die "mosquitto (pid $pid) did not exit within 30 s"
  fi
  # A broker that is still shutting down (or a foreign process) may hold the port.
  wait_for 30 bash -c "! (exec 3<>/dev/tcp/$MQTT_HOST/$MQTT_PORT) 2>/dev/null" ||
    die "port $MQTT_HOST:$MQTT_PORT is held by a process that is not the broker in $MOSQ_PID_FILE"
  install -d -o mosquitto -g mosquitto /run/mosquitto
  run_logged mosquitto-start mosquitto -d -c "$MOSQ_MAIN_CONF"
  if ! wait_for 15 mosq_ready; then
    local last
    last=$(tail -n 1 /var/log/mosquitto/mosquitto.log 2>/dev/null || true)
    die "mosquitto did not accept connections on $MQTT_HOST:$MQTT_PORT after start (log: ${last:-none})"
  fi
}

ensure_mosquitto() {
  CURRENT_STEP="mosquitto"
  command -v mosquitto >/dev/null || die "mosquitto is not installed (the machine kind ships it)"
  [[ -f $MOSQ_TEST_TEMPLATE ]] || die "missing $MOSQ_TEST_TEMPLATE"
  [[ "$(mosq_limits "$MOSQ_CONF_SRC")" == "$(mosq_limits "$MOSQ_TEST_TEMPLATE")" ]] ||
    die "limits in $MOSQ_CONF_SRC and $MOSQ_TEST_TEMPLATE differ; keep them the same"

  local reason=""
  if install_file "$MOSQ_CONF_SRC" "$MOSQ_CONF_D/noc-stream.conf"; then
    reason="config changed"
  fi
  if ! grep -Eq "^[[:space:]]*include_dir[[:space:]]+$MOSQ_CONF_D/?[[:space:]]*$" "$MOSQ_MAIN_CONF"; then
    # Must come after the main file's own options (mosquitto.conf(5): "best to have this
    # as the last option"); our file holds only global options, valid after a listener.
    printf '\n# Added by NOC Stream scripts/provision.sh\ninclude_dir %s\n' "$MOSQ_CONF_D" >>"$MOSQ_MAIN_CONF"
    reason="include_dir added"
  fi

  local pid
  if ! pid=$(mosq_pid); then
    reason="broker not running"
  elif ! mosq_ready; then
    reason="broker not accepting connections"
  elif [[ -z $reason ]]; then
    # A broker started before the current config files were written runs stale settings.
    local started
    started=$(($(date +%s) - $(ps -o etimes= -p "$pid")))
    if [[ $(stat -c %Y "$MOSQ_CONF_D/noc-stream.conf") -gt $started || $(stat -c %Y "$MOSQ_MAIN_CONF") -gt $started ]]; then
      reason="broker older than its config"
    fi
  fi

  if [[ -n $reason ]]; then
    log "mosquitto ... restarting ($reason)"
    restart_mosquitto
  fi
  local version
  version=$(mosquitto_sub -h "$MQTT_HOST" -p "$MQTT_PORT" -t '$SYS/broker/version' -C 1 -W 5 2>/dev/null) ||
    die "mosquitto on $MQTT_HOST:$MQTT_PORT accepts TCP but did not answer an MQTT subscribe"
  if [[ -n $reason ]]; then
    log "mosquitto ... running with $MOSQ_CONF_D/noc-stream.conf ($version, pid $(mosq_pid))"
  else
    log "mosquitto ... already configured ($version, pid $pid)"
  fi
}

# ---------------------------------------------------------- 4. PGlite test server

pglite_answers() { pglite_sql -c 'SELECT 1' >/dev/null 2>&1; }

# pid from our pid file when that process is still our node server.
pglite_pid() {
  local pid
  [[ -f $PGLITE_PID_FILE ]] || return 1
  pid=$(<"$PGLITE_PID_FILE")
  [[ $pid =~ ^[0-9]+$ ]] && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'server.mjs' || return 1
  echo "$pid"
}

stop_pglite_server() {
  local pid=$1
  kill "$pid" 2>/dev/null || true
  wait_for 15 bash -c "! kill -0 $pid 2>/dev/null" || die "pglite server (pid $pid) did not stop within 15 s"
  rm -f "$PGLITE_PID_FILE"
}

start_pglite_server() {
  mkdir -p "$PGLITE_RUN_DIR" "$(dirname "$PGLITE_LOG_FILE")"
  log "pglite ... starting server on $PGLITE_HOST:$PGLITE_PORT (log $PGLITE_LOG_FILE, pid file $PGLITE_PID_FILE)"
  (
    cd "$PGLITE_DIR"
    # own session, no terminal, output to the log: it outlives this script
    setsid nohup node server.mjs --host "$PGLITE_HOST" --port "$PGLITE_PORT" \
      </dev/null >>"$PGLITE_LOG_FILE" 2>&1 &
    echo $! >"$PGLITE_PID_FILE"
  )
  local pid deadline=$((SECONDS + 90))
  pid=$(<"$PGLITE_PID_FILE")
  until pglite_answers; do
    kill -0 "$pid" 2>/dev/null ||
      die "pglite server exited during start-up: $(grep -v '^ *at ' "$PGLITE_LOG_FILE" | tail -n 1)"
    ((SECONDS < deadline)) || die "pglite server (pid $pid) did not answer psql within 90 s; see $PGLITE_LOG_FILE"
    sleep 0.3
  done
}

ensure_pglite_server() {
  CURRENT_STEP="pglite server"
  command -v node >/dev/null || die "node is not installed (the machine kind ships Node.js 20)"
  command -v npm >/dev/null || die "npm is not installed"
  local lock="$PGLITE_DIR/package-lock.json" marker="$PGLITE_DIR/node_modules/.package-lock.json"
  [[ -f $lock ]] || die "missing $lock"
  if [[ ! -f $marker || $lock -nt $marker ]]; then
    log "pglite ... npm ci in tools/pglite-server"
    run_logged pglite-npm-ci env -C "$PGLITE_DIR" npm ci --no-audit --no-fund --loglevel=error
    touch "$marker"
  fi

  # A server we started earlier from older code (server.mjs or packages changed since)
  # is stopped and started again; a listener we did not start is left alone.
  local pid
  if pid=$(pglite_pid); then
    local since
    since=$(($(date +%s) - $(ps -o etimes= -p "$pid")))
    if [[ $(stat -c %Y "$PGLITE_DIR/server.mjs") -gt $since || $(stat -c %Y "$marker") -gt $since ]]; then
      log "pglite ... restarting pid $pid (server.mjs or node_modules newer than the process)"
      stop_pglite_server "$pid"
    fi
  fi

  local started=0
  if ! tcp_open "$PGLITE_HOST" "$PGLITE_PORT"; then
    start_pglite_server
    started=1
  elif ! pglite_answers; then
    die "port $PGLITE_PORT accepts connections but psql as $PGLITE_USER (sslmode=disable) fails within 5 s: another client holds the single PGlite session, or it is not the pglite server"
  fi

  # Community-edition features the Apache build lacks; leaves nothing behind.
  local out license version
  out=$(pglite_sql -F ' ' <<'SQL'
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS timescaledb;
DROP SCHEMA IF EXISTS noc_provision_check CASCADE;
CREATE SCHEMA noc_provision_check;
CREATE TABLE noc_provision_check.readings (
  ts timestamptz NOT NULL, device text NOT NULL, value double precision);
SELECT FROM create_hypertable('noc_provision_check.readings', by_range('ts', INTERVAL '1 day'));
INSERT INTO noc_provision_check.readings
  SELECT now() - i * INTERVAL '1 minute', 'd' || (i % 3), i FROM generate_series(1, 120) AS i;
CREATE MATERIALIZED VIEW noc_provision_check.readings_5m WITH (timescaledb.continuous) AS
  SELECT time_bucket(INTERVAL '5 minutes', ts) AS bucket, device, avg(value) AS avg_value
  FROM noc_provision_check.readings GROUP BY bucket, device WITH NO DATA;
SELECT FROM add_continuous_aggregate_policy('noc_provision_check.readings_5m',
  start_offset => INTERVAL '1 day', end_offset => INTERVAL '5 minutes',
  schedule_interval => INTERVAL '1 hour');
CALL refresh_continuous_aggregate('noc_provision_check.readings_5m', NULL, NULL);
DO $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM noc_provision_check.readings_5m) THEN
    RAISE EXCEPTION 'continuous aggregate is empty after refresh';
  END IF;
END $$;
DROP MATERIALIZED VIEW noc_provision_check.readings_5m;
DROP SCHEMA noc_provision_check CASCADE;
-- one backend session serves every client: leave the server's start-up setting
SET client_min_messages = notice;
SELECT current_setting('timescaledb.license'), extversion FROM pg_extension WHERE extname = 'timescaledb';
SQL
  ) || die "hypertable / continuous aggregate / policy check failed on the pglite server :$PGLITE_PORT"
  read -r license version <<<"$(tail -n 1 <<<"$out")"
  [[ $license == timescale ]] || die "pglite server reports timescaledb.license '$license', expected timescale"
  local conn="host=$PGLITE_HOST port=$PGLITE_PORT user=$PGLITE_USER password=$PGLITE_PASSWORD dbname=$PGLITE_DB sslmode=disable"
  if ((started)); then
    log "pglite ... started ($version, license $license; hypertable + continuous aggregate + policy ok) at '$conn'"
  else
    log "pglite ... already running ($version, license $license; hypertable + continuous aggregate + policy ok) at '$conn'"
  fi
}

# ------------------------------------------------------------------ 5. Python env

ensure_python_env() {
  CURRENT_STEP="python env"
  if [[ ${NOC_SKIP_PYTHON:-0} == 1 ]]; then
    log "python ... skipped (NOC_SKIP_PYTHON=1)"
    return 0
  fi
  local uv=(uv)
  if ! command -v uv >/dev/null; then
    log "python ... installing uv==$UV_VERSION with pip"
    run_logged uv-install python3 -m pip install --quiet "uv==$UV_VERSION"
    hash -r
    # pyenv needs a rehash before a new console script shows up on PATH
    command -v uv >/dev/null || uv=(python3 -m uv)
  fi
  [[ -f $REPO_ROOT/uv.lock ]] || die "$REPO_ROOT/uv.lock missing: uv sync --frozen needs it"
  run_logged uv-sync env -C "$REPO_ROOT" "${uv[@]}" sync --frozen --extra dev
  local summary
  summary=$(grep -E '^(Resolved|Audited|Installed|Uninstalled)' "$LOG_DIR/uv-sync.log" | paste -sd ';' - || true)
  log "python ... .venv in sync with uv.lock (${summary:-up to date})"
}

main() {
  local t0=$SECONDS
  [[ $(id -u) -eq 0 ]] || die "must run as root (installs Debian packages, writes /etc, restarts services)"
  [[ -r /etc/debian_version ]] || die "Debian 12 expected (no /etc/debian_version)"
  mkdir -p "$LOG_DIR"
  ensure_debian_packages
  ensure_timescaledb
  ensure_mosquitto
  ensure_pglite_server
  ensure_python_env
  CURRENT_STEP=done
  log "done in $((SECONDS - t0)) s"
}

main "$@"
