//! The one place user output is written: result lines on stdout, errors on stderr.

use std::io::Write;

pub(crate) struct Printer;

impl Printer {
    pub(crate) fn new() -> Printer {
        Printer
    }

    /// One line of a command's result.
    pub(crate) fn line(&self, s: &str) {
        let _ = writeln!(std::io::stdout().lock(), "{s}");
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
}
