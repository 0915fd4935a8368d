//! What an image is, as JSON: an index (one manifest per platform), a
//! manifest (a config and a list of layers, each named by its digest), and
//! a config (how to run it, and the digests of the unpacked layers).
//!
//! ```text
//!   index ──► manifest (linux/amd64) ──► config  {Env, Cmd, …, rootfs.diff_ids}
//!         └─► manifest (linux/arm64)  └─► layer 1 (tar+gzip) … layer N
//! ```

use std::fmt;

use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::distribution::{DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST};

#[derive(Debug, Clone, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    pub platform: Option<Platform>,
}

impl Descriptor {
    /// The digest, checked before it is used for anything (CVE-2024-3727).
    pub fn digest(&self) -> Result<Digest> {
        Digest::parse(&self.digest)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    // ANCHOR: host
    /// This machine's platform, in the names of Go's GOOS and GOARCH that
    /// images use.
    pub fn host() -> Self {
        let (architecture, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "aarch64" => ("arm64", Some("v8")),
            "arm" => ("arm", Some("v7")),
            "x86" => ("386", None),
            "powerpc64" => ("ppc64le", None),
            other => (other, None),
        };
        Self {
            os: "linux".into(),
            architecture: architecture.into(),
            variant: variant.map(Into::into),
        }
    }
    // ANCHOR_END: host

    /// `os/arch[/variant]`, as `--platform` takes it.
    pub fn parse(text: &str) -> Result<Self, String> {
        let parts: Vec<&str> = text.split('/').collect();
        let ok = |part: &&str| {
            !part.is_empty() && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        };
        match parts.as_slice() {
            [os, arch] if parts.iter().all(ok) => Ok(Self {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: None,
            }),
            [os, arch, variant] if parts.iter().all(ok) => Ok(Self {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: Some(variant.to_string()),
            }),
            _ => Err(format!(
                "{text:?} is not OS/ARCH[/VARIANT] (linux/amd64, linux/arm64/v8)"
            )),
        }
    }

    // ANCHOR: platform_matches
    /// Whether an index entry for `offered` runs here. arm64 images often
    /// leave out the variant, which then means v8; a wanted platform
    /// without a variant takes any.
    pub fn matches(&self, offered: &Platform) -> bool {
        // ANCHOR: lab06-3-platform Tell whether an index entry's platform is the one wanted: os and architecture equal, the variant too when one is wanted (arm64 without one means v8) (matches) [06-registry-pull.md#indexes-and-platforms]
        let variant =
            |platform: &Platform| match (&platform.variant, platform.architecture.as_str()) {
                (None, "arm64") => Some("v8".to_owned()),
                (variant, _) => variant.clone(),
            };
        self.os == offered.os
            && self.architecture == offered.architecture
            && (self.variant.is_none() || variant(self) == variant(offered))
        // ANCHOR_END: lab06-3-platform
    }
    // ANCHOR_END: platform_matches
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(variant) = &self.variant {
            write!(f, "/{variant}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Deserialize)]
pub struct Index {
    pub manifests: Vec<Descriptor>,
}

#[derive(Debug, Deserialize)]
pub struct Manifest {
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

/// A manifest as a registry sent it.
pub enum Fetched {
    Index(Index),
    Manifest(Manifest),
}

// ANCHOR: read_manifest
/// Reads a manifest or an index, telling them apart by the media type the
/// registry sent, or else by the one the JSON names.
pub fn read_manifest(bytes: &[u8], content_type: &str) -> Result<Fetched> {
    let json: serde_json::Value =
        serde_json::from_slice(bytes).context("the manifest is not JSON")?;
    if json["schemaVersion"].as_u64() == Some(1) {
        bail!(
            "the registry sent a schema 1 manifest, a format registries have retired and this \
             runtime does not read: push the image again with a current tool"
        );
    }
    let media_type = json["mediaType"]
        .as_str()
        .filter(|t| !t.is_empty())
        .unwrap_or(content_type);
    match media_type {
        OCI_INDEX | DOCKER_LIST => Ok(Fetched::Index(
            serde_json::from_value(json).context("read the index")?,
        )),
        OCI_MANIFEST | DOCKER_MANIFEST => Ok(Fetched::Manifest(
            serde_json::from_value(json).context("read the manifest")?,
        )),
        // An OCI index or manifest may leave mediaType out: what it holds says which.
        _ if json.get("manifests").is_some() => Ok(Fetched::Index(serde_json::from_value(json)?)),
        _ if json.get("layers").is_some() => Ok(Fetched::Manifest(serde_json::from_value(json)?)),
        other => bail!("the registry sent a {other:?}, which is not an image manifest"),
    }
}
// ANCHOR_END: read_manifest

// ANCHOR: choose
/// The index's manifest for `platform`.
pub fn choose<'a>(index: &'a Index, platform: &Platform) -> Result<&'a Descriptor> {
    index
        .manifests
        .iter()
        .find(|entry| {
            entry
                .platform
                .as_ref()
                .is_some_and(|offered| platform.matches(offered))
        })
        .with_context(|| {
            let offered: Vec<String> = index
                .manifests
                .iter()
                .filter_map(|entry| entry.platform.as_ref().map(ToString::to_string))
                .collect();
            format!(
                "the image has no {platform} variant (it has {}); choose one with --platform",
                offered.join(", ")
            )
        })
}
// ANCHOR_END: choose

/// The image's config blob: how to run it, and what its layers unpack to.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ConfigFile {
    #[serde(default)]
    pub config: Option<RunConfig>,
    /// The platform the image is for.
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub variant: Option<String>,
    pub rootfs: RootFs,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct RootFs {
    pub diff_ids: Vec<String>,
}

// ANCHOR: run_config
/// What the image says about running it; `run`'s options override each.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RunConfig {
    pub env: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
}
// ANCHOR_END: run_config

impl ConfigFile {
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        serde_json::from_slice(bytes).context("read the image's config")
    }

    pub fn platform(&self) -> Platform {
        Platform {
            os: self.os.clone(),
            architecture: self.architecture.clone(),
            variant: self.variant.clone(),
        }
    }

    /// The digests of the unpacked layers, bottom first, one per layer.
    pub fn diff_ids(&self, layers: usize) -> Result<Vec<Digest>> {
        ensure!(
            self.rootfs.diff_ids.len() == layers,
            "the config lists {} layers and the manifest {layers}",
            self.rootfs.diff_ids.len()
        );
        self.rootfs
            .diff_ids
            .iter()
            .map(|d| Digest::parse(d))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn platform(text: &str) -> Platform {
        Platform::parse(text).unwrap()
    }

    #[test]
    fn platforms_match_as_docker_matches_them() {
        assert!(platform("linux/arm64/v8").matches(&platform("linux/arm64")));
        assert!(platform("linux/arm64").matches(&platform("linux/arm64/v8")));
        assert!(!platform("linux/arm64/v8").matches(&platform("linux/amd64")));
        assert!(!platform("linux/arm/v7").matches(&platform("linux/arm/v6")));
        assert!(Platform::parse("linux").is_err());
        assert!(Platform::parse("linux/amd64/v1/x").is_err());
    }
}
