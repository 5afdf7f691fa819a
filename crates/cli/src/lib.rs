//! The `berth` command line: a clap command tree, logging set-up, and one module per
//! subcommand under `commands/`. Every command calls one library function and adds context
//! to its errors; all user output goes through [`printer::Printer`].

mod client;
mod commands;
mod printer;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
    /// The daemon's socket, unix://PATH: where `berth daemon` listens and the other commands
    /// connect [default: $BERTH_HOST, then $DOCKER_HOST, then unix:///run/berth/berth.sock;
    /// `berth daemon` reads neither variable].
    #[arg(short = 'H', long, global = true, value_name = "unix://PATH")]
    host: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The engine: serve the Docker Engine API on a unix socket.
    Daemon(Box<commands::daemon::DaemonArgs>),
    /// The OCI registry: serve, collect garbage, rebuild the index.
    #[command(subcommand)]
    Registry(commands::registry::RegistryCommand),
    /// List images.
    Images(commands::images::ImagesArgs),
    /// Pull an image from a registry.
    Pull(commands::pull::PullArgs),
    /// Push an image to a registry.
    Push(commands::push::PushArgs),
    /// Make an image from a root filesystem tarball.
    Import(commands::import::ImportArgs),
    /// Write images to a docker-archive tarball.
    Save(commands::save::SaveArgs),
    /// Load images from a docker-archive or OCI layout tarball.
    Load(commands::load::LoadArgs),
    /// Give an image another name.
    Tag(commands::tag::TagArgs),
    /// Remove images.
    Rmi(commands::rmi::RmiArgs),
    /// Show images in detail (pretty JSON).
    InspectImage(commands::inspect_image::InspectArgs),
    /// Manage images (`berth image inspect`, `ls`, `rm`).
    #[command(subcommand)]
    Image(commands::image::ImageCommand),
    /// Show the version of this binary and of the daemon, when one answers.
    Version,
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
}

/// Logs go to stderr from a background thread through a buffer that is flushed whenever the
/// queue runs empty: a busy server writes its access log in large writes, an idle one at
/// once. The guard flushes what is left when `main` returns.
fn init_logging(level: &str) -> tracing_appender::non_blocking::WorkerGuard {
    let filter = tracing_subscriber::EnvFilter::try_from_env(env_vars::RUST_LOG)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let ansi = std::io::stderr().is_terminal() && std::env::var_os(env_vars::NO_COLOR).is_none();
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .finish(std::io::BufWriter::with_capacity(64 << 10, std::io::stderr()));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi)
        .init();
    guard
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
    runtime.block_on(f(()))
}

/// The commands that talk to a daemon through the API.
async fn run_client(command: Command, client: client::Client, printer: &printer::Printer) -> anyhow::Result<()> {
    let client = &client;
    match command {
        Command::Images(args) => commands::images::run(args, client, printer).await,
        Command::Pull(args) => commands::pull::run(args, client, printer).await,
        Command::Push(args) => commands::push::run(args, client, printer).await,
        Command::Import(args) => commands::import::run(args, client, printer).await,
        Command::Save(args) => commands::save::run(args, client, printer).await,
        Command::Load(args) => commands::load::run(args, client, printer).await,
        Command::Tag(args) => commands::tag::run(args, client, printer).await,
        Command::Rmi(args) => commands::rmi::run(args, client, printer).await,
        Command::InspectImage(args) => commands::inspect_image::run(args, client, printer).await,
        Command::Image(cmd) => commands::image::run(cmd, client, printer).await,
        Command::Daemon(_)
        | Command::Registry(_)
        | Command::Version
        | Command::Shim { .. }
        | Command::ShimExec { .. } => {
            unreachable!("not a client command")
        }
    }
}

/// Runs the `berth` binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Shim { config } = &cli.command {
        // The shim clones (libcontainer): it must stay single-threaded, so no background log
        // writer thread and no async runtime here; logs go straight to stderr (its log file).
        let filter = tracing_subscriber::EnvFilter::try_from_env(env_vars::RUST_LOG)
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .init();
        return ExitCode::from(berth_runtime::shim_main(config).clamp(0, 255) as u8);
    }
    if let Command::ShimExec { config } = &cli.command {
        // Single-threaded for the same reason as the shim; its stdio belongs to the exec'd
        // process, so logs go nowhere unless RUST_LOG asks.
        if std::env::var_os(env_vars::RUST_LOG).is_some() {
            let filter = tracing_subscriber::EnvFilter::from_env(env_vars::RUST_LOG);
            tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .with_ansi(false)
                .init();
        }
        return ExitCode::from(berth_runtime::exec_main(config).clamp(0, 255) as u8);
    }
    let _log_guard = init_logging(&cli.log_level);
    let printer = printer::Printer::new();
    let result = match cli.command {
        Command::Daemon(args) => commands::daemon::run(*args, cli.host),
        Command::Registry(cmd) => commands::registry::run(cmd, &printer),
        Command::Shim { .. } | Command::ShimExec { .. } => unreachable!("handled above"),
        Command::Version => client_command(|_| async {
            let client = client::Client::new(cli.host.as_deref()).ok();
            commands::version::run(client.as_ref(), &printer).await
        }),
        command => match client::Client::new(cli.host.as_deref()) {
            Ok(client) => client_command(|()| run_client(command, client, &printer)),
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            printer.error(&e);
            ExitCode::FAILURE
        }
    }
}
