//! Feeding a request-body scanner one body in arbitrary pieces.

use wirewarden_http::Rejection;

/// Feeds `body` to `scanner` in the pieces `cuts` gives (each cut taken modulo the body's
/// length plus one, in order), then ends it: the verdict (a refusal's code), and for each
/// piece the number of bytes the scanner held back after it.
pub(crate) fn in_pieces<S>(
    scanner: &mut S,
    body: &[u8],
    cuts: &[usize],
    feed: impl Fn(&mut S, &[u8]) -> Result<usize, Rejection>,
    finish: impl FnOnce(&mut S) -> Result<(), Rejection>,
) -> (Result<(), &'static str>, Vec<usize>) {
    let mut held = Vec::new();
    let mut at = 0;
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (body.len() + 1)).collect();
    points.sort_unstable();
    points.push(body.len());
    for p in points {
        let piece = &body[at..p];
        at = p;
        match feed(scanner, piece) {
            Ok(n) => held.push(n),
            Err(r) => return (Err(r.code), held),
        }
    }
    (finish(scanner).map_err(|r| r.code), held)
}
