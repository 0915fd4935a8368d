//! `-v, --volume HOST_DIR:CONTAINER_DIR[:ro]`: a directory of the host, seen
//! inside the container, as Docker's bind mounts (`docker run -v`).
//!
//! A bind mount makes one directory appear at a second place; the files are
//! the same files, so what the container writes there is on the host, and
//! stays after the container. It is mounted onto the overlay before the
//! pivot, while the host's path can still be named. That is the trap: an
//! image may hold a symlink (`/data -> /etc`), and before the pivot the
//! kernel follows it to the *host's* /etc, so that even making the place
//! (`mkdir -p`) would write on the host, and the mount would cover the
//! host's files (runc's CVE-2021-30465). So the place is walked one name at
//! a time from the container's root, each symlink resolved as it would be
//! inside the container (an absolute target from the container's root, and
//! `..` never above it), and what is missing is made there. Nothing runs
//! inside the container yet, so nothing can swap the path between the walk
//! and the mount.

use std::ffi::OsString;
use std::fs;
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result, ensure};
use nix::mount::{MsFlags, mount};

#[derive(Debug, Clone)]
pub struct Volume {
    pub host: PathBuf,
    pub container: PathBuf,
    pub read_only: bool,
}

/// Docker's short form. A first part that is not a path is a named volume
/// in Docker, which ferry does not have.
pub fn parse(text: &str) -> Result<Volume, String> {
    let parts: Vec<&str> = text.split(':').collect();
    let (host, container, read_only) = match parts[..] {
        [host, container] => (host, container, false),
        [host, container, "ro"] => (host, container, true),
        [host, container, "rw"] => (host, container, false),
        [_, _, mode] => return Err(format!("invalid mode {mode:?}: ro or rw")),
        _ => return Err("give HOST_DIR:CONTAINER_DIR[:ro]".to_owned()),
    };
    if !host.starts_with('/') {
        return Err(format!(
            "{host:?} is not an absolute path: ferry has no named volumes, give a host directory"
        ));
    }
    // Checked here, before anything is made: a typo is not a reason to
    // make a directory on the host as root (Docker's `-v` would; its
    // `--mount` refuses, as ferry does).
    if !Path::new(host).is_dir() {
        return Err(format!("the host directory {host} does not exist"));
    }
    if !container.starts_with('/') || Path::new(container) == Path::new("/") {
        return Err(format!(
            "{container:?}: the place in the container must be an absolute path, not /"
        ));
    }
    Ok(Volume {
        host: PathBuf::from(host),
        container: PathBuf::from(container),
        read_only,
    })
}

// ANCHOR: mount
/// Mounts each volume onto the container's root `merged`, before the pivot.
pub fn mount_all(volumes: &[Volume], merged: &Path) -> Result<()> {
    for volume in volumes {
        // As Docker does: a host directory that is missing is made.
        fs::create_dir_all(&volume.host).with_context(|| {
            format!(
                "create the volume's host directory {}",
                volume.host.display()
            )
        })?;
        let resolved = resolve_inside(merged, &volume.container)?;
        mount(
            Some(&volume.host),
            &resolved,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .with_context(|| {
            format!(
                "bind-mount {} on {}",
                volume.host.display(),
                volume.container.display()
            )
        })?;
        if volume.read_only {
            // A bind mount takes its flags from a second mount call: the
            // first ignores MS_RDONLY.
            let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
            mount(None::<&str>, &resolved, None::<&str>, flags, None::<&str>)
                .with_context(|| format!("make {} read-only", volume.container.display()))?;
        }
    }
    Ok(())
}
// ANCHOR_END: mount

// ANCHOR: resolve
/// `place` as the container will see it, on the host's side of `root`:
/// symlinks followed inside `root`, the directories that are missing made.
fn resolve_inside(root: &Path, place: &Path) -> Result<PathBuf> {
    // ANCHOR: lab07-7-resolve Walk the place one name at a time from the container's root: a symlink resolved inside it (absolute from the root, .. never above it), what is missing made (resolve_inside) [07-full-runtime.md#volumes]
    let mut todo: Vec<OsString> = components(place);
    todo.reverse();
    let mut now = root.to_path_buf();
    let mut links = 0;
    while let Some(name) = todo.pop() {
        if name == ".." {
            // Never above the container's root, as in the container.
            if now != root {
                now.pop();
            }
            continue;
        }
        let next = now.join(&name);
        match fs::symlink_metadata(&next) {
            Ok(meta) if meta.file_type().is_symlink() => {
                links += 1;
                ensure!(links <= 40, "{}: too many symlinks", place.display());
                let target = fs::read_link(&next)
                    .with_context(|| format!("read the symlink {}", next.display()))?;
                if target.is_absolute() {
                    now = root.to_path_buf();
                }
                let mut more = components(&target);
                more.reverse();
                todo.extend(more);
            }
            Ok(meta) => {
                ensure!(
                    meta.is_dir(),
                    "the volume's place {} is not a directory in the container",
                    place.display()
                );
                now = next;
            }
            Err(_) => {
                fs::create_dir(&next)
                    .with_context(|| format!("create {} in the container", place.display()))?;
                now = next;
            }
        }
    }
    Ok(now)
    // ANCHOR_END: lab07-7-resolve instead: Ok(root.join(place.strip_prefix("/").unwrap_or(place)))
}

/// The names in a path, `.` and `/` dropped, `..` kept.
fn components(path: &Path) -> Vec<OsString> {
    path.components()
        .filter_map(|part| match part {
            Component::Normal(name) => Some(name.to_owned()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect()
}
// ANCHOR_END: resolve
