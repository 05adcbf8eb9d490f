//! The `wirewarden-audit` binary: a writer killed mid-append, verify's exit status, export
//! validated against the OCSF schema by pydantic-ocsf, and replay following a live log.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use wirewarden_audit::testing::{numbered_event, sample_events};
use wirewarden_audit::{ChainKey, CheckpointSigner, FileSink, VerifyKeys, verify_dir};
use wirewarden_core::{
    AuditEvent, AuditEventKind, Direction, SessionEndReason, SessionId, Timestamp,
};

const BIN: &str = env!("CARGO_BIN_EXE_wirewarden-audit");

struct Keys {
    dir: tempfile::TempDir,
    key: ChainKey,
    signer: CheckpointSigner,
}

impl Keys {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(BIN)
            .args(["keygen", "--key-id", "cli-test", "--out"])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let text = std::fs::read_to_string(dir.path().join("chain.key")).unwrap();
        let (id, hex) = text.trim().split_once(' ').unwrap();
        let key = ChainKey::from_hex(id, hex).unwrap();
        let seed = std::fs::read_to_string(dir.path().join("checkpoint.key")).unwrap();
        let signer = CheckpointSigner::from_hex(&seed).unwrap();
        Self { dir, key, signer }
    }

    fn verify_keys(&self) -> VerifyKeys {
        VerifyKeys {
            chain: self.key.clone(),
            checkpoint: self.signer.public(),
        }
    }

    fn cmd(&self, sub: &str, log: &Path) -> Command {
        let mut c = Command::new(BIN);
        c.arg(sub)
            .arg("--dir")
            .arg(log)
            .arg("--key-file")
            .arg(self.dir.path().join("chain.key"))
            .arg("--public-key")
            .arg(self.dir.path().join("checkpoint.pub"));
        c
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn write(keys: &Keys, log: &Path, events: &[AuditEvent]) {
    rt().block_on(async {
        let sink = FileSink::builder(log, keys.key.clone(), keys.signer.clone())
            .open()
            .unwrap();
        for e in events {
            sink.append_event(e).await.unwrap();
        }
        sink.close().await.unwrap();
    });
}

#[test]
fn a_writer_killed_mid_append_leaves_at_most_a_torn_tail() {
    let keys = Keys::new();
    let log = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args([
            "append",
            "--durability",
            "fsync",
            "--segment-bytes",
            "20000",
            "--dir",
        ])
        .arg(log.path())
        .arg("--key-file")
        .arg(keys.dir.path().join("chain.key"))
        .arg("--signing-key-file")
        .arg(keys.dir.path().join("checkpoint.key"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // Large events (64 KiB of transcript each) so writes take long enough to be interrupted.
    let feeder = std::thread::spawn(move || {
        let s = SessionId::new();
        for i in 0..100_000u64 {
            let mut e = numbered_event(s, i);
            if let AuditEventKind::Transcript { text, .. } = &mut e.kind {
                text.push_str(&"x".repeat(64 * 1024));
            }
            let line = serde_json::to_string(&e).unwrap() + "\n";
            if stdin.write_all(line.as_bytes()).is_err() {
                return;
            }
        }
    });
    let mut acked = Vec::new();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    while acked.len() < 40 {
        let line = lines.next().unwrap().unwrap();
        acked.push(line.strip_prefix("ok ").unwrap().parse::<u64>().unwrap());
    }
    child.kill().unwrap();
    child.wait().unwrap();
    feeder.join().unwrap();
    let report = verify_dir(log.path(), &keys.verify_keys()).unwrap();
    assert!(report.is_ok(), "{report}");
    // If the kill landed inside a write, only the record being appended is torn.
    if let Some(t) = &report.torn_tail {
        assert_eq!(t.seq, report.events, "{report}");
    }
    // Every append acknowledged in fsync mode is in the log.
    assert!(
        acked.iter().all(|s| *s < report.events),
        "{report} {acked:?}"
    );
    assert!(report.segments > 1, "{report}");
    // The log can be reopened and extended.
    write(&keys, log.path(), &[numbered_event(SessionId::new(), 0)]);
    let again = verify_dir(log.path(), &keys.verify_keys()).unwrap();
    assert!(again.is_ok() && again.torn_tail.is_none(), "{again}");
    assert_eq!(again.events, report.events + 1);
}

#[test]
fn verify_exit_status_and_report() {
    let keys = Keys::new();
    let log = tempfile::tempdir().unwrap();
    write(&keys, log.path(), &sample_events());
    let out = keys.cmd("verify", log.path()).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout.starts_with("OK: 16 records in 1 segment,"),
        "{stdout}"
    );
    // Flip one byte near the end of the segment (inside the last record).
    let seg = log.path().join(wirewarden_audit::segment_file_name(0));
    let mut data = std::fs::read(&seg).unwrap();
    let n = data.len();
    data[n - 50] ^= 0x01;
    std::fs::write(&seg, &data).unwrap();
    let out = keys.cmd("verify", log.path()).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        stdout.starts_with("DAMAGED: modified at sequence number 15"),
        "{stdout}"
    );
    // Export refuses a damaged log.
    let out = keys
        .cmd("export", log.path())
        .args(["--format", "jsonl"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn export_jsonl_and_ocsf_validated_by_pydantic_ocsf() {
    let keys = Keys::new();
    let log = tempfile::tempdir().unwrap();
    let events = sample_events();
    write(&keys, log.path(), &events);
    let out = keys
        .cmd("export", log.path())
        .args(["--format", "jsonl"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let back: Vec<AuditEvent> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(back, events);

    let out = keys
        .cmd("export", log.path())
        .args(["--format", "ocsf"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let ocsf = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(ocsf.path(), &out.stdout).unwrap();
    let script = r#"
import json, sys
from ocsf.v1_7_0 import events
classes = {6005: events.DatastoreActivity, 6003: events.ApiActivity,
           3002: events.Authentication, 3005: events.UserAccess}
seen = []
for line in open(sys.argv[1]):
    obj = json.loads(line)
    # pydantic-ocsf 3.0 rejects http_method strings that the OCSF 1.7 schema allows.
    obj.get("http_request", {}).pop("http_method", None)
    classes[obj["class_uid"]].model_validate(obj)
    seen.append(obj["class_uid"])
print(" ".join(map(str, seen)))
"#;
    let py = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(ocsf.path())
        .output()
        .expect("python3 with pydantic-ocsf (scripts/requirements-test.txt)");
    assert!(
        py.status.success(),
        "{}",
        String::from_utf8_lossy(&py.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&py.stdout).trim(),
        "3002 3002 6005 6003 3005 3005 3005 3002 3002"
    );
}

#[test]
fn replay_follows_a_live_log_until_the_session_ends() {
    let keys = Keys::new();
    let log = tempfile::tempdir().unwrap();
    let events = sample_events();
    let session = events[0].session.unwrap();
    let rt = rt();
    let sink = FileSink::builder(log.path(), keys.key.clone(), keys.signer.clone())
        .open()
        .unwrap();
    rt.block_on(sink.append_event(&events[0])).unwrap();
    let mut child = keys
        .cmd("replay", log.path())
        .args(["--follow", "--poll-ms", "20", "--session"])
        .arg(session.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(
        first.starts_with(&format!("== session {session} started")),
        "{first}"
    );
    // Events appended while replay is running show up, in order, on the session's clock.
    let live = AuditEvent {
        time: Timestamp::from_unix_nanos(i128::from(events[0].time.unix_nanos()) + 1_500_000_000)
            .unwrap(),
        ..AuditEvent::new(
            Some(session),
            AuditEventKind::Transcript {
                command_id: None,
                direction: Direction::FromClient,
                elapsed_us: 1_400_000,
                text: "Query \"SELECT now()\"".into(),
                truncated: false,
            },
        )
    };
    rt.block_on(sink.append_event(&live)).unwrap();
    let mut rest = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line.contains("client> Query \"SELECT now()\"") {
            rest.push(line);
            break;
        }
        rest.push(line);
    }
    assert!(rest.last().unwrap().starts_with("+1.500000s"), "{rest:?}");
    let end = AuditEvent::new(
        Some(session),
        AuditEventKind::SessionEnded {
            reason: SessionEndReason::ClientClosed,
            commands: 1,
            duration_us: 2_000_000,
        },
    );
    rt.block_on(sink.append_event(&end)).unwrap();
    let tail: Vec<String> = lines.map(Result::unwrap).collect();
    assert!(
        tail.last()
            .unwrap()
            .starts_with("== session ended after +2.000000s"),
        "{tail:?}"
    );
    assert!(child.wait().unwrap().success());
}

#[test]
fn verify_with_a_checkpoint_kept_outside_the_log() {
    let keys = Keys::new();
    let log = tempfile::tempdir().unwrap();
    write(&keys, log.path(), &sample_events());
    let out = keys.cmd("verify", log.path()).output().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let saved = stdout
        .lines()
        .find_map(|l| l.strip_prefix("checkpoint "))
        .unwrap()
        .to_owned();
    // Cut the last record and the whole checkpoint file.
    let seg = log.path().join(wirewarden_audit::segment_file_name(0));
    let data = std::fs::read(&seg).unwrap();
    let mut reader = wirewarden_audit::LogReader::new(log.path(), keys.verify_keys());
    let all = reader.poll().unwrap();
    let last_len = wirewarden_audit::encode_event(&all.last().unwrap().event)
        .unwrap()
        .len()
        + 97;
    std::fs::write(&seg, &data[..data.len() - last_len]).unwrap();
    std::fs::remove_file(log.path().join(wirewarden_audit::CHECKPOINT_FILE)).unwrap();
    let out = keys.cmd("verify", log.path()).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let out = keys
        .cmd("verify", log.path())
        .args(["--trusted-checkpoint", &saved])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        stdout.starts_with("DAMAGED: cut_from_tail at sequence number 15"),
        "{stdout}"
    );
}
