//! The cgroup test machine: boots Debian's kernel under QEMU (software
//! emulation, no KVM needed) with the initramfs that `just vm-image` builds,
//! once for each cgroup layout in LAYOUTS. Its /init (tests/vm/init) mounts
//! the layout that the kernel command line names and runs the step 04
//! behaviours there. Each behaviour that ran inside becomes a trial here,
//! under the layout's name and its own (`cgroup_vm::hybrid::step04::…`), so
//! a failure says which behaviour failed on which layout.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use ferry_tests::run::Run;
use ferry_tests::target_dir;
use libtest_mimic::{Arguments, Trial};

const QEMU: &str = "qemu-system-x86_64";
const BEGIN: &str = "@@ferry-vm-begin@@";
const END: &str = "@@ferry-vm-end@@";
const STATUS: &str = "@@ferry-vm-status ";
/// What /init prints about the machine itself, before the suite runs.
const NOTE: &str = "ferry-vm: note: ";

/// The cgroup layouts learners have, as `ferry.layout=` names them on the
/// kernel command line; tests/vm/init describes and mounts each.
const LAYOUTS: [&str; 4] = ["v2", "v2-bare", "hybrid", "legacy"];

fn main() -> ExitCode {
    ferry_tests::run_trials(trials())
}

fn trials() -> Result<Vec<Trial>> {
    let dir = target_dir().join("ferry").join("vm");
    let (kernel, initramfs) = (dir.join("vmlinuz"), dir.join("initramfs.cpio.gz"));
    let ready = kernel.exists() && initramfs.exists() && which(QEMU).is_some();
    let filter = Arguments::from_args().filter;
    let mut trials = Vec::new();
    // One machine at a time: two would share this host's two cores, and
    // cpu_limit_throttles needs half a CPU for the machine's busy loop.
    for layout in selected(filter.as_deref()) {
        let group = format!("cgroup_vm::{}", in_trial_names(layout));
        if !ready {
            let trial = Trial::test(format!("{group}::boot"), || {
                Err(
                    "no QEMU or no machine image: run `just vm-image` (it installs and builds both)"
                        .into(),
                )
            });
            // Never a silent skip under CI.
            let in_ci = std::env::var("CI").is_ok_and(|ci| ci == "true");
            trials.push(trial.with_ignored_flag(!in_ci));
            continue;
        }
        let report = boot(&kernel, &initramfs, layout).and_then(|console| parse(&console, layout));
        trials.extend(layout_trials(&group, report));
    }
    Ok(trials)
}

/// The layouts that the test filter names (`-- hybrid`, or
/// `-- cgroup_vm::v2_bare::step04::…`), or all of them: one machine boots
/// for a question about one layout, not four.
fn selected(filter: Option<&str>) -> Vec<&'static str> {
    let named = |layout: &&str| {
        filter.is_some_and(|filter| {
            filter
                .split("::")
                .any(|part| part == in_trial_names(layout))
        })
    };
    let named: Vec<_> = LAYOUTS.into_iter().filter(named).collect();
    if named.is_empty() {
        LAYOUTS.to_vec()
    } else {
        named
    }
}

/// A layout as trial names spell it: `v2-bare` is `v2_bare`, a Rust path.
fn in_trial_names(layout: &str) -> String {
    layout.replace('-', "_")
}

/// `GROUP::boot`, which fails if the machine never ran the suite to its end
/// (or the suite failed with no behaviour to blame), and one trial per
/// behaviour that ran inside.
fn layout_trials(group: &str, report: Result<Report>) -> Vec<Trial> {
    let report = match report {
        Ok(report) => report,
        Err(error) => {
            return vec![Trial::test(format!("{group}::boot"), move || {
                Err(format!("{error:#}").into())
            })];
        }
    };
    for note in &report.notes {
        eprintln!("{group}: note: {note}");
    }
    let boot = report.unexplained_failure;
    let mut trials = vec![Trial::test(format!("{group}::boot"), move || {
        boot.map_or(Ok(()), |failure| Err(failure.into()))
    })];
    for (name, failure) in report.results {
        trials.push(Trial::test(format!("{group}::{name}"), move || {
            failure.map_or(Ok(()), |details| Err(details.into()))
        }));
    }
    trials
}

fn boot(kernel: &Path, initramfs: &Path, layout: &str) -> Result<String> {
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
        .args([
            "-append",
            &format!("console=ttyS0 panic=-1 quiet loglevel=1 ferry.layout={layout}"),
        ])
        .deadline(Duration::from_secs(900))
        .output()
        .with_context(|| format!("boot the cgroup test machine with layout {layout}"))?;
    ensure!(outcome.status == 0, "{QEMU} failed:\n{outcome}");
    Ok(outcome.stdout)
}

struct Report {
    /// What /init said about the machine (a controller the kernel lacks).
    notes: Vec<String>,
    /// Each behaviour's name, and its failure report if it failed.
    results: Vec<(String, Option<String>)>,
    /// Why the suite failed, if it did and no behaviour's failure says why.
    unexplained_failure: Option<String>,
}

/// Reads libtest's report from between the markers on the console, after
/// checking that the machine set up the layout it was asked for.
fn parse(console: &str, layout: &str) -> Result<Report> {
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
    let header = inside.lines().next().unwrap_or_default();
    ensure!(
        header.contains(&format!(" layout={layout} ")),
        "asked for layout {layout}, the machine says: {header}"
    );
    let status = inside
        .lines()
        .find_map(|line| line.trim().strip_prefix(STATUS)?.strip_suffix("@@"))
        .context("the suite's exit status is missing")?;
    let notes = inside
        .lines()
        .filter_map(|line| line.trim().strip_prefix(NOTE))
        .map(str::to_owned)
        .collect();
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
    let explained = results.iter().any(|(_, failure)| failure.is_some());
    let unexplained_failure = (status != "0" && !explained).then(|| {
        format!(
            "the suite inside the machine exited with status {status}, \
             and no behaviour failed:\n{inside}"
        )
    });
    Ok(Report {
        notes,
        results,
        unexplained_failure,
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
