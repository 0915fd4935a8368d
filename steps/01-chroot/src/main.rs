//! step01-chroot: the whole runtime at step 01.
//!
//! `run ROOTFS COMMAND`: fork; the child changes its root directory to ROOTFS
//! and executes COMMAND; the parent waits and leaves with the child's status.
//! Read this file top to bottom: it is the sequence of what happens.

mod cli;
mod command;
mod exit;
mod fds;
mod handoff;
mod rootfs;
mod signals;

use std::convert::Infallible;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, Pid, chdir, chroot, fork};

use command::Command;
use handoff::Handoff;

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
    let command = Command::new(args.command)?;
    let handoff = Handoff::new()?;
    signals::ignore_terminal_interrupts()?;
    // SAFETY: ferry has started no threads, so the child is an exact copy of a
    // single-threaded process and may run any code (not only async-signal-safe
    // functions) until it execs.
    match unsafe { fork() }.context("fork")? {
        ForkResult::Child => child(&rootfs, &command, &handoff),
        ForkResult::Parent { child } => parent(child, handoff),
    }
}
// ANCHOR_END: run

// ANCHOR: child
/// In the child: enter the root filesystem, then become COMMAND.
/// Never returns: if anything fails, the parent is told why and the child exits.
fn child(rootfs: &Path, command: &Command, handoff: &Handoff) -> ! {
    let failure = enter_container(rootfs, command).unwrap_err();
    handoff.fail(&failure)
}

fn enter_container(rootfs: &Path, command: &Command) -> Result<Infallible> {
    // The command starts clean: default signal actions, nothing blocked, and
    // no descriptor but 0, 1 and 2.
    signals::restore_defaults()?;
    fds::close_on_exec_above_stdio()?;
    // ANCHOR: lab01-1-chroot Change the root: chroot(2) into ROOTFS, then chdir("/") so the command does not start outside it [01-chroot.md#the-idea]
    chroot(rootfs).with_context(|| format!("chroot into {}", rootfs.display()))?;
    // chroot changes what "/" means but not the current directory, which still
    // points at the host's tree. Without this chdir the command would start
    // outside its own root.
    chdir("/").context("chdir to the new root")?;
    // ANCHOR_END: lab01-1-chroot
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
