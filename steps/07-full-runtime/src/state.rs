//! The container's folder under `--root`: the overlay's upper and work
//! directories, its mount point, its record (record.rs) and its log
//! (logs.rs). Until step 06 it lived exactly as long as the `run` that made
//! it. Now it outlives the container, as Docker's containers do, until `rm`
//! (or at once with `--rm`), so that `ps -a`, `logs` and `inspect` can tell
//! of a container that has ended.
//!
//! A supervisor killed with `kill -9` drops nothing. So the supervisor holds
//! a lock on its folder while it lives (the kernel drops the lock when the
//! process dies, however it dies): a folder whose lock anyone can take has
//! no supervisor. The next `run` removes such folders of `--rm` containers
//! and of ones that never got a record, and marks the others dead, for
//! `rm`. A lock, not a pid: a pid is reused, and a process that died a
//! moment ago looks like one that never started.

use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use nix::errno::Errno;
use nix::sys::statfs::{OVERLAYFS_SUPER_MAGIC, statfs};

use crate::exit::Failure;
use crate::record::{self, Record, Status};
use crate::{cgroups, logs};

/// What a container folder holds: no other folder is ever removed as one.
const LAYERS: [&str; 3] = ["upper", "work", "merged"];
const FILES: [&str; 3] = [record::FILE, "state.json.new", logs::FILE];

pub struct ContainerDir {
    path: PathBuf,
    /// The folder, open and locked for as long as this runtime lives.
    _lock: File,
    /// Whether the folder stays when this is dropped: once the command has
    /// started, unless `--rm`.
    keep: bool,
}

impl ContainerDir {
    // ANCHOR: create
    /// Creates `ROOT/ID/{upper,work,merged}` and the record in it, locked.
    /// `rootfs` is the directory --root must not be inside, if ROOTFS is one.
    /// A record's name is one no other container under ROOT has.
    pub fn create(root: &Path, record: &mut Record, rootfs: Option<&Path>) -> Result<Self> {
        let root = check_root(root, rootfs)?;
        let path = root.join(record.short_id());
        // Under the lock on ROOT, so that no other runtime looking for
        // folders left behind sees this one before it is locked, and no
        // other takes the same name meanwhile.
        let lock = {
            let _root = lock(&root, true)?;
            name_is_free(&root, record)?;
            fs::create_dir(&path)
                .with_context(|| format!("create the container directory {}", path.display()))?;
            lock(&path, true)
        };
        // From here on, a failure drops `dir` and removes what was made.
        let dir = match lock {
            Ok(lock) => Self {
                path,
                _lock: lock,
                keep: false,
            },
            Err(error) => {
                let _ = fs::remove_dir(&path);
                return Err(error);
            }
        };
        for layer in LAYERS {
            let layer = dir.path.join(layer);
            fs::create_dir(&layer).with_context(|| format!("create {}", layer.display()))?;
        }
        record.save(&dir.path)?;
        Ok(dir)
    }
    // ANCHOR_END: create

    // ANCHOR: left_behind
    /// Tidies the folders of containers whose supervisor died: removes
    /// those of `--rm` containers and of ones that never started, marks the
    /// others dead. Returns their short ids: their cgroups are to be removed.
    pub fn remove_left_behind(&self) -> Result<Vec<String>> {
        // ANCHOR: lab03-6-left-behind Remove what dead runtimes left: every container folder under --root whose lock (flock) nobody holds [03-mount-overlay.md#the-code]
        let root = self.path.parent().expect("ROOT/ID");
        let _root = lock(root, true)?;
        let mut removed = Vec::new();
        for entry in fs::read_dir(root).with_context(|| format!("read {}", root.display()))? {
            let path = entry?.path();
            let id = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            if !is_container_dir(&path) || lock(&path, false).is_err() {
                continue;
            }
            let record = Record::load(&path).ok();
            match record {
                // Ended and seen to end: kept for `ps -a`, `logs`, `rm`.
                Some(record) if matches!(record.status, Status::Exited | Status::Dead) => continue,
                Some(mut record) if !record.auto_remove && record.status == Status::Running => {
                    record.status = Status::Dead;
                    record.save(&path)?;
                }
                _ => fs::remove_dir_all(&path).with_context(|| {
                    format!("remove {}, left by a runtime that died", path.display())
                })?,
            }
            removed.push(id.to_owned());
        }
        Ok(removed)
        // ANCHOR_END: lab03-6-left-behind instead: Ok(Vec::new())
    }
    // ANCHOR_END: left_behind

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The command has started: the folder now stays when this is dropped,
    /// unless the container is to be removed when it ends (`--rm`).
    pub fn keep_unless(&mut self, auto_remove: bool) {
        self.keep = !auto_remove;
    }

    /// Where everything the container writes lands.
    pub fn upper(&self) -> PathBuf {
        self.path.join("upper")
    }

    /// Scratch space that overlayfs needs on the same filesystem as `upper`.
    pub fn work(&self) -> PathBuf {
        self.path.join("work")
    }

    /// Where the overlay is mounted: the container's root filesystem.
    pub fn merged(&self) -> PathBuf {
        self.path.join("merged")
    }
}

impl Drop for ContainerDir {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        // The overlay was mounted only in the container's mount namespace,
        // which the kernel tore down when its last process exited, so these
        // are plain directories again.
        if let Err(error) = fs::remove_dir_all(&self.path) {
            eprintln!(
                "error: remove the container directory {}: {error}",
                self.path.display()
            );
        }
    }
}

/// Opens `dir` (or a file) and takes its lock: waiting for it, or failing at once if
/// another process holds it. The lock lasts until the returned file closes.
pub fn lock(dir: &Path, wait: bool) -> Result<File> {
    lock_file(dir, true, wait)
}

/// The same, shared (many holders at once) or exclusive (one alone).
pub fn lock_file(path: &Path, exclusive: bool, wait: bool) -> Result<File> {
    let file = File::open(path).with_context(|| format!("open {}", path.display()))?;
    let mut how = if exclusive {
        libc::LOCK_EX
    } else {
        libc::LOCK_SH
    };
    if !wait {
        how |= libc::LOCK_NB;
    }
    // SAFETY: flock on a descriptor we own; it touches no memory.
    Errno::result(unsafe { libc::flock(file.as_raw_fd(), how) })
        .with_context(|| format!("lock {}", path.display()))?;
    Ok(file)
}

/// A folder this runtime made: an id (12 hex digits) holding the layers
/// and nothing else. Anything else under --root is not ours to remove.
fn is_container_dir(path: &Path) -> bool {
    let id_like = path
        .file_name()
        .and_then(|name| name.to_str())
        .is_some_and(|name| name.len() == 12 && name.bytes().all(|b| b.is_ascii_hexdigit()));
    let only_layers = fs::read_dir(path).is_ok_and(|entries| {
        entries.flatten().all(|entry| {
            let name = entry.file_name();
            LAYERS.iter().chain(&FILES).any(|ours| name == *ours)
        })
    });
    id_like && path.is_dir() && only_layers
}

/// No container under `root` has the record's name already.
fn name_is_free(root: &Path, record: &mut Record) -> Result<()> {
    let taken: Vec<String> = containers_in(root)?
        .into_iter()
        .map(|(_, other)| other.name)
        .collect();
    if record.name.is_empty() {
        record.name = crate::names::invent(|name| taken.iter().any(|t| t == name))?;
    }
    ensure!(
        !taken.contains(&record.name),
        "the container name {:?} is already in use: remove that container, or choose another name",
        record.name
    );
    Ok(())
}

/// Every container under `root`, with its folder, oldest first.
pub fn containers(root: &Path) -> Result<Vec<(PathBuf, Record)>> {
    if !root.exists() {
        return Ok(Vec::new());
    }
    let _root = lock(root, true)?;
    containers_in(root)
}

fn containers_in(root: &Path) -> Result<Vec<(PathBuf, Record)>> {
    let mut found = Vec::new();
    for entry in fs::read_dir(root).with_context(|| format!("read {}", root.display()))? {
        let path = entry?.path();
        if !is_container_dir(&path) {
            continue;
        }
        // A folder with no record yet is one being made (we hold ROOT's
        // lock, so not by a live runtime) or half-removed: not a container.
        if let Ok(record) = Record::load(&path) {
            found.push((path, record));
        }
    }
    found.sort_by_key(|(_, record)| record.created);
    Ok(found)
}

// ANCHOR: find
/// The container that `name` names: its name, its id, or a prefix of its
/// id that no other container's id has.
pub fn find(root: &Path, name: &str) -> Result<(PathBuf, Record)> {
    let all = containers(root)?;
    if let Some(found) = all
        .iter()
        .find(|(_, record)| record.name == name || record.id == name)
    {
        return Ok(found.clone());
    }
    let by_prefix: Vec<_> = all
        .iter()
        .filter(|(_, record)| !name.is_empty() && record.id.starts_with(name))
        .collect();
    match by_prefix.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(Failure {
            status: 1,
            message: format!("no such container: {name}"),
        }
        .into()),
        _ => Err(Failure {
            status: 1,
            message: format!("{name} is the start of several containers' ids: give more of it"),
        }
        .into()),
    }
}
// ANCHOR_END: find

/// Whether the container's supervisor is alive: it holds the folder's lock.
/// (A folder that is gone has none: a `--rm` container's supervisor removes
/// its folder as its last act.)
pub fn supervised(dir: &Path) -> bool {
    lock(dir, false).is_err() && dir.exists()
}

// ANCHOR: remove
/// Removes a container that has ended: what its supervisor could not
/// remove if it died (its cgroup), then its folder.
pub fn remove(dir: &Path, record: &Record) -> Result<()> {
    let root = dir.parent().expect("ROOT/ID");
    let _root = lock(root, true)?;
    let Ok(_mine) = lock(dir, false) else {
        return Err(Failure {
            status: 1,
            message: format!(
                "cannot remove container {}: it is running: stop it first, or use rm -f",
                record.name
            ),
        }
        .into());
    };
    cgroups::remove_left_behind(&record.cgroup_parent, record.short_id())?;
    fs::remove_dir_all(dir).with_context(|| format!("remove {}", dir.display()))
}
// ANCHOR_END: remove

/// `--root` must be creatable, outside ROOTFS, and not on overlayfs.
fn check_root(root: &Path, rootfs: Option<&Path>) -> Result<PathBuf> {
    let rootfs = rootfs.unwrap_or(Path::new("/nonexistent/"));
    let resolved = resolve(root).with_context(|| format!("--root {}", root.display()))?;
    // Checked before anything is created, so that a bad --root leaves no
    // directory inside ROOTFS behind, also when a symlink leads there.
    ensure!(
        !resolved.starts_with(rootfs),
        "--root {} is inside ROOTFS {}: the container's writable layer cannot live in its own image",
        root.display(),
        rootfs.display()
    );
    // The resolved path, not the one given: what was checked is what is made.
    fs::create_dir_all(&resolved).with_context(|| format!("create --root {}", root.display()))?;
    let root = fs::canonicalize(&resolved).with_context(|| format!("--root {}", root.display()))?;
    ensure!(
        !root.starts_with(rootfs),
        "--root {} is inside ROOTFS {}",
        root.display(),
        rootfs.display()
    );
    let filesystem = statfs(&root).with_context(|| format!("statfs --root {}", root.display()))?;
    if filesystem.filesystem_type() == OVERLAYFS_SUPER_MAGIC {
        bail!(
            "--root {} is on overlayfs, which cannot hold an overlay's upper directory \
             (inside Docker, put --root on a volume)",
            root.display()
        );
    }
    Ok(root)
}

/// Where `path` leads before any of it is created: the part that exists
/// resolved as the kernel would (symlinks, `..`), the rest appended as the
/// plain directories that `create_dir_all` would make.
fn resolve(path: &Path) -> std::io::Result<PathBuf> {
    let mut resolved = PathBuf::from("/");
    for component in std::path::absolute(path)?.components() {
        match component {
            Component::Normal(name) => {
                resolved.push(name);
                if resolved.symlink_metadata().is_ok() {
                    resolved = fs::canonicalize(&resolved)?;
                }
            }
            // `resolved` is canonical up to a name that does not exist yet,
            // so its parent is the real one.
            Component::ParentDir => {
                resolved.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    Ok(resolved)
}
