//! Images built by hand, as OCI image layouts, so that a test controls every
//! byte a puller receives: hostile tar entries, whiteouts, indexes of
//! several platforms, uncompressed layers. skopeo then pushes them to a
//! registry of ours (`crate::registry`) without changing the blobs.

use std::ffi::OsString;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

pub const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// The annotation by which index.json names a tag.
const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// The PATH every image gets unless a test says otherwise.
pub const PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// An uncompressed layer: the tar that `build` writes.
pub fn tar_layer(build: impl FnOnce(&mut tar::Builder<Vec<u8>>) -> Result<()>) -> Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    build(&mut builder)?;
    builder.into_inner().context("finish the layer tar")
}

/// A header naming `path` and `link` byte for byte. tar::Builder's own
/// `append_data` and `set_path` refuse `..` and absolute paths, which are
/// what a hostile layer holds, so the names go into the header fields
/// directly (at most 100 bytes each: no long-name extension). Mode, owner
/// root, mtime 0 and size are set; adjust it further (device numbers, say)
/// and call `set_cksum` before `builder.append(&header, data)`.
pub fn raw_header(
    kind: tar::EntryType,
    path: &[u8],
    link: Option<&[u8]>,
    mode: u32,
    size: u64,
) -> Result<tar::Header> {
    let mut header = tar::Header::new_gnu();
    let old = header.as_old_mut();
    put(&mut old.name, path).context("the entry's path")?;
    if let Some(link) = link {
        put(&mut old.linkname, link).context("the entry's link target")?;
    }
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_size(size);
    header.set_cksum();
    Ok(header)
}

/// Appends one entry with any path and link target at all (see `raw_header`).
pub fn raw_entry(
    builder: &mut tar::Builder<Vec<u8>>,
    kind: tar::EntryType,
    path: &[u8],
    link: Option<&[u8]>,
    mode: u32,
    data: &[u8],
) -> Result<()> {
    let header = raw_header(kind, path, link, mode, data.len() as u64)?;
    builder
        .append(&header, data)
        .with_context(|| format!("append {:?}", String::from_utf8_lossy(path)))
}

fn put(field: &mut [u8; 100], bytes: &[u8]) -> Result<()> {
    ensure!(
        bytes.len() <= field.len(),
        "{} bytes do not fit a 100-byte tar name field",
        bytes.len()
    );
    field.fill(0);
    field[..bytes.len()].copy_from_slice(bytes);
    Ok(())
}

/// A layer holding the tree under `dir` as it is (the workshop rootfs):
/// paths relative (`bin/sh`), symlinks kept as symlinks, modes kept, owner
/// root and mtime 0, entries sorted, so the same tree always gives the
/// same bytes and the same digest.
pub fn dir_layer(dir: &Path) -> Result<Vec<u8>> {
    tar_layer(|builder| append_tree(builder, dir, Path::new("")))
}

fn append_tree(builder: &mut tar::Builder<Vec<u8>>, root: &Path, relative: &Path) -> Result<()> {
    let dir = root.join(relative);
    let mut names = fs::read_dir(&dir)
        .with_context(|| format!("read {}", dir.display()))?
        .map(|entry| entry.map(|entry| entry.file_name()))
        .collect::<io::Result<Vec<_>>>()
        .with_context(|| format!("read {}", dir.display()))?;
    names.sort();
    for name in names {
        let path = relative.join(&name);
        let full = root.join(&path);
        let meta =
            fs::symlink_metadata(&full).with_context(|| format!("stat {}", full.display()))?;
        let mut header = tar::Header::new_gnu();
        header.set_mode(meta.permissions().mode() & 0o7777);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        let kind = meta.file_type();
        let appended = if kind.is_symlink() {
            let target =
                fs::read_link(&full).with_context(|| format!("readlink {}", full.display()))?;
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_size(0);
            builder.append_link(&mut header, &path, target)
        } else if kind.is_dir() {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_size(0);
            builder.append_data(&mut header, &path, io::empty())
        } else if kind.is_file() {
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(meta.size());
            let file = fs::File::open(&full).with_context(|| format!("open {}", full.display()))?;
            builder.append_data(&mut header, &path, file)
        } else {
            bail!("{}: only files, directories and symlinks", full.display());
        };
        appended.with_context(|| format!("add {} to the layer", full.display()))?;
        if kind.is_dir() {
            append_tree(builder, root, &path)?;
        }
    }
    Ok(())
}

/// How a layer is stored in the layout, and so in the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    None,
}

/// One image of one platform: its layers (uncompressed tars, compressed
/// here as asked) and what its config says.
#[derive(Debug, Clone)]
pub struct Image {
    pub layers: Vec<(Vec<u8>, Compression)>,
    /// The config's "config" object: Env, Entrypoint, Cmd, WorkingDir, User.
    pub config: Value,
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Image {
    /// linux/amd64, every layer gzipped, a config with only PATH set.
    pub fn new(layers: Vec<Vec<u8>>) -> Self {
        Self {
            layers: layers
                .into_iter()
                .map(|layer| (layer, Compression::Gzip))
                .collect(),
            config: json!({ "Env": [PATH] }),
            os: "linux".into(),
            architecture: "amd64".into(),
            variant: None,
        }
    }

    /// The same image for another platform.
    pub fn platform(mut self, os: &str, architecture: &str, variant: Option<&str>) -> Self {
        self.os = os.into();
        self.architecture = architecture.into();
        self.variant = variant.map(Into::into);
        self
    }

    fn platform_json(&self) -> Value {
        let mut platform = json!({ "os": self.os, "architecture": self.architecture });
        if let Some(variant) = &self.variant {
            platform["variant"] = json!(variant);
        }
        platform
    }
}

/// The digests (`sha256:<hex>`) of one image in a layout.
#[derive(Debug, Clone)]
pub struct ImageDigests {
    pub manifest: String,
    pub config: String,
    /// Of the blobs as stored (compressed or not), in order.
    pub layers: Vec<String>,
    /// Of the uncompressed tars, as the config's rootfs.diff_ids lists them.
    pub diff_ids: Vec<String>,
}

/// What `write_layout` wrote: one entry per image, in order, and the image
/// index's digest when there are several.
#[derive(Debug, Clone)]
pub struct LayoutDigests {
    pub images: Vec<ImageDigests>,
    pub index: Option<String>,
}

impl LayoutDigests {
    /// The digest the tag names: the index, or the only manifest.
    pub fn tagged(&self) -> &str {
        match &self.index {
            Some(index) => index,
            None => &self.images[0].manifest,
        }
    }
}

/// Writes `images` into the OCI image layout at `layout` (created if
/// missing) under `tag`: index.json then names, for `tag`, the manifest of
/// the one image, or an image index of several, each with its platform.
/// Other tags in the layout are kept.
pub fn write_layout(layout: &Path, tag: &str, images: &[Image]) -> Result<LayoutDigests> {
    ensure!(!images.is_empty(), "a layout needs at least one image");
    fs::create_dir_all(layout.join("blobs/sha256"))
        .with_context(|| format!("create {}", layout.display()))?;
    write(
        &layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    let mut digests = Vec::new();
    let mut descriptors = Vec::new();
    for image in images {
        let (written, descriptor) = write_image(layout, image)?;
        digests.push(written);
        descriptors.push(descriptor);
    }
    let (top, index) = if let [descriptor] = descriptors.as_slice() {
        (descriptor.clone(), None)
    } else {
        for (descriptor, image) in descriptors.iter_mut().zip(images) {
            descriptor["platform"] = image.platform_json();
        }
        let index = json!({ "schemaVersion": 2, "mediaType": INDEX, "manifests": descriptors });
        let descriptor = blob(layout, INDEX, &to_bytes(&index)?)?;
        let digest = descriptor["digest"].as_str().map(str::to_owned);
        (descriptor, digest)
    };
    let mut top = top;
    top["annotations"] = json!({ REF_NAME: tag });
    // Other tags stay: one layout can hold every image a test pushes.
    let mut tagged: Vec<Value> = read_index(layout)?
        .into_iter()
        .filter(|entry| entry["annotations"][REF_NAME] != tag)
        .collect();
    tagged.push(top);
    let index_json = json!({ "schemaVersion": 2, "mediaType": INDEX, "manifests": tagged });
    write(&layout.join("index.json"), &to_bytes(&index_json)?)?;
    Ok(LayoutDigests {
        images: digests,
        index,
    })
}

/// Writes one image's layers, config and manifest; returns their digests
/// and the manifest's descriptor.
fn write_image(layout: &Path, image: &Image) -> Result<(ImageDigests, Value)> {
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    for (tar, compression) in &image.layers {
        diff_ids.push(digest(tar));
        layers.push(match compression {
            Compression::None => blob(layout, LAYER_TAR, tar)?,
            Compression::Gzip => blob(layout, LAYER_GZIP, &gzip(tar)?)?,
        });
    }
    let mut config = json!({
        "os": image.os,
        "architecture": image.architecture,
        "config": image.config,
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
    });
    if let Some(variant) = &image.variant {
        config["variant"] = json!(variant);
    }
    let config = blob(layout, CONFIG, &to_bytes(&config)?)?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": config,
        "layers": layers,
    });
    let manifest = blob(layout, MANIFEST, &to_bytes(&manifest)?)?;
    let named = |descriptor: &Value| descriptor["digest"].as_str().unwrap_or_default().to_owned();
    let digests = ImageDigests {
        manifest: named(&manifest),
        config: named(&config),
        layers: layers.iter().map(named).collect(),
        diff_ids,
    };
    Ok((digests, manifest))
}

/// Stores `bytes` under their digest; returns their descriptor.
fn blob(layout: &Path, media_type: &str, bytes: &[u8]) -> Result<Value> {
    let digest = digest(bytes);
    let hex = digest.trim_start_matches("sha256:");
    write(&layout.join("blobs/sha256").join(hex), bytes)?;
    Ok(json!({ "mediaType": media_type, "digest": digest, "size": bytes.len() }))
}

/// `sha256:<hex>` of `bytes`.
pub fn digest(bytes: &[u8]) -> String {
    let hex: String = Sha256::digest(bytes)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    format!("sha256:{hex}")
}

/// Gzip with no name and mtime 0 in its header: the same tar always gives
/// the same blob.
pub fn gzip(bytes: &[u8]) -> Result<Vec<u8>> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).context("gzip a layer")?;
    encoder.finish().context("gzip a layer")
}

fn to_bytes(value: &Value) -> Result<Vec<u8>> {
    serde_json::to_vec(value).context("serialise JSON")
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    fs::write(path, bytes).with_context(|| format!("write {}", path.display()))
}

/// The manifest format a push leaves in the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// As written: every blob, manifest and index byte for byte.
    Oci,
    /// Docker's schema 2 manifests (and manifest list): skopeo rewrites the
    /// manifests and media types; layers and config keep their bytes.
    DockerV2s2,
}

/// Pushes `tag` of the layout to `reference` (`127.0.0.1:PORT/NAME:TAG`)
/// over plain HTTP, every platform of an index, with `creds` (`user:pass`)
/// if given; skopeo started through `prefix`: with a network lab's
/// `command_prefix` (`nsenter --net=… --`) it pushes from the lab host's
/// namespace, where `127.0.0.1:PORT` is the lab's own loopback.
pub fn push(
    prefix: &[OsString],
    layout: &Path,
    tag: &str,
    reference: &str,
    format: Format,
    creds: Option<&str>,
) -> Result<()> {
    let mut command = skopeo(prefix);
    command.args(["copy", "--quiet", "--dest-tls-verify=false"]);
    if names_index(layout, tag)? {
        command.arg("--all");
    }
    match format {
        // Without it skopeo may recompress or rewrite what it copies.
        Format::Oci => command.arg("--preserve-digests"),
        Format::DockerV2s2 => command.args(["--format", "v2s2"]),
    };
    if let Some(creds) = creds {
        command.arg("--dest-creds").arg(creds);
    }
    let output = command
        .arg(format!("oci:{}:{tag}", layout.display()))
        .arg(format!("docker://{reference}"))
        .stdin(std::process::Stdio::null())
        .output()
        .context("start skopeo")?;
    ensure!(
        output.status.success(),
        "skopeo copy of {tag} to {reference} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(())
}

/// How skopeo is run: add its arguments (`copy …`). Through `prefix`
/// (`NetLab::command_prefix`, or none), and in a mount namespace of its
/// own with a tmpfs over /var/lib: run as root, skopeo keeps a blob-info
/// cache in /var/lib/containers/cache, and 1.9.3 has no option or variable
/// to put it elsewhere (only the rootless path follows $XDG_DATA_HOME).
/// The tmpfs goes with the namespace when skopeo exits, and the cache
/// with it. Nothing else skopeo reads for a copy lives under /var/lib.
pub fn skopeo(prefix: &[OsString]) -> Command {
    let mut words = prefix.to_vec();
    words.extend(
        [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            r#"mount -t tmpfs -o mode=0755 ferry-skopeo /var/lib && exec skopeo "$@""#,
            "sh",
        ]
        .map(OsString::from),
    );
    let mut command = Command::new(&words[0]);
    command.args(&words[1..]);
    command
}

/// Whether index.json's entry for `tag` is an image index.
fn names_index(layout: &Path, tag: &str) -> Result<bool> {
    let entry = read_index(layout)?
        .into_iter()
        .find(|entry| entry["annotations"][REF_NAME] == tag)
        .with_context(|| format!("{} has no tag {tag}", layout.display()))?;
    Ok(entry["mediaType"] == INDEX)
}

/// The entries of the layout's index.json; none when there is none yet.
fn read_index(layout: &Path) -> Result<Vec<Value>> {
    let path = layout.join("index.json");
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(error).with_context(|| format!("read {}", path.display())),
    };
    let mut index: Value =
        serde_json::from_slice(&bytes).with_context(|| format!("parse {}", path.display()))?;
    match index["manifests"].take() {
        Value::Array(entries) => Ok(entries),
        _ => bail!("{} lists no manifests", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scratch::Scratch;

    #[test]
    fn raw_entries_keep_hostile_names() {
        let layer = tar_layer(|builder| {
            raw_entry(builder, tar::EntryType::Regular, b"../x", None, 0o644, b"x")?;
            raw_entry(
                builder,
                tar::EntryType::Symlink,
                b"/abs",
                Some(b"../../etc"),
                0o777,
                b"",
            )
        })
        .unwrap();
        let mut archive = tar::Archive::new(&layer[..]);
        let names: Vec<(Vec<u8>, Option<Vec<u8>>)> = archive
            .entries()
            .unwrap()
            .map(|entry| {
                let entry = entry.unwrap();
                let link = entry.link_name_bytes().map(|link| link.into_owned());
                (entry.path_bytes().into_owned(), link)
            })
            .collect();
        assert_eq!(
            names,
            [
                (b"../x".to_vec(), None),
                (b"/abs".to_vec(), Some(b"../../etc".to_vec()))
            ]
        );
    }

    #[test]
    fn layouts_keep_every_tag_and_name_platforms() {
        let scratch = Scratch::new("oci-layout").unwrap();
        let layer = tar_layer(|_| Ok(())).unwrap();
        let one = write_layout(scratch.path(), "one", &[Image::new(vec![layer.clone()])]).unwrap();
        let arm = Image::new(vec![layer.clone()]).platform("linux", "arm64", Some("v8"));
        let two = write_layout(scratch.path(), "two", &[Image::new(vec![layer]), arm]).unwrap();
        assert!(one.index.is_none());
        assert_eq!(one.images[0].diff_ids, two.images[1].diff_ids);
        assert!(!names_index(scratch.path(), "one").unwrap());
        assert!(names_index(scratch.path(), "two").unwrap());
        let blob = |digest: &str| -> Value {
            let path = scratch.join("blobs/sha256").join(&digest[7..]);
            serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
        };
        let index = blob(two.tagged());
        assert_eq!(index["manifests"][1]["platform"]["variant"], "v8");
        assert_eq!(index["manifests"][1]["digest"], two.images[1].manifest);
        let config = blob(&two.images[1].config);
        assert_eq!(config["architecture"], "arm64");
        assert_eq!(
            config["rootfs"]["diff_ids"][0],
            digest(&tar_layer(|_| Ok(())).unwrap())
        );
    }
}
