//! The content of the test image's layers and their encoding (tar, optionally gzip), hashed
//! while they are written so a layer is read exactly once.

use std::io::{self, Read, Write};
use std::path::Path;

use anyhow::{Context, Result};
use berth_oci::{Algorithm, Digest, Digester};
use flate2::Compression;
use flate2::write::GzEncoder;
use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};

/// Modification time of every tar entry: fixed so that the same options give the same digests.
pub(super) const MTIME: u64 = 1_700_000_000;
/// `MTIME` in RFC 3339, used for `created` in the image config and its history.
pub(super) const CREATED: &str = "2023-11-14T22:13:20Z";

/// Busybox applets linked into `bin/` (all present in Debian 12's busybox-static).
const APPLETS: &[&str] = &[
    "sh",
    "ash",
    "ls",
    "cat",
    "echo",
    "sleep",
    "true",
    "false",
    "env",
    "id",
    "mkdir",
    "rmdir",
    "rm",
    "cp",
    "mv",
    "ln",
    "touch",
    "chmod",
    "chown",
    "test",
    "[",
    "grep",
    "sed",
    "awk",
    "head",
    "tail",
    "wc",
    "sort",
    "uniq",
    "cut",
    "tr",
    "find",
    "xargs",
    "tee",
    "printf",
    "pwd",
    "hostname",
    "uname",
    "whoami",
    "date",
    "ps",
    "kill",
    "killall",
    "pidof",
    "top",
    "du",
    "df",
    "mount",
    "umount",
    "stat",
    "sync",
    "yes",
    "seq",
    "dd",
    "md5sum",
    "sha1sum",
    "sha256sum",
    "tar",
    "gzip",
    "gunzip",
    "wget",
    "nc",
    "nslookup",
    "ping",
    "ip",
    "ifconfig",
    "route",
    "netstat",
    "vi",
    "less",
    "more",
    "basename",
    "dirname",
    "readlink",
    "realpath",
    "which",
    "timeout",
    "nproc",
    "free",
    "uptime",
    "mktemp",
    "crond",
    "crontab",
    "httpd",
    "diff",
    "cmp",
    "expr",
    "hexdump",
    "od",
];

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
const GROUP: &str = "root:x:0:\nnogroup:x:65534:\n";

/// One layer of the image as it is built: its tar entries, and the history line for the config.
#[derive(Debug, Clone, Copy)]
pub(super) enum LayerSpec {
    /// The busybox root filesystem.
    Rootfs,
    /// Files that the next layer partly deletes.
    Files,
    /// Whiteouts, an opaque directory and relative symlinks.
    Whiteouts,
    /// One file of incompressible random bytes.
    Random { index: usize, bytes: u64, seed: u64 },
}

impl LayerSpec {
    /// The layers every image has, bottom first.
    pub(super) const FIXED: [LayerSpec; 3] = [LayerSpec::Rootfs, LayerSpec::Files, LayerSpec::Whiteouts];

    /// The `created_by` text of this layer's history entry.
    pub(super) fn created_by(&self) -> String {
        match self {
            LayerSpec::Rootfs => "berth-testkit: busybox-static rootfs, /etc/passwd, /etc/group, /tmp".to_owned(),
            LayerSpec::Files => "berth-testkit: files under /data, some deleted by the next layer".to_owned(),
            LayerSpec::Whiteouts => "berth-testkit: whiteout, opaque directory, relative symlinks".to_owned(),
            LayerSpec::Random { index, bytes, .. } => {
                format!("berth-testkit: {bytes} random bytes in /random/{index}.bin")
            }
        }
    }

    /// Random layers are big and incompressible: they go to disk and get no real compression.
    pub(super) fn is_random(&self) -> bool {
        matches!(self, LayerSpec::Random { .. })
    }

    /// Appends this layer's entries to `tar`.
    fn append_to(&self, tar: &mut tar::Builder<&mut dyn Write>, busybox: &[u8]) -> io::Result<()> {
        match *self {
            LayerSpec::Rootfs => {
                dir(tar, "bin", 0o755)?;
                file(tar, "bin/busybox", 0o755, busybox)?;
                for applet in APPLETS {
                    symlink(tar, &format!("bin/{applet}"), "busybox")?;
                }
                dir(tar, "etc", 0o755)?;
                file(tar, "etc/passwd", 0o644, PASSWD.as_bytes())?;
                file(tar, "etc/group", 0o644, GROUP.as_bytes())?;
                dir(tar, "root", 0o700)?;
                dir(tar, "tmp", 0o1777)?;
                Ok(())
            }
            LayerSpec::Files => {
                file(tar, "etc/berth-release", 0o644, b"berth test image\n")?;
                dir(tar, "data", 0o755)?;
                file(tar, "data/keep.txt", 0o644, b"kept\n")?;
                file(
                    tar,
                    "data/remove-me.txt",
                    0o644,
                    b"deleted by a whiteout in the next layer\n",
                )?;
                dir(tar, "data/doomed", 0o755)?;
                file(tar, "data/doomed/a.txt", 0o644, b"a\n")?;
                dir(tar, "data/doomed/sub", 0o755)?;
                file(tar, "data/doomed/sub/b.txt", 0o644, b"b\n")?;
                dir(tar, "data/opaque", 0o755)?;
                file(tar, "data/opaque/old-1.txt", 0o644, b"hidden by the opaque whiteout\n")?;
                file(tar, "data/opaque/old-2.txt", 0o644, b"hidden by the opaque whiteout\n")?;
                Ok(())
            }
            LayerSpec::Whiteouts => {
                dir(tar, "data", 0o755)?;
                file(tar, "data/.wh.remove-me.txt", 0o644, b"")?;
                file(tar, "data/.wh.doomed", 0o644, b"")?;
                dir(tar, "data/opaque", 0o755)?;
                file(tar, "data/opaque/.wh..wh..opq", 0o644, b"")?;
                file(tar, "data/opaque/new.txt", 0o644, b"new\n")?;
                symlink(tar, "data/keep-link", "keep.txt")?;
                dir(tar, "usr", 0o755)?;
                symlink(tar, "usr/bin", "../bin")?;
                Ok(())
            }
            LayerSpec::Random { index, bytes, seed } => {
                dir(tar, "random", 0o755)?;
                let mut header = header(tar::EntryType::Regular, 0o644, bytes);
                let data = RandomReader {
                    rng: SmallRng::seed_from_u64(seed),
                    remaining: bytes,
                };
                tar.append_data(&mut header, format!("random/{index}.bin"), data)
            }
        }
    }
}

/// A layer blob as encoded, with the digests the manifest and the config need.
pub(super) struct Encoded<W> {
    /// Where the blob was written.
    pub(super) sink: W,
    /// Digest of the blob (compressed if compressed).
    pub(super) digest: Digest,
    /// Digest of the uncompressed tar: the config's `diff_id`.
    pub(super) diff_id: Digest,
    /// Size of the blob in bytes.
    pub(super) size: u64,
}

/// Writes `spec` as a tar stream into `sink`, gzip-compressed at `level` when one is given.
pub(super) fn encode<W: Write>(
    spec: &LayerSpec,
    busybox: &[u8],
    sink: W,
    level: Option<Compression>,
) -> Result<Encoded<W>> {
    let what = || format!("failed to write layer ({})", spec.created_by());
    let blob = Hashing::new(sink);
    let Some(level) = level else {
        let mut blob = blob;
        write_tar(spec, busybox, &mut blob).with_context(what)?;
        let (sink, digest, size) = blob.finish();
        return Ok(Encoded {
            sink,
            diff_id: digest.clone(),
            digest,
            size,
        });
    };
    let mut tar = Hashing::new(GzEncoder::new(blob, level));
    write_tar(spec, busybox, &mut tar).with_context(what)?;
    let (gz, diff_id, _) = tar.finish();
    let blob = gz.finish().with_context(what)?;
    let (sink, digest, size) = blob.finish();
    Ok(Encoded {
        sink,
        digest,
        diff_id,
        size,
    })
}

fn write_tar(spec: &LayerSpec, busybox: &[u8], out: &mut dyn Write) -> io::Result<()> {
    let mut tar = tar::Builder::new(out);
    spec.append_to(&mut tar, busybox)?;
    tar.into_inner()?.flush()
}

/// Reads the busybox binary the rootfs layer is made from.
pub(super) fn read_busybox() -> Result<Vec<u8>> {
    // Debian 12 is merged-/usr, so both are the same file there; elsewhere either may exist.
    let candidates = [Path::new("/bin/busybox"), Path::new("/usr/bin/busybox")];
    for path in candidates {
        if path.exists() {
            return std::fs::read(path).with_context(|| format!("failed to read {}", path.display()));
        }
    }
    anyhow::bail!("failed to find /bin/busybox (install Debian's busybox-static)")
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_size(size);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(MTIME);
    // Names only fail when too long for the field; "root" fits.
    let _ = header.set_username("root");
    let _ = header.set_groupname("root");
    header
}

fn dir(tar: &mut tar::Builder<&mut dyn Write>, path: &str, mode: u32) -> io::Result<()> {
    let mut header = header(tar::EntryType::Directory, mode, 0);
    tar.append_data(&mut header, format!("{path}/"), io::empty())
}

fn file(tar: &mut tar::Builder<&mut dyn Write>, path: &str, mode: u32, data: &[u8]) -> io::Result<()> {
    let mut header = header(tar::EntryType::Regular, mode, data.len() as u64);
    tar.append_data(&mut header, path, data)
}

fn symlink(tar: &mut tar::Builder<&mut dyn Write>, path: &str, target: &str) -> io::Result<()> {
    let mut header = header(tar::EntryType::Symlink, 0o777, 0);
    tar.append_link(&mut header, path, target)
}

/// A `Write` that hashes (sha256) and counts what passes through it.
struct Hashing<W> {
    inner: W,
    digester: Digester,
    len: u64,
}

impl<W: Write> Hashing<W> {
    fn new(inner: W) -> Self {
        Hashing {
            inner,
            digester: Digester::new(Algorithm::Sha256),
            len: 0,
        }
    }

    fn finish(self) -> (W, Digest, u64) {
        (self.inner, self.digester.finish(), self.len)
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.digester.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// `remaining` bytes from a fast seeded generator: incompressible, and the same for one seed.
struct RandomReader {
    rng: SmallRng,
    remaining: u64,
}

impl Read for RandomReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        self.rng.fill_bytes(&mut buf[..n]);
        self.remaining -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(tar_bytes: &[u8]) -> Vec<(String, tar::EntryType, Option<String>)> {
        let mut archive = tar::Archive::new(tar_bytes);
        archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let link = e.link_name().unwrap().map(|l| l.to_string_lossy().into_owned());
                (
                    e.path().unwrap().to_string_lossy().into_owned(),
                    e.header().entry_type(),
                    link,
                )
            })
            .collect()
    }

    #[test]
    fn whiteout_layer_has_whiteouts_and_relative_symlinks() {
        let enc = encode(&LayerSpec::Whiteouts, b"", Vec::new(), None).unwrap();
        assert_eq!(enc.digest, enc.diff_id);
        assert_eq!(enc.size, enc.sink.len() as u64);
        assert_eq!(enc.digest, Digest::sha256(&enc.sink));
        let names: Vec<_> = entries(&enc.sink).into_iter().map(|(p, _, l)| (p, l)).collect();
        for expected in ["data/.wh.remove-me.txt", "data/.wh.doomed", "data/opaque/.wh..wh..opq"] {
            assert!(
                names.iter().any(|(p, _)| p == expected),
                "{expected} missing in {names:?}"
            );
        }
        assert!(names.contains(&("data/keep-link".into(), Some("keep.txt".into()))));
        assert!(names.contains(&("usr/bin".into(), Some("../bin".into()))));
    }

    #[test]
    fn gzip_layer_diff_id_is_digest_of_the_tar() {
        let plain = encode(&LayerSpec::Files, b"", Vec::new(), None).unwrap();
        let gz = encode(&LayerSpec::Files, b"", Vec::new(), Some(Compression::default())).unwrap();
        assert_eq!(gz.diff_id, plain.digest);
        assert_ne!(gz.digest, plain.digest);
        assert_eq!(gz.digest, Digest::sha256(&gz.sink));
        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(&gz.sink[..])
            .read_to_end(&mut tar)
            .unwrap();
        assert_eq!(tar, plain.sink);
    }

    #[test]
    fn same_spec_same_bytes() {
        let spec = LayerSpec::Random {
            index: 0,
            bytes: 10_000,
            seed: 7,
        };
        let a = encode(&spec, b"", Vec::new(), Some(Compression::none())).unwrap();
        let b = encode(&spec, b"", Vec::new(), Some(Compression::none())).unwrap();
        assert_eq!(a.digest, b.digest);
        // Stored deflate blocks: the blob is barely bigger than the tar.
        assert!(a.size > 10_000 && a.size < 10_000 + 4096, "size {}", a.size);
    }

    #[test]
    fn rootfs_links_applets_to_busybox() {
        let enc = encode(&LayerSpec::Rootfs, b"#!fake busybox", Vec::new(), None).unwrap();
        let entries = entries(&enc.sink);
        let sh = entries.iter().find(|(p, _, _)| p == "bin/sh").unwrap();
        assert_eq!(sh.1, tar::EntryType::Symlink);
        assert_eq!(sh.2.as_deref(), Some("busybox"));
        assert!(
            entries
                .iter()
                .any(|(p, t, _)| p == "tmp/" && *t == tar::EntryType::Directory)
        );
    }
}
