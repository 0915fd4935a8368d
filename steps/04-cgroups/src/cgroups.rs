//! Control groups: limits on what the container's processes may use.
//!
//! A cgroup is a directory in a special filesystem. Its files are the
//! limits (`memory.max`) and the accounting (`cpu.stat`); writing a pid to
//! its `cgroup.procs` moves that process in, and every child the process
//! forks starts in the same cgroup. There are two versions, and a host may
//! mount either, or both:
//!
//! ```text
//!  v2, unified (most hosts today)       v1, one tree per controller
//!  /sys/fs/cgroup/                      /sys/fs/cgroup/memory/ferry/ID/memory.limit_in_bytes
//!  ├─ cgroup.subtree_control            /sys/fs/cgroup/cpu/ferry/ID/cpu.cfs_quota_us
//!  └─ ferry/        (no processes)      /sys/fs/cgroup/cpuacct/ferry/ID/cpuacct.usage
//!     ├─ cgroup.subtree_control         /sys/fs/cgroup/pids/ferry/ID/pids.max
//!     └─ ID/         memory.max  cpu.max  pids.max  cgroup.procs
//! ```
//!
//! A hybrid host mounts the v1 trees for the controllers and a v2 tree
//! beside them (at `unified/`) with no controllers in it: ferry uses v1
//! there.

use std::fs;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::sys::statfs::{CGROUP2_SUPER_MAGIC, statfs};
use nix::unistd::Pid;

use crate::limits::{CPU_PERIOD, Limits};

const MOUNT: &str = "/sys/fs/cgroup";
/// v1: the controllers ferry uses; cpuacct is the CPU time accounting.
const V1_CONTROLLERS: [&str; 4] = ["memory", "cpu", "cpuacct", "pids"];
/// v2: what the parent cgroup must pass on to the containers' cgroups.
const V2_CONTROLLERS: [&str; 3] = ["cpu", "memory", "pids"];

// ANCHOR: layout
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// cgroup2 at /sys/fs/cgroup.
    Unified,
    /// v1 controllers, and a cgroup2 at /sys/fs/cgroup/unified.
    Hybrid,
    /// v1 controllers only.
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

/// The container's cgroup: one directory on v2, one per controller on v1.
/// Dropping it kills whatever is still inside and removes the directories.
pub struct Cgroup {
    version: Version,
    dirs: Vec<PathBuf>,
    memory: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    V1,
    V2,
}

impl Cgroup {
    // ANCHOR: create
    /// Creates PARENT/ID with `limits` set, before any process is in it.
    pub fn create(parent: &str, id: &str, limits: &Limits) -> Result<Self> {
        let (version, parents) = match detect()? {
            Layout::Unified => (Version::V2, vec![v2_parent(parent)?]),
            Layout::Hybrid | Layout::Legacy => (Version::V1, v1_parents(parent)?),
        };
        let mut cgroup = Self {
            version,
            dirs: Vec::new(),
            memory: limits.memory,
        };
        // Pushed one by one, so that a failure half-way removes what was made.
        for parent in parents {
            let dir = parent.join(id);
            fs::create_dir(&dir).with_context(|| format!("create cgroup {}", dir.display()))?;
            cgroup.dirs.push(dir);
        }
        match version {
            Version::V2 => cgroup.limit_v2(limits)?,
            Version::V1 => cgroup.limit_v1(limits)?,
        }
        Ok(cgroup)
    }
    // ANCHOR_END: create

    // ANCHOR: limit_v2
    fn limit_v2(&self, limits: &Limits) -> Result<()> {
        let dir = &self.dirs[0];
        if let Some(bytes) = limits.memory {
            write(dir, "memory.max", bytes)?;
            // No swap beyond the limit, or it would only slow the container
            // down before the same end. The file is missing when the
            // kernel does not account swap.
            if dir.join("memory.swap.max").exists() {
                write(dir, "memory.swap.max", 0)?;
            }
        }
        if let Some(cpus) = limits.cpus {
            write(dir, "cpu.max", format!("{} {CPU_PERIOD}", cpus.quota()))?;
        }
        if let Some(pids) = limits.pids_limit {
            write(dir, "pids.max", pids)?;
        }
        Ok(())
    }
    // ANCHOR_END: limit_v2

    // ANCHOR: limit_v1
    fn limit_v1(&self, limits: &Limits) -> Result<()> {
        let dir = |controller: &str| self.dir_of(controller);
        if let Some(bytes) = limits.memory {
            write(dir("memory"), "memory.limit_in_bytes", bytes)?;
            // memory+swap; it may not be set below memory.limit_in_bytes,
            // so it comes second. Missing without swap accounting.
            if dir("memory").join("memory.memsw.limit_in_bytes").exists() {
                write(dir("memory"), "memory.memsw.limit_in_bytes", bytes)?;
            }
        }
        if let Some(cpus) = limits.cpus {
            write(dir("cpu"), "cpu.cfs_period_us", CPU_PERIOD)?;
            write(dir("cpu"), "cpu.cfs_quota_us", cpus.quota())?;
        }
        if let Some(pids) = limits.pids_limit {
            write(dir("pids"), "pids.max", pids)?;
        }
        Ok(())
    }
    // ANCHOR_END: limit_v1

    /// v1 keeps one directory per controller, in V1_CONTROLLERS order.
    fn dir_of(&self, controller: &str) -> &Path {
        let at = V1_CONTROLLERS
            .iter()
            .position(|c| *c == controller)
            .expect("a v1 controller");
        &self.dirs[at]
    }

    /// Moves `pid` into the cgroup, in every hierarchy.
    pub fn add(&self, pid: Pid) -> Result<()> {
        for dir in &self.dirs {
            write(dir, "cgroup.procs", pid)?;
        }
        Ok(())
    }

    // ANCHOR: oom
    /// An out-of-memory kill, if the kernel made one in this cgroup, as an
    /// error that says so; counted by the cgroup itself, not guessed from
    /// an exit status of 137 (which `kill -9` gives as well).
    pub fn out_of_memory(&self) -> Result<Option<String>> {
        let (dir, file) = match self.version {
            Version::V2 => (self.dirs[0].as_path(), "memory.events"),
            Version::V1 => (self.dir_of("memory"), "memory.oom_control"),
        };
        let path = dir.join(file);
        let events =
            fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
        let kills = events
            .lines()
            .find_map(|line| line.strip_prefix("oom_kill "))
            .and_then(|n| n.trim().parse::<u64>().ok())
            .unwrap_or(0);
        let limit = self
            .memory
            .map_or("none".to_owned(), crate::limits::show_bytes);
        Ok((kills > 0).then(|| format!("container killed: out of memory (limit {limit})")))
    }
    // ANCHOR_END: oom

    // ANCHOR: remove
    /// Kills what is left in the cgroup, then removes it. A cgroup that still
    /// holds a process cannot be removed (rmdir says EBUSY).
    fn remove(&self) -> Result<()> {
        let procs = self.dirs[0].join("cgroup.procs");
        let kill_file = self.dirs[0].join("cgroup.kill");
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
                fs::write(&kill_file, "1")
                    .with_context(|| format!("write {}", kill_file.display()))?;
            } else {
                for pid in pids.lines().filter_map(|pid| pid.trim().parse().ok()) {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
            }
            // Poll: a killed process leaves the cgroup when it has exited.
            thread::sleep(Duration::from_millis(1));
        }
        for dir in &self.dirs {
            fs::remove_dir(dir).with_context(|| format!("remove cgroup {}", dir.display()))?;
        }
        Ok(())
    }
    // ANCHOR_END: remove
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        if self.dirs.is_empty() {
            return;
        }
        if let Err(error) = self.remove() {
            eprintln!("error: {error:#}");
        }
    }
}

// ANCHOR: v2_parent
/// v2: the parent cgroup holds no processes, only the containers' cgroups,
/// and hands them the controllers. The "no internal processes" rule: a
/// cgroup with processes of its own cannot enable controllers for its
/// children, so containers are leaves under a parent that is empty.
fn v2_parent(name: &str) -> Result<PathBuf> {
    let parent = Path::new(MOUNT).join(name);
    create_parent(&parent)?;
    let offered = fs::read_to_string(parent.join("cgroup.controllers"))
        .with_context(|| format!("read {}/cgroup.controllers", parent.display()))?;
    for controller in V2_CONTROLLERS {
        if !offered.split_whitespace().any(|c| c == controller) {
            bail!(
                "the {controller} controller is not available in {}: \
                 enable it in {MOUNT}/cgroup.subtree_control",
                parent.display()
            );
        }
    }
    let enable: Vec<String> = V2_CONTROLLERS.iter().map(|c| format!("+{c}")).collect();
    write(&parent, "cgroup.subtree_control", enable.join(" "))?;
    Ok(parent)
}
// ANCHOR_END: v2_parent

/// v1: the parent in each controller's hierarchy, wherever it is mounted.
fn v1_parents(name: &str) -> Result<Vec<PathBuf>> {
    let mountinfo =
        fs::read_to_string("/proc/self/mountinfo").context("read /proc/self/mountinfo")?;
    V1_CONTROLLERS
        .iter()
        .map(|controller| {
            let Some(mount) = v1_mount(&mountinfo, controller) else {
                bail!("the {controller} controller is not mounted in any cgroup v1 hierarchy");
            };
            let parent = mount.join(name);
            create_parent(&parent)?;
            Ok(parent)
        })
        .collect()
}

/// Where the v1 hierarchy with `controller` is mounted: a mountinfo line
/// `… /sys/fs/cgroup/cpu,cpuacct … - cgroup cgroup rw,cpu,cpuacct`.
fn v1_mount(mountinfo: &str, controller: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (mount, filesystem) = line.split_once(" - ")?;
        let mut fields = filesystem.split(' '); // type, source, options
        let (kind, options) = (fields.next()?, fields.nth(1)?);
        if kind != "cgroup" || !options.split(',').any(|option| option == controller) {
            return None;
        }
        Some(PathBuf::from(mount.split(' ').nth(4)?))
    })
}

fn create_parent(parent: &Path) -> Result<()> {
    match fs::create_dir(parent) {
        // Another container made it first: fine, it is shared.
        Err(error) if error.kind() != std::io::ErrorKind::AlreadyExists => {
            Err(error).with_context(|| format!("create cgroup {}", parent.display()))
        }
        _ => Ok(()),
    }
}

fn write(dir: impl AsRef<Path>, file: &str, value: impl ToString) -> Result<()> {
    let path = dir.as_ref().join(file);
    let value = value.to_string();
    fs::write(&path, &value).with_context(|| format!("write {value} to {}", path.display()))
}
