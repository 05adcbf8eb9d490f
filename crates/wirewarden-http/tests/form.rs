//! The form scanner on arbitrary bodies cut into arbitrary chunks: the verdict never depends
//! on where the chunks break, it agrees with reading the whole body pair by pair, and the
//! bytes it says to hold back always include the body's end while a name is undecided.

mod pieces;

use http::{HeaderMap, HeaderValue, header};
use proptest::prelude::*;
use wirewarden_http::strict::form::{FormScanner, is_method_field};

fn scanner(content_type: &'static str) -> FormScanner {
    let mut h = HeaderMap::new();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    FormScanner::for_request(&h).unwrap().unwrap()
}

/// Feeds `body` in the pieces `cuts` gives; the verdict, and for each piece the number of
/// bytes held back after it.
fn scan(
    content_type: &'static str,
    body: &[u8],
    cuts: &[usize],
) -> (Result<(), &'static str>, Vec<usize>) {
    pieces::in_pieces(
        &mut scanner(content_type),
        body,
        cuts,
        FormScanner::feed,
        FormScanner::finish,
    )
}

/// Bodies made of the bytes that matter to the name reading, so that overrides are common.
fn form_body() -> impl Strategy<Value = Vec<u8>> {
    let atoms = prop::sample::select(vec![
        &b"_"[..],
        b"method",
        b"METHOD",
        b"override",
        b"=",
        b"&",
        b";",
        b"%5F",
        b"%5f",
        b"%u005F",
        b"%",
        b"+",
        b" ",
        b".",
        b"[",
        b"]",
        b"%00",
        b"x",
        b"note",
        b"%6D",
        b"\xff",
    ]);
    prop::collection::vec(atoms, 0..24).prop_map(|v| v.concat())
}

proptest! {
    #[test]
    fn urlencoded_verdicts_do_not_depend_on_chunking(
        body in form_body(),
        cuts in prop::collection::vec(any::<usize>(), 0..6),
    ) {
        let ct = "application/x-www-form-urlencoded";
        let (whole, _) = scan(ct, &body, &[]);
        let (split, held) = scan(ct, &body, &cuts);
        prop_assert_eq!(whole, split);

        // The oracle: pairs split on `&` and `;`, the name before the first `=`.
        let oracle = body
            .split(|&b| b == b'&' || b == b';')
            .any(|pair| is_method_field(pair.split(|&b| b == b'=').next().unwrap_or_default()));
        prop_assert_eq!(whole.is_err(), oracle);

        // A body that is refused only at its end had its last byte held back.
        if whole.is_err() && held.len() == cuts.len() + 1 && !body.is_empty() {
            prop_assert!(held.last().copied().unwrap_or(0) > 0);
        }
    }

    #[test]
    fn multipart_verdicts_do_not_depend_on_chunking(
        names in prop::collection::vec(form_body(), 1..4),
        content in prop::collection::vec(any::<u8>(), 0..64),
        cuts in prop::collection::vec(any::<usize>(), 0..6),
    ) {
        let ct = "multipart/form-data; boundary=Bd";
        let mut body = Vec::new();
        for name in &names {
            body.extend_from_slice(b"--Bd\r\nContent-Disposition: form-data; name=\"");
            body.extend(name.iter().copied().filter(|&b| b != b'"' && b != b'\\'));
            body.extend_from_slice(b"\"\r\n\r\n");
            body.extend_from_slice(&content);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(b"--Bd--\r\n");
        let (whole, _) = scan(ct, &body, &[]);
        let (split, _) = scan(ct, &body, &cuts);
        prop_assert_eq!(whole, split);
        let any_method = names.iter().any(|n| {
            let n: Vec<u8> = n.iter().copied().filter(|&b| b != b'"' && b != b'\\').collect();
            is_method_field(&n)
        });
        if any_method {
            prop_assert_eq!(whole, Err("method_override"));
        }
    }
}
