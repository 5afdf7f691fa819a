//! Containers: records, names, and their life (create, start, stop, kill, remove, wait),
//! each start handed to a `berth shim` process that outlives the daemon.
//!
//! ```text
//! <data-root>/containers/<id>/      created by create, removed by rm (or --rm after the exit):
//!                                    renamed to .del-<id> first, which open sweeps
//!   container.json                   the record; replaced atomically (temp, fsync, rename,
//!                                    fsync dir) by the daemon on every change of state
//!   upper/ work/                     the overlay's writable layer, kept across restarts
//!   rootfs/                          the overlay mount point: mounted by the daemon at start,
//!                                    unmounted by the shim after the exit (or by rm)
//!   bundle/config.json               the OCI runtime spec, rewritten at every start
//!   hosts resolv.conf hostname       bind-mounted into the container, written at start
//!   shim.json                        the shim's settings; shim.log its own diagnostics
//!   <id>-json.log[.N]                the container's output, written by the shim only
//!   exit.json                        how the last run ended, written atomically by the shim
//! <exec-root>/runtime/<id>/          libcontainer's state, deleted by the shim after the exit
//! ```
//!
//! A restarted daemon reads every record; a container recorded as running whose shim still
//! lives is adopted (its exit is awaited through a pidfd), one whose shim is gone gets the
//! exit the shim recorded.

pub(crate) mod filesystem;
mod health;
mod mounts;
mod networking;
mod resources;
pub(crate) mod settings;
mod update;

use std::collections::{BTreeMap, HashMap};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_image::ImageStore;
use berth_runtime::{EtcContent, ExitRecord, ShimConfig};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::watch;

use crate::error::{Error, Result};
use crate::events::{Event, Events};
use crate::networks::{Endpoint, Networks, Published, Wiring};
use crate::volumes::Volumes;
use mounts::prepare_volumes;
use settings::{Network, Settings};

/// The zero time, as dockerd shows a container that never started or finished.
pub(crate) const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// How long `rm -f` and a stop's final SIGKILL wait for the exit.
const KILL_WAIT: Duration = Duration::from_secs(30);

/// A container's state, as inspect shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RunState {
    /// `created`, `running`, `exited`, `removing`.
    pub(crate) status: String,
    pub(crate) pid: i32,
    pub(crate) shim_pid: u32,
    pub(crate) exit_code: i64,
    pub(crate) error: String,
    pub(crate) started_at: String,
    pub(crate) finished_at: String,
    /// Frozen by `docker pause` (the status stays `running`, as dockerd keeps `Running`).
    #[serde(default)]
    pub(crate) paused: bool,
    /// The last run lost a process to the OOM killer.
    #[serde(default)]
    pub(crate) oom_killed: bool,
}

impl Default for RunState {
    fn default() -> Self {
        RunState {
            status: "created".into(),
            pid: 0,
            shim_pid: 0,
            exit_code: 0,
            error: String::new(),
            started_at: ZERO_TIME.into(),
            finished_at: ZERO_TIME.into(),
            paused: false,
            oom_killed: false,
        }
    }
}

/// What the daemon keeps about one container.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Record {
    pub(crate) id: String,
    /// Without the leading `/`.
    pub(crate) name: String,
    /// RFC 3339 with nanoseconds.
    pub(crate) created: String,
    /// The image as the user named it.
    pub(crate) image: String,
    /// `sha256:…`.
    pub(crate) image_id: String,
    pub(crate) settings: Settings,
    /// `Config`, as inspect shows it.
    pub(crate) config: Value,
    /// `HostConfig`, as inspect shows it.
    pub(crate) host_config: Value,
    pub(crate) state: RunState,
    /// Restarts by the restart policy since the last start by hand.
    #[serde(default)]
    pub(crate) restart_count: u64,
    /// Stopped or killed by hand: the restart policy leaves it alone (`unless-stopped` also
    /// across daemon restarts).
    #[serde(default)]
    pub(crate) manually_stopped: bool,
    /// Its places on networks, allocated at create, released at removal.
    #[serde(default)]
    pub(crate) endpoints: Vec<Endpoint>,
    /// The ports published at the last start.
    #[serde(default)]
    pub(crate) published: Vec<Published>,
}

impl Record {
    /// Running, paused or not (dockerd's `State.Running`).
    pub(crate) fn running(&self) -> bool {
        self.state.status == "running"
    }

    pub(crate) fn paused(&self) -> bool {
        self.running() && self.state.paused
    }

    /// The status dockerd shows: `created`, `running`, `paused`, `exited`, `removing`.
    pub(crate) fn status(&self) -> &str {
        if self.paused() { "paused" } else { &self.state.status }
    }
}

/// The container's cgroup, relative to each hierarchy's root.
/// The container's cgroup: `/berth/<id>`, or under its `--cgroup-parent`.
pub(crate) fn cgroups_path(rec: &Record) -> String {
    let parent = &rec.settings.cgroup_parent;
    if parent.is_empty() {
        format!("/berth/{}", rec.id)
    } else {
        format!("{parent}/{}", rec.id)
    }
}

/// What waiters see change.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Phase {
    pub(crate) running: bool,
    /// How many runs have ended.
    pub(crate) exits: u64,
    pub(crate) exit_code: i64,
    pub(crate) removed: bool,
    /// A shim runs for the container (also while it cleans up after the exit).
    pub(crate) shim_alive: bool,
}

/// One container.
pub(crate) struct Entry {
    pub(crate) id: String,
    record: Mutex<Record>,
    phase: watch::Sender<Phase>,
    /// Serialises start and remove.
    op: tokio::sync::Mutex<()>,
    /// `State.Health`, for a container with a health check that has run (in memory only).
    health: Mutex<Option<health::Health>>,
}

impl Entry {
    fn new(record: Record) -> Arc<Entry> {
        let phase = Phase {
            running: record.running(),
            exits: 0,
            exit_code: record.state.exit_code,
            removed: false,
            shim_alive: false,
        };
        Arc::new(Entry {
            id: record.id.clone(),
            record: Mutex::new(record),
            phase: watch::Sender::new(phase),
            op: tokio::sync::Mutex::new(()),
            health: Mutex::new(None),
        })
    }

    /// `State.Health`: `None` for a container without a health check (or one never run).
    pub(crate) fn health(&self) -> Option<health::Health> {
        self.health.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The health status alone (`starting`, `healthy`, `unhealthy`).
    fn health_status(&self) -> Option<&'static str> {
        self.health
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|h| h.status)
    }

    /// A copy of the record.
    pub(crate) fn record(&self) -> Record {
        self.record.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<Phase> {
        self.phase.subscribe()
    }
}

/// Daemon-wide defaults for containers (`berth daemon --init --init-path PATH`).
#[derive(Debug, Clone, Default)]
pub(crate) struct Defaults {
    /// Run every container with an init process unless it says `--init=false`.
    pub(crate) init: bool,
    /// The init binary; searched for (as dockerd does) when not given.
    pub(crate) init_path: Option<PathBuf>,
}

/// Where the init binary is looked for when `--init-path` is not given: dockerd's libexec
/// directories for `docker-init`, then `$PATH` for `docker-init` and Debian's static tini.
const INIT_DIRS: &[&str] = &[
    "/usr/local/libexec/docker",
    "/usr/libexec/docker",
    "/usr/local/lib/docker",
    "/usr/lib/docker",
    "/usr/local/libexec",
    "/usr/libexec",
];

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The init binary for `--init`: the configured one, or the first found of [`INIT_DIRS`]'s
/// `docker-init`, `docker-init` and `tini-static` in `path` (the daemon's `$PATH`).
pub(crate) fn find_init(configured: Option<&Path>, path: &str) -> Result<PathBuf> {
    if let Some(p) = configured {
        return if is_executable(p) {
            Ok(p.to_path_buf())
        } else {
            Err(Error::NoInitBinary {
                searched: format!("{} (given with --init-path)", p.display()),
            })
        };
    }
    let mut candidates: Vec<PathBuf> = INIT_DIRS.iter().map(|d| Path::new(d).join("docker-init")).collect();
    for name in ["docker-init", "tini-static"] {
        candidates.extend(
            path.split(':')
                .filter(|d| !d.is_empty())
                .map(|d| Path::new(d).join(name)),
        );
    }
    if let Some(found) = candidates.iter().find(|c| is_executable(c)) {
        return Ok(found.clone());
    }
    Err(Error::NoInitBinary {
        searched: candidates
            .iter()
            .map(|c| c.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// Every container of the daemon.
pub(crate) struct Containers {
    /// `<data-root>/containers`.
    root: PathBuf,
    /// libcontainer's state root, `<exec-root>/runtime`.
    state_root: PathBuf,
    /// This binary, re-executed as `berth shim`.
    exe: PathBuf,
    /// Forks the shims (`berth shim-spawner`), started at the first need; `None` inside when
    /// it cannot run, and shims are exec'd.
    spawner: std::sync::OnceLock<Option<berth_runtime::Spawner>>,
    images: Arc<ImageStore>,
    /// The volumes containers name; references are kept current by create and remove.
    volumes: Arc<Volumes>,
    table: Mutex<Table>,
    /// What `/events` streams: container events are published here, image events by the
    /// API handlers.
    events: Arc<Events>,
    /// `docker exec` instances, by exec ID (in memory: dockerd forgets them on restart too).
    execs: Mutex<HashMap<String, Arc<Exec>>>,
    defaults: Defaults,
    pub(crate) networks: Arc<Networks>,
}

/// One `docker exec`.
pub(crate) struct Exec {
    pub(crate) id: String,
    pub(crate) container: String,
    pub(crate) config: berth_runtime::ExecConfig,
    /// The command line as given, for inspect.
    pub(crate) user: String,
    pub(crate) attach_stdin: bool,
    pub(crate) attach_stdout: bool,
    pub(crate) attach_stderr: bool,
    /// `DetachKeys` as the exec was created with ("" for the default).
    pub(crate) detach_keys: String,
    /// (started, running, exit code).
    pub(crate) state: Mutex<(bool, bool, Option<i64>)>,
    /// With a terminal: the write side of its resize FIFO, until the exec ends.
    pub(crate) resize: Mutex<Option<std::fs::File>>,
}

impl Exec {
    /// `POST /exec/{id}/resize`: passed to the exec's shim, which owns the terminal. A
    /// resize of an exec without a terminal succeeds and does nothing, as with dockerd.
    pub(crate) fn resize(&self, rows: u16, cols: u16) -> Result<()> {
        use std::io::Write;
        let mut guard = self.resize.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = guard.as_mut() {
            let path = self.config.resize_fifo.clone().unwrap_or_default();
            f.write_all(format!("{rows} {cols}\n").as_bytes())
                .map_err(io_err("write", &path))?;
        }
        Ok(())
    }

    /// Closes and removes the resize FIFO once the exec has ended.
    pub(crate) fn finished(&self) {
        self.resize.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(path) = &self.config.resize_fifo {
            let _ = std::fs::remove_file(path);
        }
    }
}

#[derive(Default)]
struct Table {
    by_id: HashMap<String, Arc<Entry>>,
    /// name -> id.
    names: HashMap<String, String>,
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.to_path_buf();
    move |source| Error::Io { op, path, source }
}

impl Containers {
    /// Reads every record under `<data-root>/containers`. Call [`restore`](Self::restore)
    /// from the async runtime afterwards to re-adopt running containers.
    pub(crate) fn open(
        data_root: &Path,
        exec_root: &Path,
        images: Arc<ImageStore>,
        defaults: Defaults,
        networks: impl FnOnce(Arc<Events>) -> Result<Networks>,
    ) -> Result<Containers> {
        let root = data_root.join("containers");
        let state_root = exec_root.join("runtime");
        for d in [&root, &state_root] {
            std::fs::create_dir_all(d).map_err(io_err("create directory", d))?;
        }
        let exe = std::fs::read_link("/proc/self/exe")
            .or_else(|_| std::env::current_exe())
            .map_err(io_err("find", Path::new("/proc/self/exe")))?;
        let events = Arc::new(Events::new());
        let volumes = Arc::new(Volumes::open(data_root, events.clone())?);
        let networks = Arc::new(networks(events.clone())?);
        let mut table = Table::default();
        for entry in std::fs::read_dir(&root).map_err(io_err("read", &root))? {
            let entry = entry.map_err(io_err("read", &root))?;
            if entry.file_name().to_string_lossy().starts_with(".del-") {
                // A removal the daemon did not finish.
                let _ = remove_dir(&entry.path());
                continue;
            }
            let path = entry.path().join("container.json");
            let record: Record = match std::fs::read(&path).map(|b| serde_json::from_slice(&b)) {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => {
                    tracing::error!(path = %path.display(), error = %e, "unreadable container record; skipped");
                    continue;
                }
                Err(e) => {
                    // A create that crashed before its record was written: nothing refers to it.
                    tracing::warn!(path = %path.display(), error = %e, "container directory without a record; removing it");
                    let _ = remove_dir(&entry.path());
                    continue;
                }
            };
            table.names.insert(record.name.clone(), record.id.clone());
            for m in record.settings.mounts.iter().filter(|m| m.is_volume()) {
                volumes.reference(&m.volume, &record.id);
            }
            table.by_id.insert(record.id.clone(), Entry::new(record));
        }
        Ok(Containers {
            root,
            state_root,
            exe,
            spawner: std::sync::OnceLock::new(),
            images,
            table: Mutex::new(table),
            volumes,
            events,
            execs: Mutex::new(HashMap::new()),
            defaults,
            networks,
        })
    }

    /// The init binary when `settings` run with one (`--init`, or the daemon's default,
    /// never with `--pid host`), else `None`.
    fn init_binary(&self, settings: &Settings) -> Result<Option<PathBuf>> {
        if !settings.init.unwrap_or(self.defaults.init) || settings.host.pid_host {
            return Ok(None);
        }
        let path = std::env::var("PATH").unwrap_or_default();
        find_init(self.defaults.init_path.as_deref(), &path).map(Some)
    }

    /// `POST /containers/{id}/exec`: records an exec for a running container.
    pub(crate) fn exec_create(&self, entry: &Entry, name: &str, body: &Value) -> Result<String> {
        let id = self.exec_create_quiet(entry, name, body)?;
        self.emit(&entry.record(), "exec_create", &[("execID", id.clone())]);
        Ok(id)
    }

    /// An exec of the daemon's own (a health probe): no event, and [`exec_forget`] after.
    fn exec_create_quiet(&self, entry: &Entry, name: &str, body: &Value) -> Result<String> {
        let rec = entry.record();
        if !rec.running() {
            return Err(Error::NotRunning { id: rec.id });
        }
        if rec.paused() {
            return Err(Error::ExecPaused { name: name.to_owned() });
        }
        let strings = |k: &str| -> Vec<String> {
            body.get(k)
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
                .unwrap_or_default()
        };
        let args = strings("Cmd");
        if args.is_empty() {
            return Err(Error::InvalidContainerConfig {
                reason: "No exec command specified".into(),
            });
        }
        let tty = body.get("Tty").and_then(Value::as_bool) == Some(true);
        if body.get("Privileged").and_then(Value::as_bool) == Some(true) {
            return Err(Error::NotBuilt {
                what: "docker exec --privileged".into(),
            });
        }
        let user = body.get("User").and_then(Value::as_str).unwrap_or("").to_owned();
        let (uid, gid) = if user.is_empty() {
            (None, None)
        } else {
            let (u, g) = berth_runtime::resolve_exec_user(&user, &self.dir(&rec.id).join("rootfs"))?;
            (Some(u), Some(g))
        };
        let env = strings("Env")
            .into_iter()
            .filter_map(|e| e.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
            .collect();
        let cwd = body
            .get("WorkingDir")
            .and_then(Value::as_str)
            .filter(|w| !w.is_empty())
            .map(PathBuf::from);
        let id = new_id();
        let flag = |k: &str| body.get(k).and_then(Value::as_bool).unwrap_or(false);
        let console_size = body
            .get("ConsoleSize")
            .and_then(Value::as_array)
            .and_then(|a| Some((a.first()?.as_u64()?, a.get(1)?.as_u64()?)))
            .and_then(|(h, w)| Some((u16::try_from(h).ok()?, u16::try_from(w).ok()?)))
            .filter(|&(h, w)| h > 0 && w > 0);
        // The resize FIFO is held open for writing (and reading, so a resize sent before
        // the exec's shim opens it waits in the pipe) for the exec's life.
        let resize = if tty {
            let path = self.dir(&rec.id).join(format!("exec-{id}.resize"));
            let _ = std::fs::remove_file(&path);
            nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600))
                .map_err(|e| io_err("mkfifo", &path)(e.into()))?;
            let f = std::fs::File::options()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(io_err("open", &path))?;
            Some((path, f))
        } else {
            None
        };
        let exec = Exec {
            id: id.clone(),
            container: rec.id.clone(),
            config: berth_runtime::ExecConfig {
                id: rec.id.clone(),
                state_root: self.state_root.clone(),
                args,
                env,
                cwd,
                uid,
                gid,
                tty,
                bundle: Some(self.dir(&rec.id).join("bundle")),
                console_size,
                resize_fifo: resize.as_ref().map(|(p, _)| p.clone()),
            },
            user,
            resize: Mutex::new(resize.map(|(_, f)| f)),
            attach_stdin: flag("AttachStdin"),
            attach_stdout: flag("AttachStdout"),
            attach_stderr: flag("AttachStderr"),
            detach_keys: body.get("DetachKeys").and_then(Value::as_str).unwrap_or("").to_owned(),
            state: Mutex::new((false, false, None)),
        };
        self.execs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone(), Arc::new(exec));
        Ok(id)
    }

    /// Drops an exec that has ended and its config file.
    fn exec_forget(&self, id: &str) {
        let exec = self.execs.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
        if let Some(exec) = exec {
            exec.finished();
            let _ = std::fs::remove_file(self.dir(&exec.container).join(format!("exec-{id}.json")));
        }
    }

    /// `exec_start` and `exec_die` (with its `exitCode`), as dockerd publishes them.
    pub(crate) fn emit_exec(&self, exec: &Exec, action: &'static str, code: Option<i64>) {
        let Ok(entry) = self.get(&exec.container) else {
            return;
        };
        let mut extra = vec![("execID", exec.id.clone())];
        if let Some(code) = code {
            extra.push(("exitCode", code.to_string()));
        }
        self.emit(&entry.record(), action, &extra);
    }

    /// `restart`, after a restart through the API.
    pub(crate) fn emit_restart(&self, entry: &Entry) {
        self.emit(&entry.record(), "restart", &[]);
    }

    pub(crate) fn exec_get(&self, id: &str) -> Result<Arc<Exec>> {
        self.execs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
            .ok_or_else(|| Error::NoSuchExec { id: id.to_owned() })
    }

    /// The `berth shim-exec` command for `exec` (its config written next to the container).
    pub(crate) fn exec_command(&self, exec: &Exec) -> Result<tokio::process::Command> {
        let path = self.dir(&exec.container).join(format!("exec-{}.json", exec.id));
        berth_runtime::write_cached(&path, &serde_json::to_vec(&exec.config).expect("serialisable"))?;
        let mut cmd = tokio::process::Command::new(&self.exe);
        cmd.arg("shim-exec").arg(path).env_remove("RUST_LOG");
        Ok(cmd)
    }

    /// The shim spawner, started on first use (blocking: a few milliseconds, once).
    pub(crate) fn spawner(&self) -> &Option<berth_runtime::Spawner> {
        self.spawner
            .get_or_init(|| berth_runtime::Spawner::start(&self.exe, &berth_runtime::shim_log_filter()))
    }

    /// The daemon's event log, shared with the API.
    pub(crate) fn events(&self) -> Arc<Events> {
        Arc::clone(&self.events)
    }

    /// Publishes a container event (`create`, `start`, `die`, `kill`, `stop`, `destroy`, ...)
    /// with dockerd's attributes: `image`, `name`, the container's labels, and `extra`.
    fn emit(&self, rec: &Record, action: &'static str, extra: &[(&str, String)]) {
        let mut attributes = BTreeMap::new();
        if let Some(labels) = rec.config.get("Labels").and_then(Value::as_object) {
            for (k, v) in labels {
                attributes.insert(k.clone(), v.as_str().map_or_else(|| v.to_string(), str::to_owned));
            }
        }
        attributes.insert("image".to_owned(), rec.image.clone());
        attributes.insert("name".to_owned(), rec.name.clone());
        for (k, v) in extra {
            attributes.insert((*k).to_owned(), v.clone());
        }
        self.events.publish(Event::container(action, &rec.id, attributes));
    }

    fn dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    /// Bytes the container wrote to its own layer (`SizeRw`): its overlay's upper directory.
    pub(crate) fn size_rw(&self, id: &str) -> u64 {
        crate::volumes::tree_size(&self.dir(id).join("upper"))
    }

    /// Re-adopts running containers whose shim lives and records the exits that happened
    /// while no daemon watched; finishes interrupted removals.
    pub(crate) async fn restore(self: &Arc<Self>) {
        // First every volume a live container still uses, so that the exits recorded below
        // do not unmount a volume device that another container shares.
        for entry in self.all() {
            let rec = entry.record();
            if rec.running()
                && shim_alive(rec.state.shim_pid, &self.dir(&rec.id))
                && !self.dir(&rec.id).join("exit.json").exists()
            {
                for m in rec.settings.mounts.iter().filter(|m| m.is_volume()) {
                    self.volumes.adopt(&m.volume, &rec.id);
                }
            }
        }
        for entry in self.all() {
            let rec = entry.record();
            match rec.state.status.as_str() {
                "running" => {
                    let alive = shim_alive(rec.state.shim_pid, &self.dir(&rec.id));
                    if self.dir(&rec.id).join("exit.json").exists() {
                        // Ended while no daemon watched; its shim may still be cleaning up.
                        tracing::info!(container = %rec.id, "container exited while the daemon was away");
                        if alive {
                            entry.phase.send_modify(|p| p.shim_alive = true);
                        }
                        self.on_exit(&entry, if alive { rec.state.shim_pid } else { 0 }).await;
                    } else if alive {
                        tracing::info!(container = %rec.id, shim = rec.state.shim_pid, paused = rec.state.paused, "re-adopting running container");
                        // The freezer is the truth: a crash between freezing and recording,
                        // or a thaw by hand, shows there.
                        let frozen = berth_runtime::Cgroup::open(&cgroups_path(&rec))
                            .ok()
                            .and_then(|cg| cg.frozen());
                        if let Some(frozen) = frozen.filter(|f| *f != rec.state.paused) {
                            tracing::info!(container = %rec.id, frozen, "paused state taken from the cgroup freezer");
                            if let Err(e) = self.update(&entry, |r| r.state.paused = frozen) {
                                tracing::warn!(container = %rec.id, error = %e, "failed to record the paused state");
                            }
                        }
                        self.watch(entry.clone(), rec.state.shim_pid, None);
                        self.monitor_health(&entry);
                    } else {
                        tracing::info!(container = %rec.id, "container exited while the daemon was away");
                        self.on_exit(&entry, 0).await;
                    }
                }
                "exited"
                    if rec.settings.restart.name == "always"
                        || rec.settings.restart.name == "unless-stopped" && !rec.manually_stopped =>
                {
                    // As dockerd at its start: `always` comes back even after a stop by hand.
                    let this = self.clone();
                    let entry = entry.clone();
                    tokio::spawn(async move {
                        if let Err(e) = this.start_inner(&entry, true).await {
                            tracing::warn!(container = %entry.id, error = %e, "restart policy: start failed");
                        }
                    });
                }
                // A --rm container whose removal a crash interrupted.
                "exited" if rec.settings.auto_remove => {
                    if let Err(e) = self.remove_now(&entry, true) {
                        tracing::warn!(container = %rec.id, error = %e, "failed to finish an auto-removal");
                    }
                }
                _ => {}
            }
        }
        // A volume device left mounted by a daemon that died before its last user's exit.
        self.volumes.unmount_idle();
        let running: Vec<Record> = self.all().iter().map(|e| e.record()).filter(|r| r.running()).collect();
        let networks = self.networks.clone();
        tokio::task::spawn_blocking(move || {
            let wirings: Vec<(Wiring<'_>, Vec<Published>)> =
                running.iter().map(|r| (wiring(r), r.published.clone())).collect();
            networks.restore(&wirings);
        })
        .await
        .expect("restoring networks does not panic");
    }

    pub(crate) fn all(&self) -> Vec<Arc<Entry>> {
        let t = self.table.lock().unwrap_or_else(|p| p.into_inner());
        t.by_id.values().cloned().collect()
    }

    /// Finds a container by full ID, name (with or without `/`), or unique ID prefix.
    /// A container's health status by its full id (`docker ps`, the `health` filter).
    pub(crate) fn health_of(&self, id: &str) -> Option<&'static str> {
        let entry = self
            .table
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .by_id
            .get(id)
            .cloned();
        entry.and_then(|e| e.health_status())
    }

    pub(crate) fn get(&self, name: &str) -> Result<Arc<Entry>> {
        let t = self.table.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = t.by_id.get(name) {
            return Ok(e.clone());
        }
        let bare = name.strip_prefix('/').unwrap_or(name);
        if let Some(id) = t.names.get(bare) {
            if let Some(e) = t.by_id.get(id) {
                return Ok(e.clone());
            }
        }
        if !name.is_empty() {
            let mut found = t.by_id.iter().filter(|(id, _)| id.starts_with(name));
            if let (Some((_, e)), None) = (found.next(), found.next()) {
                return Ok(e.clone());
            }
        }
        Err(Error::NoSuchContainer { name: name.to_owned() })
    }

    /// A container that uses `image_id` (`sha256:…`), if any.
    pub(crate) fn image_user(&self, image_id: &str) -> Option<Record> {
        self.all()
            .into_iter()
            .map(|e| e.record())
            .find(|r| r.image_id == image_id)
    }

    /// Counts (all, running, paused, stopped) for /info; a paused container is not counted
    /// as running, as with dockerd.
    pub(crate) fn counts(&self) -> (usize, usize, usize, usize) {
        let all: Vec<Record> = self.all().iter().map(|e| e.record()).collect();
        let paused = all.iter().filter(|r| r.paused()).count();
        let running = all.iter().filter(|r| r.running()).count() - paused;
        (all.len(), running, paused, all.len() - running - paused)
    }

    fn persist(&self, rec: &Record, write: Write) -> Result<()> {
        let path = self.dir(&rec.id).join("container.json");
        let data = serde_json::to_vec_pretty(rec).expect("serialisable");
        match write {
            Write::Synced => berth_runtime::write_atomic(&path, &data)?,
            Write::Cached => berth_runtime::write_cached(&path, &data)?,
            Write::Skip => {}
        }
        Ok(())
    }

    /// Changes the record, writes it durably, and tells waiters.
    fn update(&self, entry: &Entry, f: impl FnOnce(&mut Record)) -> Result<Record> {
        self.update_with(entry, Write::Synced, f)
    }

    /// [`update`](Self::update), writing the record as `write` says.
    fn update_with(&self, entry: &Entry, write: Write, f: impl FnOnce(&mut Record)) -> Result<Record> {
        let rec = {
            let mut r = entry.record.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut r);
            r.clone()
        };
        let result = self.persist(&rec, write);
        entry.phase.send_modify(|p| {
            p.running = rec.running();
            p.exit_code = rec.state.exit_code;
        });
        result.map(|()| rec)
    }

    /// `POST /containers/create`: resolves the image, parses the request and writes the
    /// record. Returns the ID and warnings.
    pub(crate) async fn create(&self, body: &Value, name: Option<&str>) -> Result<(String, Vec<String>)> {
        // A start usually follows: let the kernel's cgroup-migration grace period run now.
        berth_runtime::prime_cgroup_attach();
        let image_name = body.get("Image").and_then(Value::as_str).unwrap_or_default().to_owned();
        if image_name.is_empty() {
            return Err(Error::InvalidContainerConfig {
                reason: "Config cannot be empty in order to create a container".into(),
            });
        }
        let images = self.images.clone();
        let lookup = image_name.clone();
        let image = tokio::task::spawn_blocking(move || images.get(&lookup))
            .await
            .expect("image lookup does not panic")
            .map_err(|e| match e.kind() {
                berth_image::ErrorKind::NotFound => Error::NoSuchImage {
                    reference: display_reference(&image_name),
                },
                _ => Error::Image(e),
            })?;
        let id = new_id();
        let parsed = settings::parse(body, &image.record, &id)?;
        // Checked now, so a missing init fails the create and leaves nothing behind.
        self.init_binary(&parsed.settings)?;
        let name = match name.filter(|n| !n.is_empty()) {
            Some(n) => {
                let n = n.strip_prefix('/').unwrap_or(n);
                if !valid_name(n) {
                    return Err(Error::InvalidName { name: n.to_owned() });
                }
                n.to_owned()
            }
            None => self.random_name(),
        };
        let record = Record {
            id: id.clone(),
            name: name.clone(),
            created: berth_runtime::now_rfc3339(),
            image: image_name,
            image_id: image.record.id.to_string(),
            settings: parsed.settings,
            config: parsed.config,
            host_config: parsed.host_config,
            state: RunState::default(),
            restart_count: 0,
            manually_stopped: false,
            endpoints: Vec::new(),
            published: Vec::new(),
        };
        let mut record = record;
        // `--bridge none`: the default network is loopback only, as with dockerd.
        if record.settings.network == Network::Bridge && self.networks.resolve("bridge").is_err() {
            record.settings.endpoints.clear();
        }
        for e in &record.settings.endpoints {
            self.networks.resolve(&e.network)?;
        }
        let entry = {
            let mut t = self.table.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(other) = t.names.get(&name) {
                return Err(Error::NameConflict {
                    name,
                    id: other.clone(),
                });
            }
            // Under the table's lock, so two creates never take the same address.
            record.endpoints = self.networks.allocate(&record.settings.endpoints, &holders(&t, None))?;
            let entry = Entry::new(record.clone());
            t.names.insert(name.clone(), id.clone());
            t.by_id.insert(id.clone(), entry.clone());
            entry
        };
        let dir = self.dir(&id);
        let fifo = self.stdin_fifo(&id);
        // No start of this container (by name) before its volumes are ready.
        let _op = entry.op.lock().await;
        let written = std::fs::create_dir_all(&dir)
            .map_err(io_err("create directory", &dir))
            .and_then(|()| {
                if record.settings.open_stdin {
                    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600))
                        .map_err(|e| io_err("create FIFO", &fifo)(e.into()))?;
                }
                if record.settings.tty {
                    let resize = self.resize_fifo(&id);
                    nix::unistd::mkfifo(&resize, nix::sys::stat::Mode::from_bits_truncate(0o600))
                        .map_err(|e| io_err("create FIFO", &resize)(e.into()))?;
                }
                Ok(())
            });
        // Volumes: found or created, referenced, and new ones filled from the image.
        let mut created = Vec::new();
        let written = match written {
            Ok(()) if record.settings.mounts.iter().any(|m| m.is_volume()) => {
                let volumes = self.volumes.clone();
                let lowers = self.lowers(&image);
                let mut mounts = std::mem::take(&mut record.settings.mounts);
                let (d, i) = (dir.clone(), id.clone());
                let (result, mounts) = tokio::task::spawn_blocking(move || {
                    let r = prepare_volumes(&volumes, &d, &i, &mut mounts, &lowers);
                    (r, mounts)
                })
                .await
                .expect("preparing volumes does not panic");
                record.settings.mounts = mounts;
                result.map(|c| created = c)
            }
            other => other,
        }
        .and_then(|()| {
            *entry.record.lock().unwrap_or_else(|p| p.into_inner()) = record.clone();
            self.persist(&record, Write::Synced)
        });
        if let Err(e) = written {
            let _ = berth_runtime::unmount(&dir.join("rootfs"));
            let _ = remove_dir(&dir);
            self.forget(&entry);
            for m in record.settings.mounts.iter().filter(|m| m.is_volume()) {
                self.volumes.release(&m.volume, &id);
            }
            for v in &created {
                let _ = self.volumes.remove(v, false);
            }
            return Err(e);
        }
        tracing::info!(container = %id, name = %name, image = %record.image, "container created");
        self.emit(&record, "create", &[]);
        Ok((id, parsed.warnings))
    }

    fn random_name(&self) -> String {
        const LEFT: &[&str] = &[
            "brave", "calm", "eager", "fervent", "gallant", "happy", "jolly", "keen", "lucid", "modest", "nifty",
            "quirky", "serene", "tender", "vibrant", "wizardly", "zealous", "bold", "clever", "dreamy",
        ];
        const RIGHT: &[&str] = &[
            "curie", "darwin", "euler", "fermi", "galois", "hopper", "kepler", "lovelace", "meitner", "noether",
            "pascal", "ritchie", "shannon", "turing", "wozniak", "yalow", "bohr", "dirac", "hubble", "lamarr",
        ];
        let t = self.table.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let l = LEFT[rand::random_range(0..LEFT.len())];
            let r = RIGHT[rand::random_range(0..RIGHT.len())];
            let n = rand::random_range(0..100);
            let name = if n < 50 {
                format!("{l}_{r}")
            } else {
                format!("{l}_{r}{n}")
            };
            if !t.names.contains_key(&name) {
                return name;
            }
        }
    }

    fn forget(&self, entry: &Entry) {
        let mut t = self.table.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = t.by_id.remove(&entry.id) {
            let name = e.record().name;
            t.names.remove(&name);
        }
        entry.phase.send_modify(|p| p.removed = true);
    }

    /// `POST /containers/{id}/start`. `Ok(false)` when it already runs.
    pub(crate) async fn start(self: &Arc<Self>, entry: &Arc<Entry>) -> Result<bool> {
        self.start_inner(entry, false).await
    }

    /// A start by hand (`auto` false) resets the restart count; one by the restart policy
    /// counts.
    async fn start_inner(self: &Arc<Self>, entry: &Arc<Entry>, auto: bool) -> Result<bool> {
        let _op = entry.op.lock().await;
        let rec = entry.record();
        if rec.running() {
            return Ok(false);
        }
        if rec.state.status == "removing" {
            return Err(Error::NoSuchContainer { name: rec.id });
        }
        berth_runtime::prime_cgroup_attach();
        // The previous run's shim may still be unmounting the root filesystem this start
        // is about to mount again.
        let mut rx = entry.subscribe();
        let _ = tokio::time::timeout(KILL_WAIT, rx.wait_for(|p| !p.shim_alive)).await;
        let this = self.clone();
        let job = rec.clone();
        let started = tokio::task::spawn_blocking(move || this.start_blocking(&job))
            .await
            .expect("start does not panic");
        match started {
            Ok((shim_pid, pid, pipe, published)) => {
                // Not synced: after a power loss nothing runs, whatever the record says, and
                // `restore` settles a run whose shim is gone from its exit file.
                self.update_with(entry, Write::Cached, |r| {
                    r.manually_stopped = false;
                    r.published = published;
                    if r.settings.network.wired() {
                        for (i, e) in r.endpoints.iter_mut().enumerate() {
                            e.ifname = format!("eth{i}");
                        }
                    }
                    r.restart_count = if auto { r.restart_count + 1 } else { 0 };
                    r.state = RunState {
                        status: "running".into(),
                        pid,
                        shim_pid,
                        exit_code: 0,
                        error: String::new(),
                        started_at: berth_runtime::now_rfc3339(),
                        finished_at: r.state.finished_at.clone(),
                        paused: false,
                        oom_killed: false,
                    };
                })?;
                tracing::info!(container = %rec.id, pid, shim = shim_pid, "container started");
                for m in rec.settings.mounts.iter().filter(|m| m.is_volume()) {
                    self.volumes
                        .emit_mount("mount", &m.volume, &rec.id, &m.destination, !m.readonly);
                }
                self.emit(&rec, "start", &[]);
                self.watch(entry.clone(), shim_pid, Some(pipe));
                self.monitor_health(entry);
                Ok(true)
            }
            Err(e) => {
                let err = start_error(e);
                let (code, message) = match &err {
                    Error::StartFailed {
                        message,
                        exec_error: true,
                    } => (
                        if message.contains("permission denied") {
                            126
                        } else {
                            127
                        },
                        message.clone(),
                    ),
                    other => (128, other.to_string()),
                };
                let rec = self.update(entry, |r| {
                    r.state.exit_code = code;
                    r.state.error = message;
                });
                entry.phase.send_modify(|p| p.exits += 1);
                // As dockerd: a `--rm` container that fails to start is removed (the docker
                // CLI waits for that before it reports the error).
                if rec.is_ok_and(|r| r.settings.auto_remove) {
                    let this = self.clone();
                    let e = entry.clone();
                    let removed = tokio::task::spawn_blocking(move || this.remove_now(&e, true))
                        .await
                        .expect("removal does not panic");
                    if let Err(e) = removed {
                        tracing::warn!(container = %entry.id, error = %e, "failed to remove after a failed start");
                    }
                }
                Err(err)
            }
        }
    }

    /// Mounts the root filesystem, writes the bundle and starts the shim. On any failure
    /// the mount is undone.
    fn start_blocking(&self, rec: &Record) -> Result<(u32, i32, OwnedFd, Vec<Published>)> {
        let dir = self.dir(&rec.id);
        let image = self.images.get(&rec.image_id)?;
        let lowers = self.lowers(&image);
        let rootfs = dir.join("rootfs");
        let t0 = std::time::Instant::now();
        berth_runtime::mount_overlay(&lowers, &dir.join("upper"), &dir.join("work"), &rootfs)?;
        let mounted = t0.elapsed();
        let result = self.activate_volumes(rec).and_then(|()| {
            // Without a network to join (`--bridge none`, all disconnected) the container gets
            // a namespace of its own with loopback only, as with `--network none`.
            let wired = if rec.settings.network.wired() && !rec.endpoints.is_empty() {
                match self.networks.attach(&wiring(rec)) {
                    Ok(w) => Some(w),
                    Err(e) => {
                        self.deactivate_volumes(rec, false);
                        return Err(e);
                    }
                }
            } else {
                None
            };
            let launched = self.launch(rec, &dir, &rootfs, wired.as_ref());
            if launched.is_err() {
                self.deactivate_volumes(rec, false);
                if wired.is_some() {
                    self.networks.detach(&wiring(rec));
                }
            }
            launched.map(|(a, b, c)| (a, b, c, wired.map(|w| w.published).unwrap_or_default()))
        });
        tracing::debug!(
            container = %rec.id,
            mount_ms = mounted.as_secs_f64() * 1000.0,
            total_ms = t0.elapsed().as_secs_f64() * 1000.0,
            "root filesystem mounted and shim started"
        );
        if result.is_err() {
            if let Err(e) = berth_runtime::unmount(&rootfs) {
                tracing::warn!(container = %rec.id, error = %e, "failed to unmount after a failed start");
            }
        }
        result
    }

    fn launch(
        &self,
        rec: &Record,
        dir: &Path,
        rootfs: &Path,
        wired: Option<&crate::networks::Wired>,
    ) -> Result<(u32, i32, OwnedFd)> {
        let s = &rec.settings;
        let mut dns = s.dns.clone();
        if let Some(ns) = wired.and_then(|w| w.nameserver).filter(|_| dns.is_empty()) {
            dns.push(ns.to_string());
        }
        let etc = berth_runtime::write_etc_files(
            dir,
            &EtcContent {
                hostname: s.hostname.clone(),
                domainname: s.domainname.clone(),
                extra_hosts: s.extra_hosts.clone(),
                dns,
                dns_search: s.dns_search.clone(),
                dns_options: s.dns_options.clone(),
                host_network: s.network == Network::Host,
                addresses: rec
                    .endpoints
                    .iter()
                    .filter_map(|e| e.ipv4.or(e.ipv6))
                    .map(|n| n.addr().to_string())
                    .collect(),
            },
        )?;
        let spec = berth_runtime::ContainerSpec {
            id: rec.id.clone(),
            args: s.args.clone(),
            env: s.env.clone(),
            cwd: s.cwd.clone(),
            user: s.user.clone(),
            tty: s.tty,
            hostname: s.hostname.clone(),
            domainname: s.domainname.clone(),
            network: match (s.network, wired) {
                (Network::Host, _) => berth_runtime::NetworkMode::Host,
                (_, Some(w)) => berth_runtime::NetworkMode::Join(w.netns.clone()),
                _ => berth_runtime::NetworkMode::Private,
            },
            privileged: s.privileged,
            cap_add: s.cap_add.clone(),
            cap_drop: s.cap_drop.clone(),
            mounts: s.mounts.iter().map(|m| m.to_spec()).collect(),
            readonly_rootfs: s.readonly_rootfs,
            etc,
            cgroups_path: cgroups_path(rec),
            resources: s.resources.clone(),
            host: s.host.clone(),
            init: self.init_binary(s)?,
        };
        let bundle = dir.join("bundle");
        std::fs::create_dir_all(&bundle).map_err(io_err("create directory", &bundle))?;
        berth_runtime::write_bundle(&spec, &bundle, rootfs)?;
        let exit_file = dir.join("exit.json");
        match std::fs::remove_file(&exit_file) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("remove", &exit_file)(e)),
        }
        // A stale libcontainer state of a crashed run would make create fail with "exists".
        let stale = self.state_root.join(&rec.id);
        if stale.exists() {
            let _ = std::fs::remove_dir_all(&stale);
        }
        let shim = ShimConfig {
            id: rec.id.clone(),
            bundle,
            state_root: self.state_root.clone(),
            log_path: log_path(dir, &rec.id),
            log_limits: s.log,
            exit_file,
            rootfs: rootfs.to_path_buf(),
            // A wired namespace has its loopback up already.
            loopback_up: s.network != Network::Host && wired.is_none(),
            stdin_fifo: s.open_stdin.then(|| self.stdin_fifo(&rec.id)),
            tty: s.tty,
            console_size: s.console_size,
            resize_fifo: s.tty.then(|| self.resize_fifo(&rec.id)),
            cgroups_path: spec.cgroups_path.clone(),
            oom_kill_disable: s.resources.oom_kill_disable,
        };
        let shim_path = dir.join("shim.json");
        berth_runtime::write_cached(&shim_path, &serde_json::to_vec_pretty(&shim).expect("serialisable"))?;
        Ok(berth_runtime::spawn_shim(
            self.spawner().as_ref(),
            &self.exe,
            &shim_path,
            &dir.join("shim.log"),
            &rec.id,
        )?)
    }

    /// Waits for the shim to record the exit (its stdout pipe closes; for an adopted shim,
    /// its own exit), then records the container's exit.
    fn watch(self: &Arc<Self>, entry: Arc<Entry>, shim_pid: u32, pipe: Option<OwnedFd>) {
        let this = self.clone();
        entry.phase.send_modify(|p| p.shim_alive = true);
        tokio::spawn(async move {
            match pipe.map(tokio::net::unix::pipe::Receiver::from_owned_fd) {
                Some(Ok(mut rx)) => {
                    use tokio::io::AsyncReadExt;
                    let mut sink = [0u8; 64];
                    while matches!(rx.read(&mut sink).await, Ok(n) if n > 0) {}
                }
                Some(Err(e)) => {
                    tracing::warn!(container = %entry.id, error = %e, "cannot watch the shim's pipe; waiting for its exit");
                    wait_for_exit(shim_pid).await;
                }
                None => wait_for_exit(shim_pid).await,
            }
            this.on_exit(&entry, shim_pid).await;
        });
    }

    /// Records how the run ended (from the shim's exit file) and tells waiters; a `--rm`
    /// container is forgotten at once. What takes time (the shim's cleanup, the unmount,
    /// deleting files) finishes in the background.
    async fn on_exit(self: &Arc<Self>, entry: &Arc<Entry>, shim_pid: u32) {
        let dir = self.dir(&entry.id);
        let read = || match ExitRecord::read(&dir.join("exit.json")) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(container = %entry.id, error = %e, "unreadable exit record");
                None
            }
        };
        let mut exit = read();
        if exit.is_none() {
            // The pipe closed without a record: the shim died (or is about to); its exit
            // settles it.
            wait_for_exit(shim_pid).await;
            exit = read();
        }
        // A --rm container is deleted next: its exit need not be written (after a crash,
        // `restore` finds it running with its shim gone, reads the exit file and removes it).
        // Otherwise the page cache is enough: the shim syncs the exit file, so after a power
        // loss `restore` finds the record still running, the shim gone and the exit file, and
        // records the exit again; waiters need not wait for a sync.
        let write = if entry.record().settings.auto_remove {
            Write::Skip
        } else {
            Write::Cached
        };
        let rec = self.update_with(entry, write, |r| {
            r.state.status = "exited".into();
            r.state.pid = 0;
            r.state.shim_pid = 0;
            r.state.paused = false;
            match &exit {
                Some(e) => {
                    r.state.exit_code = i64::from(e.exit_code);
                    r.state.finished_at = e.finished_at.clone();
                    r.state.oom_killed = e.oom_killed;
                }
                None => {
                    r.state.exit_code = 255;
                    r.state.error = "the shim ended without recording an exit status; see shim.log".into();
                    r.state.finished_at = berth_runtime::now_rfc3339();
                }
            }
        });
        // `die` before the waiters wake (a stop's `stop` event follows it, as with dockerd).
        let auto_remove = match &rec {
            Ok(rec) => {
                tracing::info!(container = %rec.id, exit_code = rec.state.exit_code, "container exited");
                if rec.state.oom_killed {
                    self.emit(rec, "oom", &[]);
                }
                self.emit(rec, "die", &[("exitCode", rec.state.exit_code.to_string())]);
                rec.settings.auto_remove
            }
            Err(e) => {
                tracing::error!(container = %entry.id, error = %e, "failed to record the exit");
                false
            }
        };
        entry.phase.send_modify(|p| {
            p.running = false;
            p.exits += 1;
        });
        // Before a restart can activate them again.
        if let Ok(rec) = &rec {
            self.deactivate_volumes(rec, true);
            if rec.settings.network.wired() && self.networks.netns_path(&rec.id).exists() {
                let networks = self.networks.clone();
                let r = rec.clone();
                tokio::task::spawn_blocking(move || networks.detach(&wiring(&r)))
                    .await
                    .expect("unwiring does not panic");
            }
        }
        if auto_remove {
            // Its volumes first: `docker run --rm` returns when it hears of the removal, and
            // its anonymous volumes are gone by then, as with dockerd.
            if let Ok(rec) = &rec {
                let this = self.clone();
                let r = rec.clone();
                tokio::task::spawn_blocking(move || this.release_volumes(&r, true))
                    .await
                    .expect("releasing volumes does not panic");
            }
            // The record stays on disk until the files go: a crash in between is finished by
            // `restore`.
            self.forget(entry);
            if let Ok(rec) = &rec {
                self.emit(rec, "destroy", &[]);
            }
        }
        if let Ok(rec) = &rec {
            if should_restart(rec) {
                // A run of ten seconds or more resets the back-off, as with dockerd.
                let ran = |t: &str| time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok();
                let long_run = matches!(
                    (ran(&rec.state.started_at), ran(&rec.state.finished_at)),
                    (Some(a), Some(b)) if (b - a).whole_seconds() >= 10
                );
                let delay = if long_run {
                    restart_delay(0)
                } else {
                    restart_delay(rec.restart_count)
                };
                tracing::info!(container = %rec.id, policy = %rec.settings.restart.name, delay_ms = delay.as_millis() as u64, "restart policy: restarting");
                let this = self.clone();
                let entry = entry.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let rec = entry.record();
                    if entry.phase.borrow().removed || rec.running() || rec.manually_stopped {
                        return;
                    }
                    if let Err(e) = this.start_inner(&entry, true).await {
                        tracing::warn!(container = %entry.id, error = %e, "restart policy: start failed");
                    }
                });
            }
        }
        let this = self.clone();
        let entry = entry.clone();
        tokio::spawn(async move {
            wait_for_exit(shim_pid).await;
            entry.phase.send_modify(|p| p.shim_alive = false);
            let job = this.clone();
            let e = entry.clone();
            let done = tokio::task::spawn_blocking(move || {
                if auto_remove {
                    job.delete_files(&e.id)
                } else {
                    // The shim unmounts; if it could not, do it here.
                    berth_runtime::unmount(&job.dir(&e.id).join("rootfs")).map_err(Error::from)
                }
            })
            .await
            .expect("cleanup does not panic");
            if let Err(e) = done {
                tracing::warn!(container = %entry.id, error = %e, "cleanup after the exit failed");
            }
        });
    }

    /// Sends `signal` to the container's init process. A paused container is thawed after
    /// a signal meant to end it (SIGKILL, its stop signal, or any signal when it has no
    /// stop signal of its own), as dockerd does: a frozen process cannot act on it.
    fn signal(&self, entry: &Entry, rec: &Record, signal: i32) -> Result<()> {
        if rec.state.pid <= 0 {
            return Err(Error::NotRunning { id: rec.id.clone() });
        }
        // libc's kill: real-time signals (systemd's SIGRTMIN+3) have no nix::Signal.
        // SAFETY: kill(2) with a pid and a signal number; no memory is involved.
        if unsafe { libc::kill(rec.state.pid, signal) } != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::ESRCH) {
                return Err(Error::Io {
                    op: "signal",
                    path: PathBuf::from(format!("/proc/{}", rec.state.pid)),
                    source: e,
                });
            }
        }
        let own_stop = rec
            .config
            .get("StopSignal")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .and_then(|s| settings::parse_signal(s).ok());
        let ends_it = signal == libc::SIGKILL || own_stop.is_none_or(|s| s == signal);
        if rec.paused() && ends_it {
            let thawed = berth_runtime::Cgroup::open(&cgroups_path(rec)).and_then(|cg| cg.thaw());
            match thawed {
                Ok(()) => {
                    self.update(entry, |r| r.state.paused = false)?;
                }
                Err(e) => tracing::warn!(container = %rec.id, error = %e, "cannot unpause the container"),
            }
        }
        Ok(())
    }

    /// `POST /containers/{id}/kill`.
    pub(crate) fn kill(&self, entry: &Entry, signal: Option<&str>) -> Result<()> {
        let rec = entry.record();
        if !rec.running() {
            return Err(Error::NotRunning { id: rec.id });
        }
        let sig = settings::parse_signal(signal.filter(|s| !s.is_empty()).unwrap_or("SIGKILL"))?;
        self.update(entry, |r| r.manually_stopped = true)?;
        self.signal(entry, &rec, sig)?;
        self.emit(&rec, "kill", &[("signal", sig.to_string())]);
        Ok(())
    }

    /// Waits until the run counter passes `exits` (or the container is gone); false on
    /// timeout.
    async fn wait_exit(mut rx: watch::Receiver<Phase>, exits: u64, timeout: Option<Duration>) -> bool {
        let wait = async move {
            let _ = rx.wait_for(|p| p.exits > exits || p.removed).await;
        };
        match timeout {
            Some(t) => tokio::time::timeout(t, wait).await.is_ok(),
            None => {
                wait.await;
                true
            }
        }
    }

    /// `POST /containers/{id}/stop`: the stop signal, then SIGKILL after `timeout` seconds
    /// (negative: wait for ever). `Ok(false)` when it was not running.
    pub(crate) async fn stop(&self, entry: &Entry, timeout: Option<i64>, signal: Option<&str>) -> Result<bool> {
        let rec = entry.record();
        if !rec.running() {
            return Ok(false);
        }
        let sig = settings::parse_signal(signal.filter(|s| !s.is_empty()).unwrap_or(&rec.settings.stop_signal))?;
        self.update(entry, |r| r.manually_stopped = true)?;
        let rx = entry.subscribe();
        let exits = rx.borrow().exits;
        self.signal(entry, &rec, sig)?;
        self.emit(&rec, "kill", &[("signal", sig.to_string())]);
        let t = timeout.or(rec.settings.stop_timeout).unwrap_or(10);
        let limit = (t >= 0).then(|| Duration::from_secs(t as u64));
        if Self::wait_exit(rx.clone(), exits, limit).await {
            self.emit(&rec, "stop", &[]);
            return Ok(true);
        }
        tracing::info!(container = %rec.id, timeout = t, "container did not stop in time; killing it");
        self.signal(entry, &rec, libc::SIGKILL)?;
        self.emit(&rec, "kill", &[("signal", libc::SIGKILL.to_string())]);
        Self::wait_exit(rx, exits, Some(KILL_WAIT)).await;
        self.emit(&rec, "stop", &[]);
        Ok(true)
    }

    /// `DELETE /containers/{id}`: refused while running unless `force` (then killed first).
    pub(crate) async fn remove(self: &Arc<Self>, entry: &Arc<Entry>, force: bool, volumes: bool) -> Result<()> {
        let rec = entry.record();
        if rec.running() {
            if !force {
                return Err(Error::ContainerRunning { name: rec.name });
            }
            let rx = entry.subscribe();
            let exits = rx.borrow().exits;
            self.update(entry, |r| r.manually_stopped = true)?;
            self.signal(entry, &rec, libc::SIGKILL)?;
            Self::wait_exit(rx, exits, Some(KILL_WAIT)).await;
        }
        let _op = entry.op.lock().await;
        if entry.phase.borrow().removed {
            return Ok(());
        }
        // The shim may still be unmounting; its mount must be gone before the rename.
        let mut rx = entry.subscribe();
        let _ = tokio::time::timeout(KILL_WAIT, rx.wait_for(|p| !p.shim_alive)).await;
        let this = self.clone();
        let e = entry.clone();
        tokio::task::spawn_blocking(move || this.remove_now(&e, volumes))
            .await
            .expect("removal does not panic")
    }

    /// `POST /containers/rename?name=`: a new name, free and valid.
    pub(crate) fn rename(&self, entry: &Entry, new: &str) -> Result<()> {
        let new = new.strip_prefix('/').unwrap_or(new);
        if !valid_name(new) {
            return Err(Error::InvalidName { name: new.to_owned() });
        }
        let old = {
            let mut t = self.table.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(other) = t.names.get(new) {
                return Err(Error::NameConflict {
                    name: new.to_owned(),
                    id: other.clone(),
                });
            }
            let old = entry.record().name;
            t.names.remove(&old);
            t.names.insert(new.to_owned(), entry.id.clone());
            old
        };
        let rec = self.update(entry, |r| r.name = new.to_owned())?;
        self.emit(&rec, "rename", &[("oldName", format!("/{old}"))]);
        Ok(())
    }

    /// `POST /containers/prune`: removes every container that is not running; returns
    /// their IDs.
    pub(crate) async fn prune(self: &Arc<Self>, chosen: impl Fn(&Record) -> bool) -> (Vec<String>, u64) {
        let (mut removed, mut reclaimed) = (Vec::new(), 0);
        for entry in self.all() {
            let rec = entry.record();
            if rec.running() || !chosen(&rec) {
                continue;
            }
            let this = Arc::clone(self);
            let id = entry.id.clone();
            let size = tokio::task::spawn_blocking(move || this.size_rw(&id))
                .await
                .unwrap_or(0);
            match self.remove(&entry, false, false).await {
                Ok(()) => {
                    removed.push(entry.id.clone());
                    reclaimed += size;
                }
                Err(e) => tracing::warn!(container = %entry.id, error = %e, "prune: not removed"),
            }
        }
        (removed, reclaimed)
    }

    /// Forgets the container and deletes its files (see [`delete_files`](Self::delete_files)).
    /// With `volumes` (`rm -v`, `--rm`) its anonymous volumes are removed too.
    fn remove_now(&self, entry: &Entry, volumes: bool) -> Result<()> {
        let rec = entry.record();
        if entry.phase.borrow().removed {
            let deleted = self.delete_files(&entry.id);
            self.release_volumes(&rec, volumes);
            return deleted;
        }
        // Unmount first: a container that cannot be unmounted stays, so rm can be retried.
        berth_runtime::unmount(&self.dir(&rec.id).join("rootfs"))?;
        // Before waiters hear of the removal (`docker run --rm` checks volumes next).
        self.release_volumes(&rec, volumes);
        self.forget(entry);
        self.emit(&rec, "destroy", &[]);
        self.delete_files(&rec.id)
    }

    /// Unmounts, renames the directory out of place (`.del-<id>`: atomic, so no half-removed
    /// container is ever loaded), then deletes the files. Every step is tried; the first
    /// failure is returned, and what is left `open` sweeps.
    fn delete_files(&self, id: &str) -> Result<()> {
        let dir = self.dir(id);
        let mut first: Option<Error> = None;
        if let Err(e) = berth_runtime::unmount(&dir.join("rootfs")) {
            tracing::warn!(container = %id, error = %e, "failed to unmount");
            first.get_or_insert(e.into());
        }
        let state = self.state_root.join(id);
        if state.exists() {
            if let Err(e) = std::fs::remove_dir_all(&state) {
                tracing::warn!(container = %id, error = %e, "failed to remove runtime state");
            }
        }
        let doomed = self.root.join(format!(".del-{id}"));
        match std::fs::rename(&dir, &doomed) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                let e = io_err("rename", &dir)(e);
                tracing::warn!(container = %id, error = %e, "failed to remove the container directory");
                return Err(first.unwrap_or(e));
            }
        }
        if let Err(e) = remove_dir(&doomed) {
            tracing::warn!(container = %id, error = %e, "failed to delete the container's files; the next start sweeps them");
        }
        tracing::info!(container = %id, "container removed");
        match first {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// Whether the restart policy starts the container again after this exit.
fn should_restart(rec: &Record) -> bool {
    if rec.manually_stopped || rec.settings.auto_remove {
        return false;
    }
    let p = &rec.settings.restart;
    match p.name.as_str() {
        "always" | "unless-stopped" => true,
        "on-failure" => rec.state.exit_code != 0 && (p.max == 0 || rec.restart_count < p.max),
        _ => false,
    }
}

/// dockerd's back-off: 100 ms, doubled per restart, at most a minute.
fn restart_delay(count: u64) -> Duration {
    Duration::from_millis(100u64.saturating_mul(1 << count.min(10)).min(60_000))
}

/// The log file of a container.
/// How a changed container record reaches the disk.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Write {
    /// Synced before the call returns: what must survive a power loss (create, stop).
    Synced,
    /// Left to the page cache: survives a crash of the daemon, not a power loss.
    Cached,
    /// Not written: the record is about to go (a `--rm` container's exit).
    Skip,
}

pub(crate) fn log_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}-json.log"))
}

impl Containers {
    pub(crate) fn log_path_of(&self, id: &str) -> PathBuf {
        log_path(&self.dir(id), id)
    }

    pub(crate) fn dir_of(&self, id: &str) -> PathBuf {
        self.dir(id)
    }

    /// The FIFO a `-t` container's shim reads `ROWS COLS` lines from.
    pub(crate) fn resize_fifo(&self, id: &str) -> PathBuf {
        self.dir(id).join("resize")
    }

    /// `POST /containers/{id}/resize?h=&w=`: passed to the shim, which owns the terminal.
    pub(crate) fn resize(&self, entry: &Entry, rows: u16, cols: u16) -> Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let rec = entry.record();
        if !rec.running() {
            return Err(Error::NotRunning { id: rec.id });
        }
        if !rec.settings.tty {
            // dockerd answers a resize of a container without a terminal with success too.
            return Ok(());
        }
        let path = self.resize_fifo(&rec.id);
        let mut f = std::fs::File::options()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path)
            .map_err(io_err("open", &path))?;
        f.write_all(format!("{rows} {cols}\n").as_bytes())
            .map_err(io_err("write", &path))
    }

    /// The FIFO a `-i` container reads its stdin from.
    pub(crate) fn stdin_fifo(&self, id: &str) -> PathBuf {
        self.dir(id).join("stdin")
    }
}

/// Removes a directory tree; a missing one is fine.
fn remove_dir(dir: &Path) -> Result<()> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("remove", dir)(e)),
    }
}

/// 64 random hex digits.
fn new_id() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// dockerd's `^/?[a-zA-Z0-9][a-zA-Z0-9_.-]+$`.
fn valid_name(n: &str) -> bool {
    let b = n.as_bytes();
    b.len() >= 2
        && b[0].is_ascii_alphanumeric()
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// `busybox` -> `busybox:latest`, as dockerd names a missing image.
fn display_reference(name: &str) -> String {
    let last = name.rsplit('/').next().unwrap_or(name);
    if last.contains(':') || name.contains('@') {
        name.to_owned()
    } else {
        format!("{name}:latest")
    }
}

/// A failed start as dockerd reports it; a missing or non-executable command gets the
/// message the docker CLI turns into exit code 127 or 126.
fn start_error(e: Error) -> Error {
    let text = e.to_string();
    if let Error::Runtime(berth_runtime::Error::Shim { reason, .. }) = &e {
        if let Some(exe) = missing_executable(reason) {
            return Error::StartFailed {
                message: format!(
                    "failed to create task for container: OCI runtime create failed: unable to start container process: exec: \"{exe}\": executable file not found in $PATH"
                ),
                exec_error: true,
            };
        }
        if reason.contains("does not have correct permissions") {
            return Error::StartFailed {
                message: format!(
                    "failed to create task for container: OCI runtime create failed: unable to start container process: exec: permission denied: {reason}"
                ),
                exec_error: true,
            };
        }
        return Error::StartFailed {
            message: format!("failed to create task for container: OCI runtime create failed: {reason}"),
            exec_error: false,
        };
    }
    match e {
        Error::Runtime(_) => Error::StartFailed {
            message: format!("failed to start container: {text}"),
            exec_error: false,
        },
        other => other,
    }
}

/// The executable named in libcontainer's "executable 'X' not found in $PATH".
fn missing_executable(reason: &str) -> Option<String> {
    let i = reason.find("executable '")?;
    let rest = &reason[i + "executable '".len()..];
    let end = rest.find('\'')?;
    reason[i..].contains("not found").then(|| rest[..end].to_owned())
}

/// Whether `pid` is the shim of the container in `dir` (not a recycled pid).
fn shim_alive(pid: u32, dir: &Path) -> bool {
    if pid == 0 {
        return false;
    }
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let args: Vec<String> = cmdline
        .split(|&b| b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let want = dir.join("shim.json").display().to_string();
    args.iter().any(|a| a == "shim") && args.contains(&want)
}

/// Resolves when process `pid` has exited (child or not), reaping it if it is our child.
async fn wait_for_exit(pid: u32) {
    if pid == 0 {
        return;
    }
    // SAFETY: pidfd_open(2) takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd >= 0 {
        // SAFETY: the syscall returned a new descriptor that we own.
        let pidfd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        // SAFETY: the OwnedFd is moved into the AsyncFd, so the descriptor stays open and the
        // same for the AsyncFd's whole life.
        match unsafe { tokio::io::unix::AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE) } {
            Ok(afd) => {
                let _ = afd.readable().await;
            }
            Err(e) => {
                tracing::warn!(pid, error = %e, "cannot poll a pidfd; polling /proc instead");
                while process_alive(pid as i32) {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
    // Our own child (started by this daemon) is a zombie until reaped; another's is not ours.
    let _ = nix::sys::wait::waitpid(
        nix::unistd::Pid::from_raw(pid as i32),
        Some(nix::sys::wait::WaitPidFlag::WNOHANG),
    );
}

/// Whether process `pid` still runs: it exists and is not a zombie awaiting its reaper.
pub(crate) fn process_alive(pid: i32) -> bool {
    pid > 0
        && std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| s.rsplit_once(')').map(|(_, rest)| rest.trim_start().to_owned()))
            .is_some_and(|rest| !rest.starts_with('Z') && !rest.starts_with('X'))
}

/// What the networks need of a container to wire or unwire it.
pub(crate) fn wiring(rec: &Record) -> Wiring<'_> {
    Wiring {
        id: &rec.id,
        name: &rec.name,
        endpoints: &rec.endpoints,
        ports: &rec.settings.ports,
        publish_all: rec.settings.publish_all,
        exposed: &rec.settings.exposed,
    }
}

/// Every address held on every network (network id, address, holder's name), but
/// `except`'s.
fn holders(t: &Table, except: Option<&str>) -> Vec<(String, std::net::IpAddr, String)> {
    let mut out = Vec::new();
    for e in t.by_id.values() {
        if Some(e.id.as_str()) == except {
            continue;
        }
        let r = e.record.lock().unwrap_or_else(|p| p.into_inner());
        for ep in &r.endpoints {
            for n in ep.ipv4.iter().chain(ep.ipv6.iter()) {
                out.push((ep.network_id.clone(), n.addr(), r.name.clone()));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_ids_and_messages() {
        assert!(valid_name("web-1.a_b"));
        assert!(!valid_name("x"));
        assert!(!valid_name("-x"));
        assert!(!valid_name("a/b"));
        assert_eq!(new_id().len(), 64);
        assert_eq!(display_reference("busybox"), "busybox:latest");
        assert_eq!(display_reference("reg:5000/a/b"), "reg:5000/a/b:latest");
        assert_eq!(display_reference("a/b:v1"), "a/b:v1");
        assert_eq!(
            missing_executable("failed: executable 'nosuch' not found in $PATH").as_deref(),
            Some("nosuch")
        );
        assert_eq!(missing_executable("something else"), None);
    }

    #[test]
    fn init_binary_lookup() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let bin = d.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let tini = bin.join("tini-static");
        std::fs::write(&tini, b"#!/bin/true\n").unwrap();
        std::fs::set_permissions(&tini, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = format!("/nonexistent:{}", bin.display());
        // No docker-init in this PATH (the libexec directories may hold one on a host with
        // dockerd; then that one wins, as with dockerd).
        let found = find_init(None, &path).unwrap();
        assert!(found == tini || found.starts_with("/usr"), "{}", found.display());
        assert_eq!(find_init(Some(&tini), "").unwrap(), tini);
        let err = find_init(Some(&d.path().join("nope")), &path).unwrap_err().to_string();
        assert!(
            err.contains("nope (given with --init-path)") && err.contains("--init-path"),
            "{err}"
        );
        if !INIT_DIRS.iter().any(|dir| Path::new(dir).join("docker-init").exists()) {
            let err = find_init(None, "/nonexistent").unwrap_err().to_string();
            assert!(err.contains("/usr/libexec/docker/docker-init"), "{err}");
            assert!(err.contains("/nonexistent/tini-static"), "{err}");
        }
    }
}
