#!/usr/bin/env bash
# Side-by-side HTTP proxy benchmark: a fixed-answer upstream directly, through haproxy in HTTP
# mode (a protocol-aware proxy that parses every request and response but changes nothing),
# and through wirewarden-gateway with identity, policy, streaming JSON masking and audit
# (fsync) all on. Interleaved round-robin in one run, because the machines this runs on are
# noisy; the ratio to direct is taken within each round and the median reported.
#
# Run by hand from anywhere (too slow for scripts/test.sh):
#
#     benches/http-bench.sh
#
# It installs haproxy when missing, builds the gateway and the benchmark's own load generator
# and upstream (benches/src/bin/http-load.rs, http-upstream.rs) in release mode, starts
# everything on free loopback ports, and writes the table into the "## Proxy comparison
# (HTTP)" section of docs/performance.md (only the generated block between its markers).
# Everything it starts is stopped and its temporary directory removed on exit.
#
# Paths:
#   direct            the upstream itself.
#   haproxy           haproxy 2.x, mode http, keep-alive both sides (http-reuse always).
#   gateway           wirewarden-gateway: a static bearer token (identity), a rule set that
#                     allows reads (policy), a mask profile with every detector on and e-mails
#                     tokenized (masking), audit with durability = fsync.
#   gateway-buffered  the same with durability = buffered (diagnostic: the cost of fdatasync).
#
# Workloads (GET, CONNS keep-alive connections, closed loop):
#   small             a ~300-byte JSON record with an e-mail, an SSN and a card number.
#   large             a ~45 KB JSON array of 250 such records (PII-dense).
#   clean             a ~40 KB JSON array with no sensitive values.
#
# Settings (environment): ROUNDS (3), SECS per cell (3), CONNS (16), PATHS, WORKLOADS,
# WRITE_DOCS (1; 0 leaves docs/performance.md alone).

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DOC=$ROOT/docs/performance.md
ROUNDS=${ROUNDS:-3}
SECS=${SECS:-3}
CONNS=${CONNS:-16}
PATHS=${PATHS:-"direct haproxy gateway gateway-buffered"}
WORKLOADS=${WORKLOADS:-"small large clean"}
WRITE_DOCS=${WRITE_DOCS:-1}

log() { printf '[http-bench %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

WORK=$(mktemp -d /tmp/http-bench.XXXXXX)
PIDS=()
cleanup() {
    local rc=$? p
    trap - EXIT INT TERM
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
hex32() { python3 -c 'import secrets; print(secrets.token_hex(32))'; }
wait_port() {
    local port=$1 what=$2 pid=$3 i
    for ((i = 0; i < 200; i++)); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
        kill -0 "$pid" 2>/dev/null || die "$what exited before listening"
        sleep 0.05
    done
    die "$what did not listen on $port"
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }

if ! command -v haproxy >/dev/null; then
    log "installing haproxy"
    if [ "$(id -u)" -eq 0 ]; then apt-get install -y -qq haproxy >/dev/null; else sudo apt-get install -y -qq haproxy >/dev/null; fi
fi

log "building the gateway, load generator and upstream (release)"
(cd "$ROOT" && cargo build --quiet --release -p wirewarden-gateway -p wirewarden-benches --bins)
BIN=$ROOT/target/release
GW=$BIN/wirewarden-gateway

declare -A PORT TOKEN PROC

UP_PORT=$(free_port)
"$BIN/http-upstream" "$UP_PORT" &
PIDS+=($!)
wait_port "$UP_PORT" upstream "$!"
PORT[direct]=$UP_PORT
TOKEN[direct]=none

start_haproxy() {
    local port dir=$WORK/haproxy
    port=$(free_port)
    mkdir -p "$dir"
    cat >"$dir/haproxy.cfg" <<EOF
global
    maxconn 4096
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    option http-keep-alive
    http-reuse always
frontend fe
    bind 127.0.0.1:$port
    default_backend be
backend be
    server up 127.0.0.1:$UP_PORT
EOF
    haproxy -db -f "$dir/haproxy.cfg" >"$dir/log" 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    wait_port "$port" haproxy "$pid"
    PORT[haproxy]=$port
    TOKEN[haproxy]=none
    PROC[haproxy]=$pid
}

start_gateway() {
    local name=$1 durability=$2 dir=$WORK/$1 port admin
    port=$(free_port)
    admin=$(free_port)
    mkdir -p "$dir"
    cat >"$dir/policy.toml" <<'EOF'
[[rule]]
id = "agents-read"
groups = ["agents"]
max_class = "read"
action = "allow"
EOF
    cat >"$dir/masking.toml" <<EOF
key = "$(hex32)"
default_profile = "agent"

[[profile]]
name = "agent"
strategies = { email = "tokenize", card_number = { kind = "partial", keep_last = 4 } }
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
name = "bench-api"
protocol = "http"
listen = "127.0.0.1:$port"
upstream = "http://127.0.0.1:$UP_PORT"
password = { env = "BENCH_API_KEY" }

[[target.route]]
method = "GET"
path = "/{kind}"
EOF
    local issued token
    issued=$(BENCH_ADMIN_TOKEN=x BENCH_API_KEY=x "$GW" --config "$dir/gateway.toml" \
        token issue --id bench-agent --subject bench-agent --group agents)
    token=$(printf '%s\n' "$issued" | head -n1 | awk '{print $NF}')
    printf '%s\n' "$issued" | tail -n +2 >"$dir/tokens.toml"
    [ -n "$token" ] || die "token issue printed no token"
    BENCH_ADMIN_TOKEN=$(hex32) BENCH_API_KEY=$(hex32) \
        "$GW" --config "$dir/gateway.toml" serve >"$dir/gateway.log" 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    wait_port "$port" "gateway ($name)" "$pid"
    PORT[$name]=$port
    TOKEN[$name]=$token
    PROC[$name]=$pid
}

for p in $PATHS; do
    case $p in
    direct) ;;
    haproxy) start_haproxy ;;
    gateway) start_gateway gateway fsync ;;
    gateway-buffered) start_gateway gateway-buffered buffered ;;
    *) die "unknown path $p" ;;
    esac
done

RESULTS=$WORK/results.tsv
: >"$RESULTS"
for ((round = 1; round <= ROUNDS; round++)); do
    for w in $WORKLOADS; do
        for p in $PATHS; do
            pid=${PROC[$p]:-}
            before=0
            [ -n "$pid" ] && before=$(cpu_ticks "$pid")
            out=$("$BIN/http-load" "http://127.0.0.1:${PORT[$p]}/$w" "$CONNS" "$SECS" \
                "authorization: Bearer ${TOKEN[$p]}")
            after=0
            [ -n "$pid" ] && after=$(cpu_ticks "$pid")
            # round workload path requests rps MB/s p50 p99 errors cpu_ticks
            printf '%s\t%s\t%s\t%s\t%s\n' "$round" "$w" "$p" "$out" "$((after - before))" >>"$RESULTS"
            log "round $round $w $p: $(printf '%s' "$out" | cut -f2) req/s, errors $(printf '%s' "$out" | cut -f6)"
        done
    done
done

META="versions=HAProxy $(haproxy -v | awk 'NR == 1 {print $3}'), $(nproc) cores, $CONNS connections, ${SECS}s x $ROUNDS rounds"
python3 - "$RESULTS" "$DOC" "$WRITE_DOCS" "$META" <<'PY'
import statistics, sys
from collections import defaultdict

results, doc, write, meta = sys.argv[1], sys.argv[2], sys.argv[3] == "1", sys.argv[4]
SECTION = "## Proxy comparison (HTTP)"
BEGIN = "<!-- http-bench:begin (generated by benches/http-bench.sh; edits inside are overwritten) -->"
END = "<!-- http-bench:end -->"
rows = [l.rstrip("\n").split("\t") for l in open(results) if l.strip()]
rps = defaultdict(dict)      # (round, workload) -> path -> rps
detail = defaultdict(list)   # (workload, path) -> [(rps, mbs, p50, p99, errors, cpu, requests)]
for r in rows:
    rnd, w, p, n, rate, mbs, p50, p99, err, cpu = r
    rps[(rnd, w)][p] = float(rate)
    detail[(w, p)].append((float(rate), float(mbs), int(p50), int(p99), int(err), int(cpu), int(n)))
paths = list(dict.fromkeys(r[2] for r in rows))
workloads = list(dict.fromkeys(r[1] for r in rows))
names = {"direct": "direct", "haproxy": "haproxy (HTTP mode)",
         "gateway": "**gateway (all on, audit fsync)**",
         "gateway-buffered": "gateway (audit buffered; diagnostic)"}
lines = [BEGIN, "", f"Median of rounds; ratio = the path's requests/s over direct's in the same round. {meta}.", ""]
lines.append("| workload | path | requests/s | ratio to direct | MB/s | p50 µs | p99 µs | proxy CPU µs/request | errors |")
lines.append("|---|---|---:|---:|---:|---:|---:|---:|---:|")
hz = 100
for w in workloads:
    for p in paths:
        d = detail[(w, p)]
        ratios = [v[p] / v["direct"] for (rnd, ww), v in rps.items() if ww == w and v.get("direct")]
        ratio = statistics.median(ratios) if ratios else float("nan")
        cpu_us = [c * 1e6 / hz / n for (_, _, _, _, _, c, n) in d if n] if p != "direct" else []
        lines.append("| {} | {} | {:,.0f} | {:.2f} | {:.1f} | {} | {} | {} | {} |".format(
            w, names.get(p, p), statistics.median(x[0] for x in d), ratio,
            statistics.median(x[1] for x in d), int(statistics.median(x[2] for x in d)),
            int(statistics.median(x[3] for x in d)),
            f"{statistics.median(cpu_us):.0f}" if cpu_us else "–", sum(x[4] for x in d)))
lines += ["", END]
block = "\n".join(lines)
print(block)
if write:
    text = open(doc).read()
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        text = head + block + tail
    else:
        text = text.rstrip("\n") + "\n\n" + SECTION + "\n\n" + block + "\n"
    open(doc, "w").write(text)
PY
