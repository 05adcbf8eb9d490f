#!/usr/bin/env python3
"""Generate crates/wirewarden-redis/src/table.rs from a real redis-server.

The table (name, arity, flags, ACL categories, group, key specs and subcommands of every
command) is read with COMMAND INFO and COMMAND DOCS from a server this script starts itself
on a private Unix socket, so the result depends on nothing but the redis-server binary:

    python3 crates/wirewarden-redis/tools/gen_command_table.py [--redis-server PATH]
    python3 crates/wirewarden-redis/tools/gen_command_table.py --check   # CI: is it current?

The output is formatted with rustfmt, so a regenerated table is byte-identical to the checked-in
one when the server has not changed.

Needs only the Python standard library. The RESP2 replies are parsed by the small reader
below; no client library is involved.
"""

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "src", "table.rs")

# Names the Rust side (src/spec.rs) defines constants for. A server with a name not listed
# here makes the script fail, so nothing is silently dropped.
COMMAND_FLAGS = [
    "write", "readonly", "denyoom", "module", "admin", "pubsub", "noscript", "blocking",
    "loading", "stale", "skip_monitor", "skip_slowlog", "asking", "fast", "no_auth",
    "may_replicate", "sentinel", "only_sentinel", "no_mandatory_keys", "protected",
    "module_getkeys", "module_no_cluster", "no_async_loading", "no_multi", "movablekeys",
    "allow_busy", "module_getchannels",
]
ACL_CATEGORIES = [
    "keyspace", "read", "write", "set", "sortedset", "list", "hash", "string", "bitmap",
    "hyperloglog", "geo", "stream", "pubsub", "admin", "fast", "slow", "blocking",
    "dangerous", "connection", "transaction", "scripting",
]
KEY_SPEC_FLAGS = [
    "RO", "RW", "OW", "RM", "access", "update", "insert", "delete", "not_key", "incomplete",
    "variable_flags",
]


class Resp:
    """A minimal blocking RESP2 client over a socket."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def send(self, *args):
        out = b"*%d\r\n" % len(args)
        for a in args:
            a = a.encode() if isinstance(a, str) else a
            out += b"$%d\r\n%s\r\n" % (len(a), a)
        self.sock.sendall(out)
        return self.read()

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("server closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        while len(self.buf) < n + 2:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("server closed the connection")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def read(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n).decode()
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.read() for _ in range(n)]
        raise ValueError("unexpected reply type %r" % kind)


def pairs(flat):
    """RESP2 maps arrive as flat [k1, v1, k2, v2, ...] arrays."""
    if flat is None:
        return {}
    if isinstance(flat, dict):
        return flat
    return dict(zip(flat[0::2], flat[1::2]))


def rust_str(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def const_list(prefix, names, known, what):
    for n in names:
        if n not in known:
            sys.exit("unknown %s %r: add it to src/spec.rs and to this script" % (what, n))
    if not names:
        return "%s::EMPTY" % prefix
    return "%s::of(&[%s])" % (prefix, ", ".join("%s::%s" % (prefix, n.upper()) for n in names))


def key_spec(spec):
    spec = pairs(spec)
    flags = const_list("KeySpecFlags", spec.get("flags", []), KEY_SPEC_FLAGS, "key spec flag")
    bs = pairs(spec.get("begin_search"))
    bs_spec = pairs(bs.get("spec"))
    if bs.get("type") == "index":
        begin = "BeginSearch::Index(%d)" % bs_spec["index"]
    elif bs.get("type") == "keyword":
        begin = "BeginSearch::Keyword { keyword: %s, startfrom: %d }" % (
            rust_str(bs_spec["keyword"]), bs_spec["startfrom"])
    else:
        begin = "BeginSearch::Unknown"
    fk = pairs(spec.get("find_keys"))
    fk_spec = pairs(fk.get("spec"))
    if fk.get("type") == "range":
        find = "FindKeys::Range { lastkey: %d, keystep: %d, limit: %d }" % (
            fk_spec["lastkey"], fk_spec["keystep"], fk_spec["limit"])
    elif fk.get("type") == "keynum":
        find = "FindKeys::Keynum { keynumidx: %d, firstkey: %d, keystep: %d }" % (
            fk_spec["keynumidx"], fk_spec["firstkey"], fk_spec["keystep"])
    else:
        find = "FindKeys::Unknown"
    return "KeySpec { flags: %s, begin: %s, find: %s }" % (flags, begin, find)


def command(info, docs, indent):
    name, arity, flags, first, last, step, acl = info[:7]
    rest = info[7:]
    key_specs = rest[1] if len(rest) > 1 else []
    subs = rest[2] if len(rest) > 2 else []
    acl = [a.lstrip("@") for a in acl]
    doc = pairs(docs.get(name))
    group = doc.get("group", "")
    sub_docs = pairs(doc.get("subcommands"))
    pad = " " * indent
    out = [pad + "CommandSpec {"]
    out.append(pad + "    name: %s," % rust_str(name))
    out.append(pad + "    arity: %d," % arity)
    out.append(pad + "    flags: %s," % const_list("CommandFlags", flags, COMMAND_FLAGS, "command flag"))
    out.append(pad + "    acl: %s," % const_list("AclCategories", acl, ACL_CATEGORIES, "ACL category"))
    out.append(pad + "    group: %s," % rust_str(group))
    out.append(pad + "    legacy_keys: (%d, %d, %d)," % (first, last, step))
    if key_specs:
        out.append(pad + "    key_specs: &[")
        for ks in key_specs:
            out.append(pad + "        %s," % key_spec(ks))
        out.append(pad + "    ],")
    else:
        out.append(pad + "    key_specs: &[],")
    if subs:
        out.append(pad + "    subcommands: &[")
        for sub in sorted(subs, key=lambda s: s[0]):
            out.extend(command(sub, sub_docs, indent + 8))
        out.append(pad + "    ],")
    else:
        out.append(pad + "    subcommands: &[],")
    out.append(pad + "},")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--redis-server", default=shutil.which("redis-server") or "redis-server")
    ap.add_argument("--output", default=OUT)
    ap.add_argument("--check", action="store_true",
                    help="compare with the checked-in table instead of writing it")
    args = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="ww-cmdtable-")
    sock_path = os.path.join(tmp, "redis.sock")
    server = subprocess.Popen(
        [args.redis_server, "--port", "0", "--unixsocket", sock_path, "--save", "",
         "--appendonly", "no", "--dir", tmp],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            if os.path.exists(sock_path):
                break
            time.sleep(0.05)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        for _ in range(100):
            try:
                s.connect(sock_path)
                break
            except OSError:
                time.sleep(0.05)
        r = Resp(s)
        version = pairs(
            dict(l.split(":", 1) for l in r.send("INFO", "server").splitlines() if ":" in l)
        ).get("redis_version", "?")
        infos = [i for i in r.send("COMMAND", "INFO") if i is not None]
        docs = pairs(r.send("COMMAND", "DOCS"))
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(tmp, ignore_errors=True)

    lines = [
        "// @generated by tools/gen_command_table.py from redis-server %s" % version,
        "// (COMMAND INFO and COMMAND DOCS). Do not edit by hand: rerun the script.",
        "",
        "use crate::spec::{",
        "    AclCategories, BeginSearch, CommandFlags, CommandSpec, FindKeys, KeySpec, KeySpecFlags,",
        "};",
        "",
        "/// The redis-server version the table was generated from.",
        "pub const SERVER_VERSION: &str = %s;" % rust_str(version),
        "",
        "/// Every command of the server, sorted by name.",
        "pub static COMMANDS: &[CommandSpec] = &[",
    ]
    for info in sorted(infos, key=lambda i: i[0]):
        lines.extend(command(info, docs, 4))
    lines.append("];")
    target = args.output
    if args.check:
        fd, target = tempfile.mkstemp(suffix=".rs")
        os.close(fd)
    with open(target, "w") as f:
        f.write("\n".join(lines) + "\n")
    subprocess.run(["rustfmt", "--edition", "2024", target], check=True)
    if args.check:
        with open(target) as a, open(args.output) as b:
            same = a.read() == b.read()
        os.unlink(target)
        if not same:
            sys.exit("%s is not what redis %s generates: rerun this script" % (args.output, version))
        print("%s is current for redis %s (%d commands)" % (args.output, version, len(infos)))
        return
    print("wrote %d commands from redis %s to %s" % (len(infos), version, target))


if __name__ == "__main__":
    main()
