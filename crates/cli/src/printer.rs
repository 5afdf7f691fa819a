//! The one place user output is written: result lines on stdout, errors on stderr, and the
//! progress of pulls, pushes and transfers (indicatif bars on a terminal, plain lines or
//! nothing when piped).

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::Value;

use crate::client::stream_error;

pub(crate) struct Printer {
    stdout_tty: bool,
    stderr_tty: bool,
}

impl Printer {
    pub(crate) fn new() -> Printer {
        Printer {
            stdout_tty: std::io::stdout().is_terminal(),
            stderr_tty: std::io::stderr().is_terminal(),
        }
    }

    /// One line of a command's result.
    pub(crate) fn line(&self, s: &str) {
        let _ = writeln!(std::io::stdout().lock(), "{s}");
    }

    /// Text as it is (it carries its own newlines).
    pub(crate) fn text(&self, s: &str) {
        let _ = write!(std::io::stdout().lock(), "{s}");
    }

    pub(crate) fn stdout_is_terminal(&self) -> bool {
        self.stdout_tty
    }

    /// A remark on stderr that is not the command's result (docker's "Unable to find image").
    pub(crate) fn note(&self, s: &str) {
        let _ = writeln!(std::io::stderr().lock(), "{s}");
    }

    /// A failure with its chain of causes: what failed, on what, and why.
    pub(crate) fn error(&self, e: &anyhow::Error) {
        let mut out = std::io::stderr().lock();
        let _ = write!(out, "berth: error: {e}");
        for cause in e.chain().skip(1) {
            let _ = write!(out, ": {cause}");
        }
        let _ = writeln!(out);
    }

    /// A bar of bytes sent or received on stderr, drawn only on a terminal; `total` when known.
    pub(crate) fn bytes(&self, what: &str, total: Option<u64>) -> ProgressBar {
        if !self.stderr_tty {
            return ProgressBar::hidden();
        }
        let bar = match total {
            Some(t) => ProgressBar::with_draw_target(Some(t), ProgressDrawTarget::stderr()).with_style(
                ProgressStyle::with_template("{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} {eta}")
                    .expect("valid template")
                    .progress_chars("=> "),
            ),
            None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()).with_style(
                ProgressStyle::with_template("{spinner} {msg} {bytes} {bytes_per_sec}").expect("valid template"),
            ),
        };
        bar.enable_steady_tick(Duration::from_millis(120));
        bar.with_message(what.to_owned())
    }

    /// The display of a pull's or push's JSON-lines progress.
    pub(crate) fn stream(&self) -> StreamDisplay<'_> {
        StreamDisplay {
            printer: self,
            multi: self
                .stdout_tty
                .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stdout())),
            bars: HashMap::new(),
            last: HashMap::new(),
            after: Vec::new(),
        }
    }
}

/// Docker's progress messages shown as they come: on a terminal one bar per layer (from
/// `progressDetail` current/total); piped, one `ID: Status` line whenever a layer's status
/// changes, and every message without an ID as it is.
pub(crate) struct StreamDisplay<'a> {
    printer: &'a Printer,
    multi: Option<MultiProgress>,
    bars: HashMap<String, ProgressBar>,
    /// The last status printed per ID (piped output).
    last: HashMap<String, String>,
    /// Lines without an ID that came once bars were drawn (`Digest:`, `Status:`): printed
    /// below the bars at the end, where docker puts them.
    after: Vec<String>,
}

impl StreamDisplay<'_> {
    /// Shows one message; the error a message carries is returned.
    pub(crate) fn show(&mut self, v: &Value) -> anyhow::Result<()> {
        if let Some(message) = stream_error(v) {
            self.finish();
            anyhow::bail!(message);
        }
        let id = v["id"].as_str().unwrap_or("");
        let status = v["status"].as_str().unwrap_or("");
        if let Some(text) = v["stream"].as_str() {
            self.println(text.trim_end_matches('\n'));
            return Ok(());
        }
        if status.is_empty() {
            return Ok(());
        }
        if id.is_empty() {
            self.println(status);
            return Ok(());
        }
        match &self.multi {
            Some(multi) => {
                let bar = self
                    .bars
                    .entry(id.to_owned())
                    .or_insert_with(|| multi.add(ProgressBar::no_length().with_style(layer_style(false))));
                let detail = &v["progressDetail"];
                match (detail["current"].as_u64(), detail["total"].as_u64()) {
                    (Some(current), Some(total)) if total > 0 => {
                        bar.set_style(layer_style(true));
                        bar.set_length(total);
                        bar.set_position(current);
                    }
                    // A bar only while bytes move, as docker draws it.
                    _ => bar.set_style(layer_style(false)),
                }
                bar.set_prefix(id.to_owned());
                bar.set_message(status.to_owned());
            }
            None => {
                if self.last.get(id).map(String::as_str) != Some(status) {
                    self.printer.line(&format!("{id}: {status}"));
                    self.last.insert(id.to_owned(), status.to_owned());
                }
            }
        }
        Ok(())
    }

    fn println(&mut self, s: &str) {
        match &self.multi {
            Some(_) if !self.bars.is_empty() => self.after.push(s.to_owned()),
            Some(multi) => multi.suspend(|| self.printer.line(s)),
            None => self.printer.line(s),
        }
    }

    /// Leaves every bar as it stands on the screen, then prints the lines held back.
    pub(crate) fn finish(&mut self) {
        for bar in self.bars.values() {
            bar.abandon();
        }
        if !self.bars.is_empty() {
            // indicatif leaves the cursor at the end of the last bar.
            self.printer.text("\n");
        }
        for line in self.after.drain(..) {
            self.printer.line(&line);
        }
    }
}

/// A layer's line: `ID: Status`, with a bar of bytes while it moves.
fn layer_style(with_bar: bool) -> ProgressStyle {
    let template = if with_bar {
        "{prefix}: {msg:<20} {wide_bar} {bytes}/{total_bytes}"
    } else {
        "{prefix}: {msg}"
    };
    ProgressStyle::with_template(template)
        .expect("valid template")
        .progress_chars("=> ")
}
