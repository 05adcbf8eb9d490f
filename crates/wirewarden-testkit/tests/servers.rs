//! The testkit's own tests: real servers start, accept the configured credentials over TCP,
//! refuse wrong ones, run in parallel, and leave nothing behind.

use std::process::Command;

use wirewarden_testkit::{Error, Postgres, Redis};

/// psql over TCP as `user` with `password` (so the server's SCRAM path is exercised).
fn psql_tcp(pg: &Postgres, user: &str, password: &str, sql: &str) -> std::process::Output {
    Command::new("psql")
        .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", pg.host()])
        .args([
            "-p",
            &pg.port().to_string(),
            "-U",
            user,
            "-d",
            pg.database(),
            "-c",
            sql,
        ])
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .expect("psql runs")
}

#[test]
fn postgres_starts_seeds_and_requires_scram() {
    let pg = Postgres::builder()
        .database("crm")
        .user("agent")
        .password("s3cret")
        .seed_sql("CREATE TABLE customers (id int PRIMARY KEY, email text);")
        .seed_sql("INSERT INTO customers VALUES (1, 'a@example.com'), (2, 'b@example.com');")
        .start()
        .unwrap();
    assert_eq!(
        pg.url(),
        format!("postgresql://agent:s3cret@127.0.0.1:{}/crm", pg.port())
    );

    let ok = psql_tcp(&pg, "agent", "s3cret", "SELECT count(*) FROM customers");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&ok.stdout).trim(), "2");

    let bad = psql_tcp(&pg, "agent", "wrong", "SELECT 1");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("password authentication failed"));

    // The password is stored as a SCRAM verifier, and TCP logins use SCRAM.
    let verifier = pg
        .psql("SELECT rolpassword FROM pg_authid WHERE rolname = 'agent'")
        .unwrap();
    assert!(verifier.starts_with("SCRAM-SHA-256$4096:"), "{verifier}");
    let hba = pg
        .psql("SELECT auth_method FROM pg_hba_file_rules WHERE type = 'host'")
        .unwrap();
    assert!(hba.lines().all(|l| l == "scram-sha-256"), "{hba}");

    // The seed ran as the login role, which owns what it created.
    let owner = pg
        .psql("SELECT tableowner FROM pg_tables WHERE tablename = 'customers'")
        .unwrap();
    assert_eq!(owner.trim(), "agent");

    // The superuser can log in over TCP too.
    let su = psql_tcp(
        &pg,
        pg.superuser(),
        pg.superuser_password(),
        "SELECT current_user",
    );
    assert_eq!(String::from_utf8_lossy(&su.stdout).trim(), "postgres");
}

#[test]
fn postgres_errors_carry_psql_output() {
    let pg = Postgres::start().unwrap();
    let err = pg.psql("SELECT * FROM no_such_table").unwrap_err();
    assert!(err.to_string().contains("no_such_table"), "{err}");
}

#[test]
fn postgres_stops_and_cleans_up_on_drop() {
    let pg = Postgres::start().unwrap();
    let data = pg.data_dir().to_path_buf();
    let addr = pg.addr();
    assert!(data.exists());
    drop(pg);
    assert!(!data.exists(), "data directory left behind");
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "server still listening"
    );
}

#[test]
fn many_postgres_servers_in_parallel() {
    let handles: Vec<_> = (0..3)
        .map(|i| {
            std::thread::spawn(move || {
                let pg = Postgres::builder()
                    .seed_sql(&format!("CREATE TABLE t AS SELECT {i} AS v"))
                    .start()
                    .unwrap();
                (
                    pg.port(),
                    pg.psql("SELECT v FROM t").unwrap().trim().to_owned(),
                    pg,
                )
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let mut ports: Vec<u16> = results.iter().map(|r| r.0).collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), 3);
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r.1, i.to_string());
    }
}

fn redis_cli_as(redis: &Redis, user: &str, password: &str, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &redis.port().to_string()])
        .args(["--user", user, "--pass", password, "--no-auth-warning"])
        .args(args)
        .output()
        .expect("redis-cli runs");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn redis_starts_with_an_acl_user_and_no_persistence() {
    let redis = Redis::builder()
        .user("agent")
        .password("pw1")
        .start()
        .unwrap();
    assert_eq!(
        redis_cli_as(&redis, "agent", "pw1", &["SET", "k", "v"]),
        "OK"
    );
    assert_eq!(redis_cli_as(&redis, "agent", "pw1", &["GET", "k"]), "v");
    let denied = redis_cli_as(&redis, "agent", "nope", &["GET", "k"]);
    // redis-cli reports the failed AUTH on stderr and then the refused GET.
    assert!(
        denied.contains("NOAUTH") || denied.contains("WRONGPASS"),
        "{denied}"
    );
    assert_eq!(
        redis.cli(&["CONFIG", "GET", "save"]).unwrap().trim(),
        "save"
    );
    assert_eq!(
        redis.cli(&["CONFIG", "GET", "appendonly"]).unwrap(),
        "appendonly\nno\n"
    );
    let users = redis.cli(&["ACL", "USERS"]).unwrap();
    assert_eq!(users.lines().collect::<Vec<_>>(), ["agent", "default"]);
    // Without credentials nothing is allowed.
    let out = Command::new("redis-cli")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &redis.port().to_string(),
            "GET",
            "k",
        ])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("NOAUTH"));
}

#[test]
fn redis_rules_restrict_the_user() {
    let redis = Redis::builder()
        .user_rules("~cache:* +@read")
        .start()
        .unwrap();
    redis.cli(&["SET", "cache:1", "x"]).unwrap();
    assert_eq!(
        redis_cli_as(&redis, redis.user(), redis.password(), &["GET", "cache:1"]),
        "x"
    );
    let denied = redis_cli_as(
        &redis,
        redis.user(),
        redis.password(),
        &["SET", "cache:1", "y"],
    );
    assert!(denied.contains("NOPERM"), "{denied}");
}

#[test]
fn redis_stops_on_drop_and_parallel_servers_do_not_clash() {
    let servers: Vec<Redis> = (0..4).map(|_| Redis::start().unwrap()).collect();
    let addrs: Vec<_> = servers.iter().map(Redis::addr).collect();
    for s in &servers {
        assert_eq!(s.cli(&["PING"]).unwrap().trim(), "PONG");
    }
    drop(servers);
    for a in addrs {
        assert!(std::net::TcpStream::connect(a).is_err());
    }
}

#[test]
fn bad_redis_credentials_are_refused_before_start() {
    assert!(Redis::builder().password("has space").start().is_err());
}

// === missing binaries ===

/// The first `name` on this process's `PATH` (read, never changed: tests run in parallel).
fn on_path(name: &str) -> Option<std::path::PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

#[test]
fn redis_without_its_binaries_names_the_debian_package() {
    let empty = tempfile::tempdir().unwrap();
    let err = Redis::builder().bindir(empty.path()).start().unwrap_err();
    assert!(
        matches!(
            err,
            Error::MissingBinary {
                binary: "redis-server",
                package: "redis-server"
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "`redis-server` not found: install the Debian package `redis-server` \
         (apt-get install redis-server)"
    );
}

#[test]
fn redis_cli_missing_from_the_bindir_names_redis_tools() {
    // A bindir holding only the server: it starts from there, and the client is looked for
    // there too, not on PATH.
    // Where the testkit finds it by default: PATH, then /usr/bin.
    let server = on_path("redis-server").unwrap_or_else(|| "/usr/bin/redis-server".into());
    let bindir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(&server, bindir.path().join("redis-server")).unwrap();
    let redis = Redis::builder().bindir(bindir.path()).start().unwrap();
    let err = redis.cli(&["PING"]).unwrap_err();
    assert!(
        matches!(
            err,
            Error::MissingBinary {
                binary: "redis-cli",
                package: "redis-tools"
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("apt-get install redis-tools"),
        "{err}"
    );
}

/// Set in the child process of the test below.
const BARE_ENV: &str = "WIREWARDEN_TESTKIT_BARE_ENV";

#[test]
fn postgres_without_its_binaries_names_the_debian_package() {
    if std::env::var_os(BARE_ENV).is_some() {
        // The child: PATH and WIREWARDEN_PG_BINDIR both name an empty directory.
        let err = Postgres::start().unwrap_err();
        assert!(
            matches!(
                err,
                Error::MissingBinary {
                    binary: "initdb",
                    package: "postgresql"
                }
            ),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "`initdb` not found: install the Debian package `postgresql` \
             (apt-get install postgresql)"
        );
        return;
    }
    // Changing PATH here would change it for every test running in parallel, so the check
    // runs in a copy of this test binary with its own environment.
    let empty = tempfile::tempdir().unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "postgres_without_its_binaries_names_the_debian_package",
            "--exact",
            "--test-threads=1",
        ])
        .env(BARE_ENV, "1")
        .env("PATH", empty.path())
        .env("WIREWARDEN_PG_BINDIR", empty.path())
        .output()
        .expect("the test binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The child ran exactly this test, and it passed.
    assert!(stdout.contains("1 passed"), "{stdout}");
}
