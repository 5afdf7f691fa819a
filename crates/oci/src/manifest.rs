//! A tolerant view of image manifests and indexes (OCI and Docker schema 2): enough to know
//! what a manifest references, its subject, and its artifact type. Unknown fields are kept in
//! the stored bytes, never rewritten.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::media::media_types as mt;
use crate::{Digest, Error};

/// A content descriptor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<Vec<String>>,
}

impl Descriptor {
    /// Layers that live outside the registry (`urls` set on a non-distributable layer) need
    /// not be pushed.
    pub fn is_foreign(&self) -> bool {
        self.urls.as_ref().is_some_and(|u| !u.is_empty())
            && (self.media_type.contains("nondistributable") || self.media_type.contains("foreign"))
    }
}

/// Whether a manifest describes one image (or artifact) or a list of manifests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestKind {
    Image,
    Index,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    schema_version: Option<i64>,
    media_type: Option<String>,
    artifact_type: Option<String>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
    manifests: Option<Vec<Descriptor>>,
    subject: Option<Descriptor>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

/// A parsed manifest or index.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The effective media type: the body's `mediaType`, else the declared content type, else
    /// inferred from the fields present.
    pub media_type: String,
    pub kind: ManifestKind,
    pub config: Option<Descriptor>,
    pub layers: Vec<Descriptor>,
    pub manifests: Vec<Descriptor>,
    pub subject: Option<Descriptor>,
    pub artifact_type: Option<String>,
    pub annotations: BTreeMap<String, String>,
}

impl Manifest {
    /// Parses `bytes`, sent with `content_type` (the `Content-Type` header, if any).
    pub fn parse(bytes: &[u8], content_type: Option<&str>) -> Result<Manifest, Error> {
        let invalid = |reason: String| Error::InvalidManifest { reason };
        let raw: Raw = serde_json::from_slice(bytes).map_err(|e| invalid(format!("not a JSON manifest: {e}")))?;
        if raw.schema_version != Some(2) {
            return Err(invalid(format!(
                "schemaVersion must be 2 (found {}); schema 1 manifests are not supported",
                raw.schema_version.map_or("none".into(), |v| v.to_string())
            )));
        }
        let content_type = content_type
            .map(|c| c.split(';').next().unwrap_or("").trim())
            .filter(|c| !c.is_empty() && *c != "application/json" && *c != "application/octet-stream");
        if let (Some(body), Some(header)) = (&raw.media_type, content_type)
            && body != header
        {
            return Err(invalid(format!(
                "mediaType {body:?} does not match Content-Type {header:?}"
            )));
        }
        let media_type = raw
            .media_type
            .clone()
            .or(content_type.map(str::to_owned))
            .unwrap_or_else(|| {
                if raw.manifests.is_some() {
                    mt::OCI_INDEX.to_owned()
                } else {
                    mt::OCI_MANIFEST.to_owned()
                }
            });
        let kind = match media_type.as_str() {
            mt::OCI_INDEX | mt::DOCKER_MANIFEST_LIST => ManifestKind::Index,
            mt::OCI_MANIFEST | mt::DOCKER_MANIFEST => ManifestKind::Image,
            mt::DOCKER_SCHEMA1 | mt::DOCKER_SCHEMA1_SIGNED => {
                return Err(invalid("schema 1 manifests are not supported".into()));
            }
            other => return Err(invalid(format!("unsupported manifest media type {other:?}"))),
        };
        match kind {
            ManifestKind::Image => {
                if raw.config.is_none() {
                    return Err(invalid("image manifest without config".into()));
                }
                if raw.manifests.is_some() {
                    return Err(invalid("image manifest with a manifests list".into()));
                }
            }
            ManifestKind::Index => {
                if raw.manifests.is_none() {
                    return Err(invalid("index without manifests".into()));
                }
                if raw.config.is_some() || raw.layers.is_some() {
                    return Err(invalid("index with config or layers".into()));
                }
            }
        }
        Ok(Manifest {
            media_type,
            kind,
            config: raw.config,
            layers: raw.layers.unwrap_or_default(),
            manifests: raw.manifests.unwrap_or_default(),
            subject: raw.subject,
            artifact_type: raw.artifact_type,
            annotations: raw.annotations,
        })
    }

    /// The artifact type a referrers listing reports: `artifactType`, else the config's media
    /// type (for image manifests).
    pub fn effective_artifact_type(&self) -> Option<String> {
        self.artifact_type
            .clone()
            .or_else(|| self.config.as_ref().map(|c| c.media_type.clone()))
    }

    /// Blobs (config and layers) this manifest needs in the registry.
    pub fn blobs(&self) -> impl Iterator<Item = &Descriptor> {
        self.config.iter().chain(self.layers.iter().filter(|l| !l.is_foreign()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(n: u8) -> String {
        format!(r#"{{"mediaType":"x","digest":"{}","size":1}}"#, Digest::sha256(&[n]))
    }

    #[test]
    fn image_and_index() {
        let img = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{},"layers":[{}]}}"#,
            mt::OCI_MANIFEST,
            d(1),
            d(2)
        );
        let m = Manifest::parse(img.as_bytes(), Some(mt::OCI_MANIFEST)).unwrap();
        assert_eq!(m.kind, ManifestKind::Image);
        assert_eq!(m.blobs().count(), 2);
        assert_eq!(m.effective_artifact_type().as_deref(), Some("x"));

        let idx = format!(r#"{{"schemaVersion":2,"manifests":[{}]}}"#, d(3));
        let m = Manifest::parse(idx.as_bytes(), None).unwrap();
        assert_eq!(m.kind, ManifestKind::Index);
        assert_eq!(m.manifests.len(), 1);
    }

    #[test]
    fn rejects() {
        let cases = [
            "not json".to_owned(),
            r#"{"schemaVersion":1}"#.to_owned(),
            format!(
                r#"{{"schemaVersion":2,"mediaType":"{}","layers":[]}}"#,
                mt::OCI_MANIFEST
            ),
            format!(
                r#"{{"schemaVersion":2,"mediaType":"{}","config":{}}}"#,
                mt::OCI_INDEX,
                d(1)
            ),
            r#"{"schemaVersion":2,"mediaType":"text/plain","config":{}}"#.to_owned(),
            r#"{"schemaVersion":2,"config":{"mediaType":"x","digest":"sha256:bad","size":1},"layers":[]}"#.to_owned(),
        ];
        for c in cases {
            assert!(Manifest::parse(c.as_bytes(), None).is_err(), "{c} accepted");
        }
        let img = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{},"layers":[]}}"#,
            mt::OCI_MANIFEST,
            d(1)
        );
        assert!(
            Manifest::parse(img.as_bytes(), Some(mt::DOCKER_MANIFEST)).is_err(),
            "content type mismatch accepted"
        );
    }
}
