//! What ferry remembers of a container: `ROOT/ID/state.json`.
//!
//! Until step 06 a container lived exactly as long as the `run` that made
//! it, and nobody else needed to know of it. Now `ps`, `logs`, `stop`,
//! `exec` and `rm` are other processes, started later, and they learn about
//! the container from this file: who it is, what it runs, and how it ended.
//!
//! The file is only ever replaced whole (written beside, then renamed over:
//! rename(2) is atomic), so a reader sees the old record or the new one,
//! never half of each.
//!
//! Whether the container is alive is *not* a field here. A record that says
//! "running" may have been written by a supervisor that `kill -9` ended a
//! second later. Alive means: its supervisor still holds the lock on the
//! container's folder (see state.rs), and its PID 1 is the process the
//! record names (see `Record::live_pid`).

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// The file's name in the container's folder.
pub const FILE: &str = "state.json";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Its folder is made; its command has not started yet.
    Created,
    Running,
    Exited,
    /// It was running when its supervisor died: nobody saw how it ended.
    Dead,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// 64 hex digits; the folder, the cgroup and the veth use the first 12.
    pub id: String,
    pub name: String,
    /// ROOTFS or IMAGE, as given to `run`.
    pub image: String,
    /// The command line that was executed: entrypoint and arguments.
    pub command: Vec<String>,
    /// Nanoseconds since the Unix epoch, as every time here.
    pub created: u64,
    pub status: Status,
    pub started: Option<u64>,
    pub finished: Option<u64>,
    pub exit_code: Option<u8>,
    /// The container's PID 1, as the host numbers it, and when it started
    /// (field 22 of /proc/PID/stat, in clock ticks since boot): a pid is
    /// reused after its process ends, the pair never is.
    pub pid: Option<i32>,
    pub pid_started: Option<u64>,
    /// The supervisor's pid: the process that waits for PID 1.
    pub supervisor: Option<i32>,
    pub hostname: String,
    pub cgroup_parent: String,
    /// The published ports, as `ps` shows them: `0.0.0.0:8080->80/tcp`.
    pub ports: Vec<String>,
    /// The container's environment, working directory and user, for `exec`.
    pub env: Vec<String>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    /// `--rm`: remove the container when it ends.
    pub auto_remove: bool,
    pub tty: bool,
}

impl Record {
    /// The short id: what `ps` shows, and what names the folder.
    pub fn short_id(&self) -> &str {
        &self.id[..12]
    }

    /// Reads the record in a container's folder.
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join(FILE);
        let text = fs::read(&path).with_context(|| format!("read {}", path.display()))?;
        serde_json::from_slice(&text).with_context(|| format!("parse {}", path.display()))
    }

    /// Replaces the record in `dir`, atomically.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let path = dir.join(FILE);
        let new = dir.join(format!("{FILE}.new"));
        let text = serde_json::to_vec_pretty(self).context("encode the container's record")?;
        fs::write(&new, text).with_context(|| format!("write {}", new.display()))?;
        fs::rename(&new, &path).with_context(|| format!("rename {} into place", new.display()))
    }

    /// PID 1's pid, if that process is still the one this record started.
    pub fn live_pid(&self) -> Option<i32> {
        let (pid, started) = (self.pid?, self.pid_started?);
        (start_time(pid).ok()? == started).then_some(pid)
    }
}

// ANCHOR: start_time
/// When process `pid` started, in clock ticks after boot: field 22 of
/// /proc/PID/stat. Field 2 is the command's name in parentheses, and a name
/// may hold spaces and ')' itself: count from the last ')'.
pub fn start_time(pid: i32) -> Result<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("read /proc/{pid}/stat"))?;
    let after_name = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .with_context(|| format!("/proc/{pid}/stat has no command name"))?;
    // After the name come field 3 (the state) on: field 22 is the 20th.
    after_name
        .split_whitespace()
        .nth(19)
        .and_then(|ticks| ticks.parse().ok())
        .with_context(|| format!("/proc/{pid}/stat has no start time"))
}
// ANCHOR_END: start_time
