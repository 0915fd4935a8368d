//! Reading cgroups from outside: where a process's cgroups are, what they
//! have counted, and removing a test's own parent cgroup afterwards.
//! (The runtimes have their own code for this; this is the observer's.)

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Every cgroup mount: (mount point, version 1 controllers or empty for v2).
fn mounts() -> Result<Vec<(PathBuf, Vec<String>)>> {
    let mountinfo =
        fs::read_to_string("/proc/self/mountinfo").context("read /proc/self/mountinfo")?;
    Ok(mountinfo
        .lines()
        .filter_map(|line| {
            let (mount, filesystem) = line.split_once(" - ")?;
            let mut fields = filesystem.split(' ');
            let (kind, options) = (fields.next()?, fields.nth(1)?);
            let point = PathBuf::from(mount.split(' ').nth(4)?);
            match kind {
                "cgroup2" => Some((point, Vec::new())),
                "cgroup" => Some((point, options.split(',').map(str::to_owned).collect())),
                _ => None,
            }
        })
        .collect())
}

/// The directories of `pid`'s cgroups, one per hierarchy it is in.
pub fn dirs_of(pid: i32) -> Result<Vec<PathBuf>> {
    let listing = fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .with_context(|| format!("read /proc/{pid}/cgroup"))?;
    let mounts = mounts()?;
    let mut dirs = Vec::new();
    for line in listing.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let mount = mounts.iter().find(|(_, options)| match id {
            "0" => options.is_empty(),
            _ => controllers
                .split(',')
                .any(|c| options.iter().any(|o| o == c)),
        });
        if let Some((point, _)) = mount {
            dirs.push(point.join(path.trim_start_matches('/')));
        }
    }
    Ok(dirs)
}

/// The CPU time a process's cgroup has used: v2 `cpu.stat`, v1 `cpuacct.usage`.
pub fn cpu_usage(pid: i32) -> Result<Duration> {
    for dir in dirs_of(pid)? {
        if let Ok(stat) = fs::read_to_string(dir.join("cpu.stat"))
            && let Some(micros) = stat
                .lines()
                .find_map(|line| line.strip_prefix("usage_usec "))
        {
            return Ok(Duration::from_micros(micros.trim().parse()?));
        }
        if let Ok(nanos) = fs::read_to_string(dir.join("cpuacct.usage")) {
            return Ok(Duration::from_nanos(nanos.trim().parse()?));
        }
    }
    bail!("no CPU accounting in the cgroups of pid {pid}")
}

/// The limits a process's cgroups hold, as the kernel shows them, v1 or v2;
/// `None` where there is no limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Bytes.
    pub memory: Option<u64>,
    /// CPU time, in microseconds per period: (quota, period).
    pub cpu: Option<(u64, u64)>,
    pub pids: Option<u64>,
}

pub fn limits_of(pid: i32) -> Result<Limits> {
    let dirs = dirs_of(pid)?;
    // The first of the process's cgroup directories that has the file.
    let read = |file: &str| -> Option<String> {
        dirs.iter()
            .find_map(|dir| fs::read_to_string(dir.join(file)).ok())
            .map(|text| text.trim().to_owned())
    };
    let number = |text: &str| -> Result<u64> {
        text.parse()
            .with_context(|| format!("a number in a cgroup file, not {text:?}"))
    };
    let memory = match (read("memory.max"), read("memory.limit_in_bytes")) {
        (Some(max), _) if max == "max" => None,
        (Some(max), _) => Some(number(&max)?),
        // v1 shows "no limit" as the largest number of whole pages.
        (None, Some(limit)) => Some(number(&limit)?).filter(|&bytes| bytes < v1_no_memory_limit()),
        (None, None) => bail!("no memory controller in the cgroups of pid {pid}"),
    };
    let cpu = match (read("cpu.max"), read("cpu.cfs_quota_us")) {
        (Some(max), _) => match max.split_once(' ') {
            Some(("max", _)) => None,
            Some((quota, period)) => Some((number(quota)?, number(period)?)),
            None => bail!("cpu.max of pid {pid} reads {max:?}"),
        },
        (None, Some(quota)) if quota == "-1" => None,
        (None, Some(quota)) => {
            let period = read("cpu.cfs_period_us").context("no cpu.cfs_period_us")?;
            Some((number(&quota)?, number(&period)?))
        }
        (None, None) => bail!("no cpu controller in the cgroups of pid {pid}"),
    };
    let pids = match read("pids.max") {
        Some(max) if max == "max" => None,
        Some(max) => Some(number(&max)?),
        None => bail!("no pids controller in the cgroups of pid {pid}"),
    };
    Ok(Limits { memory, cpu, pids })
}

/// PAGE_COUNTER_MAX in bytes: i64::MAX rounded down to whole pages.
fn v1_no_memory_limit() -> u64 {
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .unwrap_or(4096) as u64;
    i64::MAX as u64 / page * page
}

/// A parent cgroup name for one test: the runtime creates it in each
/// hierarchy, and dropping this removes it again. Only ever a directory
/// this test's runtime made, never one of the host's.
#[derive(Debug)]
pub struct Parent {
    pub name: String,
}

impl Parent {
    pub fn new() -> Self {
        Self {
            name: crate::scratch::unique_name("cg"),
        }
    }
}

impl Default for Parent {
    fn default() -> Self {
        Self::new()
    }
}

impl Parent {
    /// The containers' cgroups under this parent, in every hierarchy.
    pub fn leaves(&self) -> Vec<PathBuf> {
        mounts()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(point, _)| fs::read_dir(point.join(&self.name)).ok())
            .flat_map(|entries| entries.flatten().map(|entry| entry.path()))
            .filter(|path| path.is_dir())
            .collect()
    }
}

impl Drop for Parent {
    fn drop(&mut self) {
        // A test that failed while its container ran killed the runtime
        // before it could remove the container's cgroup: do it here.
        for leaf in self.leaves() {
            if let Err(error) = remove_leaf(&leaf) {
                eprintln!(
                    "warning: could not remove cgroup {}: {error:#}",
                    leaf.display()
                );
            }
        }
        for (point, _) in mounts().unwrap_or_default() {
            let parent = point.join(&self.name);
            if parent.exists()
                && let Err(error) = fs::remove_dir(&parent)
            {
                eprintln!(
                    "warning: could not remove cgroup {}: {error}",
                    parent.display()
                );
            }
        }
    }
}

/// Ends what is left in one of this test's cgroups (processes this test
/// started, through the runtime) and removes it.
fn remove_leaf(leaf: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let procs = fs::read_to_string(leaf.join("cgroup.procs"))?;
        if procs.trim().is_empty() {
            return Ok(fs::remove_dir(leaf)?);
        }
        if Instant::now() > deadline {
            bail!("still holds processes {}", procs.trim());
        }
        for pid in procs
            .lines()
            .filter_map(|pid| pid.trim().parse::<i32>().ok())
        {
            let _ = crate::host::signal(pid, nix::sys::signal::Signal::SIGKILL);
        }
        std::thread::sleep(crate::run::POLL);
    }
}

/// Whether a parent cgroup of this name exists in any hierarchy.
pub fn parent_exists(name: &str) -> Result<bool> {
    Ok(mounts()?.iter().any(|(point, _)| point.join(name).exists()))
}

/// The host's cgroup layout, as the runtimes name it.
pub fn layout_name() -> &'static str {
    let mounts = mounts().unwrap_or_default();
    let v2_at = |point: &str| {
        mounts
            .iter()
            .any(|(mount, options)| options.is_empty() && mount == std::path::Path::new(point))
    };
    if v2_at("/sys/fs/cgroup") {
        "v2 (unified)"
    } else if v2_at("/sys/fs/cgroup/unified") {
        "hybrid (v1 controllers, v2 beside them)"
    } else {
        "v1 (legacy)"
    }
}
