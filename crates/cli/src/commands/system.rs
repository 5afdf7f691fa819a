//! `berth system info` and `berth system df`: what the daemon runs on and what it keeps on
//! disk, from `/info`, `/version` and `/system/df`.

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value, json};

use super::images::{human_size, table};
use crate::client::Client;
use crate::printer::Printer;

#[derive(Subcommand)]
pub(crate) enum SystemCommand {
    /// The daemon: version and API versions, data root, cgroup version, storage use, counts.
    Info(FormatArg),
    /// Disk use of images, containers, volumes and the build cache, as `docker system df`.
    Df(FormatArg),
}

#[derive(Args)]
pub(crate) struct FormatArg {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    /// Lines for people.
    Table,
    /// One JSON object.
    Json,
}

pub(crate) async fn run(command: SystemCommand, client: &Client, printer: &Printer) -> anyhow::Result<()> {
    match command {
        SystemCommand::Info(a) => info(a.format, client, printer).await,
        SystemCommand::Df(a) => df(a.format, client, printer).await,
    }
}

/// One line of `system df`: TYPE, TOTAL, ACTIVE, SIZE, RECLAIMABLE.
struct Usage {
    kind: &'static str,
    total: usize,
    active: usize,
    size: u64,
    reclaimable: u64,
}

/// Totals as docker's `system df` computes them: an image is active when a container uses
/// it; a container when it runs; a volume when something mounts it.
fn usage(df: &Value) -> Vec<Usage> {
    let list = |k: &str| df[k].as_array().cloned().unwrap_or_default();
    let u = |v: &Value, k: &str| v[k].as_u64().unwrap_or(0);
    let images = list("Images");
    let (mut active, mut reclaim) = (0, 0);
    for i in &images {
        if i["Containers"].as_i64().unwrap_or(0) > 0 {
            active += 1;
        } else {
            reclaim += u(i, "Size").saturating_sub(u(i, "SharedSize"));
        }
    }
    let mut out = vec![Usage {
        kind: "Images",
        total: images.len(),
        active,
        size: u(df, "LayersSize"),
        reclaimable: reclaim,
    }];
    let containers = list("Containers");
    let running = |c: &Value| c["State"] == "running" || c["State"] == "paused";
    out.push(Usage {
        kind: "Containers",
        total: containers.len(),
        active: containers.iter().filter(|c| running(c)).count(),
        size: containers.iter().map(|c| u(c, "SizeRw")).sum(),
        reclaimable: containers.iter().filter(|c| !running(c)).map(|c| u(c, "SizeRw")).sum(),
    });
    let volumes = list("Volumes");
    let refs = |v: &Value| v["UsageData"]["RefCount"].as_u64().unwrap_or(0);
    let vsize = |v: &Value| v["UsageData"]["Size"].as_u64().unwrap_or(0);
    out.push(Usage {
        kind: "Local Volumes",
        total: volumes.len(),
        active: volumes.iter().filter(|v| refs(v) > 0).count(),
        size: volumes.iter().map(vsize).sum(),
        reclaimable: volumes.iter().filter(|v| refs(v) == 0).map(vsize).sum(),
    });
    out.push(Usage {
        kind: "Build Cache",
        total: list("BuildCache").len(),
        active: 0,
        size: 0,
        reclaimable: 0,
    });
    out
}

async fn disk_usage(client: &Client) -> anyhow::Result<Value> {
    client
        .get_json("/system/df")
        .await
        .context("failed to read the daemon's disk use (GET /system/df)")
}

async fn df(format: Format, client: &Client, printer: &Printer) -> anyhow::Result<()> {
    let df = disk_usage(client).await?;
    if format == Format::Json {
        printer.line(&df.to_string());
        return Ok(());
    }
    let mut rows = vec![["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"].map(str::to_owned)];
    for u in usage(&df) {
        let share = (u.reclaimable * 100).checked_div(u.size).unwrap_or(0);
        rows.push([
            u.kind.to_owned(),
            u.total.to_string(),
            u.active.to_string(),
            human_size(u.size),
            format!("{} ({share}%)", human_size(u.reclaimable)),
        ]);
    }
    for line in table(&rows) {
        printer.line(&line);
    }
    Ok(())
}

async fn info(format: Format, client: &Client, printer: &Printer) -> anyhow::Result<()> {
    let (info, version, df) = tokio::try_join!(
        async { client.get_json("/info").await.context("failed to read GET /info") },
        async { client.get_json("/version").await.context("failed to read GET /version") },
        disk_usage(client),
    )?;
    let s = |v: &Value, k: &str| v[k].as_str().unwrap_or("?").to_owned();
    let n = |v: &Value, k: &str| v[k].as_u64().unwrap_or(0);
    let storage: Vec<Value> = usage(&df)
        .iter()
        .map(|u| json!({ "Type": u.kind, "Total": u.total, "Active": u.active, "Size": u.size, "Reclaimable": u.reclaimable }))
        .collect();
    let summary = json!({
        "ServerVersion": s(&info, "ServerVersion"),
        "ApiVersion": s(&version, "ApiVersion"),
        "MinAPIVersion": s(&version, "MinAPIVersion"),
        "DockerRootDir": s(&info, "DockerRootDir"),
        "CgroupVersion": s(&info, "CgroupVersion"),
        "CgroupDriver": s(&info, "CgroupDriver"),
        "Driver": s(&info, "Driver"),
        "LoggingDriver": s(&info, "LoggingDriver"),
        "LiveRestoreEnabled": info["LiveRestoreEnabled"].as_bool().unwrap_or(false),
        "Containers": n(&info, "Containers"),
        "ContainersRunning": n(&info, "ContainersRunning"),
        "ContainersPaused": n(&info, "ContainersPaused"),
        "ContainersStopped": n(&info, "ContainersStopped"),
        "Images": n(&info, "Images"),
        "Storage": storage,
        "KernelVersion": s(&info, "KernelVersion"),
        "OperatingSystem": s(&info, "OperatingSystem"),
        "Architecture": s(&info, "Architecture"),
        "NCPU": n(&info, "NCPU"),
        "MemTotal": n(&info, "MemTotal"),
        "Name": s(&info, "Name"),
    });
    if format == Format::Json {
        printer.line(&summary.to_string());
        return Ok(());
    }
    let v = &summary;
    let lines = [
        format!("Server:          berth {}", s(v, "ServerVersion")),
        format!(
            "API version:     {} (oldest accepted {})",
            s(v, "ApiVersion"),
            s(v, "MinAPIVersion")
        ),
        format!("Data root:       {}", s(v, "DockerRootDir")),
        format!(
            "Cgroup version:  {} ({} driver)",
            s(v, "CgroupVersion"),
            s(v, "CgroupDriver")
        ),
        format!("Storage driver:  {}", s(v, "Driver")),
        format!("Logging driver:  {}", s(v, "LoggingDriver")),
        format!(
            "Live restore:    {}",
            if v["LiveRestoreEnabled"] == true {
                "enabled"
            } else {
                "disabled"
            }
        ),
        format!(
            "Containers:      {} (running {}, paused {}, stopped {})",
            n(v, "Containers"),
            n(v, "ContainersRunning"),
            n(v, "ContainersPaused"),
            n(v, "ContainersStopped")
        ),
        format!("Images:          {}", n(v, "Images")),
        "Storage use:".to_owned(),
    ];
    for line in lines {
        printer.line(&line);
    }
    for u in usage(&df) {
        printer.line(&format!(
            "  {:<14} {:>10} in {} ({} reclaimable)",
            format!("{}:", u.kind),
            human_size(u.size),
            u.total,
            human_size(u.reclaimable)
        ));
    }
    for line in [
        format!("Kernel:          {}", s(v, "KernelVersion")),
        format!(
            "OS:              {} ({})",
            s(v, "OperatingSystem"),
            s(v, "Architecture")
        ),
        format!("CPUs:            {}", n(v, "NCPU")),
        format!("Memory:          {}", human_size(n(v, "MemTotal"))),
        format!("Name:            {}", s(v, "Name")),
    ] {
        printer.line(&line);
    }
    Ok(())
}
