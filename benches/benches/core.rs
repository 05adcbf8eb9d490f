//! The command digest is computed for every command that crosses the gateway.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use wirewarden_core::{CommandDigest, EventId, Protocol};

fn digest(c: &mut Criterion) {
    let mut g = c.benchmark_group("command_digest");
    let short = b"SELECT id, email FROM customers WHERE id = $1";
    g.throughput(Throughput::Bytes(short.len() as u64));
    g.bench_function("short_statement_one_param", |b| {
        b.iter(|| CommandDigest::compute(Protocol::Postgres, black_box(short), [Some(&b"42"[..])]))
    });
    let long = "INSERT INTO events VALUES ".to_owned() + &"(1, 'x'), ".repeat(2_000);
    g.throughput(Throughput::Bytes(long.len() as u64));
    g.bench_function("20kb_statement", |b| {
        b.iter(|| CommandDigest::compute(Protocol::Postgres, black_box(long.as_bytes()), []))
    });
    g.finish();
}

fn ids(c: &mut Criterion) {
    c.bench_function("event_id_new", |b| b.iter(EventId::new));
}

criterion_group!(benches, digest, ids);
criterion_main!(benches);
