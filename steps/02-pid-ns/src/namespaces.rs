//! Namespaces: what the container sees of the system.
//!
//! Each namespace gives the child its own copy of one kind of kernel state:
//! - PID: its own process numbers, starting at 1;
//! - UTS: its own hostname;
//! - IPC: its own System V shared memory, semaphores and message queues;
//! - mount: its own mount table, so it can mount /proc without touching the host's.
//!
//! Why clone(2) and not unshare(2) then fork(2)? unshare moves the caller
//! into new namespaces, except for PID: a process never changes its own pid,
//! so after unshare(CLONE_NEWPID) only the caller's *next child* becomes
//! PID 1 of the new namespace. clone creates that child and its namespaces
//! in one call.

use std::convert::Infallible;

use anyhow::{Context, Result};
use nix::sched::{CloneFlags, clone};
use nix::sys::signal::Signal;
use nix::unistd::Pid;

// ANCHOR: flags
// ANCHOR: lab02-1-namespaces New PID, UTS and IPC namespaces for the child, beside the mount namespace: CLONE_NEWPID, CLONE_NEWUTS, CLONE_NEWIPC [02-pid-ns.md#the-idea]
const NAMESPACES: CloneFlags = CloneFlags::CLONE_NEWPID
    .union(CloneFlags::CLONE_NEWUTS)
    .union(CloneFlags::CLONE_NEWIPC)
    .union(CloneFlags::CLONE_NEWNS);
// ANCHOR_END: lab02-1-namespaces instead: const NAMESPACES: CloneFlags = CloneFlags::CLONE_NEWNS;
// ANCHOR_END: flags

/// The child's stack. clone() without CLONE_VM gives the child a copy of our
/// memory, this buffer included, and starts it on its own copy.
const STACK_SIZE: usize = 1024 * 1024;

// ANCHOR: clone
/// Starts `child` as PID 1 of new namespaces and returns its pid (as the
/// host numbers it). `child` must not return: it execs or exits.
pub fn clone_child(child: impl FnMut() -> Infallible) -> Result<Pid> {
    let mut child = child;
    let mut stack = vec![0u8; STACK_SIZE];
    // SIGCHLD: tell us when it ends, like a forked child, so waitpid works.
    let signal = Some(Signal::SIGCHLD as i32);
    // SAFETY: without CLONE_VM the child runs on its own copy of our memory,
    // like a forked child; ferry has started no threads, so no lock is held
    // by a thread that does not exist in the child. The callback never
    // returns, so the child never unwinds into frames of the parent's stack.
    unsafe {
        clone(
            Box::new(|| match child() {}),
            &mut stack,
            NAMESPACES,
            signal,
        )
    }
    .context("clone into new PID, UTS, IPC and mount namespaces")
}
// ANCHOR_END: clone
