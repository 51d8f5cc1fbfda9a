//! Telling the service manager what a program is doing (systemd's `sd_notify` protocol):
//! one datagram of `KEY=value` lines to the Unix socket named by `NOTIFY_SOCKET`, a path or,
//! with a leading `@`, an abstract socket. The programs say `READY=1` once their listeners
//! are bound, `RELOADING=1` when SIGHUP arrives and `READY=1` again once the new
//! configuration is applied or refused, `STOPPING=1` on the way out; `STATUS=` says why.
//!
//! Without `NOTIFY_SOCKET` (started by hand, by a test, by another supervisor) nothing is
//! sent. A message that cannot be sent is the caller's to log: the program keeps running,
//! and a `Type=notify` unit whose manager never hears `READY=1` fails its start on its own.

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Environment variable naming the manager's socket.
pub const SOCKET_VAR: &str = "NOTIFY_SOCKET";

/// Why a notification was not delivered.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// `NOTIFY_SOCKET` holds something that is neither a path nor an `@` abstract name.
    #[error("{SOCKET_VAR}={0:?} is neither an absolute path nor an @abstract name")]
    BadAddress(String),
    /// The socket could not be created or the datagram not sent.
    #[error("cannot notify {SOCKET_VAR}={0}: {1}")]
    Send(String, #[source] io::Error),
}

/// `READY=1`: start-up (or a reload) is complete; `status` says what the program serves.
pub fn ready(status: &str) -> String {
    format!("READY=1\nSTATUS={}\n", one_line(status))
}

/// `RELOADING=1` with the `CLOCK_MONOTONIC` time the reload began (in microseconds), as
/// `Type=notify-reload` requires; a `READY=1` must follow once it is applied or refused.
pub fn reloading(monotonic_usec: u64, status: &str) -> String {
    format!(
        "RELOADING=1\nMONOTONIC_USEC={monotonic_usec}\nSTATUS={}\n",
        one_line(status)
    )
}

/// `STOPPING=1`: the program is shutting down.
pub fn stopping(status: &str) -> String {
    format!("STOPPING=1\nSTATUS={}\n", one_line(status))
}

/// A `STATUS=` value is one line: line breaks become spaces.
fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

/// The address `NOTIFY_SOCKET` names: an absolute path, or `@name` for the abstract
/// socket `name` (Linux).
pub fn address(var: &str) -> Result<SocketAddr, NotifyError> {
    let bad = || NotifyError::BadAddress(var.to_string());
    if let Some(name) = var.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        SocketAddr::from_abstract_name(name.as_bytes()).map_err(|_| bad())
    } else if var.starts_with('/') {
        SocketAddr::from_pathname(var).map_err(|_| bad())
    } else {
        Err(bad())
    }
}

/// Sends `message` to the manager named by `NOTIFY_SOCKET`. `Ok(false)` when the variable
/// is unset or empty (no manager listens), `Ok(true)` once the datagram is sent.
pub fn send(message: &str) -> Result<bool, NotifyError> {
    match std::env::var(SOCKET_VAR) {
        Ok(var) if !var.is_empty() => send_to(&var, message).map(|()| true),
        _ => Ok(false),
    }
}

/// Sends `message` to the socket `var` names (a `NOTIFY_SOCKET` value).
pub fn send_to(var: &str, message: &str) -> Result<(), NotifyError> {
    let addr = address(var)?;
    let failed = |e| NotifyError::Send(var.to_string(), e);
    let socket = UnixDatagram::unbound().map_err(failed)?;
    socket.send_to_addr(message.as_bytes(), &addr).map_err(failed)?;
    Ok(())
}

/// Now on `CLOCK_MONOTONIC`, in microseconds: the clock the manager compares a reload's
/// `MONOTONIC_USEC` with.
pub fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec through a pointer to a live local one and
    // cannot fail for CLOCK_MONOTONIC; the result is read only after it returns.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if rc != 0 {
        return 0;
    }
    (ts.tv_sec as u64) * 1_000_000 + (ts.tv_nsec as u64) / 1_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_key_value_lines() {
        assert_eq!(ready("serving"), "READY=1\nSTATUS=serving\n");
        assert_eq!(
            reloading(1234567, "reloading /etc/strata/proxy.toml"),
            "RELOADING=1\nMONOTONIC_USEC=1234567\nSTATUS=reloading /etc/strata/proxy.toml\n"
        );
        assert_eq!(stopping("bye"), "STOPPING=1\nSTATUS=bye\n");
    }

    #[test]
    fn a_status_stays_on_one_line() {
        // A line break in a status would start a new assignment the manager would read.
        assert_eq!(ready("a\nREADY=0\r\nb"), "READY=1\nSTATUS=a READY=0  b\n");
    }

    #[test]
    fn addresses_are_paths_or_abstract_names() {
        use std::os::linux::net::SocketAddrExt;
        let path = address("/run/systemd/notify").expect("path");
        assert_eq!(path.as_pathname(), Some(std::path::Path::new("/run/systemd/notify")));
        let abs = address("@/org/freedesktop/systemd1/notify/123").expect("abstract");
        assert_eq!(
            abs.as_abstract_name(),
            Some(&b"/org/freedesktop/systemd1/notify/123"[..])
        );
        assert!(matches!(address("relative/sock"), Err(NotifyError::BadAddress(_))));
        assert!(matches!(
            address(&format!("/{}", "x".repeat(200))),
            Err(NotifyError::BadAddress(_))
        ));
    }

    #[test]
    fn the_monotonic_clock_moves_forward() {
        let a = monotonic_usec();
        let b = monotonic_usec();
        assert!(a > 0 && b >= a);
    }

    #[test]
    fn nothing_listening_is_an_error_naming_the_socket() {
        let err = send_to("@strata-notify-unit-nobody-listens", "READY=1\n").expect_err("no listener");
        assert!(err.to_string().contains("strata-notify-unit-nobody-listens"), "{err}");
    }

    #[test]
    fn a_datagram_reaches_a_bound_socket() {
        let dir = std::env::temp_dir().join(format!("strata-notify-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("notify");
        let _ = std::fs::remove_file(&path);
        let manager = UnixDatagram::bind(&path).expect("bind");
        send_to(path.to_str().expect("utf-8"), &ready("ok")).expect("send");
        let mut buf = [0u8; 64];
        let n = manager.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=ok\n");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
