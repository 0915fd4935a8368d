//! The root filesystem: a plain directory that will become the container's "/".

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, ensure};

/// Checks that ROOTFS is a directory and returns its absolute path.
pub fn check(rootfs: &Path) -> Result<PathBuf> {
    let metadata = fs::metadata(rootfs).with_context(|| format!("rootfs {}", rootfs.display()))?;
    ensure!(
        metadata.is_dir(),
        "rootfs {} is not a directory",
        rootfs.display()
    );
    fs::canonicalize(rootfs).with_context(|| format!("rootfs {}", rootfs.display()))
}
