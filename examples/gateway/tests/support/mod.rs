//! Helpers shared by the gateway binary's tests.

// Each test binary uses some of them.
#![allow(dead_code)]

use std::net::TcpStream;
use std::process::Child;
use std::time::{Duration, Instant};

/// A child process killed and reaped when dropped (a gateway, a client).
pub(crate) struct Running(pub(crate) Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Output bytes as text.
pub(crate) fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// 32 random bytes in hex: a chain or signing key file's content.
pub(crate) fn hex32() -> String {
    wirewarden_testkit::random_secret() + &wirewarden_testkit::random_secret()
}

/// Waits (up to 30 s) until something listens on `port` of the loopback address.
pub(crate) fn wait_port(port: u16) {
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "port {port} never opened"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
