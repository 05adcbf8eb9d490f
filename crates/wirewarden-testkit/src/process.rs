//! Finding binaries, choosing ports, and running helper programs.

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::{Error, Result};

/// A loopback port that was free a moment ago.
///
/// Another process may take it before the caller binds it; the server starters here retry
/// with a new port when that happens, so parallel tests do not clash.
///
/// # Errors
/// If no socket can be bound on loopback.
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(|e| Error::io("binding an ephemeral loopback port", e))?;
    let port = listener
        .local_addr()
        .map_err(|e| Error::io("reading the bound port", e))?
        .port();
    Ok(port)
}

/// A random secret of 32 lowercase hexadecimal characters (128 bits from the OS).
#[must_use]
pub fn random_secret() -> String {
    let mut buf = [0u8; 16];
    // The OS random source failing is unrecoverable for a test; a clear panic is right here.
    getrandom::fill(&mut buf).expect("the operating system's random source failed");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// The first executable named `name` on `PATH` or in `extra` directories.
pub(crate) fn find_in_path(name: &str, extra: &[&Path]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    find_in_dirs(
        name,
        std::env::split_paths(&path).chain(extra.iter().map(|p| p.to_path_buf())),
    )
}

/// The first executable named `name` in `dirs`, in order.
pub(crate) fn find_in_dirs(name: &str, dirs: impl IntoIterator<Item = PathBuf>) -> Option<PathBuf> {
    dirs.into_iter()
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

/// Finds `binary`, or says which Debian package to install.
///
/// With `bindir`, only that directory is searched: a caller that names an installation must
/// not silently get another one from `PATH`. Without it, `PATH` and then `extra`.
pub(crate) fn require(
    binary: &'static str,
    package: &'static str,
    bindir: Option<&Path>,
    extra: &[&Path],
) -> Result<PathBuf> {
    match bindir {
        Some(dir) => find_in_dirs(binary, [dir.to_path_buf()]),
        None => find_in_path(binary, extra),
    }
    .ok_or(Error::MissingBinary { binary, package })
}

pub(crate) fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Whether this process runs as root (from `/proc/self/status`, which needs no `unsafe`).
pub(crate) fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|rest| rest.split_whitespace().nth(1))
            == Some("0")
    })
}

/// The uid and gid of `user` from `/etc/passwd`.
pub(crate) fn lookup_user(user: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut f = line.split(':');
        if f.next()? != user {
            return None;
        }
        let _password = f.next()?;
        let uid = f.next()?.parse().ok()?;
        let gid = f.next()?.parse().ok()?;
        Some((uid, gid))
    })
}

/// Runs `cmd` to completion and turns a non-zero exit into [`Error::Command`].
pub(crate) fn run(cmd: &mut Command) -> Result<Output> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let out = cmd
        .output()
        .map_err(|e| Error::io(format!("running {program}"), e))?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(Error::Command {
            program,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

/// Reads a log file for an error message, never failing.
pub(crate) fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| format!("(log unreadable: {e})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_random_hex() {
        let a = random_secret();
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(a, random_secret());
    }

    #[test]
    fn free_ports_are_nonzero() {
        assert_ne!(free_port().unwrap(), 0);
    }

    #[test]
    fn path_lookup_finds_sh_and_not_nonsense() {
        assert!(find_in_path("sh", &[]).is_some());
        assert!(find_in_path("definitely-not-a-real-binary-xyz", &[]).is_none());
    }

    /// An executable file (mode 0755) named `name` in `dir`.
    fn executable(dir: &Path, name: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.join(name);
        std::fs::write(&p, "#!/bin/sh\nexit 0\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    #[test]
    fn dir_lookup_wants_an_executable_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let d = || [dir.path().to_path_buf()];
        assert_eq!(find_in_dirs("tool", d()), None);

        // A directory of that name is not a program.
        std::fs::create_dir(dir.path().join("tool")).unwrap();
        assert_eq!(find_in_dirs("tool", d()), None);

        // Neither is a file nobody may execute.
        let plain = dir.path().join("plain");
        std::fs::write(&plain, "not a program").unwrap();
        std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(find_in_dirs("plain", d()), None);

        let tool = executable(dir.path(), "other");
        assert_eq!(find_in_dirs("other", d()), Some(tool));
    }

    #[test]
    fn dir_lookup_takes_the_first_directory_that_has_it() {
        let first = tempfile::tempdir().unwrap();
        let second = tempfile::tempdir().unwrap();
        let in_second = executable(second.path(), "tool");
        let dirs = || [first.path().to_path_buf(), second.path().to_path_buf()];
        assert_eq!(find_in_dirs("tool", dirs()), Some(in_second));
        let in_first = executable(first.path(), "tool");
        assert_eq!(find_in_dirs("tool", dirs()), Some(in_first));
    }

    #[test]
    fn a_missing_binary_is_an_error_naming_the_package() {
        let empty = tempfile::tempdir().unwrap();
        let err = require("redis-server", "redis-server", Some(empty.path()), &[]).unwrap_err();
        assert!(
            matches!(
                err,
                Error::MissingBinary {
                    binary: "redis-server",
                    package: "redis-server"
                }
            ),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(text.contains("`redis-server` not found"), "{text}");
        assert!(text.contains("apt-get install redis-server"), "{text}");

        let err = require(
            "definitely-not-a-real-binary-xyz",
            "some-package",
            None,
            &[empty.path()],
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("install the Debian package `some-package`"),
            "{err}"
        );
    }

    #[test]
    fn a_bindir_is_the_only_place_searched() {
        // `sh` is on PATH, but a caller that names a directory gets only what is in it.
        let empty = tempfile::tempdir().unwrap();
        assert!(require("sh", "dash", None, &[]).is_ok());
        assert!(matches!(
            require("sh", "dash", Some(empty.path()), &[]),
            Err(Error::MissingBinary {
                binary: "sh",
                package: "dash"
            })
        ));
        let sh = executable(empty.path(), "sh");
        assert_eq!(require("sh", "dash", Some(empty.path()), &[]).unwrap(), sh);
    }

    #[test]
    fn root_exists_in_passwd() {
        assert_eq!(lookup_user("root"), Some((0, 0)));
        assert_eq!(lookup_user("no-such-user-xyz"), None);
    }
}
