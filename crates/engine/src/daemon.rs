//! The daemon's life: lock the data root, write the pid file, bind the socket, serve until a
//! signal, and leave nothing behind.
//!
//! ```text
//! <data-root>/            created 0711
//!   berth.lock            flock'ed for the daemon's life; holds "pid\npidfile\n" of the holder
//!   engine-id             the engine's UUID (/info ID), written once, atomically
//!   images.redb, blobs/, snapshots/
//!                         the image store, owned by berth-image (its layout is drawn there)
//!   containers/           container records, layers, logs (drawn in `containers/mod.rs`)
//!   tmp/                  default --tmpdir
//! <exec-root>/            created 0700; runtime state gone after reboot
//!   berth.pid             default --pidfile; written after the lock, removed on exit
//!   runtime/<id>/         libcontainer's state of a running container (owned by its shim)
//! <socket>                -H unix://PATH, mode 0660, group `berth` if it exists;
//!                         a stale one is removed before bind, removed on exit
//! ```

use std::fs::File;
use std::future::Future;
use std::io::{ErrorKind as IoKind, Write};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use nix::fcntl::{Flock, FlockArg};
use tokio::net::UnixListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tokio::task::JoinSet;

use berth_image::ImageStore;

use crate::api::{State, router};
use crate::config::Config;
use crate::containers::Containers;
use crate::error::{Error, Result};
use crate::host::Host;

/// How long open requests may run on after shutdown begins.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// A daemon that owns its data root and has bound its socket, ready to serve.
pub struct Daemon {
    // Field order is drop order: close the listener, remove socket and pid file, and only
    // then let go of the data-root lock.
    listener: UnixListener,
    socket: RemoveOnDrop,
    _pidfile: RemoveOnDrop,
    _lock: Flock<File>,
    config: Config,
    engine_id: String,
    images: Arc<ImageStore>,
    containers: Arc<Containers>,
}

impl Daemon {
    /// Takes the data root, writes the pid file and binds the socket. Fails without touching
    /// anything of another daemon's when the data root, pid file or socket is in use.
    pub async fn bind(config: Config) -> Result<Daemon> {
        let config = config.resolve()?;
        let socket = config.socket_path()?;
        let group = socket_group(config.group.as_deref())?;
        let pidfile = config.pidfile_path();
        mkdir(&config.data_root, 0o711)?;
        mkdir(&config.exec_root, 0o700)?;
        mkdir(&config.tmpdir_path(), 0o700)?;
        let lock = lock_data_root(&config.data_root, &pidfile)?;
        let pidfile = write_pidfile(&pidfile)?;
        let engine_id = engine_id(&config.data_root)?;
        // Opening sweeps what a crash left in the store; only the lock holder may do that.
        let images = Arc::new(ImageStore::open(&config.data_root)?);
        let defaults = crate::containers::Defaults {
            init: config.init,
            init_path: config.init_path.clone(),
        };
        if let Some(p) = &config.init_path {
            if let Err(e) = crate::containers::find_init(Some(p), "") {
                tracing::warn!(error = %e, "--init-path: containers with --init will fail to start");
            }
        }
        let containers = Arc::new(Containers::open(
            &config.data_root,
            &config.exec_root,
            images.clone(),
            defaults,
            |events| crate::networks::Networks::open(&config, events),
        )?);
        let (listener, socket) = bind_socket(&socket, group)?;
        Ok(Daemon {
            listener,
            socket,
            _pidfile: pidfile,
            _lock: lock,
            config,
            engine_id,
            images,
            containers,
        })
    }

    /// The socket the API is served on.
    pub fn socket_path(&self) -> &Path {
        &self.socket.0
    }

    /// Serves the API until `shutdown` resolves, then ends long-lived streams, lets open
    /// requests finish (for 10 s at most), and removes the socket and the pid file.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<()> {
        self.run_notifying(shutdown, |_| {}).await
    }

    /// [`run`](Self::run), calling `ready` with a status line once running containers are
    /// adopted and requests are served (systemd's `READY=1`).
    pub async fn run_notifying(self, shutdown: impl Future<Output = ()>, ready: impl FnOnce(&str)) -> Result<()> {
        let (stop_tx, stop_rx) = watch::channel(false);
        // Containers keep running while no daemon runs (their shims outlive it): adopt them
        // before the first request.
        self.containers.restore().await;
        // The shim spawner, ready before the first start asks for it.
        let containers = self.containers.clone();
        let _ = tokio::task::spawn_blocking(move || containers.spawner().is_some()).await;
        let state = State::new(
            self.config.clone(),
            self.engine_id.clone(),
            Host::detect(),
            stop_rx.clone(),
            self.images.clone(),
            self.containers.clone(),
        );
        let app = router(Arc::new(state));
        let trimmer = tokio::spawn(return_freed_memory());
        let _trimmer = AbortOnDrop(trimmer);
        tracing::info!(
            socket = %self.socket_path().display(),
            data_root = %self.config.data_root.display(),
            pid = std::process::id(),
            "daemon listening"
        );
        let (_, running, ..) = self.containers.counts();
        ready(&format!(
            "serving the Docker Engine API on {}; {running} containers",
            self.socket_path().display()
        ));
        let mut conns = JoinSet::new();
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            tokio::select! {
                r = self.listener.accept() => match r {
                    Ok((stream, _)) => {
                        let service = TowerToHyperService::new(app.clone());
                        let mut stop = stop_rx.clone();
                        conns.spawn(async move {
                            // Upgrades are kept on for the hijacked attach/exec streams to come.
                            let conn = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), service)
                                .with_upgrades();
                            let mut conn = std::pin::pin!(conn);
                            let r = tokio::select! {
                                r = conn.as_mut() => r,
                                () = crate::api::stopped(&mut stop) => {
                                    conn.as_mut().graceful_shutdown();
                                    conn.await
                                }
                            };
                            if let Err(e) = r {
                                tracing::debug!(error = %e, "connection ended with an error");
                            }
                        });
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
                () = &mut shutdown => break,
            }
        }
        tracing::info!("shutting down: finishing open requests");
        stop_tx.send_replace(true);
        let drain = async { while conns.join_next().await.is_some() {} };
        if tokio::time::timeout(DRAIN_TIMEOUT, drain).await.is_err() {
            tracing::warn!(open = conns.len(), "open requests cut off after 10 s");
            conns.abort_all();
        }
        tracing::info!(socket = %self.socket_path().display(), "daemon stopped");
        Ok(())
    }
}

/// Resolves on the first SIGTERM or SIGINT. The handlers are installed when this is called,
/// so call it before binding: a signal that arrives during start-up is not lost.
pub fn shutdown_signal() -> std::io::Result<impl Future<Output = ()>> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("received SIGTERM"),
            _ = int.recv() => tracing::info!("received SIGINT"),
        }
    })
}

/// Removes a file the daemon created when the daemon goes away (or fails to start).
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.0) {
            if e.kind() != IoKind::NotFound {
                tracing::warn!(path = %self.0.display(), error = %e, "failed to remove on exit");
            }
        }
    }
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.to_path_buf();
    move |source| Error::Io { op, path, source }
}

fn mkdir(path: &Path, mode: u32) -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
        .map_err(io("create directory", path))
}

/// One daemon per data root: an exclusive `flock` held for the daemon's life (the kernel drops
/// it when the process dies, so a crash never leaves a stale lock). The holder writes its pid
/// and pid file into the lock file, so the refusal can name them.
fn lock_data_root(data_root: &Path, pidfile: &Path) -> Result<Flock<File>> {
    let path = data_root.join("berth.lock");
    let file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io("open", &path))?;
    let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(l) => l,
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            let mut lines = holder.lines();
            let holder = match (lines.next(), lines.next()) {
                (Some(pid), Some(pf)) => format!("pid {pid}, pid file {pf}"),
                (Some(pid), None) => format!("pid {pid}"),
                _ => "pid unknown".to_owned(),
            };
            return Err(Error::DataRootLocked {
                data_root: data_root.to_path_buf(),
                holder,
            });
        }
        Err((_, errno)) => return Err(io("lock", &path)(errno.into())),
    };
    lock.set_len(0).map_err(io("truncate", &path))?;
    writeln!(lock, "{}\n{}", std::process::id(), pidfile.display()).map_err(io("write", &path))?;
    Ok(lock)
}

/// Writes our pid, refusing a pid file that names another live process (as dockerd does).
fn write_pidfile(path: &Path) -> Result<RemoveOnDrop> {
    if let Ok(text) = std::fs::read_to_string(path) {
        if let Ok(pid) = text.trim().parse::<i32>() {
            let alive = pid > 0
                && pid != std::process::id() as i32
                && !matches!(
                    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
                    Err(nix::errno::Errno::ESRCH)
                );
            if alive {
                return Err(Error::PidfileInUse {
                    path: path.to_path_buf(),
                    pid,
                });
            }
        }
    }
    if let Some(dir) = path.parent() {
        mkdir(dir, 0o755)?;
    }
    write_atomic(path, format!("{}\n", std::process::id()).as_bytes())?;
    Ok(RemoveOnDrop(path.to_path_buf()))
}

/// The engine ID shown by /info: made once per data root and kept.
fn engine_id(data_root: &Path) -> Result<String> {
    let path = data_root.join("engine-id");
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => return Ok(id.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == IoKind::NotFound => {}
        Err(e) => return Err(io("read", &path)(e)),
    }
    let id = uuid::Uuid::new_v4().to_string();
    write_atomic(&path, format!("{id}\n").as_bytes())?;
    Ok(id)
}

/// Temp file in the same directory, fsync, rename: readers see the old file or the new one.
fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = File::create(&tmp).map_err(io("create", &tmp))?;
        f.write_all(data).map_err(io("write", &tmp))?;
        f.sync_all().map_err(io("fsync", &tmp))?;
        std::fs::rename(&tmp, path).map_err(io("rename", path))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// The socket's group: the one named with `-G`, which must exist, or `berth` when it
/// exists (else the socket keeps the daemon's group, root's when run as root), as dockerd
/// does with `docker`.
fn socket_group(named: Option<&str>) -> Result<Option<nix::unistd::Group>> {
    let name = named.unwrap_or(DEFAULT_GROUP);
    match nix::unistd::Group::from_name(name) {
        Ok(Some(g)) => Ok(Some(g)),
        Ok(None) if named.is_some() => Err(Error::NoSuchGroup { name: name.to_owned() }),
        Ok(None) => {
            tracing::warn!(
                "group {DEFAULT_GROUP} does not exist: the API socket is root's only (mode 0660); create the group or pass -G"
            );
            Ok(None)
        }
        Err(e) => {
            tracing::warn!(group = name, error = %e, "failed to look up the socket's group");
            match named {
                Some(n) => Err(Error::NoSuchGroup { name: n.to_owned() }),
                None => Ok(None),
            }
        }
    }
}

/// The group the API socket gets when it exists and `-G` names none.
const DEFAULT_GROUP: &str = "berth";

/// Removes a stale socket (nobody accepts on it), refuses a live one or a non-socket, then
/// binds with mode 0660 and the group [`socket_group`] chose.
fn bind_socket(path: &Path, group: Option<nix::unistd::Group>) -> Result<(UnixListener, RemoveOnDrop)> {
    if let Some(dir) = path.parent() {
        mkdir(dir, 0o755)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => {
                return Err(Error::SocketInUse {
                    path: path.to_path_buf(),
                });
            }
            Err(e) => {
                tracing::info!(socket = %path.display(), reason = %e, "removing stale socket");
                std::fs::remove_file(path).map_err(io("remove stale socket", path))?;
            }
        },
        Ok(_) => {
            return Err(Error::NotASocket {
                path: path.to_path_buf(),
            });
        }
        Err(e) if e.kind() == IoKind::NotFound => {}
        Err(e) => return Err(io("stat", path)(e)),
    }
    let listener = UnixListener::bind(path).map_err(io("bind", path))?;
    let guard = RemoveOnDrop(path.to_path_buf());
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(io("chmod", path))?;
    if let Some(group) = group {
        nix::unistd::chown(path, None, Some(group.gid)).map_err(|e| Error::Io {
            op: "give the socket to its group",
            path: path.to_path_buf(),
            source: e.into(),
        })?;
    }
    Ok((listener, guard))
}

/// Pulls, imports and loads pass through megabyte buffers; once freed, glibc keeps those
/// pages in its arenas. An idle daemon should not hold them: every second, if more than
/// a megabyte lies free, it goes back to the system.
async fn return_freed_memory() {
    const FREE_BEFORE_TRIM: usize = 1 << 20;
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut trimmed_at = (0, 0);
    loop {
        tick.tick().await;
        // SAFETY: mallinfo2 and malloc_trim only read and adjust the allocator's own state.
        let info = unsafe { nix::libc::mallinfo2() };
        // Trimmed pages still count as free; trim again only after the heap has changed.
        let now = (info.fordblks, info.uordblks);
        if info.fordblks > FREE_BEFORE_TRIM && now != trimmed_at {
            unsafe { nix::libc::malloc_trim(0) };
            trimmed_at = now;
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path, name: &str) -> Config {
        Config {
            host: format!("unix://{}/{name}.sock", dir.display()),
            data_root: dir.join(format!("{name}-data")),
            exec_root: dir.join(format!("{name}-exec")),
            ..Config::default()
        }
    }

    #[tokio::test]
    async fn one_daemon_per_data_root_and_cleanup() {
        let dir = tempfile::tempdir().unwrap();
        let a = Daemon::bind(config(dir.path(), "a")).await.unwrap();
        let sock = a.socket_path().to_path_buf();
        let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o660);
        let pidfile = dir.path().join("a-exec/berth.pid");
        assert_eq!(
            std::fs::read_to_string(&pidfile).unwrap().trim(),
            std::process::id().to_string()
        );

        // Same data root, other socket: refused, naming the data root; a's files untouched.
        let mut same_root = config(dir.path(), "b");
        same_root.data_root = dir.path().join("a-data");
        let err = Daemon::bind(same_root).await.err().expect("second daemon refused");
        assert!(matches!(err, Error::DataRootLocked { .. }), "{err}");
        assert!(
            err.to_string()
                .contains(&dir.path().join("a-data").display().to_string())
        );
        assert!(err.to_string().contains(&std::process::id().to_string()), "{err}");
        assert!(sock.exists() && pidfile.exists());

        // Other data root, same socket: the live socket is refused.
        let mut same_sock = config(dir.path(), "c");
        same_sock.host = format!("unix://{}", sock.display());
        let err = Daemon::bind(same_sock).await.err().expect("socket in use refused");
        assert!(matches!(err, Error::SocketInUse { .. }), "{err}");
        assert!(sock.exists());
        assert!(
            !dir.path().join("c-exec/berth.pid").exists(),
            "failed start leaves no pid file"
        );

        // Side by side with everything different.
        let d = Daemon::bind(config(dir.path(), "d")).await.unwrap();

        let engine_id = std::fs::read_to_string(dir.path().join("a-data/engine-id")).unwrap();
        drop(a);
        assert!(!sock.exists() && !pidfile.exists());
        // The lock went with it, and the engine ID stays.
        let a2 = Daemon::bind(config(dir.path(), "a")).await.unwrap();
        assert_eq!(a2.engine_id, engine_id.trim());
        drop((a2, d));
    }

    #[tokio::test]
    async fn stale_socket_is_replaced_and_a_file_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let c = config(dir.path(), "s");
        let sock = c.socket_path().unwrap();
        drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
        assert!(sock.exists());
        let d = Daemon::bind(c.clone()).await.unwrap();
        drop(d);
        std::fs::write(&sock, "not a socket").unwrap();
        let err = Daemon::bind(c).await.err().unwrap();
        assert!(matches!(err, Error::NotASocket { .. }), "{err}");
    }

    #[tokio::test]
    async fn run_stops_on_shutdown_with_an_open_events_stream() {
        let dir = tempfile::tempdir().unwrap();
        let d = Daemon::bind(config(dir.path(), "r")).await.unwrap();
        let sock = d.socket_path().to_path_buf();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(d.run(async {
            let _ = rx.await;
        }));
        let mut stream = tokio::net::UnixStream::connect(&sock).await.unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        stream
            .write_all(b"GET /v1.45/events HTTP/1.1\r\nHost: berth\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 512];
        let n = stream.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        tx.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("shutdown not held by the events stream")
            .unwrap()
            .unwrap();
        assert!(!sock.exists());
    }
}
