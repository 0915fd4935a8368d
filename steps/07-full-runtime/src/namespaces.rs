//! Namespaces: what the container sees of the system.
//!
//! Each namespace gives the child its own copy of one kind of kernel state:
//! - PID: its own process numbers, starting at 1;
//! - UTS: its own hostname;
//! - IPC: its own System V shared memory, semaphores and message queues;
//! - mount: its own mount table, so it can mount /proc without touching the host's;
//! - cgroup: its own cgroup as the root of the cgroup tree it sees;
//! - network: its own interfaces, addresses, routes, ports and firewall
//!   (unless `--network host`).
//!
//! Why clone and not unshare(2) then fork(2)? unshare moves the caller
//! into new namespaces, except for PID: a process never changes its own pid,
//! so after unshare(CLONE_NEWPID) only the caller's *next child* becomes
//! PID 1 of the new namespace. clone creates that child and its namespaces
//! in one call.

use std::os::fd::{AsRawFd, BorrowedFd};

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::sched::{CloneFlags, unshare};
use nix::unistd::Pid;

// ANCHOR: flags
// ANCHOR: lab02-1-namespaces New PID, UTS and IPC namespaces for the child, beside the mount namespace: CLONE_NEWPID, CLONE_NEWUTS, CLONE_NEWIPC [02-pid-ns.md#the-idea]
const NAMESPACES: CloneFlags = CloneFlags::CLONE_NEWPID
    .union(CloneFlags::CLONE_NEWUTS)
    .union(CloneFlags::CLONE_NEWIPC)
    .union(CloneFlags::CLONE_NEWNS);
// ANCHOR_END: lab02-1-namespaces instead: const NAMESPACES: CloneFlags = CloneFlags::CLONE_NEWNS;
// ANCHOR_END: flags

/// Where the child starts: in its cgroup already, or where we are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Born {
    InCgroup,
    Outside,
}

// ANCHOR: clone_args
/// clone3(2)'s argument: a struct, so that new features are new fields.
/// The kernel reads as many bytes as we say it has (88 here: "version 2",
/// the one with `cgroup`, Linux 5.7).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// Start the child in the cgroup that `CloneArgs::cgroup` names.
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;
// ANCHOR_END: clone_args

// ANCHOR: clone
/// What clone returns, as fork does: in the parent, the child's pid as the
/// host numbers it; in the child, where it was born.
pub enum Cloned {
    Parent(Pid),
    Child(Born),
}

/// Clones a child as PID 1 of new namespaces (a network namespace too if
/// `network`), inside the cgroup `cgroup` (a v2 cgroup's open directory)
/// where the kernel can.
pub fn clone_child(cgroup: Option<BorrowedFd>, network: bool) -> Result<Cloned> {
    // ANCHOR: lab05-1-netns A network namespace of its own for the child: CLONE_NEWNET, unless --network host [05-veth.md#the-idea]
    let flags = if network {
        NAMESPACES.union(CloneFlags::CLONE_NEWNET)
    } else {
        NAMESPACES
    };
    // ANCHOR_END: lab05-1-netns instead: let flags = NAMESPACES;
    let (pid, born) = match cgroup.map(|cgroup| clone3_into(cgroup, flags)) {
        Some(Ok(pid)) => (pid, Born::InCgroup),
        // Linux before 5.7 does not know CLONE_INTO_CGROUP (EINVAL, E2BIG),
        // before 5.3 has no clone3 at all (ENOSYS): the child joins by itself.
        None | Some(Err(Errno::EINVAL | Errno::E2BIG | Errno::ENOSYS)) => {
            (clone(flags)?, Born::Outside)
        }
        Some(Err(errno)) => {
            return Err(errno).context("clone3 into new namespaces and the container's cgroup");
        }
    };
    Ok(match pid {
        0 => Cloned::Child(born),
        pid => Cloned::Parent(Pid::from_raw(pid)),
    })
}

/// clone3 with the cgroup: returns 0 in the child and its pid in the parent.
fn clone3_into(cgroup: BorrowedFd, flags: CloneFlags) -> Result<libc::pid_t, Errno> {
    // ANCHOR: lab04-2-clone3 Start the child inside its v2 cgroup: clone3(2) with CLONE_INTO_CGROUP and the cgroup's open directory in CloneArgs [04-cgroups.md#into-the-cgroup-before-the-first-instruction]
    let mut args = CloneArgs {
        flags: flags.bits() as u64 | CLONE_INTO_CGROUP,
        // Tell us when it ends, like a forked child, so waitpid works.
        exit_signal: libc::SIGCHLD as u64,
        cgroup: cgroup.as_raw_fd() as u64,
        ..CloneArgs::default()
    };
    // SAFETY: with no CLONE_VM and no stack, clone3 works as fork(2) does:
    // the child goes on from here on its own copy of our memory. ferry has
    // started no threads, so no lock is held by a thread that would not
    // exist in the child.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &raw mut args,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    Errno::result(pid).map(|pid| pid as libc::pid_t)
    // ANCHOR_END: lab04-2-clone3 instead: Err(Errno::ENOSYS)
}

/// The classic clone(2), used as fork with flags (no new stack: the child
/// goes on from here on its copy of ours).
fn clone(flags: CloneFlags) -> Result<libc::pid_t> {
    let flags = flags.bits() as libc::c_long | libc::SIGCHLD as libc::c_long;
    // SAFETY: as for clone3_into: a fork-like clone of a single-threaded
    // process. The other arguments (stack, tids, tls) are unused and zero.
    let pid = unsafe { libc::syscall(libc::SYS_clone, flags, 0, 0, 0, 0) };
    Errno::result(pid)
        .map(|pid| pid as libc::pid_t)
        .context("clone into new namespaces")
}
// ANCHOR_END: clone

// ANCHOR: cgroup_namespace
/// In the child, once it is in its cgroup: a cgroup namespace whose root is
/// that cgroup. /proc/self/cgroup then says "/", not the host's path, and
/// a cgroup filesystem mounted inside shows the container's cgroup as its
/// root. (Not a clone flag: clone3 makes the namespace before it places the
/// child, so its root would be the runtime's cgroup.)
pub fn enter_cgroup_namespace() -> Result<()> {
    // ANCHOR: lab04-4-cgroupns Make its own cgroup the root of the tree it sees: unshare(CLONE_NEWCGROUP) [04-cgroups.md#the-containers-view-a-cgroup-namespace]
    unshare(CloneFlags::CLONE_NEWCGROUP).context("unshare a cgroup namespace")
    // ANCHOR_END: lab04-4-cgroupns instead: Ok(())
}
// ANCHOR_END: cgroup_namespace
