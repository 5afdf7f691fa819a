//! The container log: JSON lines as dockerd's json-file driver writes them
//! (`{"log":"hi\n","stream":"stdout","time":"2026-…Z"}`), capped in size and rotated.
//!
//! ```text
//! <container dir>/
//!   <id>-json.log       written by the shim only; appended
//!   <id>-json.log.1 …   older files after rotation (.1 newest), at most max-file - 1
//! ```
//!
//! The engine reads; it follows a log across rotation by noticing that the path names a
//! new file once it has read the old one to its end.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The json-file driver's default cap: 10 MB per file, 3 files.
pub const DEFAULT_MAX_SIZE: u64 = 10 * 1024 * 1024;
/// See [`DEFAULT_MAX_SIZE`].
pub const DEFAULT_MAX_FILE: u32 = 3;
/// dockerd splits lines longer than this into several entries.
const MAX_LINE: usize = 16 * 1024;

/// Size cap and rotation of one container's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLimits {
    /// Bytes per file before rotation.
    pub max_size: u64,
    /// Files kept, the current one included (at least 1).
    pub max_file: u32,
}

impl Default for LogLimits {
    fn default() -> Self {
        LogLimits {
            max_size: DEFAULT_MAX_SIZE,
            max_file: DEFAULT_MAX_FILE,
        }
    }
}

/// Parses docker's `--log-opt max-size` values: `10m`, `512k`, `1g`, plain bytes.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => {
            let unit = s[i..].to_ascii_lowercase();
            let mult: u64 = match unit.trim_end_matches('b').trim_end_matches('i') {
                "" => 1,
                "k" => 1 << 10,
                "m" => 1 << 20,
                "g" => 1 << 30,
                _ => return None,
            };
            (&s[..i], mult)
        }
        None => (s, 1),
    };
    let n: f64 = num.trim().parse().ok()?;
    if n < 0.0 {
        return None;
    }
    Some((n * mult as f64) as u64)
}

/// One log line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    pub log: String,
    /// `stdout` or `stderr`.
    pub stream: String,
    /// RFC 3339 with nanoseconds, UTC.
    pub time: String,
}

/// The current time as the log writes it.
pub fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    let fmt = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:9]Z");
    now.format(&fmt).unwrap_or_default()
}

/// Appends entries to a log file, rotating it when it passes the cap.
pub(crate) struct LogWriter {
    path: PathBuf,
    file: File,
    size: u64,
    limits: LogLimits,
}

impl LogWriter {
    pub(crate) fn open(path: &Path, limits: LogLimits) -> io::Result<LogWriter> {
        let file = File::options().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(LogWriter {
            path: path.to_path_buf(),
            file,
            size,
            limits,
        })
    }

    /// Writes `data` from `stream` as one entry per line (lines longer than 16 KiB are
    /// split); `data` must end at a line end unless it is a final partial line.
    pub(crate) fn write(&mut self, stream: &str, data: &[u8]) -> io::Result<()> {
        let time = now_rfc3339();
        let mut out = Vec::new();
        for chunk in data.split_inclusive(|&b| b == b'\n') {
            for piece in chunk.chunks(MAX_LINE) {
                let entry = LogEntry {
                    log: String::from_utf8_lossy(piece).into_owned(),
                    stream: stream.to_owned(),
                    time: time.clone(),
                };
                serde_json::to_writer(&mut out, &entry).map_err(io::Error::other)?;
                out.push(b'\n');
            }
        }
        if self.size > 0 && self.size + out.len() as u64 > self.limits.max_size {
            self.rotate()?;
        }
        self.file.write_all(&out)?;
        self.size += out.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        let keep = self.limits.max_file.max(1);
        if keep == 1 {
            self.file.set_len(0)?;
            self.size = 0;
            return Ok(());
        }
        for n in (1..keep - 1).rev() {
            let from = rotated(&self.path, n);
            if from.exists() {
                std::fs::rename(&from, rotated(&self.path, n + 1))?;
            }
        }
        std::fs::rename(&self.path, rotated(&self.path, 1))?;
        self.file = File::options().create(true).append(true).open(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

/// Every entry of the log, oldest first, rotated files included.
pub fn read_all(path: &Path) -> io::Result<Vec<LogEntry>> {
    read_with_cursor(path).map(|(entries, _)| entries)
}

/// Every entry of the log, oldest first, and a cursor just past the last one read: each line
/// reaches a reader that takes the history and then follows exactly once.
///
/// The live file is opened first and read through that handle; rotated files that are the
/// same file (a rotation in between) are skipped.
pub fn read_with_cursor(path: &Path) -> io::Result<(Vec<LogEntry>, LogCursor)> {
    let live = match File::open(path) {
        Ok(f) => Some(f),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    let live_id = match &live {
        Some(f) => {
            let m = f.metadata()?;
            Some((m.dev(), m.ino()))
        }
        None => None,
    };
    let mut out = Vec::new();
    for n in (1..100).rev() {
        let f = match File::open(rotated(path, n)) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let m = f.metadata()?;
        if Some((m.dev(), m.ino())) == live_id {
            continue;
        }
        for line in BufReader::new(f).lines() {
            if let Ok(e) = serde_json::from_str(&line?) {
                out.push(e);
            }
        }
    }
    let mut cursor = LogCursor {
        path: path.to_path_buf(),
        file: live,
        pos: 0,
        partial: Vec::new(),
    };
    if cursor.file.is_some() {
        out.extend(cursor.read_new()?);
    }
    Ok((out, cursor))
}

/// Reads a log as it grows, across rotations.
#[derive(Debug)]
pub struct LogCursor {
    path: PathBuf,
    file: Option<File>,
    pos: u64,
    partial: Vec<u8>,
}

impl LogCursor {
    /// From the current end of the log (what is written from now on).
    pub fn at_end(path: &Path) -> LogCursor {
        let file = File::open(path).ok();
        let pos = file.as_ref().and_then(|f| f.metadata().ok()).map_or(0, |m| m.len());
        LogCursor {
            path: path.to_path_buf(),
            file,
            pos,
            partial: Vec::new(),
        }
    }

    /// The entries written since the last call (complete lines only).
    pub fn read_new(&mut self) -> io::Result<Vec<LogEntry>> {
        let mut out = Vec::new();
        loop {
            if self.file.is_none() {
                match File::open(&self.path) {
                    Ok(f) => {
                        self.file = Some(f);
                        self.pos = 0;
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
                    Err(e) => return Err(e),
                }
            }
            let file = self.file.as_mut().expect("opened above");
            file.seek(SeekFrom::Start(self.pos))?;
            let mut buf = Vec::new();
            let n = file.read_to_end(&mut buf)? as u64;
            self.pos += n;
            self.partial.extend_from_slice(&buf);
            while let Some(i) = self.partial.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.partial.drain(..=i).collect();
                if let Ok(e) = serde_json::from_slice(&line) {
                    out.push(e);
                }
            }
            // Rotated or truncated: the path now names another file, or ours shrank.
            let current = std::fs::metadata(&self.path).ok();
            let ours = file.metadata()?;
            match current {
                Some(m) if m.ino() != ours.ino() || m.dev() != ours.dev() => {
                    self.file = None;
                    self.partial.clear();
                    continue;
                }
                Some(m) if m.len() < self.pos => {
                    self.pos = 0;
                    self.partial.clear();
                    continue;
                }
                _ => return Ok(out),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("10m"), Some(10 << 20));
        assert_eq!(parse_size("512k"), Some(512 << 10));
        assert_eq!(parse_size("1g"), Some(1 << 30));
        assert_eq!(parse_size("100"), Some(100));
        assert_eq!(parse_size("1.5kb"), Some(1536));
        assert_eq!(parse_size("x"), None);
        assert_eq!(parse_size("10q"), None);
    }

    #[test]
    fn writes_rotates_and_follows() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("c-json.log");
        let limits = LogLimits {
            max_size: 200,
            max_file: 3,
        };
        let mut w = LogWriter::open(&path, limits).unwrap();
        let mut cursor = LogCursor::at_end(&path);
        w.write("stdout", b"hi\n").unwrap();
        let got = cursor.read_new().unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].log, "hi\n");
        assert_eq!(got[0].stream, "stdout");
        for i in 0..20 {
            w.write("stderr", format!("line {i}\n").as_bytes()).unwrap();
            let got = cursor.read_new().unwrap();
            assert_eq!(got.len(), 1, "line {i}");
            assert_eq!(got[0].log, format!("line {i}\n"));
        }
        assert!(rotated(&path, 1).exists() && rotated(&path, 2).exists());
        assert!(!rotated(&path, 3).exists(), "max-file 3 keeps 3 files");
        for p in [path.clone(), rotated(&path, 1), rotated(&path, 2)] {
            assert!(std::fs::metadata(&p).unwrap().len() <= 200);
        }
        let all = read_all(&path).unwrap();
        assert_eq!(all.last().unwrap().log, "line 19\n");
        let logs: Vec<&str> = all.iter().map(|e| e.log.as_str()).collect();
        let mut sorted = logs.clone();
        sorted.sort_by_key(|l| l.trim_start_matches("line ").trim().parse::<u32>().unwrap_or(0));
        assert_eq!(logs, sorted, "oldest first");
    }

    #[test]
    fn long_lines_split() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("l.log");
        let mut w = LogWriter::open(&path, LogLimits::default()).unwrap();
        w.write("stdout", &vec![b'a'; MAX_LINE + 10]).unwrap();
        let all = read_all(&path).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].log.len(), MAX_LINE);
    }
}
