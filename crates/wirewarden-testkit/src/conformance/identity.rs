//! Conformance suite for `wirewarden_identity::IdentityProvider` implementations.
//!
//! Call [`run`] from an async integration test with your provider and a few credentials it
//! should and should not accept:
//!
//! ```no_run
//! # async fn demo(provider: &dyn wirewarden_identity::IdentityProvider) {
//! use wirewarden_identity::Credential;
//! use wirewarden_testkit::conformance::identity::{Fixtures, run};
//!
//! let fixtures = Fixtures::new(Credential::bearer("a-valid-token"), "expected-subject")
//!     .expired(Credential::bearer("an-expired-token"));
//! run(provider, &fixtures).await;
//! # }
//! ```
//!
//! What it checks, each a rule the pipeline relies on:
//! - the valid credential yields a principal with the expected, non-empty subject that has not
//!   expired at the time of the check;
//! - the same credential judged after that principal's expiry is refused;
//! - empty credentials of every kind, garbage, a tampered copy of the valid credential, and
//!   the `expired` and `unknown` fixtures are refused — never a default identity;
//! - neither the provider's `Debug` output nor the refusals' messages contain the secret.

use wirewarden_core::Timestamp;
use wirewarden_identity::{AuthContext, Credential, IdentityProvider};

/// The credentials the suite presents.
#[derive(Debug, Clone)]
pub struct Fixtures {
    /// A credential the provider accepts now.
    pub valid: Credential,
    /// The subject it must map to.
    pub subject: String,
    /// A credential that was valid once and has expired.
    pub expired: Option<Credential>,
    /// Well-formed credentials the provider does not know (a token never issued, a token
    /// for another audience, a certificate no rule maps).
    pub unknown: Vec<Credential>,
}

impl Fixtures {
    /// Fixtures with a valid credential and its subject.
    #[must_use]
    pub fn new(valid: Credential, subject: impl Into<String>) -> Self {
        Self {
            valid,
            subject: subject.into(),
            expired: None,
            unknown: Vec::new(),
        }
    }

    /// Adds an expired credential.
    #[must_use]
    pub fn expired(mut self, credential: Credential) -> Self {
        self.expired = Some(credential);
        self
    }

    /// Adds an unknown credential.
    #[must_use]
    pub fn unknown(mut self, credential: Credential) -> Self {
        self.unknown.push(credential);
        self
    }
}

/// Garbage of every shape: none of it may authenticate.
fn garbage() -> Vec<Credential> {
    let mut v: Vec<Credential> = [
        " ",
        "\0",
        "null",
        "Bearer ",
        "a.b.c",
        "..",
        "eyJ.eyJ.",
        "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZG1pbiJ9.",
        "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZG1pbiJ9.x",
        "\u{fffd}\u{202e}admin",
        "' OR '1'='1",
    ]
    .iter()
    .map(|s| Credential::bearer(*s))
    .collect();
    v.push(Credential::bearer("A".repeat(1 << 20)));
    v.push(Credential::bearer("eyJ".repeat(10_000)));
    v.push(Credential::password(Some("admin"), "admin"));
    v.push(Credential::client_certificate(vec![vec![
        0x30, 0x82, 0xff, 0xff,
    ]]));
    v.push(Credential::client_certificate(vec![vec![0u8; 64]]));
    v
}

/// Copies of `c` with one byte changed at a few positions.
fn tampered(c: &Credential) -> Vec<Credential> {
    fn flip(s: &str, at: usize) -> Option<String> {
        let mut b = s.as_bytes().to_vec();
        let x = b.get_mut(at)?;
        // Stay within the same character class so the copy keeps its shape.
        *x = match *x {
            b'a'..=b'y' | b'A'..=b'Y' | b'0'..=b'8' => *x + 1,
            b'z' => b'a',
            b'Z' => b'A',
            b'9' => b'0',
            _ => return None,
        };
        String::from_utf8(b).ok()
    }
    match c {
        Credential::ClientCertificate(chain) => {
            let Some(leaf) = chain.first() else {
                return Vec::new();
            };
            [leaf.len() / 2, leaf.len().saturating_sub(8)]
                .into_iter()
                .filter_map(|at| {
                    let mut l = leaf.clone();
                    *l.get_mut(at)? ^= 0x01;
                    Some(Credential::client_certificate(vec![l]))
                })
                .collect()
        }
        _ => {
            let Some(token) = c.token() else {
                return Vec::new();
            };
            let n = token.len();
            // Some position near each end and the middle that holds a flippable character.
            [n / 2, n.saturating_sub(10), 3]
                .into_iter()
                .filter_map(|at| (at..n).find_map(|i| flip(token, i)))
                .map(Credential::bearer)
                .collect()
        }
    }
}

fn secret_of(c: &Credential) -> Option<&str> {
    c.token().filter(|t| t.len() >= 8)
}

async fn refused(
    provider: &dyn IdentityProvider,
    credential: &Credential,
    ctx: &AuthContext,
    what: &str,
    secret: Option<&str>,
) {
    match provider.authenticate(credential, ctx).await {
        Ok(p) => panic!(
            "{what}: expected a refusal, got a principal for {:?} ({})",
            p.subject,
            credential.kind()
        ),
        Err(e) => {
            if let Some(s) = secret {
                let msg = format!("{e} {e:?}");
                assert!(!msg.contains(s), "{what}: the refusal repeats the secret");
            }
        }
    }
}

/// Runs every check against `provider`.
///
/// # Panics
/// On the first rule the provider breaks, with a message saying which.
pub async fn run(provider: &dyn IdentityProvider, fixtures: &Fixtures) {
    let ctx = AuthContext::new().with_target("conformance");
    let secret = secret_of(&fixtures.valid);

    // The valid credential maps to its subject, not yet expired.
    let principal = provider
        .authenticate(&fixtures.valid, &ctx)
        .await
        .unwrap_or_else(|e| panic!("the valid credential was refused: {e}"));
    assert!(!principal.subject.is_empty(), "empty subject");
    assert_eq!(principal.subject, fixtures.subject, "wrong subject");
    assert!(
        !principal.is_expired_at(ctx.now()),
        "the principal returned has already expired"
    );
    assert!(
        provider.accepts(&fixtures.valid),
        "the provider does not accept the shape of a credential it verifies"
    );

    // Debug output never holds the secret.
    if let Some(s) = secret {
        assert!(
            !format!("{provider:?}").contains(s),
            "the provider's Debug output holds the secret"
        );
    }

    // After the principal's expiry the same credential is refused.
    if let Some(exp) = principal.expires_at {
        let later = exp
            .checked_add(std::time::Duration::from_secs(3600))
            .unwrap_or(exp);
        refused(
            provider,
            &fixtures.valid,
            &ctx.clone().at(later),
            "the valid credential after its expiry",
            secret,
        )
        .await;
    }

    // Empty credentials of every kind.
    for empty in [
        Credential::bearer(""),
        Credential::password(None, ""),
        Credential::password(Some(&principal.subject), ""),
        Credential::client_certificate(Vec::new()),
        Credential::client_certificate(vec![Vec::new()]),
    ] {
        refused(provider, &empty, &ctx, "an empty credential", None).await;
    }

    for g in garbage() {
        refused(provider, &g, &ctx, "garbage", None).await;
    }

    for t in tampered(&fixtures.valid) {
        refused(
            provider,
            &t,
            &ctx,
            "a tampered copy of the valid credential",
            None,
        )
        .await;
    }

    if let Some(expired) = &fixtures.expired {
        refused(
            provider,
            expired,
            &ctx,
            "the expired credential",
            secret_of(expired),
        )
        .await;
    }
    for unknown in &fixtures.unknown {
        refused(
            provider,
            unknown,
            &ctx,
            "an unknown credential",
            secret_of(unknown),
        )
        .await;
    }

    // A credential judged far before the epoch of anything issued today is not a reason to
    // accept garbage either (a provider must not skip checks for odd clocks).
    let epoch = ctx.clone().at(Timestamp::UNIX_EPOCH);
    for g in garbage().iter().take(3) {
        refused(provider, g, &epoch, "garbage at the epoch", None).await;
    }

    // And the valid credential still works afterwards: refusals leave no bad state behind.
    let again = provider
        .authenticate(&fixtures.valid, &ctx)
        .await
        .unwrap_or_else(|e| panic!("the valid credential was refused after the checks: {e}"));
    assert_eq!(again.subject, fixtures.subject);
}
