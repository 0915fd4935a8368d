//! Control groups: limits on what the container's processes may use.
//!
//! A cgroup is a directory in a special filesystem. Its files are the
//! limits (`memory.max`) and the accounting (`cpu.stat`), and every child a
//! member forks starts in the same cgroup. There are two versions, and a
//! host mounts one of them or both:
//! - v2, unified, on most hosts today: one tree (`v2.rs`);
//! - v1, one tree per hierarchy (`v1.rs`); a *hybrid* host mounts the v1
//!   trees and an empty v2 tree beside them at `unified/`: ferry uses v1 there.

mod v1;
mod v2;

use std::fs;
use std::os::fd::BorrowedFd;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::sys::statfs::{CGROUP2_SUPER_MAGIC, statfs};
use nix::unistd::Pid;

use crate::limits::{Limits, show_bytes};

const MOUNT: &str = "/sys/fs/cgroup";

// ANCHOR: layout
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// cgroup2 at /sys/fs/cgroup.
    Unified,
    /// v1 hierarchies, and a cgroup2 at /sys/fs/cgroup/unified.
    Hybrid,
    /// v1 hierarchies only.
    Legacy,
}

/// What is mounted at /sys/fs/cgroup tells the layout, as runc, crun and
/// youki decide it. Never guess from the kernel version or the distribution.
pub fn detect() -> Result<Layout> {
    let top = statfs(MOUNT).with_context(|| format!("statfs {MOUNT}"))?;
    if top.filesystem_type() == CGROUP2_SUPER_MAGIC {
        return Ok(Layout::Unified);
    }
    match statfs(&Path::new(MOUNT).join("unified")) {
        Ok(unified) if unified.filesystem_type() == CGROUP2_SUPER_MAGIC => Ok(Layout::Hybrid),
        _ => Ok(Layout::Legacy),
    }
}
// ANCHOR_END: layout

/// The container's cgroup: one directory on v2, one per hierarchy on v1.
/// Dropping it kills whatever is still inside and removes the directories
/// (each version's own Drop).
pub struct Cgroup {
    version: Version,
    memory: Option<u64>,
}

enum Version {
    V2(v2::Leaf),
    V1(v1::Leaves),
}

impl Cgroup {
    /// Creates PARENT/ID with `limits` set, before any process is in it.
    pub fn create(parent: &str, id: &str, limits: &Limits) -> Result<Self> {
        let version = match detect()? {
            Layout::Unified => Version::V2(v2::Leaf::create(parent, id, limits)?),
            Layout::Hybrid | Layout::Legacy => Version::V1(v1::Leaves::create(parent, id, limits)?),
        };
        Ok(Self {
            version,
            memory: limits.memory,
        })
    }

    /// v2: the cgroup's directory, open, for clone3 to start the child in.
    pub fn clone_into(&self) -> Option<BorrowedFd<'_>> {
        match &self.version {
            Version::V2(leaf) => Some(leaf.fd()),
            Version::V1(_) => None,
        }
    }

    /// In the child, if it was not started in the cgroup: move itself in.
    pub fn join(&self) -> Result<()> {
        match &self.version {
            Version::V2(leaf) => leaf.join(),
            Version::V1(leaves) => leaves.join(),
        }
    }

    /// In the container: the cgroup filesystem, read-only, at /sys/fs/cgroup.
    pub fn mount_in_container(&self) -> Result<()> {
        match &self.version {
            Version::V2(_) => v2::mount_in_container(),
            Version::V1(leaves) => leaves.mount_in_container(),
        }
    }

    // ANCHOR: oom
    /// How many processes the kernel's out-of-memory killer ended in this
    /// cgroup, as the cgroup itself counts them: a death by SIGKILL (137)
    /// looks the same whether the OOM killer or someone's `kill -9` sent it.
    pub fn oom_kills(&self) -> Result<u64> {
        match &self.version {
            Version::V2(leaf) => leaf.oom_kills(),
            Version::V1(leaves) => leaves.oom_kills(),
        }
    }

    /// The memory limit as a person reads it: "32 MiB".
    pub fn memory_limit(&self) -> String {
        self.memory.map_or("none".to_owned(), show_bytes)
    }
    // ANCHOR_END: oom
}

/// Removes the cgroup a runtime that died left under PARENT (`id`), in
/// whichever layout this host has.
pub fn remove_left_behind(parent: &str, id: &str) -> Result<()> {
    // ANCHOR: lab04-7-left-behind Remove the cgroup a dead runtime left: PARENT/ID in every cgroup mount of /proc/self/mountinfo [04-cgroups.md#cleaning-up]
    let mountinfo =
        fs::read_to_string("/proc/self/mountinfo").context("read /proc/self/mountinfo")?;
    for line in mountinfo.lines() {
        let Some((mount, filesystem)) = line.split_once(" - ") else {
            continue;
        };
        let is_cgroup = matches!(filesystem.split(' ').next(), Some("cgroup" | "cgroup2"));
        let Some(point) = mount.split(' ').nth(4).filter(|_| is_cgroup) else {
            continue;
        };
        let dir = Path::new(point).join(parent).join(id);
        if dir.exists() {
            remove(&dir)?;
        }
    }
    Ok(())
    // ANCHOR_END: lab04-7-left-behind instead: Ok(())
}

// ANCHOR: remove
/// Kills what is left in a cgroup, then removes it. A cgroup that still
/// holds a process cannot be removed (rmdir says EBUSY).
fn remove(dir: &Path) -> Result<()> {
    let procs = dir.join("cgroup.procs");
    let kill_file = dir.join("cgroup.kill");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let pids =
            fs::read_to_string(&procs).with_context(|| format!("read {}", procs.display()))?;
        if pids.trim().is_empty() {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "processes still in {} after 5 s: {}",
                procs.display(),
                pids.trim()
            );
        }
        if kill_file.exists() {
            // v2 since Linux 5.14: one write kills every process inside.
            write(dir, "cgroup.kill", 1)?;
        } else {
            for pid in pids.lines().filter_map(|pid| pid.trim().parse().ok()) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        // Poll: a killed process leaves the cgroup when it has exited.
        thread::sleep(Duration::from_millis(1));
    }
    fs::remove_dir(dir).with_context(|| format!("remove cgroup {}", dir.display()))
}
// ANCHOR_END: remove

/// A parent cgroup, shared by every container under it: made by the first.
fn create_shared(dir: &Path) -> Result<()> {
    match fs::create_dir(dir) {
        Err(error) if error.kind() != std::io::ErrorKind::AlreadyExists => {
            Err(error).with_context(|| format!("create cgroup {}", dir.display()))
        }
        _ => Ok(()),
    }
}

/// The number on the line `KEY N` of a flat-keyed cgroup file.
fn read_count(path: &Path, key: &str) -> Result<u64> {
    let text = fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    Ok(text
        .lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix(' '))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0))
}

fn write(dir: impl AsRef<Path>, file: &str, value: impl ToString) -> Result<()> {
    let path = dir.as_ref().join(file);
    let value = value.to_string();
    fs::write(&path, &value).with_context(|| format!("write {value} to {}", path.display()))
}
