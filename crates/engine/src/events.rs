//! The daemon's events: what `GET /events` streams. Handlers [`publish`](Events::publish) an
//! [`Event`] once the thing it reports has happened; every open stream gets it, and the last
//! [`HISTORY`] events stay in memory for `since` (dockerd keeps 256 too; nothing is written to
//! disk, so a restarted daemon starts with an empty history, as dockerd does).
//!
//! Events are shaped as dockerd's `events.Message`, with the legacy `status`/`id` fields it
//! still fills for image events (`from` exists only for container events). [`Filter`] is
//! moby's `daemon/events/filter.go` for the keys an image event can match.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use berth_image::{Image, familiar, split_tag};
use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::error::Error;

/// Events kept for `since`.
pub(crate) const HISTORY: usize = 256;
/// Events a slow stream may fall behind by before it skips some (with a warning).
const BACKLOG: usize = 1024;

/// One event, as `/events` sends it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Event {
    /// `Type`: `image`, `container` or `volume`.
    pub(crate) kind: &'static str,
    /// `Action`: pull, push, tag, untag, delete, import, load, save, prune.
    pub(crate) action: &'static str,
    /// `Actor.ID`: an image ID, or the reference pulled or pushed.
    pub(crate) id: String,
    /// `Actor.Attributes`: `name`, and the image's labels while the image exists.
    pub(crate) attributes: BTreeMap<String, String>,
    /// Nanoseconds since the epoch.
    pub(crate) time_nano: i64,
}

impl Event {
    /// An image event as dockerd's `LogImageEvent(id, name, action)` makes it: the image's
    /// labels (when it still exists) and `name` as attributes.
    pub(crate) fn image(
        action: &'static str,
        id: impl Into<String>,
        name: impl Into<String>,
        image: Option<&Image>,
    ) -> Event {
        let mut attributes = image
            .and_then(|i| i.record.config.config.labels.clone())
            .unwrap_or_default();
        attributes.insert("name".to_owned(), name.into());
        Event {
            kind: "image",
            action,
            id: id.into(),
            attributes,
            time_nano: now_nanos(),
        }
    }

    /// A container event: `attributes` holds `image`, `name`, the labels and any extra
    /// (`exitCode`, `signal`, ...), as dockerd's `LogContainerEventWithAttributes`.
    pub(crate) fn container(
        action: &'static str,
        id: impl Into<String>,
        attributes: BTreeMap<String, String>,
    ) -> Event {
        Event {
            kind: "container",
            action,
            id: id.into(),
            attributes,
            time_nano: now_nanos(),
        }
    }

    /// A volume event (`create`, `destroy`, `mount`, `unmount`), as dockerd's
    /// `LogVolumeEvent`: the volume's name is the actor.
    pub(crate) fn volume(action: &'static str, name: impl Into<String>, attributes: BTreeMap<String, String>) -> Event {
        Event {
            kind: "volume",
            action,
            id: name.into(),
            attributes,
            time_nano: now_nanos(),
        }
    }

    /// A network event: `name`, `type` (the driver) and, for connect and disconnect,
    /// `container`.
    pub(crate) fn network(action: &'static str, id: impl Into<String>, attributes: BTreeMap<String, String>) -> Event {
        Event {
            kind: "network",
            action,
            id: id.into(),
            attributes,
            time_nano: now_nanos(),
        }
    }

    /// dockerd's `prune` event: no actor ID, the bytes reclaimed as an attribute.
    pub(crate) fn image_prune(reclaimed: u64) -> Event {
        Event::prune("image", reclaimed)
    }

    /// A `prune` event of `kind` (`image`, `volume`).
    pub(crate) fn prune(kind: &'static str, reclaimed: u64) -> Event {
        Event {
            kind,
            action: "prune",
            id: String::new(),
            attributes: BTreeMap::from([("reclaimed".to_owned(), reclaimed.to_string())]),
            time_nano: now_nanos(),
        }
    }

    /// The JSON object, in dockerd's field names.
    pub(crate) fn to_json(&self) -> Value {
        let mut v = json!({
            "Type": self.kind,
            "Action": self.action,
            "Actor": { "ID": self.id, "Attributes": self.attributes },
            "scope": "local",
            "time": self.time_nano.div_euclid(1_000_000_000),
            "timeNano": self.time_nano,
        });
        // The deprecated fields dockerd still fills for container and image events.
        if !self.id.is_empty() && matches!(self.kind, "container" | "image") {
            v["status"] = json!(self.action);
            v["id"] = json!(self.id);
        }
        if self.kind == "container"
            && let Some(image) = self.attributes.get("image")
        {
            v["from"] = json!(image);
        }
        v
    }
}

fn now_nanos() -> i64 {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// Nanoseconds since the epoch of `t`.
pub(crate) fn nanos(t: SystemTime) -> i64 {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// The broadcaster and the recent history.
pub(crate) struct Events {
    history: Mutex<VecDeque<Arc<Event>>>,
    tx: broadcast::Sender<Arc<Event>>,
}

impl Default for Events {
    fn default() -> Self {
        Events::new()
    }
}

impl Events {
    pub(crate) fn new() -> Events {
        Events {
            history: Mutex::new(VecDeque::with_capacity(HISTORY)),
            tx: broadcast::channel(BACKLOG).0,
        }
    }

    /// Records `event` and sends it to every open stream.
    pub(crate) fn publish(&self, event: Event) {
        tracing::debug!(kind = event.kind, action = event.action, actor = %event.id, "event");
        let event = Arc::new(event);
        // One lock for both, so a subscriber sees each event exactly once: in its history
        // snapshot or on its receiver.
        let mut history = self.history.lock().unwrap_or_else(|e| e.into_inner());
        if history.len() == HISTORY {
            history.pop_front();
        }
        history.push_back(Arc::clone(&event));
        // No receiver is not an error: nobody is listening.
        let _ = self.tx.send(event);
    }

    /// The events recorded so far, oldest first, and a receiver for every later one.
    pub(crate) fn subscribe(&self) -> (Vec<Arc<Event>>, broadcast::Receiver<Arc<Event>>) {
        let history = self.history.lock().unwrap_or_else(|e| e.into_inner());
        (history.iter().cloned().collect(), self.tx.subscribe())
    }
}

/// Filter keys naming another kind of actor; an image event matches them only through its
/// ID or `name` (moby's `fuzzyMatchName`).
const ACTOR_KEYS: &[&str] = &[
    "config",
    "container",
    "daemon",
    "network",
    "node",
    "plugin",
    "secret",
    "service",
    "volume",
];

/// The `filters` of `/events`: every key given must match, any of its values may.
#[derive(Debug, Default)]
pub(crate) struct Filter(BTreeMap<String, Vec<String>>);

impl Filter {
    /// Accepts the keys dockerd filters events by; any other is refused (dockerd ignores
    /// it, which turns a typo into "every event").
    pub(crate) fn new(filters: BTreeMap<String, Vec<String>>) -> Result<Filter, Error> {
        for key in filters.keys() {
            if !["type", "event", "image", "label", "scope"].contains(&key.as_str())
                && !ACTOR_KEYS.contains(&key.as_str())
            {
                return Err(Error::InvalidFilter { name: key.clone() });
            }
        }
        Ok(Filter(filters))
    }

    fn values(&self, key: &str) -> &[String] {
        self.0.get(key).map_or(&[], Vec::as_slice)
    }

    /// moby's `ExactMatch`: no values means anything matches.
    fn exact(&self, key: &str, candidates: &[&str]) -> bool {
        let values = self.values(key);
        values.is_empty() || values.iter().any(|v| candidates.contains(&v.as_str()))
    }

    /// moby's `matchEvent`: with `health_status`, `exec_create` or `exec_start` among the
    /// values (whose actions carry a suffix, `health_status: healthy`), values are
    /// prefixes; otherwise exact.
    fn event_matches(&self, action: &str) -> bool {
        let values = self.values("event");
        let fuzzy = values
            .iter()
            .any(|v| ["health_status", "exec_create", "exec_start"].contains(&v.as_str()));
        values.is_empty()
            || values
                .iter()
                .any(|v| action == v || (fuzzy && action.starts_with(v.as_str())))
    }

    pub(crate) fn matches(&self, ev: &Event) -> bool {
        let name = ev.attributes.get("name").map_or("", String::as_str);
        let image_ok = match ev.kind {
            "image" => self.exact("image", &[&ev.id, name, strip_tag(&ev.id), strip_tag(name)]),
            "container" => {
                let image = ev.attributes.get("image").map_or("", String::as_str);
                self.exact("image", &[image, strip_tag(image)])
            }
            _ => self.values("image").is_empty(),
        };
        let labels_ok = self.values("label").iter().all(|l| match l.split_once('=') {
            Some((k, v)) => ev.attributes.get(k).is_some_and(|x| x == v),
            None => ev.attributes.contains_key(l.as_str()),
        });
        let actors_ok = ACTOR_KEYS.iter().all(|key| {
            let values = self.values(key);
            values.is_empty()
                || values
                    .iter()
                    .any(|v| ev.id.starts_with(v.as_str()) || name.starts_with(v.as_str()))
        });
        self.exact("type", &[ev.kind])
            && self.event_matches(ev.action)
            && self.exact("scope", &["local"])
            && image_ok
            && labels_ok
            && actors_ok
    }
}

/// moby's `stripTag`: `busybox:latest` and `busybox@sha256:…` are `busybox`; an ID stays.
fn strip_tag(name: &str) -> &str {
    if name.starts_with("sha256:") {
        return name;
    }
    let name = name.split_once('@').map_or(name, |(n, _)| n);
    familiar(split_tag(name).0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(pairs: &[(&str, &[&str])]) -> Filter {
        Filter::new(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.iter().map(|s| (*s).to_owned()).collect()))
                .collect(),
        )
        .unwrap()
    }

    fn ev(action: &'static str, id: &str, name: &str) -> Event {
        let mut e = Event::image(action, id, name, None);
        e.attributes.insert("site".into(), "lab".into());
        e
    }

    #[test]
    fn shape_is_dockerds() {
        let mut e = ev("pull", "busybox:latest", "busybox");
        e.time_nano = 1_700_000_000_123_456_789;
        assert_eq!(
            e.to_json(),
            json!({
                "status": "pull",
                "id": "busybox:latest",
                "Type": "image",
                "Action": "pull",
                "Actor": { "ID": "busybox:latest", "Attributes": { "name": "busybox", "site": "lab" } },
                "scope": "local",
                "time": 1_700_000_000,
                "timeNano": 1_700_000_000_123_456_789_i64,
            })
        );
        let p = Event::image_prune(42).to_json();
        assert_eq!(p["Actor"], json!({ "ID": "", "Attributes": { "reclaimed": "42" } }));
        assert!(p.get("status").is_none() && p.get("id").is_none(), "{p}");
    }

    #[test]
    fn filters_like_moby() {
        let id = format!("sha256:{}", "a".repeat(64));
        let pull = ev("pull", "127.0.0.1:5000/sl6/wn:1", "127.0.0.1:5000/sl6/wn");
        let tag = ev("tag", &id, "busybox:v1");
        // (filters, event, whether it matches)
        type Case<'a> = (&'a [(&'a str, &'a [&'a str])], &'a Event, bool);
        let table: &[Case<'_>] = &[
            (&[], &pull, true),
            (&[("type", &["image"])], &pull, true),
            (&[("type", &["container"])], &pull, false),
            (&[("event", &["pull", "push"])], &pull, true),
            (&[("event", &["tag"])], &pull, false),
            (&[("image", &["127.0.0.1:5000/sl6/wn"])], &pull, true),
            (&[("image", &["127.0.0.1:5000/sl6/wn:1"])], &pull, true),
            (&[("image", &["127.0.0.1:5000/sl6/wn:2"])], &pull, false),
            (&[("image", &["busybox"])], &tag, true),
            (&[("image", &["busybox:v1"])], &tag, true),
            (&[("image", &[id.as_str()])], &tag, true),
            (&[("image", &["busybox:v2"])], &tag, false),
            (&[("label", &["site"])], &tag, true),
            (&[("label", &["site=lab"])], &tag, true),
            (&[("label", &["site=other"])], &tag, false),
            (&[("container", &["web"])], &tag, false),
            (&[("scope", &["local"])], &tag, true),
            (&[("scope", &["swarm"])], &tag, false),
            (
                &[("type", &["image"]), ("event", &["tag"]), ("image", &["busybox"])],
                &tag,
                true,
            ),
            (
                &[("type", &["image"]), ("event", &["tag"]), ("image", &["nginx"])],
                &tag,
                false,
            ),
        ];
        for (pairs, e, want) in table {
            assert_eq!(filter(pairs).matches(e), *want, "{pairs:?} on {e:?}");
        }
        let bad = Filter::new(BTreeMap::from([("bogus".to_owned(), vec![])])).unwrap_err();
        assert_eq!(bad.to_string(), "invalid filter 'bogus'");
    }

    #[tokio::test]
    async fn history_then_live_each_once() {
        let events = Events::new();
        for i in 0..HISTORY + 10 {
            events.publish(ev("tag", &format!("id{i}"), "x"));
        }
        let (past, mut rx) = events.subscribe();
        assert_eq!(past.len(), HISTORY);
        assert_eq!(past[0].id, "id10");
        events.publish(ev("untag", "live", "x"));
        assert_eq!(rx.recv().await.unwrap().id, "live");
        assert!(rx.try_recv().is_err());
    }
}
