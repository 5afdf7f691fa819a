//! systemd's readiness protocol (`sd_notify`) for `Type=notify` units: `READY=1` once the
//! daemon or registry serves, `STOPPING=1` when it begins to shut down. `NOTIFY_SOCKET` is
//! taken out of the environment at start-up, so no shim or container inherits it.

use std::os::unix::net::UnixDatagram;
use std::sync::OnceLock;

static SOCKET: OnceLock<Option<String>> = OnceLock::new();

/// Takes `NOTIFY_SOCKET` from the environment. Call first thing in `main`, while the
/// process has one thread.
pub(crate) fn take_socket_from_env() {
    let socket = std::env::var("NOTIFY_SOCKET").ok().filter(|s| !s.is_empty());
    if socket.is_some() {
        // SAFETY: called at the start of `main`, before any other thread exists.
        unsafe { std::env::remove_var("NOTIFY_SOCKET") };
    }
    let _ = SOCKET.set(socket);
}

/// Tells systemd the service is ready, with a status line for `systemctl status`.
pub(crate) fn ready(status: &str) {
    send(&format!("READY=1\nSTATUS={status}\nMAINPID={}\n", std::process::id()));
}

/// Tells systemd the service is stopping.
pub(crate) fn stopping() {
    send("STOPPING=1\nSTATUS=shutting down\n");
}

fn send(message: &str) {
    let Some(Some(path)) = SOCKET.get() else { return };
    if let Err(e) = try_send(path, message) {
        tracing::warn!(socket = %path, error = %e, "failed to notify systemd");
    }
}

fn try_send(path: &str, message: &str) -> std::io::Result<()> {
    let sock = UnixDatagram::unbound()?;
    match path.strip_prefix('@') {
        // An abstract socket: its name without the '@'.
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
            sock.send_to_addr(message.as_bytes(), &addr)?;
        }
        None => {
            sock.send_to(message.as_bytes(), path)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_to_path_and_abstract_sockets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let rx = UnixDatagram::bind(&path).unwrap();
        try_send(path.to_str().unwrap(), "READY=1\n").unwrap();
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\n");

        use std::os::linux::net::SocketAddrExt;
        let name = format!("berth-notify-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let rx = UnixDatagram::bind_addr(&addr).unwrap();
        try_send(&format!("@{name}"), "STOPPING=1\n").unwrap();
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1\n");
    }
}
