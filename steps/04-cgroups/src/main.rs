//! step04-cgroups: the whole runtime at step 04.
//!
//! `run ROOTFS COMMAND`: make a writable layer for the container under
//! --root, and a cgroup with its limits; clone a child into new PID, UTS,
//! IPC and mount namespaces, move it into the cgroup and release it; the
//! child sets its hostname, mounts an overlay of its layer on ROOTFS,
//! pivots into it and detaches the host's tree, mounts /proc, /sys and /dev,
//! and executes COMMAND as PID 1; the parent waits, tells an out-of-memory
//! kill apart, removes the cgroup and the layer, and leaves with the
//! child's status.
//! Read this file top to bottom: it is the sequence of what happens.

mod cgroups;
mod cli;
mod command;
mod dev;
mod exit;
mod fds;
mod handoff;
mod id;
mod limits;
mod mounts;
mod namespaces;
mod overlay;
mod rootfs;
mod signals;
mod state;
mod terminal;

use std::convert::Infallible;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result, ensure};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::waitpid;
use nix::unistd::{Pid, sethostname};

use cgroups::Cgroup;
use command::Command;
use exit::Failure;
use handoff::Handoff;
use state::ContainerDir;

fn main() -> ExitCode {
    let args = match cli::parse() {
        Ok(cli::Cli {
            command: cli::Verb::Run(args),
        }) => args,
        Err(code) => return code,
    };
    match run(args) {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            // `{:#}` prints the error with its context on one line:
            // "chroot into /srv/rootfs: EPERM: Operation not permitted".
            eprintln!("error: {error:#}");
            ExitCode::from(exit::code_for(&error))
        }
    }
}

// ANCHOR: run
/// Runs the container and returns the exit code to leave with.
fn run(args: cli::RunArgs) -> Result<u8> {
    let rootfs = rootfs::check(&args.rootfs)?;
    let id = id::generate()?;
    let hostname = args.hostname.unwrap_or_else(|| id.clone());
    let command = Command::new(args.command)?;
    // Removed when `dir` is dropped: on return from here, whatever happened.
    let dir = ContainerDir::create(&args.root, &id, &rootfs)?;
    // Removed when dropped too, after killing whatever is left inside.
    let cgroup = Cgroup::create(&args.cgroup_parent, &id, &args.limits)?;
    let handoff = Handoff::new()?;
    // Given back to the caller's shell when this is dropped, on every way out.
    let _terminal = terminal::Foreground::save();
    signals::ignore_terminal_interrupts()?;
    let child = namespaces::clone_child(|| child(&rootfs, &dir, &hostname, &command, &handoff))?;
    parent(child, &cgroup, handoff)
}
// ANCHOR_END: run

// ANCHOR: child
/// In the child, now PID 1 of its own namespaces: set up the container,
/// then become COMMAND.
/// Never returns: if anything fails, the parent is told why and the child exits.
fn child(
    rootfs: &Path,
    dir: &ContainerDir,
    hostname: &str,
    command: &Command,
    handoff: &Handoff,
) -> ! {
    // Nothing runs until the parent has put us in our cgroup.
    let failure = handoff
        .wait_for_release()
        .and_then(|()| die_with_runtime(handoff))
        .and_then(|()| enter_container(rootfs, dir, hostname, command))
        .unwrap_err();
    handoff.fail(&failure)
}

/// The container must not outlive its runtime: nobody would wait for it.
fn die_with_runtime(handoff: &Handoff) -> Result<()> {
    signals::die_with_runtime()?;
    ensure!(
        !handoff.runtime_is_gone()?,
        "the runtime went away before the container started"
    );
    Ok(())
}

fn enter_container(
    rootfs: &Path,
    dir: &ContainerDir,
    hostname: &str,
    command: &Command,
) -> Result<Infallible> {
    // The command starts clean: default signal actions, nothing blocked, and
    // no descriptor but 0, 1 and 2.
    signals::restore_defaults()?;
    fds::close_on_exec_above_stdio()?;
    // Before any mount: our new mount namespace began as a copy of the
    // host's, still wired to it; cut the wires so nothing mounted here
    // shows up on the host.
    mounts::make_all_private()?;
    // The UTS namespace is ours alone: this changes no one else's hostname.
    sethostname(hostname).with_context(|| format!("set the hostname to {hostname}"))?;
    overlay::mount_overlay(rootfs, dir)?;
    mounts::pivot_into(&dir.merged())?;
    mounts::mount_proc()?;
    mounts::mount_sys()?;
    dev::mount_dev()?;
    command.exec()
}
// ANCHOR_END: child

// ANCHOR: parent
/// In the parent: put the child in its cgroup and release it, pass signals
/// on, learn whether the exec worked, wait for the end.
fn parent(child: Pid, cgroup: &Cgroup, handoff: Handoff) -> Result<u8> {
    signals::forward_to(child)?;
    if let Err(error) = cgroup.add(child).and_then(|()| handoff.release()) {
        // It is still waiting for its release: it has run nothing of COMMAND.
        let _ = kill(child, Signal::SIGKILL);
        let _ = waitpid(child, None);
        return Err(error);
    }
    let started = handoff.wait_for_exec();
    let status = waitpid(child, None).context("wait for the container")?;
    started?;
    let code = exit::code_of(status);
    // 137 is death by SIGKILL: from the kernel's OOM killer, or from
    // someone's `kill -9`? The cgroup counted its OOM kills.
    if code == 137
        && let Some(message) = cgroup.out_of_memory()?
    {
        return Err(Failure {
            status: code,
            message,
        }
        .into());
    }
    Ok(code)
}
// ANCHOR_END: parent
