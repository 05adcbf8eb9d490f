//! Classifier throughput: every statement a Postgres client sends is lexed, split and
//! classified before policy sees it.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use wirewarden_sql::{Classifier, LexOptions, split, tokenize};

/// What an application and an agent typically send: ORM reads with joins, parameterised
/// writes, transaction control, session settings, the odd CTE and DDL.
const MIX: &[&str] = &[
    "SELECT u.id, u.email, u.created_at FROM users u WHERE u.id = $1",
    "SELECT o.id, o.total, c.name FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.status = $1 AND o.created_at > $2 ORDER BY o.created_at DESC LIMIT 50",
    "INSERT INTO events (id, kind, payload, at) VALUES ($1, $2, $3, now()) RETURNING id",
    "UPDATE accounts SET balance = balance - $1, updated_at = now() WHERE id = $2 AND balance >= $1",
    "DELETE FROM sessions WHERE expires_at < now()",
    "BEGIN",
    "COMMIT",
    "SET application_name = 'agent-7'",
    "SELECT count(*) FROM invoices WHERE paid = false",
    "WITH recent AS (SELECT * FROM orders WHERE created_at > now() - interval '1 day') SELECT c.name, sum(r.total) FROM recent r JOIN customers c ON c.id = r.customer_id GROUP BY c.name HAVING sum(r.total) > 100",
    "SELECT id, name FROM products WHERE name ILIKE '%' || $1 || '%' AND category_id IN (SELECT id FROM categories WHERE parent_id = $2)",
    "INSERT INTO audit_log (actor, action, detail) SELECT $1, 'export', jsonb_build_object('rows', count(*)) FROM customers",
    "SELECT pg_read_file('/etc/passwd')",
    "CREATE INDEX CONCURRENTLY IF NOT EXISTS orders_customer ON orders (customer_id)",
    "SELECT * FROM t WHERE id = 1 FOR UPDATE",
    "/* app:checkout */ SELECT 'it''s', E'tab\\there', $$dollar; quoted$$ FROM dual_like",
];

/// Time this thread has spent on a CPU, from `/proc/thread-self/schedstat` (nanoseconds).
/// The bench machine is shared: wall time would count the time other builds hold the core.
fn on_cpu() -> Option<Duration> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = s.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

/// Runs `f` `iters` times; returns the on-CPU time (wall time where that is unavailable).
fn cpu_time(iters: u64, mut f: impl FnMut()) -> Duration {
    let (c0, w0) = (on_cpu(), Instant::now());
    for _ in 0..iters {
        f();
    }
    match (c0, on_cpu()) {
        (Some(a), Some(b)) => b.saturating_sub(a),
        _ => w0.elapsed(),
    }
}

fn classify(c: &mut Criterion) {
    let classifier = Classifier::new();
    let total_bytes: usize = MIX.iter().map(|s| s.len()).sum();

    let mut g = c.benchmark_group("sql_classify_mix");
    g.sample_size(20).measurement_time(Duration::from_secs(3));
    g.throughput(Throughput::Elements(MIX.len() as u64));
    g.bench_function("statements", |b| {
        b.iter_custom(|iters| {
            cpu_time(iters, || {
                for s in MIX {
                    black_box(classifier.classify(black_box(s)));
                }
            })
        })
    });
    g.throughput(Throughput::Bytes(total_bytes as u64));
    g.bench_function("bytes", |b| {
        b.iter_custom(|iters| {
            cpu_time(iters, || {
                for s in MIX {
                    black_box(classifier.classify(black_box(s)));
                }
            })
        })
    });
    g.finish();

    // One simple-query string holding the whole mix: splitting plus classification.
    let joined = MIX.join(";\n");
    let mut g = c.benchmark_group("sql_classify_multi_statement");
    g.sample_size(20).measurement_time(Duration::from_secs(3));
    g.throughput(Throughput::Bytes(joined.len() as u64));
    g.bench_function("mix_as_one_query", |b| {
        b.iter_custom(|iters| {
            cpu_time(iters, || {
                black_box(classifier.classify(black_box(&joined)));
            })
        })
    });
    g.finish();

    // A bulk INSERT: long statements are dominated by the lexer.
    let bulk = "INSERT INTO events (id, kind, payload) VALUES ".to_owned()
        + &(0..2_000)
            .map(|i| format!("({i}, 'click', '{{\"x\": {i}}}')"))
            .collect::<Vec<_>>()
            .join(", ");
    let opts = LexOptions::default();
    let mut g = c.benchmark_group("sql_bulk_insert");
    g.sample_size(20).measurement_time(Duration::from_secs(3));
    g.throughput(Throughput::Bytes(bulk.len() as u64));
    g.bench_function("tokenize", |b| {
        b.iter_custom(|iters| {
            cpu_time(iters, || {
                black_box(tokenize(black_box(&bulk), &opts).map(|t| t.len()).ok());
            })
        })
    });
    g.bench_function("split", |b| {
        b.iter_custom(|iters| {
            cpu_time(iters, || {
                black_box(split(black_box(&bulk), &opts).map(|r| r.len()).ok());
            })
        })
    });
    g.bench_function("classify", |b| {
        b.iter_custom(|iters| {
            cpu_time(iters, || {
                black_box(classifier.classify(black_box(&bulk)));
            })
        })
    });
    g.finish();
}

criterion_group!(benches, classify);
criterion_main!(benches);
