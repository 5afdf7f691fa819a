//! `berth daemon`: the engine, serving the Docker Engine API on a unix socket.

use std::path::PathBuf;

use anyhow::Context;
use berth_engine::{Config, Daemon, shutdown_signal};
use clap::Args;

/// dockerd's flag names, so a site's options carry over.
#[derive(Args)]
pub(crate) struct DaemonArgs {
    /// The socket to serve the API on, unix://PATH [default: unix:///run/berth/berth.sock].
    #[arg(short = 'H', long, value_name = "unix://PATH")]
    pub(crate) host: Option<String>,
    /// TOML file with the same settings, kebab-case (flags win).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Root of persistent state [default: /var/lib/berth].
    #[arg(short = 'g', long, value_name = "DIR")]
    data_root: Option<PathBuf>,
    /// Root of runtime state [default: /run/berth].
    #[arg(long, value_name = "DIR")]
    exec_root: Option<PathBuf>,
    /// Pid file [default: <exec-root>/berth.pid].
    #[arg(short = 'p', long, value_name = "FILE")]
    pidfile: Option<PathBuf>,
    /// Group of the API socket (mode 0660) [default: berth, when it exists].
    #[arg(short = 'G', long, value_name = "GROUP")]
    group: Option<String>,
    /// Registry reached over plain HTTP or unverified TLS (HOST:PORT or CIDR); repeatable.
    #[arg(long = "insecure-registry", value_name = "HOST:PORT")]
    insecure_registries: Vec<String>,
    /// Pull-through mirror of Docker Hub; repeatable.
    #[arg(long = "registry-mirror", value_name = "URL")]
    registry_mirrors: Vec<String>,
    /// Registry searched, in order, for unqualified image names; repeatable.
    #[arg(long = "add-registry", value_name = "HOST:PORT")]
    add_registries: Vec<String>,
    /// Registry that is refused; repeatable.
    #[arg(long = "block-registry", value_name = "HOST")]
    block_registries: Vec<String>,
    /// Directory for temporary files [default: <data-root>/tmp].
    #[arg(long, value_name = "DIR")]
    tmpdir: Option<PathBuf>,
    /// Run an init inside every container that does not say --init=false.
    #[arg(long)]
    init: bool,
    /// The init binary for --init [default: docker-init in /usr/libexec/docker etc. or $PATH, else tini-static].
    #[arg(long, value_name = "FILE")]
    init_path: Option<PathBuf>,
    /// Host bridge of the default network: an existing one is used as it is, a missing one is created; `none` disables it [default: berth0].
    #[arg(short = 'b', long, value_name = "NAME")]
    bridge: Option<String>,
    /// Address and prefix of the default bridge (CIDR) [default: an existing bridge's, else a free 172.x.0.1/16].
    #[arg(long, value_name = "CIDR")]
    bip: Option<ipnet::IpNet>,
    /// Range the default bridge's containers get addresses from (CIDR inside --bip's subnet).
    #[arg(long, value_name = "CIDR")]
    fixed_cidr: Option<ipnet::IpNet>,
    /// IPv6 subnet of the default bridge (with --ipv6).
    #[arg(long, value_name = "CIDR")]
    fixed_cidr_v6: Option<ipnet::IpNet>,
    /// MTU of the default bridge's containers [default: 1500].
    #[arg(long, value_name = "BYTES")]
    mtu: Option<u32>,
    /// IPv6 on the default bridge (also --ipv6=false).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    ipv6: Option<bool>,
    /// Turn on IPv4 forwarding [default: true].
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    ip_forward: Option<bool>,
    /// Masquerade what leaves the default bridge's subnet [default: true].
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    ip_masq: Option<bool>,
    /// Keep Berth's nftables table for published ports and masquerade [default: true].
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    iptables: Option<bool>,
}

impl DaemonArgs {
    /// The config file (if any) with the flags on top. A repeatable flag given at all
    /// replaces the file's list.
    fn config(self, host: Option<String>) -> anyhow::Result<Config> {
        let mut c = match &self.config {
            Some(p) => Config::from_file(p).with_context(|| format!("failed to load {}", p.display()))?,
            None => Config::default(),
        };
        if let Some(v) = host {
            c.host = v;
        }
        if let Some(v) = self.data_root {
            c.data_root = v;
        }
        if let Some(v) = self.exec_root {
            c.exec_root = v;
        }
        if self.pidfile.is_some() {
            c.pidfile = self.pidfile;
        }
        if self.group.is_some() {
            c.group = self.group;
        }
        if self.tmpdir.is_some() {
            c.tmpdir = self.tmpdir;
        }
        if self.init {
            c.init = true;
        }
        if self.init_path.is_some() {
            c.init_path = self.init_path;
        }
        if self.bridge.is_some() {
            c.bridge = self.bridge;
        }
        if self.bip.is_some() {
            c.bip = self.bip;
        }
        if self.fixed_cidr.is_some() {
            c.fixed_cidr = self.fixed_cidr;
        }
        if self.fixed_cidr_v6.is_some() {
            c.fixed_cidr_v6 = self.fixed_cidr_v6;
        }
        if self.mtu.is_some() {
            c.mtu = self.mtu;
        }
        for (flag, value) in [
            (self.ipv6, &mut c.ipv6),
            (self.ip_forward, &mut c.ip_forward),
            (self.ip_masq, &mut c.ip_masq),
            (self.iptables, &mut c.iptables),
        ] {
            if let Some(v) = flag {
                *value = v;
            }
        }
        for (flag, list) in [
            (self.insecure_registries, &mut c.insecure_registries),
            (self.registry_mirrors, &mut c.registry_mirrors),
            (self.add_registries, &mut c.add_registries),
            (self.block_registries, &mut c.block_registries),
        ] {
            if !flag.is_empty() {
                *list = flag;
            }
        }
        Ok(c)
    }
}

pub(crate) fn run(args: DaemonArgs, host: Option<String>) -> anyhow::Result<()> {
    let config = args.config(host)?;
    let (host, data_root) = (config.host.clone(), config.data_root.clone());
    few_malloc_arenas();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // Threads left from a pull or import go soon: an idle daemon holds little.
        .thread_keep_alive(std::time::Duration::from_secs(2))
        .build()
        .context("failed to start the async runtime")?;
    runtime.block_on(async move {
        let shutdown = shutdown_signal().context("failed to install the signal handlers")?;
        let daemon = Daemon::bind(config).await.with_context(|| {
            format!(
                "failed to start the daemon on {host} with data root {}",
                data_root.display()
            )
        })?;
        let shutdown = async {
            shutdown.await;
            crate::notify::stopping();
        };
        daemon
            .run_notifying(shutdown, crate::notify::ready)
            .await
            .context("daemon failed")
    })
}

/// glibc gives each thread that allocates its own arena (up to eight per core); freed memory
/// spread over many arenas is what an idle daemon keeps resident. Two are plenty for the
/// daemon's few busy threads.
fn few_malloc_arenas() {
    // SAFETY: mallopt only changes allocator tunables; called before any thread starts.
    unsafe {
        nix::libc::mallopt(nix::libc::M_ARENA_MAX, 2);
    }
}
