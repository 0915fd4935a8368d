//! Exit statuses, chosen so that a caller can tell who failed: the command
//! (its own status, or 128+N if signal N killed it), or the runtime (125), or
//! the exec of the command (126, 127): the same convention as `docker run`
//! and POSIX shells.

use std::fmt;

use nix::sys::wait::WaitStatus;

/// The runtime itself failed: bad arguments, a bad ROOTFS, a failed syscall.
pub const RUNTIME_FAILURE: u8 = 125;
/// The command exists but cannot be executed.
pub const NOT_EXECUTABLE: u8 = 126;
/// The command does not exist in the container.
pub const NOT_FOUND: u8 = 127;

/// An error that says which exit status it deserves; any other error is 125.
#[derive(Debug)]
pub struct Failure {
    pub status: u8,
    pub message: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

/// The exit status for a runtime error.
pub fn code_for(error: &anyhow::Error) -> u8 {
    error
        .downcast_ref::<Failure>()
        .map_or(RUNTIME_FAILURE, |failure| failure.status)
}

// ANCHOR: code_of
/// The exit status that relays how the container's command ended.
pub fn code_of(status: WaitStatus) -> u8 {
    // ANCHOR: lab01-3-status Relay how the command ended: its exit code, or 128+N for death by signal N (WaitStatus) [01-chroot.md#the-code]
    match status {
        WaitStatus::Exited(_, code) => code as u8,
        // Shells report death by signal N as 128+N: 137 for SIGKILL (9).
        WaitStatus::Signaled(_, signal, _) => 128 + signal as u8,
        // waitpid without WUNTRACED or WCONTINUED reports only the two above.
        _ => RUNTIME_FAILURE,
    }
    // ANCHOR_END: lab01-3-status
}
// ANCHOR_END: code_of
