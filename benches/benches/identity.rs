//! Identity checks run once per connection (and per HTTP request with a bearer token):
//! static-token lookup, JWT verification per algorithm with cached keys, claim mapping.

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use base64::Engine as _;
use criterion::{Criterion, criterion_group, criterion_main};
use wirewarden_identity::jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use wirewarden_identity::{
    JwksCache, JwksOptions, JwtConfig, JwtProvider, KeySource, StaticTokens, Timestamp, TokenHash,
};

/// Fixed benchmark keys (generated once for this file; they protect nothing).
const ES256_PKCS8: &str = "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgUe/d9vw5VqXoGsz5Htd0zzdrYYpEtj6M27avlEsAwbOhRANCAAQh5dpdkdlJ8Mb3RZBODFnlSzyf+1cl/wO4mk9vzf/B6ITMr/BBwkvIxTPDzdgfsf81oeWwf1d3jDFGq9Mz+eh+";
const EDDSA_PKCS8: &str = "MC4CAQAwBQYDK2VwBCIEIM3q/1gIyRn91rKOtBVN1bsTGO6J+IGMQBCySXBJU2MP";
const RS256_PKCS1: &str = "MIIEogIBAAKCAQEAtEmUo3UDGu1lBJHZDdz4GXNe9WCXN4Rafa8MqelY9zaoyP1MgGKSJA/m3THHNxtVChierOrMZz6EIuHl+cOj1TVKFNdJZ5rRnuKQwRl7zmQiPXdutfCrQrOSmB2Y2qse+bAIBY8rPOu0PMHbBmGqXwuXM0LDJec8QnqhUtowloS8O0UO6V4XUJ1LD5hvHQ1K0oPV5r2YmcDsG1f6E2fwJGqMtPLGpnPdeHJOfm1OzYVlt9Fa0VGt+hrGg0uoz1X2+QZYJApkoipZlQrqTPKfAriTTmz1TFrJpbiyBn/mFFH0GFpRBD0lt7uhdW8ZqUMQ79ABVJBaK5O8K5DClombTwIDAQABAoIBADgAgTzzHIdRRadRPLi7MpAJT+5t1hsnMErJROhEtV95aZ2hXRGmTNoJ3H9KNqUuBtDvi96PwvWxLC9/t0XJ2Urh1kS6CTG3HDU8EJYC+fvHDAHG5yt5+mDqUfeRfgkyzZjm7t73NYmjd+XFm+kUDm2etpV0QBU2infmCtWnNB+Uzz/leowHbGZ5J217RFD2/bdFRdPVDZThTMPg2sgfkBiwIAwZwK+6l6qQnX4i+jHPfZgq9WfYuZA1f1vj8bc7KyYfgM97SLBOPkV1+6Eegyb182gEmnKIXsLG6aXEpJF1up1JLqW9SVoJmnmEooz8PPKVhXWwkIPx8h0Ustkw9wkCgYEA2SFnAwMVz97yUPWk436RXo1n78bec08t8Lt4diXBNQ705U6shMrmdpdtBKH9uXP6+PG/ZgWt8718nMPzWV5b7cBeb+Ne62raJIHH8gMPe0x52jRdIsM9EWY9kohaM0zjT0XPnc6H5WHPFIcObVUIPoJ3WTKkFx2989hU0bvobEkCgYEA1I++nY1Js3KUMr0LDqs2bhSk7G39jB6k5LyjlHCa84scTDhVWaZxljkDH/asqDV/cQ9Tj2qgW8Qr72swExc0JC3NMytvdMUEnEVtX1Qj/IpZlEAiFp26qtWrvvz/AafiLxsKXU85VX7ja7ZSfMlyL2q0to263Sgso4k3M2wdWtcCgYAiVWjPjh5V12AjsyQWoP3loKCNxrmILD4Mcehzbjbl5+6Lj+wxt0/H8tvXPrI7L/7AfKGSRVWjVBQvScDiIcyRhLiqIp7wxN2npinyt88r5QTjnyIXDB5M8QjNcegpcoADGfvhbTYJ7HRtP4nleeuqzsCGhz5xNU/DDjMjUv5GmQKBgF4XKxduvVsTswoqqERcAYIE3WRS49MslW0zG23P0qdPwrzyisVeahVHM1zowlDLLZiMYj6vwkAcvB4E4ojw0oHZTGYEKhgURhAuo1V5V1yomTKImQ5Nz51ja9zk/LRs7jBP1eyr7wMrYdwCHs1iFotqvoe4gSj4aZoSWT8H8o6NAoGAE52OT2CQggOea6gx99IAeu0Z/pG+mSfPVmCPP2khpwepCWCvOtNjJ2Le8+qRRPavyZb0V+m9sYf319If8vEvutDSxio7U3Y6NkrOP3XNFTMdCvaQq0ZK+5cVbDO7P/TlPCL6VQ7/enJGEAqeqptZ2bHxFa7VcVnBjefvZpYzO90=";
const JWKS: &str = r#"{"keys": [{"kty": "EC", "x": "IeXaXZHZSfDG90WQTgxZ5Us8n_tXJf8DuJpPb83_weg", "y": "hMyv8EHCS8jFM8PN2B-x_zWh5bB_V3eMMUar0zP56H4", "crv": "P-256", "kid": "ec-1", "alg": "ES256"}, {"crv": "Ed25519", "x": "a4T_9LEjBZZajBJQMqCJUMPTx-A4JAlPMUOmHoGBNFg", "kty": "OKP", "kid": "ed-1", "alg": "EdDSA"}, {"kty": "RSA", "n": "tEmUo3UDGu1lBJHZDdz4GXNe9WCXN4Rafa8MqelY9zaoyP1MgGKSJA_m3THHNxtVChierOrMZz6EIuHl-cOj1TVKFNdJZ5rRnuKQwRl7zmQiPXdutfCrQrOSmB2Y2qse-bAIBY8rPOu0PMHbBmGqXwuXM0LDJec8QnqhUtowloS8O0UO6V4XUJ1LD5hvHQ1K0oPV5r2YmcDsG1f6E2fwJGqMtPLGpnPdeHJOfm1OzYVlt9Fa0VGt-hrGg0uoz1X2-QZYJApkoipZlQrqTPKfAriTTmz1TFrJpbiyBn_mFFH0GFpRBD0lt7uhdW8ZqUMQ79ABVJBaK5O8K5DClombTw", "e": "AQAB", "kid": "rsa-1", "alg": "RS256"}]}"#;
const ISSUER: &str = "https://idp.bench";

/// Verification with a static key set never waits, so one poll completes it.
fn now_or_never<F: Future>(f: F) -> F::Output {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(f).poll(&mut cx) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("static-key verification should not wait"),
    }
}

fn static_tokens(c: &mut Criterion) {
    let mut g = c.benchmark_group("static_token_verify");
    for n in [1usize, 100, 1_000] {
        let tokens: Vec<String> = (0..n)
            .map(|i| format!("ww_bench_token_{i:06}_xxxxxxxxxxxxxxxx"))
            .collect();
        let toml: String = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| {
                format!(
                    "[[tokens]]\nid = \"t{i}\"\nhash = \"{}\"\nsubject = \"agent-{i}\"\ngroups = [\"g\"]\n",
                    TokenHash::of(t, None)
                )
            })
            .collect();
        let p = StaticTokens::from_toml(&toml).unwrap();
        let now = Timestamp::now();
        let last = tokens.last().unwrap().clone();
        g.bench_function(format!("{n}_entries"), |b| {
            b.iter(|| p.verify(black_box(&last), now).unwrap())
        });
    }
    g.finish();
}

fn jwt(c: &mut Criterion) {
    let der = |s: &str| base64::engine::general_purpose::STANDARD.decode(s).unwrap();
    let set = serde_json::from_str(JWKS).unwrap();
    let cache = JwksCache::new(ISSUER, KeySource::Static(set), JwksOptions::default()).unwrap();
    let p = JwtProvider::with_keys(
        JwtConfig::new(ISSUER, &["https://crm.bench"]),
        Arc::new(cache),
    )
    .unwrap();
    let now = Timestamp::now();
    let claims = serde_json::json!({
        "iss": ISSUER, "aud": "https://crm.bench", "sub": "agent-7", "client_id": "agent-7",
        "iat": now.unix_secs(), "exp": now.unix_secs() + 3600, "jti": "bench",
        "scope": "read write", "groups": ["analysts", "agents"],
    });
    let mut g = c.benchmark_group("jwt_verify");
    for (name, alg, kid, key) in [
        (
            "es256",
            Algorithm::ES256,
            "ec-1",
            EncodingKey::from_ec_der(&der(ES256_PKCS8)),
        ),
        (
            "eddsa",
            Algorithm::EdDSA,
            "ed-1",
            EncodingKey::from_ed_der(&der(EDDSA_PKCS8)),
        ),
        (
            "rs256",
            Algorithm::RS256,
            "rsa-1",
            EncodingKey::from_rsa_der(&der(RS256_PKCS1)),
        ),
    ] {
        let mut h = Header::new(alg);
        h.kid = Some(kid.into());
        h.typ = Some("at+jwt".into());
        let token = encode(&h, &claims, &key).unwrap();
        assert_eq!(
            now_or_never(p.verify(&token, now)).unwrap().subject,
            "agent-7"
        );
        g.bench_function(name, |b| {
            b.iter(|| now_or_never(p.verify(black_box(&token), now)).unwrap())
        });
    }
    // A hostile token is refused before any signature work.
    let none = format!(
        "{}.{}.",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    g.bench_function("reject_alg_none", |b| {
        b.iter(|| now_or_never(p.verify(black_box(&none), now)).unwrap_err())
    });
    g.finish();
}

criterion_group!(benches, static_tokens, jwt);
criterion_main!(benches);
