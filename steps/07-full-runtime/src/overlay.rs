//! The container's root filesystem: an overlay of a writable upper layer on
//! the read-only layers below: ROOTFS, or an image's layers, stacked.
//!
//! ```text
//!   merged/   what the container sees as "/"
//!     ▲  reads find a file in upper first, then in each lower, top down
//!   upper/    the container's writes: new files, copies of changed files,
//!             and "whiteouts" that hide deleted ones
//!   lower N   the image's top layer: its whiteouts hide files below it
//!   …
//!   lower 1   the image's first layer, or ROOTFS; never written
//! ```

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use anyhow::{Result, ensure};
use nix::errno::Errno;
use nix::mount::{MsFlags, mount};

use crate::state::ContainerDir;

// ANCHOR: mount_overlay
/// `lowers` bottom first: ROOTFS alone, or an image's layers in the
/// manifest's order.
pub fn mount_overlay(lowers: &[PathBuf], dir: &ContainerDir) -> Result<()> {
    let rootfs = lowers
        .first()
        .map(PathBuf::as_path)
        .unwrap_or(Path::new(""));
    // ANCHOR: lab03-1-overlay Mount an overlay on the container's merged/: ROOTFS as the lower layer, its upper/ and work/ under --root (mount(2), type "overlay") [03-mount-overlay.md#overlay-one-writable-layer-on-a-read-only-image]
    let mut options = OsString::from("lowerdir=");
    // ANCHOR: lab06-8-lowers Stack every layer as a lower directory: overlayfs takes them top first, separated by ':' [06-registry-pull.md#layers-stacked-by-overlayfs]
    // overlayfs lists the lower layers top first: the last layer of the
    // manifest is the one whose files and whiteouts win.
    for (i, lower) in lowers.iter().rev().enumerate() {
        if i > 0 {
            options.push(":");
        }
        options.push(escape(lower));
    }
    // ANCHOR_END: lab06-8-lowers instead: options.push(escape(rootfs));
    options.push(",upperdir=");
    options.push(escape(&dir.upper()));
    options.push(",workdir=");
    options.push(escape(&dir.work()));
    // mount(2) copies its options in one page, and cuts longer ones short:
    // an image of many layers must be told so, not mounted wrong.
    ensure!(
        options.len() < 4096,
        "the image's {} layers make overlay options of {} bytes, more than the 4096 that \
         mount(2) takes",
        lowers.len(),
        options.len()
    );
    let merged = dir.merged();
    let what = match lowers.len() {
        1 => format!("ROOTFS {}", rootfs.display()),
        n => format!("the image's {n} layers"),
    };
    mount(
        Some("overlay"),
        &merged,
        Some("overlay"),
        MsFlags::empty(),
        Some(options.as_os_str()),
    )
    .map_err(|errno| {
        // The kernel explains an EINVAL only in its log: a lower layer it
        // cannot stack on (procfs, say), or an upper directory on overlayfs.
        let hint = if errno == Errno::EINVAL {
            " (the kernel says why in `dmesg | tail`)"
        } else {
            ""
        };
        anyhow::Error::new(errno).context(format!(
            "mount overlay of {what} on {}{hint}",
            merged.display()
        ))
    })
    // ANCHOR_END: lab03-1-overlay instead: mount(Some(rootfs), &dir.merged(), None::<&str>, MsFlags::MS_BIND, None::<&str>).map_err(|errno| anyhow::anyhow!("bind-mount {}: {errno}", rootfs.display()))
}
// ANCHOR_END: mount_overlay

// ANCHOR: escape
/// overlayfs reads ',' as the end of an option and ':' as the end of a
/// lower layer, unless a '\' comes before them; it then drops the '\'.
/// Without this, ROOTFS `/srv/a:b` would be two layers, `/srv/a` and `b`.
fn escape(path: &Path) -> OsString {
    // ANCHOR: lab03-2-escape Escape a path for overlayfs's options: a '\' before each ',', ':' and '\' [03-mount-overlay.md#the-code]
    let mut escaped = Vec::new();
    for &byte in path.as_os_str().as_bytes() {
        if matches!(byte, b'\\' | b':' | b',') {
            escaped.push(b'\\');
        }
        escaped.push(byte);
    }
    OsString::from_vec(escaped)
    // ANCHOR_END: lab03-2-escape
}
// ANCHOR_END: escape
