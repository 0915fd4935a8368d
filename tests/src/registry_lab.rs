//! A registry in a network lab, as step 06's book sessions and behaviour
//! tests pull from: in the lab host's namespace, a counting proxy on
//! 127.0.0.1:5000 (the address clients are given), Debian's registry behind
//! it on 127.0.0.1:5001 and, with token auth, the token issuer on
//! 127.0.0.1:5002. Every lab has a loopback of its own, so these fixed
//! ports never clash between tests running at once, and a transcript can
//! name `127.0.0.1:5000` as the book does.
//!
//! And the demo images, built by hand from the workshop rootfs (one
//! definition for the book and the tests): a plain busybox, one of layers
//! with whiteouts, one whose config sets every field a runtime honours, and
//! an index of two platforms.

use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::json;

use crate::netlab::NetLab;
use crate::oci::{self, Compression, Format, Image, LayoutDigests};
use crate::registry::{PUSHER, Proxy, Registry, TokenIssuer};
use crate::scratch::Scratch;

/// Who may pull.
#[derive(Debug, Clone, Copy)]
pub enum Auth<'a> {
    /// Anyone, with no token: the registry asks for none.
    Anonymous,
    /// Bearer tokens from the issuer, as Docker Hub asks for: anonymous
    /// clients may pull the repositories named, `PUSHER` may do anything.
    Token { anonymous_pull: &'a [&'a str] },
}

/// The proxy, the registry and the issuer of one lab; stopped when dropped
/// (before the lab is: declare it after the `NetLab`).
pub struct RegistryLab {
    /// `nsenter --net=… --` into the lab host's namespace, for skopeo.
    net: Vec<OsString>,
    // Dropped in this order: the front first, the data last.
    proxy: Proxy,
    registry: Registry,
    issuer: Option<TokenIssuer>,
    scratch: Scratch,
}

impl RegistryLab {
    /// Where clients reach the registry, in the lab: the proxy.
    pub const ADDRESS: &'static str = "127.0.0.1:5000";
    const REGISTRY_PORT: u16 = 5001;
    const ISSUER_PORT: u16 = 5002;
    const PROXY_PORT: u16 = 5000;

    /// In `net`'s host netns: the proxy on 127.0.0.1:5000 (what clients
    /// use), the registry on 127.0.0.1:5001, the token issuer on
    /// 127.0.0.1:5002 (Auth::Token). Call it from a thread that outlives
    /// the lab's use (the test's own): the registry dies with the thread
    /// that started it.
    pub fn start(net: &NetLab, auth: Auth) -> Result<Self> {
        let scratch = Scratch::new("registry-lab")?;
        let listen = format!("127.0.0.1:{}", Self::REGISTRY_PORT);
        let data = scratch.join("registry");
        let (registry, issuer) = match auth {
            Auth::Anonymous => (Registry::start_in(&listen, &data, Some(net))?, None),
            Auth::Token { anonymous_pull } => {
                let issuer = TokenIssuer::start_in(
                    net,
                    Self::ISSUER_PORT,
                    &scratch.join("issuer"),
                    anonymous_pull,
                )?;
                let registry =
                    Registry::start_with_token_auth_in(&listen, &data, &issuer, Some(net))?;
                (registry, Some(issuer))
            }
        };
        let proxy = Proxy::start_in(net, Self::PROXY_PORT, registry.reach)
            .context("start the registry's proxy in the lab")?;
        Ok(Self {
            net: net.command_prefix(),
            proxy,
            registry,
            issuer,
            scratch,
        })
    }

    /// Builds `images` as one OCI layout tag (an index if several) and
    /// pushes it as ADDRESS/NAME:TAG (`name_tag`, `latest` if it names no
    /// tag) with skopeo inside the lab this was started in, with
    /// PUSHER's credentials under token auth. The push goes through the
    /// proxy, whose record is then cleared: it holds what clients did
    /// only. Returns the digests.
    pub fn push(&self, name_tag: &str, images: &[Image], format: Format) -> Result<LayoutDigests> {
        let (name, tag) = split_tag(name_tag);
        // A layout of its own per name: one tag each, never another's.
        let layout = self.scratch.join("layouts").join(name.replace('/', "_"));
        let digests = oci::write_layout(&layout, tag, images)?;
        let creds = self.issuer.as_ref().map(|_| PUSHER);
        let reference = format!("{}/{name}:{tag}", Self::ADDRESS);
        oci::push(&self.net, &layout, tag, &reference, format, creds)?;
        self.proxy.clear();
        Ok(digests)
    }

    /// Pushes the four demo images (`DEMO_IMAGES`) built from `rootfs`, in
    /// OCI format.
    pub fn push_demo_images(&self, rootfs: &Path) -> Result<()> {
        for (name_tag, build) in DEMO_IMAGES {
            let images = build(rootfs).with_context(|| format!("build {name_tag}"))?;
            self.push(name_tag, &images, Format::Oci)
                .with_context(|| format!("push {name_tag}"))?;
        }
        Ok(())
    }

    pub fn proxy(&self) -> &Proxy {
        &self.proxy
    }

    /// The issuer, under token auth.
    pub fn issuer(&self) -> Option<&TokenIssuer> {
        self.issuer.as_ref()
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }
}

/// `ferry/busybox:latest` to its name and tag; `latest` when there is none
/// (a `:` before the last `/` is a port's, not a tag's).
pub fn split_tag(name_tag: &str) -> (&str, &str) {
    match name_tag.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => (name, tag),
        _ => (name_tag, "latest"),
    }
}

/// The demo images' names in the lab's registry, each beside (and named
/// after) the function that builds it.
pub const WORKSHOP: &str = "ferry/busybox:latest";
pub const LAYERED: &str = "ferry/layers:latest";
pub const CONFIGURED: &str = "ferry/app:latest";
pub const TWO_PLATFORMS: &str = "ferry/multi:latest";

/// Their repositories, which anyone may pull in the book's registry.
pub const DEMO_REPOSITORIES: [&str; 4] =
    ["ferry/busybox", "ferry/layers", "ferry/app", "ferry/multi"];

/// How a demo image is built from the workshop rootfs.
pub type Build = fn(&Path) -> Result<Vec<Image>>;

/// Each demo image's name and how it is built.
pub const DEMO_IMAGES: [(&str, Build); 4] = [
    (WORKSHOP, workshop),
    (LAYERED, layered),
    (CONFIGURED, configured),
    (TWO_PLATFORMS, two_platforms),
];

/// The workshop rootfs as one layer, running /bin/sh: the image every
/// chapter's `run` has used as a folder, now from a registry.
pub fn workshop(rootfs: &Path) -> Result<Vec<Image>> {
    Ok(vec![shell_image(vec![oci::dir_layer(rootfs)?])])
}

/// Three layers, so that a container shows what stacking them means:
/// (1) the rootfs; (2) adds /etc/motd, /srv/data/{a,b} and /srv/keep;
/// (3) deletes /etc/motd (a `.wh.motd` whiteout), makes /srv/data opaque
/// (`.wh..wh..opq`: a and b hidden) and adds /srv/data/c. In a container
/// /etc/motd is gone, /srv/data holds only c, /srv/keep is there. Layer 2
/// is stored uncompressed, the others gzipped: both media types are pulled.
pub fn layered(rootfs: &Path) -> Result<Vec<Image>> {
    let second = oci::tar_layer(|tar| {
        file(tar, "etc/motd", b"hello from layer 2\n")?;
        directory(tar, "srv/")?;
        directory(tar, "srv/data/")?;
        file(tar, "srv/data/a", b"a from layer 2\n")?;
        file(tar, "srv/data/b", b"b from layer 2\n")?;
        file(tar, "srv/keep", b"kept\n")
    })?;
    let third = oci::tar_layer(|tar| {
        file(tar, "etc/.wh.motd", b"")?;
        directory(tar, "srv/data/")?;
        file(tar, "srv/data/.wh..wh..opq", b"")?;
        file(tar, "srv/data/c", b"from layer 3\n")
    })?;
    let mut image = shell_image(vec![oci::dir_layer(rootfs)?, second, third]);
    image.layers[1].1 = Compression::None;
    Ok(vec![image])
}

/// The rootfs and a layer adding a user `app` (uid and gid 1000, home
/// /home/app, owned by it), with a config that sets every field a runtime
/// honours: Env, Entrypoint and Cmd, WorkingDir, User.
pub fn configured(rootfs: &Path) -> Result<Vec<Image>> {
    let passwd = appended(
        rootfs,
        "etc/passwd",
        "app:x:1000:1000:app:/home/app:/bin/sh\n",
    )?;
    let group = appended(rootfs, "etc/group", "app:x:1000:\n")?;
    let user = oci::tar_layer(|tar| {
        let mut home = oci::raw_header(tar::EntryType::Directory, b"home/app/", None, 0o755, 0)?;
        home.set_uid(1000);
        home.set_gid(1000);
        home.set_cksum();
        tar.append(&home, &b""[..]).context("append home/app/")?;
        for (path, (bytes, mode)) in [("etc/passwd", passwd), ("etc/group", group)] {
            oci::raw_entry(
                tar,
                tar::EntryType::Regular,
                path.as_bytes(),
                None,
                mode,
                &bytes,
            )?;
        }
        Ok(())
    })?;
    let mut image = Image::new(vec![oci::dir_layer(rootfs)?, user]);
    image.config = json!({
        "Env": [oci::PATH, "GREETING=hello from the image"],
        "Entrypoint": ["/bin/echo", "entrypoint:"],
        "Cmd": ["from", "cmd"],
        "WorkingDir": "/home/app",
        "User": "app",
    });
    Ok(vec![image])
}

/// An index of linux/amd64 and linux/arm64/v8, both the rootfs (so both run
/// here: the busybox is this machine's) and a layer writing /platform, the
/// platform's name, so that a container says which one was pulled.
pub fn two_platforms(rootfs: &Path) -> Result<Vec<Image>> {
    let base = oci::dir_layer(rootfs)?;
    let named = |platform: &str| {
        let text = format!("{platform}\n");
        let layer = oci::tar_layer(|tar| file(tar, "platform", text.as_bytes()))?;
        Ok::<_, anyhow::Error>(shell_image(vec![base.clone(), layer]))
    };
    Ok(vec![
        named("linux/amd64")?,
        named("linux/arm64/v8")?.platform("linux", "arm64", Some("v8")),
    ])
}

/// An image of `layers` (gzipped) whose command is /bin/sh.
fn shell_image(layers: Vec<Vec<u8>>) -> Image {
    let mut image = Image::new(layers);
    image.config = json!({ "Env": [oci::PATH], "Cmd": ["/bin/sh"] });
    image
}

/// The rootfs's `path` with `line` appended, and its mode.
fn appended(rootfs: &Path, path: &str, line: &str) -> Result<(Vec<u8>, u32)> {
    let full = rootfs.join(path);
    let mut bytes = fs::read(&full).with_context(|| format!("read {}", full.display()))?;
    let mode = fs::metadata(&full)
        .with_context(|| format!("stat {}", full.display()))?
        .permissions()
        .mode()
        & 0o7777;
    if bytes.last().is_some_and(|&last| last != b'\n') {
        bytes.push(b'\n');
    }
    bytes.extend_from_slice(line.as_bytes());
    Ok((bytes, mode))
}

/// A regular file, mode 0644, owned by root.
fn file(tar: &mut tar::Builder<Vec<u8>>, path: &str, bytes: &[u8]) -> Result<()> {
    oci::raw_entry(
        tar,
        tar::EntryType::Regular,
        path.as_bytes(),
        None,
        0o644,
        bytes,
    )
}

/// A directory, mode 0755, owned by root.
fn directory(tar: &mut tar::Builder<Vec<u8>>, path: &str) -> Result<()> {
    oci::raw_entry(
        tar,
        tar::EntryType::Directory,
        path.as_bytes(),
        None,
        0o755,
        b"",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_tags() {
        assert_eq!(
            split_tag("ferry/busybox:latest"),
            ("ferry/busybox", "latest")
        );
        assert_eq!(split_tag("ferry/busybox"), ("ferry/busybox", "latest"));
        assert_eq!(split_tag("a:5000/b"), ("a:5000/b", "latest"));
        assert_eq!(split_tag("a/b:v1"), ("a/b", "v1"));
    }
}
