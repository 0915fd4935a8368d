//! The cgroup v2 machine: boots Debian's kernel under QEMU (software
//! emulation, no KVM needed) with the initramfs that `just vm-image` builds,
//! whose /init (tests/vm/init) runs the step 04 behaviours on a pure
//! cgroup2 hierarchy. Each behaviour that ran inside becomes a trial here,
//! under its own name, so a failure says which behaviour failed on v2.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use ferry_tests::run::Run;
use ferry_tests::target_dir;
use libtest_mimic::Trial;

const QEMU: &str = "qemu-system-x86_64";
const BEGIN: &str = "@@ferry-vm-begin@@";
const END: &str = "@@ferry-vm-end@@";
const STATUS: &str = "@@ferry-vm-status ";

fn main() -> ExitCode {
    ferry_tests::run_trials(trials())
}

fn trials() -> Result<Vec<Trial>> {
    let dir = target_dir().join("ferry").join("vm");
    let (kernel, initramfs) = (dir.join("vmlinuz"), dir.join("initramfs.cpio.gz"));
    if !kernel.exists() || !initramfs.exists() || which(QEMU).is_none() {
        let trial = Trial::test("cgroup_v2_vm::boot", || {
            Err(
                "no QEMU or no machine image: run `just vm-image` (it installs and builds both)"
                    .into(),
            )
        });
        // Never a silent skip under CI.
        let in_ci = std::env::var("CI").is_ok_and(|ci| ci == "true");
        return Ok(vec![trial.with_ignored_flag(!in_ci)]);
    }
    let console = boot(&kernel, &initramfs);
    let report = console.and_then(|console| parse(&console));
    Ok(match report {
        Err(error) => vec![Trial::test("cgroup_v2_vm::boot", move || {
            Err(format!("{error:#}").into())
        })],
        Ok(report) => {
            let mut trials = vec![Trial::test("cgroup_v2_vm::boot", move || {
                report
                    .status_ok
                    .then_some(())
                    .ok_or_else(|| "the suite inside the machine failed".into())
            })];
            for (name, failure) in report.results {
                trials.push(Trial::test(
                    format!("cgroup_v2_vm::{name}"),
                    move || match failure {
                        None => Ok(()),
                        Some(details) => Err(details.into()),
                    },
                ));
            }
            trials
        }
    })
}

fn boot(kernel: &Path, initramfs: &Path) -> Result<String> {
    let outcome = Run::new(QEMU)
        .args(["-accel", "tcg", "-cpu", "max", "-m", "1024", "-smp", "2"])
        .args(["-nographic", "-no-reboot"])
        .args([
            OsStr::new("-kernel"),
            kernel.as_os_str(),
            OsStr::new("-initrd"),
            initramfs.as_os_str(),
        ])
        // loglevel=1: kernel messages (the OOM killer's, say) stay off the
        // console, where they could split a result line.
        .args(["-append", "console=ttyS0 panic=-1 quiet loglevel=1"])
        .deadline(Duration::from_secs(900))
        .output()
        .context("boot the cgroup v2 machine")?;
    ensure!(outcome.status == 0, "{QEMU} failed:\n{outcome}");
    Ok(outcome.stdout)
}

struct Report {
    status_ok: bool,
    /// Each behaviour's name, and its failure report if it failed.
    results: Vec<(String, Option<String>)>,
}

/// Reads libtest's report from between the markers on the console.
fn parse(console: &str) -> Result<Report> {
    let Some(start) = console.find(BEGIN) else {
        let tail: Vec<&str> = console.lines().rev().take(40).collect();
        bail!(
            "the machine never started the suite; its console ended with:\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    };
    let inside = &console[start..];
    let inside = &inside[..inside
        .find(END)
        .context("the machine stopped before the end of the suite")?];
    let status = inside
        .lines()
        .find_map(|line| line.trim().strip_prefix(STATUS)?.strip_suffix("@@"))
        .context("the suite's exit status is missing")?;
    let mut results = Vec::new();
    for line in inside.lines().map(str::trim) {
        let Some(rest) = line.strip_prefix("test ") else {
            continue;
        };
        let Some((name, verdict)) = rest.split_once(" ... ") else {
            continue;
        };
        let failure = match verdict.trim() {
            "ok" => None,
            "FAILED" => Some(failure_details(inside, name.trim())),
            _ => continue,
        };
        results.push((name.trim().to_owned(), failure));
    }
    ensure!(
        !results.is_empty(),
        "the suite inside the machine ran no behaviour:\n{inside}"
    );
    Ok(Report {
        status_ok: status == "0",
        results,
    })
}

/// The `---- NAME ----` section of libtest's failure report.
fn failure_details(report: &str, name: &str) -> String {
    let header = format!("---- {name} ");
    let Some(start) = report.find(&header) else {
        return "failed (no details)".to_owned();
    };
    let body = &report[start + header.len()..];
    let body = body.split_once('\n').map_or("", |(_, rest)| rest);
    let end = body
        .find("\n---- ")
        .or_else(|| body.find("\nfailures:"))
        .unwrap_or(body.len());
    body[..end].trim().to_owned()
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| PathBuf::from(dir).join(program))
        .find(|path| path.exists())
}
