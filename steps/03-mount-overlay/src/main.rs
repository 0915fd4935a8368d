//! step03-mount-overlay: the whole runtime at step 03.
//!
//! `run ROOTFS COMMAND`: make a writable layer for the container under
//! --root; clone a child into new PID, UTS, IPC and mount namespaces; the
//! child sets its hostname, mounts an overlay of its layer on ROOTFS,
//! pivots into it and detaches the host's tree, mounts /proc, /sys and /dev,
//! and executes COMMAND as PID 1; the parent waits, removes the layer and
//! leaves with the child's status.
//! Read this file top to bottom: it is the sequence of what happens.

mod cli;
mod command;
mod dev;
mod exit;
mod fds;
mod handoff;
mod id;
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
use nix::sys::wait::waitpid;
use nix::unistd::{Pid, sethostname};

use command::Command;
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
    // What runtimes killed with `kill -9` left is ours to remove.
    dir.remove_left_behind()?;
    let handoff = Handoff::new()?;
    // Given back to the caller's shell when this is dropped, on every way out.
    let _terminal = terminal::Foreground::save();
    signals::ignore_terminal_interrupts()?;
    let child = namespaces::clone_child(|| child(&rootfs, &dir, &hostname, &command, &handoff))?;
    parent(child, handoff)
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
    let failure = die_with_runtime(handoff)
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
    // ANCHOR: lab02-2-hostname Name the container: sethostname(2), which only changes the new UTS namespace's name [02-pid-ns.md#the-code]
    // The UTS namespace is ours alone: this changes no one else's hostname.
    sethostname(hostname).with_context(|| format!("set the hostname to {hostname}"))?;
    // ANCHOR_END: lab02-2-hostname instead:
    overlay::mount_overlay(rootfs, dir)?;
    mounts::pivot_into(&dir.merged())?;
    mounts::mount_proc()?;
    mounts::mount_sys()?;
    dev::mount_dev()?;
    command.exec()
}
// ANCHOR_END: child

// ANCHOR: parent
/// In the parent: pass signals on, learn whether the exec worked, wait for the end.
fn parent(child: Pid, handoff: Handoff) -> Result<u8> {
    signals::forward_to(child)?;
    let started = handoff.wait_for_exec();
    let status = waitpid(child, None).context("wait for the container")?;
    started?;
    Ok(exit::code_of(status))
}
// ANCHOR_END: parent
