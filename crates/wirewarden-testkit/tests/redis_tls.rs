//! A Redis started with TLS: it has no plaintext port at all, redis-cli verifies it against
//! the throwaway authority the testkit hands out and logs in inside TLS, the certificate the
//! server runs with is the one handed out, and a plaintext client gets nothing.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Output};
use std::time::Duration;

use wirewarden_testkit::{Redis, TlsKey};

/// redis-cli to the server's port as its ACL user, with `tls` options in front.
fn cli_as_user(redis: &Redis, tls: &[&str], args: &[&str]) -> Output {
    Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &redis.port().to_string()])
        .args(tls)
        .args(["--user", redis.user(), "--pass", redis.password()])
        .arg("--no-auth-warning")
        .args(args)
        .output()
        .expect("redis-cli runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).trim().to_owned()
}

#[test]
fn tls_only_redis_is_verified_by_its_throwaway_authority() {
    let redis = Redis::builder().tls().start().unwrap();
    let tls = redis.tls().expect("TLS material");
    assert_eq!(tls.key(), TlsKey::EcdsaP256);
    assert_eq!(tls.server_name(), "localhost");
    assert!(tls.ca_pem().starts_with("-----BEGIN CERTIFICATE-----"));
    assert_ne!(tls.ca_der(), tls.cert_der());
    assert_eq!(
        std::fs::read_to_string(tls.ca_file()).unwrap(),
        tls.ca_pem()
    );
    assert!(redis.url().starts_with("rediss://"), "{}", redis.url());

    // The testkit's own client speaks TLS.
    assert_eq!(redis.cli(&["PING"]).unwrap().trim(), "PONG");

    // The ACL user logs in inside TLS, trusting only the handed-out authority.
    let ca = tls.ca_file().to_str().unwrap();
    let set = cli_as_user(&redis, &["--tls", "--cacert", ca], &["SET", "k", "v"]);
    assert_eq!(text(&set.stdout), "OK", "{}", text(&set.stderr));
    let get = cli_as_user(&redis, &["--tls", "--cacert", ca], &["GET", "k"]);
    assert_eq!(text(&get.stdout), "v", "{}", text(&get.stderr));

    // The plaintext listener is off and the TLS one is the port handed out.
    assert_eq!(
        redis
            .cli(&["CONFIG", "GET", "port"])
            .unwrap()
            .lines()
            .collect::<Vec<_>>(),
        ["port", "0"]
    );
    let tls_port = redis.port().to_string();
    assert_eq!(
        redis
            .cli(&["CONFIG", "GET", "tls-port"])
            .unwrap()
            .lines()
            .collect::<Vec<_>>(),
        ["tls-port", tls_port.as_str()]
    );
    assert_eq!(
        redis
            .cli(&["CONFIG", "GET", "tls-auth-clients"])
            .unwrap()
            .lines()
            .collect::<Vec<_>>(),
        ["tls-auth-clients", "no"]
    );
    // The server presents the certificate the testkit handed out.
    let cert = redis.cli(&["CONFIG", "GET", "tls-cert-file"]).unwrap();
    let cert_file = cert.lines().nth(1).expect("a file name");
    assert_eq!(std::fs::read_to_string(cert_file).unwrap(), tls.cert_pem());

    // A client that does not trust the authority (the system roots) is refused.
    let untrusted = cli_as_user(&redis, &["--tls"], &["GET", "k"]);
    assert_ne!(text(&untrusted.stdout), "v");
    assert!(
        text(&untrusted.stderr).contains("certificate verify failed")
            || text(&untrusted.stdout).contains("certificate verify failed"),
        "{} / {}",
        text(&untrusted.stdout),
        text(&untrusted.stderr)
    );
}

#[test]
fn tls_only_redis_answers_no_plaintext() {
    let redis = Redis::builder().tls_key(TlsKey::EcdsaP384).start().unwrap();
    assert_eq!(redis.tls().unwrap().key(), TlsKey::EcdsaP384);

    // redis-cli without TLS gets no reply.
    let plain = cli_as_user(&redis, &[], &["PING"]);
    assert_ne!(text(&plain.stdout), "PONG");
    assert!(!text(&plain.stdout).contains("NOAUTH"));

    // Neither does a raw RESP client: the connection is closed, at most after a TLS alert
    // record (content type 21), never with a RESP reply.
    let mut s = TcpStream::connect(redis.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(b"*1\r\n$4\r\nPING\r\n").unwrap();
    let mut reply = Vec::new();
    let _ = s.read_to_end(&mut reply);
    assert!(
        reply.is_empty() || reply.first() == Some(&21),
        "{:?}",
        String::from_utf8_lossy(&reply)
    );

    // The server is up and serving over TLS all along.
    assert_eq!(redis.cli(&["PING"]).unwrap().trim(), "PONG");
}

#[test]
fn plaintext_redis_has_no_tls_material() {
    let redis = Redis::start().unwrap();
    assert!(redis.tls().is_none());
    assert!(redis.url().starts_with("redis://"), "{}", redis.url());
    assert_eq!(redis.cli(&["PING"]).unwrap().trim(), "PONG");
}

#[test]
fn tls_client_auth_demands_the_issued_client_certificate() {
    let redis = Redis::builder().tls_client_auth().start().unwrap();
    let tls = redis.tls().unwrap();
    assert_ne!(tls.client_cert_der(), tls.cert_der());
    assert!(!tls.client_key_der().is_empty());
    // The testkit's own client presents it.
    assert_eq!(redis.cli(&["PING"]).unwrap().trim(), "PONG");
    assert_eq!(
        redis
            .cli(&["CONFIG", "GET", "tls-auth-clients"])
            .unwrap()
            .lines()
            .collect::<Vec<_>>(),
        ["tls-auth-clients", "yes"]
    );
    let ca = tls.ca_file().to_str().unwrap();
    let cert = tls.client_cert_file().to_str().unwrap();
    let key = tls.client_key_file().to_str().unwrap();
    let with_cert = cli_as_user(
        &redis,
        &["--tls", "--cacert", ca, "--cert", cert, "--key", key],
        &["PING"],
    );
    assert_eq!(
        text(&with_cert.stdout),
        "PONG",
        "{}",
        text(&with_cert.stderr)
    );
    // Without it the server ends the handshake: no reply, whatever the password.
    let without = cli_as_user(&redis, &["--tls", "--cacert", ca], &["PING"]);
    assert_ne!(text(&without.stdout), "PONG");
    assert!(!text(&without.stdout).contains("NOAUTH"));
}
