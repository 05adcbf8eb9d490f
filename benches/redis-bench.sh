#!/usr/bin/env bash
# Side-by-side Redis proxy benchmark: redis-server directly, through twemproxy (nutcracker),
# through haproxy as a plain TCP relay, and through wirewarden-gateway with identity, policy,
# masking and audit (fsync) all on. Interleaved in one run, because the machines this runs on
# are noisy.
#
# Run by hand from anywhere (it is too slow for scripts/test.sh):
#
#     benches/redis-bench.sh
#
# It installs what is missing (Debian packages redis-server, redis-tools, nutcracker,
# haproxy), builds the gateway in release mode, starts a throwaway redis-server and the
# proxies on free loopback ports, runs every workload over every path round-robin for ROUNDS
# rounds, one request at a time per connection and pipelined (-P 16), and writes the ratios to
# direct into the "## Proxy comparison (Redis)" section of docs/performance.md (only the
# generated block between its markers is replaced). Everything it starts is stopped and every
# temporary directory removed on exit, whatever the exit. The default run takes about eight
# minutes on two shared cores, plus the gateway's build.
#
# Paths (each a separate listener in front of the same server):
#   direct            redis-server itself, ACL user `bench` (AUTH bench <password>).
#   twemproxy         nutcracker 0.5 with `redis_auth`. Twemproxy knows only the one-argument
#                     AUTH (`requirepass`), not ACL users: it checks the client's password
#                     itself and logs in upstream with the same password, which Redis 6+
#                     takes as the `default` user's. So on this path clients and twemproxy
#                     use the default user (given the same rights as `bench`). One server in
#                     the pool, so nothing is sharded; MSET is split into per-key SETs by
#                     twemproxy anyway (it fragments multi-key commands).
#   haproxy           haproxy in TCP mode (no protocol awareness; AUTH end to end).
#   gateway           wirewarden-gateway: a static token in AUTH (identity), the built-in Redis
#                     deny rules plus a rule allowing reads and writes with a mask profile
#                     (policy), every detector on and a key rule (masking: every reply value
#                     is scanned), and the audit trail with durability = fsync (the intent of
#                     every command is on disk before it is forwarded). Upstream it logs in
#                     as the ACL user `bench`.
#   gateway-buffered  the same gateway with durability = buffered: a diagnostic path that
#                     separates the cost of waiting for fdatasync from the rest.
#   gateway-base      (not in the default PATHS) the gateway configuration of `gateway`
#                     served by another build, BASE_BIN (described by BASE_FROM): a change
#                     measured against its baseline in the same interleaved run. With
#                     BASE_DURABILITY=buffered it is `gateway-buffered`'s configuration instead.
#
# Workloads (redis-benchmark -t names; each run once with one command in flight per
# connection and once with -P 16): set, get, incr, lpush, lrange_100 (LRANGE of the first
# 100 elements of a list redis-benchmark fills first; its fill step is not reported), mset
# (10 keys). 3-byte values (redis-benchmark's default), CLIENTS connections.
#
# Settings (environment): ROUNDS (3), REQUESTS per plain cell (20000), PREQUESTS per
# pipelined cell (100000; lrange_100 runs a quarter of either), CLIENTS (50), PIPELINE (16),
# PATHS, WORKLOADS and MODES (space-separated subsets of the names above; modes: plain,
# pipelined), WRITE_DOCS (1; 0 leaves docs/performance.md alone), GATEWAY_BIN (skip the build
# and use this binary) and GATEWAY_FROM (what that binary was built from, for the report;
# default: this checkout's commit), CELL_TIMEOUT (seconds one redis-benchmark run may take, 120), PROFILE
# (0; 1 also records a perf cpu-clock profile of the gateway for every workload and mode after
# the comparison, into PROFILE_OUT, default /tmp/redis-bench-profile), KEEP_RAW (a path to
# copy the raw results table to), HOLD (1: start everything, write the ports, passwords and
# PIDs to HOLD_ENV, default /tmp/redis-bench-hold.env, and wait until interrupted, for
# profiling by hand).

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HERE=$ROOT/benches/redis
DOC=$ROOT/docs/performance.md

ROUNDS=${ROUNDS:-3}
REQUESTS=${REQUESTS:-20000}
PREQUESTS=${PREQUESTS:-100000}
CLIENTS=${CLIENTS:-50}
PIPELINE=${PIPELINE:-16}
PATHS=${PATHS:-"direct twemproxy haproxy gateway gateway-buffered"}
WORKLOADS=${WORKLOADS:-"set get incr lpush lrange_100 mset"}
MODES=${MODES:-"plain pipelined"}
WRITE_DOCS=${WRITE_DOCS:-1}
CELL_TIMEOUT=${CELL_TIMEOUT:-120}
PROFILE=${PROFILE:-0}
PROFILE_OUT=${PROFILE_OUT:-/tmp/redis-bench-profile}
GATEWAY_BIN=${GATEWAY_BIN:-}
GATEWAY_FROM=${GATEWAY_FROM:-}
BASE_BIN=${BASE_BIN:-}
BASE_FROM=${BASE_FROM:-}
BASE_DURABILITY=${BASE_DURABILITY:-fsync}
KEEP_RAW=${KEEP_RAW:-}
HOLD=${HOLD:-0}
HOLD_ENV=${HOLD_ENV:-/tmp/redis-bench-hold.env}

log() { printf '[redis-bench %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
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

install_missing() {
    local missing=()
    command -v redis-server >/dev/null || missing+=(redis-server)
    command -v redis-benchmark >/dev/null || missing+=(redis-tools)
    command -v redis-cli >/dev/null || missing+=(redis-tools)
    command -v nutcracker >/dev/null || missing+=(nutcracker)
    command -v haproxy >/dev/null || missing+=(haproxy)
    command -v python3 >/dev/null || missing+=(python3)
    if [ "$PROFILE" = 1 ] && ! command -v perf >/dev/null; then missing+=(linux-perf); fi
    if ((${#missing[@]} == 0)); then return; fi
    # shellcheck disable=SC2207
    missing=($(printf '%s\n' "${missing[@]}" | sort -u))
    log "installing ${missing[*]}"
    local sudo=()
    is_root || sudo=(sudo)
    "${sudo[@]}" apt-get update -qq || log "apt-get update failed; trying the install anyway"
    # policy-rc.d (containers) or not: the packaged services are never needed, only binaries.
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

# --- redis-server ----------------------------------------------------------------------------

start_redis() {
    local dir=$WORK/redis
    mkdir -p "$dir"
    REDIS_PORT=$(free_port)
    BENCH_PASS=$(secret)
    DEFAULT_PASS=$(secret)
    # Persistence off: this measures the relays, not the server's disk. Both users get every
    # right the workloads need and nothing is shared between the paths but the keyspace.
    cat >"$dir/redis.conf" <<EOF
bind 127.0.0.1
port $REDIS_PORT
dir $dir
save ""
appendonly no
protected-mode yes
maxclients 1000
user default on >$DEFAULT_PASS ~* &* +@all
user bench on >$BENCH_PASS ~* &* +@all
EOF
    redis-server "$dir/redis.conf" >"$dir/redis.log" 2>&1 &
    local pid=$!
    started "$pid" TERM
    wait_port "$REDIS_PORT" redis-server "$pid"
    local i
    for ((i = 0; i < 100; i++)); do
        if redis-cli -p "$REDIS_PORT" --user bench --pass "$BENCH_PASS" --no-auth-warning \
            PING 2>/dev/null | grep -q PONG; then
            break
        fi
        sleep 0.1
    done
    REDIS_PID=$pid
    log "redis-server on 127.0.0.1:$REDIS_PORT"
}

# --- twemproxy -------------------------------------------------------------------------------

start_twemproxy() {
    local dir=$WORK/twemproxy port stats
    port=$(free_port)
    stats=$(free_port)
    mkdir -p "$dir"
    cat >"$dir/nutcracker.yml" <<EOF
bench:
  listen: 127.0.0.1:$port
  hash: fnv1a_64
  distribution: ketama
  redis: true
  redis_auth: $DEFAULT_PASS
  preconnect: true
  auto_eject_hosts: false
  server_connections: 1
  timeout: 10000
  servers:
   - 127.0.0.1:$REDIS_PORT:1
EOF
    nutcracker -t -c "$dir/nutcracker.yml" >"$dir/check.log" 2>&1 || {
        cat "$dir/check.log" >&2
        die "nutcracker rejected its configuration"
    }
    nutcracker -c "$dir/nutcracker.yml" -s "$stats" -a 127.0.0.1 -o "$dir/nutcracker.log" \
        -v 4 &
    local pid=$!
    started "$pid" TERM
    wait_port "$port" twemproxy "$pid"
    PORT[twemproxy]=$port
    USER[twemproxy]=""
    PASS[twemproxy]=$DEFAULT_PASS
    PROC[twemproxy]=$pid
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

listen redis
    bind 127.0.0.1:$port
    server redis 127.0.0.1:$REDIS_PORT
EOF
    haproxy -db -f "$dir/haproxy.cfg" >"$dir/haproxy.log" 2>&1 &
    local pid=$!
    started "$pid" TERM
    wait_port "$port" haproxy "$pid"
    PORT[haproxy]=$port
    USER[haproxy]=bench
    PASS[haproxy]=$BENCH_PASS
    PROC[haproxy]=$pid
}

# --- the gateway -----------------------------------------------------------------------------

start_gateway() {
    local name=$1 durability=$2 bin=${3:-$GW} dir=$WORK/$1 port admin
    port=$(free_port)
    admin=$(free_port)
    mkdir -p "$dir"
    # The built-in Redis deny rules come first (policy.redis_defaults, on by default); then
    # reads and writes are allowed with a mask profile. Every benchmarked command is a read
    # or a write; redis-benchmark's start-up CONFIG GET is denied, as it should be.
    cat >"$dir/policy.toml" <<'EOF'
[[rule]]
id = "agents-cache"
groups = ["agents"]
protocols = ["redis"]
max_class = "write"
action = "allow"
mask_profile = "agent"
EOF
    cat >"$dir/masking.toml" <<EOF
key = "$(hex32)"
default_profile = "agent"

[[profile]]
name = "agent"
strategies = { email = "tokenize", card_number = { kind = "partial", keep_last = 4 } }
rules = [{ redis_key = "secret:*", strategy = "redact" }]
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
name = "cache"
protocol = "redis"
listen = "127.0.0.1:$port"
upstream = "127.0.0.1:$REDIS_PORT"
user = "bench"
password = { env = "BENCH_REDIS_PASSWORD" }
EOF
    local issued token
    issued=$(BENCH_ADMIN_TOKEN=x BENCH_REDIS_PASSWORD=x "$bin" --config "$dir/gateway.toml" \
        token issue --id bench-agent --subject bench-agent --group agents)
    # First line: the token (its last word); the rest: the entry for the tokens file.
    token=$(printf '%s\n' "$issued" | head -n1 | awk '{print $NF}')
    printf '%s\n' "$issued" | tail -n +2 >"$dir/tokens.toml"
    [ -n "$token" ] || die "token issue printed no token"
    BENCH_ADMIN_TOKEN=$(secret) BENCH_REDIS_PASSWORD=$BENCH_PASS \
        "$bin" --config "$dir/gateway.toml" serve >"$dir/gateway.log" 2>&1 &
    local pid=$!
    started "$pid" TERM
    wait_port "$port" "gateway ($name)" "$pid"
    PORT[$name]=$port
    USER[$name]=bench-agent
    PASS[$name]=$token
    PROC[$name]=$pid
}

# --- one redis-benchmark run ------------------------------------------------------------------

# The test name redis-benchmark prints in its CSV for a -t name.
csv_name() {
    case $1 in
    set) echo SET ;;
    get) echo GET ;;
    incr) echo INCR ;;
    lpush) echo LPUSH ;;
    lrange_100) echo "LRANGE_100 (first 100 elements)" ;;
    mset) echo "MSET (10 keys)" ;;
    *) die "unknown workload $1" ;;
    esac
}

# run_cell ROUND MODE WORKLOAD PATH: one redis-benchmark run; appends a line to $RESULTS.
run_cell() {
    local round=$1 mode=$2 workload=$3 path=$4 args=() n
    case $mode in
    plain) n=$REQUESTS ;;
    pipelined)
        n=$PREQUESTS
        args=(-P "$PIPELINE")
        ;;
    *) die "unknown mode $mode" ;;
    esac
    # LRANGE_100 moves 100 elements per request, and redis-benchmark first fills the list
    # with as many LPUSHes as it will run LRANGEs.
    if [ "$workload" = lrange_100 ]; then n=$((n / 4)); fi
    local auth=(-a "${PASS[$path]}")
    if [ -n "${USER[$path]}" ]; then auth=(--user "${USER[$path]}" -a "${PASS[$path]}"); fi
    local pid=${PROC[$path]:-} before=0 after=0 out status=ok
    [ -n "$pid" ] && before=$(cpu_ticks "$pid")
    if ! out=$(timeout "$CELL_TIMEOUT" redis-benchmark -h 127.0.0.1 -p "${PORT[$path]}" \
        "${auth[@]}" -c "$CLIENTS" -n "$n" -t "$workload" "${args[@]}" --csv 2>&1); then
        status=failed
        log "redis-benchmark failed on $path/$mode/$workload (round $round):"
        printf '%s\n' "$out" | tail -n 5 >&2
    fi
    [ -n "$pid" ] && after=$(cpu_ticks "$pid")
    local test rps="" p50="" cpu=""
    test=$(csv_name "$workload")
    # "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms",...
    rps=$(printf '%s\n' "$out" | awk -F'","' -v t="\"$test" '$1 == t {print $2}')
    p50=$(printf '%s\n' "$out" | awk -F'","' -v t="\"$test" '$1 == t {print $5}')
    if [ "$status" = ok ] && { [ -z "$rps" ] || [ -z "$p50" ]; }; then
        status=unparsed
        log "could not read redis-benchmark's output on $path/$mode/$workload:"
        printf '%s\n' "$out" | tail -n 5 >&2
    fi
    if [ "$status" = ok ] && printf '%s\n' "$out" | grep -q 'Error from server\|NOAUTH\|WRONGPASS'; then
        status=errors
        log "$path/$mode/$workload reported errors:"
        printf '%s\n' "$out" | grep 'Error from server\|NOAUTH\|WRONGPASS' | head -n 3 >&2
    fi
    if [ -n "$pid" ]; then
        cpu=$(python3 -c "print(($after - $before) / $CLK_TCK)")
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$mode" "$workload" "$path" \
        "${rps:-0}" "${p50:-0}" "$n" "$cpu" "$status" >>"$RESULTS"
    log "round $round  $(printf '%-9s %-10s %-16s' "$mode" "$workload" "$path") ops/s ${rps:-?}  p50 ${p50:-?} ms"
}

# --- the profile (PROFILE=1) -----------------------------------------------------------------

profile_gateway() {
    if ! perf record -e cpu-clock -o /dev/null -- true >/dev/null 2>&1; then
        log "perf record does not work here; no profile"
        return 0
    fi
    mkdir -p "$PROFILE_OUT"
    local path mode workload pid
    for path in gateway gateway-buffered; do
        pid=${PROC[$path]:-}
        [ -n "$pid" ] || continue
        for mode in $MODES; do
            for workload in $WORKLOADS; do
                local out=$PROFILE_OUT/$path-$mode-$workload
                log "profiling $path on $mode $workload"
                # cpu-clock: a software timer, so it works in VMs without hardware counters.
                perf record -q -g -e cpu-clock -F 1999 -p "$pid" -o "$out.data" >/dev/null 2>&1 &
                local perf_pid=$!
                sleep 0.5
                run_cell profile "$mode" "$workload" "$path"
                kill -INT "$perf_pid" 2>/dev/null || true
                wait "$perf_pid" 2>/dev/null || true
                perf report -i "$out.data" --no-children --sort symbol --percent-limit 0.3 \
                    --stdio -g none 2>/dev/null >"$out.txt" || true
                log "  -> $out.txt"
            done
        done
    done
}

# --- main ------------------------------------------------------------------------------------

main() {
    install_missing
    build_gateway
    CLK_TCK=$(getconf CLK_TCK)

    WORK=$(mktemp -d /tmp/redis-bench.XXXXXX)
    RESULTS=$WORK/results.tsv
    local header='round\tmode\tworkload\tpath\trps\tp50_ms\trequests\tproxy_cpu_s\tstatus\n'
    # shellcheck disable=SC2059
    printf "$header" >"$RESULTS"

    declare -gA PORT USER PASS PROC
    start_redis
    PORT[direct]=$REDIS_PORT
    USER[direct]=bench
    PASS[direct]=$BENCH_PASS
    local p
    for p in $PATHS; do
        case $p in
        direct) ;;
        twemproxy) start_twemproxy ;;
        haproxy) start_haproxy ;;
        gateway) start_gateway gateway fsync ;;
        gateway-buffered) start_gateway gateway-buffered buffered ;;
        gateway-base)
            [ -x "$BASE_BIN" ] || die "path gateway-base needs BASE_BIN, an executable gateway"
            start_gateway gateway-base "$BASE_DURABILITY" "$BASE_BIN"
            ;;
        *) die "unknown path $p" ;;
        esac
    done
    local paths=($PATHS) workloads=($WORKLOADS) modes=($MODES)
    log "listening: $(for p in "${paths[@]}"; do printf '%s=%s ' "$p" "${PORT[$p]}"; done)"

    if [ "$HOLD" = 1 ]; then
        # Everything is up: leave it running for profiling by hand until interrupted.
        {
            for p in "${paths[@]}"; do
                local v=${p//-/_}
                printf 'PORT_%s=%s\nUSER_%s=%q\nPASS_%s=%q\nPID_%s=%s\n' "$v" "${PORT[$p]}" \
                    "$v" "${USER[$p]}" "$v" "${PASS[$p]}" "$v" "${PROC[$p]:-}"
            done
            printf 'PID_redis=%s\nWORK=%q\n' "$REDIS_PID" "$WORK"
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

    # Warm-up: one short run per path, so the first round does not pay for cold caches, the
    # gateway's first connections and the audit trail's first segment.
    local saved=$REQUESTS
    REQUESTS=2000
    for p in "${paths[@]}"; do run_cell 0 plain get "$p"; done
    REQUESTS=$saved
    # shellcheck disable=SC2059
    printf "$header" >"$RESULTS"

    local round m w i n=${#paths[@]}
    for ((round = 1; round <= ROUNDS; round++)); do
        for m in "${modes[@]}"; do
            for w in "${workloads[@]}"; do
                # Round-robin over the paths, starting one further along each round.
                for ((i = 0; i < n; i++)); do
                    run_cell "$round" "$m" "$w" "${paths[$(((i + round - 1) % n))]}"
                done
            done
        done
    done

    local meta=$WORK/meta.env
    {
        echo "date=$(date -u '+%Y-%m-%d %H:%M UTC')"
        echo "rounds=$ROUNDS"
        echo "requests=$REQUESTS"
        echo "prequests=$PREQUESTS"
        echo "clients=$CLIENTS"
        echo "pipeline=$PIPELINE"
        echo "machine=$(nproc) cores ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)), $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), Linux $(uname -r); audit directory on $(df -T "$WORK" | awk 'NR == 2 {print $2}')"
        echo "base=${BASE_FROM:-$BASE_BIN}"
        echo "base_durability=$BASE_DURABILITY"
        echo "load_start=$load_start"
        echo "load_end=$(cut -d' ' -f1-3 /proc/loadavg)"
        echo "rustc_start=$rustc_start"
        echo "versions=Redis $(redis-server --version | sed -n 's/.* v=\([^ ]*\).*/\1/p'), twemproxy $(nutcracker --version 2>&1 | sed -n 's/.*nutcracker-\([^ ]*\).*/\1/p' | head -n1), HAProxy $(haproxy -v | awk 'NR == 1 {print $3}')"
        if [ -n "$GATEWAY_FROM" ]; then
            echo "commit=$GATEWAY_FROM"
        else
            echo "commit=$(cd "$ROOT" && git rev-parse --short HEAD)$(cd "$ROOT" && git diff --quiet HEAD -- crates examples || echo ' with uncommitted changes in crates/ or examples/')"
        fi
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
