//! The container's root filesystem: an overlay of a writable upper layer on
//! the read-only ROOTFS.
//!
//! ```text
//!   merged/   what the container sees as "/"
//!     ▲  reads find a file in upper first, then in lower
//!   upper/    the container's writes: new files, copies of changed files,
//!             and "whiteouts" that hide deleted ones
//!   lower     ROOTFS, never written
//! ```

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;

use anyhow::Result;
use nix::errno::Errno;
use nix::mount::{MsFlags, mount};

use crate::state::ContainerDir;

// ANCHOR: mount_overlay
pub fn mount_overlay(rootfs: &Path, dir: &ContainerDir) -> Result<()> {
    // ANCHOR: lab03-1-overlay Mount an overlay on the container's merged/: ROOTFS as the lower layer, its upper/ and work/ under --root (mount(2), type "overlay") [03-mount-overlay.md#overlay-one-writable-layer-on-a-read-only-image]
    let mut options = OsString::from("lowerdir=");
    options.push(escape(rootfs));
    options.push(",upperdir=");
    options.push(escape(&dir.upper()));
    options.push(",workdir=");
    options.push(escape(&dir.work()));
    let merged = dir.merged();
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
            "mount overlay of ROOTFS {} on {}{hint}",
            rootfs.display(),
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
