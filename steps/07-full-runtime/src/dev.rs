//! A minimal /dev: a fresh tmpfs with the few devices every program
//! expects, never the host's /dev (which holds its disks, its memory and
//! its terminals).

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};

use anyhow::{Context, Result};
use nix::mount::{MsFlags, mount};
use nix::sys::stat::{Mode, SFlag, makedev, mknod};

// ANCHOR: devices
/// Character devices: name, major, minor, as in every Linux system.
const DEVICES: [(&str, u64, u64); 6] = [
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

/// The conventional links into /proc, which programs use as file names.
const LINKS: [(&str, &str); 5] = [
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
    ("ptmx", "pts/ptmx"),
];
// ANCHOR_END: devices

pub fn mount_dev() -> Result<()> {
    // ANCHOR: lab03-5-dev A /dev of its own: a tmpfs, the six character devices (mknod), the links, a newinstance devpts and /dev/shm [03-mount-overlay.md#the-code]
    fs::create_dir_all("/dev").context("create /dev")?;
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME;
    mount(
        Some("tmpfs"),
        "/dev",
        Some("tmpfs"),
        flags,
        Some("mode=755,size=65536k"),
    )
    .context("mount tmpfs on /dev")?;
    for (name, major, minor) in DEVICES {
        let path = format!("/dev/{name}");
        mknod(
            path.as_str(),
            SFlag::S_IFCHR,
            Mode::empty(),
            makedev(major, minor),
        )
        .with_context(|| format!("mknod {path}"))?;
        // Set the mode afterwards: mknod's mode is filtered by our umask.
        fs::set_permissions(&path, fs::Permissions::from_mode(0o666))
            .with_context(|| format!("chmod {path}"))?;
    }
    for (name, target) in LINKS {
        symlink(target, format!("/dev/{name}")).with_context(|| format!("link /dev/{name}"))?;
    }
    mount_pts()?;
    mount_shm()
    // ANCHOR_END: lab03-5-dev instead: Ok(())
}

/// A devpts of our own: `newinstance` keeps the container's terminals apart
/// from the host's, so it sees only the ones opened inside it.
fn mount_pts() -> Result<()> {
    fs::create_dir("/dev/pts").context("create /dev/pts")?;
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC;
    mount(
        Some("devpts"),
        "/dev/pts",
        Some("devpts"),
        flags,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    )
    .context("mount devpts on /dev/pts")
}

/// POSIX shared memory lives in files under /dev/shm.
fn mount_shm() -> Result<()> {
    fs::create_dir("/dev/shm").context("create /dev/shm")?;
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount(
        Some("shm"),
        "/dev/shm",
        Some("tmpfs"),
        flags,
        Some("mode=1777,size=65536k"),
    )
    .context("mount tmpfs on /dev/shm")
}
