//! The file descriptors the command inherits: 0, 1 and 2, and no others.
//!
//! execve keeps every open descriptor that is not marked close-on-exec. The
//! runtime's caller may hold some open (a shell's `exec 7</`, a CI runner's
//! log pipe), and they would reach the command. One open on a directory of
//! the host is a way out of any root: `/proc/self/fd/7` *is* that directory,
//! whatever the container's "/" is. runc's CVE-2024-21626 was such a leak.

use std::fs;
use std::os::fd::RawFd;

use anyhow::{Context, Result};
use nix::errno::Errno;

/// Marks every descriptor above 2 close-on-exec. They stay usable until the
/// exec (the exec-status pipe must), and none of them survives it.
// ANCHOR: close_on_exec
pub fn close_on_exec_above_stdio() -> Result<()> {
    // close_range(2) with CLOSE_RANGE_CLOEXEC does it in one call (Linux 5.11).
    // SAFETY: the call only sets a flag on this process's descriptors.
    let done = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if done == 0 {
        return Ok(());
    }
    // An older kernel: flag the open descriptors one by one, as /proc lists them.
    let errno = Errno::last();
    let open: Vec<RawFd> = fs::read_dir("/proc/self/fd")
        .with_context(|| format!("close_range: {errno}; and list /proc/self/fd"))?
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&fd| fd > 2)
        .collect();
    for fd in open {
        // SAFETY: fcntl on a number that may no longer be open (the listing's
        // own descriptor) only answers EBADF.
        if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } == -1
            && Errno::last() != Errno::EBADF
        {
            return Err(Errno::last()).with_context(|| format!("mark fd {fd} close-on-exec"));
        }
    }
    Ok(())
}
// ANCHOR_END: close_on_exec
