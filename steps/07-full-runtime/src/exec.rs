//! `ferry exec CONTAINER COMMAND`: another process in a running container.
//!
//! A container is nothing but namespaces and a cgroup that processes are
//! in. So a new process joins it by joining them: setns(2) with each of the
//! container PID 1's namespaces (`/proc/PID/ns/*`), and a write of its pid
//! into the container's `cgroup.procs`. Two of them take effect late:
//!
//! - The PID namespace of a process never changes; setns on it chooses the
//!   namespace of the process's *children*. So `exec` forks after it, and
//!   the child is the one inside (nsenter(1) does the same).
//! - The mount namespace goes last: once in it, our "/" is the container's,
//!   and the host's `/proc` and `/sys/fs/cgroup`, where the other
//!   namespaces and the cgroup are found, are out of sight.
//!
//! The command then starts as the container's did: clean signals, only fds
//! 0, 1 and 2, the container's environment, directory and user, unless
//! `-e`, `-w`, `-u` say otherwise. Its output is not the container's log:
//! it is this command's own, as with `docker exec`.

use std::fs::{self, File};
use std::os::fd::AsFd;
use std::path::PathBuf;

use anyhow::{Context, Result};
use nix::sched::{CloneFlags, setns};
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, Pid, fork};

use crate::cli::{ExecArgs, ProcessArgs};
use crate::command::{self, Command};
use crate::exit::{self, Failure};
use crate::image::RunConfig;
use crate::record::Record;
use crate::{fds, signals, state, stdio, supervisor, terminal};

/// The namespaces to join, mount last (see above). The cgroup namespace
/// before it too: its root is the container's cgroup.
const NAMESPACES: [(&str, CloneFlags); 6] = [
    ("cgroup", CloneFlags::CLONE_NEWCGROUP),
    ("ipc", CloneFlags::CLONE_NEWIPC),
    ("uts", CloneFlags::CLONE_NEWUTS),
    ("net", CloneFlags::CLONE_NEWNET),
    ("pid", CloneFlags::CLONE_NEWPID),
    ("mnt", CloneFlags::CLONE_NEWNS),
];

// ANCHOR: exec
pub fn exec(args: ExecArgs) -> Result<u8> {
    let (dir, record) = state::find(&args.store.root, &args.container)?;
    let pid = match state::supervised(&dir).then(|| record.live_pid()).flatten() {
        Some(pid) => Pid::from_raw(pid),
        None => {
            return Err(Failure {
                status: 1,
                message: format!("container {} is not running", args.container),
            }
            .into());
        }
    };
    let (tty, interactive) = (args.process.tty, args.process.interactive);
    let command = exec_command(&record, args.command, args.process)?;
    // Every namespace is opened before any is entered: they are found in
    // the host's /proc, which the container's mount namespace hides.
    let namespaces: Vec<(File, CloneFlags, &str)> = NAMESPACES
        .iter()
        .map(|&(name, flag)| {
            let path = format!("/proc/{pid}/ns/{name}");
            File::open(&path)
                .with_context(|| format!("open {path}"))
                .map(|file| (file, flag, name))
        })
        .collect::<Result<_>>()?;
    // ANCHOR: lab07-5-setns Join the container: its cgroups (join_cgroup), then setns(2) with each namespace file, mount last (exec) [07-full-runtime.md#exec-joining-a-container]
    join_cgroup(pid)?;
    for (file, flag, name) in &namespaces {
        // The container's network mode may be `host`: then its network
        // namespace is ours, and joining it changes nothing.
        setns(file.as_fd(), *flag)
            .with_context(|| format!("join the container's {name} namespace"))?;
    }
    // ANCHOR_END: lab07-5-setns
    let stdio = if tty {
        stdio::Stdio::new(true, interactive, true)?
    } else {
        stdio::Stdio::inherit(interactive)
    };
    let _terminal = terminal::Foreground::save();
    signals::ignore_terminal_interrupts()?;
    let handoff = crate::handoff::Handoff::new()?;
    // SAFETY: single-threaded, so the child's copy of us is whole.
    match unsafe { fork() }.context("fork the command")? {
        ForkResult::Child => {
            let failure = start_inside(&stdio, &command, &handoff).unwrap_err();
            handoff.fail(&failure)
        }
        ForkResult::Parent { child } => {
            signals::forward_to(child)?;
            let outside = stdio.outside();
            if let Err(error) = handoff.wait_for_exec() {
                let _ = waitpid(child, None);
                return Err(error);
            }
            // With -t the terminal's output is copied (and logged nowhere);
            // without, the command has our own stdout and stderr.
            if let Some(stdio::Outside::Terminal { master, input }) = outside? {
                supervisor::copy_terminal(master, input, None, true)?;
            }
            let status = waitpid(child, None).context("wait for the command")?;
            Ok(exit::code_of(status))
        }
    }
}
// ANCHOR_END: exec

/// In the child, now in the container's PID namespace: become the command.
fn start_inside(
    stdio: &stdio::Stdio,
    command: &Command,
    handoff: &crate::handoff::Handoff,
) -> Result<std::convert::Infallible> {
    // Not left behind if `ferry exec` dies: nobody would wait for it.
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
        .context("set the parent-death signal")?;
    if handoff.runtime_is_gone()? {
        anyhow::bail!("ferry exec went away before the command started");
    }
    signals::restore_defaults()?;
    fds::close_on_exec_above_stdio()?;
    stdio.connect_inside()?;
    command.exec()
}

/// The command with the container's environment, directory and user,
/// each overridden by exec's own options.
fn exec_command(
    record: &Record,
    line: Vec<std::ffi::OsString>,
    process: ProcessArgs,
) -> Result<Command> {
    let container = RunConfig {
        env: Some(record.env.clone()),
        working_dir: record.workdir.clone(),
        user: record.user.clone(),
        ..RunConfig::default()
    };
    let overrides = command::Overrides {
        env: process.env,
        tty: process.tty,
        entrypoint: None,
        workdir: process.workdir,
        user: process.user,
    };
    Command::new(line, Some(&container), overrides)
}

// ANCHOR: join_cgroup
/// Moves this process into PID 1's cgroups, in every hierarchy: its
/// children (the command) are born there, under the container's limits.
/// /proc/PID/cgroup names each hierarchy's path (`0::/ferry/ID` on v2,
/// `4:memory:/ferry/ID` on v1), and /proc/self/mountinfo where each
/// hierarchy is mounted.
fn join_cgroup(pid: Pid) -> Result<()> {
    let theirs = fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .with_context(|| format!("read /proc/{pid}/cgroup"))?;
    for procs in procs_files(&theirs, &cgroup_mounts()?) {
        fs::write(&procs, "0")
            .with_context(|| format!("join the container's cgroup: write {}", procs.display()))?;
    }
    Ok(())
}

/// The `cgroup.procs` file of each of the hierarchies that a
/// /proc/PID/cgroup text names, where `mounts` has them mounted.
fn procs_files(theirs: &str, mounts: &[CgroupMount]) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for line in theirs.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        // v1's named hierarchies ("name=systemd") are systemd's, not ours.
        if controllers.starts_with("name=") {
            continue;
        }
        // v2's line names no controllers; a v1 line names its hierarchy's
        // (`cpu,cpuacct` where systemd mounts the two together).
        let wanted: Vec<&str> = controllers.split(',').filter(|c| !c.is_empty()).collect();
        let Some((_, _, point)) = mounts.iter().find(|(v2, options, _)| {
            *v2 == wanted.is_empty() && wanted.iter().all(|c| options.iter().any(|o| o == c))
        }) else {
            continue;
        };
        files.push(
            point
                .join(path.trim_start_matches('/'))
                .join("cgroup.procs"),
        );
    }
    files
}

/// A cgroup mount: whether it is v2, the options of its superblock (a v1
/// hierarchy's name its controllers), and where it is.
type CgroupMount = (bool, Vec<String>, PathBuf);

fn cgroup_mounts() -> Result<Vec<CgroupMount>> {
    let mountinfo =
        fs::read_to_string("/proc/self/mountinfo").context("read /proc/self/mountinfo")?;
    let mut mounts = Vec::new();
    for line in mountinfo.lines() {
        let Some((mount, filesystem)) = line.split_once(" - ") else {
            continue;
        };
        let mut fields = filesystem.split(' ');
        let v2 = match fields.next() {
            Some("cgroup2") => true,
            Some("cgroup") => false,
            _ => continue,
        };
        let options = fields.nth(1).unwrap_or_default();
        let Some(point) = mount.split(' ').nth(4) else {
            continue;
        };
        let options = options.split(',').map(str::to_owned).collect();
        mounts.push((v2, options, PathBuf::from(point)));
    }
    Ok(mounts)
}
// ANCHOR_END: join_cgroup

#[cfg(test)]
mod tests {
    use super::*;

    fn mount(v2: bool, options: &str, point: &str) -> CgroupMount {
        let options = options.split(',').map(str::to_owned).collect();
        (v2, options, PathBuf::from(point))
    }

    fn paths(files: Vec<PathBuf>) -> Vec<String> {
        files.iter().map(|f| f.display().to_string()).collect()
    }

    #[test]
    fn finds_the_v2_cgroup() {
        let mounts = [mount(true, "rw,nosuid,nsdelegate", "/sys/fs/cgroup")];
        assert_eq!(
            paths(procs_files("0::/ferry/abc\n", &mounts)),
            ["/sys/fs/cgroup/ferry/abc/cgroup.procs"]
        );
    }

    #[test]
    fn finds_systemds_co_mounted_hierarchies_and_skips_named_ones() {
        // systemd's hybrid layout: cpu and cpuacct one hierarchy, and a
        // cgroup2 beside them in unified/.
        let mounts = [
            mount(
                false,
                "rw,nosuid,nodev,noexec,relatime,cpu,cpuacct",
                "/sys/fs/cgroup/cpu,cpuacct",
            ),
            mount(
                false,
                "rw,nosuid,nodev,noexec,relatime,memory",
                "/sys/fs/cgroup/memory",
            ),
            mount(false, "rw,xattr,name=systemd", "/sys/fs/cgroup/systemd"),
            mount(
                true,
                "rw,nosuid,nodev,noexec,relatime",
                "/sys/fs/cgroup/unified",
            ),
        ];
        let theirs = "12:name=systemd:/user.slice\n4:cpu,cpuacct:/ferry/abc\n3:memory:/ferry/abc\n0::/ferry/abc\n";
        assert_eq!(
            paths(procs_files(theirs, &mounts)),
            [
                "/sys/fs/cgroup/cpu,cpuacct/ferry/abc/cgroup.procs",
                "/sys/fs/cgroup/memory/ferry/abc/cgroup.procs",
                "/sys/fs/cgroup/unified/ferry/abc/cgroup.procs",
            ]
        );
    }
}
