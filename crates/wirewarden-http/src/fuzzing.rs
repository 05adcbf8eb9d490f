//! Entry points for the fuzz targets (not part of the stable API).

use std::sync::{Arc, OnceLock};

use http::{Method, Response, StatusCode};
use wirewarden_core::MaskedCounts;
use wirewarden_mask::{MaskKey, Profile, Strategy};

use crate::body::{BodyLimits, mask_response_head};
use crate::encoding::{Coding, DecodeLimits, Decoder, Encoder};

const CODINGS: [Coding; 4] = [
    Coding::Identity,
    Coding::Gzip,
    Coding::Deflate,
    Coding::Brotli,
];

/// The media types a body is masked as: the first four are picked by the low two bits of the
/// selector byte alone (bit 4 clear), so seeds written before the others were added keep
/// their meaning; bit 4 set picks one of the last four.
const TYPES: [&str; 8] = [
    "application/json",
    "application/x-ndjson",
    "text/plain; charset=utf-8",
    "text/csv; charset=iso-8859-1",
    "application/x-www-form-urlencoded",
    "text/html; charset=utf-8",
    "application/xml",
    "text/html; charset=windows-1252",
];

/// The index into [`TYPES`] that the selector byte `b` picks.
fn type_index(b: u8) -> usize {
    usize::from((b & 3) | ((b & 0x10) >> 2))
}

fn profile() -> &'static Arc<Profile> {
    static PROFILE: OnceLock<Arc<Profile>> = OnceLock::new();
    PROFILE.get_or_init(|| {
        Arc::new(
            Profile::builder("fuzz")
                .key(MaskKey::new([7; 32]))
                // Redaction for everything else: partial strategies keep digits, and which
                // digits a finding keeps is the masking engine's business (its own fuzz
                // target), not this one's.
                .strategy("email", Strategy::Tokenize)
                .build()
                .expect("static profile builds"),
        )
    })
}

/// Masks a response body built from `data`. The first byte picks the coding (low two bits)
/// and whether the rest is taken as already encoded (bit 2: a hostile stream) or as the
/// plain body to encode first; the second byte picks the media type (JSON, JSON Lines,
/// text, Latin-1 text, a form, HTML, XML, Latin-1 HTML); the third seeds the chunk
/// sizes. Asserts that nothing panics, that an accepted body's output decodes, and that no
/// card number found in the plain input is a card number of the output: in its bytes, in
/// the decoded names and values of a form, and in the text of markup with its numeric
/// character references decoded.
pub fn body(data: &[u8]) {
    let [a, b, seed, rest @ ..] = data else {
        return;
    };
    let coding = CODINGS[usize::from(a & 3)];
    let pre_encoded = a & 4 != 0;
    let Some(&content_type) = TYPES.get(type_index(*b)) else {
        return;
    };
    let limits = BodyLimits {
        max_decoded_bytes: 4 << 20,
        max_ratio: 100,
        ratio_floor: 64 << 10,
        max_text_body: 1 << 20,
    };

    let wire = if pre_encoded {
        rest.to_vec()
    } else {
        let mut e = Encoder::new(coding);
        let mut wire = Vec::new();
        if !rest.is_empty() {
            e.push(rest, &mut wire).expect("encoding to memory");
            e.finish(&mut wire).expect("encoding to memory");
        }
        wire
    };

    let (mut parts, ()) = Response::builder()
        .status(StatusCode::OK)
        .header("content-type", content_type)
        .header("content-encoding", coding.as_str())
        .body(())
        .expect("static response head")
        .into_parts();
    let mut counts = MaskedCounts::new();
    let Ok(Some(mut masker)) =
        mask_response_head(profile(), &Method::GET, &mut parts, &limits, &mut counts)
    else {
        panic!("a maskable response head was refused");
    };

    let mut out = Vec::new();
    let mut x = u64::from(*seed) | 0x100;
    let mut left = wire.as_slice();
    let mut ok = true;
    while !left.is_empty() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let n = usize::try_from(x % 256).unwrap_or(0).saturating_add(1);
        let (chunk, tail) = left.split_at(n.min(left.len()));
        left = tail;
        match masker.push(chunk, &mut counts) {
            Ok(b) => out.extend_from_slice(&b),
            Err(_) => {
                ok = false;
                break;
            }
        }
    }
    if ok {
        match masker.finish(&mut counts) {
            Ok(b) => out.extend_from_slice(&b),
            Err(_) => ok = false,
        }
    }
    let big = DecodeLimits {
        max_decoded_bytes: u64::MAX,
        max_ratio: u64::MAX,
        ratio_floor: 0,
    };
    // Whatever went out, complete or not, must be masked: decode as much as there is.
    let mut plain_out = Vec::new();
    let mut d = Decoder::new(coding, big);
    let decoded = d.push(&out, &mut plain_out);
    if ok {
        decoded.expect("the masked body decodes");
        d.finish(&mut plain_out)
            .expect("the masked body is complete");
    }

    let plain_in = if pre_encoded {
        let mut p = Vec::new();
        let mut d = Decoder::new(coding, big);
        if d.push(rest, &mut p).is_err() {
            // Only what decoded before the error can have reached the output.
        }
        p
    } else {
        rest.to_vec()
    };
    // The card numbers of the input, by their digits, must not be card numbers of the output.
    // (Comparing raw text would be wrong: a long run of digits that is no card number goes
    // out as it is, and it may contain the text of a shorter card found elsewhere.) A form
    // is not read as raw text: `%20111152011111` is a space and thirteen digits, and its
    // raw digits are no card anyone reads out of it.
    let form = content_type == "application/x-www-form-urlencoded";
    if !form {
        let input_cards = cards(&plain_in);
        for card in cards(&plain_out) {
            assert!(
                !input_cards.contains(&card),
                "card number {card:?} went out in clear"
            );
        }
    }
    // A form is read by its decoded names and values, pair by pair, as a server reads it.
    if form {
        let input_cards = form_cards(&plain_in);
        for card in form_cards(&plain_out) {
            assert!(
                !input_cards.contains(&card),
                "card number {card:?} went out in clear in a form"
            );
        }
    }
    // Markup is read with its numeric references decoded, as a browser or XML parser reads
    // it. Only a body that ended cleanly is held to this: one that spelled a value with
    // references is stopped by an error, and what it sent before is checked above.
    if ok && (content_type.contains("html") || content_type.contains("xml")) {
        let input_cards = cards(&decode_numeric_references(&plain_in));
        for card in cards(&decode_numeric_references(&plain_out)) {
            assert!(
                !input_cards.contains(&card),
                "card number {card:?} went out in clear behind character references"
            );
        }
    }
}

/// The card numbers in the names and values of a form body, each decoded (`+` a space,
/// `%XX` a byte, malformed escapes kept as they are).
fn form_cards(body: &[u8]) -> Vec<String> {
    body.split(|&b| b == b'&')
        .flat_map(|pair| {
            let (name, value) = match pair.iter().position(|&b| b == b'=') {
                Some(eq) => pair.split_at(eq),
                None => (pair, &[][..]),
            };
            [name, value.get(1..).unwrap_or_default()]
        })
        .flat_map(|part| cards(&form_decode_lossy(part)))
        .collect()
}

fn form_decode_lossy(raw: &[u8]) -> Vec<u8> {
    let hex = |b: Option<&u8>| b.and_then(|&b| char::from(b).to_digit(16));
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while let Some(&b) = raw.get(i) {
        match (b, hex(raw.get(i + 1)), hex(raw.get(i + 2))) {
            (b'+', ..) => out.push(b' '),
            (b'%', Some(hi), Some(lo)) => {
                out.push(u8::try_from(hi * 16 + lo).unwrap_or(b'%'));
                i += 2;
            }
            (b, ..) => out.push(b),
        }
        i += 1;
    }
    out
}

/// `bytes` with its decimal and hex numeric character references (`&#52;`, `&#x34`) that
/// name ASCII characters decoded; everything else is kept.
fn decode_numeric_references(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'&' && bytes.get(i + 1) == Some(&b'#') {
            let hex = matches!(bytes.get(i + 2), Some(b'x' | b'X'));
            let start = i + 2 + usize::from(hex);
            let radix = if hex { 16 } else { 10 };
            let digits = bytes
                .get(start..)
                .unwrap_or_default()
                .iter()
                .take_while(|d| char::from(**d).is_digit(radix))
                .count();
            let value = std::str::from_utf8(bytes.get(start..start + digits).unwrap_or_default())
                .ok()
                .and_then(|d| u32::from_str_radix(d, radix).ok())
                .and_then(|v| u8::try_from(v).ok())
                .filter(u8::is_ascii);
            if let (Some(v), true) = (value, digits > 0) {
                out.push(v);
                i = start + digits;
                if bytes.get(i) == Some(&b';') {
                    i += 1;
                }
                continue;
            }
        }
        out.push(b);
        i += 1;
    }
    out
}

/// The card numbers `detect` finds in `bytes`, reduced to their digits.
fn cards(bytes: &[u8]) -> Vec<String> {
    profile()
        .detect(bytes)
        .into_iter()
        .filter(|(_, entity)| *entity == "card_number")
        .filter_map(|(range, _)| bytes.get(range))
        .map(|span| {
            String::from_utf8_lossy(span)
                .chars()
                .filter(|c| c.is_numeric())
                .collect()
        })
        .collect()
}

/// Feeds `data` (after a first byte that picks a split point) to the raw HTTP/1 scanner
/// whole and in two pieces, and checks that both give the same verdicts; then treats the rest
/// as a request target and checks that the route matcher never accepts a path with a dot
/// segment, an encoded slash or a control byte in it.
pub fn http1_scan(data: &[u8]) {
    use crate::route::{Route, Routes};
    use crate::strict::{Http1Scanner, Limits};

    let Some((&split, bytes)) = data.split_first() else {
        return;
    };
    let limits = Limits::default();
    let verdicts = |pieces: &[&[u8]]| {
        let mut s = Http1Scanner::new(&limits);
        let mut fed = Ok(());
        for p in pieces {
            if fed.is_ok() {
                fed = s.feed(p).map_err(|r| r.code);
            }
        }
        let heads: Vec<_> = (0..8).map(|_| s.next_head().map_err(|r| r.code)).collect();
        (fed, heads, s.is_http2())
    };
    let at = usize::from(split).min(bytes.len());
    let (a, b) = bytes.split_at(at);
    assert_eq!(verdicts(&[bytes]), verdicts(&[a, b]), "split at {at}");

    let routes = Routes::new()
        .route(Route::new(Some(Method::GET), "/public/{name}").unwrap_or_else(|_| unreachable!()))
        .route(Route::new(None, "/files/{*rest}").unwrap_or_else(|_| unreachable!()));
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    let Ok(uri) = text.parse::<http::Uri>() else {
        return;
    };
    if let Ok((command, matched)) = routes.command(&Method::GET, &uri) {
        let path = uri.path();
        for seg in path.split('/') {
            let lower = seg.to_ascii_lowercase();
            assert!(seg != "." && seg != "..", "dot segment accepted: {path}");
            assert!(
                !lower.contains("%2f") && !lower.contains("%5c") && !lower.contains("%2e"),
                "encoded separator accepted: {path}"
            );
        }
        assert!(!path.bytes().any(|b| b.is_ascii_control()));
        assert!(command.text.starts_with("GET "));
        if let Some(m) = matched {
            assert!(
                m.params
                    .iter()
                    .all(|(_, v)| !v.contains('/') || m.template.contains('*'))
            );
        }
    }
}
