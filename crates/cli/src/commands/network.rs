//! `berth network …`: the `/networks` endpoints, with docker's flags.

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use hyper::Method;
use serde_json::{Map, Value, json};

use super::images::table;
use crate::client::{Client, empty, json_request, list_query, path_name};
use crate::printer::Printer;

#[derive(Subcommand)]
pub(crate) enum NetworkCommand {
    /// Create a network.
    Create(CreateArgs),
    /// List networks.
    #[command(alias = "list")]
    Ls(LsArgs),
    /// Show networks in detail (pretty JSON).
    Inspect(NamesArgs),
    /// Remove networks.
    #[command(alias = "remove")]
    Rm(NamesArgs),
    /// Remove networks no container uses.
    Prune,
    /// Connect a container to a network.
    Connect(ConnectArgs),
    /// Disconnect a container from a network.
    Disconnect(DisconnectArgs),
}

#[derive(Args)]
pub(crate) struct CreateArgs {
    /// bridge, macvlan or ipvlan.
    #[arg(short, long, default_value = "bridge")]
    driver: String,
    /// Subnet in CIDR form; repeatable (one IPv4, one IPv6).
    #[arg(long = "subnet", value_name = "CIDR")]
    subnets: Vec<String>,
    /// Gateway of the subnet given at the same position.
    #[arg(long = "gateway", value_name = "IP")]
    gateways: Vec<String>,
    /// Range dynamic addresses come from, for the subnet at the same position.
    #[arg(long = "ip-range", value_name = "CIDR")]
    ip_ranges: Vec<String>,
    /// No traffic between the network and anything else.
    #[arg(long)]
    internal: bool,
    /// IPv6 (give an IPv6 --subnet).
    #[arg(long)]
    ipv6: bool,
    /// Driver option KEY=VALUE (com.docker.network.bridge.name=br0, parent=eth0.10, …); repeatable.
    #[arg(short, long = "opt", value_name = "KEY=VALUE")]
    opts: Vec<String>,
    /// Label KEY=VALUE; repeatable.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    labels: Vec<String>,
    name: String,
}

#[derive(Args)]
pub(crate) struct LsArgs {
    /// Filter, as docker: name=, id=, driver=, label=, type=builtin|custom, dangling=true; repeatable.
    #[arg(short, long = "filter", value_name = "KEY=VALUE")]
    filters: Vec<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    /// Only the network IDs.
    #[arg(short, long)]
    quiet: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    /// NETWORK ID NAME DRIVER SCOPE, as docker prints it.
    Table,
    /// The API's network objects, one per line.
    Json,
}

#[derive(Args)]
pub(crate) struct NamesArgs {
    /// Networks, by name or ID (prefix).
    #[arg(required = true)]
    networks: Vec<String>,
}

#[derive(Args)]
pub(crate) struct ConnectArgs {
    /// The container's IPv4 address on the network.
    #[arg(long, value_name = "IP")]
    ip: Option<String>,
    /// The container's IPv6 address on the network.
    #[arg(long, value_name = "IP")]
    ip6: Option<String>,
    /// Another name the container answers to on the network; repeatable.
    #[arg(long = "alias", value_name = "NAME")]
    aliases: Vec<String>,
    network: String,
    container: String,
}

#[derive(Args)]
pub(crate) struct DisconnectArgs {
    /// Accepted for docker's sake: a disconnect is never refused for a running container.
    #[arg(short, long)]
    force: bool,
    network: String,
    container: String,
}

/// `KEY=VALUE` pairs as a JSON object.
fn pairs(list: &[String], what: &str) -> anyhow::Result<Map<String, Value>> {
    let mut out = Map::new();
    for p in list {
        let (k, v) = p
            .split_once('=')
            .with_context(|| format!("invalid {what} {p:?}: expected KEY=VALUE"))?;
        out.insert(k.to_owned(), json!(v));
    }
    Ok(out)
}

pub(crate) async fn run(cmd: NetworkCommand, client: &Client, printer: &Printer) -> anyhow::Result<()> {
    match cmd {
        NetworkCommand::Create(a) => {
            if a.gateways.len() > a.subnets.len() || a.ip_ranges.len() > a.subnets.len() {
                anyhow::bail!("every --gateway and --ip-range needs a --subnet at the same position");
            }
            let config: Vec<Value> = a
                .subnets
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    let mut c = json!({"Subnet": s});
                    if let Some(g) = a.gateways.get(i) {
                        c["Gateway"] = json!(g);
                    }
                    if let Some(r) = a.ip_ranges.get(i) {
                        c["IPRange"] = json!(r);
                    }
                    c
                })
                .collect();
            let body = json!({
                "Name": a.name,
                "Driver": a.driver,
                "Internal": a.internal,
                "EnableIPv6": a.ipv6,
                "IPAM": {"Driver": "default", "Config": config},
                "Options": pairs(&a.opts, "--opt")?,
                "Labels": pairs(&a.labels, "--label")?,
            });
            let resp = client
                .request(
                    Method::POST,
                    "/networks/create",
                    &[("Content-Type", "application/json")],
                    json_request(&body),
                )
                .await
                .with_context(|| format!("failed to create network {}", a.name))?;
            let v = crate::client::json_body(resp).await?;
            printer.line(v["Id"].as_str().unwrap_or_default());
            Ok(())
        }
        NetworkCommand::Ls(a) => {
            let q = list_query(false, &a.filters, &[])?;
            let list = client
                .get_json(&format!("/networks{q}"))
                .await
                .context("failed to list networks")?;
            let nets = list.as_array().map(Vec::as_slice).unwrap_or_default();
            let id = |n: &Value| {
                n["Id"]
                    .as_str()
                    .unwrap_or_default()
                    .chars()
                    .take(12)
                    .collect::<String>()
            };
            if a.quiet {
                nets.iter().for_each(|n| printer.line(&id(n)));
                return Ok(());
            }
            match a.format {
                Format::Json => nets.iter().for_each(|n| printer.line(&n.to_string())),
                Format::Table => {
                    let mut rows = vec![["NETWORK ID", "NAME", "DRIVER", "SCOPE"].map(str::to_owned)];
                    for n in nets {
                        let s = |k: &str| n[k].as_str().unwrap_or_default().to_owned();
                        rows.push([id(n), s("Name"), s("Driver"), s("Scope")]);
                    }
                    table(&rows).iter().for_each(|l| printer.line(l));
                }
            }
            Ok(())
        }
        NetworkCommand::Inspect(a) => {
            let mut out = Vec::new();
            for n in &a.networks {
                let v = client
                    .get_json(&format!("/networks/{}", path_name(n)))
                    .await
                    .with_context(|| format!("failed to inspect network {n}"))?;
                out.push(v);
            }
            printer.line(&serde_json::to_string_pretty(&out).expect("serialisable"));
            Ok(())
        }
        NetworkCommand::Rm(a) => {
            let mut failed = false;
            for n in &a.networks {
                match client
                    .request(Method::DELETE, &format!("/networks/{}", path_name(n)), &[], empty())
                    .await
                    .with_context(|| format!("failed to remove network {n}"))
                {
                    Ok(_) => printer.line(n),
                    Err(e) => {
                        printer.error(&e);
                        failed = true;
                    }
                }
            }
            if failed {
                Err(super::container::ExitStatus(1).into())
            } else {
                Ok(())
            }
        }
        NetworkCommand::Prune => {
            let resp = client
                .request(Method::POST, "/networks/prune", &[], empty())
                .await
                .context("failed to prune networks")?;
            let v = crate::client::json_body(resp).await?;
            let gone: Vec<&str> = v["NetworksDeleted"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            if !gone.is_empty() {
                printer.line("Deleted Networks:");
                gone.iter().for_each(|n| printer.line(n));
            }
            Ok(())
        }
        NetworkCommand::Connect(a) => {
            let mut ipam = Map::new();
            if let Some(ip) = &a.ip {
                ipam.insert("IPv4Address".into(), json!(ip));
            }
            if let Some(ip) = &a.ip6 {
                ipam.insert("IPv6Address".into(), json!(ip));
            }
            let body = json!({"Container": a.container, "EndpointConfig": {"IPAMConfig": ipam, "Aliases": a.aliases}});
            client
                .request(
                    Method::POST,
                    &format!("/networks/{}/connect", path_name(&a.network)),
                    &[("Content-Type", "application/json")],
                    json_request(&body),
                )
                .await
                .with_context(|| format!("failed to connect {} to network {}", a.container, a.network))?;
            Ok(())
        }
        NetworkCommand::Disconnect(a) => {
            let body = json!({"Container": a.container, "Force": a.force});
            client
                .request(
                    Method::POST,
                    &format!("/networks/{}/disconnect", path_name(&a.network)),
                    &[("Content-Type", "application/json")],
                    json_request(&body),
                )
                .await
                .with_context(|| format!("failed to disconnect {} from network {}", a.container, a.network))?;
            Ok(())
        }
    }
}
