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

impl Drop for Parent {
    fn drop(&mut self) {
        for (point, _) in mounts().unwrap_or_default() {
            let parent = point.join(&self.name);
            if !parent.exists() {
                continue;
            }
            // A test that failed while its container ran killed the runtime
            // before it could remove the container's cgroup: do it here.
            let leaves = fs::read_dir(&parent)
                .into_iter()
                .flatten()
                .flatten()
                .map(|entry| entry.path());
            for leaf in leaves.filter(|path| path.is_dir()) {
                if let Err(error) = remove_leaf(&leaf) {
                    eprintln!(
                        "warning: could not remove cgroup {}: {error:#}",
                        leaf.display()
                    );
                }
            }
            if let Err(error) = fs::remove_dir(&parent) {
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
