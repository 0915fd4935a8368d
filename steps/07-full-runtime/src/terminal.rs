//! The terminal's foreground process group, given back after the container.
//!
//! A terminal delivers what is typed, Ctrl-C included, to one process group:
//! its foreground group. Any other group that reads from it is stopped
//! (SIGTTIN). An interactive shell makes its own group the foreground one,
//! and on exit hands the terminal back to the group it found there. A shell
//! that is PID 1 of a new PID namespace cannot: that group is outside its
//! namespace, invisible to it (its getpgrp() says 0). The terminal would stay
//! with a group that no longer exists, and the next program that reads from
//! it, the caller's shell or script, would be stopped. So the runtime notes
//! the foreground group before the container starts and gives the terminal
//! back when it is done.

use std::io::stdin;

use nix::sys::signal::{SigHandler, Signal, signal};
use nix::unistd::{Pid, getpgrp, isatty, tcgetpgrp, tcsetpgrp};

// ANCHOR: foreground
/// The caller's foreground group, restored when this value is dropped.
pub struct Foreground {
    group: Option<Pid>,
}

impl Foreground {
    /// Notes the foreground group, if stdin is a terminal and we are in it.
    pub fn save() -> Self {
        let ours = isatty(stdin()).unwrap_or(false)
            && tcgetpgrp(stdin()).is_ok_and(|group| group == getpgrp());
        Self {
            group: ours.then(getpgrp),
        }
    }
}

impl Drop for Foreground {
    fn drop(&mut self) {
        let Some(group) = self.group else { return };
        if tcgetpgrp(stdin()).is_ok_and(|now| now == group) {
            return;
        }
        // We are a background group now, and a background group that sets
        // the foreground group is stopped with SIGTTOU unless it ignores it.
        // SAFETY: SigIgn and the disposition it replaces run no code of ours.
        let previous = unsafe { signal(Signal::SIGTTOU, SigHandler::SigIgn) };
        if let Err(error) = tcsetpgrp(stdin(), group) {
            eprintln!("error: give the terminal back to process group {group}: {error}");
        }
        if let Ok(previous) = previous {
            // SAFETY: as above: restoring a disposition we read a moment ago.
            let _ = unsafe { signal(Signal::SIGTTOU, previous) };
        }
    }
}
// ANCHOR_END: foreground
