#!/usr/bin/env bash
# Every check wirewarden has: formatting, lints, the whole test suite against real servers,
# documentation, a short run of every fuzz target, and the dependency policy.
# On a fresh machine it first installs what is missing. Exits non-zero on any failure.
#
#   WIREWARDEN_FUZZ_SECONDS   seconds per fuzz target (default 10)
#   WIREWARDEN_PRUNE_BUILDS   when 1, a build is deleted once no later step needs it (CI sets it)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/setup.sh

FUZZ_SECONDS=${WIREWARDEN_FUZZ_SECONDS:-10}
PRUNE_BUILDS=${WIREWARDEN_PRUNE_BUILDS:-0}
started=$(date +%s)

step "checking the machine"
ensure_system_packages
ensure_cargo_tool cargo-fuzz 0.13.2
ensure_cargo_tool cargo-deny 0.20.2
ensure_python_packages scripts/requirements-test.txt
ensure_npm_packages crates/wirewarden-testkit/oidc

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets --all-features -- -D warnings

step "each proxy feature builds alone; a Redis-only build has no Postgres, SQL or hyper code"
for features in redis postgres http; do
  echo "--- wirewarden --no-default-features --features $features"
  cargo clippy --quiet -p wirewarden --no-default-features --features "$features" --all-targets -- -D warnings
done
redis_only=$(cargo tree -p wirewarden --no-default-features --features redis -e normal --prefix none)
forbidden=$(awk '{print $1}' <<<"$redis_only" | sort -u |
  grep -xE 'hyper|hyper-util|tokio-postgres|postgres-protocol|wirewarden-postgres|wirewarden-sql' || true)
if [ -n "$forbidden" ]; then
  echo "a Redis-only wirewarden depends on:" $forbidden
  cargo tree -p wirewarden --no-default-features --features redis -e normal \
    $(printf -- '-i %s ' $forbidden) 2>/dev/null || true
  exit 1
fi

step "cargo test (unit, property, integration against real servers, doctests)"
cargo test --workspace --all-features

step "the generated Redis command table matches a real redis-server"
python3 crates/wirewarden-redis/tools/gen_command_table.py --check

step "cargo doc (warnings are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet

step "fuzz smoke: every target for ${FUZZ_SECONDS}s"
(
  cd fuzz
  rm -f target/.rustc_info.json  # a cached failed compiler probe breaks later builds
  cargo fuzz build -s none
  scratch=$(mktemp -d)
  trap 'rm -rf "$scratch"' EXIT
  for target in $(cargo fuzz list); do
    echo "--- $target"
    mkdir -p "$scratch/$target" "corpus/$target"
    # New inputs go to the scratch directory; the committed seed corpus stays as it is.
    log="$scratch/$target.log"
    if ! cargo fuzz run -s none "$target" "$scratch/$target" "corpus/$target" -- \
      -max_total_time="$FUZZ_SECONDS" -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
      tail -n 60 "$log"
      echo "fuzz target $target failed"
      exit 1
    fi
    grep -E '^stat::number_of_executed_units' "$log" || tail -n 3 "$log"
  done
)
if [ "$PRUNE_BUILDS" = 1 ]; then
  echo "--- pruning the fuzz build ($(du -sh fuzz/target | cut -f1))"
  rm -rf fuzz/target
fi

step "scripts/demo.sh (the README's main command) runs clean"
demo_log=$(mktemp)
if ! bash scripts/demo.sh >"$demo_log" 2>&1; then
  tail -n 80 "$demo_log"
  echo "scripts/demo.sh failed"
  exit 1
fi
grep -E '^OK: .*, [1-9][0-9]* checkpoints?' "$demo_log"  # verified, and closed by a signed checkpoint
rm -f "$demo_log"

step "cargo deny check bans licenses sources"
cargo deny --log-level error check bans licenses sources

echo
echo "build output: $(du -sh target | cut -f1) in target/; $(df -h --output=avail . | tail -n 1 | tr -d ' ') free"
echo "all checks passed in $(( $(date +%s) - started ))s"
