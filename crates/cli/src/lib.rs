//! The `berth` command line: a clap command tree, logging set-up, and one module per
//! subcommand under `commands/`. Every command calls one library function and adds context
//! to its errors; all user output goes through [`printer::Printer`].

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
    /// Show the version.
    Version,
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

/// Runs the `berth` binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let _log_guard = init_logging(&cli.log_level);
    let printer = printer::Printer::new();
    let result = match cli.command {
        Command::Daemon(args) => commands::daemon::run(*args),
        Command::Registry(cmd) => commands::registry::run(cmd, &printer),
        Command::Version => {
            printer.line(&format!("berth {}", env!("CARGO_PKG_VERSION")));
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            printer.error(&e);
            ExitCode::FAILURE
        }
    }
}
