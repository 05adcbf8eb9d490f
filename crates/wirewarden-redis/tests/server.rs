//! Against a real redis-server (started by wirewarden-testkit): the generated command table
//! matches `COMMAND INFO`, and key extraction matches `COMMAND GETKEYS`.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;

use bytes::BytesMut;
use wirewarden_core::ObjectKind;
use wirewarden_redis::{
    AclCategories, CommandFlags, Frame, ReplyDecoder, RespVersion, Value, classify, encode_args,
    lookup,
};

struct Client {
    stream: TcpStream,
    buf: BytesMut,
    decoder: ReplyDecoder,
}

impl Client {
    fn connect(redis: &wirewarden_testkit::Redis) -> Self {
        let stream = TcpStream::connect(redis.addr()).unwrap();
        let mut c = Self {
            stream,
            buf: BytesMut::new(),
            decoder: ReplyDecoder::default(),
        };
        let ok = c.call(&["AUTH", "default", redis.admin_password()]);
        assert_eq!(ok.simple_text(), Some(&b"OK"[..]));
        c
    }

    fn call<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Frame {
        let mut out = BytesMut::new();
        encode_args(args, &mut out);
        self.stream.write_all(&out).unwrap();
        loop {
            if let Some(f) = self
                .decoder
                .decode(&mut self.buf, RespVersion::Resp2)
                .unwrap()
            {
                return f;
            }
            let mut chunk = [0u8; 65536];
            let n = self.stream.read(&mut chunk).unwrap();
            assert!(n > 0, "server closed");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

fn text(v: &Value) -> String {
    String::from_utf8_lossy(v.as_bytes().expect("string")).into_owned()
}

fn names(v: &Value) -> BTreeSet<String> {
    v.as_elements()
        .unwrap_or_default()
        .iter()
        .map(text)
        .collect()
}

#[test]
fn table_matches_the_live_server() {
    let redis = wirewarden_testkit::Redis::builder().start().unwrap();
    let mut c = Client::connect(&redis);
    let info = c.call(&["COMMAND", "INFO"]).value().unwrap();
    let infos = info.as_elements().unwrap();
    let live: Vec<&Value> = infos.iter().filter(|v| !v.is_null()).collect();
    assert_eq!(live.len(), wirewarden_redis::COMMANDS.len());
    let mut checked = 0;
    let mut check = |v: &Value, container: Option<&'static wirewarden_redis::CommandSpec>| {
        let e = v.as_elements().unwrap();
        let name = text(&e[0]);
        let spec = match container {
            None => lookup(name.as_bytes()).unwrap_or_else(|| panic!("{name} not in table")),
            Some(c) => c
                .subcommand(name.split('|').nth(1).unwrap().as_bytes())
                .unwrap_or_else(|| panic!("{name} not in table")),
        };
        assert_eq!(spec.name, name);
        assert_eq!(i64::from(spec.arity), e[1].as_integer().unwrap(), "{name}");
        let flags: BTreeSet<String> = spec.flags.names().map(str::to_owned).collect();
        assert_eq!(flags, names(&e[2]), "{name}");
        let acl: BTreeSet<String> = spec.acl.names().map(|n| format!("@{n}")).collect();
        assert_eq!(acl, names(&e[6]), "{name}");
        assert_eq!(
            spec.key_specs.len(),
            e[8].as_elements().unwrap().len(),
            "{name}"
        );
        assert_eq!(
            spec.subcommands.len(),
            e[9].as_elements().unwrap().len(),
            "{name}"
        );
        checked += 1;
        spec
    };
    for v in &live {
        let spec = check(v, None);
        for sub in v.as_elements().unwrap()[9].as_elements().unwrap() {
            check(sub, Some(spec));
        }
    }
    assert!(checked > 300, "{checked}");
    let get = lookup(b"get").unwrap();
    assert!(get.flags.contains(CommandFlags::READONLY) && get.acl.contains(AclCategories::READ));
}

#[test]
fn key_extraction_matches_command_getkeys() {
    let redis = wirewarden_testkit::Redis::builder().start().unwrap();
    let mut c = Client::connect(&redis);
    let cases: &[&[&str]] = &[
        &["GET", "a"],
        &["set", "a", "1", "EX", "10", "GET"],
        &["MSET", "a", "1", "b", "2", "c", "3"],
        &["DEL", "a", "b", "c"],
        &["RENAME", "a", "b"],
        &["LMOVE", "src", "dst", "LEFT", "RIGHT"],
        &["SMOVE", "s1", "s2", "m"],
        &["EVAL", "return 1", "2", "k1", "k2", "a1"],
        &["EVAL_RO", "return 1", "1", "k1"],
        &[
            "EVALSHA",
            "0123456789abcdef0123456789abcdef01234567",
            "1",
            "k1",
            "x",
        ],
        &["FCALL", "f", "2", "k1", "k2", "arg"],
        &["ZUNIONSTORE", "out", "2", "z1", "z2", "WEIGHTS", "1", "2"],
        &["ZINTER", "2", "z1", "z2"],
        &["ZRANGESTORE", "dst", "src", "0", "-1"],
        &["SINTERCARD", "2", "s1", "s2", "LIMIT", "1"],
        &["LMPOP", "2", "l1", "l2", "LEFT"],
        &["BLMPOP", "0", "2", "l1", "l2", "LEFT", "COUNT", "2"],
        &["BZPOPMIN", "z1", "z2", "0"],
        &["BLPOP", "l1", "l2", "l3", "5"],
        &["XREAD", "COUNT", "2", "STREAMS", "s1", "s2", "0", "0"],
        &[
            "XREADGROUP",
            "GROUP",
            "g",
            "c",
            "COUNT",
            "1",
            "STREAMS",
            "s1",
            "s2",
            ">",
            ">",
        ],
        &["XADD", "s", "*", "f", "v"],
        &["XINFO", "STREAM", "s"],
        &["XGROUP", "CREATE", "s", "g", "$"],
        &["OBJECT", "ENCODING", "k"],
        &["MEMORY", "USAGE", "k"],
        &["SORT", "l", "BY", "w_*", "GET", "o_*", "STORE", "dst"],
        &["SORT_RO", "l", "ALPHA"],
        &[
            "MIGRATE",
            "127.0.0.1",
            "1",
            "",
            "0",
            "100",
            "COPY",
            "KEYS",
            "k1",
            "k2",
        ],
        &["MIGRATE", "127.0.0.1", "1", "k", "0", "100"],
        &["GEORADIUS", "g", "0", "0", "10", "km", "STORE", "dst"],
        &[
            "GEOSEARCHSTORE",
            "dst",
            "src",
            "FROMLONLAT",
            "0",
            "0",
            "BYRADIUS",
            "1",
            "km",
        ],
        &["BITOP", "AND", "dst", "a", "b"],
        &["BITFIELD", "b", "GET", "u8", "0"],
        &["PFMERGE", "dst", "h1", "h2"],
        &["LCS", "a", "b"],
        &["GETEX", "k", "PERSIST"],
        &["COPY", "a", "b", "REPLACE"],
        &["WATCH", "a", "b"],
        &["EXISTS", "a", "b"],
        &["TOUCH", "a"],
        &["DUMP", "a"],
        &["RESTORE", "a", "0", "payload"],
        &["HSET", "h", "f", "v"],
        &["SUNIONSTORE", "d", "a", "b"],
        &["PING"],
        &["CONFIG", "SET", "maxmemory", "1"],
    ];
    let mut with_keys = 0;
    for args in cases {
        let mut req: Vec<&str> = vec!["COMMAND", "GETKEYS"];
        req.extend_from_slice(args);
        let reply = c.call(&req).value().unwrap();
        let want: BTreeSet<String> = if reply.is_error() {
            BTreeSet::new()
        } else {
            names(&reply)
        };
        let bytes: Vec<bytes::Bytes> = args
            .iter()
            .map(|a| bytes::Bytes::copy_from_slice(a.as_bytes()))
            .collect();
        let got: BTreeSet<String> = classify(&bytes)
            .command
            .objects_of(ObjectKind::Key)
            .map(|o| o.name.clone())
            .collect();
        if !want.is_empty() {
            with_keys += 1;
        }
        assert_eq!(got, want, "{args:?}: server said {reply:?}");
    }
    assert!(
        with_keys >= cases.len() - 3,
        "{with_keys} of {}",
        cases.len()
    );
}
