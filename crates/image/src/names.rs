//! Image names as docker resolves them: `busybox` is `docker.io/library/busybox:latest`.

use berth_oci::Reference;

use crate::error::Error;

const DEFAULT_REGISTRY: &str = "docker.io";
const DEFAULT_TAG: &str = "latest";

/// The full `registry/repository:tag` a name stands for (the key tags are stored under).
/// A name with a digest is refused: only tags are stored so far.
pub fn normalize(name: &str) -> Result<String, Error> {
    let r: Reference = name.parse()?;
    if r.digest.is_some() {
        return Err(Error::UnsupportedReference {
            reference: name.to_owned(),
            reason: "(digest references are not supported yet)",
        });
    }
    let registry = match r.registry.as_deref() {
        None | Some("index.docker.io") => DEFAULT_REGISTRY,
        Some(r) => r,
    };
    let repo = r.repository.as_str();
    let tag = r.tag.as_ref().map_or(DEFAULT_TAG, |t| t.as_str());
    if registry == DEFAULT_REGISTRY && !repo.contains('/') {
        Ok(format!("{registry}/library/{repo}:{tag}"))
    } else {
        Ok(format!("{registry}/{repo}:{tag}"))
    }
}

/// Like [`normalize`], and a name with a digest is the digest reference it is stored under
/// (`registry/repository@sha256:…`; a tag beside the digest is dropped, as docker does).
pub fn normalize_reference(name: &str) -> Result<String, Error> {
    let r: Reference = name.parse()?;
    let Some(digest) = &r.digest else {
        return normalize(name);
    };
    let name = match r.registry.as_deref() {
        None => r.repository.as_str().to_owned(),
        Some(host) => format!("{host}/{}", r.repository.as_str()),
    };
    let tagged = normalize(&name)?;
    Ok(format!("{}@{digest}", split_tag(&tagged).0))
}

/// Whether a stored reference is a digest reference (`…@sha256:…`) rather than a tag.
pub(crate) fn is_digest_reference(full: &str) -> bool {
    full.contains('@')
}

/// The repository of a stored reference: `myreg:5000/a:1` and `myreg:5000/a@sha256:…` are
/// `myreg:5000/a`.
pub(crate) fn repository_of(full: &str) -> &str {
    match full.split_once('@') {
        Some((repo, _)) => repo,
        None => split_tag(full).0,
    }
}

/// The short form docker shows: `docker.io/library/busybox:latest` → `busybox:latest`.
pub fn familiar(full: &str) -> &str {
    full.strip_prefix("docker.io/library/")
        .or_else(|| full.strip_prefix("docker.io/"))
        .unwrap_or(full)
}

/// `repo:tag` → (`repo`, `tag`), splitting at the last `:` after the last `/`.
pub fn split_tag(full: &str) -> (&str, &str) {
    match full.rfind(':') {
        Some(i) if !full[i..].contains('/') => (&full[..i], &full[i + 1..]),
        _ => (full, ""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_like_docker() {
        for (input, want) in [
            ("busybox", "docker.io/library/busybox:latest"),
            ("busybox:1.36", "docker.io/library/busybox:1.36"),
            ("docker.io/library/busybox", "docker.io/library/busybox:latest"),
            ("docker.io/busybox:latest", "docker.io/library/busybox:latest"),
            ("index.docker.io/busybox", "docker.io/library/busybox:latest"),
            ("sl6/worker", "docker.io/sl6/worker:latest"),
            ("myreg:5000/sl6/wn:v1", "myreg:5000/sl6/wn:v1"),
            ("localhost/x", "localhost/x:latest"),
        ] {
            assert_eq!(normalize(input).unwrap(), want, "{input}");
        }
        for bad in [
            "",
            "UPPER",
            "a:b:c",
            "a@sha256:zz",
            &format!("a@{}", berth_oci::Digest::sha256(b"")),
        ] {
            assert!(normalize(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(familiar("docker.io/library/busybox:latest"), "busybox:latest");
        assert_eq!(familiar("docker.io/sl6/wn:1"), "sl6/wn:1");
        assert_eq!(familiar("myreg:5000/a:1"), "myreg:5000/a:1");
        assert_eq!(split_tag("myreg:5000/a:1"), ("myreg:5000/a", "1"));
        assert_eq!(split_tag("myreg:5000/a"), ("myreg:5000/a", ""));

        let d = berth_oci::Digest::sha256(b"");
        for (input, want) in [
            (format!("busybox@{d}"), format!("docker.io/library/busybox@{d}")),
            (format!("busybox:1@{d}"), format!("docker.io/library/busybox@{d}")),
            (format!("myreg:5000/sl6/wn@{d}"), format!("myreg:5000/sl6/wn@{d}")),
            ("myreg:5000/sl6/wn:1".to_owned(), "myreg:5000/sl6/wn:1".to_owned()),
        ] {
            assert_eq!(normalize_reference(&input).unwrap(), want, "{input}");
        }
        assert!(normalize_reference("a@sha256:zz").is_err());
        assert!(is_digest_reference(&format!("a@{d}")) && !is_digest_reference("a:1"));
        assert_eq!(repository_of(&format!("myreg:5000/a@{d}")), "myreg:5000/a");
        assert_eq!(repository_of("myreg:5000/a:1"), "myreg:5000/a");
    }
}
