#!/usr/bin/env bash
# Side-by-side proxy benchmark: PostgreSQL directly, through pgbouncer, through haproxy as a
# plain TCP relay, and through wirewarden-gateway with identity, policy, masking and audit
# (fsync) all on. Interleaved in one run, because the machines this runs on are noisy.
#
# Run by hand from anywhere (it is too slow for scripts/test.sh):
#
#     benches/proxy-bench.sh
#
# It installs what is missing (Debian packages postgresql, pgbouncer, haproxy), builds the
# gateway in release mode, starts a throwaway PostgreSQL and the proxies on free loopback
# ports, runs every workload over every path round-robin for ROUNDS rounds, and writes the
# ratios to direct into the "## Proxy comparison (PostgreSQL)" section of
# docs/performance.md (only the generated block between its markers is replaced). Everything
# it starts is stopped and every temporary directory removed on exit, whatever the exit.
#
# Paths (each a separate listener in front of the same server):
#   direct            PostgreSQL itself, SCRAM-SHA-256.
#   pgbouncer         pgbouncer, SESSION pooling, pkt_buf = 64 KB. Session pooling because it
#                     is the like-for-like comparison: the gateway also keeps one upstream
#                     connection per client session, and pgbench holds its connections for the
#                     whole run, so transaction pooling would only add a pool check-out per
#                     transaction without saving a server connection. pkt_buf raised from the
#                     4 KB default, which caps its relay writes at 4 KB on large results.
#   pgbouncer-4k      the same with pkt_buf at its default (4096), for reference.
#   haproxy           haproxy in TCP mode (no protocol awareness; SCRAM end to end).
#   gateway           wirewarden-gateway: a static token as the password (identity), a rule
#                     set that allows reads (policy), a mask profile with every detector on and
#                     e-mails tokenized (masking), and the audit trail with durability = fsync.
#   gateway-buffered  the same gateway with durability = buffered: a diagnostic path that
#                     separates the cost of waiting for fdatasync from the rest.
#
# Workloads:
#   select-simple     pgbench -S (one-row primary-key SELECT), simple protocol, CLIENTS clients
#   select-extended   the same with -M extended (Parse/Bind/Execute/Sync per statement)
#   latency-1conn     pgbench -S with one client: the per-statement latency each hop adds
#   wide-1000         benches/proxy/wide.sql: 1,000 rows of six columns per query, every row
#                     with an e-mail address the gateway's masker detects and tokenizes
#
# Settings (environment): ROUNDS (5), SECS per cell (3), CLIENTS (8), THREADS (2), SCALE of
# pgbench -i (2), PATHS and WORKLOADS (space-separated subsets of the names above),
# WRITE_DOCS (1; 0 leaves docs/performance.md alone), GATEWAY_BIN (skip the build and use this
# binary), PROFILE (0; 1 also records a perf cpu-clock profile of the gateway for every
# workload after the comparison, into PROFILE_OUT, default /tmp/proxy-bench-profile), KEEP_RAW
# (a path to copy the raw results table to), HOLD (1: start everything, write the ports,
# passwords and PIDs to HOLD_ENV, default /tmp/proxy-bench-hold.env, and wait until
# interrupted, for profiling by hand).

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HERE=$ROOT/benches/proxy
DOC=$ROOT/docs/performance.md

ROUNDS=${ROUNDS:-5}
SECS=${SECS:-3}
CLIENTS=${CLIENTS:-8}
THREADS=${THREADS:-2}
SCALE=${SCALE:-2}
PATHS=${PATHS:-"direct pgbouncer pgbouncer-4k haproxy gateway gateway-buffered"}
WORKLOADS=${WORKLOADS:-"select-simple select-extended latency-1conn wide-1000"}
WRITE_DOCS=${WRITE_DOCS:-1}
PROFILE=${PROFILE:-0}
PROFILE_OUT=${PROFILE_OUT:-/tmp/proxy-bench-profile}
GATEWAY_BIN=${GATEWAY_BIN:-}
KEEP_RAW=${KEEP_RAW:-}
HOLD=${HOLD:-0}
HOLD_ENV=${HOLD_ENV:-/tmp/proxy-bench-hold.env}

log() { printf '[proxy-bench %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

is_root() { [ "$(id -u)" -eq 0 ]; }

# --- what we start, and how it all goes away -------------------------------------------------

WORK=""
STARTED=() # "pid signal" of every long-running process we started, in start order

stop_pid() {
    local pid=$1 sig=$2 i
    kill "-$sig" "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 100; i++)); do
        # Gone, or a zombie waiting to be reaped: either way it has stopped.
        local state
        state=$(ps -o stat= -p "$pid" 2>/dev/null || true)
        [ -z "$state" ] || [ "${state:0:1}" = Z ] && break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    local i
    for ((i = ${#STARTED[@]} - 1; i >= 0; i--)); do
        # shellcheck disable=SC2086
        stop_pid ${STARTED[i]}
    done
    if [ -n "$WORK" ] && [ -d "$WORK" ]; then
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

started() { STARTED+=("$1 ${2:-TERM}"); }

# --- install and build ---------------------------------------------------------------------

pg_bindir() {
    local d
    d=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n1)
    printf '%s' "$d"
}

install_missing() {
    local missing=() bindir
    bindir=$(pg_bindir)
    if [ -z "$bindir" ] || [ ! -x "$bindir/initdb" ]; then missing+=(postgresql); fi
    # pgbench: part of the server package on Debian 12 (postgresql-contrib is a dummy there).
    if [ -z "$bindir" ] || [ ! -x "$bindir/pgbench" ]; then missing+=(postgresql-contrib); fi
    command -v psql >/dev/null || missing+=(postgresql-client)
    command -v pgbouncer >/dev/null || missing+=(pgbouncer)
    command -v haproxy >/dev/null || missing+=(haproxy)
    command -v python3 >/dev/null || missing+=(python3)
    if [ "$PROFILE" = 1 ] && ! command -v perf >/dev/null; then missing+=(linux-perf); fi
    if ((${#missing[@]} == 0)); then return; fi
    log "installing ${missing[*]}"
    local sudo=()
    is_root || sudo=(sudo)
    "${sudo[@]}" apt-get update -qq || log "apt-get update failed; trying the install anyway"
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >&2
}

build_gateway() {
    if [ -n "$GATEWAY_BIN" ]; then
        [ -x "$GATEWAY_BIN" ] || die "GATEWAY_BIN=$GATEWAY_BIN is not executable"
        GW=$GATEWAY_BIN
        return
    fi
    log "building wirewarden-gateway (release)"
    (cd "$ROOT" && cargo build --release --quiet -p wirewarden-gateway)
    GW=${CARGO_TARGET_DIR:-$ROOT/target}/release/wirewarden-gateway
    [ -x "$GW" ] || die "no gateway binary at $GW"
}

# --- helpers ---------------------------------------------------------------------------------

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

secret() { python3 -c 'import secrets; print(secrets.token_hex(16))'; }
hex32() { python3 -c 'import secrets; print(secrets.token_hex(32))'; }

# The prefix that runs a command as the postgres user when we are root (PostgreSQL and
# pgbouncer refuse to run as root). An array, not a function: a background simple command is
# exec'ed in the forked child, and setpriv execs too, so $! is the server's own PID.
AS_PG=()
if is_root; then AS_PG=(setpriv --reuid=postgres --regid=postgres --init-groups --); fi

give_to_pg() { if is_root; then chown -R postgres:postgres "$@"; fi; }

wait_port() {
    local port=$1 what=$2 pid=$3 i
    for ((i = 0; i < 300; i++)); do
        if python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', $port), 0.2)" 2>/dev/null; then
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || die "$what exited during start-up (see above)"
        sleep 0.1
    done
    die "$what did not open port $port"
}

cpu_ticks() {
    # utime + stime (fields 14 and 15) of the whole process, all threads; the command name in
    # field 2 may hold spaces, so count from after its closing parenthesis.
    local pid=$1 stat
    stat=$(cat "/proc/$pid/stat" 2>/dev/null) || {
        echo 0
        return
    }
    stat=${stat##*) }
    # shellcheck disable=SC2086
    set -- $stat
    echo $((${12} + ${13}))
}

# --- PostgreSQL ------------------------------------------------------------------------------

start_postgres() {
    local bindir
    bindir=$(pg_bindir)
    PGBIN=$bindir
    local dir=$WORK/pg
    mkdir -p "$dir/sock"
    local superpw
    superpw=$(secret)
    printf '%s\n' "$superpw" >"$dir/pwfile"
    give_to_pg "$dir"
    "${AS_PG[@]}" "$bindir/initdb" -D "$dir/data" -U postgres --auth-local=trust \
        --auth-host=scram-sha-256 --no-sync --no-locale -E UTF8 \
        --pwfile="$dir/pwfile" >"$WORK/initdb.log" 2>&1 || {
        cat "$WORK/initdb.log" >&2
        die "initdb failed"
    }
    PGPORT=$(free_port)
    # Durability off on the server side: this measures the relays, not the server's disk.
    "${AS_PG[@]}" "$bindir/postgres" -D "$dir/data" -p "$PGPORT" -h 127.0.0.1 -k "$dir/sock" \
        -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
        -c max_connections=100 -c shared_buffers=128MB -c logging_collector=off \
        >"$dir/postgres.log" 2>&1 &
    local pid=$!
    started "$pid" INT
    local i
    for ((i = 0; i < 300; i++)); do
        if "$bindir/pg_isready" -q -h "$dir/sock" -p "$PGPORT"; then break; fi
        kill -0 "$pid" 2>/dev/null || {
            cat "$dir/postgres.log" >&2
            die "postgres exited during start-up"
        }
        sleep 0.1
    done
    "$bindir/pg_isready" -q -h "$dir/sock" -p "$PGPORT" || die "postgres did not become ready"
    PGPASS=$(secret)
    psql -X -q -v ON_ERROR_STOP=1 -h "$dir/sock" -p "$PGPORT" -U postgres -d postgres \
        -c "CREATE ROLE bench LOGIN PASSWORD '$PGPASS'" \
        -c "CREATE DATABASE bench OWNER bench" >/dev/null
    log "postgres on 127.0.0.1:$PGPORT; loading pgbench scale $SCALE and the wide table"
    PGPASSWORD=$PGPASS "$bindir/pgbench" -i -q -s "$SCALE" -h 127.0.0.1 -p "$PGPORT" -U bench \
        bench >"$WORK/pgbench-init.log" 2>&1 || {
        cat "$WORK/pgbench-init.log" >&2
        die "pgbench -i failed"
    }
    PGPASSWORD=$PGPASS psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PGPORT" -U bench \
        -d bench -f "$HERE/seed.sql" >/dev/null
}

# --- pgbouncer -------------------------------------------------------------------------------

start_pgbouncer() {
    local name=$1 pkt_buf=$2 dir=$WORK/$1 port
    port=$(free_port)
    mkdir -p "$dir"
    printf '"bench" "%s"\n' "$PGPASS" >"$dir/userlist.txt"
    {
        echo "[databases]"
        echo "bench = host=127.0.0.1 port=$PGPORT dbname=bench"
        echo "[pgbouncer]"
        echo "listen_addr = 127.0.0.1"
        echo "listen_port = $port"
        echo "unix_socket_dir ="
        echo "auth_type = scram-sha-256"
        echo "auth_file = $dir/userlist.txt"
        echo "pool_mode = session"
        echo "max_client_conn = 200"
        echo "default_pool_size = 32"
        echo "logfile = $dir/pgbouncer.log"
        echo "log_connections = 0"
        echo "log_disconnections = 0"
        if [ -n "$pkt_buf" ]; then echo "pkt_buf = $pkt_buf"; fi
    } >"$dir/pgbouncer.ini"
    give_to_pg "$dir"
    "${AS_PG[@]}" pgbouncer "$dir/pgbouncer.ini" >"$dir/stdout.log" 2>&1 &
    local pid=$!
    started "$pid" INT
    wait_port "$port" "pgbouncer ($name)" "$pid"
    PORT[$name]=$port
    PASS[$name]=$PGPASS
    PROC[$name]=$pid
}

# --- haproxy ---------------------------------------------------------------------------------

start_haproxy() {
    local dir=$WORK/haproxy port
    port=$(free_port)
    mkdir -p "$dir"
    cat >"$dir/haproxy.cfg" <<EOF
global
    maxconn 400

defaults
    mode tcp
    timeout connect 5s
    timeout client 10m
    timeout server 10m

listen postgres
    bind 127.0.0.1:$port
    server pg 127.0.0.1:$PGPORT
EOF
    haproxy -db -f "$dir/haproxy.cfg" >"$dir/haproxy.log" 2>&1 &
    local pid=$!
    started "$pid" TERM
    wait_port "$port" haproxy "$pid"
    PORT[haproxy]=$port
    PASS[haproxy]=$PGPASS
    PROC[haproxy]=$pid
}

# --- the gateway -----------------------------------------------------------------------------

start_gateway() {
    local name=$1 durability=$2 dir=$WORK/$1 port admin
    port=$(free_port)
    admin=$(free_port)
    mkdir -p "$dir"
    cat >"$dir/policy.toml" <<'EOF'
[[rule]]
id = "no-ddl"
class = "schema"
action = "deny"
reason = "schema changes go through migrations"

[[rule]]
id = "agents-read"
groups = ["agents"]
max_class = "read"
action = "allow"
mask_profile = "agent"
EOF
    cat >"$dir/masking.toml" <<EOF
key = "$(hex32)"
default_profile = "agent"

[[profile]]
name = "agent"
strategies = { email = "tokenize", card_number = { kind = "partial", keep_last = 4 } }
rules = [{ column = "*ssn*", strategy = "redact" }]
EOF
    printf 'k1 %s\n' "$(hex32)" >"$dir/chain.key"
    hex32 >"$dir/signing.key"
    : >"$dir/tokens.toml"
    cat >"$dir/gateway.toml" <<EOF
[admin]
listen = "127.0.0.1:$admin"
token = { env = "BENCH_ADMIN_TOKEN" }

[identity]
tokens_file = "tokens.toml"

[policy]
file = "policy.toml"

[masking]
file = "masking.toml"

[audit]
dir = "audit"
durability = "$durability"
chain_key_file = "chain.key"
signing_key_file = "signing.key"

[[target]]
name = "bench"
protocol = "postgres"
listen = "127.0.0.1:$port"
upstream = "127.0.0.1:$PGPORT"
database = "bench"
user = "bench"
password = { env = "BENCH_PG_PASSWORD" }
allow_plaintext_password = true
EOF
    local issued token
    issued=$(BENCH_ADMIN_TOKEN=x BENCH_PG_PASSWORD=x "$GW" --config "$dir/gateway.toml" \
        token issue --id bench-agent --subject bench-agent --group agents)
    # First line: the token (its last word); the rest: the entry for the tokens file.
    token=$(printf '%s\n' "$issued" | head -n1 | awk '{print $NF}')
    printf '%s\n' "$issued" | tail -n +2 >"$dir/tokens.toml"
    [ -n "$token" ] || die "token issue printed no token"
    BENCH_ADMIN_TOKEN=$(secret) BENCH_PG_PASSWORD=$PGPASS \
        "$GW" --config "$dir/gateway.toml" serve >"$dir/gateway.log" 2>&1 &
    local pid=$!
    started "$pid" TERM
    wait_port "$port" "gateway ($name)" "$pid"
    PORT[$name]=$port
    PASS[$name]=$token
    PROC[$name]=$pid
}

# --- one pgbench run ------------------------------------------------------------------------

# run_cell ROUND WORKLOAD PATH: one pgbench run; appends a line to $RESULTS.
run_cell() {
    local round=$1 workload=$2 path=$3 args=()
    case $workload in
    select-simple) args=(-S -M simple -c "$CLIENTS" -j "$THREADS") ;;
    select-extended) args=(-S -M extended -c "$CLIENTS" -j "$THREADS") ;;
    latency-1conn) args=(-S -M simple -c 1 -j 1) ;;
    wide-1000) args=(-f "$HERE/wide.sql" -M simple -c "$CLIENTS" -j "$THREADS") ;;
    *) die "unknown workload $workload" ;;
    esac
    local pid=${PROC[$path]:-} before=0 after=0 out status=ok
    [ -n "$pid" ] && before=$(cpu_ticks "$pid")
    # -n: no vacuum first (the gateway's policy allows reads only, and nothing is written).
    if ! out=$(PGPASSWORD=${PASS[$path]} PGSSLMODE=disable PGCONNECT_TIMEOUT=10 \
        "$PGBIN/pgbench" -n "${args[@]}" -T "$SECS" -h 127.0.0.1 -p "${PORT[$path]}" \
        -U bench bench 2>&1); then
        status=failed
        log "pgbench failed on $path/$workload (round $round):"
        printf '%s\n' "$out" | tail -n 5 >&2
    fi
    [ -n "$pid" ] && after=$(cpu_ticks "$pid")
    local tps lat txns cpu=""
    tps=$(printf '%s\n' "$out" | sed -n 's/^tps = \([0-9.]*\) (without initial connection time)$/\1/p')
    lat=$(printf '%s\n' "$out" | sed -n 's/^latency average = \([0-9.]*\) ms$/\1/p')
    txns=$(printf '%s\n' "$out" | sed -n 's/^number of transactions actually processed: \([0-9]*\).*$/\1/p')
    if [ "$status" = ok ] && { [ -z "$tps" ] || [ -z "$lat" ] || [ -z "$txns" ]; }; then
        status=unparsed
        log "could not read pgbench's output on $path/$workload:"
        printf '%s\n' "$out" | tail -n 5 >&2
    fi
    if [ "$status" = ok ] && printf '%s\n' "$out" | grep -q '^number of failed transactions: [1-9]'; then
        status=errors
        log "$path/$workload had failed transactions"
    fi
    if [ -n "$pid" ]; then
        cpu=$(python3 -c "print(($after - $before) / $CLK_TCK)")
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$workload" "$path" "${tps:-0}" \
        "${lat:-0}" "${txns:-0}" "$cpu" "$status" >>"$RESULTS"
    log "round $round  $(printf '%-16s %-17s' "$workload" "$path") tps ${tps:-?}  latency ${lat:-?} ms"
}

# --- the profile (PROFILE=1) -----------------------------------------------------------------

profile_gateway() {
    if ! perf record -e cpu-clock -o /dev/null -- true >/dev/null 2>&1; then
        log "perf record does not work here; no profile"
        return 0
    fi
    mkdir -p "$PROFILE_OUT"
    local path workload pid
    for path in gateway gateway-buffered; do
        pid=${PROC[$path]:-}
        [ -n "$pid" ] || continue
        for workload in $WORKLOADS; do
            log "profiling $path on $workload"
            # cpu-clock: a software timer, so it works in VMs without hardware counters.
            perf record -q -e cpu-clock -F 1999 -p "$pid" -o "$PROFILE_OUT/$path-$workload.data" \
                >/dev/null 2>&1 &
            local perf_pid=$!
            sleep 0.5
            run_cell profile "$workload" "$path"
            kill -INT "$perf_pid" 2>/dev/null || true
            wait "$perf_pid" 2>/dev/null || true
            perf report -i "$PROFILE_OUT/$path-$workload.data" --no-children \
                --sort symbol --percent-limit 0.3 --stdio 2>/dev/null \
                >"$PROFILE_OUT/$path-$workload.txt" || true
            log "  -> $PROFILE_OUT/$path-$workload.txt"
        done
    done
}

# --- main ------------------------------------------------------------------------------------

main() {
    install_missing
    build_gateway
    command -v setpriv >/dev/null || die "setpriv (util-linux) is needed"
    if is_root; then id postgres >/dev/null 2>&1 || die "no postgres user to run the servers as"; fi
    CLK_TCK=$(getconf CLK_TCK)

    WORK=$(mktemp -d /tmp/proxy-bench.XXXXXX)
    chmod 755 "$WORK"
    RESULTS=$WORK/results.tsv
    printf 'round\tworkload\tpath\ttps\tlatency_ms\ttransactions\tproxy_cpu_s\tstatus\n' >"$RESULTS"

    declare -gA PORT PASS PROC
    start_postgres
    PORT[direct]=$PGPORT
    PASS[direct]=$PGPASS
    local p
    for p in $PATHS; do
        case $p in
        direct) ;;
        pgbouncer) start_pgbouncer pgbouncer 65536 ;;
        pgbouncer-4k) start_pgbouncer pgbouncer-4k "" ;;
        haproxy) start_haproxy ;;
        gateway) start_gateway gateway fsync ;;
        gateway-buffered) start_gateway gateway-buffered buffered ;;
        *) die "unknown path $p" ;;
        esac
    done
    local paths=($PATHS) workloads=($WORKLOADS)
    log "listening: $(for p in "${paths[@]}"; do printf '%s=%s ' "$p" "${PORT[$p]}"; done)"

    if [ "$HOLD" = 1 ]; then
        # Everything is up: leave it running for profiling by hand until interrupted.
        {
            for p in "${paths[@]}"; do
                local v=${p//-/_}
                printf 'PORT_%s=%s\nPASS_%s=%q\nPID_%s=%s\n' "$v" "${PORT[$p]}" "$v" \
                    "${PASS[$p]}" "$v" "${PROC[$p]:-}"
            done
            printf 'PGBIN=%q\nWIDE_SQL=%q\nWORK=%q\n' "$PGBIN" "$HERE/wide.sql" "$WORK"
        } >"$HOLD_ENV"
        log "holding; the ports, passwords and PIDs are in $HOLD_ENV; stop with Ctrl-C or SIGTERM"
        while :; do
            sleep 3600 &
            STARTED+=("$! TERM")
            wait "$!" || true
        done
    fi

    local load_start rustc_start
    load_start=$(cut -d' ' -f1-3 /proc/loadavg)
    rustc_start=$(pgrep -c -x rustc || true)

    # Warm-up: one short run per path, so the first round does not pay for cold caches and
    # the gateway's first catalogue lookups.
    local saved=$SECS
    SECS=1
    for p in "${paths[@]}"; do run_cell 0 select-simple "$p"; done
    for p in "${paths[@]}"; do run_cell 0 wide-1000 "$p"; done
    SECS=$saved
    # The warm-up lines are not part of the results.
    printf 'round\tworkload\tpath\ttps\tlatency_ms\ttransactions\tproxy_cpu_s\tstatus\n' >"$RESULTS"

    local round w i n=${#paths[@]}
    for ((round = 1; round <= ROUNDS; round++)); do
        for w in "${workloads[@]}"; do
            # Round-robin over the paths, starting one further along each round.
            for ((i = 0; i < n; i++)); do
                run_cell "$round" "$w" "${paths[$(((i + round - 1) % n))]}"
            done
        done
    done

    local meta=$WORK/meta.env
    {
        echo "date=$(date -u '+%Y-%m-%d %H:%M UTC')"
        echo "rounds=$ROUNDS"
        echo "secs=$SECS"
        echo "clients=$CLIENTS"
        echo "threads=$THREADS"
        echo "machine=$(nproc) cores ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)), $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), Linux $(uname -r); audit directory on $(df -T "$WORK" | awk 'NR == 2 {print $2}')"
        echo "load_start=$load_start"
        echo "load_end=$(cut -d' ' -f1-3 /proc/loadavg)"
        echo "rustc_start=$rustc_start"
        echo "versions=PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}'), pgbouncer $(pgbouncer --version | awk 'NR == 1 {print $2}'), HAProxy $(haproxy -v | awk 'NR == 1 {print $3}'), pgbench scale $SCALE"
        echo "commit=$(cd "$ROOT" && git rev-parse --short HEAD)$(cd "$ROOT" && git diff --quiet HEAD -- crates examples || echo ' with uncommitted changes in crates/ or examples/')"
    } >"$meta"
    if [ -n "$KEEP_RAW" ]; then cp "$RESULTS" "$KEEP_RAW"; fi

    if [ "$WRITE_DOCS" = 1 ]; then
        python3 "$HERE/report.py" "$RESULTS" "$meta" "$DOC"
        log "wrote the summary into $DOC"
    else
        python3 "$HERE/report.py" "$RESULTS" "$meta" -
    fi

    if [ "$PROFILE" = 1 ]; then profile_gateway; fi
}

main "$@"
