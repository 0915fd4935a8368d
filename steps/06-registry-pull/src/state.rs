//! The container's folder under `--root`: the overlay's upper and work
//! directories and its mount point. It exists exactly as long as the
//! container: created before the clone, removed when this value is dropped,
//! which the parent does on every way out of `run`, success or error.
//!
//! A runtime killed with `kill -9` drops nothing, and its folder stays. So
//! the runtime holds a lock on its folder while it lives (the kernel drops
//! the lock when the process dies, however it dies), and the next runtime
//! removes every container folder that nobody holds. A lock, not a pid: a
//! pid is reused, and a process that died a moment ago looks like one that
//! never started.

use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use nix::errno::Errno;
use nix::sys::statfs::{OVERLAYFS_SUPER_MAGIC, statfs};

/// What a container folder holds: no other folder is ever removed as one.
const LAYERS: [&str; 3] = ["upper", "work", "merged"];

pub struct ContainerDir {
    path: PathBuf,
    /// The folder, open and locked for as long as this runtime lives.
    _lock: File,
}

impl ContainerDir {
    // ANCHOR: create
    /// Creates `ROOT/ID/{upper,work,merged}`, locked.
    /// `rootfs` is the directory --root must not be inside, if ROOTFS is one.
    pub fn create(root: &Path, id: &str, rootfs: Option<&Path>) -> Result<Self> {
        let root = check_root(root, rootfs)?;
        let path = root.join(id);
        // Under the lock on ROOT, so that no other runtime looking for
        // folders left behind sees this one before it is locked.
        let lock = {
            let _root = lock(&root, true)?;
            fs::create_dir(&path)
                .with_context(|| format!("create the container directory {}", path.display()))?;
            lock(&path, true)
        };
        // From here on, a failure drops `dir` and removes what was made.
        let dir = match lock {
            Ok(lock) => Self { path, _lock: lock },
            Err(error) => {
                let _ = fs::remove_dir(&path);
                return Err(error);
            }
        };
        for layer in LAYERS {
            let layer = dir.path.join(layer);
            fs::create_dir(&layer).with_context(|| format!("create {}", layer.display()))?;
        }
        Ok(dir)
    }
    // ANCHOR_END: create

    // ANCHOR: left_behind
    /// Removes the folders of containers whose runtime died, and returns
    /// their ids. A folder whose lock we can take has no runtime alive.
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
            fs::remove_dir_all(&path).with_context(|| {
                format!("remove {}, left by a runtime that died", path.display())
            })?;
            removed.push(id.to_owned());
        }
        Ok(removed)
        // ANCHOR_END: lab03-6-left-behind instead: Ok(Vec::new())
    }
    // ANCHOR_END: left_behind

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
        entries
            .flatten()
            .all(|entry| LAYERS.iter().any(|layer| entry.file_name() == *layer))
    });
    id_like && path.is_dir() && only_layers
}

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
