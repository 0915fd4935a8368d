//! Reading cgroups from outside: where a process's cgroups are, what they
//! have counted, and removing a test's own parent cgroup afterwards.
//! (The runtimes have their own code for this; this is the observer's.)

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// A cgroup filesystem, as /proc/self/mountinfo lists it:
/// `32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub point: PathBuf,
    /// cgroup2; otherwise a v1 hierarchy.
    pub v2: bool,
    /// The filesystem's options; a v1 hierarchy's controllers are among
    /// them (`rw,cpu,cpuacct`), next to options such as `name=systemd`.
    pub options: Vec<String>,
    /// Mounted read-only: no cgroup can be made in it (a container's view).
    pub read_only: bool,
}

/// Every cgroup mount in a mountinfo text, in mount order.
pub fn parse_mounts(mountinfo: &str) -> Vec<Mount> {
    mountinfo
        .lines()
        .filter_map(|line| {
            // Before " - ": id, parent, device, root, mount point, mount
            // options, optional fields; after it: type, source, fs options.
            let (mount, filesystem) = line.split_once(" - ")?;
            let mut fields = filesystem.split(' ');
            let (kind, options) = (fields.next()?, fields.nth(1)?);
            let v2 = match kind {
                "cgroup2" => true,
                "cgroup" => false,
                _ => return None,
            };
            let mut mount = mount.split(' ');
            let point = PathBuf::from(mount.nth(4)?);
            let read_only = mount.next()?.split(',').any(|o| o == "ro");
            let options: Vec<String> = options.split(',').map(str::to_owned).collect();
            Some(Mount {
                point,
                v2,
                read_only: read_only || options.iter().any(|o| o == "ro"),
                options,
            })
        })
        .collect()
}

fn mounts() -> Result<Vec<Mount>> {
    let mountinfo =
        fs::read_to_string("/proc/self/mountinfo").context("read /proc/self/mountinfo")?;
    Ok(parse_mounts(&mountinfo))
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
        let mount = mounts.iter().find(|mount| match id {
            "0" => mount.v2,
            _ => {
                !mount.v2
                    && controllers
                        .split(',')
                        .any(|c| mount.options.iter().any(|o| o == c))
            }
        });
        if let Some(mount) = mount {
            dirs.push(mount.point.join(path.trim_start_matches('/')));
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
            .filter_map(|mount| fs::read_dir(mount.point.join(&self.name)).ok())
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
        for mount in mounts().unwrap_or_default() {
            let parent = mount.point.join(&self.name);
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
    // From step 07 a container's supervisor outlives the test's runtime
    // process: once the container dies here, the supervisor may remove the
    // cgroup itself, between any two of these calls. Gone is done.
    let gone = |error: &std::io::Error| error.kind() == std::io::ErrorKind::NotFound;
    loop {
        let procs = match fs::read_to_string(leaf.join("cgroup.procs")) {
            Ok(procs) => procs,
            Err(error) if gone(&error) => return Ok(()),
            Err(error) => return Err(error.into()),
        };
        if procs.trim().is_empty() {
            return match fs::remove_dir(leaf) {
                Err(error) if !gone(&error) => Err(error.into()),
                _ => Ok(()),
            };
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
    Ok(mounts()?
        .iter()
        .any(|mount| mount.point.join(name).exists()))
}

/// The cgroup layouts a host can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// cgroup2 at /sys/fs/cgroup.
    Unified,
    /// v1 hierarchies, and an empty cgroup2 at /sys/fs/cgroup/unified.
    Hybrid,
    /// v1 hierarchies only.
    Legacy,
}

impl Layout {
    /// The layout, decided as the runtimes decide it: by what is mounted at
    /// /sys/fs/cgroup. None when no cgroup filesystem is mounted at all.
    pub fn of(mounts: &[Mount]) -> Option<Self> {
        let v2_at = |point: &str| {
            mounts
                .iter()
                .any(|mount| mount.v2 && mount.point == Path::new(point))
        };
        if v2_at("/sys/fs/cgroup") {
            Some(Self::Unified)
        } else if v2_at("/sys/fs/cgroup/unified") {
            Some(Self::Hybrid)
        } else if mounts.iter().any(|mount| !mount.v2) {
            Some(Self::Legacy)
        } else {
            None
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Unified => "v2 (unified)",
            Self::Hybrid => "hybrid (v1 controllers, v2 beside them)",
            Self::Legacy => "v1 (legacy)",
        }
    }
}

/// The host's cgroup layout, as the runtimes name it.
pub fn layout_name() -> &'static str {
    Layout::of(&mounts().unwrap_or_default())
        .unwrap_or(Layout::Legacy)
        .name()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A systemd host on cgroup v2 (Debian 12).
    const UNIFIED: &str = "\
22 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
25 24 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
35 25 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

    /// systemd's hybrid layout, with cpu and cpuacct mounted together.
    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
32 31 0:29 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
33 31 0:30 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,xattr,name=systemd
34 31 0:31 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:12 - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:13 - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,pids
";

    /// v1 only, as a host without systemd mounts it (cgroupfs-mount).
    const LEGACY: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
";

    /// Inside a container started without --privileged: v2, read-only.
    const READ_ONLY: &str = "\
600 599 0:30 / /sys/fs/cgroup ro,nosuid,nodev,noexec,relatime - cgroup2 cgroup rw,nsdelegate
";

    #[test]
    fn layout_is_what_is_mounted_at_sys_fs_cgroup() {
        let layout = |text| Layout::of(&parse_mounts(text));
        assert_eq!(layout(UNIFIED), Some(Layout::Unified));
        assert_eq!(layout(HYBRID), Some(Layout::Hybrid));
        assert_eq!(layout(LEGACY), Some(Layout::Legacy));
        assert_eq!(layout(READ_ONLY), Some(Layout::Unified));
        assert_eq!(layout(&UNIFIED[..UNIFIED.find("35 25").unwrap()]), None);
    }

    #[test]
    fn mounts_keep_their_controllers_and_read_only_flag() {
        let mounts = parse_mounts(HYBRID);
        assert_eq!(mounts.len(), 5, "the tmpfs is not a cgroup mount");
        assert_eq!(
            mounts[2],
            Mount {
                point: PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"),
                v2: false,
                options: vec!["rw".into(), "cpu".into(), "cpuacct".into()],
                read_only: false,
            }
        );
        assert!(mounts[0].v2 && !mounts[0].read_only);
        assert!(parse_mounts(READ_ONLY)[0].read_only);
    }
}
