#!/usr/bin/env bash
# A shared MLflow tracking server for a team: PostgreSQL backend store, proxied artifacts, basic auth.
#
#   team/tracking-server.sh start | stop | status | restart-mlflow
#
# Configuration (environment; defaults in brackets):
#   PTQ_TEAM_DIR        state dir: pgdata/, artifacts/, logs/, pids/, auth.ini, secrets [./team-server]
#   PTQ_PG_PORT         PostgreSQL port, listening on 127.0.0.1 only [5433]
#   PTQ_MLFLOW_HOST     interface the MLflow server binds [127.0.0.1]; anything else exposes it
#   PTQ_MLFLOW_PORT     MLflow server port [5000]
#   PTQ_MLFLOW_WORKERS  MLflow server worker processes [4, MLflow's default]
#   PTQ_AUTH            1: MLflow's basic-auth app, 0: no authentication at all [1]
#   PTQ_MLFLOW_BIN      the mlflow executable [mlflow on PATH, else this checkout's .venv/bin/mlflow]
#   PTQ_PG_BIN          folder holding initdb/pg_ctl/psql [on PATH, else newest /usr/lib/postgresql/*/bin]
#   PTQ_START_TIMEOUT   seconds to wait for the server's /health after starting it [90]
#   PTQ_AUTH_CACHE_TTL  seconds a worker trusts a verified user/password pair [60]; 0 verifies
#                       every request (a scrypt hash, ~0.1 s of CPU each: the server's bottleneck).
#                       A password changed or a user deleted through one worker may still be
#                       accepted by the others for up to this long
# With PTQ_AUTH=1 (the default) also:
#   MLFLOW_AUTH_ADMIN_PASSWORD       required: the password of user `admin` (12+ characters), used
#                                    when the auth store is first created; never written to disk
#   MLFLOW_FLASK_SERVER_SECRET_KEY   optional: generated into $PTQ_TEAM_DIR/flask-secret-key (0600)
#                                    on first start when unset, and reused afterwards
#
# The database cluster is private to this server: one role `mlflow` with a random password kept in
# $PTQ_TEAM_DIR/pgpass (0600, read by libpq through PGPASSFILE), scram-sha-256 authentication for
# every connection, TCP on 127.0.0.1 only and no unix socket. Exit codes: 0 ok, 1 failed, 2 refused
# (configuration), 3 `status` found something stopped.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
REPO_DIR="$(dirname "$SCRIPT_DIR")"

TEAM_DIR="${PTQ_TEAM_DIR:-./team-server}"
PG_PORT="${PTQ_PG_PORT:-5433}"
MLFLOW_HOST="${PTQ_MLFLOW_HOST:-127.0.0.1}"
MLFLOW_PORT="${PTQ_MLFLOW_PORT:-5000}"
MLFLOW_WORKERS="${PTQ_MLFLOW_WORKERS:-4}"
AUTH="${PTQ_AUTH:-1}"
START_TIMEOUT="${PTQ_START_TIMEOUT:-90}"
AUTH_CACHE_TTL="${PTQ_AUTH_CACHE_TTL:-60}"
LEGACY_DEFAULT_PASSWORD="password1234"  # shipped by old MLflow releases (GHSA-gq3w-7jj3-x7gr)

die() {  # die CODE MESSAGE: one line on stderr
    printf 'tracking-server: %s\n' "$2" >&2
    exit "$1"
}

say() { printf '%s\n' "$*"; }

is_uint() { [[ "$1" =~ ^[0-9]+$ ]]; }

check_port() {  # check_port NAME VALUE
    if ! is_uint "$2" || (($2 < 1 || $2 > 65535)); then
        die 2 "$1 must be a port number (1-65535), not '$2'"
    fi
}

check_config() {
    check_port PTQ_PG_PORT "$PG_PORT"
    check_port PTQ_MLFLOW_PORT "$MLFLOW_PORT"
    if ! is_uint "$MLFLOW_WORKERS" || ((MLFLOW_WORKERS < 1)); then
        die 2 "PTQ_MLFLOW_WORKERS must be a positive integer, not '$MLFLOW_WORKERS'"
    fi
    is_uint "$START_TIMEOUT" || die 2 "PTQ_START_TIMEOUT must be a number of seconds, not '$START_TIMEOUT'"
    is_uint "$AUTH_CACHE_TTL" || die 2 "PTQ_AUTH_CACHE_TTL must be a number of seconds (0: no cache), not '$AUTH_CACHE_TTL'"
    [[ "$AUTH" == 0 || "$AUTH" == 1 ]] || die 2 "PTQ_AUTH must be 1 (basic auth) or 0 (none), not '$AUTH'"
    [[ "$MLFLOW_HOST" =~ ^[A-Za-z0-9.:_-]+$ ]] || die 2 "PTQ_MLFLOW_HOST '$MLFLOW_HOST' is not a host name or address"
}

check_admin_password() {
    local password="${MLFLOW_AUTH_ADMIN_PASSWORD:-}"
    if [[ -z "$password" ]]; then
        die 2 "MLFLOW_AUTH_ADMIN_PASSWORD is unset or empty: export a strong admin password (12+ characters), or PTQ_AUTH=0 to run without authentication"
    elif [[ "$password" == "$LEGACY_DEFAULT_PASSWORD" ]]; then
        die 2 "MLFLOW_AUTH_ADMIN_PASSWORD is the publicly known old MLflow default '$LEGACY_DEFAULT_PASSWORD': choose another password"
    elif ((${#password} < 12)); then
        die 2 "MLFLOW_AUTH_ADMIN_PASSWORD is shorter than 12 characters, which MLflow refuses: choose a longer one"
    fi
}

find_pg_bin() {
    if [[ -n "${PTQ_PG_BIN:-}" ]]; then
        [[ -x "$PTQ_PG_BIN/pg_ctl" && -x "$PTQ_PG_BIN/initdb" && -x "$PTQ_PG_BIN/psql" ]] \
            || die 2 "PTQ_PG_BIN=$PTQ_PG_BIN lacks initdb, pg_ctl or psql"
        PG_BIN="$PTQ_PG_BIN"
        return
    fi
    local found dir
    # pg_ctl on PATH may be a symlink (/usr/local/bin/pg_ctl -> /usr/lib/postgresql/15/bin/pg_ctl):
    # its real folder also holds psql, which Debian's PATH gives only as a wrapper
    if found="$(command -v pg_ctl)" && found="$(readlink -f "$found")" \
        && [[ -x "$(dirname "$found")/initdb" && -x "$(dirname "$found")/psql" ]]; then
        PG_BIN="$(dirname "$found")"
        return
    fi
    PG_BIN=""
    # newest major version first (ls -v sorts 9.6 before 15)
    while IFS= read -r dir; do
        if [[ -x "$dir/bin/pg_ctl" && -x "$dir/bin/initdb" && -x "$dir/bin/psql" ]]; then
            PG_BIN="$dir/bin"
        fi
    done < <(ls -1dv /usr/lib/postgresql/* 2>/dev/null || true)
    [[ -n "$PG_BIN" ]] || die 2 "PostgreSQL not installed: apt-get install postgresql (or set PTQ_PG_BIN)"
}

find_mlflow() {
    if [[ -n "${PTQ_MLFLOW_BIN:-}" ]]; then
        MLFLOW_BIN="$PTQ_MLFLOW_BIN"
    elif command -v mlflow >/dev/null 2>&1; then
        MLFLOW_BIN="$(command -v mlflow)"
    else
        MLFLOW_BIN="$REPO_DIR/.venv/bin/mlflow"
    fi
    [[ -x "$MLFLOW_BIN" ]] || die 2 "no mlflow executable at '$MLFLOW_BIN': pip install -e '.[team]' or set PTQ_MLFLOW_BIN"
}

setup_paths() {
    mkdir -p "$TEAM_DIR"
    TEAM_DIR="$(cd "$TEAM_DIR" && pwd -P)"
    PGDATA_DIR="$TEAM_DIR/pgdata"
    PGPASS_FILE="$TEAM_DIR/pgpass"
    ARTIFACTS_DIR="$TEAM_DIR/artifacts"
    LOG_DIR="$TEAM_DIR/logs"
    PID_DIR="$TEAM_DIR/pids"
    AUTH_INI="$TEAM_DIR/auth.ini"
    SECRET_KEY_FILE="$TEAM_DIR/flask-secret-key"
    MLFLOW_PID_FILE="$PID_DIR/mlflow.pid"
    PG_PID_FILE="$PID_DIR/postgres.pid"
    MLFLOW_LOG="$LOG_DIR/mlflow.log"
    PG_LOG="$LOG_DIR/postgres.log"
}

# PostgreSQL refuses to run as root: as root, its server commands run as the `postgres` user.
setup_pg_user() {
    PG_USER=""
    if [[ "$(id -u)" -eq 0 ]]; then
        PG_USER="postgres"
        if ! id -u "$PG_USER" >/dev/null 2>&1; then
            useradd --system --user-group --no-create-home --home-dir /nonexistent \
                --shell /usr/sbin/nologin "$PG_USER" || die 1 "could not create the system user $PG_USER"
            say "note: created the system user $PG_USER to own the database files"
        fi
    fi
}

as_pg() {
    if [[ -n "$PG_USER" ]]; then
        runuser -u "$PG_USER" -- "$@"
    else
        "$@"
    fi
}

random_hex() { od -An -N32 -tx1 /dev/urandom | tr -d ' \n'; }

pid_alive() {  # a zombie nobody reaped yet counts as gone
    [[ -n "${1:-}" ]] && kill -0 "$1" 2>/dev/null || return 1
    local state
    state="$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null || true)"
    [[ -n "$state" && "${state:0:1}" != Z ]]
}

pg_running() { [[ -f "$PGDATA_DIR/PG_VERSION" ]] && as_pg "$PG_BIN/pg_ctl" -D "$PGDATA_DIR" status >/dev/null 2>&1; }

# line N of postmaster.pid: 1 the pid, 4 the port
postmaster_field() { sed -n "${1}p" "$PGDATA_DIR/postmaster.pid" 2>/dev/null || true; }

mlflow_pid() {  # the pid in the pid file, if that process is still our mlflow server
    local pid
    pid="$(cat "$MLFLOW_PID_FILE" 2>/dev/null || true)"
    if pid_alive "$pid" && grep -qa "mlflow" "/proc/$pid/cmdline" 2>/dev/null; then
        printf '%s' "$pid"
    fi
}

health_host() {
    case "$MLFLOW_HOST" in
        0.0.0.0 | "::" | "[::]") printf '127.0.0.1' ;;
        *) printf '%s' "$MLFLOW_HOST" ;;
    esac
}

port_open() {  # port_open HOST PORT: something accepts connections there
    # shellcheck disable=SC2016  # expanded by the inner bash, from its arguments
    timeout 3 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$1" "$2" 2>/dev/null
}

health_ok() {  # GET /health answers 200
    local status
    # shellcheck disable=SC2016  # expanded by the inner bash, from its arguments
    status="$(timeout 5 bash -c '
        exec 3<>"/dev/tcp/$1/$2" || exit 1
        printf "GET /health HTTP/1.0\r\nHost: %s:%s\r\n\r\n" "$1" "$2" >&3
        IFS= read -r line <&3 && printf "%s" "$line"' _ "$(health_host)" "$MLFLOW_PORT" 2>/dev/null || true)"
    [[ "$status" =~ ^HTTP/[0-9.]+\ 200 ]]
}

init_cluster() {
    [[ -f "$PGDATA_DIR/PG_VERSION" ]] && return
    [[ -e "$PGDATA_DIR" ]] && die 1 "$PGDATA_DIR exists but holds no database cluster: move it away"
    if [[ -n "$PG_USER" ]] && ! as_pg test -x "$TEAM_DIR"; then
        die 2 "user $PG_USER cannot reach $TEAM_DIR (a parent folder is private): choose a PTQ_TEAM_DIR it can traverse"
    fi
    local partial="$TEAM_DIR/pgdata.partial" password pwfile
    rm -rf "$partial"
    mkdir -m 0700 "$partial"
    password="$(random_hex)"
    pwfile="$partial.pw"
    (umask 077 && printf '%s\n' "$password" >"$pwfile")
    if [[ -n "$PG_USER" ]]; then
        chown "$PG_USER" "$partial" "$pwfile"
    fi
    if ! as_pg "$PG_BIN/initdb" -D "$partial" -U mlflow --pwfile="$pwfile" --auth=scram-sha-256 \
        --encoding=UTF8 --locale=C >"$LOG_DIR/initdb.log" 2>&1; then
        rm -f "$pwfile"
        tail -n 20 "$LOG_DIR/initdb.log" >&2
        die 1 "initdb failed (log: $LOG_DIR/initdb.log)"
    fi
    rm -f "$pwfile"
    cat >>"$partial/postgresql.conf" <<'EOF'

# team/tracking-server.sh: loopback TCP only, no unix socket; the port is given at start (-p)
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
EOF
    (umask 077 && printf '127.0.0.1:*:*:mlflow:%s\n' "$password" >"$PGPASS_FILE")
    mv "$partial" "$PGDATA_DIR"
    say "initialized the database cluster in $PGDATA_DIR (role mlflow, password in $PGPASS_FILE)"
}

start_postgres() {
    if pg_running; then
        PG_ACTIVE_PORT="$(postmaster_field 4)"
        say "postgres: already running (pid $(postmaster_field 1), 127.0.0.1:$PG_ACTIVE_PORT)"
    else
        [[ -f "$PGPASS_FILE" ]] || die 1 "$PGPASS_FILE is missing: the database password is lost"
        if port_open 127.0.0.1 "$PG_PORT"; then
            die 1 "127.0.0.1:$PG_PORT is already in use: set PTQ_PG_PORT to a free port"
        fi
        if [[ -n "$PG_USER" ]]; then
            touch "$PG_LOG" && chown "$PG_USER" "$PG_LOG"
        fi
        if ! as_pg "$PG_BIN/pg_ctl" -D "$PGDATA_DIR" -l "$PG_LOG" -o "-p $PG_PORT" -w -t 60 start >/dev/null; then
            tail -n 20 "$PG_LOG" >&2
            die 1 "PostgreSQL did not start (log: $PG_LOG)"
        fi
        PG_ACTIVE_PORT="$PG_PORT"
        say "postgres: started (pid $(postmaster_field 1), 127.0.0.1:$PG_ACTIVE_PORT)"
    fi
    postmaster_field 1 >"$PG_PID_FILE"
}

psql_admin() {
    PGPASSFILE="$PGPASS_FILE" "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_ACTIVE_PORT" \
        -U mlflow -d postgres "$@"
}

create_databases() {
    local db
    for db in mlflow mlflow_auth; do
        if [[ "$(psql_admin -tAc "SELECT 1 FROM pg_database WHERE datname = '$db'")" != 1 ]]; then
            psql_admin -c "CREATE DATABASE $db" || die 1 "could not create database $db"
            say "created database $db"
        fi
    done
}

write_auth_ini() {  # no password in it: the admin's comes from MLFLOW_AUTH_ADMIN_PASSWORD, the DB's from PGPASSFILE
    cat >"$AUTH_INI" <<EOF
# Written by team/tracking-server.sh on every start; edit the script, not this file.
# No password here: the admin's comes from MLFLOW_AUTH_ADMIN_PASSWORD (first start only), the
# database's from the pgpass file that PGPASSFILE names.
[mlflow]
default_permission = READ
database_uri = postgresql+psycopg2://mlflow@127.0.0.1:$PG_ACTIVE_PORT/mlflow_auth
admin_username = admin
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
grant_default_workspace_access = false
auth_cache_ttl_seconds = $AUTH_CACHE_TTL
EOF
}

flask_secret_key() {
    if [[ -n "${MLFLOW_FLASK_SERVER_SECRET_KEY:-}" ]]; then
        return
    fi
    if [[ ! -s "$SECRET_KEY_FILE" ]]; then
        (umask 077 && random_hex >"$SECRET_KEY_FILE")
        say "note: MLFLOW_FLASK_SERVER_SECRET_KEY was unset: generated one into $SECRET_KEY_FILE (0600)"
    fi
    MLFLOW_FLASK_SERVER_SECRET_KEY="$(cat "$SECRET_KEY_FILE")"
    export MLFLOW_FLASK_SERVER_SECRET_KEY
}

wait_for_health() {
    local pid="$1" start=$SECONDS
    while ((SECONDS - start < START_TIMEOUT)); do
        if health_ok; then
            say "mlflow: started (pid $pid, http://$MLFLOW_HOST:$MLFLOW_PORT, auth $([[ "$AUTH" == 1 ]] && echo on || echo off)) in $((SECONDS - start)) s"
            return 0
        fi
        if ! pid_alive "$pid"; then
            break
        fi
        sleep 1
    done
    {
        echo "--- last lines of $MLFLOW_LOG ---"
        tail -n 30 "$MLFLOW_LOG"
    } >&2
    if grep -q "No module named 'psycopg2'" "$MLFLOW_LOG" 2>/dev/null; then
        echo "hint: the PostgreSQL driver is missing: pip install -e '.[team]'" >&2
    fi
    if pid_alive "$pid"; then
        stop_mlflow >/dev/null
        die 1 "mlflow server did not answer /health within $START_TIMEOUT s: stopped it (log: $MLFLOW_LOG)"
    fi
    rm -f "$MLFLOW_PID_FILE"
    die 1 "mlflow server exited before answering /health (log: $MLFLOW_LOG)"
}

start_mlflow() {
    local pid
    pid="$(mlflow_pid)"
    if [[ -n "$pid" ]]; then
        say "mlflow: already running (pid $pid, http://$MLFLOW_HOST:$MLFLOW_PORT)"
        return
    fi
    if port_open "$(health_host)" "$MLFLOW_PORT"; then
        die 1 "$(health_host):$MLFLOW_PORT is already in use: set PTQ_MLFLOW_PORT to a free port"
    fi
    local args=(server
        --backend-store-uri "postgresql+psycopg2://mlflow@127.0.0.1:$PG_ACTIVE_PORT/mlflow"
        --serve-artifacts --artifacts-destination "file://$ARTIFACTS_DIR"
        --host "$MLFLOW_HOST" --port "$MLFLOW_PORT" --workers "$MLFLOW_WORKERS")
    if [[ "$AUTH" == 1 ]]; then
        write_auth_ini
        flask_secret_key
        export MLFLOW_AUTH_CONFIG_PATH="$AUTH_INI"
        args+=(--app-name basic-auth)
    fi
    export PGPASSFILE="$PGPASS_FILE"
    export MLFLOW_DISABLE_TELEMETRY="${MLFLOW_DISABLE_TELEMETRY:-true}"
    printf '\n=== %s: %s %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$MLFLOW_BIN" "${args[*]}" >>"$MLFLOW_LOG"
    # setsid: the server and its workers get their own process group, which `stop` signals as one
    setsid "$MLFLOW_BIN" "${args[@]}" >>"$MLFLOW_LOG" 2>&1 </dev/null &
    pid=$!
    printf '%s\n' "$pid" >"$MLFLOW_PID_FILE"
    wait_for_health "$pid"
}

stop_mlflow() {
    local pid waited=0
    pid="$(mlflow_pid)"
    if [[ -z "$pid" ]]; then
        rm -f "$MLFLOW_PID_FILE"
        say "mlflow: not running"
        return
    fi
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    while pid_alive "$pid" && ((waited < 30)); do
        sleep 1
        waited=$((waited + 1))
    done
    if pid_alive "$pid"; then
        kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
        say "mlflow: killed (pid $pid did not stop within 30 s)"
    else
        say "mlflow: stopped (pid $pid)"
    fi
    # workers that outlived the server process
    kill -KILL -- "-$pid" 2>/dev/null || true
    rm -f "$MLFLOW_PID_FILE"
}

stop_postgres() {
    if ! pg_running; then
        rm -f "$PG_PID_FILE"
        say "postgres: not running"
        return
    fi
    local pid
    pid="$(postmaster_field 1)"
    if ! as_pg "$PG_BIN/pg_ctl" -D "$PGDATA_DIR" -m fast -w -t 60 stop >/dev/null 2>&1; then
        as_pg "$PG_BIN/pg_ctl" -D "$PGDATA_DIR" -m immediate -w -t 30 stop >/dev/null 2>&1 \
            || die 1 "PostgreSQL (pid $pid) did not stop: see $PG_LOG"
    fi
    rm -f "$PG_PID_FILE"
    say "postgres: stopped (pid $pid)"
}

prepare_server() {  # what start and restart-mlflow both need before touching anything
    if [[ "$AUTH" == 1 ]]; then
        check_admin_password
    fi
    find_pg_bin
    find_mlflow
    setup_paths
    setup_pg_user
}

cmd_start() {
    prepare_server
    chmod 0711 "$TEAM_DIR"  # others may traverse (the postgres user must), not list
    mkdir -p "$ARTIFACTS_DIR" "$LOG_DIR" "$PID_DIR"
    init_cluster
    start_postgres
    create_databases
    start_mlflow
}

cmd_stop() {
    setup_paths
    setup_pg_user
    stop_mlflow
    if [[ -f "$PGDATA_DIR/PG_VERSION" ]]; then
        find_pg_bin
        stop_postgres
    else
        say "postgres: not running"
    fi
}

cmd_status() {
    local rc=0 pid
    setup_paths
    setup_pg_user
    if [[ -f "$PGDATA_DIR/PG_VERSION" ]] && find_pg_bin && pg_running; then
        say "postgres: running (pid $(postmaster_field 1), 127.0.0.1:$(postmaster_field 4), data $PGDATA_DIR)"
    else
        say "postgres: stopped"
        rc=3
    fi
    pid="$(mlflow_pid)"
    if [[ -z "$pid" ]]; then
        say "mlflow: stopped"
        rc=3
    elif health_ok; then
        say "mlflow: running (pid $pid, http://$MLFLOW_HOST:$MLFLOW_PORT, /health OK)"
    else
        say "mlflow: running (pid $pid) but http://$(health_host):$MLFLOW_PORT/health does not answer"
        rc=3
    fi
    return "$rc"
}

cmd_restart_mlflow() {  # the same state and database: only the server process is replaced
    prepare_server
    pg_running || die 1 "postgres is not running: use start"
    PG_ACTIVE_PORT="$(postmaster_field 4)"
    stop_mlflow
    start_mlflow
}

main() {
    local command="${1:-}"
    check_config
    case "$command" in
        start) cmd_start ;;
        stop) cmd_stop ;;
        status) cmd_status ;;
        restart-mlflow) cmd_restart_mlflow ;;
        *) die 2 "usage: $0 start|stop|status|restart-mlflow" ;;
    esac
}

main "$@"
