//! What every behaviour uses: the step under test, the workshop rootfs, and
//! exact assertions on how a run ended.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, ensure};
use ferry_tests::host;
use ferry_tests::rootfs;
use ferry_tests::run::{Outcome, Run};
use ferry_tests::steps::Step;

pub struct Ctx {
    pub step: Step,
    pub rootfs: PathBuf,
}

impl Ctx {
    pub fn new(step: Step) -> Result<Self> {
        ensure!(
            step.binary.exists(),
            "{} does not exist: build the steps first (`cargo build --workspace`, or `just test`)",
            step.binary.display()
        );
        Ok(Self {
            step,
            rootfs: rootfs::built()?,
        })
    }

    /// The step binary, with no arguments yet.
    pub fn runtime(&self) -> Run {
        Run::new(&self.step.binary)
    }

    /// `stepNN run OPTIONS ROOTFS COMMAND...` in the workshop rootfs.
    pub fn run(&self, options: &[&str], command: &[&str]) -> Run {
        self.run_with_rootfs(&self.rootfs, options, command)
    }

    /// `stepNN run OPTIONS ROOTFS COMMAND...` with a ROOTFS of the test's choosing.
    pub fn run_with_rootfs(&self, rootfs: &Path, options: &[&str], command: &[&str]) -> Run {
        let mut args: Vec<&OsStr> = vec!["run".as_ref()];
        args.extend(options.iter().map(OsStr::new));
        args.push(rootfs.as_os_str());
        args.extend(command.iter().map(OsStr::new));
        self.runtime().args(args)
    }

    /// Runs `sh -c SCRIPT` in the container and returns the outcome.
    pub fn sh(&self, options: &[&str], script: &str) -> Result<Outcome> {
        self.run(options, &["/bin/sh", "-c", script]).output()
    }
}

/// The run ended with exactly this status and output.
pub fn expect(outcome: &Outcome, status: i32, stdout: &str, stderr: &str) -> Result<()> {
    ensure!(
        outcome.status == status && outcome.stdout == stdout && outcome.stderr == stderr,
        "expected status {status}, stdout {stdout:?}, stderr {stderr:?}; got\n{outcome}"
    );
    Ok(())
}

/// The run failed with `status` and one line `error: …` on stderr that
/// mentions `mention`, and printed nothing on stdout.
pub fn expect_error(outcome: &Outcome, status: i32, mention: &str) -> Result<()> {
    let line = outcome.stderr.strip_suffix('\n').unwrap_or(&outcome.stderr);
    ensure!(
        outcome.status == status
            && outcome.stdout.is_empty()
            && line.starts_with("error: ")
            && !line.contains('\n')
            && line.contains(mention),
        "expected status {status} and one line \"error: …{mention}…\" on stderr, nothing on stdout; got\n{outcome}"
    );
    Ok(())
}

/// Runs `act` and checks that the host's mount table is the same afterwards.
pub fn leaves_mounts_alone<T>(act: impl FnOnce() -> Result<T>) -> Result<T> {
    let before = host::mount_table()?;
    let result = act()?;
    let after = host::mount_table()?;
    ensure!(
        before == after,
        "the host's mount table changed:\nbefore:\n{before}\nafter:\n{after}"
    );
    Ok(result)
}

/// The names in a host directory, sorted, one per line, as `ls -1` prints them.
pub fn listing(dir: &Path) -> Result<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .with_context(|| format!("read {}", dir.display()))?
        .map(|entry| Ok(entry?.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_>>()?;
    names.sort();
    Ok(names.iter().map(|name| format!("{name}\n")).collect())
}
