//! Content to push: blobs and manifests with their digests, small images, and the data sets of
//! the redesigned conformance suite (`conformance/testdata.go` and `GenerateData` in
//! `conformance/run.go`, opencontainers/distribution-spec) built the same way.
//!
//! Layers are random bytes under a layer media type: the registry stores them by digest and
//! never reads them, so a real tar stream would test nothing more.

use std::collections::BTreeMap;

use base64::Engine as _;
use berth_oci::{Algorithm, Digest, media_types};
use rand::RngCore as _;
use serde_json::{Value, json};

pub(crate) const OCTET_STREAM: &str = "application/octet-stream";
pub(crate) const EXAMPLE_TYPE_1: &str = "application/vnd.example.oci.conformance.v1";
pub(crate) const EXAMPLE_TYPE_2: &str = "application/vnd.example.oci.conformance.v2";
pub(crate) const CONFORMANCE_ANNOTATION: &str = "org.opencontainers.conformance";
/// The annotation and config label search reads a repository's description from.
pub(crate) const DESCRIPTION: &str = "org.opencontainers.image.description";

pub(crate) fn random_bytes(len: usize) -> Vec<u8> {
    let mut b = vec![0u8; len];
    rand::rng().fill_bytes(&mut b);
    b
}

/// Random lowercase hex, for unique names.
pub(crate) fn random_hex(bytes: usize) -> String {
    hex::encode(random_bytes(bytes))
}

/// Bytes to push, with their digest and the media type their descriptor carries.
#[derive(Debug, Clone)]
pub(crate) struct Content {
    pub(crate) media_type: String,
    pub(crate) bytes: Vec<u8>,
    pub(crate) digest: Digest,
}

impl Content {
    pub(crate) fn new(media_type: &str, bytes: impl Into<Vec<u8>>, alg: Algorithm) -> Content {
        let bytes = bytes.into();
        Content {
            media_type: media_type.to_owned(),
            digest: Digest::of(alg, &bytes),
            bytes,
        }
    }

    /// Random bytes of `len`, as a sha256 blob.
    pub(crate) fn random(media_type: &str, len: usize) -> Content {
        Content::new(media_type, random_bytes(len), Algorithm::Sha256)
    }

    /// A manifest or index as sent: its JSON serialized once, the media type from its
    /// `mediaType` field.
    pub(crate) fn manifest(value: &Value, alg: Algorithm) -> Content {
        let media_type = value["mediaType"].as_str().unwrap_or(media_types::OCI_MANIFEST);
        Content::new(media_type, serde_json::to_vec(value).expect("JSON serializes"), alg)
    }

    pub(crate) fn descriptor(&self) -> Value {
        json!({"mediaType": self.media_type, "digest": self.digest.to_string(), "size": self.bytes.len()})
    }
}

/// A small image: an OCI config, one gzip layer and a manifest over them.
#[derive(Debug, Clone)]
pub(crate) struct Image {
    pub(crate) config: Content,
    pub(crate) layers: Vec<Content>,
    pub(crate) manifest: Content,
}

impl Image {
    pub(crate) fn random() -> Image {
        Image::with(|_, _| {})
    }

    /// An image whose config JSON and manifest JSON `edit` adjusts before they are serialized.
    pub(crate) fn with(edit: impl FnOnce(&mut Value, &mut Value)) -> Image {
        let layer = Content::random(media_types::OCI_LAYER_GZIP, 1024);
        let mut config = image_config(&[&layer]);
        let mut manifest = json!({
            "schemaVersion": 2,
            "mediaType": media_types::OCI_MANIFEST,
            "config": {},
            "layers": [layer.descriptor()],
        });
        edit(&mut config, &mut manifest);
        let config = Content::new(
            media_types::OCI_CONFIG,
            serde_json::to_vec(&config).expect("JSON serializes"),
            Algorithm::Sha256,
        );
        manifest["config"] = config.descriptor();
        Image {
            manifest: Content::manifest(&manifest, Algorithm::Sha256),
            config,
            layers: vec![layer],
        }
    }

    /// Config and layers, in push order.
    pub(crate) fn blobs(&self) -> impl Iterator<Item = &Content> {
        std::iter::once(&self.config).chain(&self.layers)
    }
}

/// An OCI image config over `layers`, unique by a random creation note.
fn image_config(layers: &[&Content]) -> Value {
    json!({
        "author": "OCI Conformance Test",
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": [format!("NONCE={}", random_hex(8))]},
        "rootfs": {
            "type": "layers",
            "diff_ids": layers.iter().map(|l| l.digest.to_string()).collect::<Vec<_>>(),
        },
    })
}

/// An image index over `manifests` (descriptors).
pub(crate) fn index(manifests: Vec<Value>) -> Value {
    json!({"schemaVersion": 2, "mediaType": media_types::OCI_INDEX, "manifests": manifests})
}

/// Options of the suite's generators (`genOptS`).
#[derive(Debug, Clone)]
pub(crate) struct Gen {
    alg: Algorithm,
    annotations: BTreeMap<String, String>,
    unique_annotation: bool,
    artifact_type: Option<String>,
    uncompressed: bool,
    /// Artifact config (media type, bytes); `None` makes an image config.
    config: Option<(String, Vec<u8>)>,
    layer_count: usize,
    layer_media_type: Option<String>,
    layer_bytes: Option<Vec<u8>>,
    platform: (String, String),
    data_field: bool,
    extra_field: bool,
    subject: Option<Value>,
    tag: Option<String>,
}

impl Default for Gen {
    fn default() -> Self {
        Gen {
            alg: Algorithm::Sha256,
            annotations: BTreeMap::new(),
            unique_annotation: false,
            artifact_type: None,
            uncompressed: false,
            config: None,
            layer_count: 2,
            layer_media_type: None,
            layer_bytes: None,
            platform: ("linux".into(), "amd64".into()),
            data_field: false,
            extra_field: false,
            subject: None,
            tag: None,
        }
    }
}

impl Gen {
    pub(crate) fn alg(mut self, alg: Algorithm) -> Self {
        self.alg = alg;
        self
    }

    pub(crate) fn annotation(mut self, key: &str, value: &str) -> Self {
        self.annotations.insert(key.to_owned(), value.to_owned());
        self
    }

    /// Adds a random `org.example.<x>` annotation to each generated manifest.
    pub(crate) fn unique_annotation(mut self) -> Self {
        self.unique_annotation = true;
        self
    }

    pub(crate) fn artifact_type(mut self, t: &str) -> Self {
        self.artifact_type = Some(t.to_owned());
        self
    }

    pub(crate) fn uncompressed(mut self) -> Self {
        self.uncompressed = true;
        self
    }

    pub(crate) fn artifact_config(mut self, media_type: &str, bytes: &[u8]) -> Self {
        self.config = Some((media_type.to_owned(), bytes.to_vec()));
        self
    }

    pub(crate) fn layers(mut self, n: usize) -> Self {
        self.layer_count = n;
        self
    }

    pub(crate) fn layer_media_type(mut self, t: &str) -> Self {
        self.layer_media_type = Some(t.to_owned());
        self
    }

    pub(crate) fn layer_bytes(mut self, b: &[u8]) -> Self {
        self.layer_bytes = Some(b.to_vec());
        self
    }

    fn platform(mut self, os: &str, arch: &str) -> Self {
        self.platform = (os.to_owned(), arch.to_owned());
        self
    }

    /// Embeds each descriptor's content in its `data` field.
    pub(crate) fn data_field(mut self) -> Self {
        self.data_field = true;
        self
    }

    /// Adds a random unknown top-level field to configs, manifests and indexes.
    pub(crate) fn extra_field(mut self) -> Self {
        self.extra_field = true;
        self
    }

    pub(crate) fn subject(mut self, descriptor: &Value) -> Self {
        self.subject = Some(descriptor.clone());
        self
    }

    pub(crate) fn tag(mut self, tag: &str) -> Self {
        self.tag = Some(tag.to_owned());
        self
    }

    fn untagged(&self) -> Self {
        Gen {
            tag: None,
            ..self.clone()
        }
    }

    fn finish_json(&self, v: &mut Value) {
        if self.extra_field {
            v[format!("org.{}", random_hex(8))] = random_hex(8).into();
        }
    }
}

/// A data set: what to push, in order, and what the registry must then serve.
#[derive(Debug, Default)]
pub(crate) struct DataSet {
    /// Blobs, each once.
    pub(crate) blobs: Vec<Content>,
    /// Manifests in push order (children before the indexes over them).
    pub(crate) manifests: Vec<Content>,
    pub(crate) tags: BTreeMap<String, Digest>,
    /// Subject digest → the descriptors its referrers listing must hold.
    pub(crate) referrers: BTreeMap<Digest, Vec<Value>>,
    /// Push tags with `?tag=` on the push by digest instead of a push by tag.
    pub(crate) tag_param: bool,
}

impl DataSet {
    fn describe(&self, content: &Content, g: &Gen) -> Value {
        let mut d = content.descriptor();
        if g.data_field {
            d["data"] = base64::engine::general_purpose::STANDARD.encode(&content.bytes).into();
        }
        d
    }

    pub(crate) fn add_blob(&mut self, content: Content, g: &Gen) -> Value {
        let d = self.describe(&content, g);
        if !self.blobs.iter().any(|b| b.digest == content.digest) {
            self.blobs.push(content);
        }
        d
    }

    pub(crate) fn add_manifest(&mut self, mut value: Value, g: &Gen) -> Value {
        if let Some(s) = &g.subject {
            value["subject"] = s.clone();
        }
        if let Some(t) = &g.artifact_type {
            value["artifactType"] = t.clone().into();
        }
        let mut annotations = g.annotations.clone();
        if g.unique_annotation {
            annotations.insert(format!("org.example.{}", random_hex(8)), random_hex(8));
        }
        if !annotations.is_empty() {
            value["annotations"] = json!(annotations);
        }
        g.finish_json(&mut value);
        let content = Content::manifest(&value, g.alg);
        if let Some(subject) = &g.subject {
            let subject: Digest = subject["digest"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .expect("subject descriptor has a digest");
            let mut expect = content.descriptor();
            // What a referrers listing reports: artifactType, else the config's media type.
            let artifact_type = value["artifactType"].as_str().or(value["config"]["mediaType"].as_str());
            if let Some(at) = artifact_type {
                expect["artifactType"] = at.into();
            }
            if !annotations.is_empty() {
                expect["annotations"] = json!(annotations);
            }
            self.referrers.entry(subject).or_default().push(expect);
        }
        if let Some(tag) = &g.tag {
            self.tags.insert(tag.clone(), content.digest.clone());
        }
        let d = self.describe(&content, g);
        self.manifests.push(content);
        d
    }

    /// An image or artifact manifest with its config and layers (`genManifestFull`); returns
    /// its descriptor.
    pub(crate) fn image(&mut self, g: &Gen) -> Value {
        let mut layers = Vec::new();
        let mut diff_ids = Vec::new();
        for _ in 0..g.layer_count {
            let content = match &g.layer_media_type {
                None => {
                    let mt = if g.uncompressed {
                        media_types::OCI_LAYER_TAR
                    } else {
                        media_types::OCI_LAYER_GZIP
                    };
                    Content::new(mt, random_bytes(512), g.alg)
                }
                Some(mt) => {
                    let bytes = g.layer_bytes.clone().unwrap_or_else(|| random_bytes(2048));
                    Content::new(mt, bytes, g.alg)
                }
            };
            diff_ids.push(content.digest.to_string());
            layers.push(self.add_blob(content, g));
        }
        let config = match &g.config {
            None => {
                let mut c = json!({
                    "author": "OCI Conformance Test",
                    "architecture": g.platform.1,
                    "os": g.platform.0,
                    "rootfs": {"type": "layers", "diff_ids": diff_ids},
                });
                g.finish_json(&mut c);
                Content::new(
                    media_types::OCI_CONFIG,
                    serde_json::to_vec(&c).expect("JSON serializes"),
                    g.alg,
                )
            }
            Some((mt, bytes)) => Content::new(mt, bytes.clone(), g.alg),
        };
        let config = self.add_blob(config, g);
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": media_types::OCI_MANIFEST,
            "config": config,
            "layers": layers,
        });
        self.add_manifest(manifest, g)
    }

    /// An index over `children`, each given the platform beside it (`genIndex`).
    pub(crate) fn index(&mut self, children: Vec<(Value, Option<(&str, &str)>)>, g: &Gen) -> Value {
        let manifests = children
            .into_iter()
            .map(|(mut d, platform)| {
                if let Some((os, arch)) = platform {
                    d["platform"] = json!({"os": os, "architecture": arch});
                }
                d
            })
            .collect();
        self.add_manifest(index(manifests), g)
    }

    /// An index of one image per platform (`genIndexFull`); the options other than the tag
    /// apply to the images too.
    pub(crate) fn image_index(&mut self, g: &Gen, platforms: &[(&str, &str)]) -> Value {
        let children = platforms
            .iter()
            .map(|&(os, arch)| (self.image(&g.untagged().platform(os, arch)), Some((os, arch))))
            .collect();
        self.index(children, g)
    }
}

/// The two platforms the suite's indexes list.
pub(crate) const PLATFORMS: &[(&str, &str)] = &[("linux", "amd64"), ("linux", "arm64")];
