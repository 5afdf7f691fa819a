//! A container's side of networks: `network connect` and `disconnect`, which containers a
//! network has, and the `NetworkSettings` inspect shows.

use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::settings::{EndpointRequest, Network};
use super::{Containers, Entry, Record, Write, holders, wiring};
use crate::error::{Error, Result};
use crate::networks::{Endpoint, NetworkRecord};

impl Containers {
    /// The names of the containers (running or not) on network `id`.
    pub(crate) fn network_users(&self, network_id: &str) -> Vec<String> {
        let mut names: Vec<String> = self
            .all()
            .iter()
            .map(|e| e.record())
            .filter(|r| r.endpoints.iter().any(|e| e.network_id == network_id))
            .map(|r| r.name)
            .collect();
        names.sort();
        names
    }

    /// `Containers` of `GET /networks/{id}`: the running containers on it.
    pub(crate) fn network_containers(&self, net: &NetworkRecord) -> Value {
        let mut out = Map::new();
        for r in self.all().iter().map(|e| e.record()).filter(Record::running) {
            if let Some(ep) = r.endpoints.iter().find(|e| e.network_id == net.id) {
                out.insert(
                    r.id.clone(),
                    json!({
                        "Name": r.name,
                        "EndpointID": ep.endpoint_id,
                        "MacAddress": ep.mac,
                        "IPv4Address": ep.ipv4.map(|n| n.to_string()).unwrap_or_default(),
                        "IPv6Address": ep.ipv6.map(|n| n.to_string()).unwrap_or_default(),
                    }),
                );
            }
        }
        Value::Object(out)
    }

    /// `POST /networks/{id}/connect`: allocates the endpoint and, on a running container,
    /// adds its interface at once.
    pub(crate) async fn connect(self: &Arc<Self>, entry: &Arc<Entry>, request: EndpointRequest) -> Result<()> {
        let _op = entry.op.lock().await;
        let rec = entry.record();
        let net = self.networks.resolve(&request.network)?;
        if !rec.settings.network.wired() {
            return Err(Error::InvalidContainerConfig {
                reason: format!(
                    "container sharing network namespace with another container or host cannot be connected to any other network (it runs with --network {})",
                    rec.settings.network.mode_name()
                ),
            });
        }
        if rec.endpoints.iter().any(|e| e.network_id == net.id) {
            return Err(Error::NetworkConflict(format!(
                "endpoint with name {} already exists in network {}",
                rec.name, net.name
            )));
        }
        if net.name == "bridge" && rec.settings.network == Network::User {
            return Err(Error::InvalidContainerConfig {
                reason: "berth: connecting a container on a user network to the default bridge is not supported".into(),
            });
        }
        let mut ep = {
            let t = self.table.lock().unwrap_or_else(|p| p.into_inner());
            let mut eps = self.networks.allocate(&[request], &holders(&t, Some(&rec.id)))?;
            eps.remove(0)
        };
        let used: Vec<usize> = rec
            .endpoints
            .iter()
            .filter_map(|e| e.ifname.strip_prefix("eth")?.parse().ok())
            .collect();
        ep.ifname = format!("eth{}", (0..).find(|i| !used.contains(i)).expect("a free index"));
        if rec.running() {
            let networks = self.networks.clone();
            let (r, e) = (rec.clone(), ep.clone());
            tokio::task::spawn_blocking(move || networks.connect_live(&wiring(&r), &e))
                .await
                .expect("connect does not panic")?;
        } else {
            self.networks.event(&net.id, "connect", &rec.id);
        }
        self.update_with(entry, Write::Synced, |r| r.endpoints.push(ep))?;
        Ok(())
    }

    /// `POST /networks/{id}/disconnect`: releases the endpoint (and its address).
    pub(crate) async fn disconnect(self: &Arc<Self>, entry: &Arc<Entry>, network: &str) -> Result<()> {
        let _op = entry.op.lock().await;
        let rec = entry.record();
        let net = self.networks.get(network)?;
        let Some(ep) = rec.endpoints.iter().find(|e| e.network_id == net.id).cloned() else {
            return Err(Error::InvalidContainerConfig {
                reason: format!("container {} is not connected to network {}", rec.name, net.name),
            });
        };
        if rec.running() {
            let networks = self.networks.clone();
            let (r, e) = (rec.clone(), ep.clone());
            tokio::task::spawn_blocking(move || networks.disconnect_live(&wiring(&r), &e))
                .await
                .expect("disconnect does not panic")?;
        } else {
            self.networks.event(&net.id, "disconnect", &rec.id);
        }
        self.update_with(entry, Write::Synced, |r| r.endpoints.retain(|e| e.network_id != net.id))?;
        Ok(())
    }

    /// `NetworkSettings.Networks` of inspect (and `NetworkSettings` of the list).
    pub(crate) fn networks_json(&self, r: &Record) -> Value {
        let mut out = Map::new();
        let running = r.running();
        match r.settings.network {
            Network::Host | Network::None => {
                let name = r.settings.network.mode_name();
                let id = self.networks.get(name).map(|n| n.id).unwrap_or_default();
                out.insert(name.to_owned(), endpoint_json(&id, None, running));
            }
            Network::Bridge | Network::User => {
                for ep in &r.endpoints {
                    let name = self
                        .networks
                        .get(&ep.network_id)
                        .map(|n| n.name)
                        .unwrap_or_else(|_| ep.request.network.clone());
                    let mut v = endpoint_json(&ep.network_id, Some((ep, self.gateways(ep))), running);
                    if name != "bridge" && running {
                        // The names the network's DNS answers for it, as dockerd (API 1.44+) lists them.
                        let mut names = vec![r.name.clone(), r.id[..12].to_owned()];
                        names.extend(ep.aliases.iter().cloned());
                        v["DNSNames"] = json!(names);
                    }
                    out.insert(name, v);
                }
            }
        }
        Value::Object(out)
    }

    fn gateways(&self, ep: &Endpoint) -> (String, String) {
        let Ok(net) = self.networks.get(&ep.network_id) else {
            return (String::new(), String::new());
        };
        let gw = |v4: bool| {
            net.subnets
                .iter()
                .find(|s| s.subnet.addr().is_ipv4() == v4)
                .map(|s| s.gateway.to_string())
                .unwrap_or_default()
        };
        (gw(true), if ep.ipv6.is_some() { gw(false) } else { String::new() })
    }

    /// `NetworkSettings.Ports`: every exposed port, with its bindings while running.
    pub(crate) fn ports_json(&self, r: &Record) -> Value {
        let mut out = Map::new();
        for e in &r.settings.exposed {
            out.insert(e.clone(), Value::Null);
        }
        if r.running() {
            for p in &r.published {
                let key = format!("{}/{}", p.container_port, p.proto);
                let entry = out.entry(key).or_insert(Value::Null);
                if entry.is_null() {
                    *entry = json!([]);
                }
                if let Some(a) = entry.as_array_mut() {
                    a.push(json!({"HostIp": p.host_ip, "HostPort": p.host_port.to_string()}));
                }
            }
        }
        Value::Object(out)
    }

    /// `Ports` of `GET /containers/json`.
    pub(crate) fn ports_list(&self, r: &Record) -> Value {
        let mut out: Vec<Value> = Vec::new();
        if r.running() {
            for p in &r.published {
                out.push(json!({"IP": p.host_ip, "PrivatePort": p.container_port, "PublicPort": p.host_port, "Type": p.proto}));
            }
        }
        for e in &r.settings.exposed {
            if let Ok((port, proto)) = super::settings::parse_port_proto(e) {
                if !r.running() || !r.published.iter().any(|p| p.container_port == port && p.proto == proto) {
                    out.push(json!({"PrivatePort": port, "Type": proto}));
                }
            }
        }
        Value::Array(out)
    }
}

/// One network of `NetworkSettings.Networks`; the address fields only while running, as
/// dockerd shows them.
fn endpoint_json(network_id: &str, ep: Option<(&Endpoint, (String, String))>, running: bool) -> Value {
    let Some((ep, (gw4, gw6))) = ep else {
        return json!({
            "IPAMConfig": null, "Links": null, "Aliases": null, "MacAddress": "", "DriverOpts": null,
            "NetworkID": network_id, "EndpointID": "", "Gateway": "", "IPAddress": "", "IPPrefixLen": 0,
            "IPv6Gateway": "", "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0, "DNSNames": null,
        });
    };
    let ipam = if ep.request.ipv4.is_some() || ep.request.ipv6.is_some() {
        json!({
            "IPv4Address": ep.request.ipv4.map(|a| a.to_string()).unwrap_or_default(),
            "IPv6Address": ep.request.ipv6.map(|a| a.to_string()).unwrap_or_default(),
        })
    } else {
        Value::Null
    };
    let on = |s: String| if running { s } else { String::new() };
    json!({
        "IPAMConfig": ipam,
        "Links": null,
        "Aliases": if ep.aliases.is_empty() { Value::Null } else { json!(ep.aliases) },
        "MacAddress": on(ep.mac.clone()),
        "DriverOpts": null,
        "NetworkID": network_id,
        "EndpointID": on(ep.endpoint_id.clone()),
        "Gateway": on(gw4),
        "IPAddress": on(ep.ipv4.map(|n| n.addr().to_string()).unwrap_or_default()),
        "IPPrefixLen": if running { ep.ipv4.map(|n| n.prefix_len()).unwrap_or(0) } else { 0 },
        "IPv6Gateway": on(gw6),
        "GlobalIPv6Address": on(ep.ipv6.map(|n| n.addr().to_string()).unwrap_or_default()),
        "GlobalIPv6PrefixLen": if running { ep.ipv6.map(|n| n.prefix_len()).unwrap_or(0) } else { 0 },
        "DNSNames": null,
    })
}
