//! The filters every `…/prune` endpoint shares: `label`, `label!` and `until`, read as
//! dockerd reads them.

use std::collections::BTreeMap;

use crate::error::Error;

/// Which objects a prune may remove.
pub(super) struct PruneFilter {
    labels: Vec<String>,
    not_labels: Vec<String>,
    /// Seconds since the epoch: only objects created before it.
    until: Option<f64>,
}

impl PruneFilter {
    /// From `filters` as `Query::filters` parsed them (the caller limits the names).
    pub(super) fn new(filters: &BTreeMap<String, Vec<String>>) -> Result<PruneFilter, Error> {
        let until = match filters.get("until").map(Vec::as_slice) {
            None | Some([]) => None,
            Some([one]) => Some(until(one, now())?),
            Some(_) => {
                return Err(Error::InvalidQuery {
                    name: "filters",
                    value: "until".to_owned(),
                    reason: "until takes one value",
                });
            }
        };
        Ok(PruneFilter {
            labels: filters.get("label").cloned().unwrap_or_default(),
            not_labels: filters.get("label!").cloned().unwrap_or_default(),
            until,
        })
    }

    /// Whether an object with these labels, created at `created` (seconds since the epoch),
    /// is one to remove.
    pub(super) fn chosen(&self, labels: &BTreeMap<String, String>, created: f64) -> bool {
        super::volumes::labels_match(&self.labels, labels)
            && (self.not_labels.is_empty() || !super::volumes::labels_match(&self.not_labels, labels))
            && self.until.is_none_or(|u| created < u)
    }
}

pub(super) fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Seconds since the epoch of an RFC 3339 time (fractions kept); 0 when it does not parse.
pub(super) fn rfc3339_secs(t: &str) -> f64 {
    time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
        .map(|t| t.unix_timestamp_nanos() as f64 / 1e9)
        .unwrap_or(0.0)
}

/// moby's `timetypes.GetTimestamp`, as prune's `until` uses it: a Go duration back from
/// `now` (`24h`, `90m`, `1h30m`), seconds since the epoch (`1700000000[.5]`), an RFC 3339
/// time, or a date and time without a zone (`2026-11-24T10:00:00`, `2026-11-24`) in UTC.
pub(super) fn until(value: &str, now: f64) -> Result<f64, Error> {
    let bad = || Error::InvalidQuery {
        name: "until",
        value: value.to_owned(),
        reason: "expected a duration (24h, 1h30m), seconds since the epoch, or a date and time (2026-11-24T10:00:00Z)",
    };
    if let Some(d) = go_duration(value) {
        return Ok(now - d);
    }
    if let Ok(secs) = value.parse::<f64>() {
        return Ok(secs);
    }
    use time::format_description::well_known::Rfc3339;
    if let Ok(t) = time::OffsetDateTime::parse(value, &Rfc3339) {
        return Ok(t.unix_timestamp_nanos() as f64 / 1e9);
    }
    let formats = [
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]"),
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]"),
    ];
    for f in formats {
        if let Ok(t) = time::PrimitiveDateTime::parse(value, &f) {
            return Ok(t.assume_utc().unix_timestamp() as f64);
        }
    }
    let date = time::macros::format_description!("[year]-[month]-[day]");
    if let Ok(d) = time::Date::parse(value, &date) {
        return Ok(d.midnight().assume_utc().unix_timestamp() as f64);
    }
    Err(bad())
}

/// Go's `time.ParseDuration`, in seconds: `1h30m`, `10s`, `1.5h`, `300ms`; one unit at least.
fn go_duration(s: &str) -> Option<f64> {
    let (sign, mut rest) = match s.strip_prefix('-') {
        Some(r) => (-1.0, r),
        None => (1.0, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest.is_empty() {
        return None;
    }
    let mut total = 0.0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let n: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += n * scale;
        rest = &rest[unit_len..];
    }
    Some(sign * total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn until_reads_what_moby_reads() {
        let now = 1_800_000_000.0;
        assert_eq!(until("24h", now).unwrap(), now - 86_400.0);
        assert_eq!(until("1h30m", now).unwrap(), now - 5_400.0);
        assert_eq!(until("1.5h", now).unwrap(), now - 5_400.0);
        assert_eq!(until("300ms", now).unwrap(), now - 0.3);
        assert_eq!(until("1700000000", now).unwrap(), 1_700_000_000.0);
        assert_eq!(until("1700000000.5", now).unwrap(), 1_700_000_000.5);
        assert_eq!(until("2023-11-14T22:13:20Z", now).unwrap(), 1_700_000_000.0);
        assert_eq!(until("2023-11-14T23:13:20+01:00", now).unwrap(), 1_700_000_000.0);
        assert_eq!(until("2023-11-14T22:13:20", now).unwrap(), 1_700_000_000.0);
        assert_eq!(until("2023-11-14", now).unwrap(), 1_699_920_000.0);
        for bad in ["", "yesterday", "10x", "h", "2023-13-45"] {
            assert!(until(bad, now).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn chosen_by_labels_and_age() {
        let filters: BTreeMap<String, Vec<String>> = [
            ("label".to_owned(), vec!["site=t1".to_owned()]),
            ("label!".to_owned(), vec!["keep".to_owned()]),
            ("until".to_owned(), vec!["1700000000".to_owned()]),
        ]
        .into();
        let f = PruneFilter::new(&filters).unwrap();
        let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
        };
        assert!(f.chosen(&labels(&[("site", "t1")]), 1_600_000_000.0));
        assert!(!f.chosen(&labels(&[("site", "t1")]), 1_700_000_001.0), "too new");
        assert!(!f.chosen(&labels(&[("site", "t2")]), 1_600_000_000.0), "other label");
        assert!(
            !f.chosen(&labels(&[("site", "t1"), ("keep", "")]), 1_600_000_000.0),
            "label!"
        );
        assert!(PruneFilter::new(&[("until".to_owned(), vec!["x".to_owned()])].into()).is_err());
    }
}
