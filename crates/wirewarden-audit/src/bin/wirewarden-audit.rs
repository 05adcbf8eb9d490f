//! `wirewarden-audit`: verify, replay, export and append to an audit log directory.
//!
//! Key files: the chain key file holds `<key-id> <64 hex>` on one line; the checkpoint
//! signing key file holds the 64-hex Ed25519 seed; the public key is 64 hex (given inline or
//! in a file). `keygen` writes all three.

use std::io::{BufRead as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use wirewarden_audit::{
    ChainKey, Checkpoint, CheckpointKey, CheckpointSigner, Durability, FileSink, LogReader,
    OcsfExporter, Transcript, VerifyKeys, VerifyOptions, to_json_line, verify_dir, verify_dir_with,
};
use wirewarden_core::{AuditEvent, BoxError, SessionId};

#[derive(Parser, Debug)]
#[command(
    name = "wirewarden-audit",
    version,
    about = "Verify, replay and export wirewarden audit logs"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(clap::Args, Debug)]
struct KeyArgs {
    /// The log directory.
    #[arg(long)]
    dir: PathBuf,
    /// File with `<key-id> <hex key>` of the chain key.
    #[arg(long)]
    key_file: PathBuf,
    /// The checkpoint public key (64 hex characters) or a file holding it.
    #[arg(long)]
    public_key: String,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    Ocsf,
    Jsonl,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Check the log: prints OK, or the first bad sequence number and the kind of damage.
    /// Exit status 0 when OK, 1 when damaged, 2 on errors, 3 when OK but some records were
    /// written by a newer version of the event encoding and cannot be read by this one.
    Verify {
        #[command(flatten)]
        keys: KeyArgs,
        /// A checkpoint printed by an earlier `verify` and kept outside the log directory
        /// (hex, or a file holding it); catches a cut of the log and its checkpoint file.
        #[arg(long)]
        trusted_checkpoint: Option<String>,
    },
    /// Print a readable transcript of one session.
    Replay {
        #[command(flatten)]
        keys: KeyArgs,
        /// The session id.
        #[arg(long)]
        session: String,
        /// Keep reading as the log grows, until the session ends.
        #[arg(long)]
        follow: bool,
        /// How often to look for new records when following, in milliseconds.
        #[arg(long, default_value_t = 200)]
        poll_ms: u64,
    },
    /// Write every event to standard output, one JSON object per line.
    Export {
        #[command(flatten)]
        keys: KeyArgs,
        /// `ocsf` (OCSF 1.7 events) or `jsonl` (native events).
        #[arg(long, value_enum)]
        format: Format,
    },
    /// Append native JSON events read line by line from standard input; prints `ok <seq>`
    /// once each is recorded (on disk, in `fsync` mode).
    Append {
        /// The log directory.
        #[arg(long)]
        dir: PathBuf,
        /// File with `<key-id> <hex key>` of the chain key.
        #[arg(long)]
        key_file: PathBuf,
        /// File with the hex seed of the checkpoint signing key.
        #[arg(long)]
        signing_key_file: PathBuf,
        /// `fsync` or `buffered`.
        #[arg(long, default_value = "fsync")]
        durability: String,
        /// Segment size before rotation, in bytes.
        #[arg(long, default_value_t = 64 << 20)]
        segment_bytes: u64,
    },
    /// Create a chain key, a checkpoint signing key and its public key in a directory.
    Keygen {
        /// Where to write `chain.key`, `checkpoint.key` and `checkpoint.pub`.
        #[arg(long)]
        out: PathBuf,
        /// The chain key id to record in the log.
        #[arg(long, default_value = "audit-1")]
        key_id: String,
    },
}

fn read_trimmed(path: &Path) -> Result<String, BoxError> {
    Ok(std::fs::read_to_string(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .trim()
        .to_owned())
}

fn chain_key(path: &Path) -> Result<ChainKey, BoxError> {
    let text = read_trimmed(path)?;
    let (id, hex) = text
        .split_once(char::is_whitespace)
        .ok_or("chain key file must hold `<key-id> <hex key>`")?;
    Ok(ChainKey::from_hex(id, hex.trim())?)
}

fn keys(args: &KeyArgs) -> Result<VerifyKeys, BoxError> {
    let public = if Path::new(&args.public_key).exists() {
        read_trimmed(Path::new(&args.public_key))?
    } else {
        args.public_key.clone()
    };
    Ok(VerifyKeys {
        chain: chain_key(&args.key_file)?,
        checkpoint: CheckpointKey::from_hex(&public)?,
    })
}

fn out(line: &str) -> Result<(), BoxError> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(line.as_bytes())?;
    stdout.write_all(b"\n")?;
    stdout.flush()?;
    Ok(())
}

fn verified(args: &KeyArgs, k: &VerifyKeys) -> Result<(), BoxError> {
    let report = verify_dir(&args.dir, k)?;
    if report.is_ok() {
        Ok(())
    } else {
        Err(format!("refusing to read a damaged log: {report}").into())
    }
}

fn run(cli: Cli) -> Result<ExitCode, BoxError> {
    match cli.command {
        Cmd::Verify {
            keys: args,
            trusted_checkpoint,
        } => {
            let k = keys(&args)?;
            let mut opts = VerifyOptions::default();
            if let Some(t) = trusted_checkpoint {
                let text = if Path::new(&t).exists() {
                    read_trimmed(Path::new(&t))?
                } else {
                    t
                };
                opts = opts.with_trusted_checkpoint(Checkpoint::from_hex(&text)?);
            }
            let report = verify_dir_with(&args.dir, &k, &opts)?;
            out(&report.to_string())?;
            if let (true, Some(c)) = (report.is_ok(), &report.last_checkpoint) {
                out(&format!("checkpoint {}", c.to_hex()))?;
            }
            Ok(ExitCode::from(report.exit_status()))
        }
        Cmd::Replay {
            keys: args,
            session,
            follow,
            poll_ms,
        } => {
            let k = keys(&args)?;
            let session: SessionId = session.parse()?;
            if !follow {
                verified(&args, &k)?;
            }
            let mut reader = LogReader::new(&args.dir, k);
            let mut transcript = Transcript::new(session);
            loop {
                for entry in reader.poll()? {
                    if let Some(text) = transcript.render(&entry.event) {
                        out(&text)?;
                    }
                }
                if !follow || transcript.is_finished() {
                    return Ok(passed_over(&reader));
                }
                std::thread::sleep(Duration::from_millis(poll_ms));
            }
        }
        Cmd::Export { keys: args, format } => {
            let k = keys(&args)?;
            verified(&args, &k)?;
            let mut exporter = OcsfExporter::new();
            let mut reader = LogReader::new(&args.dir, k);
            for entry in reader.poll()? {
                match format {
                    Format::Jsonl => out(&to_json_line(&entry.event)?)?,
                    Format::Ocsf => {
                        if let Some(v) = exporter.export(&entry.event) {
                            out(&serde_json::to_string(&v)?)?;
                        }
                    }
                }
            }
            Ok(passed_over(&reader))
        }
        Cmd::Append {
            dir,
            key_file,
            signing_key_file,
            durability,
            segment_bytes,
        } => {
            let key = chain_key(&key_file)?;
            let signer = CheckpointSigner::from_hex(&read_trimmed(&signing_key_file)?)?;
            let durability: Durability = durability.parse()?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                let sink = FileSink::builder(&dir, key, signer)
                    .durability(durability)
                    .segment_max_bytes(segment_bytes)
                    .open()?;
                for line in std::io::stdin().lock().lines() {
                    let line = line?;
                    if line.trim().is_empty() {
                        continue;
                    }
                    let event: AuditEvent = serde_json::from_str(&line)?;
                    let seq = sink.append_event(&event).await?;
                    out(&format!("ok {seq}"))?;
                }
                sink.close().await?;
                Ok::<_, BoxError>(ExitCode::SUCCESS)
            })
        }
        Cmd::Keygen { out: dir, key_id } => {
            std::fs::create_dir_all(&dir)?;
            let key = ChainKey::generate(key_id)?;
            let signer = CheckpointSigner::generate()?;
            std::fs::write(
                dir.join("chain.key"),
                format!("{} {}\n", key.id(), key.to_hex()),
            )?;
            std::fs::write(dir.join("checkpoint.key"), format!("{}\n", signer.to_hex()))?;
            std::fs::write(
                dir.join("checkpoint.pub"),
                format!("{}\n", signer.public().to_hex()),
            )?;
            out(&format!(
                "wrote chain.key, checkpoint.key, checkpoint.pub to {}",
                dir.display()
            ))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Exit status 0, or 3 with a note on stderr when the reader passed over records of a newer
/// event encoding (they verify; this version cannot show them).
fn passed_over(reader: &LogReader) -> ExitCode {
    let Some(note) = reader.passed_over() else {
        return ExitCode::SUCCESS;
    };
    let _ = writeln!(std::io::stderr(), "wirewarden-audit: {note}");
    ExitCode::from(3)
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "wirewarden-audit: {e}");
            ExitCode::from(2)
        }
    }
}
