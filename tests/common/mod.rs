//! Harness for the registry client tests, beside what `berth-testkit` provides (the gate,
//! the image builder): the registry under test as a child process that can run inside a
//! network namespace (and, for comparison, Debian's Distribution in its place), a throwaway
//! network namespace, Debian's dockerd inside it, a test CA and its `/etc/docker/certs.d`
//! entry, and command runs that always have a deadline.
//!
//! Every guard's `Drop` tries all of its teardown steps and reports every failure: it panics
//! with the list when the test otherwise passed (a leak fails the test) and only prints it
//! when the test is already failing.

use std::fmt;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use berth_testkit::Prereq;
use sha2::{Digest, Sha256};

/// Full path of a tool on PATH, or in the sbin directories a CI environment's PATH may lack
/// (dockerd lives there on Debian).
fn tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
        .unwrap_or_else(|| PathBuf::from(name))
}

// ---------------------------------------------------------------------------------------
// Commands with deadlines
// ---------------------------------------------------------------------------------------

/// What a finished command printed.
pub(crate) struct Output {
    pub(crate) command: String,
    pub(crate) status: ExitStatus,
    pub(crate) stdout: Vec<u8>,
    pub(crate) stderr: Vec<u8>,
}

impl Output {
    pub(crate) fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub(crate) fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} exited with {}\n--- stdout\n{}\n--- stderr\n{}",
            self.command,
            self.status,
            self.stdout().trim_end(),
            self.stderr().trim_end()
        )
    }
}

/// Runs `cmd` to completion; kills it and fails after `timeout`.
pub(crate) fn run(cmd: &mut Command, timeout: Duration) -> Result<Output> {
    run_with_input(cmd, None, timeout)
}

/// Like [`run`], and fails unless the exit status is 0.
pub(crate) fn run_ok(cmd: &mut Command, timeout: Duration) -> Result<Output> {
    let out = run(cmd, timeout)?;
    ensure!(out.status.success(), "{out}");
    Ok(out)
}

/// Like [`run`], writing `input` to the command's stdin.
pub(crate) fn run_with_input(cmd: &mut Command, input: Option<&[u8]>, timeout: Duration) -> Result<Output> {
    let command = format!("{cmd:?}");
    cmd.stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().with_context(|| format!("failed to start {command}"))?;
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin
            .write_all(input)
            .with_context(|| format!("failed to write the stdin of {command}"))?;
    }
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let status = wait_deadline(&mut child, timeout)?;
    // A grandchild may keep a pipe open after the command exits: do not wait for it forever.
    let collect = |rx: mpsc::Receiver<Vec<u8>>| rx.recv_timeout(Duration::from_secs(5)).ok();
    let (stdout, stderr) = (collect(stdout).unwrap_or_default(), collect(stderr));
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        bail!(
            "timed out after {timeout:?}: {command}\n--- stdout\n{}\n--- stderr\n{}",
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr.unwrap_or_default())
        );
    };
    Ok(Output {
        command,
        status,
        stdout,
        stderr: stderr.unwrap_or_default(),
    })
}

fn drain<R: Read + Send + 'static>(reader: Option<R>) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    if let Some(mut reader) = reader {
        thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = reader.read_to_end(&mut buf);
            let _ = tx.send(buf);
        });
    }
    rx
}

/// The exit status, or `None` if the child still runs after `timeout`.
fn wait_deadline(child: &mut Child, timeout: Duration) -> Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().context("failed to wait for a child")? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        thread::sleep(Duration::from_millis(50));
    }
}

fn send_signal(pid: u32, signal: &str) -> Result<(), String> {
    let out = run(
        Command::new("kill").args(["-s", signal, &pid.to_string()]),
        Duration::from_secs(10),
    )
    .map_err(|e| format!("kill -s {signal} {pid}: {e:#}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("kill -s {signal} {pid}: {}", out.stderr().trim()))
    }
}

/// SIGTERM, up to `grace` to exit, then SIGKILL. Our own child, by its pid.
fn stop_child(child: &mut Child, grace: Duration) -> Result<(), String> {
    if let Ok(Some(_)) = child.try_wait() {
        return Ok(());
    }
    let term = send_signal(child.id(), "TERM");
    match wait_deadline(child, grace) {
        Ok(Some(_)) => term,
        _ => {
            child.kill().map_err(|e| format!("SIGKILL pid {}: {e}", child.id()))?;
            match wait_deadline(child, Duration::from_secs(10)) {
                Ok(Some(_)) => Err(format!("pid {} ignored SIGTERM for {grace:?}; killed", child.id())),
                _ => Err(format!("pid {} survived SIGKILL", child.id())),
            }
        }
    }
}

/// Collects teardown failures; all steps run whatever happened before.
struct Teardown {
    what: &'static str,
    failures: Vec<String>,
}

impl Teardown {
    fn new(what: &'static str) -> Self {
        Teardown {
            what,
            failures: Vec::new(),
        }
    }

    fn step(&mut self, result: Result<(), String>) {
        if let Err(e) = result {
            self.failures.push(e);
        }
    }

    /// Panics with every failure unless the thread is already unwinding.
    fn finish(self) {
        if self.failures.is_empty() {
            return;
        }
        let message = format!("teardown of {} failed:\n  {}", self.what, self.failures.join("\n  "));
        if thread::panicking() {
            eprintln!("{message}");
        } else {
            panic!("{message}");
        }
    }
}

fn remove_dir_all_if_exists(path: &Path) -> Result<(), String> {
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("remove {}: {e}", path.display())),
    }
}

/// Lines a child printed, kept to show when a test fails.
#[derive(Clone, Default)]
struct LogLines(Arc<Mutex<Vec<String>>>);

impl LogLines {
    /// Copies `reader` line by line into the log and to `tx` until EOF.
    fn follow<R: Read + Send + 'static>(&self, reader: R, tx: Option<mpsc::Sender<String>>) {
        let lines = self.0.clone();
        thread::spawn(move || {
            let mut reader = BufReader::new(reader);
            let mut buf = Vec::new();
            while matches!(reader.read_until(b'\n', &mut buf), Ok(n) if n > 0) {
                let line = strip_ansi(String::from_utf8_lossy(&buf).trim_end());
                if let Some(tx) = &tx {
                    let _ = tx.send(line.clone());
                }
                lines.lock().unwrap_or_else(|e| e.into_inner()).push(line);
                buf.clear();
            }
        });
    }

    fn tail(&self, n: usize) -> String {
        let lines = self.0.lock().unwrap_or_else(|e| e.into_inner());
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters final-byte
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// Digests
// ---------------------------------------------------------------------------------------

pub(crate) fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// The uncompressed bytes of a layer blob: gunzipped if it is gzip, as is otherwise.
pub(crate) fn uncompressed(blob: &[u8]) -> Result<Vec<u8>> {
    if blob.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(blob)
            .read_to_end(&mut out)
            .context("failed to gunzip a layer")?;
        Ok(out)
    } else {
        Ok(blob.to_vec())
    }
}

// ---------------------------------------------------------------------------------------
// The registry under test
// ---------------------------------------------------------------------------------------

/// Which registry implementation serves the tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Backend {
    /// `berth registry serve`, the default.
    Berth,
    /// Debian's `docker-registry` (Distribution 2.8), with `BERTH_E2E_REGISTRY=distribution`:
    /// the reference, to tell a client's quirk from a Berth bug. It has no docker search.
    Distribution,
}

impl Backend {
    pub(crate) fn from_env() -> Self {
        match std::env::var("BERTH_E2E_REGISTRY").as_deref() {
            Ok("distribution") => Backend::Distribution,
            Ok("berth") | Err(_) => Backend::Berth,
            Ok(other) => panic!("BERTH_E2E_REGISTRY={other}: expected berth or distribution"),
        }
    }

    pub(crate) fn prereqs(self) -> &'static [Prereq] {
        match self {
            Backend::Berth => &[],
            Backend::Distribution => &[Prereq::DockerRegistry],
        }
    }
}

/// How to start the registry.
pub(crate) struct RegistryConfig {
    /// Listen address; port 0 picks a free port.
    pub(crate) addr: SocketAddr,
    /// bcrypt htpasswd file enabling basic auth.
    pub(crate) htpasswd: Option<PathBuf>,
    pub(crate) realm: Option<String>,
    /// Certificate chain and key, PEM.
    pub(crate) tls: Option<(PathBuf, PathBuf)>,
    /// Network namespace to run it in (`/run/netns/NAME`).
    pub(crate) netns: Option<PathBuf>,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            htpasswd: None,
            realm: None,
            tls: None,
            netns: None,
        }
    }
}

/// A running registry on a temporary root; stopped and its root removed on drop.
///
/// Not `berth_testkit::RegistryProcess`: this one must start inside a network namespace
/// (`nsenter`), and can start Distribution instead of Berth.
pub(crate) struct RegistryUnderTest {
    child: Child,
    addr: SocketAddr,
    tls: bool,
    log: LogLines,
    _root: tempfile::TempDir,
}

impl RegistryUnderTest {
    pub(crate) fn start(backend: Backend, config: &RegistryConfig) -> Result<Self> {
        let root = tempfile::Builder::new().prefix("berth-e2e-registry-").tempdir()?;
        let mut args: Vec<std::ffi::OsString> = Vec::new();
        match backend {
            Backend::Berth => {
                args.push(env!("CARGO_BIN_EXE_berth").into());
                args.extend(["registry", "serve", "--addr"].map(Into::into));
                args.push(config.addr.to_string().into());
                args.push("--root".into());
                args.push(root.path().join("storage").into());
                if let Some(htpasswd) = &config.htpasswd {
                    args.extend(["--htpasswd".into(), htpasswd.into()]);
                }
                if let Some(realm) = &config.realm {
                    args.extend(["--realm".into(), realm.into()]);
                }
                if let Some((cert, key)) = &config.tls {
                    args.extend(["--tls-cert".into(), cert.into(), "--tls-key".into(), key.into()]);
                }
            }
            Backend::Distribution => {
                let path = root.path().join("config.yml");
                fs::write(&path, distribution_config(root.path(), config))?;
                args.extend([tool("docker-registry").into(), "serve".into(), path.into()]);
            }
        }
        let mut cmd = match &config.netns {
            Some(netns) => {
                let mut cmd = Command::new(tool("nsenter"));
                cmd.arg(format!("--net={}", netns.display())).args(&args);
                cmd
            }
            None => {
                let mut cmd = Command::new(&args[0]);
                cmd.args(&args[1..]);
                cmd
            }
        };
        cmd.env("NO_COLOR", "1")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let command = format!("{cmd:?}");
        let mut child = cmd.spawn().with_context(|| format!("failed to start {command}"))?;
        let log = LogLines::default();
        let (tx, rx) = mpsc::channel();
        log.follow(child.stdout.take().expect("piped"), Some(tx.clone()));
        log.follow(child.stderr.take().expect("piped"), Some(tx));

        let deadline = Instant::now() + Duration::from_secs(30);
        let addr = loop {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(line) => {
                    if let Some(addr) = listening_addr(&line) {
                        break addr;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let _ = wait_deadline(&mut child, Duration::from_secs(5));
                }
            }
            if let Ok(Some(status)) = child.try_wait() {
                bail!("{command} exited with {status} before listening:\n{}", log.tail(40));
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("{command} printed no `listening` line within 30s:\n{}", log.tail(40));
            }
        };
        Ok(RegistryUnderTest {
            child,
            addr,
            tls: config.tls.is_some(),
            log,
            _root: root,
        })
    }

    /// `HOST:PORT`, as in image references.
    pub(crate) fn host(&self) -> String {
        self.addr.to_string()
    }

    pub(crate) fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }
}

impl Drop for RegistryUnderTest {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("--- registry log ({})\n{}", self.addr, self.log.tail(40));
        }
        let mut teardown = Teardown::new("the registry");
        teardown.step(stop_child(&mut self.child, Duration::from_secs(10)));
        teardown.finish();
    }
}

fn distribution_config(root: &Path, config: &RegistryConfig) -> String {
    let mut yml = format!(
        "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {}\n",
        root.join("storage").display(),
        config.addr
    );
    if let Some((cert, key)) = &config.tls {
        yml += &format!(
            "  tls:\n    certificate: {}\n    key: {}\n",
            cert.display(),
            key.display()
        );
    }
    if let Some(htpasswd) = &config.htpasswd {
        yml += &format!(
            "auth:\n  htpasswd:\n    realm: {}\n    path: {}\n",
            config.realm.as_deref().unwrap_or("berth"),
            htpasswd.display()
        );
    }
    yml
}

/// The address in Berth's `registry listening addr=IP:PORT` or Distribution's
/// `msg="listening on IP:PORT"`.
fn listening_addr(line: &str) -> Option<SocketAddr> {
    if !line.contains("listening") {
        return None;
    }
    line.split(|c: char| c.is_whitespace() || c == '"' || c == ',')
        .filter_map(|token| token.strip_prefix("addr=").unwrap_or(token).parse().ok())
        .next()
}

/// A bcrypt htpasswd file with one user, made by `htpasswd -Bbn`.
pub(crate) fn write_htpasswd(path: &Path, user: &str, password: &str) -> Result<()> {
    let out = run_ok(
        Command::new(tool("htpasswd")).args(["-Bbn", user, password]),
        Duration::from_secs(30),
    )?;
    fs::write(path, out.stdout).with_context(|| format!("failed to write {}", path.display()))
}

// ---------------------------------------------------------------------------------------
// TLS
// ---------------------------------------------------------------------------------------

/// A test CA and a server certificate it signed for one IP address, PEM.
pub(crate) struct TestPki {
    pub(crate) ca_cert: String,
    pub(crate) server_cert: String,
    pub(crate) server_key: String,
}

impl TestPki {
    pub(crate) fn for_ip(ip: IpAddr) -> Result<Self> {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
            SanType,
        };
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, "Berth e2e test CA");
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = KeyPair::generate()?;
        let ca_cert = ca.self_signed(&ca_key)?;

        let mut server = CertificateParams::new(Vec::<String>::new())?;
        server.distinguished_name.push(DnType::CommonName, ip.to_string());
        server.subject_alt_names = vec![SanType::IpAddress(ip)];
        server.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_key = KeyPair::generate()?;
        let server_cert = server.signed_by(&server_key, &ca_cert, &ca_key)?;
        Ok(TestPki {
            ca_cert: ca_cert.pem(),
            server_cert: server_cert.pem(),
            server_key: server_key.serialize_pem(),
        })
    }
}

/// `/etc/docker/certs.d/HOST:PORT/ca.crt`, as a site installs a registry's CA for dockerd;
/// removed on drop with the directories it had to create.
pub(crate) struct CertsDir {
    created: Vec<PathBuf>,
}

impl CertsDir {
    pub(crate) fn install(host: &str, ca_pem: &str) -> Result<Self> {
        let dir = Path::new("/etc/docker/certs.d").join(host);
        // Deepest last, so teardown removes in reverse order and only what was new.
        let created: Vec<PathBuf> = dir
            .ancestors()
            .take_while(|p| !p.exists())
            .map(Path::to_path_buf)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        let guard = CertsDir { created };
        fs::create_dir_all(&dir).with_context(|| format!("failed to create {}", dir.display()))?;
        fs::write(dir.join("ca.crt"), ca_pem)?;
        Ok(guard)
    }
}

impl Drop for CertsDir {
    fn drop(&mut self) {
        let mut teardown = Teardown::new("/etc/docker/certs.d entry");
        if let Some(dir) = self.created.last() {
            teardown.step(remove_dir_all_if_exists(dir));
        }
        for dir in self.created.iter().rev().skip(1) {
            teardown.step(fs::remove_dir(dir).or_else(|e| match e.kind() {
                std::io::ErrorKind::NotFound | std::io::ErrorKind::DirectoryNotEmpty => Ok(()),
                _ => Err(format!("remove {}: {e}", dir.display())),
            }));
        }
        teardown.finish();
    }
}

// ---------------------------------------------------------------------------------------
// Network namespace
// ---------------------------------------------------------------------------------------

/// A network namespace `berth-e2e-<pid>-<n>` with `lo` up; deleted on drop.
pub(crate) struct Netns {
    name: String,
}

impl Netns {
    pub(crate) fn create() -> Result<Self> {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "berth-e2e-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        run_ok(
            Command::new(tool("ip")).args(["netns", "add", &name]),
            Duration::from_secs(30),
        )?;
        let netns = Netns { name };
        netns.ip(&["link", "set", "lo", "up"])?;
        Ok(netns)
    }

    /// Gives the namespace `addr/32`: on a `dummy` interface, or on `lo` where the kernel
    /// has no dummy driver. Either way it exists only inside this namespace.
    pub(crate) fn add_address(&self, addr: IpAddr) -> Result<()> {
        let cidr = format!("{addr}/32");
        let dummy = self.ip(&["link", "add", "berth0", "type", "dummy"]);
        let dev = match dummy {
            Ok(()) => {
                self.ip(&["link", "set", "berth0", "up"])?;
                "berth0"
            }
            Err(e) => {
                eprintln!("no dummy interface ({e:#}); putting {cidr} on lo instead");
                "lo"
            }
        };
        self.ip(&["addr", "add", &cidr, "dev", dev])
    }

    fn ip(&self, args: &[&str]) -> Result<()> {
        let out = run(
            Command::new(tool("ip")).arg("-n").arg(&self.name).args(args),
            Duration::from_secs(30),
        )?;
        ensure!(
            out.status.success(),
            "ip -n {} {}: {}",
            self.name,
            args.join(" "),
            out.stderr().trim()
        );
        Ok(())
    }

    pub(crate) fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    /// `nsenter --net=/run/netns/NAME PROGRAM`: the network namespace only, so the program
    /// still sees the host's /sys and cgroups (`ip netns exec` remounts /sys).
    pub(crate) fn nsenter(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(tool("nsenter"));
        cmd.arg(format!("--net={}", self.path().display())).arg(program);
        cmd
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let mut teardown = Teardown::new("the network namespace");
        teardown.step(
            run(
                Command::new(tool("ip")).args(["netns", "del", &self.name]),
                Duration::from_secs(30),
            )
            .map_err(|e| format!("{e:#}"))
            .and_then(|out| {
                if out.status.success() {
                    Ok(())
                } else {
                    Err(out.to_string())
                }
            }),
        );
        teardown.finish();
    }
}

// ---------------------------------------------------------------------------------------
// dockerd
// ---------------------------------------------------------------------------------------

/// Debian's dockerd (20.10, with the containerd it starts itself) on a temp data root,
/// exec root and socket, inside a network namespace. The docker CLI talks to it from
/// outside through the socket with its own `DOCKER_CONFIG`.
pub(crate) struct Dockerd {
    child: Child,
    root: PathBuf,
    socket: PathBuf,
    cli_config: PathBuf,
    log: LogLines,
    /// `/etc/docker` and its `key.json` if they did not exist before this daemon.
    created: Vec<PathBuf>,
    // Last field: removed after the daemon is stopped and its mounts are gone.
    tmp: Option<tempfile::TempDir>,
}

const TRUST_KEY: &str = "/etc/docker/key.json";

impl Dockerd {
    pub(crate) fn start(netns: &Netns) -> Result<Self> {
        // Short path: the socket and containerd's socket under it must fit sun_path.
        let tmp = tempfile::Builder::new().prefix("berth-e2e-d").tempdir()?;
        let root = tmp.path().to_path_buf();
        let socket = root.join("docker.sock");
        let cli_config = root.join("cli-config");
        fs::create_dir_all(&cli_config)?;
        // Not the machine's /etc/docker/daemon.json.
        let daemon_json = root.join("daemon.json");
        fs::write(&daemon_json, "{}")?;
        // 20.10 always creates its trust key at /etc/docker/key.json (neither its
        // `deprecated-key-path` setting nor the flag reach it): remove it afterwards if
        // this test made it.
        let created = [Path::new("/etc/docker"), Path::new(TRUST_KEY)]
            .into_iter()
            .filter(|p| !p.exists())
            .map(Path::to_path_buf)
            .collect();
        let mut cmd = netns.nsenter(tool("dockerd"));
        cmd.arg("--config-file")
            .arg(&daemon_json)
            .arg("--host")
            .arg(format!("unix://{}", socket.display()))
            .arg("--data-root")
            .arg(root.join("data"))
            .arg("--exec-root")
            .arg(root.join("exec"))
            .arg("--pidfile")
            .arg(root.join("docker.pid"))
            .args(["--bridge=none", "--iptables=false", "--ip6tables=false"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let command = format!("{cmd:?}");
        let mut child = cmd.spawn().with_context(|| format!("failed to start {command}"))?;
        let log = LogLines::default();
        log.follow(child.stdout.take().expect("piped"), None);
        log.follow(child.stderr.take().expect("piped"), None);
        let mut dockerd = Dockerd {
            child,
            root,
            socket,
            cli_config,
            log,
            created,
            tmp: Some(tmp),
        };
        dockerd.wait_ready(Duration::from_secs(60), &command)?;
        Ok(dockerd)
    }

    fn wait_ready(&mut self, timeout: Duration, command: &str) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.socket.exists() {
                let out = run(
                    self.docker().args(["version", "--format", "{{.Server.Version}}"]),
                    Duration::from_secs(10),
                );
                if let Ok(out) = out
                    && out.status.success()
                {
                    return Ok(());
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                bail!("{command} exited with {status}:\n{}", self.log.tail(40));
            }
            if Instant::now() >= deadline {
                bail!(
                    "{command} did not answer `docker version` within {timeout:?}:\n{}",
                    self.log.tail(40)
                );
            }
            thread::sleep(Duration::from_millis(250));
        }
    }

    /// The docker CLI pointed at this daemon, with a private client config.
    pub(crate) fn docker(&self) -> Command {
        let mut cmd = Command::new(tool("docker"));
        cmd.env("DOCKER_HOST", format!("unix://{}", self.socket.display()))
            .env("DOCKER_CONFIG", &self.cli_config)
            .env_remove("DOCKER_CONTEXT")
            .env_remove("DOCKER_TLS_VERIFY")
            .env_remove("DOCKER_CERT_PATH");
        cmd
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("--- dockerd log\n{}", self.log.tail(60));
        }
        let mut teardown = Teardown::new("dockerd");
        // 1. The daemon: SIGTERM stops its containerd and unmounts its data root.
        teardown.step(stop_child(&mut self.child, Duration::from_secs(30)));
        // 2. What it started and left behind (containerd after a SIGKILL): every process
        //    whose command line names this test's private root, by pid.
        teardown.step(kill_processes_under(&self.root));
        // 3. Mounts under the data and exec roots, deepest first.
        teardown.step(unmount_under(&self.root));
        // 4. The trust key it left in /etc/docker, if it was not there before.
        for path in self.created.iter().rev() {
            let removed = if path.is_dir() {
                fs::remove_dir(path)
            } else {
                fs::remove_file(path)
            };
            teardown.step(removed.or_else(|e| match e.kind() {
                // Someone else's files appeared in /etc/docker meanwhile: theirs to keep.
                std::io::ErrorKind::NotFound | std::io::ErrorKind::DirectoryNotEmpty => Ok(()),
                _ => Err(format!("remove {}: {e}", path.display())),
            }));
        }
        // 5. The directories.
        if let Some(tmp) = self.tmp.take() {
            let path = tmp.path().to_path_buf();
            teardown.step(tmp.close().map_err(|e| format!("remove {}: {e}", path.display())));
        }
        teardown.finish();
    }
}

/// SIGKILLs the processes whose command line mentions `root` (a directory only this test
/// uses), and waits for them to go.
fn kill_processes_under(root: &Path) -> Result<(), String> {
    // With the separator, so that a sibling directory sharing the prefix never matches.
    let needle = format!("{}/", root.display());
    let me = std::process::id();
    let find = || -> Vec<u32> {
        let Ok(entries) = fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|&pid| pid != me)
            .filter(|pid| {
                fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| String::from_utf8_lossy(&c).contains(&needle))
            })
            .collect()
    };
    let pids = find();
    if pids.is_empty() {
        return Ok(());
    }
    let mut errors: Vec<String> = pids.iter().filter_map(|&pid| send_signal(pid, "KILL").err()).collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !find().is_empty() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(100));
    }
    let left = find();
    if !left.is_empty() {
        errors.push(format!("still running after SIGKILL: {left:?}"));
    }
    errors.insert(0, format!("had to kill leftover processes {pids:?}"));
    Err(errors.join("; "))
}

/// Unmounts every mount point at or under `root`, deepest first; lazily if busy.
fn unmount_under(root: &Path) -> Result<(), String> {
    let mountinfo =
        fs::read_to_string("/proc/self/mountinfo").map_err(|e| format!("read /proc/self/mountinfo: {e}"))?;
    let mut points: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(unescape_mountinfo)
        .filter(|p| p.starts_with(root))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    points.dedup();
    let mut errors = Vec::new();
    for point in &points {
        let umount = |lazy: bool| {
            let mut cmd = Command::new("umount");
            if lazy {
                cmd.arg("-l");
            }
            run(cmd.arg(point), Duration::from_secs(30)).is_ok_and(|o| o.status.success())
        };
        if !umount(false) && !umount(true) {
            errors.push(format!("cannot unmount {}", point.display()));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(field: &str) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match (bytes[i], octal) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    PathBuf::from(std::ffi::OsString::from_vec(out))
}
