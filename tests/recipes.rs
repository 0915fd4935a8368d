//! The workshop's own recipes, run for real through `just`: what a learner
//! types first (`just run-step`, `just shell`) must do what the book says.
//!
//! Containers of steps 03 and 04 get a FERRY_ROOT and a cgroup parent of the
//! trial's own, so that nothing is left under /var/lib/ferry or in the
//! host's `ferry` cgroup.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use ferry_tests::cgroup;
use ferry_tests::run::{Outcome, Run};
use ferry_tests::scratch::{Scratch, unique_name};
use ferry_tests::transcript::{self, Entry};
use ferry_tests::{privileged, registry, rootfs, workspace};
use libtest_mimic::{Failed, Trial};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

fn main() -> ExitCode {
    ferry_tests::run_trials(Ok(trials()))
}

type Check = fn() -> Result<()>;

/// Trials named after their checks.
macro_rules! trials {
    ($($check:ident),* $(,)?) => {
        vec![$(trial(stringify!($check), $check)),*]
    };
}

fn trials() -> Vec<Trial> {
    let privilege = privileged();
    let mut trials: Vec<Trial> = trials![
        run_step_keeps_quoted_arguments_whole,
        run_step_globs_nothing_on_the_host,
        run_step_redirects_inside_the_container,
        run_step_exit_status_is_the_containers,
        run_step_ctrl_c_is_the_containers_status,
        run_step_reuses_a_fresh_rootfs,
        run_step_leaves_a_running_container_its_rootfs,
        run_step_rebuilds_a_stale_rootfs_beside_a_running_container,
        shell_runs_a_script_in_a_lab_and_removes_it,
        shell_environment_is_the_transcripts,
        doctor_passes_here_and_leaves_nothing_behind,
        doctor_fails_without_mdbook,
        classroom_registry_serves_the_workshop_images_until_ctrl_c,
    ]
    .into_iter()
    .map(|trial| privilege.gate(trial))
    .collect();
    trials.extend(trials![
        setup_installs_no_recommended_packages,
        doctor_is_listed_with_a_description,
    ]);
    trials
}

fn trial(name: &str, check: Check) -> Trial {
    Trial::test(format!("recipes::{name}"), move || {
        check().map_err(|error| Failed::from(format!("{error:#}")))
    })
}

/// How long one recipe may take: the first one may build a step.
const RECIPE_DEADLINE: Duration = Duration::from_secs(600);

/// Where a trial's containers keep their state and cgroups; removed on drop.
struct Place {
    // Dropped first: it ends what is left in its cgroups.
    cgroups: cgroup::Parent,
    scratch: Scratch,
}

impl Place {
    /// A place, and a workshop rootfs that is up to date: a rebuild says so
    /// on stderr, which the trials hold to what the container printed.
    fn new() -> Result<Self> {
        let place = Self {
            cgroups: cgroup::Parent::new(),
            scratch: Scratch::new("recipes")?,
        };
        let rootfs = place.just(["rootfs"]).output()?;
        ensure!(rootfs.status == 0, "just rootfs failed:\n{rootfs}");
        Ok(place)
    }

    /// `just ARGS` in the workspace, as a learner runs it.
    fn just<I, S>(&self, args: I) -> Run
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        Run::new("just")
            .args(args)
            .current_dir(&workspace())
            .env("FERRY_ROOT", self.scratch.join("state"))
            .env("FERRY_CGROUP_PARENT", &self.cgroups.name)
            .deadline(RECIPE_DEADLINE)
    }
}

/// Runs `just ARGS` and requires it to succeed; what it printed is not the
/// point.
fn succeed(run: Run) -> Result<()> {
    let outcome = run.output()?;
    ensure!(outcome.status == 0, "failed:\n{outcome}");
    Ok(())
}

fn expect(outcome: &Outcome, status: i32, stdout: &str, stderr: &str) -> Result<()> {
    ensure!(
        outcome.status == status && outcome.stdout == stdout && outcome.stderr == stderr,
        "expected status {status}, stdout {stdout:?}, stderr {stderr:?}; got\n{outcome}"
    );
    Ok(())
}

fn run_step_keeps_quoted_arguments_whole() -> Result<()> {
    let place = Place::new()?;
    let outcome = place
        .just(["run-step", "4", "/bin/sh", "-c", "echo a b; echo c"])
        .output()?;
    expect(&outcome, 0, "a b\nc\n", "")
}

fn run_step_globs_nothing_on_the_host() -> Result<()> {
    let place = Place::new()?;
    let outcome = place.just(["run-step", "4", "/bin/echo", "*"]).output()?;
    expect(&outcome, 0, "*\n", "")
}

/// A file in the host's /tmp that this trial removes, whoever wrote it.
struct HostFile(PathBuf);

impl Drop for HostFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

fn run_step_redirects_inside_the_container() -> Result<()> {
    let place = Place::new()?;
    let file = HostFile(Path::new("/tmp").join(unique_name("redirect")));
    let script = format!("echo hi > {0}; cat {0}", file.0.display());
    let outcome = place
        .just(["run-step", "4", "/bin/sh", "-c", &script])
        .output()?;
    ensure!(
        !file.0.exists(),
        "the container's `echo hi > {}` wrote the host's file",
        file.0.display()
    );
    expect(&outcome, 0, "hi\n", "")
}

fn run_step_exit_status_is_the_containers() -> Result<()> {
    let place = Place::new()?;
    let script = "echo out; echo err >&2; exit 7";
    let outcome = place
        .just(["run-step", "4", "/bin/sh", "-c", script])
        .output()?;
    expect(&outcome, 7, "out\n", "err\n")
}

fn run_step_ctrl_c_is_the_containers_status() -> Result<()> {
    let place = Place::new()?;
    let script = "echo ready; exec sleep 100";
    let mut running = place
        .just(["run-step", "1", "/bin/sh", "-c", script])
        .spawn()?;
    running.wait_for_line("ready")?;
    // What Ctrl-C does: SIGINT to every process of the foreground group.
    killpg(Pid::from_raw(running.pid()), Signal::SIGINT).context("send SIGINT")?;
    let outcome = running.finish()?;
    expect(&outcome, 128 + Signal::SIGINT as i32, "ready\n", "")
}

/// The workshop rootfs's busybox: (inode, modification time in ns).
fn identity(rootfs: &Path) -> Result<(u64, i64)> {
    let busybox = rootfs.join("bin/busybox");
    let meta = fs::metadata(&busybox).with_context(|| format!("stat {}", busybox.display()))?;
    Ok((meta.ino(), meta.mtime() * 1_000_000_000 + meta.mtime_nsec()))
}

fn run_step_reuses_a_fresh_rootfs() -> Result<()> {
    let place = Place::new()?;
    let rootfs = rootfs::default_path();
    succeed(place.just(["run-step", "1", "/bin/true"]))?;
    let before = identity(&rootfs)?;
    succeed(place.just(["run-step", "1", "/bin/true"]))?;
    ensure!(
        identity(&rootfs)? == before,
        "the second run-step rebuilt {} from unchanged inputs",
        rootfs.display()
    );
    Ok(())
}

/// A step 01 container that prints `ready`, waits for its stdin to close,
/// then runs /bin/echo from its rootfs: it finds it only if its rootfs was
/// left alone meanwhile.
const HOLDS_ITS_ROOTFS: &str = "echo ready; read line; /bin/echo still here";

fn run_step_leaves_a_running_container_its_rootfs() -> Result<()> {
    let place = Place::new()?;
    let mut holder = place
        .just(["run-step", "1", "/bin/sh", "-c", HOLDS_ITS_ROOTFS])
        .hold_stdin()
        .spawn()?;
    holder.wait_for_line("ready")?;
    succeed(place.just(["run-step", "1", "/bin/true"]))?;
    holder.close_stdin();
    expect(&holder.finish()?, 0, "ready\nstill here\n", "")
}

fn run_step_rebuilds_a_stale_rootfs_beside_a_running_container() -> Result<()> {
    let place = Place::new()?;
    // The trial's own rootfs, built from its own copy of the breakout, so
    // that changing an input disturbs no one else's.
    let breakout = place.scratch.join("breakout");
    fs::copy(rootfs::built()?.join("bin/breakout"), &breakout)?;
    let rootfs = place.scratch.join("rootfs");
    let overrides = [
        format!("rootfs={}", rootfs.display()),
        format!("breakout={}", breakout.display()),
    ];
    let run_step = |args: &[&str]| {
        place.just(
            overrides
                .iter()
                .map(String::as_str)
                .chain(args.iter().copied()),
        )
    };

    succeed(run_step(&["run-step", "1", "/bin/true"]))?;
    let built = identity(&rootfs)?;
    succeed(run_step(&["run-step", "1", "/bin/true"]))?;
    ensure!(identity(&rootfs)? == built, "rebuilt from unchanged inputs");

    let mut holder = run_step(&["run-step", "1", "/bin/sh", "-c", HOLDS_ITS_ROOTFS])
        .hold_stdin()
        .spawn()?;
    holder.wait_for_line("ready")?;
    // A changed breakout (a byte more at the end, which the ELF loader ignores).
    let mut changed = fs::read(&breakout)?;
    changed.push(0);
    fs::write(&breakout, &changed)?;
    let rebuilt = run_step(&["run-step", "1", "/bin/true"]).output()?;
    ensure!(
        rebuilt.status == 0 && rebuilt.stderr.contains("workshop rootfs ready"),
        "a changed breakout did not rebuild the rootfs:\n{rebuilt}"
    );
    ensure!(identity(&rootfs)? != built, "the rootfs was not replaced");
    ensure!(
        fs::read(rootfs.join("bin/breakout"))? == changed,
        "the new rootfs does not hold the changed breakout"
    );
    holder.close_stdin();
    expect(&holder.finish()?, 0, "ready\nstill here\n", "")
}

/// `just shell` reads a script from stdin like any shell, in a lab of its
/// own that is gone afterwards.
fn shell_runs_a_script_in_a_lab_and_removes_it() -> Result<()> {
    let place = Place::new()?;
    let script = "step01-chroot run rootfs /bin/echo hi\n\
                  step04-cgroups run rootfs true\n\
                  pwd\n\
                  echo \"$FERRY_CGROUP_PARENT\"\n";
    let outcome = place.just(["shell"]).stdin(script).output()?;
    let lines: Vec<&str> = outcome.stdout.lines().collect();
    ensure!(
        outcome.status == 0 && lines.len() == 3 && lines[0] == "hi",
        "expected `hi`, the lab's folder and its cgroup; got\n{outcome}"
    );
    let (folder, cgroup) = (Path::new(lines[1]), lines[2]);
    ensure!(
        !cgroup.is_empty() && folder.starts_with(ferry_tests::target_dir()),
        "the lab is not the trial's own:\n{outcome}"
    );
    ensure!(
        !folder.exists(),
        "the lab {} is left after the shell",
        folder.display()
    );
    ensure!(
        !cgroup::parent_exists(cgroup)?,
        "the lab's cgroup {cgroup} is left after the shell"
    );
    Ok(())
}

/// The environment a script sees, with the lab's own names made generic.
fn generic_environment(listing: &str) -> Result<Vec<String>> {
    let value = |key: &str| {
        listing
            .lines()
            .find_map(|line| line.strip_prefix(&format!("{key}=")))
            .with_context(|| format!("no {key} in\n{listing}"))
    };
    let (folder, cgroup) = (value("PWD")?, value("FERRY_CGROUP_PARENT")?);
    Ok(listing
        .lines()
        .map(|line| line.replace(folder, "LAB").replace(cgroup, "CGROUP"))
        .collect())
}

fn shell_environment_is_the_transcripts() -> Result<()> {
    let place = Place::new()?;
    let listing = "env | sort; ls";
    let replayed = transcript::replay(
        &[Entry {
            command: listing.to_owned(),
            output: Vec::new(),
        }],
        false,
    )?;
    let from_book = generic_environment(&replayed[0].output.join("\n"))?;
    let outcome = place.just(["shell"]).stdin(listing).output()?;
    ensure!(outcome.status == 0, "just shell failed:\n{outcome}");
    let from_shell = generic_environment(&outcome.stdout)?;
    // The replay ends each command's output with an empty line.
    let from_book: Vec<String> = from_book.into_iter().filter(|l| !l.is_empty()).collect();
    ensure!(
        from_book == from_shell,
        "`just shell` and the book's transcripts differ:\nbook:\n{}\njust shell:\n{}",
        from_book.join("\n"),
        from_shell.join("\n")
    );
    Ok(())
}

fn setup_installs_no_recommended_packages() -> Result<()> {
    for recipe in ["setup", "vm-setup"] {
        let shown = Run::new("just")
            .args(["--show", recipe])
            .current_dir(&workspace())
            .output()?;
        ensure!(shown.status == 0, "just --show {recipe}:\n{shown}");
        let installs: Vec<&str> = shown
            .stdout
            .lines()
            .filter(|line| line.contains("apt-get install"))
            .collect();
        ensure!(!installs.is_empty(), "{recipe} installs nothing:\n{shown}");
        for line in installs {
            ensure!(
                line.contains("--no-install-recommends"),
                "{recipe} installs recommended packages too (with QEMU, GTK and GStreamer): {}",
                line.trim()
            );
        }
    }
    Ok(())
}

/// Every check `just doctor` makes, in its order, each on a line of its own.
const DOCTOR_CHECKS: [&str; 24] = [
    "root",
    "machine",
    "pid namespace",
    "uts namespace",
    "ipc namespace",
    "mount namespace",
    "cgroup namespace",
    "network namespace",
    "overlayfs",
    "cgroups",
    "cgroup controllers",
    "clone3",
    "veth",
    "nftables",
    "rust",
    "just",
    "mdbook",
    "busybox",
    "runc",
    "qemu",
    "cpio",
    "iproute2",
    "firewall",
    "disk",
];

/// One line of `just doctor`'s report: `FAIL mdbook: not on your PATH…`.
struct Finding {
    status: String,
    check: String,
    text: String,
}

/// `just doctor`'s report: each check's line, in order, and the summary
/// line. Fails unless every check has exactly one line.
fn doctor_report(outcome: &Outcome) -> Result<(Vec<Finding>, String)> {
    let mut lines: Vec<&str> = outcome.stdout.lines().collect();
    let summary = lines
        .pop()
        .with_context(|| format!("no output:\n{outcome}"))?;
    let mut findings = Vec::new();
    for line in lines {
        let (status, rest) = line
            .split_once(' ')
            .with_context(|| format!("not a check's line: {line:?}"))?;
        let (check, text) = rest
            .trim_start()
            .split_once(": ")
            .with_context(|| format!("no `check: finding` in {line:?}"))?;
        ensure!(
            ["ok", "warn", "FAIL"].contains(&status),
            "status {status:?} in {line:?}"
        );
        findings.push(Finding {
            status: status.to_owned(),
            check: check.to_owned(),
            text: text.to_owned(),
        });
    }
    let checks: Vec<&str> = findings.iter().map(|f| f.check.as_str()).collect();
    ensure!(
        checks == DOCTOR_CHECKS,
        "expected one line for each check, in order: {DOCTOR_CHECKS:?}; got {checks:?}\n{outcome}"
    );
    let count = |status: &str| findings.iter().filter(|f| f.status == status).count();
    let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    let expected = format!(
        "{} ok, {}, {}",
        count("ok"),
        plural(count("warn"), "warning"),
        plural(count("FAIL"), "problem")
    );
    ensure!(
        summary == expected,
        "expected the summary {expected:?}, got {summary:?}"
    );
    Ok((findings, summary.to_owned()))
}

fn doctor(path: Option<&str>) -> Run {
    let run = Run::new("just")
        .args(["doctor"])
        .current_dir(&workspace())
        .deadline(RECIPE_DEADLINE);
    match path {
        Some(path) => run.env("FERRY_DOCTOR_PATH", path),
        None => run,
    }
}

/// What the doctor's probes could leave on the host if they leaked, each
/// a list of lines.
struct HostState {
    mounts: Vec<String>,
    named_netns: Vec<String>,
    /// The probes' interface names, which must only ever exist in their
    /// own network namespaces.
    probe_interfaces: Vec<String>,
    /// The doctor's scratch dirs under target/ferry-tests (`…-doctor`).
    doctor_scratch: Vec<String>,
}

impl HostState {
    fn now() -> Result<Self> {
        let netns = Run::new("ip").args(["netns", "list"]).output()?;
        ensure!(netns.status == 0, "ip netns list:\n{netns}");
        let names = |dir: &Path| -> Vec<String> {
            fs::read_dir(dir)
                .into_iter()
                .flatten()
                .flatten()
                .map(|entry| entry.file_name().to_string_lossy().into_owned())
                .collect()
        };
        let lines = |text: &str| text.lines().map(str::to_owned).collect();
        Ok(Self {
            mounts: lines(&ferry_tests::host::mount_table()?),
            named_netns: lines(&netns.stdout),
            probe_interfaces: names(Path::new("/sys/class/net"))
                .into_iter()
                .filter(|name| name.starts_with("ferryprobe"))
                .collect(),
            doctor_scratch: names(&ferry_tests::target_dir().join("ferry-tests"))
                .into_iter()
                .filter(|name| name.ends_with("-doctor"))
                .collect(),
        })
    }

    /// What is in `after` and was not here before, and what is gone.
    fn left_behind(&self, after: &Self) -> Vec<String> {
        let pairs = [
            ("mount", &self.mounts, &after.mounts),
            ("network namespace", &self.named_netns, &after.named_netns),
            ("interface", &self.probe_interfaces, &after.probe_interfaces),
            ("scratch dir", &self.doctor_scratch, &after.doctor_scratch),
        ];
        let mut changes = Vec::new();
        for (what, before, after) in pairs {
            let added = after.iter().filter(|line| !before.contains(line));
            let gone = before.iter().filter(|line| !after.contains(line));
            changes.extend(added.map(|line| format!("new {what}: {line}")));
            changes.extend(gone.map(|line| format!("{what} gone: {line}")));
        }
        changes
    }
}

/// This machine has everything after `just setup`: no check may fail, and
/// the probes leave no mount, namespace, interface or scratch dir.
fn doctor_passes_here_and_leaves_nothing_behind() -> Result<()> {
    let before = HostState::now()?;
    let outcome = doctor(None).output()?;
    let after = HostState::now()?;
    ensure!(outcome.status == 0, "just doctor failed:\n{outcome}");
    let (findings, summary) = doctor_report(&outcome)?;
    ensure!(
        summary.ends_with(", 0 problems"),
        "a check failed:\n{outcome}"
    );
    for finding in &findings {
        ensure!(
            finding.status != "FAIL",
            "{} failed:\n{outcome}",
            finding.check
        );
    }
    let left = before.left_behind(&after);
    ensure!(
        left.is_empty(),
        "the doctor left something behind:\n{}",
        left.join("\n")
    );
    Ok(())
}

/// The learner's PATH with every copy of `tool` hidden: each folder that
/// holds one is replaced by a folder of links to everything else in it.
fn path_without(tool: &str, scratch: &Scratch) -> Result<String> {
    let path = std::env::var_os("PATH").context("no PATH")?;
    let mut dirs = Vec::new();
    for (n, dir) in std::env::split_paths(&path).enumerate() {
        if !dir.join(tool).exists() {
            dirs.push(dir);
            continue;
        }
        let copy = scratch.join(&format!("path-{n}"));
        fs::create_dir(&copy)?;
        for entry in fs::read_dir(&dir)? {
            let name = entry?.file_name();
            if name != tool {
                std::os::unix::fs::symlink(dir.join(&name), copy.join(&name))?;
            }
        }
        dirs.push(copy);
    }
    let joined = std::env::join_paths(dirs)?;
    Ok(joined.to_string_lossy().into_owned())
}

/// A check that fails is reported as failing, and so is the whole run.
fn doctor_fails_without_mdbook() -> Result<()> {
    let scratch = Scratch::new("path-without-mdbook")?;
    let path = path_without("mdbook", &scratch)?;
    let outcome = doctor(Some(&path)).output()?;
    ensure!(
        outcome.status == 1,
        "expected status 1 without mdbook:\n{outcome}"
    );
    let (findings, summary) = doctor_report(&outcome)?;
    let failed: Vec<&Finding> = findings.iter().filter(|f| f.status == "FAIL").collect();
    ensure!(
        failed.len() == 1
            && failed[0].check == "mdbook"
            && failed[0]
                .text
                .starts_with("not on your PATH: `just setup` installs mdBook"),
        "expected mdbook, and only mdbook, to fail:\n{outcome}"
    );
    ensure!(summary.ends_with(", 1 problem"), "summary: {summary:?}");
    Ok(())
}

fn doctor_is_listed_with_a_description() -> Result<()> {
    let listed = Run::new("just")
        .args(["--list"])
        .current_dir(&workspace())
        .output()?;
    ensure!(
        listed.stdout.lines().any(|line| {
            let line = line.trim();
            line.starts_with("doctor ") && line.contains("# Check this machine")
        }),
        "`just --list` shows no described doctor recipe:\n{listed}"
    );
    Ok(())
}

/// `just classroom-registry ADDR` serves the workshop images on ADDR (here a
/// free loopback port, never another address) until Ctrl-C, which stops
/// the registry with it.
fn classroom_registry_serves_the_workshop_images_until_ctrl_c() -> Result<()> {
    let place = Place::new()?;
    let addr = free_loopback_port()?;
    let mut running = place
        .just(["classroom-registry", &addr.to_string()])
        .env("FERRY_CLASSROOM_DIR", place.scratch.join("classroom"))
        .spawn()?;
    running.wait_for_line(&format!("  {addr}/ferry/busybox:latest"))?;
    let tags = registry::get(addr, "/v2/ferry/busybox/tags/list")?;
    ensure!(
        tags == (
            200,
            "{\"name\":\"ferry/busybox\",\"tags\":[\"latest\"]}\n".to_owned()
        ),
        "the registry's tags for ferry/busybox: {tags:?}"
    );
    killpg(Pid::from_raw(running.pid()), Signal::SIGINT).context("send SIGINT")?;
    let outcome = running.finish()?;
    ensure!(
        outcome.status == 128 + Signal::SIGINT as i32
            && outcome.stderr
                == format!(
                    "the registry stopped; its data stays in {}\n",
                    place.scratch.join("classroom").display()
                ),
        "after Ctrl-C, a clean stop and one line that says so:\n{outcome}"
    );
    ensure!(
        registry::get(addr, "/v2/").is_err(),
        "something still answers on {addr} after Ctrl-C"
    );
    Ok(())
}

/// A loopback address whose port nothing listens on now.
fn free_loopback_port() -> Result<std::net::SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("bind 127.0.0.1:0")?;
    Ok(listener.local_addr()?)
}
