//! The container commands: `berth run`, `ps`, `start`, `stop`, `kill`, `rm`, `logs`, `wait`
//! and `exec`, each the Docker Engine API calls the docker CLI makes for the same command
//! (`run` is create, attach, wait and start, with the attach and wait opened before the start
//! so no output and no exit is missed).

use std::io::IsTerminal;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use hyper::Method;
use serde_json::{Map, Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use crate::client::{Client, Upgraded, empty, json_body, list_query, path_name, query};
use crate::commands::images::{ago, short_id, table};
use crate::printer::Printer;

/// A command that ends with the exit code of what it ran (`run`, `exec`, `wait`-like): `main`
/// exits with it and prints nothing more.
#[derive(Debug)]
pub(crate) struct ExitStatus(pub(crate) u8);

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit status {}", self.0)
    }
}

impl std::error::Error for ExitStatus {}

#[derive(Args)]
pub(crate) struct RunArgs {
    /// Run in the background and print the container's ID.
    #[arg(short, long)]
    detach: bool,
    /// Remove the container when it exits.
    #[arg(long)]
    rm: bool,
    /// The container's name.
    #[arg(long)]
    name: Option<String>,
    /// Keep stdin open and send this terminal's input to the container.
    #[arg(short, long)]
    interactive: bool,
    /// Give the container a terminal.
    #[arg(short, long)]
    tty: bool,
    /// Environment variable NAME=VALUE (or NAME, taken from this environment); repeatable.
    #[arg(short, long = "env", value_name = "NAME[=VALUE]")]
    env: Vec<String>,
    /// Bind mount HOST:CONTAINER[:OPTIONS], or a volume; repeatable.
    #[arg(short, long = "volume", value_name = "SRC:DST[:OPTS]")]
    volumes: Vec<String>,
    /// A tmpfs mount PATH[:OPTIONS]; repeatable.
    #[arg(long = "tmpfs", value_name = "PATH[:OPTS]")]
    tmpfs: Vec<String>,
    /// Network: bridge (the default), none, host, or a user network's name or id.
    #[arg(long, alias = "net", value_name = "MODE")]
    network: Option<String>,
    /// Working directory inside the container.
    #[arg(short, long)]
    workdir: Option<String>,
    /// USER[:GROUP] (names or numbers) to run as.
    #[arg(short, long)]
    user: Option<String>,
    /// Override the image's entrypoint.
    #[arg(long)]
    entrypoint: Option<String>,
    /// The container's hostname.
    #[arg(long)]
    hostname: Option<String>,
    /// Every capability and device of the host, no seccomp or masked paths.
    #[arg(long)]
    privileged: bool,
    /// Add a capability (SYS_ADMIN, NET_ADMIN, ALL…); repeatable.
    #[arg(long = "cap-add", value_name = "CAP")]
    cap_add: Vec<String>,
    /// Drop a capability; repeatable.
    #[arg(long = "cap-drop", value_name = "CAP")]
    cap_drop: Vec<String>,
    /// Mount the root filesystem read-only.
    #[arg(long)]
    read_only: bool,
    /// Memory limit (e.g. 512m, 2g).
    #[arg(short, long, value_name = "BYTES")]
    memory: Option<String>,
    /// CPUs the container may use (e.g. 1.5).
    #[arg(long, value_name = "N")]
    cpus: Option<f64>,
    /// Most processes the container may have (-1: unlimited).
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pids_limit: Option<i64>,
    /// Restart policy: no, always, unless-stopped, on-failure[:N].
    #[arg(long, value_name = "POLICY")]
    restart: Option<String>,
    /// Extra /etc/hosts line NAME:IP; repeatable.
    #[arg(long = "add-host", value_name = "NAME:IP")]
    add_host: Vec<String>,
    /// DNS server for /etc/resolv.conf; repeatable.
    #[arg(long = "dns", value_name = "IP")]
    dns: Vec<String>,
    /// Label KEY=VALUE; repeatable.
    #[arg(short, long = "label", value_name = "KEY=VALUE")]
    labels: Vec<String>,
    /// Run an init process (docker-init) as PID 1 that reaps zombies.
    #[arg(long)]
    init: bool,
    /// The image.
    image: String,
    /// The command and its arguments (default: the image's).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

pub(crate) async fn run(args: RunArgs, client: &Client, printer: &Printer) -> anyhow::Result<()> {
    let tty = args.tty;
    let interactive = args.interactive;
    let detach = args.detach;
    let rm = args.rm;
    let image = args.image.clone();
    let body = create_body(&args)?;
    let name_q = args.name.as_deref().map(|n| query(&[("name", n)])).unwrap_or_default();
    let id = match create(client, &name_q, &body, printer).await {
        Ok(id) => id,
        Err(e) if e.to_string().starts_with("No such image") => {
            printer.note(&format!("Unable to find image '{image}' locally"));
            let path = format!("/images/create{}", query(&[("fromImage", &image)]));
            let resp = client
                .request(Method::POST, &path, &[], empty())
                .await
                .with_context(|| format!("failed to pull {image}"))?;
            crate::commands::pull::show_stream(resp, printer)
                .await
                .with_context(|| format!("failed to pull {image}"))?;
            create(client, &name_q, &body, printer).await?
        }
        Err(e) => return Err(e),
    };
    if detach {
        client
            .request(Method::POST, &format!("/containers/{id}/start"), &[], empty())
            .await
            .context("failed to start the container")?;
        printer.line(&id);
        return Ok(());
    }
    let attach_path = format!(
        "/containers/{id}/attach{}",
        query(&[
            ("stream", "1"),
            ("stdout", "1"),
            ("stderr", "1"),
            ("stdin", if interactive { "1" } else { "0" }),
        ])
    );
    let condition = if rm { "removed" } else { "next-exit" };
    let wait_path = format!("/containers/{id}/wait{}", query(&[("condition", condition)]));
    // Both are open before the start, on connections of their own: one round trip, not two.
    let (stream, wait) = tokio::join!(
        client.hijack(Method::POST, &attach_path, None),
        client.request(Method::POST, &wait_path, &[], empty())
    );
    let stream = stream.context("failed to attach to the container")?;
    let wait = wait.context("failed to wait for the container")?;
    let _raw = (tty && interactive && std::io::stdin().is_terminal())
        .then(RawTerminal::enter)
        .transpose()?;
    client
        .request(Method::POST, &format!("/containers/{id}/start"), &[], empty())
        .await
        .context("failed to start the container")?;
    pump(stream, tty, interactive).await?;
    let status = json_body(wait).await.context("failed to wait for the container")?;
    if let Some(msg) = status
        .pointer("/Error/Message")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
    {
        bail!("{msg}");
    }
    exit_with(status["StatusCode"].as_i64().unwrap_or(0))
}

/// `Ok` for 0, else the [`ExitStatus`] `main` exits with.
fn exit_with(code: i64) -> anyhow::Result<()> {
    if code == 0 {
        Ok(())
    } else {
        Err(ExitStatus(u8::try_from(code).unwrap_or(255)).into())
    }
}

async fn create(client: &Client, name_q: &str, body: &Value, printer: &Printer) -> anyhow::Result<String> {
    let resp = client
        .request(
            Method::POST,
            &format!("/containers/create{name_q}"),
            &[("content-type", "application/json")],
            crate::client::json_request(body),
        )
        .await?;
    let v = json_body(resp).await?;
    for w in v["Warnings"].as_array().into_iter().flatten().filter_map(Value::as_str) {
        printer.note(&format!("WARNING: {w}"));
    }
    v["Id"]
        .as_str()
        .map(str::to_owned)
        .context("the daemon's create answer has no Id")
}

/// The create request docker's CLI sends for these flags.
fn create_body(args: &RunArgs) -> anyhow::Result<Value> {
    let env: Vec<String> = args
        .env
        .iter()
        .filter_map(|e| match e.split_once('=') {
            Some(_) => Some(e.clone()),
            None => std::env::var(e).ok().map(|v| format!("{e}={v}")),
        })
        .collect();
    let mut labels = Map::new();
    for l in &args.labels {
        let (k, v) = l.split_once('=').unwrap_or((l, ""));
        labels.insert(k.to_owned(), json!(v));
    }
    let mut tmpfs = Map::new();
    for t in &args.tmpfs {
        let (path, opts) = t.split_once(':').unwrap_or((t, ""));
        tmpfs.insert(path.to_owned(), json!(opts));
    }
    let restart = match args.restart.as_deref() {
        None => json!({"Name": "", "MaximumRetryCount": 0}),
        Some(p) => {
            let (name, max) = p.split_once(':').unwrap_or((p, "0"));
            let max: i64 = max
                .parse()
                .with_context(|| format!("invalid --restart {p:?}: the retry count must be a number"))?;
            json!({"Name": name, "MaximumRetryCount": max})
        }
    };
    let memory = match &args.memory {
        None => 0,
        Some(m) => berth_runtime::parse_size(m)
            .and_then(|b| i64::try_from(b).ok())
            .with_context(|| format!("invalid --memory {m:?}: expected a size such as 512m or 2g"))?,
    };
    let nano_cpus = args.cpus.map(|c| (c * 1e9).round() as i64).unwrap_or(0);
    let console = console_size();
    let attach = !args.detach;
    let mut hc = json!({
        "Binds": args.volumes,
        "NetworkMode": args.network.clone().unwrap_or_else(|| "default".into()),
        "Privileged": args.privileged,
        "CapAdd": args.cap_add,
        "CapDrop": args.cap_drop,
        "ReadonlyRootfs": args.read_only,
        "Memory": memory,
        "NanoCpus": nano_cpus,
        "RestartPolicy": restart,
        "AutoRemove": args.rm,
        "Tmpfs": tmpfs,
        "ExtraHosts": args.add_host,
        "Dns": args.dns,
    });
    if let Some(p) = args.pids_limit {
        hc["PidsLimit"] = json!(p);
    }
    if args.init {
        hc["Init"] = json!(true);
    }
    if let (true, Some((h, w))) = (args.tty, console) {
        hc["ConsoleSize"] = json!([h, w]);
    }
    let mut body = json!({
        "Image": args.image,
        "Env": env,
        "Labels": labels,
        "Tty": args.tty,
        "OpenStdin": args.interactive,
        "StdinOnce": args.interactive && attach,
        "AttachStdin": args.interactive && attach,
        "AttachStdout": attach,
        "AttachStderr": attach,
        "HostConfig": hc,
    });
    if !args.command.is_empty() {
        body["Cmd"] = json!(args.command);
    }
    if let Some(e) = &args.entrypoint {
        body["Entrypoint"] = json!([e]);
    }
    if let Some(w) = &args.workdir {
        body["WorkingDir"] = json!(w);
    }
    if let Some(u) = &args.user {
        body["User"] = json!(u);
    }
    if let Some(h) = &args.hostname {
        body["Hostname"] = json!(h);
    }
    Ok(body)
}

/// Rows and columns of the terminal on stdout, if it is one.
fn console_size() -> Option<(u16, u16)> {
    let mut ws = nix::libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one winsize into `ws`.
    let r = unsafe { nix::libc::ioctl(1, nix::libc::TIOCGWINSZ, &mut ws) };
    (r == 0 && ws.ws_row > 0).then_some((ws.ws_row, ws.ws_col))
}

/// This terminal in raw mode (keys go to the container as typed) until dropped.
struct RawTerminal(nix::sys::termios::Termios);

impl RawTerminal {
    fn enter() -> anyhow::Result<RawTerminal> {
        use nix::sys::termios::{SetArg, cfmakeraw, tcgetattr, tcsetattr};
        let stdin = std::io::stdin();
        let saved = tcgetattr(&stdin).context("failed to read the terminal's settings")?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(&stdin, SetArg::TCSANOW, &raw).context("failed to put the terminal in raw mode")?;
        Ok(RawTerminal(saved))
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        let _ = nix::sys::termios::tcsetattr(std::io::stdin(), nix::sys::termios::SetArg::TCSANOW, &self.0);
    }
}

/// Copies a hijacked stream to stdout and stderr (demultiplexing the 8-byte frames unless
/// `tty`), and stdin to it when `stdin` (closing its write side at stdin's end), until the
/// container's output ends.
async fn pump(stream: Upgraded, tty: bool, stdin: bool) -> anyhow::Result<()> {
    match stream {
        Upgraded::Raw(io) => {
            let (reader, mut writer) = tokio::io::split(io);
            if stdin {
                tokio::spawn(async move {
                    let mut input = tokio::io::stdin();
                    let _ = tokio::io::copy(&mut input, &mut writer).await;
                    let _ = writer.shutdown().await;
                });
            } else {
                drop(writer);
            }
            copy_output(reader, tty).await
        }
        Upgraded::Body(body) => {
            use futures::TryStreamExt;
            use http_body_util::BodyExt;
            let stream = body.into_data_stream().map_err(std::io::Error::other);
            copy_output(tokio_util::io::StreamReader::new(stream), tty).await
        }
    }
}

async fn copy_output(mut reader: impl AsyncRead + Unpin, tty: bool) -> anyhow::Result<()> {
    let mut stdout = tokio::io::stdout();
    let mut stderr = tokio::io::stderr();
    if tty {
        let mut buf = vec![0u8; 32 << 10];
        loop {
            let n = reader
                .read(&mut buf)
                .await
                .context("failed to read the container's output")?;
            if n == 0 {
                break;
            }
            stdout.write_all(&buf[..n]).await?;
            stdout.flush().await?;
        }
        return Ok(());
    }
    let mut header = [0u8; 8];
    let mut buf = Vec::new();
    loop {
        match reader.read_exact(&mut header).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(e).context("failed to read the container's output"),
        }
        let len = u32::from_be_bytes([header[4], header[5], header[6], header[7]]) as usize;
        buf.resize(len, 0);
        reader
            .read_exact(&mut buf)
            .await
            .context("the container's output ended inside a frame")?;
        if header[0] == 2 {
            stderr.write_all(&buf).await?;
            stderr.flush().await?;
        } else {
            stdout.write_all(&buf).await?;
            stdout.flush().await?;
        }
    }
    Ok(())
}

#[derive(Args)]
pub(crate) struct PsArgs {
    /// Show every container (the default is running ones).
    #[arg(short, long)]
    all: bool,
    /// Filter, as docker: status=, name=, id=, label=, exited=, ancestor=; repeatable.
    #[arg(short, long = "filter", value_name = "KEY=VALUE")]
    filters: Vec<String>,
    /// Only the container IDs.
    #[arg(short, long)]
    quiet: bool,
    /// Show full IDs and commands.
    #[arg(long)]
    no_trunc: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    /// CONTAINER ID, IMAGE, COMMAND, CREATED, STATUS, PORTS, NAMES, as docker prints it.
    Table,
    /// The API's container objects, one per line.
    Json,
}

pub(crate) async fn ps(args: PsArgs, client: &Client, printer: &Printer) -> anyhow::Result<()> {
    let q = list_query(args.all, &args.filters, &[])?;
    let list = client
        .get_json(&format!("/containers/json{q}"))
        .await
        .context("failed to list containers")?;
    let list = list.as_array().map(Vec::as_slice).unwrap_or_default();
    let id_of = |c: &Value| {
        let id = c["Id"].as_str().unwrap_or("");
        if args.no_trunc { id.to_owned() } else { short_id(id) }
    };
    if args.quiet {
        for c in list {
            printer.line(&id_of(c));
        }
        return Ok(());
    }
    match args.format {
        Format::Json => {
            for c in list {
                printer.line(&c.to_string());
            }
        }
        Format::Table => {
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            let mut rows = vec![[
                "CONTAINER ID".to_owned(),
                "IMAGE".to_owned(),
                "COMMAND".to_owned(),
                "CREATED".to_owned(),
                "STATUS".to_owned(),
                "PORTS".to_owned(),
                "NAMES".to_owned(),
            ]];
            for c in list {
                let mut command = c["Command"].as_str().unwrap_or("").to_owned();
                if !args.no_trunc && command.chars().count() > 20 {
                    command = command.chars().take(19).collect::<String>() + "…";
                }
                let names: Vec<&str> = c["Names"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .map(|n| n.trim_start_matches('/'))
                    .collect();
                rows.push([
                    id_of(c),
                    c["Image"].as_str().unwrap_or("").to_owned(),
                    format!("\"{command}\""),
                    c["Created"].as_i64().map(|t| ago(now - t)).unwrap_or_default(),
                    c["Status"].as_str().unwrap_or("").to_owned(),
                    String::new(),
                    names.join(","),
                ]);
            }
            for line in table(&rows) {
                printer.line(line.trim_end());
            }
        }
    }
    Ok(())
}

#[derive(Args)]
pub(crate) struct NamesArgs {
    /// Containers, by name or ID (prefix).
    #[arg(required = true)]
    containers: Vec<String>,
}

/// Sends `method /containers/{name}{suffix}` for every container, printing the name of each
/// one it succeeded for and the error of each that failed (`failed to {verb} NAME: …`); fails
/// when one did, as docker does.
async fn each_container(
    names: &[String],
    client: &Client,
    printer: &Printer,
    method: Method,
    suffix: &str,
    verb: &str,
) -> anyhow::Result<()> {
    let mut failed = 0;
    for name in names {
        let path = format!("/containers/{}{suffix}", path_name(name));
        let sent = client
            .request(method.clone(), &path, &[], empty())
            .await
            .with_context(|| format!("failed to {verb} {name}"));
        match sent {
            Ok(_) => printer.line(name),
            Err(e) => {
                printer.error(&e);
                failed += 1;
            }
        }
    }
    if failed > 0 { Err(ExitStatus(1).into()) } else { Ok(()) }
}

pub(crate) async fn start(args: NamesArgs, client: &Client, printer: &Printer) -> anyhow::Result<()> {
    each_container(&args.containers, client, printer, Method::POST, "/start", "start").await
}

#[derive(Args)]
pub(crate) struct StopArgs {
    /// Seconds to wait after the stop signal before killing.
    #[arg(short, long, value_name = "SECONDS", allow_hyphen_values = true)]
    time: Option<i64>,
    /// The signal to stop with (default: the image's StopSignal, else SIGTERM).
    #[arg(short, long)]
    signal: Option<String>,
    #[command(flatten)]
    names: NamesArgs,
}

pub(crate) async fn stop(args: StopArgs, client: &Client, printer: &Printer) -> anyhow::Result<()> {
    let t = args.time.map(|t| t.to_string());
    let mut pairs: Vec<(&str, &str)> = vec![];
    if let Some(t) = &t {
        pairs.push(("t", t));
    }
    if let Some(s) = &args.signal {
        pairs.push(("signal", s));
    }
    let suffix = format!("/stop{}", query(&pairs));
    each_container(&args.names.containers, client, printer, Method::POST, &suffix, "stop").await
}

#[derive(Args)]
pub(crate) struct KillArgs {
    /// The signal to send.
    #[arg(short, long, default_value = "KILL")]
    signal: String,
    #[command(flatten)]
    names: NamesArgs,
}

pub(crate) async fn kill(args: KillArgs, client: &Client, printer: &Printer) -> anyhow::Result<()> {
    let suffix = format!("/kill{}", query(&[("signal", &args.signal)]));
    each_container(&args.names.containers, client, printer, Method::POST, &suffix, "kill").await
}

#[derive(Args)]
pub(crate) struct RmArgs {
    /// Kill and remove a running container.
    #[arg(short, long)]
    force: bool,
    /// Remove the container's anonymous volumes too.
    #[arg(short, long)]
    volumes: bool,
    #[command(flatten)]
    names: NamesArgs,
}

pub(crate) async fn rm(args: RmArgs, client: &Client, printer: &Printer) -> anyhow::Result<()> {
    let q = query(&[
        ("force", if args.force { "1" } else { "0" }),
        ("v", if args.volumes { "1" } else { "0" }),
    ]);
    each_container(&args.names.containers, client, printer, Method::DELETE, &q, "remove").await
}

pub(crate) async fn wait(args: NamesArgs, client: &Client, printer: &Printer) -> anyhow::Result<()> {
    for name in &args.containers {
        let resp = client
            .request(
                Method::POST,
                &format!("/containers/{}/wait", path_name(name)),
                &[],
                empty(),
            )
            .await
            .with_context(|| format!("failed to wait for {name}"))?;
        let v = json_body(resp)
            .await
            .with_context(|| format!("failed to wait for {name}"))?;
        printer.line(&v["StatusCode"].as_i64().unwrap_or(0).to_string());
    }
    Ok(())
}

#[derive(Args)]
pub(crate) struct LogsArgs {
    /// Keep following the output.
    #[arg(short, long)]
    follow: bool,
    /// Only the last N lines ("all" for every line).
    #[arg(short = 'n', long, value_name = "N")]
    tail: Option<String>,
    /// Prefix each line with its RFC 3339 timestamp.
    #[arg(short, long)]
    timestamps: bool,
    /// Only lines since this time (RFC 3339 or Unix seconds).
    #[arg(long)]
    since: Option<String>,
    /// Only lines before this time (RFC 3339 or Unix seconds).
    #[arg(long)]
    until: Option<String>,
    /// The container.
    container: String,
}

pub(crate) async fn logs(args: LogsArgs, client: &Client, _printer: &Printer) -> anyhow::Result<()> {
    let name = path_name(&args.container);
    let info = client
        .get_json(&format!("/containers/{name}/json"))
        .await
        .with_context(|| format!("failed to read the logs of {}", args.container))?;
    let tty = info.pointer("/Config/Tty").and_then(Value::as_bool).unwrap_or(false);
    let mut pairs = vec![("stdout", "1"), ("stderr", "1")];
    if args.follow {
        pairs.push(("follow", "1"));
    }
    if args.timestamps {
        pairs.push(("timestamps", "1"));
    }
    if let Some(t) = &args.tail {
        pairs.push(("tail", t));
    }
    if let Some(s) = &args.since {
        pairs.push(("since", s));
    }
    if let Some(u) = &args.until {
        pairs.push(("until", u));
    }
    let resp = client
        .request(
            Method::GET,
            &format!("/containers/{name}/logs{}", query(&pairs)),
            &[],
            empty(),
        )
        .await
        .with_context(|| format!("failed to read the logs of {}", args.container))?;
    pump(Upgraded::Body(resp.into_body()), tty, false).await
}

#[derive(Args)]
pub(crate) struct ExecArgs {
    /// Run in the background.
    #[arg(short, long)]
    detach: bool,
    /// Keep stdin open and send this terminal's input.
    #[arg(short, long)]
    interactive: bool,
    /// Give the process a terminal.
    #[arg(short, long)]
    tty: bool,
    /// Environment variable NAME=VALUE; repeatable.
    #[arg(short, long = "env", value_name = "NAME=VALUE")]
    env: Vec<String>,
    /// USER[:GROUP] to run as.
    #[arg(short, long)]
    user: Option<String>,
    /// Working directory.
    #[arg(short, long)]
    workdir: Option<String>,
    /// Run with extended privileges.
    #[arg(long)]
    privileged: bool,
    /// The container.
    container: String,
    /// The command and its arguments.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

pub(crate) async fn exec(args: ExecArgs, client: &Client, _printer: &Printer) -> anyhow::Result<()> {
    let name = path_name(&args.container);
    let mut body = json!({
        "AttachStdin": args.interactive && !args.detach,
        "AttachStdout": !args.detach,
        "AttachStderr": !args.detach,
        "Tty": args.tty,
        "Env": args.env,
        "Cmd": args.command,
        "Privileged": args.privileged,
    });
    if let Some(u) = &args.user {
        body["User"] = json!(u);
    }
    if let Some(w) = &args.workdir {
        body["WorkingDir"] = json!(w);
    }
    if let (true, Some((h, w))) = (args.tty, console_size()) {
        body["ConsoleSize"] = json!([h, w]);
    }
    let resp = client
        .request(
            Method::POST,
            &format!("/containers/{name}/exec"),
            &[("content-type", "application/json")],
            crate::client::json_request(&body),
        )
        .await
        .with_context(|| format!("failed to exec in {}", args.container))?;
    let id = json_body(resp).await?["Id"]
        .as_str()
        .map(str::to_owned)
        .context("the daemon's exec answer has no Id")?;
    let start = json!({"Detach": args.detach, "Tty": args.tty});
    if args.detach {
        client
            .request(
                Method::POST,
                &format!("/exec/{id}/start"),
                &[("content-type", "application/json")],
                crate::client::json_request(&start),
            )
            .await
            .with_context(|| format!("failed to start the exec in {}", args.container))?;
        return Ok(());
    }
    let _raw = (args.tty && args.interactive && std::io::stdin().is_terminal())
        .then(RawTerminal::enter)
        .transpose()?;
    let stream = client
        .hijack(Method::POST, &format!("/exec/{id}/start"), Some(&start))
        .await
        .with_context(|| format!("failed to start the exec in {}", args.container))?;
    pump(stream, args.tty, args.interactive).await?;
    drop(_raw);
    let info = client.get_json(&format!("/exec/{id}/json")).await?;
    exit_with(info["ExitCode"].as_i64().unwrap_or(0))
}
