//! Image references in Docker's grammar: `[REGISTRY/]NAME[:TAG][@DIGEST]`.
//!
//! `busybox` is short for `docker.io/library/busybox:latest`: Docker Hub is
//! the default registry, and its one-word names live under `library/`.
//! The first part is a registry only if it looks like a host: it has a `.`
//! or a `:` (a port), or it is `localhost`. So `ferry/busybox` is a
//! repository on Docker Hub, and `localhost:5000/ferry/busybox` one on this
//! machine.
//!
//! Everything here is checked before any network access: a bad reference is
//! a typo to report, not a request to send.

use std::fmt;

use anyhow::{Context, Result, bail, ensure};

use crate::digest::Digest;

pub const DOCKER_HUB: &str = "docker.io";
/// Where Docker Hub's API really is: `docker.io` is only its name.
const DOCKER_HUB_API: &str = "registry-1.docker.io";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// `docker.io`, `localhost:5000`, `127.0.0.1:5000`, `[::1]:5000`.
    pub registry: String,
    /// The repository within it: `library/busybox`, `ferry/busybox`.
    pub repository: String,
    /// `latest` unless given; kept (for `images`) when a digest is given too.
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

impl Reference {
    pub fn parse(text: &str) -> Result<Self> {
        ensure!(
            !text.is_empty(),
            "invalid reference format: the image name is empty"
        );
        ensure!(
            text.len() <= 255 + 1 + 128 + 1 + 71,
            "invalid reference format: {text:?} is too long"
        );
        let (rest, digest) = match text.split_once('@') {
            Some((rest, digest)) => (
                rest,
                Some(Digest::parse(digest).context("invalid reference format")?),
            ),
            None => (text, None),
        };
        // A ':' after the last '/' starts the tag; one before it is a port.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].split_once(':') {
            Some((_, tag)) => (&rest[..rest.len() - tag.len() - 1], Some(tag)),
            None => (rest, None),
        };
        if let Some(tag) = tag {
            check_tag(text, tag)?;
        }
        let (registry, repository) = split_registry(name);
        check_registry(text, registry)?;
        check_repository(text, repository)?;
        let repository = if registry == DOCKER_HUB && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository.to_owned()
        };
        ensure!(
            repository.len() <= 255,
            "invalid reference format: the repository name in {text:?} is longer than 255"
        );
        let tag = match (tag, &digest) {
            (Some(tag), _) => Some(tag.to_owned()),
            (None, Some(_)) => None,
            (None, None) => Some("latest".to_owned()),
        };
        Ok(Self {
            registry: registry.to_owned(),
            repository,
            tag,
            digest,
        })
    }

    /// What to ask the registry for: the digest if there is one (it names
    /// exactly one manifest), else the tag.
    pub fn manifest_reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(digest), _) => digest.to_string(),
            (None, Some(tag)) => tag.clone(),
            (None, None) => unreachable!("parse gives a tag or a digest"),
        }
    }

    /// The host (and port) to connect to.
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.registry
        }
    }

    /// The name without tag or digest, as `images` shows it: Docker Hub's
    /// own images short (`busybox`), others in full.
    pub fn short_name(&self) -> String {
        if self.registry != DOCKER_HUB {
            return format!("{}/{}", self.registry, self.repository);
        }
        self.repository
            .strip_prefix("library/")
            .unwrap_or(&self.repository)
            .to_owned()
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.short_name())?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

// ANCHOR: split_registry
/// Docker's rule for whether the first part names a registry.
fn split_registry(name: &str) -> (&str, &str) {
    // ANCHOR: lab06-1-reference Split off the registry: the first part is one only if it has a '.' or a ':', or is localhost; else Docker Hub (split_registry) [06-registry-pull.md#image-references]
    match name.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            (first, rest)
        }
        _ => (DOCKER_HUB, name),
    }
    // ANCHOR_END: lab06-1-reference
}
// ANCHOR_END: split_registry

/// A host name or address, with an optional port: `[::1]:5000` too.
fn check_registry(text: &str, registry: &str) -> Result<()> {
    let (host, port) = match registry.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(':') || host.starts_with('[') => (host, Some(port)),
        _ => (registry, None),
    };
    let host_ok = if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        inner.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        !host.is_empty()
            && host.split('.').all(|label| {
                !label.is_empty()
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            })
    };
    let port_ok = port.is_none_or(|port| port.parse::<u16>().is_ok_and(|port| port > 0));
    ensure!(
        host_ok && port_ok,
        "invalid reference format: {registry:?} in {text:?} is not a registry's host[:port]"
    );
    Ok(())
}

/// Path components: lowercase letters and digits, separated inside a
/// component by one `.`, one or two `_`, or any number of `-`.
fn check_repository(text: &str, repository: &str) -> Result<()> {
    if repository.bytes().any(|b| b.is_ascii_uppercase()) {
        bail!("invalid reference format: repository name must be lowercase: {text:?}");
    }
    let component_ok = |component: &str| {
        let bytes = component.as_bytes();
        let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        if bytes.is_empty() || !alnum(&bytes[0]) || !alnum(&bytes[bytes.len() - 1]) {
            return false;
        }
        // Between alphanumeric runs: ".", "_", "__", or a run of "-".
        let mut separator = String::new();
        for &b in bytes {
            if alnum(&b) {
                if !matches!(separator.as_str(), "" | "." | "_" | "__")
                    && !separator.bytes().all(|s| s == b'-')
                {
                    return false;
                }
                separator.clear();
            } else if b"._-".contains(&b) {
                separator.push(b as char);
            } else {
                return false;
            }
        }
        true
    };
    ensure!(
        repository.split('/').all(component_ok),
        "invalid reference format: {text:?}: a repository name is lowercase letters and digits, \
         separated by '/', '.', '_' or '-'"
    );
    Ok(())
}

/// A tag: up to 128 letters, digits, `_`, `.` and `-`, not starting with `.` or `-`.
fn check_tag(text: &str, tag: &str) -> Result<()> {
    let bytes = tag.as_bytes();
    let ok = (1..=128).contains(&bytes.len())
        && (bytes[0].is_ascii_alphanumeric() || bytes[0] == b'_')
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(b));
    ensure!(
        ok,
        "invalid reference format: {tag:?} in {text:?} is not a tag (up to 128 letters, digits, \
         '_', '.' and '-')"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(text: &str) -> (String, String, Option<String>, Option<String>) {
        let r = Reference::parse(text).unwrap();
        (
            r.registry,
            r.repository,
            r.tag,
            r.digest.map(|d| d.to_string()),
        )
    }

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn docker_hub_is_the_default() {
        assert_eq!(
            parts("busybox"),
            (
                "docker.io".into(),
                "library/busybox".into(),
                Some("latest".into()),
                None
            )
        );
        assert_eq!(
            parts("ferry/busybox:1.36"),
            (
                "docker.io".into(),
                "ferry/busybox".into(),
                Some("1.36".into()),
                None
            )
        );
    }

    #[test]
    fn a_registry_has_a_dot_a_port_or_is_localhost() {
        assert_eq!(parts("localhost/a").0, "localhost");
        assert_eq!(parts("127.0.0.1:5000/ferry/busybox:v1").0, "127.0.0.1:5000");
        assert_eq!(
            parts("127.0.0.1:5000/ferry/busybox:v1").2,
            Some("v1".into())
        );
        assert_eq!(parts("[::1]:5000/a").0, "[::1]:5000");
        assert_eq!(parts("ghcr.io/a/b").1, "a/b");
    }

    #[test]
    fn digests_with_and_without_tags() {
        let with = format!("busybox:1@sha256:{HEX}");
        assert_eq!(parts(&with).2, Some("1".into()));
        assert_eq!(parts(&with).3, Some(format!("sha256:{HEX}")));
        let without = format!("localhost:5000/b@sha256:{HEX}");
        assert_eq!(parts(&without).2, None);
        assert_eq!(
            Reference::parse(&without).unwrap().manifest_reference(),
            format!("sha256:{HEX}")
        );
    }

    #[test]
    fn bad_references_are_refused() {
        for bad in [
            "",
            "UPPER/case",
            "a:b:c",
            "name@sha256:short",
            "name@sha256:../../x",
            "a//b",
            "a/",
            "-a",
            "a:-tag",
            "a b",
            "localhost:0/a",
            "host:99999/a",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
