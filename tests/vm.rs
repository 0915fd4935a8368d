//! The cgroup test machine: boots Debian's kernel under QEMU (software
//! emulation, no KVM needed) with the initramfs that `just vm-image` builds,
//! once for each cgroup layout in LAYOUTS. Its /init (tests/vm/init) mounts
//! the layout that the kernel command line names and runs the step 04
//! behaviours there. Each behaviour that ran inside becomes a trial here,
//! under the layout's name and its own (`cgroup_vm::hybrid::step04::…`), so
//! a failure says which behaviour failed on which layout. Then it runs
//! `ferry-lab doctor`, whose kernel and cgroup lines become trials too
//! (`cgroup_vm::hybrid::doctor::…`): the doctor must name each layout right
//! on a machine that really has it, not only on the host it was written on.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use ferry_tests::run::Run;
use ferry_tests::target_dir;
use libtest_mimic::{Arguments, Trial};

const QEMU: &str = "qemu-system-x86_64";
const BEGIN: &str = "@@ferry-vm-begin@@";
const END: &str = "@@ferry-vm-end@@";
const STATUS: &str = "@@ferry-vm-status ";
/// What /init prints about the machine itself, before the suite runs (and
/// before the doctor).
const NOTE: &str = "ferry-vm: note: ";
/// `ferry-lab doctor`'s report, after the suite's, and its exit status.
const DOCTOR_BEGIN: &str = "@@ferry-vm-doctor-begin@@";
const DOCTOR_END: &str = "@@ferry-vm-doctor-end@@";
const DOCTOR_STATUS: &str = "@@ferry-vm-doctor-status ";

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
    trials.extend(doctor_trials(group, report.layout, report.doctor));
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
    /// The layout the machine was booted with, as LAYOUTS names it.
    layout: &'static str,
    /// What /init said about the machine (a controller the kernel lacks).
    notes: Vec<String>,
    /// Each behaviour's name, and its failure report if it failed.
    results: Vec<(String, Option<String>)>,
    /// Why the suite failed, if it did and no behaviour's failure says why.
    unexplained_failure: Option<String>,
    /// The doctor's report, or why the console has none.
    doctor: Result<Doctor, String>,
}

/// Reads libtest's report from between the markers on the console, after
/// checking that the machine set up the layout it was asked for, and the
/// doctor's report after it.
fn parse(console: &str, layout: &'static str) -> Result<Report> {
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
    // The notes are read from both parts; the results only from the suite's,
    // so that no line of the doctor's is ever taken for libtest's.
    let (suite, doctor) = match inside.find(DOCTOR_BEGIN) {
        Some(at) => (&inside[..at], Doctor::parse(&inside[at..])),
        None => (
            inside,
            Err(format!(
                "the machine printed no {DOCTOR_BEGIN}: its image predates the doctor's \
                 run in tests/vm/init, so run `just vm-image`"
            )),
        ),
    };
    let header = inside.lines().next().unwrap_or_default();
    ensure!(
        header.contains(&format!(" layout={layout} ")),
        "asked for layout {layout}, the machine says: {header}"
    );
    let status = suite
        .lines()
        .find_map(|line| line.trim().strip_prefix(STATUS)?.strip_suffix("@@"))
        .context("the suite's exit status is missing")?;
    let notes = inside
        .lines()
        .filter_map(|line| line.trim().strip_prefix(NOTE))
        .map(str::to_owned)
        .collect();
    let mut results = Vec::new();
    for line in suite.lines().map(str::trim) {
        let Some(rest) = line.strip_prefix("test ") else {
            continue;
        };
        let Some((name, verdict)) = rest.split_once(" ... ") else {
            continue;
        };
        let failure = match verdict.trim() {
            "ok" => None,
            "FAILED" => Some(failure_details(suite, name.trim())),
            _ => continue,
        };
        results.push((name.trim().to_owned(), failure));
    }
    ensure!(
        !results.is_empty(),
        "the suite inside the machine ran no behaviour:\n{suite}"
    );
    let explained = results.iter().any(|(_, failure)| failure.is_some());
    let unexplained_failure = (status != "0" && !explained).then(|| {
        format!(
            "the suite inside the machine exited with status {status}, \
             and no behaviour failed:\n{suite}"
        )
    });
    Ok(Report {
        layout,
        notes,
        results,
        unexplained_failure,
        doctor,
    })
}

/// One line of the doctor's report: `ok   cgroups: v2 (unified); …`.
#[derive(Debug)]
struct Finding {
    /// `ok`, `warn` or `FAIL`.
    verdict: String,
    check: String,
    text: String,
}

/// The doctor's report, as the machine printed it.
#[derive(Debug)]
struct Doctor {
    /// Everything between the markers, to show with a failure.
    text: String,
    findings: Vec<Finding>,
    /// `14 ok, 4 warnings, 6 problems`, if the doctor got that far.
    summary: Option<String>,
    status: String,
    /// Lines that are none of the above (a panic, `error: …`).
    strays: Vec<String>,
}

impl Doctor {
    /// Reads the report from `block`, which starts at its begin marker.
    fn parse(block: &str) -> Result<Self, String> {
        let block = &block[DOCTOR_BEGIN.len()..];
        let Some(end) = block.find(DOCTOR_END) else {
            return Err(format!(
                "no {DOCTOR_END} after the doctor's report:\n{block}"
            ));
        };
        let text = block[..end].trim_matches('\n').to_owned();
        let mut doctor = Doctor {
            text: text.clone(),
            findings: Vec::new(),
            summary: None,
            status: String::new(),
            strays: Vec::new(),
        };
        // /init's notes are the machine's, read with the suite's.
        for line in text.lines().map(str::trim).filter(|l| !l.starts_with(NOTE)) {
            if let Some(status) = line.strip_prefix(DOCTOR_STATUS) {
                doctor.status = status.trim_end_matches('@').to_owned();
            } else if let Some(finding) = Finding::parse(line) {
                doctor.findings.push(finding);
            } else if is_summary(line) && doctor.summary.is_none() {
                doctor.summary = Some(line.to_owned());
            } else if !line.is_empty() {
                doctor.strays.push(line.to_owned());
            }
        }
        if doctor.status.is_empty() {
            return Err(format!("the doctor's exit status is missing:\n{text}"));
        }
        Ok(doctor)
    }

    /// The one line of `check`.
    fn line(&self, check: &str) -> Result<&Finding> {
        let mut lines = self.findings.iter().filter(|f| f.check == check);
        let (Some(line), None) = (lines.next(), lines.next()) else {
            bail!(
                "expected exactly one `{check}:` line in the doctor's report:\n{}",
                self.text
            );
        };
        Ok(line)
    }

    fn count(&self, verdict: &str) -> usize {
        self.findings
            .iter()
            .filter(|f| f.verdict == verdict)
            .count()
    }
}

impl Finding {
    fn parse(line: &str) -> Option<Self> {
        let (verdict, rest) = line.split_once(' ')?;
        if !["ok", "warn", "FAIL"].contains(&verdict) {
            return None;
        }
        let (check, text) = rest.trim_start().split_once(": ")?;
        Some(Self {
            verdict: verdict.to_owned(),
            check: check.to_owned(),
            text: text.to_owned(),
        })
    }

    /// Fails unless the line's verdict is `verdict` and its text holds each
    /// of `words` and none of `never`.
    fn says(&self, verdict: &str, words: &[&str], never: &[&str], report: &Doctor) -> Result<()> {
        let missing: Vec<&&str> = words.iter().filter(|w| !self.text.contains(**w)).collect();
        let wrong: Vec<&&str> = never.iter().filter(|w| self.text.contains(**w)).collect();
        ensure!(
            self.verdict == verdict && missing.is_empty() && wrong.is_empty(),
            "expected `{verdict} {}: …` with {words:?}{}, got:\n{} {}: {}\n\n\
             the doctor's whole report:\n{}",
            self.check,
            if never.is_empty() {
                String::new()
            } else {
                format!(" and without {never:?}")
            },
            self.verdict,
            self.check,
            self.text,
            report.text
        );
        Ok(())
    }
}

/// `14 ok, 4 warnings, 6 problems`
fn is_summary(line: &str) -> bool {
    let parts: Vec<&str> = line.split(", ").collect();
    let counted = |part: &str, words: &[&str]| {
        part.split_once(' ')
            .is_some_and(|(n, word)| n.parse::<usize>().is_ok() && words.contains(&word))
    };
    parts.len() == 3
        && counted(parts[0], &["ok"])
        && counted(parts[1], &["warning", "warnings"])
        && counted(parts[2], &["problem", "problems"])
}

/// What the `cgroups:` line must say in each layout: its name first, then
/// what step 04 does there.
fn layout_line(layout: &str) -> (&'static [&'static str], &'static [&'static str]) {
    match layout {
        "v2" => (
            &["v2 (unified)", "the root enables memory, cpu and pids"],
            &["hybrid", "v1", "without"],
        ),
        // Nothing in the root's subtree_control (/init put back the boot
        // state after the suite): the doctor must say so, and that step 04
        // copes.
        "v2-bare" => (
            &[
                "v2 (unified)",
                "without memory, cpu, pids enabled at the root",
                "step 04 enables them itself",
            ],
            &["hybrid", "v1", "the root enables"],
        ),
        "hybrid" => (
            &["hybrid (v1 controllers, v2 beside them)", "v1 hierarchies"],
            &["unified", "legacy"],
        ),
        "legacy" => (&["v1 (legacy)", "v1 hierarchies"], &["hybrid", "unified"]),
        _ => unreachable!("not one of LAYOUTS: {layout}"),
    }
}

/// The namespace lines, in the doctor's order: (check, what its line says).
const NAMESPACES: [(&str, &str); 6] = [
    (
        "pid namespace",
        "unshare(CLONE_NEWPID) works, and the first process in it is pid 1",
    ),
    ("uts namespace", "unshare(CLONE_NEWUTS) works"),
    ("ipc namespace", "unshare(CLONE_NEWIPC) works"),
    ("mount namespace", "unshare(CLONE_NEWNS) works"),
    ("cgroup namespace", "unshare(CLONE_NEWCGROUP) works"),
    ("network namespace", "unshare(CLONE_NEWNET) works"),
];

/// The doctor's trials for one layout. Without a report, each fails and
/// says why, so that the names never change with what the machine did.
fn doctor_trials(group: &str, layout: &'static str, doctor: Result<Doctor, String>) -> Vec<Trial> {
    type Check = fn(&Doctor, &'static str) -> Result<()>;
    let checks: [(&str, Check); 5] = [
        ("runs_to_its_summary", runs_to_its_summary),
        ("reports_the_cgroup_layout", reports_the_cgroup_layout),
        ("finds_the_namespaces", finds_the_namespaces),
        ("reports_the_controllers", reports_the_controllers),
        (
            "does_not_probe_veth_with_busybox_ip",
            does_not_probe_veth_with_busybox_ip,
        ),
    ];
    let doctor = Arc::new(doctor);
    checks
        .into_iter()
        .map(|(name, check)| {
            let doctor = Arc::clone(&doctor);
            Trial::test(format!("{group}::doctor::{name}"), move || {
                let doctor = doctor.as_ref().as_ref().map_err(String::clone)?;
                check(doctor, layout).map_err(|error| format!("{error:#}").into())
            })
        })
        .collect()
}

/// Every line is a check's or the summary, the summary counts them, and
/// the exit status is 1 exactly when a check failed. The machine has none
/// of the learner's tools, so some do: a crash would end it sooner.
fn runs_to_its_summary(doctor: &Doctor, _: &'static str) -> Result<()> {
    ensure!(
        doctor.strays.is_empty(),
        "the doctor printed lines that are not a check's:\n{}\n\nits whole report:\n{}",
        doctor.strays.join("\n"),
        doctor.text
    );
    let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    let expected = format!(
        "{} ok, {}, {}",
        doctor.count("ok"),
        plural(doctor.count("warn"), "warning"),
        plural(doctor.count("FAIL"), "problem")
    );
    ensure!(
        doctor.summary.as_deref() == Some(expected.as_str()),
        "expected the summary {expected:?} last, got {:?}:\n{}",
        doctor.summary,
        doctor.text
    );
    let status = if doctor.count("FAIL") == 0 { "0" } else { "1" };
    ensure!(
        doctor.status == status,
        "expected exit status {status} for that summary, got {}:\n{}",
        doctor.status,
        doctor.text
    );
    Ok(())
}

fn reports_the_cgroup_layout(doctor: &Doctor, layout: &'static str) -> Result<()> {
    let line = doctor.line("cgroups")?;
    let (words, never) = layout_line(layout);
    ensure!(
        line.text.starts_with(words[0]),
        "expected the `cgroups:` line to name the layout {:?} first, got:\n{} cgroups: {}",
        words[0],
        line.verdict,
        line.text
    );
    line.says("ok", words, never, doctor)
}

fn finds_the_namespaces(doctor: &Doctor, _: &'static str) -> Result<()> {
    let found: Vec<&str> = doctor
        .findings
        .iter()
        .map(|f| f.check.as_str())
        .filter(|check| check.ends_with(" namespace"))
        .collect();
    let expected: Vec<&str> = NAMESPACES.iter().map(|(check, _)| *check).collect();
    ensure!(
        found == expected,
        "expected the namespace lines {expected:?}, got {found:?}:\n{}",
        doctor.text
    );
    for (check, says) in NAMESPACES {
        doctor.line(check)?.says("ok", &[says], &[], doctor)?;
    }
    Ok(())
}

fn reports_the_controllers(doctor: &Doctor, layout: &'static str) -> Result<()> {
    let says = match layout {
        "v2" | "v2-bare" => "memory, cpu and pids are offered at /sys/fs/cgroup",
        _ => "memory, cpu, cpuacct and pids each have a writable v1 hierarchy",
    };
    doctor
        .line("cgroup controllers")?
        .says("ok", &[says], &[], doctor)
}

/// The machine's `ip` is BusyBox's, which has no `-batch`: the veth line
/// must say it could not probe, not blame the kernel's veth (which it was
/// never asked about), and the iproute2 line must say what this `ip` is.
fn does_not_probe_veth_with_busybox_ip(doctor: &Doctor, _: &'static str) -> Result<()> {
    doctor.line("veth")?.says(
        "FAIL",
        &["not probed: ", "does not answer as iproute2's `ip`"],
        &["CONFIG_VETH", "BusyBox v"],
        doctor,
    )?;
    doctor.line("iproute2")?.says(
        "FAIL",
        &[
            "the `ip` here is BusyBox's, not iproute2's",
            "apt-get install iproute2",
        ],
        &[],
        doctor,
    )
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
