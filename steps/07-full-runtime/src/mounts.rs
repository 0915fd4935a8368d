//! Mounts inside the container's own mount namespace.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::unistd::{chdir, pivot_root};

// ANCHOR: private
/// Makes every mount in our namespace private.
///
/// A new mount namespace starts as a copy of the parent's, and on systemd
/// hosts "/" is a *shared* mount: mounts made below it in the copy are
/// propagated back into the host's namespace. MS_PRIVATE | MS_REC cuts that
/// for every mount in our copy, without changing the host's.
pub fn make_all_private() -> Result<()> {
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .context("make / recursively private in the container's mount namespace")
}
// ANCHOR_END: private

// ANCHOR: pivot
/// Makes `new_root` the root of our mount namespace and detaches the old
/// root, so that no path, not even `..` from a chroot, leads back to the host.
///
/// pivot_root(2) moves the old root to `put_old` and mounts `new_root` as
/// "/". `new_root` must be a mount point (our overlay is), and the mounts
/// that would see the move may not be shared: those of `new_root`'s parent,
/// of the current root's parent, and of `put_old` (make_all_private saw to
/// that).
/// Passing "." for both, from inside `new_root`, stacks the old root on top
/// of the new one at "/"; unmounting "." then takes the old root away, with
/// no directory needed to park it in.
pub fn pivot_into(new_root: &Path) -> Result<()> {
    // ANCHOR: lab03-3-pivot Make the overlay the root: chdir into it, pivot_root(".", "."), then detach the old root with umount2(MNT_DETACH) [03-mount-overlay.md#pivot_root-a-new-root-and-the-old-one-gone]
    chdir(new_root).with_context(|| format!("chdir to {}", new_root.display()))?;
    pivot_root(".", ".").with_context(|| format!("pivot_root into {}", new_root.display()))?;
    // MNT_DETACH: the old root is busy (everything on the host uses it), so
    // detach it from our tree now and let the kernel free it when unused.
    umount2(".", MntFlags::MNT_DETACH).context("detach the old root")?;
    chdir("/").context("chdir to the new root")
    // ANCHOR_END: lab03-3-pivot instead: nix::unistd::chroot(new_root).with_context(|| format!("chroot into {}", new_root.display()))?; chdir("/").context("chdir to the new root")
}
// ANCHOR_END: pivot

// ANCHOR: proc
/// Mounts a proc filesystem on /proc. A proc mount shows the PID namespace
/// of the process that mounts it: ours, so the command sees its own
/// processes and nobody else's.
pub fn mount_proc() -> Result<()> {
    fs::create_dir_all("/proc").context("create /proc")?;
    // ANCHOR: lab02-3-proc Mount a fresh proc filesystem on /proc: it shows the PID namespace of whoever mounts it [02-pid-ns.md#the-code]
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount(Some("proc"), "/proc", Some("proc"), flags, None::<&str>).context("mount proc on /proc")
    // ANCHOR_END: lab02-3-proc instead: Ok(())
}
// ANCHOR_END: proc

// ANCHOR: sys
/// Mounts sysfs read-only, so that what programs write there by mistake
/// does not reconfigure the host's devices. It stops mistakes, not root:
/// with CAP_SYS_ADMIN, root in the container can remount it read-write.
pub fn mount_sys() -> Result<()> {
    fs::create_dir_all("/sys").context("create /sys")?;
    // ANCHOR: lab03-4-sys Mount sysfs on /sys, read-only (MS_RDONLY) [03-mount-overlay.md#the-code]
    let flags = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount(Some("sysfs"), "/sys", Some("sysfs"), flags, None::<&str>)
        .context("mount sysfs read-only on /sys")
    // ANCHOR_END: lab03-4-sys instead: Ok(())
}
// ANCHOR_END: sys
