//! The container's folder under `--root`: the overlay's upper and work
//! directories and its mount point. It exists exactly as long as the
//! container: created before the clone, removed when this value is dropped,
//! which the parent does on every way out of `run`, success or error.

use std::fs;
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use nix::sys::statfs::{OVERLAYFS_SUPER_MAGIC, statfs};

pub struct ContainerDir {
    path: PathBuf,
}

impl ContainerDir {
    /// Creates `ROOT/ID/{upper,work,merged}`.
    pub fn create(root: &Path, id: &str, rootfs: &Path) -> Result<Self> {
        let root = check_root(root, rootfs)?;
        let path = root.join(id);
        fs::create_dir(&path)
            .with_context(|| format!("create the container directory {}", path.display()))?;
        // From here on, a failure drops `dir` and removes what was made.
        let dir = Self { path };
        for layer in ["upper", "work", "merged"] {
            let layer = dir.path.join(layer);
            fs::create_dir(&layer).with_context(|| format!("create {}", layer.display()))?;
        }
        Ok(dir)
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

/// `--root` must be creatable, outside ROOTFS, and not on overlayfs.
fn check_root(root: &Path, rootfs: &Path) -> Result<PathBuf> {
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
