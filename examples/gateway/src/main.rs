//! `wirewarden-gateway`: the reference gateway. `serve` runs one listener per target and the
//! admin API; the other subcommands operate on the audit trail offline or talk to a running
//! gateway's admin API. See README.md for the operator's guide.

mod admin;
mod config;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use hyper::Method;
use serde_json::json;
use wirewarden::Pipeline;
use wirewarden::audit::{
    Checkpoint, LogReader, OcsfExporter, Transcript, VerifyOptions, to_json_line, verify_dir_with,
};
use wirewarden::core::{CommandClass, SessionId};
use wirewarden::http::HttpProxy;
use wirewarden::identity::StaticTokens;
use wirewarden::postgres::PostgresProxy;
use wirewarden::redis::RedisProxy;

use crate::config::Config;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Parser, Debug)]
#[command(
    name = "wirewarden-gateway",
    version,
    about = "Identity-aware gateway in front of PostgreSQL, Redis and HTTP APIs"
)]
struct Cli {
    /// The configuration file.
    #[arg(long, short, global = true, default_value = "gateway.toml")]
    config: PathBuf,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the gateway: one listener per target, and the admin API.
    Serve,
    /// Verify, replay or export the audit trail.
    Audit {
        #[command(subcommand)]
        command: AuditCmd,
    },
    /// List, approve or deny held commands (through the admin API).
    Review {
        #[command(subcommand)]
        command: ReviewCmd,
    },
    /// Issue, revoke or list just-in-time grants (through the admin API).
    Grant {
        #[command(subcommand)]
        command: GrantCmd,
    },
    /// Static tokens.
    Token {
        #[command(subcommand)]
        command: TokenCmd,
    },
}

#[derive(Subcommand, Debug)]
enum AuditCmd {
    /// Check the chain, signatures and segments. Exit status 1 if anything is damaged, 3 if
    /// the log is intact but holds records of a newer event encoding this version cannot
    /// read. When intact, also prints the latest checkpoint as `checkpoint <hex>`: kept
    /// where the log's host cannot write and given back with `--trusted-checkpoint`, it
    /// catches records cut from the end together with the checkpoints that covered them.
    Verify {
        /// A checkpoint an earlier `verify` printed (its hex, or a file holding it): the
        /// log must still hold every record it covers.
        #[arg(long, value_name = "HEX|FILE")]
        trusted_checkpoint: Option<String>,
    },
    /// Print a readable transcript of one session.
    Replay {
        /// The session id.
        session: String,
        /// Keep reading as the log grows, until the session ends.
        #[arg(long)]
        follow: bool,
    },
    /// Print every event as one JSON object per line.
    Export {
        /// `ocsf` (OCSF 1.7) or `jsonl` (native events).
        #[arg(long, value_enum, default_value = "ocsf")]
        format: ExportFormat,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ExportFormat {
    Ocsf,
    Jsonl,
}

#[derive(Subcommand, Debug)]
enum ReviewCmd {
    /// Pending reviews.
    List,
    /// Approve a review.
    Approve {
        /// The review id.
        id: String,
        /// Who approves.
        #[arg(long = "as")]
        reviewer: String,
        /// The approver's groups.
        #[arg(long = "group")]
        groups: Vec<String>,
        /// Approve with a grant of this many minutes instead of this command once.
        #[arg(long)]
        grant_minutes: Option<u64>,
    },
    /// Deny a review.
    Deny {
        /// The review id.
        id: String,
        /// Who denies.
        #[arg(long = "as")]
        reviewer: String,
        /// The reviewer's groups.
        #[arg(long = "group")]
        groups: Vec<String>,
        /// Why.
        #[arg(long, default_value = "denied")]
        reason: String,
    },
}

#[derive(Subcommand, Debug)]
enum GrantCmd {
    /// Issue a grant.
    Issue {
        /// The subject it is for.
        #[arg(long)]
        subject: String,
        /// The target.
        #[arg(long)]
        target: String,
        /// The riskiest class allowed.
        #[arg(long)]
        class: CommandClass,
        /// Globs over objects (relations, keys) it covers; none means any. A statement
        /// that calls a function that may read any table is covered only by `*`.
        #[arg(long = "object")]
        objects: Vec<String>,
        /// How long it lasts.
        #[arg(long)]
        minutes: u64,
        /// Who issues it.
        #[arg(long = "as")]
        issued_by: String,
        /// Why.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Revoke a grant.
    Revoke {
        /// The grant id.
        id: String,
        /// Who revokes it.
        #[arg(long = "as")]
        by: String,
    },
    /// Active grants of a subject on a target.
    List {
        /// The subject.
        #[arg(long)]
        subject: String,
        /// The target.
        #[arg(long)]
        target: String,
    },
}

#[derive(Subcommand, Debug)]
enum TokenCmd {
    /// Generate a token; prints it once, and the entry to add to the tokens file.
    Issue {
        /// The token's id (recorded in audit events).
        #[arg(long)]
        id: String,
        /// The subject it authenticates.
        #[arg(long)]
        subject: String,
        /// Groups.
        #[arg(long = "group")]
        groups: Vec<String>,
    },
}

/// Every command allocates a few short-lived buffers (its audit records, its decision) on
/// one runtime thread and frees them on another; mimalloc's thread-local free lists take
/// about a tenth off the gateway's user CPU per pipelined Redis command compared with the
/// system allocator (docs/performance.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// Writes to standard output (the CLI's answer, as opposed to logs on standard error).
fn out(text: impl std::fmt::Display) {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{text}");
}

async fn run(cli: Cli) -> Result<ExitCode, BoxError> {
    let config = Config::load(&cli.config)?;
    match cli.command {
        Cmd::Serve => serve(config).await,
        Cmd::Audit { command } => audit(&config, command).await,
        Cmd::Review { command } => review(&config, command).await,
        Cmd::Grant { command } => grant(&config, command).await,
        Cmd::Token {
            command:
                TokenCmd::Issue {
                    id,
                    subject,
                    groups,
                },
        } => {
            let file = config
                .identity
                .tokens_file
                .as_ref()
                .ok_or_else(|| config.error("token issue needs [identity] tokens_file"))?;
            let text = std::fs::read_to_string(config.resolve(file)).unwrap_or_default();
            let tokens = StaticTokens::from_toml(&text)?;
            let token = StaticTokens::generate_token()?;
            let hash = tokens.hash(&token);
            out(format!(
                "# token (shown once; give it to {subject}): {token}"
            ));
            out(format!(
                "[[tokens]]\nid = {id:?}\nhash = \"{hash}\"\nsubject = {subject:?}\ngroups = {groups:?}"
            ));
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn serve(config: Config) -> Result<ExitCode, BoxError> {
    let admin_token = Arc::new(config.secret("admin.token", &config.admin.token)?);
    let policy = config.policy()?;
    let mut builder =
        Pipeline::builder(config.identity()?, policy.clone()).budgets(policy.budgets_handle());
    if let Some(m) = config.masking()? {
        builder = builder.masking(m);
    }
    if let Some((profile, key)) = config.trail_masking()? {
        builder = builder.mask_commands_in_trail(profile, key);
    }
    if let Some(w) = config.review.max_wait_secs {
        builder = builder.max_review_wait(Duration::from_secs(w));
    }
    // Open certificate sessions are rechecked whenever the lists below are reloaded.
    if let Some(verification) = config.client_cert_verification()? {
        builder = builder.client_cert_verification(verification);
    }
    let pipeline = Arc::new(builder.audit(Arc::new(config.audit_sink()?)).build()?);

    let mut tasks = Vec::new();
    for t in &config.targets {
        let listener = tokio::net::TcpListener::bind(t.listen)
            .await
            .map_err(|e| config.error(format!("target {:?}: listen {}: {e}", t.name, t.listen)))?;
        eprintln!(
            "wirewarden-gateway: target {} ({}) on {} -> {}",
            t.name,
            t.protocol,
            listener.local_addr()?,
            t.upstream
        );
        let task = if t.protocol == "http" {
            let proxy = HttpProxy::new(pipeline.clone(), config.http_target(t)?)?;
            tokio::spawn(async move {
                if let Err(e) = proxy.listen(listener).await {
                    eprintln!("wirewarden-gateway: listener stopped: {e}");
                }
            })
        } else if t.protocol == "redis" {
            let proxy = RedisProxy::new(pipeline.clone(), config.redis_target(t)?);
            tokio::spawn(async move {
                if let Err(e) = proxy.listen(listener).await {
                    eprintln!("wirewarden-gateway: listener stopped: {e}");
                }
            })
        } else {
            let proxy = PostgresProxy::new(pipeline.clone(), config.postgres_target(t)?);
            tokio::spawn(async move {
                if let Err(e) = proxy.listen(listener).await {
                    eprintln!("wirewarden-gateway: listener stopped: {e}");
                }
            })
        };
        tasks.push(task);
    }
    if let Some(verification) = config.client_cert_verification()? {
        let mut files = config.crl_files();
        if !files.is_empty() {
            let every = Duration::from_secs(config.identity.crl_refresh_secs.unwrap_or(30).max(1));
            tasks.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    match files.check(&verification) {
                        Ok(true) => eprintln!(
                            "wirewarden-gateway: client certificate revocation lists reloaded; open sessions rechecked"
                        ),
                        Ok(false) => {}
                        Err(e) => eprintln!(
                            "wirewarden-gateway: client certificate revocation lists not reloaded, the lists in use stay: {e}"
                        ),
                    }
                }
            }));
        }
    }
    let admin = tokio::net::TcpListener::bind(config.admin.listen)
        .await
        .map_err(|e| config.error(format!("admin.listen {}: {e}", config.admin.listen)))?;
    eprintln!("wirewarden-gateway: admin API on {}", admin.local_addr()?);
    tasks.push(tokio::spawn(admin::serve(
        admin,
        pipeline.clone(),
        admin_token,
    )));

    shutdown_signal().await;
    eprintln!("wirewarden-gateway: shutting down: no new connections; waiting for open sessions");
    for t in &tasks {
        t.abort();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while pipeline.metrics().sessions_active.load(Ordering::Relaxed) > 0
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    pipeline.audit_sink().flush().await?;
    eprintln!("wirewarden-gateway: stopped");
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

async fn audit(config: &Config, cmd: AuditCmd) -> Result<ExitCode, BoxError> {
    let keys = config.verify_keys()?;
    let dir = config.audit_dir();
    match cmd {
        AuditCmd::Verify { trusted_checkpoint } => {
            let mut opts = VerifyOptions::default();
            if let Some(t) = trusted_checkpoint {
                let text = match std::fs::read_to_string(&t) {
                    Ok(file) => file.trim().to_owned(),
                    Err(_) => t,
                };
                opts = opts.with_trusted_checkpoint(Checkpoint::from_hex(&text)?);
            }
            let report = verify_dir_with(&dir, &keys, &opts)?;
            out(&report);
            if let (true, Some(c)) = (report.is_ok(), &report.last_checkpoint) {
                out(format!("checkpoint {}", c.to_hex()));
            }
            Ok(ExitCode::from(report.exit_status()))
        }
        AuditCmd::Replay { session, follow } => {
            let session: SessionId = session.parse()?;
            let mut transcript = Transcript::new(session);
            let mut reader = LogReader::new(dir, keys);
            loop {
                for entry in reader.poll()? {
                    if let Some(text) = transcript.render(&entry.event) {
                        out(text.trim_end());
                    }
                }
                if !follow || transcript.is_finished() {
                    return Ok(passed_over(&reader));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        AuditCmd::Export { format } => {
            let mut reader = LogReader::new(dir, keys);
            let mut ocsf = OcsfExporter::new();
            for entry in reader.poll()? {
                match format {
                    ExportFormat::Jsonl => out(to_json_line(&entry.event)?),
                    ExportFormat::Ocsf => {
                        if let Some(v) = ocsf.export(&entry.event) {
                            out(v);
                        }
                    }
                }
            }
            Ok(passed_over(&reader))
        }
    }
}

/// Exit status 0, or 3 with a note on stderr when the reader passed over records of a newer
/// event encoding (they verify; this version cannot show them).
fn passed_over(reader: &LogReader) -> ExitCode {
    let Some(note) = reader.passed_over() else {
        return ExitCode::SUCCESS;
    };
    eprintln!("wirewarden-gateway: audit: {note}");
    ExitCode::from(3)
}

async fn admin_call(
    config: &Config,
    method: Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> Result<ExitCode, BoxError> {
    let token = config.secret("admin.token", &config.admin.token)?;
    let (status, value) = admin::call(config.admin.listen, &token, method, path, body).await?;
    out(serde_json::to_string_pretty(&value)?);
    Ok(if status.is_success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

async fn review(config: &Config, cmd: ReviewCmd) -> Result<ExitCode, BoxError> {
    match cmd {
        ReviewCmd::List => admin_call(config, Method::GET, "/reviews", None).await,
        ReviewCmd::Approve {
            id,
            reviewer,
            groups,
            grant_minutes,
        } => {
            let body =
                json!({ "reviewer": reviewer, "groups": groups, "grant_minutes": grant_minutes });
            admin_call(
                config,
                Method::POST,
                &format!("/reviews/{id}/approve"),
                Some(body),
            )
            .await
        }
        ReviewCmd::Deny {
            id,
            reviewer,
            groups,
            reason,
        } => {
            let body = json!({ "reviewer": reviewer, "groups": groups, "reason": reason });
            admin_call(
                config,
                Method::POST,
                &format!("/reviews/{id}/deny"),
                Some(body),
            )
            .await
        }
    }
}

async fn grant(config: &Config, cmd: GrantCmd) -> Result<ExitCode, BoxError> {
    match cmd {
        GrantCmd::Issue {
            subject,
            target,
            class,
            objects,
            minutes,
            issued_by,
            reason,
        } => {
            let body = json!({
                "subject": subject, "target": target, "max_class": class, "objects": objects,
                "minutes": minutes, "issued_by": issued_by, "reason": reason,
            });
            admin_call(config, Method::POST, "/grants", Some(body)).await
        }
        GrantCmd::Revoke { id, by } => {
            admin_call(
                config,
                Method::DELETE,
                &format!("/grants/{id}?by={by}"),
                None,
            )
            .await
        }
        GrantCmd::List { subject, target } => {
            admin_call(
                config,
                Method::GET,
                &format!("/grants?subject={subject}&target={target}"),
                None,
            )
            .await
        }
    }
}
