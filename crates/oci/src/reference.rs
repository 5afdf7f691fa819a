//! Image references: `[host[:port]/]path[:tag][@digest]`, as docker parses them.

use std::fmt;
use std::str::FromStr;

use crate::{Digest, Error, RepoName, Tag};

/// A parsed image reference. The registry is `None` when the name carries no host part
/// (the first component has no `.` or `:` and is not `localhost`).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Reference {
    pub registry: Option<String>,
    pub repository: RepoName,
    pub tag: Option<Tag>,
    pub digest: Option<Digest>,
}

impl FromStr for Reference {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let invalid = |reason| Error::InvalidReference {
            reference: s.to_owned(),
            reason,
        };
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (r, Some(d.parse::<Digest>()?)),
            None => (s, None),
        };
        let (registry, path) = match rest.split_once('/') {
            Some((first, path)) if first.contains('.') || first.contains(':') || first == "localhost" => {
                (Some(first.to_owned()), path)
            }
            _ => (None, rest),
        };
        // a ':' after the last '/' starts the tag
        let (path, tag) = match path.rfind(':') {
            Some(i) if !path[i..].contains('/') => (&path[..i], Some(Tag::parse(&path[i + 1..])?)),
            _ => (path, None),
        };
        if path.is_empty() {
            return Err(invalid("missing repository"));
        }
        Ok(Reference {
            registry,
            repository: RepoName::parse(path)?,
            tag,
            digest,
        })
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(r) = &self.registry {
            write!(f, "{r}/")?;
        }
        write!(f, "{}", self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let d = Digest::sha256(b"x");
        let cases: &[(&str, Option<&str>, &str, Option<&str>)] = &[
            ("busybox", None, "busybox", None),
            ("library/busybox:1.36", None, "library/busybox", Some("1.36")),
            (
                "myreg.site:5000/sl6/wn:latest",
                Some("myreg.site:5000"),
                "sl6/wn",
                Some("latest"),
            ),
            ("localhost/x", Some("localhost"), "x", None),
            ("127.0.0.1:5000/a/b", Some("127.0.0.1:5000"), "a/b", None),
        ];
        for (input, reg, repo, tag) in cases {
            let r: Reference = input.parse().unwrap();
            assert_eq!(r.registry.as_deref(), *reg, "{input}");
            assert_eq!(r.repository.as_str(), *repo, "{input}");
            assert_eq!(r.tag.as_ref().map(|t| t.as_str()), *tag, "{input}");
            assert_eq!(&r.to_string(), input);
        }
        let r: Reference = format!("reg:5000/a:t@{d}").parse().unwrap();
        assert_eq!(r.digest, Some(d));
        for bad in ["", "UPPER/x", "reg:5000/", "a@sha256:zz", "a:b:c"] {
            assert!(bad.parse::<Reference>().is_err(), "{bad:?} accepted");
        }
    }
}
