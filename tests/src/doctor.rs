//! `just doctor`: checks the learner's machine for what the workshop needs,
//! and for each problem says what to do.
//!
//! Each check prints one line, `ok`, `warn` or `FAIL`, then a summary; the
//! exit status is 0 unless a check failed (warnings are for what only some
//! recipes need). The kernel features are tried for real, each in a child
//! process (`ferry-lab probe …`, in `probe.rs`) that makes its own
//! namespaces and exits: whatever a probe made (a mount, a veth pair, a
//! nftables table) goes with its namespaces, even if the probe dies half-way.
//! Nothing here writes to the host's network, firewall or cgroups.

mod host;
mod kernel;
mod probe;
mod tools;

use std::ffi::OsString;
use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

use anyhow::Result;
use nix::unistd::{Uid, User};

use crate::run::{Outcome, Run};

pub use probe::Probe;

/// Where the tools are looked up: the learner's PATH. The recipe passes it,
/// because sudo replaces PATH with its own `secure_path`.
const PATH_VARIABLE: &str = "FERRY_DOCTOR_PATH";

/// sudo's `secure_path` on Debian and Ubuntu.
const SUDO_PATH: [&str; 6] = [
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
];

/// How long one tool or probe may take: none does real work, so a run
/// that takes this long is stuck (a hung `sudo` prompt, a broken proxy).
const DEADLINE: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    /// Missing something only some recipes need, or worth knowing.
    Warn,
    /// The workshop cannot work here until this is fixed.
    Fail,
}

/// One check's line: `ok   overlayfs: …`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub status: Status,
    pub check: &'static str,
    /// What was found and, for a problem, what to do.
    pub text: String,
}

impl Finding {
    fn ok(check: &'static str, text: impl Into<String>) -> Self {
        Self::new(Status::Ok, check, text)
    }

    fn warn(check: &'static str, text: impl Into<String>) -> Self {
        Self::new(Status::Warn, check, text)
    }

    fn fail(check: &'static str, text: impl Into<String>) -> Self {
        Self::new(Status::Fail, check, text)
    }

    fn new(status: Status, check: &'static str, text: impl Into<String>) -> Self {
        Self {
            status,
            check,
            text: text.into(),
        }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = match self.status {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
        };
        write!(f, "{status:<4} {}: {}", self.check, self.text)
    }
}

/// Prints each finding as it comes (a slow probe shows where it is), and
/// counts them.
#[derive(Default)]
struct Report {
    ok: usize,
    warnings: usize,
    problems: usize,
}

impl Report {
    fn add(&mut self, finding: Finding) {
        println!("{finding}");
        match finding.status {
            Status::Ok => self.ok += 1,
            Status::Warn => self.warnings += 1,
            Status::Fail => self.problems += 1,
        }
    }

    fn summary(&self) -> String {
        let plural =
            |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        format!(
            "{} ok, {}, {}",
            self.ok,
            plural(self.warnings, "warning", "warnings"),
            plural(self.problems, "problem", "problems")
        )
    }
}

/// Runs every check and prints the report; fails only on a problem.
pub fn run() -> Result<ExitCode> {
    let machine = Machine::from_environment()?;
    let mut report = Report::default();
    report.add(host::root(&machine));
    report.add(host::machine(&machine));
    kernel::check(&machine, &mut |finding| report.add(finding));
    tools::check(&machine, &mut |finding| report.add(finding));
    report.add(host::firewall(&machine));
    report.add(host::disk());
    println!("{}", report.summary());
    Ok(if report.problems == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Who runs the doctor, and where their tools are.
struct Machine {
    root: bool,
    /// Who ran `sudo`, when the doctor runs through it: the tools are
    /// theirs (rustup keeps its toolchains in their home), and run as them.
    sudo_user: Option<User>,
    path: OsString,
}

impl Machine {
    fn from_environment() -> Result<Self> {
        let root = nix::unistd::geteuid().is_root();
        let sudo_user = match std::env::var("SUDO_UID").ok().and_then(|u| u.parse().ok()) {
            Some(uid) if root => User::from_uid(Uid::from_raw(uid))?,
            _ => None,
        };
        let path = std::env::var_os(PATH_VARIABLE)
            .or_else(|| std::env::var_os("PATH"))
            .unwrap_or_default();
        Ok(Self {
            root,
            sudo_user,
            path,
        })
    }

    /// The first executable file named `tool` on the learner's PATH.
    fn find(&self, tool: &str) -> Option<PathBuf> {
        std::env::split_paths(&self.path)
            .map(|dir| dir.join(tool))
            .find(|candidate| is_executable(candidate))
    }

    /// A program the recipes run as root: on the learner's PATH, or where
    /// sudo's own PATH finds it (/usr/sbin is not on every user's PATH).
    fn find_for_root(&self, tool: &str) -> Option<PathBuf> {
        self.find(tool).or_else(|| {
            SUDO_PATH
                .iter()
                .map(|dir| Path::new(dir).join(tool))
                .find(|candidate| is_executable(candidate))
        })
    }

    /// Runs `tool ARGS` as the learner (not as root through sudo), with a
    /// deadline. None when the tool is not on the PATH.
    fn run_as_learner(&self, tool: &str, args: &[&str]) -> Option<Result<Outcome>> {
        let program = self.find(tool)?;
        let mut command = Command::new(program);
        command.args(args).env("PATH", &self.path);
        if let Some(user) = &self.sudo_user {
            command
                .uid(user.uid.as_raw())
                .gid(user.gid.as_raw())
                .env("HOME", &user.dir)
                .env("USER", &user.name)
                .env("LOGNAME", &user.name);
        }
        Some(Run::from_command(command).deadline(DEADLINE).output())
    }

    /// Runs `tool ARGS` as root, as the doctor runs (reading the firewall).
    fn run_as_root(&self, tool: &str, args: &[&str]) -> Option<Result<Outcome>> {
        let program = self.find_for_root(tool)?;
        Some(Run::new(program).args(args).deadline(DEADLINE).output())
    }
}

fn is_executable(path: &Path) -> bool {
    path.metadata()
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// The first line a command printed, on stdout or else on stderr.
fn first_line(outcome: &Outcome) -> &str {
    let text = if outcome.stdout.trim().is_empty() {
        &outcome.stderr
    } else {
        &outcome.stdout
    };
    text.lines().next().unwrap_or("").trim()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_start_with_the_status_then_the_check() {
        let line = Finding::fail("mdbook", "not found").to_string();
        assert_eq!(line, "FAIL mdbook: not found");
        assert_eq!(Finding::ok("disk", "9 GiB").to_string(), "ok   disk: 9 GiB");
    }

    #[test]
    fn summary_counts_each_status() {
        let mut report = Report::default();
        for finding in [
            Finding::ok("a", ""),
            Finding::ok("b", ""),
            Finding::warn("c", ""),
            Finding::fail("d", ""),
        ] {
            report.add(finding);
        }
        assert_eq!(report.summary(), "2 ok, 1 warning, 1 problem");
        report.add(Finding::warn("e", ""));
        report.add(Finding::fail("f", ""));
        assert_eq!(report.summary(), "2 ok, 2 warnings, 2 problems");
    }
}
