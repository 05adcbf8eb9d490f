//! Property tests: arbitrary input never panics and never authenticates.

use std::sync::{Arc, OnceLock};

use proptest::prelude::*;
use wirewarden_identity::{
    JwksCache, JwksOptions, JwtConfig, JwtProvider, KeySource, StaticTokens, Timestamp, TokenHash,
    looks_like_jwt,
};

fn jwt() -> &'static JwtProvider {
    static P: OnceLock<JwtProvider> = OnceLock::new();
    P.get_or_init(|| {
        let set = serde_json::from_str(
            r#"{"keys":[{"kty":"EC","crv":"P-256","kid":"k","x":"c2AK76_h9-0POcoS47ceJ3Jg3xLjGsK947Kd0POsI-Y","y":"EB93rthPcGAMmQqZbils31u-JWUitOhik5aQo__WzIk"}]}"#,
        )
        .unwrap();
        let cache = JwksCache::new("https://i", KeySource::Static(set), JwksOptions::default()).unwrap();
        JwtProvider::with_keys(JwtConfig::new("https://i", &["a"]), Arc::new(cache)).unwrap()
    })
}

fn b64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_strings_never_verify(s in ".{0,400}") {
        let now = Timestamp::now();
        prop_assert!(rt().block_on(jwt().verify(&s, now)).is_err());
        let tokens = StaticTokens::from_toml(&format!(
            "[[tokens]]\nid = \"a\"\nhash = \"{}\"\nsubject = \"s\"\n",
            TokenHash::of("the-one-token", None)
        )).unwrap();
        prop_assert_eq!(tokens.verify(&s, now).is_ok(), s == "the-one-token");
        let _ = looks_like_jwt(&s);
    }

    #[test]
    fn structured_forgeries_never_verify(
        alg in prop::sample::select(vec!["ES256", "RS256", "HS256", "none", "EdDSA", "ES384", "", "PS256"]),
        kid in prop::option::of(prop::sample::select(vec!["k", "x", ""])),
        typ in prop::option::of(prop::sample::select(vec!["at+jwt", "JWT", "id"])),
        sub in "[a-z]{0,8}",
        exp in prop::option::of(any::<i64>()),
        nbf in prop::option::of(any::<i64>()),
        sig in "[A-Za-z0-9_-]{0,120}",
    ) {
        let mut header = serde_json::json!({"alg": alg});
        if let Some(k) = kid { header["kid"] = k.into(); }
        if let Some(t) = typ { header["typ"] = t.into(); }
        let mut claims = serde_json::json!({"iss": "https://i", "aud": "a", "sub": sub});
        if let Some(e) = exp { claims["exp"] = e.into(); }
        if let Some(n) = nbf { claims["nbf"] = n.into(); }
        let token = format!("{}.{}.{}", b64(&header.to_string()), b64(&claims.to_string()), sig);
        prop_assert!(rt().block_on(jwt().verify(&token, Timestamp::now())).is_err());
        wirewarden_identity::fuzzing::jwt_parse(token.as_bytes());
    }
}
