//! `berth images`: `GET /images/json`, as docker's table, JSON lines or bare IDs.

use anyhow::Context;
use clap::{Args, ValueEnum};
use serde_json::Value;

use crate::client::{Client, list_query};
use crate::printer::Printer;

#[derive(Args)]
pub(crate) struct ImagesArgs {
    /// Show all images (intermediate ones too).
    #[arg(short, long)]
    all: bool,
    /// Filter, as docker: reference=PATTERN, dangling=true|false, label=KEY[=VALUE]; repeatable.
    #[arg(short, long = "filter", value_name = "KEY=VALUE")]
    filters: Vec<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    /// Only the image IDs.
    #[arg(short, long)]
    quiet: bool,
    /// Only images whose name matches REPOSITORY[:TAG].
    #[arg(value_name = "REPOSITORY[:TAG]")]
    reference: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    /// REPOSITORY TAG IMAGE ID CREATED SIZE, as docker prints it.
    Table,
    /// The API's image objects, one per line.
    Json,
}

pub(crate) async fn run(args: ImagesArgs, client: &Client, printer: &Printer) -> anyhow::Result<()> {
    let reference: Vec<(&str, &str)> = args.reference.iter().map(|r| ("reference", r.as_str())).collect();
    let q = list_query(args.all, &args.filters, &reference)?;
    let list = client
        .get_json(&format!("/images/json{q}"))
        .await
        .context("failed to list images")?;
    let images = list.as_array().map(Vec::as_slice).unwrap_or_default();
    if args.quiet {
        let mut seen = std::collections::HashSet::new();
        for image in images {
            let id = short_id(image["Id"].as_str().unwrap_or(""));
            if seen.insert(id.clone()) {
                printer.line(&id);
            }
        }
        return Ok(());
    }
    match args.format {
        Format::Json => {
            for image in images {
                printer.line(&image.to_string());
            }
        }
        Format::Table => {
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            let mut rows = vec![["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"].map(str::to_owned)];
            for image in images {
                rows.extend(table_rows(image, now));
            }
            for line in table(&rows) {
                printer.line(&line);
            }
        }
    }
    Ok(())
}

/// One row per tag (`<none> <none>` for an untagged image).
fn table_rows(image: &Value, now: i64) -> Vec<[String; 5]> {
    let id = short_id(image["Id"].as_str().unwrap_or(""));
    let created = image["Created"].as_i64().map(|c| ago(now - c)).unwrap_or_default();
    let size = image["Size"].as_u64().map(human_size).unwrap_or_default();
    let tags: Vec<&str> = image["RepoTags"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let names: Vec<(String, String)> = if tags.is_empty() {
        vec![("<none>".into(), "<none>".into())]
    } else {
        tags.iter()
            .map(|t| match t.rsplit_once(':').filter(|(_, tag)| !tag.contains('/')) {
                Some((repo, tag)) => (repo.to_owned(), tag.to_owned()),
                None => ((*t).to_owned(), "<none>".to_owned()),
            })
            .collect()
    };
    names
        .into_iter()
        .map(|(repo, tag)| [repo, tag, id.clone(), created.clone(), size.clone()])
        .collect()
}

/// Columns padded to their widest cell, three spaces apart (as docker's tabwriter).
pub(crate) fn table<const N: usize>(rows: &[[String; N]]) -> Vec<String> {
    let mut widths = [0; N];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    rows.iter()
        .map(|row| {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    line.push_str(&format!("{cell:<w$}   ", w = widths[i]));
                }
            }
            line
        })
        .collect()
}

/// The 12 hex digits docker shows.
pub(crate) fn short_id(id: &str) -> String {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    hex.chars().take(12).collect()
}

/// Docker's `units.HumanDuration` plus " ago".
pub(crate) fn ago(secs: i64) -> String {
    let s = secs.max(0);
    let (m, h, d) = (s / 60, s / 3600, s / 86400);
    let text = match () {
        _ if s < 1 => "Less than a second".to_owned(),
        _ if s == 1 => "1 second".to_owned(),
        _ if s < 60 => format!("{s} seconds"),
        _ if m == 1 => "About a minute".to_owned(),
        _ if m < 60 => format!("{m} minutes"),
        _ if (s as f64 / 3600.0).round() == 1.0 => "About an hour".to_owned(),
        _ if h < 48 => format!("{h} hours"),
        _ if h < 24 * 7 * 2 => format!("{d} days"),
        _ if h < 24 * 30 * 2 => format!("{} weeks", d / 7),
        _ if h < 24 * 365 * 2 => format!("{} months", d / 30),
        _ => format!("{} years", d / 365),
    };
    format!("{text} ago")
}

/// Docker's `units.HumanSizeWithPrecision(size, 3)`: decimal units, three significant digits.
pub(crate) fn human_size(size: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut v = size as f64;
    let mut i = 0;
    while v >= 1000.0 && i + 1 < units.len() {
        v /= 1000.0;
        i += 1;
    }
    let digits = if v < 10.0 {
        2
    } else if v < 100.0 {
        1
    } else {
        0
    };
    let mut s = format!("{v:.digits$}");
    if s.contains('.') {
        s = s.trim_end_matches('0').trim_end_matches('.').to_owned();
    }
    format!("{s}{}", units[i])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sizes_durations_and_rows() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(4_261_234), "4.26MB");
        assert_eq!(human_size(12_300_000), "12.3MB");
        assert_eq!(human_size(1_200), "1.2kB");
        assert_eq!(human_size(123_456_789), "123MB");
        assert_eq!(ago(0), "Less than a second ago");
        assert_eq!(ago(90), "About a minute ago");
        assert_eq!(ago(3 * 3600), "3 hours ago");
        assert_eq!(ago(3 * 86400), "3 days ago");
        let image = json!({"Id": "sha256:0123456789abcdef", "RepoTags": ["myreg:5000/sl6/wn:v1", "busybox:latest"], "Created": 100, "Size": 1000});
        let rows = table_rows(&image, 105);
        assert_eq!(
            rows[0][..3],
            ["myreg:5000/sl6/wn", "v1", "0123456789ab"].map(str::to_owned)
        );
        assert_eq!(rows[1][..2], ["busybox", "latest"].map(str::to_owned));
        assert_eq!(rows[1][3..], ["5 seconds ago", "1kB"].map(str::to_owned));
        let untagged = table_rows(&json!({"Id": "sha256:ab", "RepoTags": []}), 0);
        assert_eq!(untagged[0][..2], ["<none>", "<none>"].map(str::to_owned));
    }
}
