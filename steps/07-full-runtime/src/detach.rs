//! `run -d`: the supervisor becomes a process of its own, and `ferry run`
//! returns as soon as the container has started, printing its id.
//!
//! fork(2) makes the supervisor. It calls setsid(2) to leave the caller's
//! session: no terminal of the caller's can stop it or hang it up, and its
//! Ctrl-C is not the supervisor's. The caller waits on two pipes. On the
//! first it gets the supervisor's stderr until the container has started,
//! so that a pull's progress and any error reach the user as with a
//! foreground `run`. On the second it gets the container's id once the
//! command runs; if that pipe closes with nothing said, the supervisor has
//! failed and exited, and its status is the caller's.
//!
//! Nothing but the supervisors stays behind: no daemon. (Docker's dockerd
//! and containerd run all the time; its containerd-shim is the part that
//! is like this supervisor.)

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::OwnedFd;

use anyhow::{Context, Result};
use nix::fcntl::OFlag;
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, dup2_stderr, dup2_stdin, dup2_stdout, fork, pipe2, setsid};

use crate::exit;

/// The supervisor's side: how to tell the caller that the container runs.
pub struct Detached {
    ready: OwnedFd,
}

impl Detached {
    /// The container runs: give the caller its id, and let the caller go by
    /// closing our stderr, which was its pipe.
    pub fn started(self, id: &str) -> Result<()> {
        File::from(self.ready)
            .write_all(id.as_bytes())
            .context("tell the caller the container's id")?;
        dup2_stderr(null()?).context("put /dev/null on stderr")?;
        Ok(())
    }
}

fn null() -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .context("open /dev/null")
}

// ANCHOR: fork
/// Returns in the supervisor, a new process. The caller never returns from
/// here: it exits, with status 0 once it has printed the id.
pub fn become_supervisor() -> Result<Detached> {
    let (stderr_read, stderr_write) = pipe2(OFlag::O_CLOEXEC).context("create a pipe")?;
    let (ready_read, ready_write) = pipe2(OFlag::O_CLOEXEC).context("create a pipe")?;
    // ANCHOR: lab07-1-fork Become the supervisor: fork(2); the child leaves the session (setsid), puts /dev/null on 0 and 1 and the pipe on 2; the parent copies that pipe, then prints the id it reads, or exits with the child's status (become_supervisor) [07-full-runtime.md#a-supervisor-per-container]
    // SAFETY: the process is single-threaded here (no pull has started any
    // thread yet), so the child's copy of it is whole.
    match unsafe { fork() }.context("fork the supervisor")? {
        ForkResult::Child => {
            drop((stderr_read, ready_read));
            setsid().context("setsid")?;
            let null = null()?;
            dup2_stdin(&null).context("put /dev/null on stdin")?;
            dup2_stdout(&null).context("put /dev/null on stdout")?;
            dup2_stderr(&stderr_write).context("put the caller's pipe on stderr")?;
            Ok(Detached { ready: ready_write })
        }
        ForkResult::Parent { child } => {
            drop((stderr_write, ready_write));
            // The supervisor's messages, until it closes its stderr.
            let mut messages = File::from(stderr_read);
            let _ = std::io::copy(&mut messages, &mut std::io::stderr());
            let mut id = String::new();
            let _ = File::from(ready_read).read_to_string(&mut id);
            let code = if id.is_empty() {
                // It failed, and said why on its stderr: its status is ours.
                waitpid(child, None).map_or(exit::RUNTIME_FAILURE, exit::code_of)
            } else {
                println!("{id}");
                0
            };
            std::process::exit(i32::from(code))
        }
    }
    // ANCHOR_END: lab07-1-fork
}
// ANCHOR_END: fork
