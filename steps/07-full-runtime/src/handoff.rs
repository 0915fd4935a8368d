//! How the child tells the parent that it could not become the container.
//!
//! After fork, the child's errors are no longer the parent's: they happen in
//! another process. So the child writes its exit status and message into a
//! pipe opened with O_CLOEXEC. A successful exec closes that pipe with nothing
//! written, and the parent reads end-of-file; a failure leaves the message.
//! (std::process::Command reports spawn errors the same way.)

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use anyhow::{Context, Result};
use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::unistd::{close, pipe2, write};

use crate::exit::{self, Failure};

pub struct Handoff {
    read: OwnedFd,
    write: OwnedFd,
}

impl Handoff {
    pub fn new() -> Result<Self> {
        let (read, write) = pipe2(OFlag::O_CLOEXEC).context("create the exec-status pipe")?;
        Ok(Self { read, write })
    }

    // ANCHOR: runtime_is_gone
    /// Child side: whether the runtime has already gone, before the child
    /// asked to die with it (the kernel sends no parent-death signal for a
    /// parent that died first). Only the runtime holds the read end of the
    /// exec-status pipe once we have closed our copy: if it has gone, so has
    /// the read end, and poll reports an error on the write end.
    pub fn runtime_is_gone(&self) -> Result<bool> {
        // This copy of the Handoff is never dropped: the child execs or exits.
        close(self.read.as_raw_fd()).context("close the exec-status pipe's read end")?;
        let mut fds = [PollFd::new(self.write.as_fd(), PollFlags::POLLOUT)];
        poll(&mut fds, PollTimeout::ZERO).context("poll the exec-status pipe")?;
        let events = fds[0].revents().unwrap_or(PollFlags::empty());
        Ok(events.contains(PollFlags::POLLERR))
    }
    // ANCHOR_END: runtime_is_gone

    /// Child side: report `error` to the parent and exit with its status.
    pub fn fail(&self, error: &anyhow::Error) -> ! {
        let status = exit::code_for(error);
        let mut report = vec![status];
        report.extend_from_slice(format!("{error:#}").as_bytes());
        // If even this write fails there is no one left to tell; the exit
        // status below still says what kind of failure it was.
        let _ = write(&self.write, &report);
        // _exit, not exit: this copy of the process must not flush stdio
        // buffers or run exit handlers that belong to the parent.
        // SAFETY: _exit ends the process at once; nothing runs after it.
        unsafe { libc::_exit(i32::from(status)) }
    }

    /// Parent side: Ok once the child has exec'd COMMAND, or the child's error.
    pub fn wait_for_exec(self) -> Result<()> {
        // Close our copy of the write end, or we would wait for ourselves.
        drop(self.write);
        let mut report = Vec::new();
        File::from(self.read)
            .read_to_end(&mut report)
            .context("read the exec-status pipe")?;
        match report.split_first() {
            None => Ok(()),
            Some((&status, message)) => Err(Failure {
                status,
                message: String::from_utf8_lossy(message).into_owned(),
            }
            .into()),
        }
    }
}

/// What the child says when the parent closed the release pipe unused.
pub const GAVE_UP: &str = "the runtime gave up before the container's network was ready";

// ANCHOR: release
/// The other way round: the parent tells the child that what it prepares
/// for the container from outside is ready (from step 05, the network: the
/// child's end of the veth pair can only be made once the child's network
/// namespace exists, so after the clone). The child waits before exec.
pub struct Release {
    read: OwnedFd,
    write: OwnedFd,
}

impl Release {
    pub fn new() -> Result<Self> {
        let (read, write) = pipe2(OFlag::O_CLOEXEC).context("create the release pipe")?;
        Ok(Self { read, write })
    }

    /// Parent side: let the child go on.
    pub fn release(self) -> Result<()> {
        write(&self.write, b"go").context("write to the release pipe")?;
        Ok(())
    }

    /// Child side: wait to be released. End-of-file instead means that the
    /// runtime gave up on the container (it failed, or died) and closed the
    /// pipe: then there is nothing to wait for.
    pub fn wait(&self) -> Result<()> {
        // Our own copy of the write end would keep end-of-file from coming.
        close(self.write.as_raw_fd()).context("close the release pipe's write end")?;
        let mut word = [0u8; 2];
        let read = nix::unistd::read(&self.read, &mut word).context("read the release pipe")?;
        anyhow::ensure!(read == word.len(), "{GAVE_UP}");
        Ok(())
    }
}
// ANCHOR_END: release
