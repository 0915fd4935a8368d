//! cgroup v1: one tree per hierarchy, and a cgroup is a directory in each.
//!
//! ```text
//!  /sys/fs/cgroup/memory/ferry/ID/       memory.limit_in_bytes  tasks
//!  /sys/fs/cgroup/cpu,cpuacct/ferry/ID/  cpu.cfs_quota_us  cpuacct.usage  tasks
//!  /sys/fs/cgroup/pids/ferry/ID/         pids.max  tasks
//!  /sys/fs/cgroup/cpu -> cpu,cpuacct     (systemd mounts some controllers together)
//! ```
//!
//! A hierarchy may hold several controllers: systemd mounts `cpu` and
//! `cpuacct` together, and `net_cls` and `net_prio`. Such a hierarchy is one
//! directory tree, so the container's cgroup in it is one directory, made,
//! joined and removed once.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use nix::mount::{MsFlags, mount};

use super::{MOUNT, read_count, write};
use crate::limits::{CPU_PERIOD, Limits};

/// The controllers ferry uses; cpuacct is the CPU time accounting.
const CONTROLLERS: [&str; 4] = ["memory", "cpu", "cpuacct", "pids"];

/// One mounted hierarchy: where, and which controllers it holds.
#[derive(Debug, Clone)]
struct Hierarchy {
    mount: PathBuf,
    controllers: Vec<String>,
}

/// The container's cgroup: a directory in each hierarchy that holds one of
/// the controllers ferry uses.
pub struct Leaves {
    hierarchies: Vec<Hierarchy>,
    dirs: Vec<PathBuf>,
}

impl Leaves {
    // ANCHOR: create
    /// Creates PARENT/ID in each hierarchy, with its limits.
    pub fn create(parent: &str, id: &str, limits: &Limits) -> Result<Self> {
        let hierarchies = hierarchies()?;
        let mut leaves = Self {
            hierarchies: Vec::new(),
            dirs: Vec::new(),
        };
        // Pushed one by one, so that a failure half-way removes what was made.
        for hierarchy in hierarchies {
            let parent = hierarchy.mount.join(parent);
            super::create_shared(&parent)?;
            let dir = parent.join(id);
            fs::create_dir(&dir).with_context(|| format!("create cgroup {}", dir.display()))?;
            leaves.dirs.push(dir);
            leaves.hierarchies.push(hierarchy);
        }
        leaves.limit(limits)?;
        Ok(leaves)
    }
    // ANCHOR_END: create

    /// The container's directory in the hierarchy that holds `controller`.
    fn dir_of(&self, controller: &str) -> &Path {
        let at = self
            .hierarchies
            .iter()
            .position(|h| h.controllers.iter().any(|c| c == controller))
            .expect("every controller ferry uses has a hierarchy");
        &self.dirs[at]
    }

    // ANCHOR: limit
    fn limit(&self, limits: &Limits) -> Result<()> {
        // ANCHOR: lab04-8-limit-v1 v1 and hybrid hosts: write the limits: memory.limit_in_bytes (and memsw), cpu.cfs_period_us and cpu.cfs_quota_us, pids.max [04-cgroups.md#v1-and-hybrid-hosts]
        let memory = self.dir_of("memory");
        if let Some(bytes) = limits.memory {
            write(memory, "memory.limit_in_bytes", bytes)?;
            // memory+swap; it may not be set below memory.limit_in_bytes,
            // so it comes second. Missing without swap accounting.
            if memory.join("memory.memsw.limit_in_bytes").exists() {
                write(memory, "memory.memsw.limit_in_bytes", bytes)?;
            }
        }
        if let Some(cpus) = limits.cpus {
            let cpu = self.dir_of("cpu");
            write(cpu, "cpu.cfs_period_us", CPU_PERIOD)?;
            write(cpu, "cpu.cfs_quota_us", cpus.quota())?;
        }
        if let Some(pids) = limits.pids_limit {
            write(self.dir_of("pids"), "pids.max", pids)?;
        }
        Ok(())
        // ANCHOR_END: lab04-8-limit-v1 instead: Ok(())
    }
    // ANCHOR_END: limit

    // ANCHOR: join
    /// In the child, as its first act: move itself into every hierarchy.
    /// "0" in `tasks` is the writing thread: the whole process, as the child
    /// has one thread. Moving oneself through `tasks` takes a few
    /// microseconds; the parent writing the child's pid to `cgroup.procs`
    /// waits on a global lock for an RCU grace period, often 10-20 ms.
    pub fn join(&self) -> Result<()> {
        // ANCHOR: lab04-9-join-v1 v1 and hybrid hosts: the child moves itself into every hierarchy: "0" into each tasks file [04-cgroups.md#v1-and-hybrid-hosts]
        for dir in &self.dirs {
            write(dir, "tasks", 0)?;
        }
        Ok(())
        // ANCHOR_END: lab04-9-join-v1 instead: Ok(())
    }
    // ANCHOR_END: join

    pub fn oom_kills(&self) -> Result<u64> {
        read_count(
            &self.dir_of("memory").join("memory.oom_control"),
            "oom_kill",
        )
    }

    /// Inside the container, after it has its own cgroup namespace: each
    /// hierarchy, read-only, under a read-only tmpfs at /sys/fs/cgroup, named
    /// as on the host. In a cgroup namespace the container's own cgroup is
    /// each hierarchy's root, where programs read their limits.
    pub fn mount_in_container(&self) -> Result<()> {
        // ANCHOR: lab04-10-mount-v1 v1 and hybrid hosts: a read-only tmpfs on /sys/fs/cgroup, each hierarchy mounted read-only in it, as on the host [04-cgroups.md#v1-and-hybrid-hosts]
        let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
        mount(Some("tmpfs"), MOUNT, Some("tmpfs"), flags, Some("mode=755"))
            .with_context(|| format!("mount tmpfs on {MOUNT}"))?;
        for hierarchy in &self.hierarchies {
            let name = hierarchy
                .mount
                .file_name()
                .expect("a mount point has a name");
            let target = Path::new(MOUNT).join(name);
            fs::create_dir(&target).with_context(|| format!("create {}", target.display()))?;
            // The same controllers as the host's mount, or the kernel refuses:
            // a mount of an existing hierarchy must name exactly its set.
            let options = hierarchy.controllers.join(",");
            mount(
                Some("cgroup"),
                &target,
                Some("cgroup"),
                flags | MsFlags::MS_RDONLY,
                Some(options.as_str()),
            )
            .with_context(|| format!("mount the {options} hierarchy on {}", target.display()))?;
            // "cpu" and "cpuacct" lead to "cpu,cpuacct", as on the host.
            for controller in hierarchy.controllers.iter().filter(|c| c.as_str() != name) {
                let link = Path::new(MOUNT).join(controller);
                symlink(name, &link).with_context(|| format!("link {}", link.display()))?;
            }
        }
        mount(
            None::<&str>,
            MOUNT,
            None::<&str>,
            flags | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .with_context(|| format!("remount {MOUNT} read-only"))
        // ANCHOR_END: lab04-10-mount-v1 instead: Ok(())
    }
}

/// Kills what is left inside, and removes the directories.
impl Drop for Leaves {
    fn drop(&mut self) {
        for dir in &self.dirs {
            if let Err(error) = super::remove(dir) {
                eprintln!("error: {error:#}");
            }
        }
    }
}

// ANCHOR: hierarchies
/// The hierarchies that hold the controllers ferry uses, each once, as
/// /proc/self/mountinfo lists them:
/// `… /sys/fs/cgroup/cpu,cpuacct … - cgroup cgroup rw,cpu,cpuacct`.
fn hierarchies() -> Result<Vec<Hierarchy>> {
    let mountinfo =
        fs::read_to_string("/proc/self/mountinfo").context("read /proc/self/mountinfo")?;
    let known = known_controllers()?;
    let mounted: Vec<Hierarchy> = mountinfo
        .lines()
        .filter_map(|line| {
            let (mount, filesystem) = line.split_once(" - ")?;
            let mut fields = filesystem.split(' '); // type, source, options
            let (kind, options) = (fields.next()?, fields.nth(1)?);
            (kind == "cgroup").then(|| Hierarchy {
                mount: PathBuf::from(mount.split(' ').nth(4).unwrap_or_default()),
                controllers: options
                    .split(',')
                    .filter(|option| known.iter().any(|k| k == option))
                    .map(str::to_owned)
                    .collect(),
            })
        })
        .collect();
    let mut wanted: Vec<Hierarchy> = Vec::new();
    for controller in CONTROLLERS {
        let Some(hierarchy) = mounted
            .iter()
            .find(|h| h.controllers.iter().any(|c| c == controller))
        else {
            bail!("the {controller} controller is not mounted in any cgroup v1 hierarchy");
        };
        if !wanted.iter().any(|w| w.mount == hierarchy.mount) {
            wanted.push(hierarchy.clone());
        }
    }
    Ok(wanted)
}
// ANCHOR_END: hierarchies

/// The controllers this kernel has, as /proc/cgroups lists them: what tells
/// a hierarchy's controllers apart from its other mount options (`rw`, `xattr`).
fn known_controllers() -> Result<Vec<String>> {
    let list = fs::read_to_string("/proc/cgroups").context("read /proc/cgroups")?;
    Ok(list
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect())
}
