//! The Redis codec on pipelined traffic: requests and replies split into frames (the relay's
//! clean path), a large bulk reply arriving in socket-sized pieces, typed value trees,
//! classification and reply correlation.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use wirewarden_redis::bytes::{Bytes, BytesMut};
use wirewarden_redis::{ReplyDecoder, RequestDecoder, RespVersion, Session, classify, encode_args};

const PIPELINE: usize = 1000;

/// 1000 `SET key:i <100-byte value>` commands, as a client pipelines them.
fn request_pipeline() -> Bytes {
    let mut out = BytesMut::new();
    let value = vec![b'v'; 100];
    for i in 0..PIPELINE {
        let key = format!("key:{i}");
        encode_args(&[&b"SET"[..], key.as_bytes(), &value], &mut out);
    }
    out.freeze()
}

/// The replies a server gives to a mixed pipeline: status, integers, 100-byte bulks, nulls and
/// 10-element arrays.
fn reply_pipeline(version: RespVersion) -> Bytes {
    let mut out = BytesMut::new();
    let bulk = format!("$100\r\n{}\r\n", "x".repeat(100));
    for i in 0..PIPELINE {
        match i % 5 {
            0 => out.extend_from_slice(b"+OK\r\n"),
            1 => out.extend_from_slice(format!(":{i}\r\n").as_bytes()),
            2 => out.extend_from_slice(bulk.as_bytes()),
            3 if version == RespVersion::Resp3 => out.extend_from_slice(b"_\r\n"),
            3 => out.extend_from_slice(b"$-1\r\n"),
            _ => {
                let head: &[u8] = if version == RespVersion::Resp3 {
                    b"%5\r\n"
                } else {
                    b"*10\r\n"
                };
                out.extend_from_slice(head);
                for j in 0..10 {
                    out.extend_from_slice(format!("$6\r\nfield{j}\r\n").as_bytes());
                }
            }
        }
    }
    out.freeze()
}

fn split_requests(input: &Bytes) -> usize {
    let mut d = RequestDecoder::default();
    let mut buf = BytesMut::from(&input[..]);
    let mut n = 0;
    while let Some(r) = d.decode(&mut buf).unwrap() {
        black_box(r.raw());
        n += 1;
    }
    n
}

fn split_replies(input: &Bytes, version: RespVersion) -> usize {
    let mut d = ReplyDecoder::default();
    let mut buf = BytesMut::from(&input[..]);
    let mut n = 0;
    while let Some(f) = d.decode(&mut buf, version).unwrap() {
        black_box(f.raw());
        n += 1;
    }
    n
}

fn requests(c: &mut Criterion) {
    let input = request_pipeline();
    assert_eq!(split_requests(&input), PIPELINE);
    let mut g = c.benchmark_group("redis_requests_pipelined");
    g.throughput(Throughput::Elements(PIPELINE as u64));
    g.bench_function("frames", |b| b.iter(|| split_requests(black_box(&input))));
    g.throughput(Throughput::Bytes(input.len() as u64));
    g.bench_function("bytes", |b| b.iter(|| split_requests(black_box(&input))));
    g.throughput(Throughput::Elements(PIPELINE as u64));
    g.bench_function("frames_classified", |b| {
        b.iter(|| {
            let mut d = RequestDecoder::default();
            let mut buf = BytesMut::from(&input[..]);
            while let Some(r) = d.decode(&mut buf).unwrap() {
                black_box(classify(r.args()));
            }
        })
    });
    g.finish();
}

fn replies(c: &mut Criterion) {
    let mut g = c.benchmark_group("redis_replies_pipelined");
    for version in [RespVersion::Resp2, RespVersion::Resp3] {
        let input = reply_pipeline(version);
        assert_eq!(split_replies(&input, version), PIPELINE);
        g.throughput(Throughput::Elements(PIPELINE as u64));
        g.bench_function(format!("{version}_frames"), |b| {
            b.iter(|| split_replies(black_box(&input), version))
        });
        g.throughput(Throughput::Bytes(input.len() as u64));
        g.bench_function(format!("{version}_bytes"), |b| {
            b.iter(|| split_replies(black_box(&input), version))
        });
    }
    let input = reply_pipeline(RespVersion::Resp2);
    g.throughput(Throughput::Elements(PIPELINE as u64));
    g.bench_function("RESP2_frames_correlated", |b| {
        b.iter(|| {
            let mut s: Session<usize> = Session::new();
            let get = [Bytes::from_static(b"GET"), Bytes::from_static(b"k")];
            for i in 0..PIPELINE {
                s.on_request(&get, i);
            }
            let mut d = ReplyDecoder::default();
            let mut buf = BytesMut::from(&input[..]);
            while let Some(f) = d.decode(&mut buf, s.reply_version()).unwrap() {
                black_box(s.on_reply(&f).unwrap());
            }
        })
    });
    g.bench_function("RESP2_frames_value_tree", |b| {
        b.iter(|| {
            let mut d = ReplyDecoder::default();
            let mut buf = BytesMut::from(&input[..]);
            while let Some(f) = d.decode(&mut buf, RespVersion::Resp2).unwrap() {
                black_box(f.value().unwrap());
            }
        })
    });
    g.finish();
}

fn large_bulk(c: &mut Criterion) {
    // A 4 MiB value arriving in 64 KiB reads: the resumable pre-scan looks at the header once.
    let size = 4 << 20;
    let mut frame = BytesMut::new();
    frame.extend_from_slice(format!("${size}\r\n").as_bytes());
    frame.extend_from_slice(&vec![b'z'; size]);
    frame.extend_from_slice(b"\r\n");
    let frame = frame.freeze();
    let mut g = c.benchmark_group("redis_large_bulk");
    g.throughput(Throughput::Bytes(frame.len() as u64));
    g.bench_function("4MiB_in_64KiB_reads", |b| {
        b.iter(|| {
            let mut d = ReplyDecoder::default();
            let mut buf = BytesMut::with_capacity(frame.len());
            for chunk in frame.chunks(64 << 10) {
                buf.extend_from_slice(chunk);
                if let Some(f) = d.decode(&mut buf, RespVersion::Resp2).unwrap() {
                    black_box(f);
                }
            }
        })
    });
    g.finish();
}

criterion_group!(benches, requests, replies, large_bulk);
criterion_main!(benches);
