//! The root filesystem: a plain directory that will become the container's
//! "/", or an image's layers, stacked.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, ensure};

use crate::image::RunConfig;
use crate::pull;
use crate::reference::Reference;
use crate::store::{Image, Store};

pub enum Rootfs {
    Directory(PathBuf),
    Image(Box<Image>),
}

impl Rootfs {
    /// The overlay's lower directories, bottom first.
    pub fn lowers(&self) -> Vec<PathBuf> {
        match self {
            Rootfs::Directory(dir) => vec![dir.clone()],
            Rootfs::Image(image) => image.layers.clone(),
        }
    }

    /// What the image says about running it; a directory says nothing.
    pub fn run_config(&self) -> Option<RunConfig> {
        match self {
            Rootfs::Directory(_) => None,
            Rootfs::Image(image) => Some(image.config.config.clone().unwrap_or_default()),
        }
    }

    /// The directory that --root must not be inside.
    pub fn directory(&self) -> Option<&Path> {
        match self {
            Rootfs::Directory(dir) => Some(dir),
            Rootfs::Image(_) => None,
        }
    }
}

// ANCHOR: resolve
/// ROOTFS|IMAGE: a directory if one is there (or the name is a path, with a
/// '/' first or a '.'), else an image: from the store, or pulled into it.
pub fn resolve(arg: &Path, root: &Path, options: &pull::Options) -> Result<Rootfs> {
    let text = arg.to_string_lossy();
    let is_path = text.starts_with('/') || text.starts_with('.');
    match fs::metadata(arg) {
        Ok(_) => return Ok(Rootfs::Directory(check(arg)?)),
        Err(error) if error.kind() != ErrorKind::NotFound || is_path => {
            return Err(error).with_context(|| format!("rootfs {}", arg.display()));
        }
        Err(_) => {}
    }
    let reference = Reference::parse(&text)
        .with_context(|| format!("{text:?} is no directory here, nor an image reference"))?;
    let store = Store::open(root)?;
    // Stored for another platform than --platform asks for: pulled
    // again, as Docker does.
    let stored = store.find(&reference)?;
    let other_platform = match (
        &options.platform,
        stored.as_ref().and_then(|e| e.platform.as_ref()),
    ) {
        (Some(wanted), Some(platform)) if !wanted.matches(platform) => Some(wanted),
        _ => None,
    };
    let entry = match (stored, other_platform) {
        (Some(entry), None) => entry,
        (stored, _) => {
            match other_platform {
                Some(wanted) if stored.is_some() => {
                    eprintln!(
                        "image {reference} is here for another platform than {wanted}: pulling it"
                    )
                }
                _ => eprintln!("unable to find image {reference} here: pulling it"),
            }
            pull::pull(&store, &reference, options)?
        }
    };
    Ok(Rootfs::Image(Box::new(store.open_image(&entry)?)))
}
// ANCHOR_END: resolve

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
