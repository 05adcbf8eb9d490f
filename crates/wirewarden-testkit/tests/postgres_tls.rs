//! A PostgreSQL started with TLS: libpq verifies the server against the throwaway authority
//! the testkit hands out (name and chain), the session is encrypted by the server's own
//! account, the certificate on disk is the one handed out, and `tls_only` refuses plaintext.

use std::process::{Command, Output};

use wirewarden_testkit::{Postgres, TlsKey};

/// psql over TCP with a libpq connection string, so `sslmode` and `sslrootcert` apply.
fn psql_conninfo(conninfo: &str, password: &str, sql: &str) -> Output {
    Command::new("psql")
        .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .arg(conninfo)
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "10")
        .env_remove("PGSSLMODE")
        .env_remove("PGSSLROOTCERT")
        .output()
        .expect("psql runs")
}

fn conninfo(pg: &Postgres, host: &str, sslmode: &str) -> String {
    let ca = pg.tls().map(|t| t.ca_file().display().to_string());
    format!(
        "host={host} hostaddr=127.0.0.1 port={} user={} dbname={} sslmode={sslmode} sslrootcert={}",
        pg.port(),
        pg.user(),
        pg.database(),
        ca.unwrap_or_else(|| "/nonexistent".into()),
    )
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).trim().to_owned()
}

const SSL_ROW: &str =
    "SELECT ssl, version IS NOT NULL FROM pg_stat_ssl WHERE pid = pg_backend_pid()";

#[test]
fn tls_server_verified_by_its_throwaway_authority() {
    let pg = Postgres::builder().tls().start().unwrap();
    let tls = pg.tls().expect("TLS material");
    assert_eq!(tls.key(), TlsKey::EcdsaP256);
    assert!(tls.ca_pem().starts_with("-----BEGIN CERTIFICATE-----"));
    assert!(tls.cert_pem().starts_with("-----BEGIN CERTIFICATE-----"));
    assert_ne!(tls.ca_der(), tls.cert_der());
    assert_eq!(
        std::fs::read_to_string(tls.ca_file()).unwrap(),
        tls.ca_pem()
    );

    // verify-full checks the chain up to the handed-out authority and the host name, both
    // for the DNS name and for the IP address in the certificate.
    for host in [tls.server_name(), "127.0.0.1"] {
        let out = psql_conninfo(&conninfo(&pg, host, "verify-full"), pg.password(), SSL_ROW);
        assert!(out.status.success(), "{host}: {}", text(&out.stderr));
        assert_eq!(text(&out.stdout), "t|t", "{host}");
    }
    // A name the certificate does not carry is refused by the client.
    let out = psql_conninfo(
        &conninfo(&pg, "wrong.example", "verify-full"),
        pg.password(),
        "SELECT 1",
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("does not match host name"),
        "{}",
        text(&out.stderr)
    );

    // The server runs with the files the testkit wrote, and they are the certificate
    // handed out.
    let files = pg
        .psql("SELECT current_setting('ssl'), current_setting('ssl_cert_file')")
        .unwrap();
    let (ssl, cert_file) = files.trim().split_once('|').unwrap();
    assert_eq!(ssl, "on");
    assert_eq!(std::fs::read_to_string(cert_file).unwrap(), tls.cert_pem());

    // Without tls_only, an unencrypted TCP login is still accepted.
    let out = psql_conninfo(
        &conninfo(&pg, "127.0.0.1", "disable"),
        pg.password(),
        SSL_ROW,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "f|f");
}

#[test]
fn tls_only_refuses_plaintext_and_keeps_scram() {
    let pg = Postgres::builder()
        .tls_only()
        .tls_key(TlsKey::EcdsaP384)
        .start()
        .unwrap();
    assert_eq!(pg.tls().unwrap().key(), TlsKey::EcdsaP384);
    let out = psql_conninfo(
        &conninfo(&pg, "localhost", "verify-full"),
        pg.password(),
        SSL_ROW,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "t|t");

    let plain = psql_conninfo(
        &conninfo(&pg, "127.0.0.1", "disable"),
        pg.password(),
        "SELECT 1",
    );
    assert!(!plain.status.success());
    assert!(
        text(&plain.stderr).contains("rejects connection")
            && text(&plain.stderr).contains("no encryption"),
        "{}",
        text(&plain.stderr)
    );

    // Over TLS the password is still checked with SCRAM.
    let wrong = psql_conninfo(
        &conninfo(&pg, "localhost", "verify-full"),
        "wrong",
        "SELECT 1",
    );
    assert!(!wrong.status.success());
    assert!(
        text(&wrong.stderr).contains("password authentication failed"),
        "{}",
        text(&wrong.stderr)
    );
    let rules = pg
        .psql("SELECT type, auth_method FROM pg_hba_file_rules WHERE type <> 'local' ORDER BY line_number")
        .unwrap();
    assert_eq!(
        rules.lines().collect::<Vec<_>>(),
        [
            "hostssl|scram-sha-256",
            "hostssl|scram-sha-256",
            "hostnossl|reject",
            "hostnossl|reject"
        ]
    );
}
