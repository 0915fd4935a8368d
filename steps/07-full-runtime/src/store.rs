//! The image store, under `--root`:
//!
//! ```text
//!   images/
//!     blobs/sha256/HEX     manifests and configs, named by their digest
//!     layers/HEX/          a layer unpacked, named by its diff_id: the
//!                          digest of its uncompressed tar, which every
//!                          image that has the layer shares
//!     tmp/                 what a pull is still writing
//!     repositories.json    which image each name stands for
//!     lock                 held shared by pulls and run, alone by rmi
//! ```
//!
//! Nothing appears in blobs/ or layers/ until it is complete and checked:
//! it is written in tmp/ and renamed into place, and a rename is atomic.
//! Two pulls of the same layer each write their own copy; the second
//! rename finds the first one's in place and drops its own.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::image::{ConfigFile, Fetched, Manifest, Platform, read_manifest};
use crate::reference::Reference;
use crate::state;

pub struct Store {
    dir: PathBuf,
}

/// What a name stands for, in repositories.json.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    pub manifest: Digest,
    /// The image id, as Docker's: the digest of the config.
    pub config: Digest,
    /// The unpacked layers' bytes, for `images`.
    pub size: u64,
    /// The platform pulled, from an index of several.
    #[serde(default)]
    pub platform: Option<Platform>,
}

/// An image ready to run: its layers, bottom first, each held (a shared
/// lock) so that `rmi` cannot remove it while a container uses it.
pub struct Image {
    pub layers: Vec<PathBuf>,
    pub config: ConfigFile,
    _held: Vec<File>,
}

impl Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Digest::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl Store {
    /// Opens the store under ROOT, making its folders if needed.
    pub fn open(root: &Path) -> Result<Self> {
        let dir = root.join("images");
        for sub in ["blobs/sha256", "layers", "tmp"] {
            let path = dir.join(sub);
            fs::create_dir_all(&path).with_context(|| format!("create {}", path.display()))?;
        }
        for lock in ["lock", "repositories.lock"] {
            let lock = dir.join(lock);
            if !lock.exists() {
                File::create(&lock).with_context(|| format!("create {}", lock.display()))?;
            }
        }
        Ok(Self { dir })
    }

    /// Held by pulls and runs (shared), and by rmi (alone).
    pub fn lock(&self, alone: bool) -> Result<File> {
        state::lock_file(&self.dir.join("lock"), alone, true)
    }

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.dir.join("blobs/sha256").join(digest.hex())
    }

    pub fn layer_path(&self, diff_id: &Digest) -> PathBuf {
        self.dir.join("layers").join(diff_id.hex())
    }

    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>> {
        let path = self.blob_path(digest);
        fs::read(&path).with_context(|| format!("read {}", path.display()))
    }

    /// Stores checked bytes under their digest.
    pub fn write_blob(&self, digest: &Digest, bytes: &[u8]) -> Result<()> {
        let target = self.blob_path(digest);
        if target.exists() {
            return Ok(());
        }
        let temp = self.temp()?;
        let file = temp.path.join("blob");
        let mut out = File::create(&file).with_context(|| format!("create {}", file.display()))?;
        out.write_all(bytes)
            .and_then(|()| out.sync_all())
            .with_context(|| format!("write {}", file.display()))?;
        fs::rename(&file, &target).with_context(|| format!("rename into {}", target.display()))
    }

    // ANCHOR: temp
    /// A fresh folder under tmp/, locked while this process lives, removed
    /// when the value is dropped.
    pub fn temp(&self) -> Result<Temp> {
        let tmp = self.dir.join("tmp");
        // Made and locked under the lock on tmp/, so that no other pull
        // cleaning up sees it in between, unlocked, and removes it.
        let _tmp = state::lock(&tmp, true)?;
        let path = tmp.join(&crate::names::generate_id()?[..12]);
        fs::create_dir(&path).with_context(|| format!("create {}", path.display()))?;
        match state::lock(&path, true) {
            Ok(lock) => Ok(Temp { path, _lock: lock }),
            Err(error) => {
                let _ = fs::remove_dir(&path);
                Err(error)
            }
        }
    }

    /// Removes what pulls that died (kill -9) left in tmp/: every folder
    /// whose lock nobody holds.
    pub fn remove_left_behind(&self) -> Result<()> {
        let tmp = self.dir.join("tmp");
        let _tmp = state::lock(&tmp, true)?;
        for entry in fs::read_dir(&tmp).with_context(|| format!("read {}", tmp.display()))? {
            let path = entry?.path();
            if state::lock(&path, false).is_ok() {
                fs::remove_dir_all(&path).with_context(|| format!("remove {}", path.display()))?;
            }
        }
        Ok(())
    }

    /// Moves a finished layer into place, unless one is there already.
    pub fn commit_layer(&self, unpacked: &Path, diff_id: &Digest) -> Result<()> {
        let target = self.layer_path(diff_id);
        match fs::rename(unpacked, &target) {
            Ok(()) => Ok(()),
            // Another pull got there first: the same bytes, by the digest.
            Err(_) if target.is_dir() => Ok(()),
            Err(error) => Err(error).with_context(|| format!("rename into {}", target.display())),
        }
    }
    // ANCHOR_END: temp

    fn repositories_path(&self) -> PathBuf {
        self.dir.join("repositories.json")
    }

    pub fn repositories(&self) -> Result<BTreeMap<String, Entry>> {
        let path = self.repositories_path();
        match fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).with_context(|| format!("read {}", path.display()))
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(error) => Err(error).with_context(|| format!("read {}", path.display())),
        }
    }

    /// Changes repositories.json, one writer at a time, replaced whole.
    pub fn update(&self, change: impl FnOnce(&mut BTreeMap<String, Entry>)) -> Result<()> {
        let lock_path = self.dir.join("repositories.lock");
        let _lock = state::lock_file(&lock_path, true, true)?;
        let mut repositories = self.repositories()?;
        change(&mut repositories);
        let path = self.repositories_path();
        let temp = self.dir.join("repositories.json.new");
        fs::write(&temp, serde_json::to_vec_pretty(&repositories)?)
            .with_context(|| format!("write {}", temp.display()))?;
        fs::rename(&temp, &path).with_context(|| format!("rename into {}", path.display()))
    }

    /// The stored image a reference names, if there is one.
    pub fn find(&self, reference: &Reference) -> Result<Option<Entry>> {
        Ok(self.repositories()?.get(&key(reference)).cloned())
    }

    /// The manifest and config of a stored image.
    pub fn read_image(&self, entry: &Entry) -> Result<(Manifest, ConfigFile)> {
        let manifest = match read_manifest(&self.read_blob(&entry.manifest)?, "")? {
            Fetched::Manifest(manifest) => manifest,
            Fetched::Index(_) => bail!("the store holds an index where a manifest should be"),
        };
        let config = ConfigFile::parse(&self.read_blob(&entry.config)?)?;
        Ok((manifest, config))
    }

    // ANCHOR: open_image
    /// The image's layers, held for as long as the returned value lives.
    pub fn open_image(&self, entry: &Entry) -> Result<Image> {
        let _store = self.lock(false)?;
        let (manifest, config) = self.read_image(entry)?;
        let mut layers = Vec::new();
        let mut held = Vec::new();
        for diff_id in config.diff_ids(manifest.layers.len())? {
            let path = self.layer_path(&diff_id);
            held.push(state::lock_file(&path, false, true).with_context(|| {
                format!(
                    "layer {} of image {} is missing from the store: pull it again",
                    diff_id.short(),
                    entry.config.short()
                )
            })?);
            layers.push(path);
        }
        Ok(Image {
            layers,
            config,
            _held: held,
        })
    }
    // ANCHOR_END: open_image

    // ANCHOR: remove
    /// Removes a name, and the image with it unless another name has it,
    /// and then every layer and blob no image uses any more.
    pub fn remove(&self, reference: &Reference) -> Result<Digest> {
        let _store = self.lock(true)?;
        let name = key(reference);
        let mut repositories = self.repositories()?;
        let Some(entry) = repositories.remove(&name) else {
            bail!("no such image: {reference}");
        };
        let used = self.used(repositories.values())?;
        let (manifest, config) = self.read_image(&entry)?;
        let unused: Vec<Digest> = config
            .diff_ids(manifest.layers.len())?
            .into_iter()
            .filter(|diff_id| !used.contains(diff_id))
            .collect();
        // A running container holds its layers: refuse before anything changes.
        let mut taken = Vec::new();
        for diff_id in &unused {
            match state::lock_file(&self.layer_path(diff_id), true, false) {
                Ok(lock) => taken.push(lock),
                Err(_) if !self.layer_path(diff_id).exists() => {}
                Err(_) => bail!("image {reference} is in use by a running container"),
            }
        }
        self.update(|all| {
            all.remove(&name);
        })?;
        for diff_id in unused {
            let path = self.layer_path(&diff_id);
            if path.exists() {
                fs::remove_dir_all(&path).with_context(|| format!("remove {}", path.display()))?;
            }
        }
        for blob in [&entry.manifest, &entry.config] {
            if !used.contains(blob) {
                let _ = fs::remove_file(self.blob_path(blob));
            }
        }
        Ok(entry.config)
    }
    // ANCHOR_END: remove

    /// Every layer, manifest and config that these images use.
    fn used<'a>(&self, entries: impl Iterator<Item = &'a Entry>) -> Result<BTreeSet<Digest>> {
        let mut used = BTreeSet::new();
        for entry in entries {
            let (manifest, config) = self.read_image(entry)?;
            used.extend(config.diff_ids(manifest.layers.len())?);
            used.insert(entry.manifest.clone());
            used.insert(entry.config.clone());
        }
        Ok(used)
    }
}

/// How repositories.json names an image: in full, `docker.io/library/busybox:latest`,
/// or with `@sha256:…` when it was pulled by digest.
pub fn key(reference: &Reference) -> String {
    let name = format!("{}/{}", reference.registry, reference.repository);
    match (&reference.digest, &reference.tag) {
        (Some(digest), _) => format!("{name}@{digest}"),
        (None, Some(tag)) => format!("{name}:{tag}"),
        (None, None) => name,
    }
}

/// A folder under tmp/, removed when dropped.
pub struct Temp {
    pub path: PathBuf,
    _lock: File,
}

impl Drop for Temp {
    fn drop(&mut self) {
        if self.path.exists() {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// What a layer's files hold, in bytes (for a layer another pull unpacked).
pub fn layer_size(dir: &Path) -> u64 {
    let mut size = 0;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        let Ok(entries) = fs::read_dir(&path) else {
            continue;
        };
        for entry in entries.flatten() {
            match entry.metadata() {
                Ok(meta) if meta.is_dir() => pending.push(entry.path()),
                Ok(meta) if meta.is_file() => size += meta.len(),
                _ => {}
            }
        }
    }
    size
}

/// Sizes as Docker shows them: decimal units, three significant digits
/// ("2.13MB", "512kB").
pub fn show_size(bytes: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < units.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    let decimals = match value {
        v if v < 10.0 => 2,
        v if v < 100.0 => 1,
        _ => 0,
    };
    let shown = format!("{value:.decimals$}");
    let shown = if shown.contains('.') {
        shown.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        shown
    };
    format!("{shown}{}", units[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_docker_shows_them() {
        assert_eq!(show_size(999), "999B");
        assert_eq!(show_size(2_134_000), "2.13MB");
        assert_eq!(show_size(21_340_000), "21.3MB");
        assert_eq!(show_size(512_000), "512kB");
        assert_eq!(show_size(2_000_000), "2MB");
    }
}
