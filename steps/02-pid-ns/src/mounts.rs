//! Mounts inside the container's own mount namespace.

use anyhow::{Context, Result};
use nix::mount::{MsFlags, mount};

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

// ANCHOR: proc
/// Mounts a proc filesystem on /proc. A proc mount shows the PID namespace
/// of the process that mounts it: ours, so the command sees its own
/// processes and nobody else's.
pub fn mount_proc() -> Result<()> {
    // ANCHOR: lab02-3-proc Mount a fresh proc filesystem on /proc: it shows the PID namespace of whoever mounts it [02-pid-ns.md#the-code]
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount(Some("proc"), "/proc", Some("proc"), flags, None::<&str>).context("mount proc on /proc")
    // ANCHOR_END: lab02-3-proc instead: Ok(())
}
// ANCHOR_END: proc
