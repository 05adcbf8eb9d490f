//! A refusal the client receives as a JSON body with a matching status.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

/// A request refused before (or instead of) reaching the upstream: the status, a stable
/// machine-readable code, and a message for people. Sent as
/// `{"error":{"code":…,"message":…}}` with `Content-Type: application/json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The HTTP status.
    pub status: StatusCode,
    /// A stable code, such as `denied`, `unauthenticated` (no usable credential),
    /// `invalid_token` (a bearer token was presented and refused: unknown, expired,
    /// revoked), `request_smuggling`.
    pub code: &'static str,
    /// A human-readable reason (never includes request or response data).
    pub message: String,
}

impl Rejection {
    /// A rejection with `status`, `code` and `message`.
    #[must_use]
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    /// A `401` for a bearer token that was presented and refused (unknown, expired,
    /// revoked): code `invalid_token`, and `WWW-Authenticate` says so as RFC 6750 asks
    /// (`error="invalid_token"`), so an OAuth client knows to get a fresh token.
    #[must_use]
    pub fn invalid_token(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "invalid_token", message)
    }

    /// The JSON body.
    #[must_use]
    pub fn body(&self) -> Bytes {
        let v = serde_json::json!({"error": {"code": self.code, "message": self.message}});
        Bytes::from(v.to_string())
    }

    /// The whole response; a 401 carries `WWW-Authenticate: Bearer`, with
    /// `error="invalid_token"` for [`invalid_token`](Self::invalid_token).
    #[must_use]
    pub fn into_response<B: From<Bytes>>(self) -> Response<B> {
        let body = self.body();
        let mut resp = Response::new(B::from(body.clone()));
        *resp.status_mut() = self.status;
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if self.status == StatusCode::UNAUTHORIZED {
            let challenge = if self.code == "invalid_token" {
                "Bearer realm=\"wirewarden\", error=\"invalid_token\""
            } else {
                "Bearer realm=\"wirewarden\""
            };
            h.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        resp
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl std::error::Error for Rejection {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_is_json_with_code_and_message() {
        let r = Rejection::new(StatusCode::FORBIDDEN, "denied", "rule \"no-writes\"");
        let resp: Response<Bytes> = r.into_response();
        assert_eq!(resp.status(), StatusCode::FORBIDDEN);
        let v: serde_json::Value = serde_json::from_slice(resp.body()).unwrap();
        assert_eq!(v["error"]["code"], "denied");
        assert_eq!(v["error"]["message"], "rule \"no-writes\"");
        assert!(resp.headers().get(header::WWW_AUTHENTICATE).is_none());
    }

    #[test]
    fn a_refused_token_says_invalid_token() {
        let resp: Response<Bytes> = Rejection::invalid_token("expired").into_response();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            resp.headers()[header::WWW_AUTHENTICATE],
            "Bearer realm=\"wirewarden\", error=\"invalid_token\""
        );
        let v: serde_json::Value = serde_json::from_slice(resp.body()).unwrap();
        assert_eq!(v["error"]["code"], "invalid_token");
    }

    #[test]
    fn unauthorized_names_the_scheme() {
        let resp: Response<Bytes> =
            Rejection::new(StatusCode::UNAUTHORIZED, "unauthenticated", "no token").into_response();
        assert_eq!(
            resp.headers()[header::WWW_AUTHENTICATE],
            "Bearer realm=\"wirewarden\""
        );
    }
}
