//! Health checks (`HEALTHCHECK` in the image, `--health-cmd` and friends on create): while
//! the container runs, the probe runs in it as a `docker exec` does, every interval; its
//! results make `State.Health` (status, failing streak, the last five probes), the
//! `(healthy)` of `docker ps`, the `health` filter and the `health_status` events, as with
//! dockerd.
//!
//! The state is the daemon's memory: a daemon restart (or a container start) begins again
//! at `starting`.

use std::collections::VecDeque;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::settings::invalid;
use super::{Containers, Entry, process_alive};
use crate::error::Error;

const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_START_INTERVAL: Duration = Duration::from_secs(5);
const DEFAULT_RETRIES: u32 = 3;
/// Probes kept in `State.Health.Log`.
const LOG_ENTRIES: usize = 5;
/// Bytes of a probe's output kept.
const MAX_OUTPUT: usize = 4096;

/// A container's health check, resolved at create from the request and the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Healthcheck {
    /// `["CMD", arg…]` or `["CMD-SHELL", command]`.
    pub(crate) test: Vec<String>,
    /// Nanoseconds; 0 means the default.
    pub(crate) interval: u64,
    pub(crate) timeout: u64,
    pub(crate) start_period: u64,
    pub(crate) start_interval: u64,
    /// 0 means the default (3).
    pub(crate) retries: u32,
}

impl Healthcheck {
    /// `Config.Healthcheck` of the request over the image's, field by field as dockerd merges
    /// them; `None` when neither has a test or the test is `["NONE"]`.
    pub(crate) fn resolve(request: Option<&Value>, image: Option<&Value>) -> Result<Option<Healthcheck>, Error> {
        let request = request.filter(|v| v.is_object());
        let image = image.filter(|v| v.is_object());
        if request.is_none() && image.is_none() {
            return Ok(None);
        }
        let field = |name: &str| -> Option<&Value> {
            let set = |v: &&Value| match v {
                Value::Null => false,
                Value::Number(n) => n.as_i64() != Some(0),
                Value::Array(a) => !a.is_empty(),
                _ => true,
            };
            request
                .and_then(|r| r.get(name))
                .filter(set)
                .or_else(|| image.and_then(|i| i.get(name)).filter(set))
        };
        let test: Vec<String> = match field("Test") {
            None => return Ok(None),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| v.as_str().map(str::to_owned))
                .collect::<Option<_>>()
                .ok_or_else(|| invalid("Healthcheck.Test must be a list of strings"))?,
            Some(_) => return Err(invalid("Healthcheck.Test must be a list of strings")),
        };
        match test.first().map(String::as_str) {
            Some("NONE") => return Ok(None),
            Some("CMD") if test.len() > 1 => {}
            Some("CMD-SHELL") if test.len() == 2 => {}
            Some("CMD" | "CMD-SHELL") => return Err(invalid(format!("Healthcheck.Test {test:?} has no command"))),
            _ => {
                return Err(invalid(format!(
                    "unknown Healthcheck.Test type {:?}: expected NONE, CMD or CMD-SHELL",
                    test.first().map(String::as_str).unwrap_or("")
                )));
            }
        }
        let duration = |name: &'static str| -> Result<u64, Error> {
            match field(name).map(|v| v.as_i64()) {
                None => Ok(0),
                Some(Some(ns)) if ns >= 1_000_000 => Ok(ns as u64),
                Some(Some(ns)) if ns < 0 => Err(invalid(format!("{name} in Healthcheck cannot be negative"))),
                Some(_) => Err(invalid(format!("{name} in Healthcheck cannot be less than 1ms"))),
            }
        };
        let retries = match field("Retries").map(|v| v.as_i64()) {
            None => 0,
            Some(Some(n)) if n >= 0 => u32::try_from(n).unwrap_or(u32::MAX),
            Some(_) => return Err(invalid("Retries in Healthcheck cannot be negative")),
        };
        Ok(Some(Healthcheck {
            test,
            interval: duration("Interval")?,
            timeout: duration("Timeout")?,
            start_period: duration("StartPeriod")?,
            start_interval: duration("StartInterval")?,
            retries,
        }))
    }

    /// `Config.Healthcheck` as inspect shows it.
    pub(crate) fn to_json(&self) -> Value {
        let mut v = json!({"Test": self.test});
        for (name, ns) in [
            ("Interval", self.interval),
            ("Timeout", self.timeout),
            ("StartPeriod", self.start_period),
            ("StartInterval", self.start_interval),
        ] {
            if ns > 0 {
                v[name] = json!(ns);
            }
        }
        if self.retries > 0 {
            v["Retries"] = json!(self.retries);
        }
        v
    }

    /// What runs in the container.
    fn argv(&self) -> Vec<String> {
        match self.test.first().map(String::as_str) {
            Some("CMD-SHELL") => vec!["/bin/sh".into(), "-c".into(), self.test[1].clone()],
            _ => self.test[1..].to_vec(),
        }
    }

    fn or(ns: u64, default: Duration) -> Duration {
        if ns == 0 { default } else { Duration::from_nanos(ns) }
    }

    fn interval(&self) -> Duration {
        Self::or(self.interval, DEFAULT_INTERVAL)
    }

    fn timeout(&self) -> Duration {
        Self::or(self.timeout, DEFAULT_TIMEOUT)
    }

    fn start_period(&self) -> Duration {
        Duration::from_nanos(self.start_period)
    }

    fn start_interval(&self) -> Duration {
        Self::or(self.start_interval, DEFAULT_START_INTERVAL)
    }

    fn retries(&self) -> u32 {
        if self.retries == 0 {
            DEFAULT_RETRIES
        } else {
            self.retries
        }
    }
}

/// One probe's result (`State.Health.Log[]`).
#[derive(Debug, Clone)]
struct Probe {
    start: String,
    end: String,
    exit_code: i64,
    output: String,
}

/// `State.Health`.
#[derive(Debug, Clone)]
pub(crate) struct Health {
    pub(crate) status: &'static str,
    failing_streak: u32,
    log: VecDeque<Probe>,
}

impl Health {
    fn starting() -> Health {
        Health {
            status: "starting",
            failing_streak: 0,
            log: VecDeque::new(),
        }
    }

    pub(crate) fn to_json(&self) -> Value {
        json!({
            "Status": self.status,
            "FailingStreak": self.failing_streak,
            "Log": self.log.iter().map(|p| json!({
                "Start": p.start,
                "End": p.end,
                "ExitCode": p.exit_code,
                "Output": p.output,
            })).collect::<Vec<_>>(),
        })
    }

    /// Records a probe; the new status when it changed. Failures while the start period
    /// lasts do not count.
    fn record(&mut self, probe: Probe, retries: u32, starting: bool) -> Option<&'static str> {
        let before = self.status;
        if probe.exit_code == 0 {
            self.failing_streak = 0;
            self.status = "healthy";
        } else if !starting {
            self.failing_streak += 1;
            if self.failing_streak >= retries {
                self.status = "unhealthy";
            }
        }
        if self.log.len() == LOG_ENTRIES {
            self.log.pop_front();
        }
        self.log.push_back(probe);
        (self.status != before).then_some(self.status)
    }
}

/// Reads a pipe to its end, keeping at most `MAX_OUTPUT` bytes.
async fn read_capped(pipe: Option<impl AsyncRead + Unpin>) -> Vec<u8> {
    let mut out = Vec::new();
    let Some(mut pipe) = pipe else {
        return out;
    };
    let mut buf = [0u8; 4096];
    while let Ok(n) = pipe.read(&mut buf).await {
        if n == 0 {
            break;
        }
        let room = MAX_OUTPUT.saturating_sub(out.len());
        out.extend_from_slice(&buf[..n.min(room)]);
    }
    out
}

impl Containers {
    /// Starts the health checks of a container that now runs (a start, or a re-adoption
    /// after a daemon restart); a container without one has no `State.Health`.
    pub(crate) fn monitor_health(self: &Arc<Self>, entry: &Arc<Entry>) {
        let rec = entry.record();
        let mut health = entry.health.lock().unwrap_or_else(|p| p.into_inner());
        let Some(hc) = rec.settings.healthcheck.clone() else {
            *health = None;
            return;
        };
        *health = Some(Health::starting());
        let exits = entry.subscribe().borrow().exits;
        let this = self.clone();
        let entry = entry.clone();
        tokio::spawn(async move { this.health_loop(entry, hc, exits).await });
    }

    /// Probes until the run that was current at `exits` ends.
    async fn health_loop(self: Arc<Self>, entry: Arc<Entry>, hc: Healthcheck, exits: u64) {
        let started = Instant::now();
        let mut rx = entry.subscribe();
        loop {
            // dockerd's: the start interval while the start period lasts and nothing has
            // succeeded yet, else the interval.
            let starting = started.elapsed() < hc.start_period()
                && entry
                    .health
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .as_ref()
                    .is_some_and(|h| h.status == "starting");
            let wait = if starting { hc.start_interval() } else { hc.interval() };
            let ended = tokio::select! {
                () = tokio::time::sleep(wait) => false,
                r = rx.wait_for(|p| p.exits > exits || p.removed) => { drop(r); true }
            };
            let rec = entry.record();
            if ended || !rec.running() {
                return;
            }
            if rec.paused() {
                continue;
            }
            let probe = self.probe(&entry, &rec.name, &hc).await;
            if entry.subscribe().borrow().exits > exits {
                return;
            }
            // A probe that failed because the container was dying (a stop or kill under way,
            // its exit not recorded yet) says nothing of its health: dockerd's stop ends the
            // probes first. The loop ends when the exit is recorded.
            if probe.exit_code != 0 && !process_alive(rec.state.pid) {
                continue;
            }
            tracing::debug!(container = %rec.id, exit_code = probe.exit_code, "health probe");
            let starting = started.elapsed() < hc.start_period();
            let changed = entry
                .health
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_mut()
                .and_then(|h| h.record(probe, hc.retries(), starting));
            match changed {
                Some("healthy") => self.emit(&rec, "health_status: healthy", &[]),
                Some("unhealthy") => self.emit(&rec, "health_status: unhealthy", &[]),
                _ => {}
            }
        }
    }

    /// Runs the probe in the container, as an exec, within the timeout.
    async fn probe(&self, entry: &Entry, name: &str, hc: &Healthcheck) -> Probe {
        let start = berth_runtime::now_rfc3339();
        let (exit_code, output) = match self.run_probe(entry, name, hc).await {
            Ok(r) => r,
            Err(e) => (-1, e.to_string()),
        };
        Probe {
            start,
            end: berth_runtime::now_rfc3339(),
            exit_code,
            output,
        }
    }

    async fn run_probe(&self, entry: &Entry, name: &str, hc: &Healthcheck) -> Result<(i64, String), Error> {
        let body = json!({"Cmd": hc.argv(), "AttachStdout": true, "AttachStderr": true});
        let id = self.exec_create_quiet(entry, name, &body)?;
        let result = async {
            let exec = self.exec_get(&id)?;
            let mut cmd = self.exec_command(&exec)?;
            cmd.stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true);
            let mut child = cmd.spawn().map_err(|source| Error::Io {
                op: "start the health probe",
                path: "berth shim-exec".into(),
                source,
            })?;
            let (out, err) = (child.stdout.take(), child.stderr.take());
            let run = async {
                let (out, err) = tokio::join!(read_capped(out), read_capped(err));
                (child.wait().await, out, err)
            };
            match tokio::time::timeout(hc.timeout(), run).await {
                Ok((status, mut out, err)) => {
                    out.extend_from_slice(&err);
                    out.truncate(MAX_OUTPUT);
                    let code = status.ok().and_then(|s| s.code()).map_or(-1, i64::from);
                    Ok((code, String::from_utf8_lossy(&out).into_owned()))
                }
                // The child is killed when dropped.
                Err(_) => Ok((-1, format!("Health check exceeded timeout ({:?})", hc.timeout()))),
            }
        }
        .await;
        self.exec_forget(&id);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_as_dockerd_merges() {
        let image = json!({"Test": ["CMD-SHELL", "curl -f localhost"], "Interval": 10_000_000_000i64, "Retries": 5});
        let hc = Healthcheck::resolve(None, Some(&image)).unwrap().unwrap();
        assert_eq!(hc.argv(), ["/bin/sh", "-c", "curl -f localhost"]);
        assert_eq!(
            (hc.interval(), hc.retries(), hc.timeout()),
            (Duration::from_secs(10), 5, DEFAULT_TIMEOUT)
        );
        // The request's fields win; unset ones come from the image.
        let req = json!({"Test": ["CMD", "true"], "Interval": 0, "Timeout": 2_000_000_000i64});
        let hc = Healthcheck::resolve(Some(&req), Some(&image)).unwrap().unwrap();
        assert_eq!(hc.argv(), ["true"]);
        assert_eq!(
            (hc.interval(), hc.timeout(), hc.retries()),
            (Duration::from_secs(10), Duration::from_secs(2), 5)
        );
        // Only the interval asked for: the image's test.
        let hc = Healthcheck::resolve(Some(&json!({"Interval": 1_000_000_000i64})), Some(&image))
            .unwrap()
            .unwrap();
        assert_eq!(hc.test[0], "CMD-SHELL");
        assert_eq!(hc.to_json()["Interval"], 1_000_000_000i64);
        // NONE turns the image's off.
        assert!(
            Healthcheck::resolve(Some(&json!({"Test": ["NONE"]})), Some(&image))
                .unwrap()
                .is_none()
        );
        assert!(Healthcheck::resolve(None, None).unwrap().is_none());
        for (bad, why) in [
            (json!({"Test": ["SHELL", "x"]}), "unknown Healthcheck.Test type"),
            (json!({"Test": ["CMD"]}), "has no command"),
            (
                json!({"Test": ["CMD", "true"], "Interval": 5}),
                "cannot be less than 1ms",
            ),
            (json!({"Test": ["CMD", "true"], "Retries": -1}), "cannot be negative"),
        ] {
            let e = Healthcheck::resolve(Some(&bad), None).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn status_follows_probes() {
        let probe = |code| Probe {
            start: String::new(),
            end: String::new(),
            exit_code: code,
            output: String::new(),
        };
        let mut h = Health::starting();
        // Failures in the start period do not count.
        assert_eq!(h.record(probe(1), 2, true), None);
        assert_eq!((h.status, h.failing_streak), ("starting", 0));
        assert_eq!(h.record(probe(0), 2, false), Some("healthy"));
        assert_eq!(h.record(probe(1), 2, false), None);
        assert_eq!(h.failing_streak, 1);
        assert_eq!(h.record(probe(1), 2, false), Some("unhealthy"));
        assert_eq!(h.record(probe(0), 2, false), Some("healthy"));
        for _ in 0..10 {
            h.record(probe(0), 2, false);
        }
        assert_eq!(h.log.len(), LOG_ENTRIES);
        assert_eq!(h.to_json()["FailingStreak"], 0);
    }
}
