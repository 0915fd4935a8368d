//! cgroup v2: one tree, one directory per cgroup, every controller in it.
//!
//! ```text
//!  /sys/fs/cgroup/                 cgroup.subtree_control: "+cpu +memory +pids"
//!  └─ ferry/                       holds no process; passes the controllers on
//!     └─ ID/                       memory.max  cpu.max  pids.max  cgroup.procs
//! ```

use std::fs::{self, File, OpenOptions};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use nix::mount::{MsFlags, mount};

use super::{MOUNT, read_count, write};
use crate::limits::{CPU_PERIOD, Limits};

/// What the containers' cgroups need from their parent.
const CONTROLLERS: [&str; 3] = ["cpu", "memory", "pids"];

pub struct Leaf {
    pub dir: PathBuf,
    /// The directory, open: clone3 starts the child in the cgroup it names.
    fd: File,
}

impl Leaf {
    // ANCHOR: create
    /// Creates PARENT/ID under the root, with its limits, and opens it.
    pub fn create(parent: &str, id: &str, limits: &Limits) -> Result<Self> {
        let parent = Path::new(MOUNT).join(parent);
        enable_controllers_down_to(&parent)?;
        let dir = parent.join(id);
        fs::create_dir(&dir).with_context(|| format!("create cgroup {}", dir.display()))?;
        let fd = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(&dir)
            .with_context(|| format!("open cgroup {}", dir.display()));
        // Made, so removed again if anything below fails.
        let leaf = match fd {
            Ok(fd) => Self { dir, fd },
            Err(error) => {
                let _ = fs::remove_dir(&dir);
                return Err(error);
            }
        };
        leaf.limit(limits)?;
        Ok(leaf)
    }
    // ANCHOR_END: create

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    // ANCHOR: limit
    fn limit(&self, limits: &Limits) -> Result<()> {
        // ANCHOR: lab04-1-limit-v2 Write the limits into the v2 cgroup: memory.max (and memory.swap.max 0), cpu.max as "QUOTA PERIOD", pids.max [04-cgroups.md#the-code]
        if let Some(bytes) = limits.memory {
            write(&self.dir, "memory.max", bytes)?;
            // No swap beyond the limit, or it would only slow the container
            // down before the same end. The file is missing when the
            // kernel does not account swap.
            if self.dir.join("memory.swap.max").exists() {
                write(&self.dir, "memory.swap.max", 0)?;
            }
        }
        if let Some(cpus) = limits.cpus {
            write(
                &self.dir,
                "cpu.max",
                format!("{} {CPU_PERIOD}", cpus.quota()),
            )?;
        }
        if let Some(pids) = limits.pids_limit {
            write(&self.dir, "pids.max", pids)?;
        }
        Ok(())
        // ANCHOR_END: lab04-1-limit-v2 instead: Ok(())
    }
    // ANCHOR_END: limit

    // ANCHOR: join
    /// The fallback for kernels before 5.7, which cannot start a child in a
    /// cgroup: the child moves itself in ("0" is the writer itself).
    pub fn join(&self) -> Result<()> {
        // ANCHOR: lab04-3-join-v2 Where clone3 cannot place it, the child moves itself into its cgroup: "0" into cgroup.procs [04-cgroups.md#into-the-cgroup-before-the-first-instruction]
        write(&self.dir, "cgroup.procs", 0)
        // ANCHOR_END: lab04-3-join-v2 instead: Ok(())
    }
    // ANCHOR_END: join

    pub fn oom_kills(&self) -> Result<u64> {
        read_count(&self.dir.join("memory.events"), "oom_kill")
    }
}

/// Kills what is left inside, and removes the directory.
impl Drop for Leaf {
    fn drop(&mut self) {
        if let Err(error) = super::remove(&self.dir) {
            eprintln!("error: {error:#}");
        }
    }
}

// ANCHOR: enable
/// v2's "no internal processes" rule: a cgroup hands controllers down to
/// its children only if it holds no process itself (the root is exempt).
/// So the parent holds none, and each cgroup on the way down from the root
/// enables what the next one needs in its `cgroup.subtree_control`.
/// systemd enables them at the root on most hosts; a host without systemd
/// (WSL 2, Alpine, a minimal VM) enables none, and runtimes do it
/// themselves, as runc does. It changes no process's cgroup.
fn enable_controllers_down_to(parent: &Path) -> Result<()> {
    let mut dir = PathBuf::from(MOUNT);
    let below = parent
        .strip_prefix(MOUNT)
        .expect("the parent is under the mount");
    for name in below {
        enable_controllers_in(&dir)?;
        dir.push(name);
        super::create_shared(&dir)?;
    }
    // And the parent itself, for the containers' cgroups below it.
    enable_controllers_in(&dir)
}

/// Makes `dir` pass the controllers ferry needs on to its children.
fn enable_controllers_in(dir: &Path) -> Result<()> {
    let read = |file: &str| {
        fs::read_to_string(dir.join(file)).with_context(|| format!("read {}/{file}", dir.display()))
    };
    let (offered, enabled) = (read("cgroup.controllers")?, read("cgroup.subtree_control")?);
    let has = |list: &str, controller: &str| list.split_whitespace().any(|c| c == controller);
    let mut missing = Vec::new();
    for controller in CONTROLLERS {
        if !has(&offered, controller) {
            bail!(
                "the {controller} controller is not available in {}: \
                 the kernel lacks it, or a v1 hierarchy holds it",
                dir.display()
            );
        }
        if !has(&enabled, controller) {
            missing.push(format!("+{controller}"));
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    write(dir, "cgroup.subtree_control", missing.join(" "))
}
// ANCHOR_END: enable

// ANCHOR: mount
/// Inside the container, after it has its own cgroup namespace: the cgroup
/// filesystem at /sys/fs/cgroup, read-only. Its root is the container's
/// own cgroup, where programs read their limits (the JVM and Go do).
pub fn mount_in_container() -> Result<()> {
    // ANCHOR: lab04-5-mount-v2 Mount the cgroup2 filesystem read-only on /sys/fs/cgroup, inside the cgroup namespace [04-cgroups.md#the-containers-view-a-cgroup-namespace]
    let flags = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount(Some("cgroup2"), MOUNT, Some("cgroup2"), flags, None::<&str>)
        .with_context(|| format!("mount cgroup2 read-only on {MOUNT}"))
    // ANCHOR_END: lab04-5-mount-v2 instead: Ok(())
}
// ANCHOR_END: mount
