//! Client certificates generated with rcgen, mapped by CN and SAN rules; the conformance suite.

use rcgen::{CertificateParams, DnType, KeyPair, SanType, date_time_ymd};
use sha2::{Digest, Sha256};
use wirewarden_identity::{
    AuthContext, AuthMethod, ClientCertificates, Credential, Error, IdentityProvider, Timestamp,
};
use wirewarden_testkit::conformance::identity::{Fixtures, run};

type Ca = rcgen::CertifiedIssuer<'static, KeyPair>;

fn ca() -> Ca {
    ca_named("wirewarden test CA")
}

fn ca_named(cn: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, cn);
    rcgen::CertifiedIssuer::self_signed(params, key).unwrap()
}

fn leaf(ca: &Ca, cn: Option<&str>, sans: Vec<SanType>, years: Option<(i32, i32)>) -> Vec<u8> {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.subject_alt_names = sans;
    params.distinguished_name = rcgen::DistinguishedName::new();
    if let Some(cn) = cn {
        params.distinguished_name.push(DnType::CommonName, cn);
    }
    if let Some((from, to)) = years {
        params.not_before = date_time_ymd(from, 1, 1);
        params.not_after = date_time_ymd(to, 1, 1);
    }
    params.signed_by(&key, ca).unwrap().der().to_vec()
}

fn uri(s: &str) -> SanType {
    SanType::URI(s.try_into().unwrap())
}
fn dns(s: &str) -> SanType {
    SanType::DnsName(s.try_into().unwrap())
}
fn email(s: &str) -> SanType {
    SanType::Rfc822Name(s.try_into().unwrap())
}

const RULES: &str = r#"
[[rules]]
field = "san_uri"
pattern = "spiffe://prod.wirewarden.test/agents/*"
groups = ["agents"]
attributes = { trust_domain = "prod" }

[[rules]]
field = "san_dns"
pattern = "batch.internal.test"
groups = ["batch"]

[[rules]]
field = "san_email"
pattern = "ops@wirewarden.test"
groups = ["ops"]

[[rules]]
field = "common_name"
pattern = "legacy-*"
groups = ["legacy"]
"#;

fn provider() -> ClientCertificates {
    ClientCertificates::from_toml(RULES).unwrap()
}

async fn auth(p: &ClientCertificates, der: &[u8]) -> Result<wirewarden_identity::Principal, Error> {
    p.verify(der, Timestamp::now())
}

#[tokio::test]
async fn spiffe_dns_email_and_cn_rules_map_in_order() {
    let ca = ca();
    let p = provider();

    let der = leaf(
        &ca,
        Some("legacy-ignored"),
        vec![
            dns("x.test"),
            uri("spiffe://prod.wirewarden.test/agents/etl-7"),
        ],
        None,
    );
    let principal = auth(&p, &der).await.unwrap();
    // The SPIFFE rule comes first, so it wins over the CN rule.
    assert_eq!(
        principal.subject,
        "spiffe://prod.wirewarden.test/agents/etl-7"
    );
    assert!(principal.in_group("agents") && !principal.in_group("legacy"));
    assert_eq!(principal.attributes["trust_domain"], "prod");
    let fingerprint: String = Sha256::digest(&der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        principal.auth,
        AuthMethod::ClientCertificate { fingerprint }
    );
    // rcgen's default notAfter (4096) is past what a timestamp holds: no expiry.
    assert_eq!(principal.expires_at, None);
    let dated = leaf(&ca, Some("legacy-dated"), vec![], Some((2020, 2200)));
    assert_eq!(
        auth(&p, &dated)
            .await
            .unwrap()
            .expires_at
            .map(|t| t.to_string()),
        Some("2200-01-01T00:00:00.000000000Z".to_owned())
    );

    let der = leaf(&ca, None, vec![dns("BATCH.internal.test")], None);
    assert_eq!(auth(&p, &der).await.unwrap().subject, "BATCH.internal.test");

    let der = leaf(&ca, None, vec![email("ops@wirewarden.test")], None);
    assert!(auth(&p, &der).await.unwrap().in_group("ops"));

    let der = leaf(&ca, Some("legacy-billing"), vec![], None);
    assert_eq!(auth(&p, &der).await.unwrap().subject, "legacy-billing");

    // Through the trait, with the chain as the TLS layer hands it over.
    let chain = vec![der.clone(), ca.der().to_vec()];
    let dynp: &dyn IdentityProvider = &p;
    let cred = Credential::client_certificate(chain);
    assert!(dynp.accepts(&cred) && !dynp.accepts(&Credential::bearer("x")));
    assert_eq!(
        dynp.authenticate(&cred, &AuthContext::new())
            .await
            .unwrap()
            .subject,
        "legacy-billing"
    );
}

#[tokio::test]
async fn unmapped_expired_and_malformed_certificates_are_refused() {
    let ca = ca();
    let p = provider();
    // Near misses: another trust domain, the bare prefix, a different CN prefix.
    for der in [
        leaf(
            &ca,
            None,
            vec![uri("spiffe://dev.wirewarden.test/agents/etl-7")],
            None,
        ),
        leaf(
            &ca,
            None,
            vec![uri("spiffe://prod.wirewarden.test/agents/")],
            None,
        ),
        leaf(&ca, Some("modern-billing"), vec![dns("other.test")], None),
        leaf(&ca, None, vec![], None),
    ] {
        assert_eq!(auth(&p, &der).await.unwrap_err(), Error::Unmapped);
    }
    let old = leaf(&ca, Some("legacy-x"), vec![], Some((2001, 2002)));
    assert!(matches!(auth(&p, &old).await, Err(Error::Expired { .. })));
    let future = leaf(&ca, Some("legacy-x"), vec![], Some((2200, 2201)));
    assert!(matches!(
        auth(&p, &future).await,
        Err(Error::NotYetValid { .. })
    ));

    let good = leaf(&ca, Some("legacy-x"), vec![], None);
    let mut trailing = good.clone();
    trailing.push(0);
    for bad in [
        &b""[..],
        &[0x30],
        &[0x30, 0x82, 0xff, 0xff],
        &good[..good.len() / 2],
        &trailing,
        &vec![0x41; 70_000],
    ] {
        let e = auth(&p, bad).await.unwrap_err();
        assert!(
            matches!(e, Error::Missing | Error::Malformed { .. }),
            "{e:?}"
        );
    }
}

#[tokio::test]
async fn chains_are_verified_against_trust_anchors_when_configured() {
    let (ca1, ca2) = (ca(), ca());
    let p = provider()
        .with_trust_anchors_pem(ca1.pem().as_bytes())
        .unwrap();
    let ctx = AuthContext::new();
    let good = leaf(&ca1, Some("legacy-a"), vec![], Some((2020, 2200)));
    let cred = Credential::client_certificate(vec![good.clone()]);
    assert_eq!(
        p.authenticate(&cred, &ctx).await.unwrap().subject,
        "legacy-a"
    );
    // Issued by another CA: the mapping would match, the chain does not verify.
    let stranger = leaf(&ca2, Some("legacy-a"), vec![], Some((2020, 2200)));
    let err = p
        .authenticate(
            &Credential::client_certificate(vec![stranger.clone()]),
            &ctx,
        )
        .await
        .unwrap_err();
    assert_eq!(wirewarden_identity::error_code(&err), "untrusted");
    // Sending the other CA along as an "intermediate" does not help.
    let err = p
        .authenticate(
            &Credential::client_certificate(vec![stranger, ca2.der().to_vec()]),
            &ctx,
        )
        .await
        .unwrap_err();
    assert_eq!(wirewarden_identity::error_code(&err), "untrusted");
    assert!(provider().with_trust_anchors_pem(b"not pem").is_err());

    // The same from configuration: a CA file named in TOML.
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("clients-ca.pem");
    std::fs::write(&ca_file, ca1.pem()).unwrap();
    let p = ClientCertificates::from_toml(&format!("ca_file = \"{}\"\n{RULES}", ca_file.display()))
        .unwrap();
    let stranger = leaf(&ca2, Some("legacy-a"), vec![], Some((2020, 2200)));
    assert!(p.verify_chain(&[good], Timestamp::now()).is_ok());
    assert_eq!(
        p.verify_chain(&[stranger], Timestamp::now())
            .unwrap_err()
            .code(),
        "untrusted"
    );
}

/// A leaf with a known serial number, to be listed in a revocation list.
fn numbered_leaf(ca: &Ca, cn: &str, serial: u64) -> Vec<u8> {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.serial_number = Some(rcgen::SerialNumber::from(serial));
    params.not_before = date_time_ymd(2020, 1, 1);
    params.not_after = date_time_ymd(2200, 1, 1);
    params.signed_by(&key, ca).unwrap().der().to_vec()
}

/// A revocation list from `ca` listing `revoked`, valid until the start of `next_year`.
fn crl(ca: &Ca, revoked: &[u64], next_year: i32) -> Vec<u8> {
    let params = rcgen::CertificateRevocationListParams {
        this_update: date_time_ymd(2020, 1, 1),
        next_update: date_time_ymd(next_year, 1, 1),
        crl_number: rcgen::SerialNumber::from(1u64),
        issuing_distribution_point: None,
        revoked_certs: revoked
            .iter()
            .map(|s| rcgen::RevokedCertParams {
                serial_number: rcgen::SerialNumber::from(*s),
                revocation_time: date_time_ymd(2021, 1, 1),
                reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: rcgen::KeyIdMethod::Sha256,
    };
    params.signed_by(ca).unwrap().pem().unwrap().into_bytes()
}

#[tokio::test]
async fn revocation_lists_refuse_revoked_uncovered_and_stale_certificates() {
    let (ca1, ca2) = (ca(), ca_named("another CA"));
    let kept = numbered_leaf(&ca1, "legacy-kept", 7);
    let revoked = numbered_leaf(&ca1, "legacy-revoked", 8);
    let now = Timestamp::now();
    let with = |lists: &[Vec<u8>]| {
        provider()
            .with_trust_anchors_and_crls_pem(ca1.pem().as_bytes(), lists)
            .unwrap()
    };
    let refusal = |p: &ClientCertificates, der: &[u8]| {
        let err = p.verify_chain(&[der.to_vec()], now).unwrap_err();
        assert_eq!(err.code(), "untrusted");
        err.to_string()
    };

    let p = with(&[crl(&ca1, &[8], 2200)]);
    assert_eq!(
        p.verify_chain(std::slice::from_ref(&kept), now)
            .unwrap()
            .subject,
        "legacy-kept"
    );
    let why = refusal(&p, &revoked);
    assert!(why.contains("Revoked"), "{why}");

    // Fails closed: only another CA's list, so nothing says whether ca1's certificate
    // stands; a list past its next update is no list either; nor is one that claims to be
    // ca1's and is signed by another key.
    let why = refusal(&with(&[crl(&ca2, &[], 2200)]), &kept);
    assert!(why.contains("UnknownRevocationStatus"), "{why}");
    let impostor = ca();
    let why = refusal(&with(&[crl(&impostor, &[], 2200)]), &kept);
    assert!(why.contains("BadSignature"), "{why}");
    let why = refusal(&with(&[crl(&ca1, &[], 2021)]), &kept);
    assert!(why.contains("revocation list expired"), "{why}");
    // Several lists, in one PEM or several: the issuer's own is used.
    let both = [crl(&ca2, &[], 2200), crl(&ca1, &[8], 2200)].concat();
    let p = with(&[both]);
    assert!(p.verify_chain(std::slice::from_ref(&kept), now).is_ok());
    refusal(&p, &revoked);
    assert!(
        provider()
            .with_trust_anchors_and_crls_pem(ca1.pem().as_bytes(), &[b"not a crl".to_vec()])
            .is_err()
    );

    // From configuration: crl_files next to ca_file, and never without it.
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("clients-ca.pem");
    let crl_file = dir.path().join("clients-ca.crl.pem");
    std::fs::write(&ca_file, ca1.pem()).unwrap();
    std::fs::write(&crl_file, crl(&ca1, &[8], 2200)).unwrap();
    let p = ClientCertificates::from_toml(&format!(
        "ca_file = \"{}\"\ncrl_files = [\"{}\"]\n{RULES}",
        ca_file.display(),
        crl_file.display()
    ))
    .unwrap();
    assert!(p.verify_chain(&[kept], now).is_ok());
    refusal(&p, &revoked);
    let err = ClientCertificates::from_toml(&format!(
        "crl_files = [\"{}\"]\n{RULES}",
        crl_file.display()
    ))
    .unwrap_err();
    assert!(err.to_string().contains("need ca_file"), "{err}");
}

#[test]
fn catch_all_patterns_are_refused() {
    for pattern in ["", "*"] {
        let toml = format!("[[rules]]\nfield = \"common_name\"\npattern = \"{pattern}\"\n");
        assert_eq!(
            ClientCertificates::from_toml(&toml).unwrap_err().code(),
            "config"
        );
    }
    assert!(
        ClientCertificates::from_toml("[[rules]]\nfield = \"serial\"\npattern = \"x\"\n").is_err()
    );
}

#[tokio::test]
async fn client_certificates_pass_the_conformance_suite() {
    let ca = ca();
    let p = provider();
    let valid = leaf(
        &ca,
        None,
        vec![uri("spiffe://prod.wirewarden.test/agents/a1")],
        Some((2020, 2200)),
    );
    let expired = leaf(&ca, Some("legacy-x"), vec![], Some((2001, 2002)));
    let unmapped = leaf(&ca, Some("nobody"), vec![], None);
    // The suite tampers with the certificate, so the provider verifies chains itself here.
    let p = p.with_trust_anchors_pem(ca.pem().as_bytes()).unwrap();
    let fixtures = Fixtures::new(
        Credential::client_certificate(vec![valid]),
        "spiffe://prod.wirewarden.test/agents/a1",
    )
    .expired(Credential::client_certificate(vec![expired]))
    .unknown(Credential::client_certificate(vec![unmapped]));
    run(&p, &fixtures).await;
}
