//! The inspection layer end to end on loopback: a real client, the layer served by
//! `server::serve_connection`, the crate's `Upstream` client, and a real recording upstream.

mod support;

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use support::{
    CUSTOMER_JSON, TOKEN, TestGate, UPSTREAM_KEY, UPSTREAM_SECRET, eventually, send, start_front,
    start_upstream,
};
use wirewarden_core::{Access, CommandClass, ObjectKind};
use wirewarden_http::strict::Limits;
use wirewarden_mask::{MaskKey, Profile, Strategy};

fn get(addr: std::net::SocketAddr, path: &str) -> http::request::Builder {
    Request::get(format!("http://{addr}{path}"))
}

fn json(body: &Bytes) -> serde_json::Value {
    serde_json::from_slice(body).expect("a JSON body")
}

#[tokio::test]
async fn bearer_is_removed_and_the_upstream_credential_injected() {
    let upstream = start_upstream().await;
    let gate = TestGate::default();
    let front = start_front(upstream.addr, gate.clone(), Limits::default()).await;

    let req = get(front, "/public/a?x=1")
        .header("authorization", format!("Bearer {TOKEN}"))
        .header(UPSTREAM_KEY, "forged-by-the-client")
        .header("x-client", "kept")
        .header("connection", "x-hop")
        .header("x-hop", "for the gateway only")
        .header("keep-alive", "timeout=5")
        .header("x-forwarded-for", "10.1.2.3")
        .header("x-real-ip", "10.1.2.3")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (status, headers, body) = send(false, req).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "ok GET /public/a?x=1 0");
    assert_eq!(headers["x-from"], "upstream");

    let seen = upstream.take();
    assert_eq!(seen.len(), 1);
    let h = &seen[0].headers;
    assert!(
        h.get("authorization").is_none(),
        "the agent's token never reaches the upstream"
    );
    let keys: Vec<_> = h.get_all(UPSTREAM_KEY).iter().collect();
    assert_eq!(
        keys,
        vec![UPSTREAM_SECRET],
        "the gateway's credential replaces the client's"
    );
    assert_eq!(h["x-client"], "kept");
    for hop in ["x-hop", "keep-alive"] {
        assert!(h.get(hop).is_none(), "hop-by-hop {hop} was forwarded");
    }
    // Where the client came from is the gateway's to say.
    assert!(h.get("x-real-ip").is_none());
    let forwarded_for: Vec<_> = h.get_all("x-forwarded-for").iter().collect();
    assert_eq!(forwarded_for, vec!["127.0.0.1"]);

    let admitted = gate.admitted.lock().unwrap().clone();
    assert_eq!(admitted.len(), 1);
    assert_eq!(admitted[0].bearer.as_deref(), Some(TOKEN));
    assert!(admitted[0].headers.get("authorization").is_none());
    assert!(admitted[0].peer.is_some_and(|p| p.ip().is_loopback()));
}

#[tokio::test]
async fn no_token_or_another_scheme_is_401_and_nothing_is_forwarded() {
    let upstream = start_upstream().await;
    let gate = TestGate::default();
    let front = start_front(upstream.addr, gate.clone(), Limits::default()).await;

    // No token: the gate refuses.
    let req = get(front, "/public/a")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (status, headers, body) = send(false, req).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(headers["www-authenticate"], "Bearer realm=\"wirewarden\"");
    assert_eq!(json(&body)["error"]["code"], "unauthenticated");
    // Basic: refused by the layer, before the gate.
    let req = get(front, "/public/a")
        .header("authorization", "Basic dXNlcjpwYXNz")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (status, _, body) = send(false, req).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(json(&body)["error"]["code"], "unauthenticated");
    // A wrong token.
    let req = get(front, "/public/a")
        .header("authorization", "Bearer not-the-token")
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(send(false, req).await.0, StatusCode::UNAUTHORIZED);

    assert!(upstream.take().is_empty());
    assert_eq!(
        gate.admitted.lock().unwrap().len(),
        2,
        "Basic never reached the gate"
    );
}

#[tokio::test]
async fn denial_is_403_json_and_the_session_goes_on() {
    let upstream = start_upstream().await;
    let gate = TestGate::default();
    let front = start_front(upstream.addr, gate.clone(), Limits::default()).await;
    let client = support::client(false);

    let req = Request::delete(format!("http://{front}/admin/users/7"))
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    let v = json(&body);
    assert_eq!(v["error"]["code"], "denied");
    assert_eq!(
        v["error"]["message"],
        "rule \"no-admin\" denies this request"
    );

    // Same client, same pooled connection: the next request is served.
    let req = get(front, "/public/after")
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);

    let seen: Vec<_> = upstream.take().into_iter().map(|s| s.target).collect();
    assert_eq!(seen, vec!["/public/after"]);
    let admitted = gate.admitted.lock().unwrap().clone();
    let del = &admitted[0];
    assert_eq!(del.command.class, CommandClass::Write);
    assert_eq!(del.route.as_ref().unwrap().param("rest"), Some("users/7"));
}

#[tokio::test]
async fn commands_carry_class_route_and_params() {
    let upstream = start_upstream().await;
    let gate = TestGate::default();
    let front = start_front(upstream.addr, gate.clone(), Limits::default()).await;

    for (method, path) in [
        (Method::GET, "/unmapped/thing?q=1"),
        (Method::PATCH, "/customers/42/orders/a%20b?expand=items"),
        (Method::from_bytes(b"PURGE").unwrap(), "/public/cache"),
    ] {
        let req = Request::builder()
            .method(method)
            .uri(format!("http://{front}{path}"))
            .header("authorization", format!("Bearer {TOKEN}"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        assert_eq!(send(false, req).await.0, StatusCode::OK);
    }
    let admitted = gate.admitted.lock().unwrap().clone();

    let unmapped = &admitted[0];
    assert!(unmapped.route.is_none());
    assert_eq!(unmapped.command.class, CommandClass::Unknown, "fail closed");
    assert_eq!(unmapped.command.text, "GET /unmapped/thing?q=1");
    assert_eq!(unmapped.command.objects[0].name, "/unmapped/thing");

    let order = &admitted[1];
    let route = order.route.as_ref().unwrap();
    assert_eq!(route.template, "/customers/{id}/orders/{order}");
    assert_eq!(
        route.params,
        vec![
            ("id".to_owned(), "42".to_owned()),
            ("order".to_owned(), "a b".to_owned())
        ]
    );
    assert_eq!(order.command.verb, "PATCH");
    assert_eq!(order.command.class, CommandClass::Write);
    assert_eq!(
        order.command.text,
        "PATCH /customers/42/orders/a%20b?expand=items"
    );
    let obj = &order.command.objects[0];
    assert_eq!(
        (obj.kind, obj.name.as_str(), obj.access),
        (
            ObjectKind::Path,
            "/customers/{id}/orders/{order}",
            Access::Write
        )
    );

    let purge = &admitted[2];
    assert!(purge.route.is_some());
    assert_eq!(
        purge.command.class,
        CommandClass::Unknown,
        "extension method"
    );
}

#[tokio::test]
async fn http2_prior_knowledge_goes_through_the_layer() {
    let upstream = start_upstream().await;
    let gate = TestGate::default();
    let front = start_front(upstream.addr, gate.clone(), Limits::default()).await;

    let req = Request::post(format!("http://{front}/public/h2"))
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Full::new(Bytes::from_static(b"hello over h2")))
        .unwrap();
    let (status, _, body) = send(true, req).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "ok POST /public/h2 13");
    let seen = upstream.take();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].body, "hello over h2");
    assert!(seen[0].headers.get("authorization").is_none());
    assert_eq!(seen[0].headers[UPSTREAM_KEY], UPSTREAM_SECRET);
    let admitted = gate.admitted.lock().unwrap().clone();
    // The body was read ahead and bound to the command.
    assert_eq!(admitted[0].command.text, "POST /public/h2\n\nhello over h2");

    // Denial over HTTP/2 is the same JSON.
    let req = Request::get(format!("http://{front}/admin/x"))
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (status, _, body) = send(true, req).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(json(&body)["error"]["code"], "denied");
}

#[tokio::test]
async fn on_complete_is_called_once_with_status_and_bytes() {
    let upstream = start_upstream().await;
    let gate = TestGate::default();
    let front = start_front(upstream.addr, gate.clone(), Limits::default()).await;
    let client = support::client(false);

    let mut bodies = Vec::new();
    for path in ["/public/one", "/public/two"] {
        let req = get(front, path)
            .header("authorization", format!("Bearer {TOKEN}"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = client.request(req).await.unwrap();
        let status = resp.status();
        let body = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .unwrap()
            .to_bytes();
        assert_eq!(status, StatusCode::OK);
        bodies.push(body);
        let want = bodies.len();
        eventually(|| gate.outcomes.lock().unwrap().len() >= want).await;
    }
    let outcomes = gate.outcomes.lock().unwrap().clone();
    let texts: Vec<_> = outcomes.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        texts,
        vec!["GET /public/one", "GET /public/two"],
        "once each"
    );
    for ((_, o), body) in outcomes.iter().zip(&bodies) {
        assert_eq!(o.status, Some(StatusCode::OK));
        assert_eq!(o.bytes_out, body.len() as u64);
        assert_eq!(o.bytes_in, body.len() as u64);
        assert_eq!(o.error, None);
    }
}

#[tokio::test]
async fn upstream_down_is_502_with_the_error_in_the_outcome() {
    // A port with nothing listening: bind, learn the port, close.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let gate = TestGate::default();
    let front = start_front(closed, gate.clone(), Limits::default()).await;
    let req = get(front, "/public/a")
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (status, _, body) = send(false, req).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(json(&body)["error"]["code"], "upstream_unavailable");
    let outcomes = gate.outcomes.lock().unwrap().clone();
    assert_eq!(outcomes.len(), 1);
    assert_eq!(outcomes[0].1.status, Some(StatusCode::BAD_GATEWAY));
    assert!(outcomes[0].1.error.is_some());
}

#[tokio::test]
async fn request_bodies_over_the_limit_are_refused() {
    let upstream = start_upstream().await;
    let gate = TestGate::default();
    let mut limits = Limits::default();
    limits.max_body_bytes = 1024;
    let front = start_front(upstream.addr, gate.clone(), limits).await;

    // Declared too large: refused before the gate.
    let req = Request::post(format!("http://{front}/public/big"))
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Full::new(Bytes::from(vec![b'a'; 2048])))
        .unwrap();
    let (status, _, body) = send(false, req).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(json(&body)["error"]["code"], "body_too_large");
    assert!(gate.admitted.lock().unwrap().is_empty());

    // Streamed (chunked, no length): cut while it streams.
    let chunks = futures_util::stream::iter((0..8).map(|_| {
        Ok::<_, std::convert::Infallible>(http_body::Frame::data(Bytes::from(vec![b'a'; 512])))
    }));
    let req = Request::post(format!("http://{front}/public/big"))
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(http_body_util::StreamBody::new(chunks))
        .unwrap();
    let resp = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http()
        .request(req)
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(
        upstream.take().iter().all(|s| s.body.len() <= 1024),
        "the upstream never receives more than the limit"
    );
}

#[tokio::test]
async fn masked_route_masks_the_json_body() {
    let upstream = start_upstream().await;
    let profile = Profile::builder("agents")
        .key(MaskKey::new([7; 32]))
        .strategy("ssn", Strategy::keep_last(4))
        .build()
        .unwrap();
    let gate = TestGate {
        profile: Some(Arc::new(profile)),
        ..TestGate::default()
    };
    let front = start_front(upstream.addr, gate.clone(), Limits::default()).await;

    let req = get(front, "/customers/42")
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (status, _, body) = send(false, req).await;
    assert_eq!(status, StatusCode::OK);
    let text = String::from_utf8(body.to_vec()).unwrap();
    assert!(!text.contains("123-45-6789"), "{text}");
    assert!(!text.contains("4111 1111 1111 1111"), "{text}");
    let v = json(&body);
    assert_eq!(v["name"], "Ann Lee");
    assert!(v["ssn"].as_str().unwrap().ends_with("6789"));

    eventually(|| !gate.outcomes.lock().unwrap().is_empty()).await;
    let outcomes = gate.outcomes.lock().unwrap().clone();
    let o = &outcomes[0].1;
    assert_eq!(o.status, Some(StatusCode::OK));
    assert_eq!(o.bytes_in, CUSTOMER_JSON.len() as u64);
    assert_eq!(o.bytes_out, body.len() as u64);
    assert!(o.masked.total() >= 2, "{:?}", o.masked);
}

#[tokio::test]
async fn a_request_under_review_is_held_until_released() {
    let upstream = start_upstream().await;
    let gate = TestGate::default();
    let front = start_front(upstream.addr, gate.clone(), Limits::default()).await;

    let req = Request::post(format!("http://{front}/review/payouts"))
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Full::new(Bytes::from_static(b"amount=100")))
        .unwrap();
    let pending = tokio::spawn(send(false, req));
    gate.held.notified().await;
    assert!(
        upstream.take().is_empty(),
        "nothing is forwarded while the review is pending"
    );
    gate.release.notify_one();
    let (status, _, body) = pending.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "ok POST /review/payouts 10");
    let seen = upstream.take();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].body, "amount=100");
}

#[tokio::test]
async fn a_client_that_leaves_mid_body_gets_one_outcome_with_the_error() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let upstream = start_upstream().await;
    let gate = TestGate::default();
    let front = start_front(upstream.addr, gate.clone(), Limits::default()).await;

    let mut s = tokio::net::TcpStream::connect(front).await.unwrap();
    let req =
        format!("GET /public/stream HTTP/1.1\r\nHost: up\r\nAuthorization: Bearer {TOKEN}\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&got).contains("first chunk") {
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed before the first chunk");
        got.extend_from_slice(&buf[..n]);
    }
    assert!(got.starts_with(b"HTTP/1.1 200"));
    drop(s);

    eventually(|| !gate.outcomes.lock().unwrap().is_empty()).await;
    // Another request's outcome arriving proves no second report for the first is pending.
    let req = get(front, "/public/after")
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(send(false, req).await.0, StatusCode::OK);
    eventually(|| gate.outcomes.lock().unwrap().len() >= 2).await;

    let outcomes = gate.outcomes.lock().unwrap().clone();
    let first: Vec<_> = outcomes
        .iter()
        .filter(|(t, _)| t == "GET /public/stream")
        .map(|(_, o)| o)
        .collect();
    assert_eq!(first.len(), 1, "exactly once");
    assert_eq!(first[0].status, Some(StatusCode::OK));
    assert_eq!(first[0].bytes_out, "first chunk".len() as u64);
    assert!(first[0].error.is_some(), "{:?}", first[0]);
}

#[tokio::test]
async fn http2_header_lists_over_the_limit_never_reach_the_upstream() {
    let upstream = start_upstream().await;
    let gate = TestGate::default();
    let front = start_front(upstream.addr, gate.clone(), Limits::default()).await;

    let req = get(front, "/public/big-head")
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("x-big", "b".repeat(20_000))
        .body(Full::new(Bytes::new()))
        .unwrap();
    // hyper's HTTP/2 server answers 431 for a header list over SETTINGS_MAX_HEADER_LIST_SIZE
    // (seen here), or the client itself refuses to send it when it already knows the
    // setting: which one depends on whether the server's SETTINGS arrived first.
    match support::client(true).request(req).await {
        Ok(resp) => assert_eq!(resp.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
        // Refused on the client side: nothing was sent (checked below).
        Err(e) => assert!(!e.is_connect(), "{e:?}"),
    }
    assert!(upstream.take().is_empty());
    assert!(gate.admitted.lock().unwrap().is_empty());

    // Many small fields: within the list size, over the field count.
    let mut req = get(front, "/public/many").header("authorization", format!("Bearer {TOKEN}"));
    for i in 0..150 {
        req = req.header(format!("x-f{i}"), "1");
    }
    let (status, _, body) = send(true, req.body(Full::new(Bytes::new())).unwrap()).await;
    assert_eq!(status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert_eq!(json(&body)["error"]["code"], "header_too_large");
    assert!(upstream.take().is_empty());
}

#[tokio::test]
async fn method_and_target_overrides_never_reach_the_upstream() {
    let upstream = start_upstream().await;
    let gate = TestGate::default();
    let front = start_front(upstream.addr, gate.clone(), Limits::default()).await;

    for h2 in [false, true] {
        for (header, value) in [
            ("x-http-method-override", "DELETE"),
            ("X-HTTP-Method", "DELETE"),
            ("X-Method-Override", "PUT"),
            ("X-Original-URL", "/admin/users/7"),
            ("X-Rewrite-URL", "/admin/users/7"),
        ] {
            let req = get(front, "/customers/1")
                .header("authorization", format!("Bearer {TOKEN}"))
                .header(header, value)
                .body(Full::new(Bytes::new()))
                .unwrap();
            let (status, headers, body) = send(h2, req).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{header} h2={h2}");
            assert_eq!(headers["content-type"], "application/json");
            assert_eq!(json(&body)["error"]["code"], "method_override");
        }
        let req = Request::post(format!("http://{front}/public/x?_method=DELETE"))
            .header("authorization", format!("Bearer {TOKEN}"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let (status, _, body) = send(h2, req).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(json(&body)["error"]["code"], "method_override");
    }
    assert!(upstream.take().is_empty(), "nothing was forwarded");
    assert!(
        gate.admitted.lock().unwrap().is_empty(),
        "refused before the gate"
    );
    let refused = gate.refused.lock().unwrap().clone();
    assert_eq!(refused.len(), 12);
    assert!(refused.iter().all(|r| r.0 == "method_override"));
}
