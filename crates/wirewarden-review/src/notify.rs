//! Telling humans that a command waits for them: the [`Notifier`] trait and a webhook
//! notifier that posts Slack-compatible JSON (`{"text": …, "blocks": […]}`), which Slack
//! incoming webhooks, Mattermost and most chat bridges accept.

use std::fmt;

use async_trait::async_trait;
use serde_json::{Value, json};
use wirewarden_core::BoxError;
// The webhook notifier's transport.
#[cfg(feature = "webhook")]
use {
    bytes::Bytes,
    http_body_util::{BodyExt, Full, Limited},
    hyper::Request,
    hyper::header::{CONTENT_TYPE, HOST, USER_AGENT},
    hyper_util::client::legacy::Client,
    hyper_util::client::legacy::connect::HttpConnector,
    hyper_util::rt::{TokioExecutor, TokioIo},
    rustls::pki_types::ServerName,
    std::sync::Arc,
    std::time::Duration,
    tokio::net::TcpStream,
    tokio_rustls::TlsConnector,
};

use crate::review::{Review, ReviewState};

/// Something to tell reviewers.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum Notification<'a> {
    /// A command is held and waits for approval.
    Requested(&'a Review),
    /// A review was approved or denied.
    Resolved(&'a Review),
}

/// Sends review notifications somewhere humans look.
#[async_trait]
pub trait Notifier: fmt::Debug + Send + Sync {
    /// Sends one notification.
    ///
    /// # Errors
    /// Whatever the transport reports.
    async fn notify(&self, notification: &Notification<'_>) -> Result<(), BoxError>;
}

#[cfg(feature = "webhook")]
/// Errors of the webhook notifier.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookError {
    /// The URL is not an `http://` or `https://` URL with a host (the URL itself is not
    /// repeated: its path is the webhook's secret).
    #[error("webhook URL is not usable: {reason}")]
    BadUrl {
        /// Why.
        reason: &'static str,
    },
    /// The endpoint answered with a non-success status.
    #[error("webhook answered {status}")]
    Status {
        /// The HTTP status.
        status: u16,
    },
    /// The endpoint did not answer in time.
    #[error("webhook did not answer within {timeout:?}")]
    Timeout {
        /// The limit.
        timeout: Duration,
    },
}

#[cfg(feature = "webhook")]
/// Posts Slack-compatible JSON to a webhook URL with hyper.
///
/// `http://` URLs go through a pooled hyper-util client ([`WebhookNotifier::new`]);
/// `https://` URLs need the caller's rustls client configuration (its trusted roots and
/// crypto provider, [`WebhookNotifier::with_tls`]) and open one TLS connection per message,
/// which is plenty for review notifications. An `https` URL is never sent in clear.
#[derive(Clone)]
pub struct WebhookNotifier {
    uri: hyper::Uri,
    client: Client<HttpConnector, Full<Bytes>>,
    tls: Option<Arc<rustls::ClientConfig>>,
    timeout: Duration,
}

#[cfg(feature = "webhook")]
impl fmt::Debug for WebhookNotifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL path of a chat webhook is its secret: show only scheme and host.
        f.debug_struct("WebhookNotifier")
            .field("scheme", &self.uri.scheme_str())
            .field("host", &self.uri.host())
            .field("tls", &self.tls.is_some())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

#[cfg(feature = "webhook")]
/// The most response body read from the endpoint (only to finish the exchange cleanly).
const MAX_RESPONSE: usize = 64 * 1024;

/// The most characters of command text put into a message.
const MAX_COMMAND_TEXT: usize = 1_500;

#[cfg(feature = "webhook")]
impl WebhookNotifier {
    /// A notifier posting to an `http://` `url`, with a 10-second timeout.
    ///
    /// # Errors
    /// [`WebhookError::BadUrl`] unless `url` is an `http://` URL with a host (an `https://`
    /// URL needs [`WebhookNotifier::with_tls`]).
    pub fn new(url: &str) -> Result<Self, WebhookError> {
        Self::build(url, None)
    }

    /// A notifier posting to an `http://` or `https://` `url`; `https` connections are
    /// verified with `tls` (its roots decide which servers are trusted).
    ///
    /// # Errors
    /// [`WebhookError::BadUrl`] unless `url` is an `http://` or `https://` URL with a host.
    pub fn with_tls(url: &str, tls: Arc<rustls::ClientConfig>) -> Result<Self, WebhookError> {
        Self::build(url, Some(tls))
    }

    fn build(url: &str, tls: Option<Arc<rustls::ClientConfig>>) -> Result<Self, WebhookError> {
        // Never echo the URL itself into errors or logs: its path is the webhook's secret.
        let bad = |reason| WebhookError::BadUrl { reason };
        let uri: hyper::Uri = url.parse().map_err(|_| bad("not a URL"))?;
        match (uri.scheme_str(), &tls) {
            (Some("http"), _) | (Some("https"), Some(_)) => {}
            (Some("https"), None) => {
                return Err(bad("https:// needs WebhookNotifier::with_tls"));
            }
            _ => return Err(bad("only http:// and https:// are supported")),
        }
        if uri.host().is_none() {
            return Err(bad("no host"));
        }
        let client = Client::builder(TokioExecutor::new()).build_http();
        Ok(Self {
            uri,
            client,
            tls,
            timeout: Duration::from_secs(10),
        })
    }

    /// Sends `req` over a new TLS connection to the URL's host.
    async fn send_tls(
        &self,
        mut req: Request<Full<Bytes>>,
        tls: &Arc<rustls::ClientConfig>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, BoxError> {
        let host = self.uri.host().ok_or("no host")?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = self.uri.port_u16().unwrap_or(443);
        let server_name = ServerName::try_from(host.to_owned())?;
        let tcp = TcpStream::connect((host, port)).await?;
        let stream = TlsConnector::from(Arc::clone(tls))
            .connect(server_name, tcp)
            .await?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        // On a bare connection the request line carries only the path, and Host is ours to set.
        let path = self
            .uri
            .path_and_query()
            .map_or("/", hyper::http::uri::PathAndQuery::as_str)
            .parse()?;
        let authority = self
            .uri
            .authority()
            .ok_or("no authority")?
            .as_str()
            .parse()?;
        *req.uri_mut() = path;
        req.headers_mut().insert(HOST, authority);
        Ok(sender.send_request(req).await?)
    }

    /// Sets the timeout for one post.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    async fn post(&self, body: Vec<u8>) -> Result<(), BoxError> {
        let req = Request::post(self.uri.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(
                USER_AGENT,
                concat!("wirewarden-review/", env!("CARGO_PKG_VERSION")),
            )
            .body(Full::new(Bytes::from(body)))?;
        let exchange = async {
            let res = match (&self.tls, self.uri.scheme_str()) {
                (Some(tls), Some("https")) => self.send_tls(req, tls).await?,
                _ => self.client.request(req).await?,
            };
            let status = res.status();
            // Drain (a bounded amount of) the body so the connection can be reused.
            let _ = Limited::new(res.into_body(), MAX_RESPONSE).collect().await;
            if status.is_success() {
                Ok(())
            } else {
                Err(Box::new(WebhookError::Status {
                    status: status.as_u16(),
                }) as BoxError)
            }
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| WebhookError::Timeout {
                timeout: self.timeout,
            })?
    }
}

#[cfg(feature = "webhook")]
#[async_trait]
impl Notifier for WebhookNotifier {
    async fn notify(&self, notification: &Notification<'_>) -> Result<(), BoxError> {
        let body = serde_json::to_vec(&slack_message(notification))?;
        self.post(body).await
    }
}

/// Escapes the three characters Slack's mrkdwn treats as control characters.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn truncated(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", s.get(..i).unwrap_or_default()),
        None => s.to_owned(),
    }
}

/// The Slack-compatible message for a notification: a plain `text` fallback and `blocks`.
#[must_use]
pub fn slack_message(notification: &Notification<'_>) -> Value {
    match notification {
        Notification::Requested(r) => {
            let who = escape(&r.binding.requester);
            let target = escape(&r.binding.target.to_string());
            let groups = if r.requirement.reviewer_groups.is_empty() {
                "any reviewer".to_owned()
            } else {
                escape(&r.requirement.reviewer_groups.join(", "))
            };
            let code = escape(&truncated(&r.command_text, MAX_COMMAND_TEXT)).replace("```", "'''");
            let text = format!(
                "Review requested: {who} wants to run a {} command on {target} (review {}).",
                r.class, r.id
            );
            json!({
                "text": text,
                "blocks": [
                    {"type": "header", "text": {"type": "plain_text", "text": "Review requested"}},
                    {"type": "section", "text": {"type": "mrkdwn",
                        "text": format!("*{who}* wants to run on *{target}*:\n```{code}```")}},
                    {"type": "section", "fields": [
                        {"type": "mrkdwn", "text": format!("*Why*\n{}", escape(&r.reason))},
                        {"type": "mrkdwn", "text": format!("*Rule*\n{}", escape(r.rule.as_str()))},
                        {"type": "mrkdwn", "text": format!("*Approvals needed*\n{} from {groups}", r.requirement.min_approvals)},
                        {"type": "mrkdwn", "text": format!("*Expires*\n{}", r.expires_at)},
                    ]},
                    {"type": "context", "elements": [
                        {"type": "mrkdwn", "text": format!("review `{}` · command digest `{}`", r.id, r.binding.digest)},
                    ]},
                ],
            })
        }
        Notification::Resolved(r) => {
            let (verdict, detail) = match &r.state {
                ReviewState::Approved { scope, .. } => (
                    "approved",
                    format!("by {} for {scope}", escape(&r.approvers().join(", "))),
                ),
                ReviewState::Denied { by, reason } => {
                    ("denied", format!("by {}: {}", escape(by), escape(reason)))
                }
                _ => ("closed", String::new()),
            };
            let text = format!("Review {} {verdict} {detail}", r.id);
            json!({
                "text": text,
                "blocks": [
                    {"type": "section", "text": {"type": "mrkdwn", "text": format!("Review `{}` *{verdict}* {detail}", r.id)}},
                ],
            })
        }
    }
}
