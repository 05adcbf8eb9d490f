//! A pass-through relay built on the codec, between real clients (redis-cli, Python redis-py)
//! and a real redis-server started by wirewarden-testkit, in RESP2 and RESP3.
//!
//! The relay decodes every request and reply, classifies and correlates them, and forwards
//! the exact bytes it decoded; the tests check that clients see a working server, that the
//! bytes forwarded are the bytes received, and that the correlation log makes sense.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use wirewarden_redis::{
    Correlated, OutOfBand, ReplyDecoder, RequestDecoder, RespVersion, Session, classify,
};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    /// A request the server will answer.
    Request(String),
    /// A request the server will not answer (`CLIENT REPLY OFF|SKIP`).
    NoReply(String),
    Reply {
        verb: String,
        queued: bool,
        complete: bool,
    },
    Exec {
        results: Vec<String>,
        aborted: bool,
    },
    OutOfBand(OutOfBand),
    Unsolicited,
    ProtocolError(String),
}

#[derive(Debug, Default)]
struct Conn {
    events: Vec<Event>,
    from_client: Vec<u8>,
    to_server: Vec<u8>,
    from_server: Vec<u8>,
    to_client: Vec<u8>,
    final_version: Option<RespVersion>,
}

#[derive(Debug, Default)]
struct Shared {
    active: usize,
    done: Vec<Conn>,
}

type Log = Arc<Mutex<Shared>>;

async fn relay_one(client: TcpStream, upstream: SocketAddr, log: Log) {
    let server = TcpStream::connect(upstream).await.unwrap();
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let mut conn = Conn::default();
    let mut cbuf = BytesMut::with_capacity(64 << 10);
    let mut sbuf = BytesMut::with_capacity(64 << 10);
    let mut requests = RequestDecoder::default();
    let mut replies = ReplyDecoder::default();
    let mut session: Session<String> = Session::new();
    loop {
        tokio::select! {
            n = cr.read_buf(&mut cbuf) => {
                let Ok(n) = n else { break };
                if n == 0 { break }
                conn.from_client.extend_from_slice(&cbuf[cbuf.len() - n..]);
                let mut out = BytesMut::new();
                loop {
                    match requests.decode(&mut cbuf) {
                        Ok(Some(req)) => {
                            let c = classify(req.args());
                            let verb = c.command.verb;
                            if session.on_request(req.args(), verb.clone()) {
                                conn.events.push(Event::Request(verb));
                            } else {
                                conn.events.push(Event::NoReply(verb));
                            }
                            out.extend_from_slice(req.raw());
                        }
                        Ok(None) => break,
                        Err(e) => {
                            conn.events.push(Event::ProtocolError(e.to_string()));
                            let _ = cw.write_all(&e.to_reply()).await;
                            let mut l = log.lock().unwrap();
                            l.done.push(conn);
                            l.active -= 1;
                            return;
                        }
                    }
                }
                conn.to_server.extend_from_slice(&out);
                if sw.write_all(&out).await.is_err() { break }
            }
            n = sr.read_buf(&mut sbuf) => {
                let Ok(n) = n else { break };
                if n == 0 { break }
                conn.from_server.extend_from_slice(&sbuf[sbuf.len() - n..]);
                let mut out = BytesMut::new();
                while let Some(frame) = replies.decode(&mut sbuf, session.reply_version()).unwrap() {
                    let ev = match session.on_reply(&frame).unwrap() {
                        Correlated::Reply { tag, queued, complete, .. } => {
                            Event::Reply { verb: tag, queued, complete }
                        }
                        Correlated::Exec { results, aborted, .. } => Event::Exec { results, aborted },
                        Correlated::OutOfBand(o) => Event::OutOfBand(o),
                        Correlated::Unsolicited => Event::Unsolicited,
                        _ => Event::Unsolicited,
                    };
                    conn.events.push(ev);
                    out.extend_from_slice(frame.raw());
                }
                conn.to_client.extend_from_slice(&out);
                if cw.write_all(&out).await.is_err() { break }
            }
        }
    }
    conn.final_version = Some(session.version());
    let mut l = log.lock().unwrap();
    l.done.push(conn);
    l.active -= 1;
}

async fn start_relay(upstream: SocketAddr) -> (SocketAddr, Log) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let log: Log = Arc::default();
    let l = log.clone();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            l.lock().unwrap().active += 1;
            tokio::spawn(relay_one(sock, upstream, l.clone()));
        }
    });
    (addr, log)
}

/// Waits until at least `n` connections have finished and none is open, and returns them.
async fn finished(log: &Log, n: usize) -> Vec<Conn> {
    for _ in 0..1000 {
        {
            let l = log.lock().unwrap();
            if l.active == 0 && l.done.len() >= n {
                break;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    std::mem::take(&mut log.lock().unwrap().done)
}

fn without_blank_lines(received: &[u8], forwarded: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(received.len());
    let mut i = 0;
    while i < received.len() {
        let blank = if received[i..].starts_with(b"\r\n") {
            2
        } else if received[i] == b'\n' {
            1
        } else {
            0
        };
        if blank > 0 && forwarded.get(out.len()) != received.get(i) {
            i += blank;
            continue;
        }
        out.push(received[i]);
        i += 1;
    }
    out
}

fn same_bytes(received: &[u8], forwarded: &[u8], what: &str) {
    if received != forwarded {
        let at = received
            .iter()
            .zip(forwarded)
            .position(|(a, b)| a != b)
            .unwrap_or(received.len().min(forwarded.len()));
        let show = |b: &[u8]| {
            String::from_utf8_lossy(&b[at.saturating_sub(40)..(at + 40).min(b.len())]).into_owned()
        };
        panic!(
            "{what} not forwarded byte for byte: {} received, {} forwarded, first difference at {at}: {:?} vs {:?}",
            received.len(),
            forwarded.len(),
            show(received),
            show(forwarded)
        );
    }
}

fn check_bytes_and_order(conn: &Conn) {
    // Blank lines between commands are consumed and skipped, as the server skips them.
    same_bytes(
        &without_blank_lines(&conn.from_client, &conn.to_server),
        &conn.to_server,
        "requests",
    );
    same_bytes(&conn.from_server, &conn.to_client, "replies");
    assert!(
        !conn.events.contains(&Event::Unsolicited),
        "{:?}",
        conn.events
    );
    // Every reply names the request it answers, in order (transactions aside).
    let requests: Vec<&String> = conn
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Request(v) => Some(v),
            _ => None,
        })
        .collect();
    let exec = "EXEC".to_owned();
    let answered: Vec<&String> = conn
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Reply {
                verb,
                complete: true,
                ..
            } => Some(verb),
            Event::Exec { .. } => Some(&exec),
            _ => None,
        })
        .collect();
    assert_eq!(answered.len(), requests.len(), "{:?}", conn.events);
    assert_eq!(answered, requests, "replies in request order");
}

async fn redis_cli(
    relay: SocketAddr,
    redis: &wirewarden_testkit::Redis,
    extra: &[&str],
    stdin: &str,
) -> String {
    let mut cmd = tokio::process::Command::new("redis-cli");
    cmd.args(["-h", "127.0.0.1", "-p", &relay.port().to_string()])
        .args([
            "--user",
            redis.user(),
            "--pass",
            redis.password(),
            "--no-auth-warning",
        ])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .expect("redis-cli (apt package redis-tools) must be installed");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).await.unwrap();
    drop(input);
    let out = child.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cli_through_the_relay() {
    let redis = wirewarden_testkit::Redis::builder().start().unwrap();
    let (relay, log) = start_relay(redis.addr()).await;

    for (proto, extra) in [
        (RespVersion::Resp2, &[][..]),
        (RespVersion::Resp3, &["-3"][..]),
    ] {
        let out = redis_cli(
            relay,
            &redis,
            extra,
            "SET greeting \"hello world\"\nGET greeting\nMULTI\nINCR n\nINCR n\nGET greeting\nEXEC\n\
             HSET h f1 v1 f2 v2\nHGETALL h\nNOSUCHCOMMAND x\nPING\n",
        )
        .await;
        assert!(out.contains("hello world"), "{out}");
        assert!(out.contains("unknown command"), "{out}");
        assert!(out.contains("PONG"), "{out}");
        let conns = finished(&log, 1).await;
        assert_eq!(conns.len(), 1);
        let conn = &conns[0];
        check_bytes_and_order(conn);
        assert_eq!(conn.final_version, Some(proto), "{:?}", conn.events);
        let exec = conn
            .events
            .iter()
            .find_map(|e| match e {
                Event::Exec { results, aborted } => Some((results.clone(), *aborted)),
                _ => None,
            })
            .expect("EXEC correlated");
        assert_eq!(
            exec,
            (vec!["INCR".into(), "INCR".into(), "GET".into()], false)
        );
        let queued = conn
            .events
            .iter()
            .filter(|e| matches!(e, Event::Reply { queued: true, .. }))
            .count();
        assert_eq!(queued, 3);
        assert!(
            conn.events
                .contains(&Event::Request("NOSUCHCOMMAND".into()))
        );
    }

    // A pipeline: redis-cli --pipe writes raw protocol as fast as it can.
    let mut pipe = String::new();
    for i in 0..2000 {
        let k = format!("key:{i}");
        let v = format!("value {i}");
        pipe.push_str(&format!(
            "*3\r\n$3\r\nSET\r\n${}\r\n{k}\r\n${}\r\n{v}\r\n",
            k.len(),
            v.len()
        ));
    }
    let out = redis_cli(relay, &redis, &["--pipe"], &pipe).await;
    assert!(out.contains("errors: 0, replies: 2000"), "{out}");
    let conns = finished(&log, 1).await;
    check_bytes_and_order(&conns[0]);
    let replies = conns[0]
        .events
        .iter()
        .filter(|e| matches!(e, Event::Reply { .. }))
        .count();
    assert!(replies >= 2001, "{replies}");
    assert_eq!(
        redis.cli(&["GET", "key:1999"]).unwrap().trim(),
        "value 1999"
    );
}

const PY_CLIENT: &str = r#"
import sys, time, redis
port, user, password, proto = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
r = redis.Redis(host="127.0.0.1", port=port, username=user, password=password, protocol=proto)
assert r.ping()
r.set("py:k", "v\r\n\x00binary")
assert r.get("py:k") == b"v\r\n\x00binary"
p = r.pipeline(transaction=False)
for i in range(200):
    p.set(f"py:{i}", i)
    p.get(f"py:{i}")
res = p.execute()
assert res[1::2] == [str(i).encode() for i in range(200)], res[:6]
with r.pipeline(transaction=True) as t:
    t.incr("py:counter")
    t.incr("py:counter")
    t.lrange("py:none", 0, -1)
    out = t.execute()
assert out[1] == out[0] + 1 and out[2] == [], out
r.hset("py:h", mapping={"a": "1", "b": "2"})
assert r.hgetall("py:h") == {b"a": b"1", b"b": b"2"}
assert r.execute_command("SCAN", 0, "COUNT", 1000)[1]
# pub/sub: one connection subscribes through the relay, another publishes.
ps = r.pubsub()
ps.subscribe("chan:a", "chan:b")
for _ in range(2):
    m = ps.get_message(timeout=5)
    assert m and m["type"] == "subscribe", m
pub = redis.Redis(host="127.0.0.1", port=port, username=user, password=password, protocol=proto)
assert pub.publish("chan:a", "hello") == 1
m = ps.get_message(timeout=5)
assert m and m["type"] == "message" and m["data"] == b"hello", m
ps.unsubscribe()
for _ in range(2):
    m = ps.get_message(timeout=5)
    assert m and m["type"] == "unsubscribe", m
ps.close()
pub.close()
r.close()
print("ok")
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_py_through_the_relay() {
    let redis = wirewarden_testkit::Redis::builder().start().unwrap();
    let (relay, log) = start_relay(redis.addr()).await;
    for proto in ["2", "3"] {
        let out = tokio::process::Command::new("python3")
            .args(["-c", PY_CLIENT])
            .args([
                &relay.port().to_string(),
                redis.user(),
                redis.password(),
                proto,
            ])
            .output()
            .await
            .expect("python3 must be installed");
        assert!(
            out.status.success(),
            "redis-py (pip package `redis`, see scripts/requirements-test.txt), protocol {proto}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
        // The client (whose connection the subscriber reuses) and the publisher.
        let conns = finished(&log, 2).await;
        assert!(conns.len() >= 2);
        let want = if proto == "3" {
            RespVersion::Resp3
        } else {
            RespVersion::Resp2
        };
        let mut messages = 0;
        let mut execs = 0;
        for conn in &conns {
            check_bytes_and_order(conn);
            assert_eq!(conn.final_version, Some(want));
            messages += conn
                .events
                .iter()
                .filter(|e| **e == Event::OutOfBand(OutOfBand::Message))
                .count();
            for e in &conn.events {
                if let Event::Exec { results, aborted } = e {
                    assert_eq!(results, &["INCRBY", "INCRBY", "LRANGE"]);
                    assert!(!aborted);
                    execs += 1;
                }
            }
        }
        assert_eq!(messages, 1, "one published message, out of band");
        assert_eq!(execs, 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_client_gets_a_protocol_error() {
    let redis = wirewarden_testkit::Redis::builder().start().unwrap();
    let (relay, log) = start_relay(redis.addr()).await;
    for (input, want) in [
        (&b"*1\r\n$999999999999\r\n"[..], "invalid bulk length"),
        (b"SET k \"unterminated\r\n", "unbalanced quotes"),
        (b"*2\r\n:1\r\n", "expected '$', got ':'"),
    ] {
        let mut s = TcpStream::connect(relay).await.unwrap();
        s.write_all(input).await.unwrap();
        let mut reply = Vec::new();
        s.read_to_end(&mut reply).await.unwrap();
        let reply = String::from_utf8(reply).unwrap();
        assert!(reply.starts_with("-ERR Protocol error: "), "{reply}");
        assert!(reply.contains(want), "{reply}");
        let conns = finished(&log, 1).await;
        assert!(matches!(
            conns[0].events.last(),
            Some(Event::ProtocolError(_))
        ));
        assert!(
            conns[0].to_server.is_empty(),
            "nothing hostile reaches the server"
        );
    }
}

/// Reads from `s` until the bytes received end with `end`.
async fn read_until(s: &mut TcpStream, end: &[u8]) -> Vec<u8> {
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    while !got.ends_with(end) {
        let n = tokio::time::timeout(std::time::Duration::from_secs(10), s.read(&mut chunk))
            .await
            .expect("reply within 10 s")
            .unwrap();
        assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&chunk[..n]);
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_client_reply_hello_and_monitor_through_the_relay() {
    let redis = wirewarden_testkit::Redis::builder().start().unwrap();
    let (relay, log) = start_relay(redis.addr()).await;

    // One pipeline, written at once: replies switched off and on, a transaction aborted at
    // queue time, a switch to RESP3 and a RESP3 map.
    let mut s = TcpStream::connect(relay).await.unwrap();
    let pipeline = format!(
        "AUTH {} {}\r\nCLIENT REPLY OFF\r\nSET a 1\r\nCLIENT REPLY ON\r\nMULTI\r\nSET a 2\r\n\
         NOSUCH x\r\nEXEC\r\nGET a\r\nHELLO 3\r\nHSET h f v\r\nHGETALL h\r\nPING\r\n",
        redis.user(),
        redis.password()
    );
    s.write_all(pipeline.as_bytes()).await.unwrap();
    let got = read_until(&mut s, b"+PONG\r\n").await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.contains("EXECABORT"), "{text}");
    assert!(
        text.contains("%1\r\n$1\r\nf\r\n$1\r\nv\r\n"),
        "RESP3 map: {text}"
    );
    drop(s);
    let conns = finished(&log, 1).await;
    let conn = &conns[0];
    check_bytes_and_order(conn);
    assert_eq!(conn.final_version, Some(RespVersion::Resp3));
    assert!(conn.events.contains(&Event::Exec {
        results: vec![],
        aborted: true
    }));
    // `SET a 1` under CLIENT REPLY OFF got no reply, and GET saw its value.
    assert!(text.contains("$1\r\n1\r\n"), "{text}");
    let silent: Vec<&Event> = conn
        .events
        .iter()
        .filter(|e| matches!(e, Event::NoReply(_)))
        .collect();
    assert_eq!(
        silent,
        [
            &Event::NoReply("CLIENT REPLY".into()),
            &Event::NoReply("SET".into())
        ]
    );

    // MONITOR: the stream of executed commands is out of band.
    let mut m = TcpStream::connect(relay).await.unwrap();
    m.write_all(format!("AUTH {} {}\r\nMONITOR\r\n", redis.user(), redis.password()).as_bytes())
        .await
        .unwrap();
    read_until(&mut m, b"+OK\r\n+OK\r\n").await;
    redis.cli(&["SET", "watched-by-monitor", "1"]).unwrap();
    read_until(&mut m, b"\"watched-by-monitor\" \"1\"\r\n").await;
    drop(m);
    let conns = finished(&log, 1).await;
    check_bytes_and_order(&conns[0]);
    assert!(
        conns[0]
            .events
            .contains(&Event::OutOfBand(OutOfBand::Monitor)),
        "{:?}",
        conns[0].events
    );
}
