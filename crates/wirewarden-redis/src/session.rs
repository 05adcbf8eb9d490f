//! Reply correlation for one connection, IO-free.
//!
//! Redis answers commands strictly in order, with four exceptions this module tracks:
//!
//! - **Transactions.** After a successful `MULTI`, commands are answered `+QUEUED` (or with an
//!   error, which makes `EXEC` fail with `EXECABORT`); `EXEC` answers with one array element
//!   per queued command, or a null if a `WATCH`ed key changed; `DISCARD` drops the queue.
//! - **Pub/sub.** One `SUBSCRIBE a b c` gets one confirmation per channel; `UNSUBSCRIBE`
//!   without arguments gets one per current subscription. In RESP2 the confirmations and the
//!   messages are arrays (and only pub/sub commands and `PING` are allowed while subscribed);
//!   in RESP3 they are push frames, which never answer anything else.
//! - **`MONITOR`** turns the connection into a stream of simple strings.
//! - **`CLIENT REPLY OFF|SKIP`** suppress replies.
//!
//! A pub/sub command queued in a transaction breaks the first rule: `EXEC` counts it as one
//! result, then the server writes one reply per channel, so every reply after it is shifted.
//! Such an `EXEC` reply, and one whose elements do not match the queue, is an
//! [`Error::OutOfStep`](crate::Error::OutOfStep): the connection cannot be relayed further.
//!
//! Server state (in a transaction, subscribed, protocol version) is advanced by the replies,
//! not by the requests, so a pipeline whose `MULTI` or `HELLO` fails is still matched
//! correctly.

use std::collections::{HashSet, VecDeque};

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::frame::{Frame, FrameKind};
use crate::value::Value;
use crate::wire::RespVersion;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SubKind {
    Channel,
    Pattern,
    Shard,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Plain,
    Multi,
    Exec,
    Discard,
    Hello(Option<RespVersion>),
    Reset,
    Monitor,
    Ping,
    ReplyOn,
    /// `remaining`: confirmations still expected (`None`: all current subscriptions of the
    /// kind, resolved when the first confirmation arrives).
    Subscribe {
        kind: SubKind,
        unsubscribe: bool,
        remaining: Option<usize>,
    },
}

#[derive(Debug, Clone)]
struct Pending<T> {
    tag: T,
    kind: Kind,
}

/// What a reply frame turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Correlated<T> {
    /// The reply (or one of the replies) to the command tagged `tag`.
    Reply {
        /// The command's tag.
        tag: T,
        /// True when this reply is `+QUEUED`: the command was queued in a transaction and its
        /// result will be an element of the `EXEC` reply.
        queued: bool,
        /// True when the command expects no further replies (false for the first
        /// confirmations of a multi-channel `SUBSCRIBE`).
        complete: bool,
        /// True when this reply is a pub/sub confirmation (`subscribe`, `unsubscribe`, …
        /// with the name it confirms): a RESP3 push, or an array answering a pending
        /// (un)subscribe command. Any other reply, whatever it holds, confirms nothing: an
        /// ordinary command can return an array that reads like a confirmation
        /// (`COMMAND GETKEYS MSET unsubscribe 1 news 1`).
        confirms: bool,
    },
    /// The reply to `EXEC`.
    Exec {
        /// The tag of `EXEC` itself.
        tag: T,
        /// The tags of the queued commands, index for index with the elements of the reply
        /// ([`Frame::elements`]). Empty when the transaction did not run.
        results: Vec<T>,
        /// True when the transaction did not run: `EXECABORT`, or a null reply because a
        /// watched key changed.
        aborted: bool,
    },
    /// Data that answers no command.
    OutOfBand(OutOfBand),
    /// A reply that nothing was waiting for: the stream is out of step and the connection
    /// should be closed.
    Unsolicited,
}

/// The kinds of out-of-band data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum OutOfBand {
    /// A published message (`message`, `pmessage`, `smessage`), RESP2 array or RESP3 push.
    Message,
    /// Any other RESP3 push frame (client-side caching invalidations, a server-initiated
    /// unsubscribe, …).
    Push,
    /// A line of `MONITOR` output.
    Monitor,
}

/// The correlation state of one connection. `T` is whatever the caller wants back with each
/// reply: a command id, an audit record, the decision taken.
#[derive(Debug, Clone)]
pub struct Session<T = String> {
    version: RespVersion,
    pending: VecDeque<Pending<T>>,
    in_multi: bool,
    queued: Vec<Pending<T>>,
    channels: HashSet<Bytes>,
    patterns: HashSet<Bytes>,
    shards: HashSet<Bytes>,
    monitor: bool,
    reply_off: bool,
    skip_next: bool,
}

impl<T> Default for Session<T> {
    fn default() -> Self {
        Self::new()
    }
}

fn is(a: &[u8], b: &str) -> bool {
    a.eq_ignore_ascii_case(b.as_bytes())
}

fn kind_of(args: &[Bytes]) -> Kind {
    let name = args.first().map(|b| &b[..]).unwrap_or_default();
    let sub = |kind, unsubscribe| Kind::Subscribe {
        kind,
        unsubscribe,
        remaining: match args.len().saturating_sub(1) {
            0 if unsubscribe => None,
            // SUBSCRIBE without channels is an arity error: one error reply.
            0 => Some(1),
            n => Some(n),
        },
    };
    // Every name matched below is short: a longer one is none of them.
    let mut buf = [0u8; 16];
    let lower = match buf.get_mut(..name.len()) {
        Some(b) => {
            b.copy_from_slice(name);
            b.make_ascii_lowercase();
            &b[..]
        }
        None => &[][..],
    };
    match lower {
        b"multi" => Kind::Multi,
        b"exec" => Kind::Exec,
        b"discard" => Kind::Discard,
        b"reset" => Kind::Reset,
        b"monitor" => Kind::Monitor,
        b"ping" => Kind::Ping,
        b"hello" => Kind::Hello(match args.get(1).map(|v| &v[..]) {
            Some(b"3") => Some(RespVersion::Resp3),
            Some(b"2") => Some(RespVersion::Resp2),
            _ => None,
        }),
        b"subscribe" => sub(SubKind::Channel, false),
        b"psubscribe" => sub(SubKind::Pattern, false),
        b"ssubscribe" => sub(SubKind::Shard, false),
        b"unsubscribe" => sub(SubKind::Channel, true),
        b"punsubscribe" => sub(SubKind::Pattern, true),
        b"sunsubscribe" => sub(SubKind::Shard, true),
        _ => Kind::Plain,
    }
}

/// The pub/sub verb of a confirmation or message (first element of the array or push).
fn pubsub_word(frame: &Frame) -> Option<Value> {
    if !matches!(frame.kind(), FrameKind::Array | FrameKind::Push) {
        return None;
    }
    let v = frame.value().ok()?;
    v.as_elements()?.first().cloned()
}

const MESSAGES: &[&str] = &["message", "pmessage", "smessage"];
const CONFIRMATIONS: &[&str] = &[
    "subscribe",
    "unsubscribe",
    "psubscribe",
    "punsubscribe",
    "ssubscribe",
    "sunsubscribe",
];

fn word_is(v: &Value, words: &[&str]) -> bool {
    v.as_bytes().is_some_and(|b| words.iter().any(|w| is(b, w)))
}

fn is_monitor_line(frame: &Frame) -> bool {
    // `1700000000.123456 [0 127.0.0.1:50000] "GET" "k"`
    frame.simple_text().is_some_and(|t| {
        t.first().is_some_and(u8::is_ascii_digit) && memchr::memmem::find(t, b" [").is_some()
    })
}

impl<T> Session<T> {
    /// A fresh connection: RESP2, nothing pending.
    #[must_use]
    pub fn new() -> Self {
        Self {
            version: RespVersion::Resp2,
            pending: VecDeque::new(),
            in_multi: false,
            queued: Vec::new(),
            channels: HashSet::new(),
            patterns: HashSet::new(),
            shards: HashSet::new(),
            monitor: false,
            reply_off: false,
            skip_next: false,
        }
    }

    /// The protocol version in force (changed by a successful `HELLO`, reset by `RESET`).
    #[must_use]
    pub fn version(&self) -> RespVersion {
        self.version
    }

    /// The version to decode the next reply with: RESP3 already when the reply is the one to
    /// a `HELLO 3` (or to an `EXEC` that runs one), since the server switches before
    /// answering.
    #[must_use]
    pub fn reply_version(&self) -> RespVersion {
        let switching = |p: &Pending<T>| p.kind == Kind::Hello(Some(RespVersion::Resp3));
        match self.pending.front() {
            Some(p) if switching(p) && !self.in_multi => RespVersion::Resp3,
            Some(p) if p.kind == Kind::Exec && self.queued.iter().any(switching) => {
                RespVersion::Resp3
            }
            _ => self.version,
        }
    }

    /// Commands forwarded and not fully answered yet.
    #[must_use]
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// True inside a transaction the server accepted (`MULTI` answered `+OK`).
    #[must_use]
    pub fn in_multi(&self) -> bool {
        self.in_multi
    }

    /// True while subscribed to at least one channel, pattern or shard channel.
    #[must_use]
    pub fn is_subscribed(&self) -> bool {
        !(self.channels.is_empty() && self.patterns.is_empty() && self.shards.is_empty())
    }

    /// True after `MONITOR` was accepted.
    #[must_use]
    pub fn is_monitoring(&self) -> bool {
        self.monitor
    }

    /// Records a command forwarded to the server, with the tag to hand back with its reply.
    /// Returns false if the server will not answer it (`CLIENT REPLY OFF` or `SKIP` in force,
    /// or the `CLIENT REPLY OFF|SKIP` command itself).
    pub fn on_request(&mut self, args: &[Bytes], tag: T) -> bool {
        let name = args.first().map(|b| &b[..]).unwrap_or_default();
        let mut kind = kind_of(args);
        if is(name, "client") && args.get(1).is_some_and(|s| is(s, "reply")) && args.len() == 3 {
            let mode = args.get(2).map(|b| &b[..]).unwrap_or_default();
            if is(mode, "off") {
                self.reply_off = true;
                return false;
            }
            if is(mode, "skip") {
                if !self.reply_off {
                    self.skip_next = true;
                }
                return false;
            }
            if is(mode, "on") {
                self.reply_off = false;
                self.skip_next = false;
                kind = Kind::ReplyOn;
            }
        }
        if kind != Kind::ReplyOn {
            if self.reply_off {
                return false;
            }
            if self.skip_next {
                self.skip_next = false;
                return false;
            }
        }
        self.pending.push_back(Pending { tag, kind });
        true
    }

    fn update_subscriptions(&mut self, v: &Value) {
        let Some(items) = v.as_elements() else {
            return;
        };
        let (Some(word), Some(name)) = (items.first().and_then(Value::as_bytes), items.get(1))
        else {
            return;
        };
        let word = word.to_ascii_lowercase();
        let (set, add) = match &word[..] {
            b"subscribe" => (&mut self.channels, true),
            b"unsubscribe" => (&mut self.channels, false),
            b"psubscribe" => (&mut self.patterns, true),
            b"punsubscribe" => (&mut self.patterns, false),
            b"ssubscribe" => (&mut self.shards, true),
            b"sunsubscribe" => (&mut self.shards, false),
            _ => return,
        };
        match (name.as_bytes(), add) {
            (Some(n), true) => {
                set.insert(n.clone());
            }
            (Some(n), false) => {
                set.remove(n);
            }
            (None, _) => {}
        }
    }

    fn set_of(&self, kind: SubKind) -> usize {
        match kind {
            SubKind::Channel => self.channels.len(),
            SubKind::Pattern => self.patterns.len(),
            SubKind::Shard => self.shards.len(),
        }
    }
}

impl<T: Clone> Session<T> {
    /// Matches one reply frame (decoded with [`Session::reply_version`]) to what it answers.
    ///
    /// # Errors
    /// [`Error::OutOfStep`] when an `EXEC` reply cannot be tied to the commands queued
    /// (more or fewer elements, a push frame among them, a queued pub/sub command whose
    /// replies the server writes one per channel): the connection must be closed, since
    /// every later reply may be paired with the wrong command. Otherwise only if the
    /// frame's typed view cannot be built, which frames from
    /// [`ReplyDecoder`](crate::ReplyDecoder) never cause.
    pub fn on_reply(&mut self, frame: &Frame) -> Result<Correlated<T>> {
        // RESP3 push frames never answer a command, except pub/sub confirmations.
        if frame.is_push() {
            let word = pubsub_word(frame);
            if let Some(w) = &word
                && word_is(w, MESSAGES)
            {
                return Ok(Correlated::OutOfBand(OutOfBand::Message));
            }
            let confirms = word.as_ref().is_some_and(|w| word_is(w, CONFIRMATIONS));
            if confirms {
                let v = frame.value()?;
                self.update_subscriptions(&v);
                if matches!(
                    self.pending.front().map(|p| &p.kind),
                    Some(Kind::Subscribe { .. })
                ) && !self.in_multi
                {
                    return Ok(self.confirm());
                }
            }
            return Ok(Correlated::OutOfBand(OutOfBand::Push));
        }

        if self.version == RespVersion::Resp2 && frame.kind() == FrameKind::Array {
            let front_sub = matches!(
                self.pending.front().map(|p| &p.kind),
                Some(Kind::Subscribe { .. })
            );
            if (self.is_subscribed() || front_sub)
                && let Some(w) = pubsub_word(frame)
            {
                if self.is_subscribed() && word_is(&w, MESSAGES) {
                    return Ok(Correlated::OutOfBand(OutOfBand::Message));
                }
                if front_sub && word_is(&w, CONFIRMATIONS) {
                    let v = frame.value()?;
                    self.update_subscriptions(&v);
                    return Ok(self.confirm());
                }
            }
        }

        if self.monitor && frame.kind() == FrameKind::SimpleString && is_monitor_line(frame) {
            return Ok(Correlated::OutOfBand(OutOfBand::Monitor));
        }

        let Some(p) = self.pending.pop_front() else {
            return Ok(Correlated::Unsolicited);
        };
        let ok = !frame.is_error();

        if self.in_multi
            && !matches!(
                p.kind,
                Kind::Exec | Kind::Discard | Kind::Multi | Kind::Reset
            )
        {
            let queued = frame.simple_text() == Some(b"QUEUED");
            if queued {
                self.queued.push(p.clone());
            }
            return Ok(Correlated::Reply {
                tag: p.tag,
                queued,
                complete: true,
                confirms: false,
            });
        }

        match &p.kind {
            Kind::Multi if ok => self.in_multi = true,
            Kind::Exec => {
                let was_multi = std::mem::replace(&mut self.in_multi, false);
                let queued = std::mem::take(&mut self.queued);
                if !was_multi {
                    return Ok(Correlated::Reply {
                        tag: p.tag,
                        queued: false,
                        complete: true,
                        confirms: false,
                    });
                }
                let elements = frame.elements()?;
                let Some(elements) = elements else {
                    // `EXECABORT`, or a null when a watched key changed; anything else
                    // answers something other than this EXEC.
                    if !(frame.is_error() || frame.kind() == FrameKind::Null) {
                        return Err(Error::OutOfStep {
                            what: "EXEC answered with neither results, an error nor a null",
                        });
                    }
                    return Ok(Correlated::Exec {
                        tag: p.tag,
                        results: Vec::new(),
                        aborted: true,
                    });
                };
                // Fail closed: the elements are paired with the queued commands by position
                // only, so any doubt about that pairing ends the connection.
                if elements.len() != queued.len() {
                    return Err(Error::OutOfStep {
                        what: "EXEC reply with more or fewer elements than commands queued",
                    });
                }
                if queued
                    .iter()
                    .any(|q| matches!(q.kind, Kind::Subscribe { .. }))
                {
                    // One reply per channel inside an EXEC that counts one per command: the
                    // replies after it are shifted by the difference.
                    return Err(Error::OutOfStep {
                        what: "EXEC of a queued subscribe or unsubscribe",
                    });
                }
                if elements.iter().any(|el| el.first() == Some(&b'>')) {
                    // A push frame answers no queued command (RESP3 pub/sub confirmations
                    // arrive so inside EXEC).
                    return Err(Error::OutOfStep {
                        what: "push frame inside an EXEC reply",
                    });
                }
                let mut results = Vec::with_capacity(queued.len());
                for (q, el) in queued.into_iter().zip(elements.iter()) {
                    if let Kind::Hello(Some(v)) = q.kind
                        && el.first().is_some_and(|b| !matches!(b, b'-' | b'!'))
                    {
                        self.version = v;
                    }
                    results.push(q.tag);
                }
                return Ok(Correlated::Exec {
                    tag: p.tag,
                    results,
                    aborted: false,
                });
            }
            Kind::Discard if ok => {
                self.in_multi = false;
                self.queued.clear();
            }
            Kind::Hello(Some(v)) if ok => self.version = *v,
            Kind::Reset if ok => {
                self.version = RespVersion::Resp2;
                self.in_multi = false;
                self.queued.clear();
                self.channels.clear();
                self.patterns.clear();
                self.shards.clear();
                self.monitor = false;
                self.reply_off = false;
                self.skip_next = false;
            }
            Kind::Monitor if ok => self.monitor = true,
            _ => {}
        }
        Ok(Correlated::Reply {
            tag: p.tag,
            queued: false,
            complete: true,
            confirms: false,
        })
    }

    /// A pub/sub confirmation for the front pending command.
    fn confirm(&mut self) -> Correlated<T> {
        let counts: Option<(SubKind, Option<usize>)> = match self.pending.front() {
            Some(Pending {
                kind: Kind::Subscribe {
                    kind, remaining, ..
                },
                ..
            }) => Some((*kind, *remaining)),
            _ => None,
        };
        let Some((sub, remaining)) = counts else {
            return Correlated::Unsolicited;
        };
        // `None`: unsubscribe from everything; the state before this confirmation (already
        // applied) had one more, or none at all and the server sends a single reply.
        let remaining = remaining.unwrap_or_else(|| self.set_of(sub).saturating_add(1));
        let left = remaining.saturating_sub(1);
        if left == 0 {
            let Some(p) = self.pending.pop_front() else {
                return Correlated::Unsolicited;
            };
            return Correlated::Reply {
                tag: p.tag,
                queued: false,
                complete: true,
                confirms: true,
            };
        }
        let Some(p) = self.pending.front_mut() else {
            return Correlated::Unsolicited;
        };
        if let Kind::Subscribe { remaining, .. } = &mut p.kind {
            *remaining = Some(left);
        }
        Correlated::Reply {
            tag: p.tag.clone(),
            queued: false,
            complete: false,
            confirms: true,
        }
    }
}

/// Convenience for tests and simple relays: decode a whole buffer of replies.
#[doc(hidden)]
pub fn correlate_all<T: Clone>(
    session: &mut Session<T>,
    decoder: &mut crate::ReplyDecoder,
    buf: &mut bytes::BytesMut,
) -> Result<Vec<(Frame, Correlated<T>)>, Error> {
    let mut out = Vec::new();
    while let Some(f) = decoder.decode(buf, session.reply_version())? {
        let c = session.on_reply(&f)?;
        out.push((f, c));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::*;
    use crate::{ReplyDecoder, RequestDecoder};

    struct Conn {
        s: Session<usize>,
        n: usize,
    }

    impl Conn {
        fn new() -> Self {
            Self {
                s: Session::new(),
                n: 0,
            }
        }

        fn send(&mut self, line: &str) -> bool {
            let mut buf = BytesMut::from(format!("{line}\r\n").as_bytes());
            let r = RequestDecoder::default().decode(&mut buf).unwrap().unwrap();
            self.n += 1;
            self.s.on_request(r.args(), self.n)
        }

        fn recv(&mut self, bytes: &[u8]) -> Vec<Correlated<usize>> {
            let mut buf = BytesMut::from(bytes);
            let mut d = ReplyDecoder::default();
            let out = correlate_all(&mut self.s, &mut d, &mut buf).unwrap();
            assert!(buf.is_empty(), "left over: {buf:?}");
            out.into_iter().map(|(_, c)| c).collect()
        }
    }

    fn reply(tag: usize) -> Correlated<usize> {
        Correlated::Reply {
            tag,
            queued: false,
            complete: true,
            confirms: false,
        }
    }

    fn confirmation(tag: usize) -> Correlated<usize> {
        Correlated::Reply {
            tag,
            queued: false,
            complete: true,
            confirms: true,
        }
    }

    fn queued(tag: usize) -> Correlated<usize> {
        Correlated::Reply {
            tag,
            queued: true,
            complete: true,
            confirms: false,
        }
    }

    #[test]
    fn pipeline_in_order() {
        let mut c = Conn::new();
        c.send("SET a 1");
        c.send("GET a");
        c.send("NOSUCH");
        let got = c.recv(b"+OK\r\n$1\r\n1\r\n-ERR unknown command\r\n");
        assert_eq!(got, vec![reply(1), reply(2), reply(3)]);
        assert_eq!(c.recv(b"+OK\r\n"), vec![Correlated::Unsolicited]);
    }

    #[test]
    fn multi_exec_matches_elements() {
        let mut c = Conn::new();
        for l in ["MULTI", "SET a 1", "NOSUCH", "GET a", "EXEC"] {
            c.send(l);
        }
        // NOSUCH is rejected at queue time; real servers then answer EXECABORT.
        let got = c.recv(
            b"+OK\r\n+QUEUED\r\n-ERR unknown\r\n+QUEUED\r\n-EXECABORT Transaction discarded\r\n",
        );
        assert_eq!(
            got,
            vec![
                reply(1),
                queued(2),
                reply(3),
                queued(4),
                Correlated::Exec {
                    tag: 5,
                    results: vec![],
                    aborted: true
                }
            ]
        );
        assert!(!c.s.in_multi());
        for l in ["MULTI", "INCR a", "GET a", "EXEC", "PING"] {
            c.send(l);
        }
        let got = c.recv(b"+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n:2\r\n$1\r\n2\r\n+PONG\r\n");
        assert_eq!(
            got[3],
            Correlated::Exec {
                tag: 9,
                results: vec![7, 8],
                aborted: false
            }
        );
        assert_eq!(got[4], reply(10));
        // WATCH failure: null reply.
        for l in ["WATCH a", "MULTI", "SET a 3", "EXEC"] {
            c.send(l);
        }
        let got = c.recv(b"+OK\r\n+OK\r\n+QUEUED\r\n*-1\r\n");
        assert!(matches!(got[3], Correlated::Exec { aborted: true, .. }));
        // DISCARD and a failed MULTI.
        for l in ["MULTI", "SET a 1", "DISCARD", "GET a"] {
            c.send(l);
        }
        let got = c.recv(b"+OK\r\n+QUEUED\r\n+OK\r\n$1\r\n1\r\n");
        assert_eq!(got[3], reply(18));
        assert!(!c.s.in_multi());
        c.send("MULTI");
        c.send("GET a");
        let got = c.recv(b"-NOPERM no\r\n$1\r\n1\r\n");
        assert_eq!(got, vec![reply(19), reply(20)]);
    }

    /// Decodes `bytes` as replies until one fails to correlate; that error.
    fn out_of_step(c: &mut Conn, bytes: &[u8]) -> Error {
        let mut buf = BytesMut::from(bytes);
        let mut d = ReplyDecoder::default();
        correlate_all(&mut c.s, &mut d, &mut buf).unwrap_err()
    }

    #[test]
    fn an_exec_reply_that_does_not_match_its_queue_is_out_of_step() {
        // What a server answers to `UNSUBSCRIBE a b` and `GET secret` inside a transaction:
        // EXEC counts two results, then writes one reply per channel and GET's value after
        // the array, where it would be taken for the next command's reply.
        let mut c = Conn::new();
        for l in [
            "MULTI",
            "UNSUBSCRIBE a b",
            "GET secret",
            "EXEC",
            "GET public",
        ] {
            c.send(l);
        }
        let e = out_of_step(
            &mut c,
            b"+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n*3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:0\r\n\
              *3\r\n$11\r\nunsubscribe\r\n$1\r\nb\r\n:0\r\n$6\r\nhunter\r\n",
        );
        assert!(matches!(e, Error::OutOfStep { .. }), "{e:?}");

        // The same in RESP3: the confirmations are push frames inside the array.
        let mut c = Conn::new();
        c.send("HELLO 3");
        c.recv(b"%0\r\n");
        for l in [
            "MULTI",
            "PUNSUBSCRIBE a b",
            "HGETALL secret",
            "EXEC",
            "PING",
        ] {
            c.send(l);
        }
        let e = out_of_step(
            &mut c,
            b"+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n>3\r\n$12\r\npunsubscribe\r\n$1\r\na\r\n:0\r\n\
              >3\r\n$12\r\npunsubscribe\r\n$1\r\nb\r\n:0\r\n%1\r\n$1\r\nf\r\n$2\r\nv1\r\n",
        );
        assert!(matches!(e, Error::OutOfStep { .. }), "{e:?}");

        // More or fewer elements than commands queued.
        for reply in [
            &b"+OK\r\n+QUEUED\r\n*2\r\n$1\r\n1\r\n$1\r\n2\r\n"[..],
            b"+OK\r\n+QUEUED\r\n*0\r\n",
            b"+OK\r\n+QUEUED\r\n+OK\r\n",
        ] {
            let mut c = Conn::new();
            for l in ["MULTI", "GET a", "EXEC"] {
                c.send(l);
            }
            let e = out_of_step(&mut c, reply);
            assert!(matches!(e, Error::OutOfStep { .. }), "{e:?}");
        }
        // A push frame in place of a result.
        let mut c = Conn::new();
        c.send("HELLO 3");
        c.recv(b"%0\r\n");
        for l in ["MULTI", "GET a", "EXEC"] {
            c.send(l);
        }
        let e = out_of_step(
            &mut c,
            b"+OK\r\n+QUEUED\r\n*1\r\n>2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\na\r\n",
        );
        assert!(matches!(e, Error::OutOfStep { .. }), "{e:?}");
    }

    #[test]
    fn hello_switches_version_only_on_success() {
        let mut c = Conn::new();
        c.send("HELLO 3");
        assert_eq!(c.s.reply_version(), RespVersion::Resp3);
        c.send("GET a");
        let got = c.recv(b"%1\r\n+server\r\n+redis\r\n_\r\n");
        assert_eq!(got, vec![reply(1), reply(2)]);
        assert_eq!(c.s.version(), RespVersion::Resp3);
        c.send("HELLO 2");
        c.recv(b"*2\r\n+server\r\n+redis\r\n");
        assert_eq!(c.s.version(), RespVersion::Resp2);
        c.send("HELLO 3 AUTH u wrong");
        c.recv(b"-WRONGPASS invalid\r\n");
        assert_eq!(c.s.version(), RespVersion::Resp2);
    }

    #[test]
    fn resp2_pubsub() {
        let mut c = Conn::new();
        c.send("SUBSCRIBE a b");
        let got = c.recv(
            b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n*3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n\
              *3\r\n$7\r\nmessage\r\n$1\r\na\r\n$2\r\nhi\r\n",
        );
        assert_eq!(
            got,
            vec![
                Correlated::Reply {
                    tag: 1,
                    queued: false,
                    complete: false,
                    confirms: true,
                },
                confirmation(1),
                Correlated::OutOfBand(OutOfBand::Message)
            ]
        );
        assert!(c.s.is_subscribed());
        c.send("PING");
        c.send("UNSUBSCRIBE");
        let got = c.recv(
            b"*2\r\n$4\r\npong\r\n$0\r\n\r\n*3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:1\r\n\
              *3\r\n$11\r\nunsubscribe\r\n$1\r\nb\r\n:0\r\n",
        );
        assert_eq!(got.len(), 3);
        assert_eq!(got[0], reply(2));
        assert_eq!(got[2], confirmation(3));
        assert!(!c.s.is_subscribed());
        c.send("UNSUBSCRIBE");
        let got = c.recv(b"*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n");
        assert_eq!(got, vec![confirmation(4)]);
    }

    #[test]
    fn resp3_push_is_out_of_band() {
        let mut c = Conn::new();
        c.send("HELLO 3");
        c.recv(b"%0\r\n");
        c.send("SUBSCRIBE a");
        c.send("GET k");
        let got = c.recv(
            b">3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n>3\r\n$7\r\nmessage\r\n$1\r\na\r\n$1\r\nx\r\n\
              >2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nk\r\n$1\r\nv\r\n",
        );
        assert_eq!(
            got,
            vec![
                confirmation(2),
                Correlated::OutOfBand(OutOfBand::Message),
                Correlated::OutOfBand(OutOfBand::Push),
                reply(3)
            ]
        );
    }

    /// Only a reply the correlator ties to a pending (un)subscribe confirms anything: an
    /// ordinary command's array that reads like a confirmation does not.
    #[test]
    fn an_ordinary_reply_never_confirms() {
        let mut c = Conn::new();
        c.send("HELLO 3");
        c.recv(b"%0\r\n");
        c.send("SUBSCRIBE news");
        c.send("COMMAND GETKEYS MSET unsubscribe 1 news 1");
        let got = c.recv(
            b">3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n\
              *2\r\n$11\r\nunsubscribe\r\n$4\r\nnews\r\n",
        );
        assert_eq!(got, vec![confirmation(2), reply(3)]);
        assert!(c.s.is_subscribed());
    }

    #[test]
    fn monitor_and_client_reply() {
        let mut c = Conn::new();
        c.send("MONITOR");
        let got = c.recv(b"+OK\r\n+1700000000.123456 [0 127.0.0.1:5000] \"GET\" \"k\"\r\n");
        assert_eq!(
            got,
            vec![reply(1), Correlated::OutOfBand(OutOfBand::Monitor)]
        );
        let mut c = Conn::new();
        assert!(!c.send("CLIENT REPLY OFF"));
        assert!(!c.send("SET a 1"));
        assert!(c.send("CLIENT REPLY ON"));
        assert!(!c.send("CLIENT REPLY SKIP"));
        assert!(!c.send("SET a 2"));
        assert!(c.send("GET a"));
        assert_eq!(c.recv(b"+OK\r\n$1\r\n2\r\n"), vec![reply(3), reply(6)]);
    }
}
