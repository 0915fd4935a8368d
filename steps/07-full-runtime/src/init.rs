//! `--init`: a small init as PID 1, between the container and its command,
//! doing what tini does for `docker run --init`.
//!
//! PID 1 of a PID namespace has two duties that ordinary programs don't
//! know they have (chapter 2):
//!
//! - Signals: the kernel delivers a signal to PID 1 only if PID 1 has a
//!   handler for it. A command that never installed one (most don't; they
//!   rely on the default action) ignores `ferry stop`'s SIGTERM, and is
//!   killed 10 seconds later.
//! - Orphans: a process whose parent dies is given to PID 1, which must
//!   wait(2) for it when it ends. A command that never waits for children
//!   it did not start leaves them as zombies (`<defunct>` in `ps`), each
//!   holding a pid, until the pids limit is reached.
//!
//! So PID 1 forks: the child becomes the command, and PID 1 stays in this
//! code, which handles every signal by passing it on to the command, and
//! waits for any child at all. When the command ends, PID 1 ends with its
//! status, and the kernel ends the rest of the namespace.

use std::convert::Infallible;

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork};

use crate::command::Command;
use crate::signals;

// ANCHOR: init
/// In the container's PID 1, last: start the command as our child, then
/// pass signals on and reap, until the command ends.
pub fn run(command: &Command) -> Result<Infallible> {
    // ANCHOR: lab07-6-init Be an init: fork the command; in PID 1 close every fd above 2, pass signals on to the command (forward_all_to), reap until it ends, and exit with its status (run) [07-full-runtime.md#an-init-for-pid-1]
    // SAFETY: the container's PID 1 is single-threaded.
    match unsafe { fork() }.context("fork the command")? {
        // The command's exec errors reach the supervisor on the exec-status
        // pipe, which the child holds.
        ForkResult::Child => command.exec(),
        ForkResult::Parent { child } => {
            // Nothing of the runtime's may stay open in PID 1, which never
            // execs: not the exec-status pipe (the supervisor would wait on
            // it for ever), nor a lock on the container's folder.
            close_above_stdio();
            signals::forward_all_to(child)?;
            let code = reap_until(child);
            std::process::exit(i32::from(code))
        }
    }
    // ANCHOR_END: lab07-6-init instead: command.exec()
}

/// Waits for every child; returns the status to exit with once `command`
/// has ended: its own, or 128+N if signal N killed it.
fn reap_until(command: Pid) -> u8 {
    loop {
        match waitpid(Pid::from_raw(-1), None) {
            Ok(status @ (WaitStatus::Exited(pid, _) | WaitStatus::Signaled(pid, _, _)))
                if pid == command =>
            {
                return crate::exit::code_of(status);
            }
            // An orphan, reaped: that is all it needed.
            Ok(_) | Err(Errno::EINTR) => {}
            // No child left at all: the command is gone too.
            Err(_) => return crate::exit::RUNTIME_FAILURE,
        }
    }
}
// ANCHOR_END: init

fn close_above_stdio() {
    // SAFETY: closes this process's descriptors from 3 up; none of them is
    // used after this point.
    if unsafe { libc::syscall(libc::SYS_close_range, 3, u32::MAX, 0) } == 0 {
        return;
    }
    // Linux before 5.9: one by one, as /proc lists them (collected first:
    // the listing is itself a descriptor).
    let open: Vec<i32> = std::fs::read_dir("/proc/self/fd")
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&fd| fd > 2)
        .collect();
    for fd in open {
        // SAFETY: as above; a number that is no longer open answers EBADF.
        unsafe { libc::close(fd) };
    }
}
