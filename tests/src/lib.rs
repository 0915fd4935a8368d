//! Test support for ferry: shared by the behaviour suite, the book checks and
//! the `ferry-lab` tool. Nothing here is runtime code: every step is a runtime
//! of its own, and this crate only drives and observes them from outside.

pub mod bench;
pub mod book;
pub mod cgroup;
pub mod doctor;
pub mod grade;
pub mod host;
mod http;
pub mod lab;
pub mod netlab;
pub mod oci;
pub mod pty;
pub mod registry;
pub mod registry_lab;
pub mod rootfs;
pub mod run;
pub mod scratch;
pub mod skeleton;
pub mod steps;
pub mod transcript;

use std::path::PathBuf;

/// The workspace's top folder.
pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits inside the workspace")
        .to_path_buf()
}

/// Where cargo puts what it builds, honouring CARGO_TARGET_DIR.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => workspace().join(dir),
        None => workspace().join("target"),
    }
}

/// Runs a custom test harness's trials with libtest's command line and
/// output, so `cargo test` and CI read it like any other test binary.
pub fn run_trials(trials: anyhow::Result<Vec<libtest_mimic::Trial>>) -> std::process::ExitCode {
    let arguments = libtest_mimic::Arguments::from_args();
    match trials {
        Ok(trials) => libtest_mimic::run(&arguments, trials).exit_code(),
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Whether privileged tests may run. Under CI=true a privileged test that
/// cannot run must fail, never skip; elsewhere it is skipped with a reason.
pub fn privileged() -> Privilege {
    if nix::unistd::geteuid().is_root() {
        Privilege::Root
    } else if std::env::var("CI").is_ok_and(|ci| ci == "true") {
        Privilege::MissingInCi
    } else {
        Privilege::Missing
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Privilege {
    Root,
    Missing,
    MissingInCi,
}

impl Privilege {
    /// Wraps a privileged trial: run it as root, fail it in CI without root,
    /// skip it elsewhere.
    pub fn gate(self, trial: libtest_mimic::Trial) -> libtest_mimic::Trial {
        match self {
            Privilege::Root => trial,
            Privilege::Missing => trial.with_ignored_flag(true),
            Privilege::MissingInCi => {
                let name = trial.name().to_owned();
                libtest_mimic::Trial::test(name, || {
                    Err(
                        "needs root: containers need CAP_SYS_ADMIN and CI must not skip this"
                            .into(),
                    )
                })
            }
        }
    }
}
