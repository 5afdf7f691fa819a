//! The `berth` command line: a clap command tree, logging set-up, and one module per
//! subcommand under `commands/`. Every command calls one library function and adds context
//! to its errors; all user output goes through [`printer::Printer`].

mod client;
mod commands;
mod notify;
mod printer;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// Environment variables the CLI reads.
mod env_vars {
    /// Log filter in `tracing` syntax; overrides `--log-level`.
    pub(crate) const RUST_LOG: &str = "RUST_LOG";
    /// Set (to anything) to turn off coloured log output.
    pub(crate) const NO_COLOR: &str = "NO_COLOR";
    /// The daemon the client commands talk to (`unix://PATH`), when `-H` is not given.
    pub(crate) const BERTH_HOST: &str = "BERTH_HOST";
    /// docker's variable, read after `BERTH_HOST`.
    pub(crate) const DOCKER_HOST: &str = "DOCKER_HOST";
}

#[derive(Parser)]
#[command(
    name = "berth",
    version,
    about = "Containers, images and a registry for research and HPC sites, in one binary"
)]
struct Cli {
    /// Log level: error, warn, info, debug, trace (RUST_LOG overrides).
    #[arg(long, global = true, default_value = "info")]
    log_level: String,
    /// The daemon's socket, unix://PATH, for `berth daemon` and the commands that talk to it
    /// (also accepted after the command name) [default: $BERTH_HOST, then $DOCKER_HOST, then
    /// unix:///run/berth/berth.sock; `berth daemon` reads neither variable].
    #[arg(short = 'H', long, value_name = "unix://PATH")]
    host: Option<String>,
    #[command(subcommand)]
    command: Command,
}

/// `-H` on a command that talks to the daemon, so it shows in that command's help and no
/// other's (`berth registry` has nothing to connect to).
#[derive(Args)]
struct HostArg {
    /// The daemon's socket, unix://PATH [default: $BERTH_HOST, then $DOCKER_HOST, then
    /// unix:///run/berth/berth.sock].
    #[arg(short = 'H', long = "host", value_name = "unix://PATH", global = true)]
    host: Option<String>,
}

/// A command that talks to the daemon: its own arguments and `-H`.
#[derive(Args)]
struct Client<T: Args> {
    #[command(flatten)]
    args: T,
    #[command(flatten)]
    host: HostArg,
}

/// `berth image …` as arguments, so that it can carry `-H` for its subcommands.
#[derive(Args)]
struct ImageArgs {
    #[command(subcommand)]
    command: commands::image::ImageCommand,
}

/// `berth network …` as arguments, so that it can carry `-H` for its subcommands.
#[derive(Args)]
struct NetworkArgs {
    #[command(subcommand)]
    command: commands::network::NetworkCommand,
}

/// `berth version` has no arguments of its own.
#[derive(Args)]
struct SystemArgs {
    #[command(subcommand)]
    command: commands::system::SystemCommand,
}

#[derive(Args)]
struct NoArgs {}

#[derive(Subcommand)]
enum Command {
    /// The engine: serve the Docker Engine API on a unix socket.
    Daemon(Box<commands::daemon::DaemonArgs>),
    /// The OCI registry: serve, collect garbage, rebuild the index.
    #[command(subcommand)]
    Registry(commands::registry::RegistryCommand),
    /// List images.
    Images(Client<commands::images::ImagesArgs>),
    /// Pull an image from a registry.
    Pull(Client<commands::pull::PullArgs>),
    /// Push an image to a registry.
    Push(Client<commands::push::PushArgs>),
    /// Make an image from a root filesystem tarball.
    Import(Client<commands::import::ImportArgs>),
    /// Write images to a docker-archive tarball.
    Save(Client<commands::save::SaveArgs>),
    /// Load images from a docker-archive or OCI layout tarball.
    Load(Client<commands::load::LoadArgs>),
    /// Give an image another name.
    Tag(Client<commands::tag::TagArgs>),
    /// Remove images.
    Rmi(Client<commands::rmi::RmiArgs>),
    /// Show images in detail (pretty JSON).
    InspectImage(Client<commands::inspect_image::InspectArgs>),
    /// Manage images (`berth image inspect`, `ls`, `rm`).
    Image(Client<ImageArgs>),
    /// Create and start a container from an image, and show its output.
    Run(Box<Client<commands::container::RunArgs>>),
    /// List containers.
    Ps(Client<commands::container::PsArgs>),
    /// Start stopped containers.
    Start(Client<commands::container::NamesArgs>),
    /// Stop running containers (the stop signal, then SIGKILL after a grace time).
    Stop(Client<commands::container::StopArgs>),
    /// Send a signal to running containers.
    Kill(Client<commands::container::KillArgs>),
    /// Remove containers.
    Rm(Client<commands::container::RmArgs>),
    /// Wait for containers to stop and print their exit codes.
    Wait(Client<commands::container::NamesArgs>),
    /// Show a container's output.
    Logs(Client<commands::container::LogsArgs>),
    /// Run a command in a running container.
    Exec(Client<commands::container::ExecArgs>),
    /// Manage networks (`berth network create`, `ls`, `inspect`, `rm`, `prune`, `connect`,
    /// `disconnect`).
    Network(Client<NetworkArgs>),
    /// The daemon's set-up and disk use (`berth system info`, `berth system df`).
    System(Client<SystemArgs>),
    /// Print a shell completion script: `berth completion bash > /etc/bash_completion.d/berth`.
    Completion {
        /// The shell to complete in.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write man pages for berth and each of its subcommands (berth.1, berth-daemon.1, ...).
    Man {
        /// Directory to write the pages to (created if missing).
        #[arg(long, value_name = "DIR", default_value = ".")]
        dir: std::path::PathBuf,
    },
    /// Show the version of this binary and of the daemon, when one answers.
    Version(Client<NoArgs>),
    /// The per-container supervisor the daemon starts (not for direct use).
    #[command(hide = true)]
    Shim {
        /// The shim's JSON config, written by the daemon.
        config: std::path::PathBuf,
    },
    /// Runs one process in a running container for the daemon (`docker exec`; not for
    /// direct use).
    #[command(hide = true)]
    ShimExec {
        /// The exec's JSON config, written by the daemon.
        config: std::path::PathBuf,
    },
    /// Forks the shims for the daemon, which starts it with its socket as fd 3 (not for
    /// direct use).
    #[command(hide = true)]
    ShimSpawner,
}

impl Command {
    /// The `-H` given after the command name, for the commands that take one.
    fn host(&mut self) -> Option<String> {
        match self {
            Command::Daemon(args) => args.host.take(),
            Command::Registry(_)
            | Command::Shim { .. }
            | Command::ShimExec { .. }
            | Command::ShimSpawner
            | Command::Completion { .. }
            | Command::Man { .. } => None,
            Command::Images(c) => c.host.host.take(),
            Command::Pull(c) => c.host.host.take(),
            Command::Push(c) => c.host.host.take(),
            Command::Import(c) => c.host.host.take(),
            Command::Save(c) => c.host.host.take(),
            Command::Load(c) => c.host.host.take(),
            Command::Tag(c) => c.host.host.take(),
            Command::Rmi(c) => c.host.host.take(),
            Command::InspectImage(c) => c.host.host.take(),
            Command::Image(c) => c.host.host.take(),
            Command::Version(c) => c.host.host.take(),
            Command::Run(c) => c.host.host.take(),
            Command::Ps(c) => c.host.host.take(),
            Command::Start(c) => c.host.host.take(),
            Command::Stop(c) => c.host.host.take(),
            Command::Kill(c) => c.host.host.take(),
            Command::Rm(c) => c.host.host.take(),
            Command::Wait(c) => c.host.host.take(),
            Command::Logs(c) => c.host.host.take(),
            Command::Exec(c) => c.host.host.take(),
            Command::Network(c) => c.host.host.take(),
            Command::System(c) => c.host.host.take(),
        }
    }
}

/// Logs go to stderr. A server (`daemon`, `registry serve`) writes them from a background
/// thread through a buffer that is flushed whenever the queue runs empty: a busy server
/// writes its access log in large writes, an idle one at once; the guard flushes what is left
/// when `main` returns. A client command writes them itself: the background writer's queue
/// (4 MB, zeroed at start) would cost a short command about 2 ms.
fn init_logging(level: &str, server: bool) -> Option<tracing_appender::non_blocking::WorkerGuard> {
    let filter = tracing_subscriber::EnvFilter::try_from_env(env_vars::RUST_LOG)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let ansi = std::io::stderr().is_terminal() && std::env::var_os(env_vars::NO_COLOR).is_none();
    let logger = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi);
    if !server {
        logger.with_writer(std::io::stderr).init();
        return None;
    }
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .finish(std::io::BufWriter::with_capacity(64 << 10, std::io::stderr()));
    logger.with_writer(writer).init();
    Some(guard)
}

/// Runs a client command on a single-threaded runtime.
fn client_command<F, Fut>(f: F) -> anyhow::Result<()>
where
    F: FnOnce(()) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    use anyhow::Context;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    let result = runtime.block_on(f(()));
    // A read of stdin still blocked in its thread (`berth run -i` after the container
    // exited) must not keep the command from exiting.
    runtime.shutdown_background();
    result
}

/// The commands that talk to a daemon through the API.
async fn run_client(command: Command, client: client::Client, printer: &printer::Printer) -> anyhow::Result<()> {
    let client = &client;
    match command {
        Command::Images(c) => commands::images::run(c.args, client, printer).await,
        Command::Pull(c) => commands::pull::run(c.args, client, printer).await,
        Command::Push(c) => commands::push::run(c.args, client, printer).await,
        Command::Import(c) => commands::import::run(c.args, client, printer).await,
        Command::Save(c) => commands::save::run(c.args, client, printer).await,
        Command::Load(c) => commands::load::run(c.args, client, printer).await,
        Command::Tag(c) => commands::tag::run(c.args, client, printer).await,
        Command::Rmi(c) => commands::rmi::run(c.args, client, printer).await,
        Command::InspectImage(c) => commands::inspect_image::run(c.args, client, printer).await,
        Command::Image(c) => commands::image::run(c.args.command, client, printer).await,
        Command::Run(c) => commands::container::run(c.args, client, printer).await,
        Command::Ps(c) => commands::container::ps(c.args, client, printer).await,
        Command::Start(c) => commands::container::start(c.args, client, printer).await,
        Command::Stop(c) => commands::container::stop(c.args, client, printer).await,
        Command::Kill(c) => commands::container::kill(c.args, client, printer).await,
        Command::Rm(c) => commands::container::rm(c.args, client, printer).await,
        Command::Wait(c) => commands::container::wait(c.args, client, printer).await,
        Command::Logs(c) => commands::container::logs(c.args, client, printer).await,
        Command::Exec(c) => commands::container::exec(c.args, client, printer).await,
        Command::Network(c) => commands::network::run(c.args.command, client, printer).await,
        Command::System(c) => commands::system::run(c.args.command, client, printer).await,
        Command::Daemon(_)
        | Command::Registry(_)
        | Command::Completion { .. }
        | Command::Man { .. }
        | Command::Version(_)
        | Command::Shim { .. }
        | Command::ShimExec { .. }
        | Command::ShimSpawner => unreachable!("not a client command"),
    }
}

/// Runs the `berth` binary.
pub fn main() -> ExitCode {
    notify::take_socket_from_env();
    // The shims start with every container and exec: straight to them, without building
    // the whole command line parser (about 0.4 ms and a heap the shim would keep).
    let mut args = std::env::args_os().skip(1);
    let first = (args.next(), args.next(), args.next());
    // The daemon pads the spawner's command line with spaces (room for its shims').
    if first.0.as_deref() == Some(std::ffi::OsStr::new("shim-spawner"))
        && first
            .1
            .as_ref()
            .is_none_or(|pad| pad.as_encoded_bytes().iter().all(|&b| b == b' '))
        && first.2.is_none()
    {
        return shim_spawner();
    }
    if let (Some(cmd), Some(config), None) = first {
        let config = std::path::Path::new(&config);
        if !config.as_os_str().to_string_lossy().starts_with('-') {
            if cmd == "shim" {
                return shim(config);
            }
            if cmd == "shim-exec" {
                return shim_exec(config);
            }
        }
    }
    let mut cli = Cli::parse();
    match &cli.command {
        Command::Shim { config } => return shim(config),
        Command::ShimExec { config } => return shim_exec(config),
        Command::ShimSpawner => return shim_spawner(),
        _ => {}
    }
    let server = matches!(cli.command, Command::Daemon(_) | Command::Registry(_));
    let _log_guard = init_logging(&cli.log_level, server);
    let printer = printer::Printer::new();
    // After the command name wins over before it, as the later flag does in docker.
    let host = cli.command.host().or(cli.host.take());
    let result = match cli.command {
        Command::Registry(_) if host.is_some() => Err(anyhow::anyhow!(
            "-H/--host names the daemon's socket; `berth registry` does not use a daemon (its address is --addr)"
        )),
        Command::Daemon(args) => commands::daemon::run(*args, host),
        Command::Completion { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "berth", &mut std::io::stdout());
            Ok(())
        }
        Command::Man { dir } => write_man_pages(&dir, &printer),
        Command::Registry(cmd) => commands::registry::run(cmd, &printer),
        Command::Shim { .. } | Command::ShimExec { .. } | Command::ShimSpawner => unreachable!("handled above"),
        Command::Version(_) => client_command(|_| async {
            let client = client::Client::new(host.as_deref()).ok();
            commands::version::run(client.as_ref(), &printer).await
        }),
        command => match client::Client::new(host.as_deref()) {
            Ok(client) => client_command(|()| run_client(command, client, &printer)),
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // The exit code of what the command ran (`berth run`, `exec`); nothing to print.
        Err(e) if e.downcast_ref::<commands::container::ExitStatus>().is_some() => {
            let status = e.downcast_ref::<commands::container::ExitStatus>().map_or(1, |s| s.0);
            ExitCode::from(status)
        }
        Err(e) => {
            printer.error(&e);
            ExitCode::FAILURE
        }
    }
}

/// `berth man --dir DIR`: one page per command that is not hidden.
fn write_man_pages(dir: &std::path::Path, printer: &printer::Printer) -> anyhow::Result<()> {
    use anyhow::Context;
    std::fs::create_dir_all(dir).with_context(|| format!("failed to create {}", dir.display()))?;
    let cmd = <Cli as clap::CommandFactory>::command();
    clap_mangen::generate_to(cmd, dir).with_context(|| format!("failed to write man pages to {}", dir.display()))?;
    let count = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "1"))
                .count()
        })
        .unwrap_or(0);
    printer.note(&format!("{count} man pages in {}", dir.display()));
    Ok(())
}

/// `berth shim CONFIG`.
fn shim(config: &std::path::Path) -> ExitCode {
    ExitCode::from(run_shim(config).clamp(0, 255) as u8)
}

/// The shim, exec'd or forked by the spawner.
fn run_shim(config: &std::path::Path) -> i32 {
    // The shim clones (libcontainer): it must stay single-threaded, so no background log
    // writer thread and no async runtime here; logs go straight to stderr (its log file).
    plain_stderr_logging(
        tracing_subscriber::EnvFilter::try_from_env(env_vars::RUST_LOG)
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
    );
    berth_runtime::shim_main(config)
}

/// `berth shim-spawner`: single-threaded too (it forks shims), and logs nothing itself.
fn shim_spawner() -> ExitCode {
    ExitCode::from(berth_runtime::spawner_main(run_shim).clamp(0, 255) as u8)
}

/// `berth shim-exec CONFIG`.
fn shim_exec(config: &std::path::Path) -> ExitCode {
    // Single-threaded for the same reason as the shim; its stdio belongs to the exec'd
    // process, so logs go nowhere unless RUST_LOG asks.
    if std::env::var_os(env_vars::RUST_LOG).is_some() {
        plain_stderr_logging(tracing_subscriber::EnvFilter::from_env(env_vars::RUST_LOG));
    }
    ExitCode::from(berth_runtime::exec_main(config).clamp(0, 255) as u8)
}

/// Log lines straight to stderr, without colour or a writer thread (the shims' logging).
fn plain_stderr_logging(filter: tracing_subscriber::EnvFilter) {
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn help(path: &[&str]) -> String {
        let mut cmd = Cli::command();
        cmd.build();
        let mut sub = &mut cmd;
        for name in path {
            sub = sub
                .find_subcommand_mut(name)
                .unwrap_or_else(|| panic!("no subcommand {name}"));
        }
        sub.render_long_help().to_string()
    }

    #[test]
    fn host_flag_only_where_a_daemon_is_used() {
        for path in [
            &["images"][..],
            &["pull"],
            &["daemon"],
            &["image", "ls"],
            &["image"],
            &["version"],
        ] {
            assert!(help(path).contains("--host"), "berth {path:?} --help lacks -H");
        }
        for path in [&["registry"][..], &["registry", "serve"], &["registry", "gc"]] {
            assert!(!help(path).contains("--host"), "berth {path:?} --help shows -H");
        }
    }

    #[test]
    fn host_before_or_after_the_command() {
        let parse = |args: &[&str]| {
            let mut cli = Cli::try_parse_from(args).unwrap();
            cli.command.host().or(cli.host)
        };
        assert_eq!(parse(&["berth", "-H", "unix:///a", "images"]), Some("unix:///a".into()));
        assert_eq!(parse(&["berth", "images", "-H", "unix:///b"]), Some("unix:///b".into()));
        assert_eq!(
            parse(&["berth", "image", "-H", "unix:///c", "ls"]),
            Some("unix:///c".into())
        );
        assert_eq!(
            parse(&["berth", "image", "ls", "-H", "unix:///d"]),
            Some("unix:///d".into())
        );
        assert_eq!(
            parse(&["berth", "-H", "unix:///a", "daemon", "-H", "unix:///e"]),
            Some("unix:///e".into())
        );
        assert!(Cli::try_parse_from(["berth", "registry", "serve", "-H", "unix:///x"]).is_err());
    }
}
