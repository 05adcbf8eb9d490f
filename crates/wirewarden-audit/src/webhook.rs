//! A sink that POSTs batches of events to an HTTP endpoint (a SIEM collector, a log
//! pipeline), at least once.
//!
//! Events are queued in append order; a background task sends them as a JSON array, up to
//! `batch_max` per request, waiting at most `linger` to fill a batch. A failed request
//! (connection error, timeout, 5xx, 408, 429) is retried with exponential backoff. A request
//! can fail after the receiver stored it (the response was lost), so the receiver may see a
//! batch twice: every event carries its `id` (OCSF: `metadata.uid`) for de-duplication. When
//! a batch still fails after `max_attempts`, or the endpoint refuses it with another 4xx,
//! the sink is poisoned: `flush` and every later `append` fail, so the pipeline knows the
//! trail is incomplete.
//!
//! Plain `http://` only; put a TLS-terminating forwarder on loopback in front of an
//! `https://` collector.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::{Request, StatusCode, Uri, header};
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use wirewarden_core::{AuditEvent, BoxError};

use crate::export::{ExportFormat, OcsfExporter};
use crate::sink::{Appended, AuditSink, Durability};
use crate::{Error, Result};

/// Configuration of a [`WebhookSink`].
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    url: String,
    format: ExportFormat,
    batch_max: usize,
    linger: Duration,
    initial_backoff: Duration,
    max_backoff: Duration,
    max_attempts: u32,
    request_timeout: Duration,
    headers: Vec<(String, String)>,
    queue: usize,
}

impl WebhookConfig {
    /// Deliver to `url` (`http://host:port/path`), native JSON, batches of up to 100 events,
    /// 200 ms linger, backoff from 100 ms to 10 s, 8 attempts, 10 s request timeout.
    #[must_use]
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            format: ExportFormat::Jsonl,
            batch_max: 100,
            linger: Duration::from_millis(200),
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            max_attempts: 8,
            request_timeout: Duration::from_secs(10),
            headers: Vec::new(),
            queue: 10_000,
        }
    }

    /// Native JSON or OCSF.
    #[must_use]
    pub fn format(mut self, format: ExportFormat) -> Self {
        self.format = format;
        self
    }

    /// The largest batch.
    #[must_use]
    pub fn batch_max(mut self, n: usize) -> Self {
        self.batch_max = n.max(1);
        self
    }

    /// How long to wait for more events before sending a partial batch.
    #[must_use]
    pub fn linger(mut self, d: Duration) -> Self {
        self.linger = d;
        self
    }

    /// The first and the largest retry delay.
    #[must_use]
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.initial_backoff = initial;
        self.max_backoff = max.max(initial);
        self
    }

    /// Attempts per batch before the sink gives up and poisons itself.
    #[must_use]
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n.max(1);
        self
    }

    /// Timeout of one request.
    #[must_use]
    pub fn request_timeout(mut self, d: Duration) -> Self {
        self.request_timeout = d;
        self
    }

    /// An extra request header (`Authorization`, a collector token).
    #[must_use]
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// How many events may wait for delivery before `append` waits.
    #[must_use]
    pub fn queue(mut self, n: usize) -> Self {
        self.queue = n.max(1);
        self
    }
}

enum Msg {
    Event(Box<AuditEvent>),
    Flush(oneshot::Sender<Result<(), String>>),
}

/// Delivers events to an HTTP endpoint in batches, at least once. See the module docs.
pub struct WebhookSink {
    url: String,
    tx: tokio::sync::Mutex<(u64, mpsc::Sender<Msg>)>,
    poisoned: Arc<Mutex<Option<String>>>,
}

impl fmt::Debug for WebhookSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookSink")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl WebhookSink {
    /// Starts the delivery task. Must be called within a tokio runtime.
    ///
    /// # Errors
    /// [`Error::Config`] for a URL that is not `http://host[:port]/path`.
    pub fn new(config: WebhookConfig) -> Result<Self> {
        let uri: Uri = config.url.parse().map_err(|e| Error::Config {
            reason: format!("webhook url {:?}: {e}", config.url),
        })?;
        if uri.scheme_str() != Some("http") || uri.host().is_none() {
            return Err(Error::Config {
                reason: format!(
                    "webhook url {:?} must be http://host[:port]/path",
                    config.url
                ),
            });
        }
        for (name, value) in &config.headers {
            if header::HeaderName::try_from(name.as_str()).is_err()
                || header::HeaderValue::try_from(value.as_str()).is_err()
            {
                return Err(Error::Config {
                    reason: format!("invalid webhook header {name:?}"),
                });
            }
        }
        let (tx, rx) = mpsc::channel(config.queue);
        let poisoned = Arc::new(Mutex::new(None));
        let url = config.url.clone();
        tokio::spawn(deliver_loop(config, uri, rx, Arc::clone(&poisoned)));
        Ok(Self {
            url,
            tx: tokio::sync::Mutex::new((0, tx)),
            poisoned,
        })
    }

    fn check(&self) -> Result<()> {
        match &*self
            .poisoned
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
        {
            Some(reason) => Err(Error::Webhook {
                url: self.url.clone(),
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }
}

#[async_trait]
impl AuditSink for WebhookSink {
    async fn append(&self, event: &AuditEvent) -> Result<Appended, BoxError> {
        self.check()?;
        // Numbering and queueing under one lock keeps the queue in the reported order.
        let mut guard = self.tx.lock().await;
        let seq = guard.0;
        guard
            .1
            .send(Msg::Event(Box::new(event.clone())))
            .await
            .map_err(|_| Error::Closed)?;
        guard.0 = seq.saturating_add(1);
        Ok(Appended::at(seq))
    }

    async fn flush(&self) -> Result<(), BoxError> {
        self.check()?;
        let (done, wait) = oneshot::channel();
        self.tx
            .lock()
            .await
            .1
            .send(Msg::Flush(done))
            .await
            .map_err(|_| Error::Closed)?;
        match wait.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(reason)) => Err(Error::Webhook {
                url: self.url.clone(),
                reason,
            }
            .into()),
            Err(_) => Err(Error::Closed.into()),
        }
    }

    fn durability(&self) -> Durability {
        Durability::Buffered
    }
}

async fn deliver_loop(
    config: WebhookConfig,
    uri: Uri,
    mut rx: mpsc::Receiver<Msg>,
    poisoned: Arc<Mutex<Option<String>>>,
) {
    let mut exporter = OcsfExporter::new();
    let mut batch: Vec<Value> = Vec::new();
    let mut waiters: Vec<oneshot::Sender<Result<(), String>>> = Vec::new();
    let mut closed = false;
    while !closed {
        let mut take = |msg: Msg, batch: &mut Vec<Value>, waiters: &mut Vec<_>| match msg {
            Msg::Event(e) => {
                if let Ok(Some(v)) = config.format.render(&mut exporter, &e) {
                    batch.push(v);
                }
            }
            Msg::Flush(w) => waiters.push(w),
        };
        match rx.recv().await {
            Some(m) => take(m, &mut batch, &mut waiters),
            None => closed = true,
        }
        let deadline = tokio::time::Instant::now() + config.linger;
        while !closed && batch.len() < config.batch_max && waiters.is_empty() {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(m)) => take(m, &mut batch, &mut waiters),
                Ok(None) => closed = true,
                Err(_) => break,
            }
        }
        // Everything queued before a flush request is in `batch` by now.
        let mut failure = None;
        for chunk in batch.chunks(config.batch_max) {
            if let Err(e) = deliver(&config, &uri, chunk).await {
                failure = Some(e);
                break;
            }
        }
        batch.clear();
        if let Some(reason) = failure {
            *poisoned
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(reason.clone());
            for w in waiters.drain(..) {
                let _ = w.send(Err(reason.clone()));
            }
            // Refuse whatever is still queued.
            rx.close();
            while let Some(m) = rx.recv().await {
                if let Msg::Flush(w) = m {
                    let _ = w.send(Err(reason.clone()));
                }
            }
            return;
        }
        for w in waiters.drain(..) {
            let _ = w.send(Ok(()));
        }
    }
}

async fn deliver(config: &WebhookConfig, uri: &Uri, events: &[Value]) -> Result<(), String> {
    let body = Bytes::from(serde_json::to_vec(events).map_err(|e| e.to_string())?);
    let mut backoff = config.initial_backoff;
    let mut last = String::new();
    for attempt in 1..=config.max_attempts {
        match tokio::time::timeout(config.request_timeout, post(config, uri, body.clone())).await {
            Ok(Ok(status)) if status.is_success() => return Ok(()),
            Ok(Ok(status))
                if status.is_client_error()
                    && status != StatusCode::REQUEST_TIMEOUT
                    && status != StatusCode::TOO_MANY_REQUESTS =>
            {
                return Err(format!("endpoint refused the batch: HTTP {status}"));
            }
            Ok(Ok(status)) => last = format!("HTTP {status}"),
            Ok(Err(e)) => last = e.to_string(),
            Err(_) => last = "request timed out".into(),
        }
        if attempt < config.max_attempts {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(config.max_backoff);
        }
    }
    Err(format!(
        "gave up after {} attempts: {last}",
        config.max_attempts
    ))
}

async fn post(config: &WebhookConfig, uri: &Uri, body: Bytes) -> Result<StatusCode, BoxError> {
    let host = uri.host().ok_or("no host")?;
    let port = uri.port_u16().unwrap_or(80);
    let stream = TcpStream::connect((host.trim_matches(|c| c == '[' || c == ']'), port)).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let conn = tokio::spawn(conn);
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut req = Request::post(path)
        .header(header::HOST, uri.authority().map_or(host, |a| a.as_str()))
        .header(header::CONTENT_TYPE, "application/json");
    for (name, value) in &config.headers {
        req = req.header(name.as_str(), value.as_str());
    }
    let resp = sender.send_request(req.body(Full::new(body))?).await?;
    let status = resp.status();
    let _ = resp.into_body().collect().await;
    drop(sender);
    let _ = conn.await;
    Ok(status)
}
