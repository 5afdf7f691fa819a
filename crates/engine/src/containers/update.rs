//! `POST /containers/{id}/update`: what may change, checked as dockerd checks it, merged
//! into the container's `HostConfig`.

use serde_json::{Value, json};

use super::settings::{
    RestartPolicy, check_cpuset, invalid, is_set, not_built, resources, restart_policy, swap_accounting,
};
use crate::error::Error;

/// What `POST /containers/{id}/update` changes.
pub(crate) struct Update {
    /// The container's `HostConfig` with the request merged in.
    pub(crate) host_config: Value,
    /// The limits the next start applies.
    pub(crate) resources: berth_runtime::Resources,
    /// The limits to write to the running container's cgroup now (only those requested).
    pub(crate) live: berth_runtime::Resources,
    /// A new restart policy, when one is requested.
    pub(crate) restart: Option<RestartPolicy>,
    pub(crate) warnings: Vec<String>,
}

/// `UpdateConfig` fields that `docker update` cannot change in Berth (yet): refused, not
/// ignored.
const UPDATE_NOT_BUILT: &[(&str, &str)] = &[
    ("BlkioWeight", "--blkio-weight"),
    ("BlkioWeightDevice", "--blkio-weight-device"),
    ("BlkioDeviceReadBps", "--device-read-bps"),
    ("BlkioDeviceWriteBps", "--device-write-bps"),
    ("BlkioDeviceReadIOps", "--device-read-iops"),
    ("BlkioDeviceWriteIOps", "--device-write-iops"),
    ("KernelMemory", "--kernel-memory"),
    ("KernelMemoryTCP", "KernelMemoryTCP"),
    ("CpuRealtimePeriod", "--cpu-rt-period"),
    ("CpuRealtimeRuntime", "--cpu-rt-runtime"),
    ("Devices", "Devices"),
    ("DeviceCgroupRules", "DeviceCgroupRules"),
    ("DeviceRequests", "DeviceRequests"),
    ("Ulimits", "Ulimits"),
    ("OomKillDisable", "OomKillDisable"),
    ("IOMaximumIOps", "IOMaximumIOps"),
    ("IOMaximumBandwidth", "IOMaximumBandwidth"),
];

/// Checks an update request (moby's `verifyPlatformContainerResources` with `update`, then
/// `Container.UpdateContainer`) and merges it into `hc`, the container's `HostConfig`.
pub(crate) fn update(hc: &Value, req: &Value, id: &str, auto_remove: bool) -> Result<Update, Error> {
    for (field, flag) in UPDATE_NOT_BUILT {
        if is_set(req.get(*field)) {
            return Err(not_built(format!("docker update of {flag} (UpdateConfig.{field})")));
        }
    }
    if req
        .get("MemorySwappiness")
        .and_then(Value::as_i64)
        .is_some_and(|v| v != -1)
    {
        return Err(not_built("docker update of MemorySwappiness"));
    }
    let int = |v: &Value, k: &str| v.get(k).and_then(Value::as_i64).unwrap_or(0);
    let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    let memory = int(req, "Memory");
    let mut swap = int(req, "MemorySwap");
    let reservation = int(req, "MemoryReservation");
    let nano = int(req, "NanoCpus");
    let period = int(req, "CpuPeriod");
    let quota = int(req, "CpuQuota");
    let shares = int(req, "CpuShares");
    let cpus = text(req, "CpusetCpus");
    let mems = text(req, "CpusetMems");
    let pids = req.get("PidsLimit").and_then(Value::as_i64);
    let mut warnings = Vec::new();

    // The request on its own.
    if memory != 0 && memory < 6 * 1024 * 1024 {
        return Err(invalid("Minimum memory limit allowed is 6MB"));
    }
    if memory > 0 && swap != -1 && swap != 0 && !swap_accounting() {
        warnings.push(
            "Your kernel does not support swap limit capabilities or the cgroup is not mounted. Memory limited without swap."
                .to_owned(),
        );
        swap = 0;
    }
    if memory > 0 && swap > 0 && swap < memory {
        return Err(invalid(
            "Minimum memoryswap limit should be larger than memory limit, see usage",
        ));
    }
    if reservation > 0 && reservation < 6 * 1024 * 1024 {
        return Err(invalid("Minimum memory reservation allowed is 6MB"));
    }
    if memory > 0 && reservation > 0 && memory < reservation {
        return Err(invalid(
            "Minimum memory limit can not be less than memory reservation limit, see usage",
        ));
    }
    if nano > 0 && period > 0 {
        return Err(invalid(
            "Conflicting options: Nano CPUs and CPU Period cannot both be set",
        ));
    }
    if nano > 0 && quota > 0 {
        return Err(invalid(
            "Conflicting options: Nano CPUs and CPU Quota cannot both be set",
        ));
    }
    let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get()) as i64;
    if nano != 0 && (nano < 0 || nano > ncpu * 1_000_000_000) {
        return Err(invalid(format!(
            "Range of CPUs is from 0.01 to {ncpu}.00, as there are only {ncpu} CPUs available"
        )));
    }
    if period != 0 && !(1000..=1_000_000).contains(&period) {
        return Err(invalid(
            "CPU cfs period can not be less than 1ms (i.e. 1000) or larger than 1s (i.e. 1000000)",
        ));
    }
    if quota > 0 && quota < 1000 {
        return Err(invalid("CPU cfs quota can not be less than 1ms (i.e. 1000)"));
    }
    check_cpuset(&cpus, "/sys/devices/system/cpu/online", "cpus", "CPUs")?;
    check_cpuset(&mems, "/sys/devices/system/node/online", "mems", "memory nodes")?;
    let restart = match req.get("RestartPolicy") {
        Some(p) if p.get("Name").and_then(Value::as_str).is_some_and(|n| !n.is_empty()) => {
            let name = p.get("Name").and_then(Value::as_str).unwrap_or("");
            if auto_remove && name != "no" {
                return Err(Error::UpdateConflict {
                    id: id.to_owned(),
                    reason: "Restart policy cannot be updated because AutoRemove is enabled for the container".into(),
                });
            }
            Some(restart_policy(p, false)?)
        }
        _ => None,
    };

    // Against what the container has.
    let conflict = |reason: &str| Error::UpdateConflict {
        id: id.to_owned(),
        reason: reason.to_owned(),
    };
    let has = |k: &str| int(hc, k) > 0;
    if nano > 0 && has("CpuPeriod") {
        return Err(conflict(
            "Conflicting options: Nano CPUs cannot be updated as CPU Period has already been set",
        ));
    }
    if nano > 0 && has("CpuQuota") {
        return Err(conflict(
            "Conflicting options: Nano CPUs cannot be updated as CPU Quota has already been set",
        ));
    }
    if period > 0 && has("NanoCpus") {
        return Err(conflict(
            "Conflicting options: CPU Period cannot be updated as NanoCPUs has already been set",
        ));
    }
    if quota > 0 && has("NanoCpus") {
        return Err(conflict(
            "Conflicting options: CPU Quota cannot be updated as NanoCPUs has already been set",
        ));
    }
    if memory != 0 && memory > int(hc, "MemorySwap") && swap == 0 {
        return Err(conflict(
            "Memory limit should be smaller than already set memoryswap limit, update the memoryswap at the same time",
        ));
    }

    let mut merged = hc.clone();
    let o = merged
        .as_object_mut()
        .ok_or_else(|| invalid("the container's HostConfig is not an object"))?;
    for (k, v) in [
        ("Memory", memory),
        ("MemorySwap", swap),
        ("MemoryReservation", reservation),
        ("NanoCpus", nano),
        ("CpuPeriod", period),
        ("CpuQuota", quota),
        ("CpuShares", shares),
    ] {
        if v != 0 {
            o.insert(k.into(), json!(v));
        }
    }
    for (k, v) in [("CpusetCpus", &cpus), ("CpusetMems", &mems)] {
        if !v.is_empty() {
            o.insert(k.into(), json!(v));
        }
    }
    if let Some(p) = pids {
        o.insert("PidsLimit".into(), json!(p.max(0)));
    }
    if let Some(p) = req.get("RestartPolicy").filter(|_| restart.is_some()) {
        o.insert(
            "RestartPolicy".into(),
            json!({"Name": p.get("Name").cloned().unwrap_or(json!("")), "MaximumRetryCount": int(p, "MaximumRetryCount")}),
        );
    }
    let resources = resources(&merged)?;
    let (live_quota, live_period) = if nano > 0 {
        (Some(nano * 100_000 / 1_000_000_000), Some(100_000))
    } else {
        ((quota != 0).then_some(quota), (period != 0).then_some(period as u64))
    };
    let live = berth_runtime::Resources {
        memory: (memory != 0).then_some(memory),
        memory_swap: (swap != 0 && (swap == -1 || swap_accounting())).then_some(swap),
        memory_reservation: (reservation != 0).then_some(reservation),
        cpu_shares: (shares > 0).then_some(shares as u64),
        cpu_quota: live_quota,
        cpu_period: live_period,
        cpuset_cpus: (!cpus.is_empty()).then_some(cpus),
        cpuset_mems: (!mems.is_empty()).then_some(mems),
        pids_limit: pids.map(|p| if p > 0 { p } else { -1 }),
        // Not changeable by `docker update` (dockerd neither); the live write skips it.
        oom_kill_disable: false,
    };
    Ok(Update {
        host_config: merged,
        resources,
        live,
        restart,
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updates_checked_like_dockerd() {
        let hc =
            json!({"Memory": 33554432, "MemorySwap": 67108864, "NanoCpus": 500000000, "RestartPolicy": {"Name": "no"}});
        let err = |req: Value, auto_remove: bool| {
            update(&hc, &req, "cid", auto_remove)
                .err()
                .unwrap_or_else(|| panic!("accepted {req}"))
                .to_string()
        };
        assert!(err(json!({"Memory": 1}), false).contains("Minimum memory limit allowed is 6MB"));
        assert!(err(json!({"Memory": 134217728, "MemorySwap": 67108864}), false).contains("larger than memory limit"));
        assert_eq!(
            err(json!({"Memory": 134217728}), false),
            "Cannot update container cid: Memory limit should be smaller than already set memoryswap limit, update the memoryswap at the same time"
        );
        assert!(err(json!({"CpuQuota": 20000}), false).contains("CPU Quota cannot be updated as NanoCPUs"));
        assert!(err(json!({"RestartPolicy": {"Name": "always"}}), true).contains("AutoRemove"));
        assert!(err(json!({"RestartPolicy": {"Name": "bogus"}}), false).contains("unknown policy 'bogus'"));
        assert!(err(json!({"BlkioWeight": 300}), false).contains("--blkio-weight"));
        let u = update(
            &hc,
            &json!({"PidsLimit": 20, "Memory": 50331648, "CpuShares": 512, "RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": 3}}),
            "cid",
            false,
        )
        .unwrap();
        assert_eq!(u.host_config["PidsLimit"], 20);
        assert_eq!(u.host_config["Memory"], 50331648);
        assert_eq!(
            u.host_config["RestartPolicy"],
            json!({"Name": "on-failure", "MaximumRetryCount": 3})
        );
        assert_eq!(
            u.restart.as_ref().map(|r| (r.name.as_str(), r.max)),
            Some(("on-failure", 3))
        );
        assert_eq!(u.resources.pids_limit, Some(20));
        assert_eq!(u.resources.memory, Some(48 << 20));
        assert_eq!(u.resources.cpu_quota, Some(50_000), "NanoCpus still applies");
        assert_eq!(u.live.pids_limit, Some(20));
        assert_eq!(u.live.memory, Some(48 << 20));
        assert_eq!(u.live.cpu_quota, None, "only what was asked is written live");
        let unlimited = update(&hc, &json!({"PidsLimit": -1}), "cid", false).unwrap();
        assert_eq!(unlimited.host_config["PidsLimit"], 0);
        assert_eq!(unlimited.live.pids_limit, Some(-1));
        assert_eq!(unlimited.resources.pids_limit, None);
    }
}
