#!/usr/bin/env bash
# The wirewarden demo: the reference gateway in front of a real PostgreSQL, Redis and HTTP API, with an
# agent's session narrated step by step. Installs what is missing, starts throwaway servers
# with sample customer data, and removes everything when it ends. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/setup.sh

say() { printf '\n\033[1;36m%s\033[0m\n' "$*"; }
note() { printf '\033[2m   %s\033[0m\n' "$*"; }
run() { printf '\033[33m$ %s\033[0m\n' "$*"; "$@"; }

step "checking the machine"
ensure_system_packages
ensure_python_packages examples/agents/requirements.txt
step "building the gateway (first run: a few minutes)"
cargo build --quiet -p wirewarden-gateway
GW="$PWD/target/debug/wirewarden-gateway"

work=$(mktemp -d /tmp/wirewarden-demo.XXXXXX)
chmod 755 "$work"
PGBIN=$(pg_bindir)
GW_PID= REDIS_PID= API_PID=
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
cleanup() {
  [ -n "$GW_PID" ] && kill "$GW_PID" 2>/dev/null && wait "$GW_PID" 2>/dev/null
  [ -d "$work/pg/data" ] && as_pg "$PGBIN/pg_ctl" -D "$work/pg/data" -m immediate stop >/dev/null 2>&1
  [ -n "$REDIS_PID" ] && kill "$REDIS_PID" 2>/dev/null
  [ -n "$API_PID" ] && kill "$API_PID" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
secret() { python3 -c 'import secrets; print(secrets.token_hex(32))'; }

step "starting a throwaway PostgreSQL with sample customers"
PG_PORT=$(free_port)
UPSTREAM_PASSWORD=$(secret)
mkdir -p "$work/pg"
[ "$(id -u)" = 0 ] && chown postgres "$work/pg"
as_pg "$PGBIN/initdb" -D "$work/pg/data" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
  --no-sync --no-locale -E UTF8 >/dev/null
as_pg "$PGBIN/pg_ctl" -D "$work/pg/data" -l "$work/pg/log" -w \
  -o "-p $PG_PORT -k $work/pg -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null
psql_admin() { psql -X -q -v ON_ERROR_STOP=1 -h "$work/pg" -p "$PG_PORT" -U postgres "$@"; }
psql_admin -d postgres -c "CREATE ROLE wirewarden LOGIN PASSWORD '$UPSTREAM_PASSWORD'" \
  -c "CREATE DATABASE crm OWNER wirewarden"
psql_admin -d crm -c "SET ROLE wirewarden" -f - <<'SQL'
CREATE TABLE customers (id int PRIMARY KEY, name text, email text, phone text, ssn text, card text, plan text);
INSERT INTO customers VALUES
  (1, 'Ada Lovelace',   'ada@example.com',    '+1 415 555 0100', '123-45-6789', '4111 1111 1111 1111', 'pro'),
  (2, 'Alan Turing',    'alan@example.org',   '+1 212 555 0199', '234-56-7890', '5500 0000 0000 0004', 'team'),
  (3, 'Grace Hopper',   'grace@example.net',  '+1 617 555 0123', '345-67-8901', '3400 000000 00009',   'free'),
  (4, 'Katherine Johnson', 'kj@example.com',  '+1 757 555 0142', '456-78-9012', '6011 0000 0000 0004', 'pro');
CREATE TABLE notes (id serial PRIMARY KEY, customer int REFERENCES customers, body text);
SQL

step "starting a throwaway Redis with cached sessions"
REDIS_PORT=$(free_port)
REDIS_UPSTREAM_PASSWORD=$(secret)
mkdir -p "$work/redis"
cat >"$work/redis/redis.conf" <<CONF
bind 127.0.0.1
port $REDIS_PORT
save ""
appendonly no
dir $work/redis
user default on >$(secret) ~* &* +@all
user wirewarden on >$REDIS_UPSTREAM_PASSWORD ~* &* +@all
CONF
redis-server "$work/redis/redis.conf" >"$work/redis/log" 2>&1 &
REDIS_PID=$!
redis_admin() { redis-cli -p "$REDIS_PORT" --user wirewarden --pass "$REDIS_UPSTREAM_PASSWORD" --no-auth-warning "$@"; }
for _ in $(seq 100); do redis_admin PING >/dev/null 2>&1 && break; sleep 0.1; done
redis_admin SET session:1001 '{"customer": 1, "email": "ada@example.com", "card": "4111 1111 1111 1111", "cart": 3}' >/dev/null
redis_admin SET session:1002 '{"customer": 2, "email": "alan@example.org", "card": "5500 0000 0000 0004", "cart": 1}' >/dev/null

step "starting a throwaway billing API (HTTP) that wants its own API key"
API_PORT=$(free_port)
BILLING_API_KEY=$(secret)
DEMO_API_KEY="$BILLING_API_KEY" python3 scripts/lib/demo_api.py "$API_PORT" 2>"$work/api.log" &
API_PID=$!

step "writing the gateway's configuration"
cfg="$work/gw"
mkdir -p "$cfg"
printf 'k1 %s\n' "$(secret)" >"$cfg/chain.key"
secret >"$cfg/signing.key"
: >"$cfg/tokens.toml"
GW_PORT=$(free_port) GW_REDIS_PORT=$(free_port) GW_HTTP_PORT=$(free_port) ADMIN_PORT=$(free_port)
cat >"$cfg/gateway.toml" <<TOML
[admin]
listen = "127.0.0.1:$ADMIN_PORT"
token = { env = "WIREWARDEN_ADMIN_TOKEN" }

[identity]
tokens_file = "tokens.toml"

[policy]
file = "policy.toml"

[masking]
file = "masking.toml"

[audit]
dir = "audit"
durability = "fsync"
chain_key_file = "chain.key"
signing_key_file = "signing.key"
mask_commands = true   # what agents send is masked in the trail too

[[target]]
name = "crm"
protocol = "postgres"
listen = "127.0.0.1:$GW_PORT"
upstream = "127.0.0.1:$PG_PORT"
database = "crm"
user = "wirewarden"
password = { env = "CRM_PASSWORD" }
allow_plaintext_password = true   # loopback demo only: real deployments set tls_cert/tls_key

[[target]]
name = "sessions"
protocol = "redis"
listen = "127.0.0.1:$GW_REDIS_PORT"
upstream = "127.0.0.1:$REDIS_PORT"
user = "wirewarden"
password = { env = "REDIS_PASSWORD" }

[[target]]
name = "billing-api"
protocol = "http"
listen = "127.0.0.1:$GW_HTTP_PORT"
upstream = "http://127.0.0.1:$API_PORT"
password = { env = "BILLING_API_KEY" }   # sent upstream as "Authorization: Bearer ..."

[[target.route]]
method = "GET"
path = "/customers"

[[target.route]]
method = "GET"
path = "/customers/{id}"

[[target.route]]
method = "DELETE"
path = "/customers/{id}"
TOML
cat >"$cfg/policy.toml" <<'TOML'
[[rule]]
id = "no-api-deletes"
protocols = ["http"]
verbs = ["DELETE"]
action = "deny"
reason = "customers are deleted by the billing team, not by agents"

[[rule]]
id = "no-ddl"
class = "schema"
action = "deny"
reason = "schema changes go through migrations"

[[rule]]
id = "support-read"
groups = ["support"]
max_class = "read"
action = "allow"
mask_profile = "support"

[[rule]]
id = "writes-need-a-dba"
groups = ["support"]
max_class = "write"
action = "review"
reviewers = ["dba"]
timeout = "2m"
TOML
cat >"$cfg/masking.toml" <<TOML
key = "$(secret)"
default_profile = "support"

[[profile]]
name = "support"
strategies = { card_number = { kind = "partial", keep_last = 4 }, email = "tokenize" }
TOML
export WIREWARDEN_ADMIN_TOKEN=$(secret) CRM_PASSWORD="$UPSTREAM_PASSWORD" REDIS_PASSWORD="$REDIS_UPSTREAM_PASSWORD" BILLING_API_KEY
issued=$("$GW" -c "$cfg/gateway.toml" token issue --id support-agent --subject support-agent --group support)
AGENT_TOKEN=$(printf '%s\n' "$issued" | head -n 1 | awk '{print $NF}')
printf '%s\n' "$issued" | tail -n +2 >"$cfg/tokens.toml"
note "issued a token for support-agent; tokens.toml stores only its hash"

step "starting the gateway"
"$GW" -c "$cfg/gateway.toml" serve 2>"$work/gateway.log" &
GW_PID=$!
for port in "$GW_PORT" "$GW_REDIS_PORT" "$GW_HTTP_PORT" "$ADMIN_PORT" "$API_PORT"; do
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
done
agent_psql() { PGPASSWORD="$AGENT_TOKEN" PGSSLMODE=disable psql -X -h 127.0.0.1 -p "$GW_PORT" -U support-agent -d crm "$@"; }

say "1. The agent reads customers through the gateway. It logs in with its own token; the"
say "   gateway logs in upstream with a password the agent never sees, and masks what comes back."
run agent_psql -c "SELECT id, name, email, phone, ssn, card FROM customers ORDER BY id"
note "for comparison, the same rows read directly by the table's owner:"
PGPASSWORD="$UPSTREAM_PASSWORD" psql -X -h 127.0.0.1 -p "$PG_PORT" -U wirewarden -d crm \
  -c "SELECT id, email, ssn, card FROM customers ORDER BY id LIMIT 2"

say "2. The agent tries to drop the table. Policy refuses it, and the same session carries on."
run agent_psql -c "DROP TABLE customers" -c "SELECT count(*) AS customers_still_there FROM customers" || true

say "3. The agent writes a note (with the card number the customer read out). Writes need a"
say "   DBA: the statement is held for review, and the reviewer sees exactly what was sent..."
agent_psql -c "INSERT INTO notes (customer, body) VALUES (1, 'refund to card 4111 1111 1111 1111')" \
  -c "SELECT id, customer, body FROM notes" >"$work/held.out" 2>&1 &
writer=$!
review=
for _ in $(seq 100); do
  review=$("$GW" -c "$cfg/gateway.toml" review list | python3 -c 'import json,sys; r=json.load(sys.stdin)["reviews"]; print(r[0]["id"] if r else "")')
  [ -n "$review" ] && break
  sleep 0.2
done
run "$GW" -c "$cfg/gateway.toml" review list
say "   ...and a DBA approves it from the CLI (the agent could not approve its own command)."
run "$GW" -c "$cfg/gateway.toml" review approve "$review" --as dba-alice --group dba >/dev/null
wait "$writer" || true
cat "$work/held.out"

agent_redis() { redis-cli -p "$GW_REDIS_PORT" --user support-agent --pass "$AGENT_TOKEN" --no-auth-warning "$@"; }
say "4. The agent reads a cached session from Redis through the gateway: masked too. Commands"
say "   that reach beyond the keys they name, or administer the server, are refused in order."
run agent_redis GET session:1001
run agent_redis CONFIG GET maxmemory || true
run agent_redis KEYS '*' || true
note "directly, for comparison:"
redis_admin GET session:1001

agent_http() { curl -sS --compressed -H "Authorization: Bearer $AGENT_TOKEN" "$@"; echo; }
say "5. The agent calls the billing API over HTTP with the same token. The gateway swaps it for"
say "   the API's own key, and masks the JSON (gzip-compressed by the API) before it leaves."
run agent_http "http://127.0.0.1:$GW_HTTP_PORT/customers/1"
note "directly, with the API key only the gateway holds:"
curl -sS --compressed -H "Authorization: Bearer $BILLING_API_KEY" "http://127.0.0.1:$API_PORT/customers/1"; echo
say "   Deleting a customer is refused with a JSON 403; a path no route describes is refused too."
run agent_http -X DELETE "http://127.0.0.1:$GW_HTTP_PORT/customers/2"
run agent_http "http://127.0.0.1:$GW_HTTP_PORT/admin/export"

say "6. An AI agent built with the OpenAI Agents SDK (offline, scripted model) uses the same"
say "   gateway for both. Each tool call tells the gateway its run and tool-call id."
run python3 examples/agents/agent.py --pg-port "$GW_PORT" --pg-database crm --sslmode disable \
  --pg-token "$AGENT_TOKEN" --redis-port "$GW_REDIS_PORT" --redis-token "$AGENT_TOKEN"

say "7. The audit trail: every session, decision and outcome, hash-chained and signed. The"
say "   gateway stops first: it ends the sessions, flushes the trail and closes it with a signed"
say "   checkpoint. An auditor then checks the trail offline, with the keys alone."
kill "$GW_PID" && wait "$GW_PID" 2>/dev/null || true
GW_PID=
run "$GW" -c "$cfg/gateway.toml" audit verify
session=$("$GW" -c "$cfg/gateway.toml" audit export --format jsonl | python3 -c '
import json, sys
events = [json.loads(l) for l in sys.stdin]
print(next(e["session"] for e in events if e["type"] == "session_started" and "call=call_lookup" in (e.get("application") or "")))')
say "   Replay of the agent's lookup, exactly as the agent saw it:"
run "$GW" -c "$cfg/gateway.toml" audit replay "$session"
say "   What agents sent is in the trail masked too (mask_commands): the held INSERT as recorded,"
say "   its digest keyed so a masked card number cannot be guessed back from it:"
"$GW" -c "$cfg/gateway.toml" audit export --format jsonl | python3 -c '
import json, sys
for line in sys.stdin:
    e = json.loads(line)
    if e["type"] == "command_decided" and e["command"]["verb"] == "INSERT":
        print("   " + e["command"]["text"])
        print("   digest " + e["command"]["digest"])
        break'

say "Done. Everything above ran against real servers; they are removed now."
