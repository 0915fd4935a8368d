//! step05-veth: the whole runtime at step 05.
//!
//! `run ROOTFS COMMAND`: make a writable layer for the container under
//! --root, its network's host side (the bridge, an address, the NAT rules)
//! and a cgroup with its limits; clone a child into new PID, UTS, IPC,
//! mount and network namespaces, inside the cgroup where the kernel can (v2),
//! or it joins the cgroup as its first act (v1); the child enters a cgroup
//! namespace, sets its hostname, mounts an overlay of its layer on ROOTFS,
//! pivots into it and detaches the host's tree, mounts /proc, /sys, its
//! cgroups and /dev, waits for its network, and executes COMMAND as PID 1;
//! meanwhile the parent plugs a veth pair into the child's namespace and
//! releases it; then it waits, tells
//! an out-of-memory kill apart, removes the cgroup and the layer, and
//! leaves with the child's status.
//! Read this file top to bottom: it is the sequence of what happens.

mod cgroups;
mod cli;
mod command;
mod dev;
mod etc;
mod exit;
mod fds;
mod handoff;
mod id;
mod ipam;
mod limits;
mod mounts;
mod namespaces;
mod nat;
mod netlink;
mod network;
mod overlay;
mod ports;
mod rootfs;
mod signals;
mod state;
mod terminal;

use std::convert::Infallible;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result, ensure};
use nix::sys::signal::Signal;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{Pid, sethostname};

use cgroups::Cgroup;
use command::Command;
use exit::Failure;
use handoff::{Handoff, Release};
use ipam::Subnet;
use namespaces::{Born, Cloned};
use network::HostSide;
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
    for dead in dir.remove_left_behind()? {
        cgroups::remove_left_behind(&args.cgroup_parent, &dead)?;
    }
    // The network's half on the host, given back when dropped: an address,
    // the published ports. Then the /etc files that tell the container.
    let mut network = network::prepare(args.network, &id, &args.publish)?;
    etc::write(&dir.upper(), &hostname, network.address())?;
    // Removed when dropped too, after killing whatever is left inside.
    let cgroup = Cgroup::create(&args.cgroup_parent, &id, &args.limits)?;
    let handoff = Handoff::new()?;
    let release = Release::new()?;
    // Given back to the caller's shell when this is dropped, on every way out.
    let _terminal = terminal::Foreground::save();
    signals::ignore_terminal_interrupts()?;
    let new_network = args.network.has_namespace();
    match namespaces::clone_child(cgroup.clone_into(), new_network)? {
        Cloned::Child(born) => {
            let container = Container {
                rootfs: &rootfs,
                dir: &dir,
                hostname: &hostname,
                command: &command,
                new_network,
                inside: network.inside(),
            };
            child(born, &cgroup, &container, &handoff, &release)
        }
        Cloned::Parent(child) => parent(child, &id, &cgroup, &mut network, handoff, release),
    }
}

/// What the child makes of itself.
struct Container<'a> {
    rootfs: &'a Path,
    dir: &'a ContainerDir,
    hostname: &'a str,
    command: &'a Command,
    /// Whether it has a network namespace of its own.
    new_network: bool,
    /// On the bridge: its address, and the bridge's subnet.
    inside: Option<(Ipv4Addr, Subnet)>,
}
// ANCHOR_END: run

// ANCHOR: child
/// In the child, now PID 1 of its own namespaces: set up the container,
/// then become COMMAND.
/// Never returns: if anything fails, the parent is told why and the child exits.
fn child(
    born: Born,
    cgroup: &Cgroup,
    container: &Container,
    handoff: &Handoff,
    release: &Release,
) -> ! {
    let failure = join_cgroup(born, cgroup)
        .and_then(|()| die_with_runtime(handoff))
        .and_then(|()| enter_container(cgroup, container, release))
        .unwrap_err();
    handoff.fail(&failure)
}

/// First of all, before anything of the command can run: into the cgroup,
/// unless the kernel started us there.
fn join_cgroup(born: Born, cgroup: &Cgroup) -> Result<()> {
    match born {
        Born::InCgroup => Ok(()),
        Born::Outside => cgroup.join(),
    }
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
    cgroup: &Cgroup,
    container: &Container,
    release: &Release,
) -> Result<Infallible> {
    let Container {
        rootfs,
        dir,
        hostname,
        command,
        new_network,
        inside,
    } = *container;
    // The command starts clean: default signal actions, nothing blocked, and
    // no descriptor but 0, 1 and 2.
    signals::restore_defaults()?;
    fds::close_on_exec_above_stdio()?;
    // Our cgroup becomes the root of the cgroup tree we see.
    namespaces::enter_cgroup_namespace()?;
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
    cgroup.mount_in_container()?;
    dev::mount_dev()?;
    // The parent plugs in our end of the network meanwhile. Not a packet of
    // the command's may go out before eth0 has its address and route.
    release.wait()?;
    if new_network {
        network::configure_inside(inside)?;
    }
    command.exec()
}
// ANCHOR_END: child

// ANCHOR: parent
/// In the parent: pass signals on, connect the child's network, learn
/// whether the exec worked, wait for the end, and tell an out-of-memory
/// kill from the command's own status.
fn parent(
    child: Pid,
    id: &str,
    cgroup: &Cgroup,
    network: &mut HostSide,
    handoff: Handoff,
    release: Release,
) -> Result<u8> {
    signals::forward_to(child)?;
    // Its end of the veth pair can only be made now that its network
    // namespace exists.
    match network.connect(child, id) {
        Ok(()) => {}
        // A child that failed before we could connect it took its namespace
        // with it (ESRCH): its own error is the one that says why. It may
        // still be on its way out, so ask it: closing the release pipe ends
        // its wait if it got that far, and then it says only that we gave
        // up, and ours is the error to tell.
        Err(error) => {
            drop(release);
            return Err(match handoff.wait_for_exec() {
                Err(failed) if !format!("{failed:#}").contains(handoff::GAVE_UP) => failed,
                _ => error,
            });
        }
    }
    release.release()?;
    network.warn_of_the_firewall();
    let started = handoff.wait_for_exec();
    let status = waitpid(child, None).context("wait for the container")?;
    started?;
    let code = exit::code_of(status);
    // ANCHOR: lab04-6-oom Tell an out-of-memory kill from the command's own status: the cgroup's oom_kill count, and SIGKILL of the first process [04-cgroups.md#out-of-memory]
    let oom_kills = cgroup.oom_kills()?;
    if oom_kills == 0 {
        return Ok(code);
    }
    let limit = cgroup.memory_limit();
    // The container is what the OOM killer ended only if it ended its first
    // process: a shell can `exit 137` by itself after losing a child.
    if matches!(status, WaitStatus::Signaled(_, Signal::SIGKILL, _)) {
        return Err(Failure {
            status: code,
            message: format!("container killed: out of memory (limit {limit})"),
        }
        .into());
    }
    eprintln!(
        "warning: the out-of-memory killer ended {oom_kills} process(es) in the container (limit {limit})"
    );
    Ok(code)
    // ANCHOR_END: lab04-6-oom instead: Ok(code)
}
// ANCHOR_END: parent
