//! `berth registry serve|gc|reindex`.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use berth_registry::{Config, Registry, Server};
use clap::{Args, Subcommand, ValueEnum};

use crate::printer::Printer;

#[derive(Subcommand)]
pub(crate) enum RegistryCommand {
    /// Serve the registry (OCI distribution v2, docker search, metrics).
    Serve(Box<ServeArgs>),
    /// Remove blobs no manifest references (past the grace period) and expired uploads.
    /// The running registry does this online every --gc-interval-secs; this command is for a
    /// registry that is stopped.
    Gc(GcArgs),
    /// Rebuild the metadata index (tags, catalog, search) from storage.
    Reindex(StoreArgs),
}

#[derive(Args)]
pub(crate) struct StoreArgs {
    /// TOML file with the registry settings (flags win).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Storage directory.
    #[arg(long)]
    root: Option<PathBuf>,
}

#[derive(Args)]
pub(crate) struct ServeArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Address to listen on [default: 127.0.0.1:5000].
    #[arg(long)]
    addr: Option<SocketAddr>,
    /// htpasswd file with bcrypt entries (`htpasswd -B`); every request then needs basic auth.
    #[arg(long)]
    htpasswd: Option<PathBuf>,
    /// Realm named in WWW-Authenticate [default: Berth Registry].
    #[arg(long)]
    realm: Option<String>,
    /// TLS certificate chain, PEM.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS private key, PEM.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Refuse pushes and deletes.
    #[arg(long)]
    read_only: bool,
    /// Seconds between online garbage collections, 0 for none [default: 3600].
    #[arg(long)]
    gc_interval_secs: Option<u64>,
    /// Blobs younger than this many seconds are never collected [default: 3600].
    #[arg(long)]
    gc_grace_secs: Option<u64>,
    /// Upload sessions older than this many seconds are removed [default: 86400].
    #[arg(long)]
    upload_expiry_secs: Option<u64>,
}

#[derive(Args)]
pub(crate) struct GcArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Report what would be removed; remove nothing.
    #[arg(long)]
    dry_run: bool,
    /// Override the grace period in seconds.
    #[arg(long)]
    grace_secs: Option<u64>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Table,
    Json,
}

fn load(store: &StoreArgs) -> anyhow::Result<Config> {
    let mut c = match &store.config {
        Some(p) => Config::from_file(p).with_context(|| format!("failed to load {}", p.display()))?,
        None => Config::default(),
    };
    if let Some(r) = &store.root {
        c.root = r.clone();
    }
    Ok(c)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("failed to start the async runtime")
}

pub(crate) fn run(cmd: RegistryCommand, printer: &Printer) -> anyhow::Result<()> {
    match cmd {
        RegistryCommand::Serve(a) => serve(*a),
        RegistryCommand::Gc(a) => gc(a, printer),
        RegistryCommand::Reindex(a) => {
            let c = load(&a)?;
            let root = c.root.clone();
            runtime()?
                .block_on(Registry::open(c, true))
                .with_context(|| format!("failed to rebuild the index of {}", root.display()))?;
            printer.line(&format!("index of {} rebuilt", root.display()));
            Ok(())
        }
    }
}

fn serve(a: ServeArgs) -> anyhow::Result<()> {
    let mut c = load(&a.store)?;
    if let Some(v) = a.addr {
        c.addr = v;
    }
    if a.htpasswd.is_some() {
        c.htpasswd = a.htpasswd;
    }
    if let Some(v) = a.realm {
        c.realm = v;
    }
    if a.tls_cert.is_some() {
        c.tls_cert = a.tls_cert;
        c.tls_key = a.tls_key;
    }
    c.read_only |= a.read_only;
    if let Some(v) = a.gc_interval_secs {
        c.gc_interval_secs = v;
    }
    if let Some(v) = a.gc_grace_secs {
        c.gc_grace_secs = v;
    }
    if let Some(v) = a.upload_expiry_secs {
        c.upload_expiry_secs = v;
    }
    let (addr, root) = (c.addr, c.root.clone());
    runtime()?.block_on(async move {
        let server = Server::bind(c)
            .await
            .with_context(|| format!("failed to start the registry on {addr} with storage {}", root.display()))?;
        crate::notify::ready(&format!("serving the registry on {}", server.local_addr()));
        let shutdown = async {
            shutdown_signal().await;
            crate::notify::stopping();
        };
        server.run(shutdown).await.context("registry failed")
    })
}

fn gc(a: GcArgs, printer: &Printer) -> anyhow::Result<()> {
    let mut c = load(&a.store)?;
    if let Some(g) = a.grace_secs {
        c.gc_grace_secs = g;
    }
    let root = c.root.clone();
    let report = runtime()?.block_on(async move {
        let reg = Registry::open(c, false).await?;
        reg.gc(a.dry_run).await
    });
    let report = report.with_context(|| format!("garbage collection of {} failed", root.display()))?;
    match a.format {
        Format::Json => printer.line(&serde_json::to_string_pretty(&report)?),
        Format::Table => {
            let verb = if report.dry_run { "would remove" } else { "removed" };
            for d in &report.blobs_removed {
                printer.line(&format!("{verb} {d}"));
            }
            printer.line(&format!(
                "{verb} {} blobs ({} bytes), {} orphaned files, {} expired uploads",
                report.blobs_removed.len(),
                report.bytes_freed,
                report.orphans_removed,
                report.uploads_expired
            ));
            for e in &report.errors {
                printer.line(&format!("error: {e}"));
            }
        }
    }
    if !report.errors.is_empty() {
        anyhow::bail!("{} steps of the collection failed (listed above)", report.errors.len());
    }
    Ok(())
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("install SIGINT handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}
