# shellcheck shell=bash
# Shared by deploy/run-local and deploy/test (sourced, not run): makes sure a
# NATS server with JetStream listens on 127.0.0.1:4222.
#
#   nats_ensure STORE_DIR LOG_FILE
#       If something already listens on 127.0.0.1:4222, use it (and warn when
#       it does not announce JetStream). Otherwise install Debian's nats-server
#       package if the command is missing, start
#       `nats-server -a 127.0.0.1 -p 4222 -js -sd STORE_DIR` in the background
#       (its own session, output into LOG_FILE) and wait until it answers.
#       Sets NATS_STARTED_PID to the pid of the server it started, or to ""
#       when it reused one.
#   nats_stop
#       Stops the server nats_ensure started, if it started one.
#   nats_require_binary
#       Installs Debian's nats-server package when the command is missing
#       (the fault suite starts a cluster of its own, even when a server
#       already listens on 127.0.0.1:4222).
#
# Also defines helpers both scripts use: log, warn, die, port_open,
# stop_pid.

NATS_HOST=127.0.0.1
NATS_PORT=4222
# shellcheck disable=SC2034 # used by the scripts that source this file
NATS_DEFAULT_URL="nats://${NATS_HOST}:${NATS_PORT}"
NATS_STARTED_PID=""

log() { printf '==> %s\n' "$*" >&2; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

# port_open HOST PORT: true when something accepts TCP connections there.
port_open() {
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}

# nats_info_line: the INFO line the server at NATS_HOST:NATS_PORT greets with
# ("" when it says nothing within 2 s).
nats_info_line() {
    # shellcheck disable=SC2016 # expanded by the inner bash
    timeout 3 bash -c '
        exec 3<>"/dev/tcp/$1/$2" || exit 1
        IFS= read -r -t 2 line <&3 || true
        printf "%s\n" "${line:-}"
    ' _ "$NATS_HOST" "$NATS_PORT" 2>/dev/null || true
}

# stop_pid PID [NAME]: SIGTERM, up to 10 s of grace, then SIGKILL.
stop_pid() {
    local pid=$1 name=${2:-process} i
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    warn "$name (pid $pid) did not stop within 10 s of SIGTERM; killing it"
    kill -KILL "$pid" 2>/dev/null || true
}

nats_install() {
    local sudo=()
    if [[ $(id -u) -ne 0 ]]; then
        command -v sudo >/dev/null 2>&1 ||
            die "nats-server is not installed and you are not root (and sudo is missing): install Debian's 'nats-server' package, or start a NATS server with JetStream (-js) on ${NATS_HOST}:${NATS_PORT} yourself"
        sudo=(sudo)
    fi
    command -v apt-get >/dev/null 2>&1 ||
        die "nats-server is not installed and apt-get is not available: install nats-server 2.9 or newer and start it with JetStream (-js) on ${NATS_HOST}:${NATS_PORT}"
    log "installing Debian's nats-server package (apt-get)"
    "${sudo[@]}" apt-get update -qq ||
        die "apt-get update failed; fix the package sources (or install nats-server yourself) and retry"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y nats-server ||
        die "apt-get install nats-server failed; install it yourself and retry"
}

nats_require_binary() {
    if ! command -v nats-server >/dev/null 2>&1 &&
        [[ ! -x /usr/sbin/nats-server && ! -x /usr/bin/nats-server ]]; then
        nats_install
    fi
}

nats_ensure() {
    local store=$1 logfile=$2 info i
    NATS_STARTED_PID=""

    if ! port_open "$NATS_HOST" "$NATS_PORT"; then
        if ! command -v nats-server >/dev/null 2>&1; then
            nats_install
        fi
    fi
    # Checked again: installing the package may have started a server.
    if port_open "$NATS_HOST" "$NATS_PORT"; then
        info=$(nats_info_line)
        if [[ $info != INFO* ]]; then
            die "something listens on ${NATS_HOST}:${NATS_PORT} but it is not a NATS server; stop it (see: ss -ltnp 'sport = :${NATS_PORT}') and retry"
        elif [[ $info != *'"jetstream":true'* ]]; then
            warn "the NATS server on ${NATS_HOST}:${NATS_PORT} does not announce JetStream; lark-bridge needs it (restart that server with -js)"
        fi
        log "using the NATS server already listening on ${NATS_HOST}:${NATS_PORT}"
        return 0
    fi

    command -v nats-server >/dev/null 2>&1 || die "nats-server is still not on PATH after installing it"
    mkdir -p "$store" "$(dirname "$logfile")"
    log "starting nats-server with JetStream on ${NATS_HOST}:${NATS_PORT} (store $store, log $logfile)"
    # Its own session, so Ctrl-C in the terminal reaches only the script, which
    # then stops everything in order.
    setsid nats-server -a "$NATS_HOST" -p "$NATS_PORT" -js -sd "$store" \
        >>"$logfile" 2>&1 </dev/null &
    NATS_STARTED_PID=$!

    for ((i = 0; i < 150; i++)); do
        if port_open "$NATS_HOST" "$NATS_PORT"; then
            log "nats-server is up (pid $NATS_STARTED_PID)"
            return 0
        fi
        if ! kill -0 "$NATS_STARTED_PID" 2>/dev/null; then
            NATS_STARTED_PID=""
            tail -n 20 "$logfile" >&2 || true
            die "nats-server exited at start (its log is above and in $logfile)"
        fi
        sleep 0.1
    done
    tail -n 20 "$logfile" >&2 || true
    stop_pid "$NATS_STARTED_PID" nats-server
    NATS_STARTED_PID=""
    die "nats-server did not answer on ${NATS_HOST}:${NATS_PORT} within 15 s (its log is above and in $logfile)"
}

nats_stop() {
    if [[ -n $NATS_STARTED_PID ]]; then
        log "stopping the nats-server this script started (pid $NATS_STARTED_PID)"
        stop_pid "$NATS_STARTED_PID" nats-server
        NATS_STARTED_PID=""
    fi
}
