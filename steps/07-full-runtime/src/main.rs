//! ferry: the whole runtime at step 07, a small Docker.
//!
//! `run ROOTFS|IMAGE COMMAND` does what step 06's did (find or pull the
//! image, make the container's layer, network and cgroup, clone the child
//! into its namespaces, pivot into its overlay, exec COMMAND), and the
//! process that did so stays as the container's supervisor: it copies the
//! container's output into its log (and to the caller, unless `-d`), waits
//! for it, and records how it ended. With `-d` the supervisor is a process
//! of its own and `run` returns at once with the container's id. The
//! container's folder and record stay after it ends, for `ps -a`, `logs`
//! and `inspect`, until `rm` (or at once with `--rm`).
//!
//! The other verbs (containers.rs, verbs.rs) are short processes that find
//! the container by its record under --root, and its supervisor by the lock
//! the supervisor holds.
//! Read `run` top to bottom: it is the sequence of what happens.

mod cgroups;
mod cli;
mod clock;
mod command;
mod containers;
mod detach;
mod dev;
mod digest;
mod distribution;
mod etc;
mod exec;
mod exit;
mod fds;
mod handoff;
mod image;
mod init;
mod ipam;
mod layer;
mod limits;
mod logs;
mod mounts;
mod names;
mod namespaces;
mod nat;
mod netlink;
mod network;
mod overlay;
mod ports;
mod pull;
mod record;
mod reference;
mod rootfs;
mod signals;
mod state;
mod stdio;
mod store;
mod supervisor;
mod table;
mod terminal;
mod user;
mod verbs;
mod volumes;

use std::convert::Infallible;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
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
use record::{Record, Status};
use state::ContainerDir;
use stdio::Stdio;

fn main() -> ExitCode {
    let verb = match cli::parse() {
        Ok(cli::Cli { command }) => command,
        Err(code) => return code,
    };
    let outcome = match verb {
        cli::Verb::Run(args) => run(args),
        cli::Verb::Pull(args) => verbs::pull(args).map(|()| 0),
        cli::Verb::Images(args) => verbs::images(args).map(|()| 0),
        cli::Verb::Rmi(args) => verbs::rmi(args).map(|()| 0),
        cli::Verb::Ps(args) => containers::ps(args).map(|()| 0),
        cli::Verb::Logs(args) => containers::logs(args).map(|()| 0),
        cli::Verb::Exec(args) => exec::exec(args),
        cli::Verb::Stop(args) => containers::stop(args).map(|()| 0),
        cli::Verb::Kill(args) => containers::kill_containers(args).map(|()| 0),
        cli::Verb::Rm(args) => containers::rm(args).map(|()| 0),
        cli::Verb::Inspect(args) => containers::inspect(args).map(|()| 0),
        cli::Verb::Version => {
            println!(
                "ferry version {} (workshop step 07), {}",
                env!("CARGO_PKG_VERSION"),
                image::Platform::host()
            );
            Ok(0)
        }
    };
    match outcome {
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
fn run(args: Box<cli::RunArgs>) -> Result<u8> {
    let args = *args;
    // With -d, all that follows happens in a supervisor of its own; this
    // process only waits until the container has started, and leaves.
    let detached = args.detach.then(detach::become_supervisor).transpose()?;
    // A directory, or an image's layers (pulled first if they are not
    // here), held so that no `rmi` removes them while the container runs.
    let pull_options = verbs::pull_options(args.registry)?;
    let rootfs = rootfs::resolve(&args.rootfs, &args.store.root, &pull_options)?;
    let mut record = new_record(&args.rootfs, args.name, args.rm, args.process.tty)?;
    let id = record.short_id().to_owned();
    let hostname = args.hostname.unwrap_or_else(|| id.clone());
    let overrides = command::Overrides {
        env: args.process.env,
        tty: args.process.tty,
        entrypoint: args.entrypoint,
        workdir: args.process.workdir,
        user: args.process.user,
    };
    let command = Command::new(args.command, rootfs.run_config().as_ref(), overrides)?;
    record.command = command.line();
    (record.env, record.workdir, record.user) = command.context();
    record.hostname.clone_from(&hostname);
    record.cgroup_parent.clone_from(&args.cgroup_parent);
    record.ports = args.publish.iter().map(ToString::to_string).collect();
    // Removed when `dir` is dropped, unless the command got to run.
    let mut dir = ContainerDir::create(&args.store.root, &mut record, rootfs.directory())?;
    // What supervisors killed with `kill -9` left is ours to remove.
    for dead in dir.remove_left_behind()? {
        cgroups::remove_left_behind(&args.cgroup_parent, &dead)?;
    }
    let mut log = logs::Writer::create(dir.path())?;
    // The network's half on the host, given back when dropped: an address,
    // the published ports. Then the /etc files that tell the container.
    let mut network = network::prepare(args.network, &id, &args.publish)?;
    etc::write(&dir.upper(), &hostname, network.address())?;
    // Removed when dropped too, after killing whatever is left inside.
    let cgroup = Cgroup::create(&args.cgroup_parent, &id, &args.limits)?;
    let stdio = Stdio::new(
        args.process.tty,
        args.process.interactive,
        detached.is_none(),
    )?;
    let handoff = Handoff::new()?;
    let release = Release::new()?;
    // Given back to the caller's shell when this is dropped, on every way out.
    let _terminal = terminal::Foreground::save();
    signals::ignore_terminal_interrupts()?;
    let new_network = args.network.has_namespace();
    match namespaces::clone_child(cgroup.clone_into(), new_network)? {
        Cloned::Child(born) => {
            let container = Container {
                lowers: &rootfs.lowers(),
                dir: &dir,
                hostname: &hostname,
                command: &command,
                new_network,
                inside: network.inside(),
                stdio: &stdio,
                volumes: &args.volumes,
                init: args.init,
            };
            child(born, &cgroup, &container, &handoff, &release)
        }
        Cloned::Parent(child) => {
            let started = Started {
                network: &mut network,
                handoff,
                release,
                stdio,
            };
            let outside = start(child, &id, started)?;
            record_start(&mut record, &mut dir, child)?;
            let attached = detached.is_none();
            if let Some(detached) = detached {
                detached.started(&record.id)?;
            }
            supervise(
                child,
                &cgroup,
                &mut record,
                &dir,
                outside,
                &mut log,
                attached,
            )
        }
    }
}

/// The record of a container about to be made: `image` is ROOTFS|IMAGE as
/// given; the name, if none is given, is made up when the folder is made.
fn new_record(image: &Path, name: Option<String>, auto_remove: bool, tty: bool) -> Result<Record> {
    Ok(Record {
        id: names::generate_id()?,
        name: name.unwrap_or_default(),
        image: image.to_string_lossy().into_owned(),
        command: Vec::new(),
        created: clock::now(),
        status: Status::Created,
        started: None,
        finished: None,
        exit_code: None,
        pid: None,
        pid_started: None,
        supervisor: Some(std::process::id() as i32),
        hostname: String::new(),
        cgroup_parent: String::new(),
        ports: Vec::new(),
        env: Vec::new(),
        workdir: None,
        user: None,
        auto_remove,
        tty,
    })
}

/// What the child makes of itself.
struct Container<'a> {
    /// The overlay's lower layers, bottom first: ROOTFS, or the image's.
    lowers: &'a [PathBuf],
    dir: &'a ContainerDir,
    hostname: &'a str,
    command: &'a Command,
    /// Whether it has a network namespace of its own.
    new_network: bool,
    /// On the bridge: its address, and the bridge's subnet.
    inside: Option<(Ipv4Addr, Subnet)>,
    /// Its ends of the pipes or terminal that the supervisor reads.
    stdio: &'a Stdio,
    /// Host directories to mount inside (-v).
    volumes: &'a [volumes::Volume],
    /// Whether PID 1 is a small init, the command its child (--init).
    init: bool,
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
        lowers,
        dir,
        hostname,
        command,
        new_network,
        inside,
        stdio,
        volumes,
        init,
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
    overlay::mount_overlay(lowers, dir)?;
    volumes::mount_all(volumes, &dir.merged())?;
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
    // Last, so that the runtime's errors until here reach the caller's
    // stderr, not the container's log.
    stdio.connect_inside()?;
    if init {
        return init::run(command);
    }
    command.exec()
}
// ANCHOR_END: child

// ANCHOR: parent
/// What the parent needs to see the child started.
struct Started<'a> {
    network: &'a mut HostSide,
    handoff: Handoff,
    release: Release,
    stdio: Stdio,
}

/// In the parent: pass signals on, connect the child's network, and learn
/// whether the exec worked. Returns the supervisor's ends of the
/// container's output.
fn start(child: Pid, id: &str, started: Started) -> Result<Option<stdio::Outside>> {
    let Started {
        network,
        handoff,
        release,
        stdio,
    } = started;
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
    let outside = stdio.outside();
    if let Err(error) = handoff.wait_for_exec() {
        // Not a zombie: nobody else will wait for it.
        let _ = waitpid(child, None);
        return Err(error);
    }
    outside
}

/// The command runs: say so in the record, which from now on outlives this
/// process (unless --rm).
fn record_start(record: &mut Record, dir: &mut ContainerDir, child: Pid) -> Result<()> {
    // ANCHOR: lab07-2-record Record that the command runs: status running, when, and PID 1 with its start time from /proc/PID/stat, so that a reused pid is never taken for it (record_start) [07-full-runtime.md#the-record]
    record.status = Status::Running;
    record.started = Some(clock::now());
    record.pid = Some(child.as_raw());
    record.pid_started = Some(record::start_time(child.as_raw())?);
    // ANCHOR_END: lab07-2-record instead:
    record.save(dir.path())?;
    dir.keep_unless(record.auto_remove);
    Ok(())
}

/// The supervisor's work: copy the output until it ends, wait for the
/// container, record how it ended, and tell an out-of-memory kill from the
/// command's own status.
fn supervise(
    child: Pid,
    cgroup: &Cgroup,
    record: &mut Record,
    dir: &ContainerDir,
    outside: Option<stdio::Outside>,
    log: &mut logs::Writer,
    attached: bool,
) -> Result<u8> {
    let copied = outside.map_or(Ok(()), |outside| {
        supervisor::copy_output(outside, log, attached)
    });
    let status = waitpid(child, None).context("wait for the container")?;
    let code = exit::code_of(status);
    record.status = Status::Exited;
    record.exit_code = Some(code);
    record.finished = Some(clock::now());
    record.save(dir.path())?;
    copied?;
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
