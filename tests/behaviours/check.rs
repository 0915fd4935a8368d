//! What every behaviour uses: the step under test, the workshop rootfs, and
//! exact assertions on how a run ended.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use ferry_tests::netlab::NetLab;

use crate::Behaviour;
use ferry_tests::rootfs;
use ferry_tests::run::{Outcome, Run, Running, wait_until};
use ferry_tests::scratch::Scratch;
use ferry_tests::steps::Step;
use ferry_tests::{cgroup, host};
use nix::sys::signal::Signal;

/// The step from which `run` takes `--root DIR`, where containers keep
/// their writable layers.
const ROOT_OPTION_SINCE: u8 = 3;
/// The step from which `run` takes `--cgroup-parent NAME`.
const CGROUP_PARENT_SINCE: u8 = 4;
/// The step from which a container has a network of its own, made on the
/// host: from then on every runtime of a test runs in a network lab.
pub const NETWORK_SINCE: u8 = 5;
/// The step from which `run` is Docker's: a container stays after it ends
/// unless `--rm`, and its stdin is `/dev/null` unless `-i`. The behaviours
/// of earlier steps mean a container that goes when it ends and reads the
/// caller's stdin, so from this step on every `run` of theirs says both.
pub const DOCKER_RUN_SINCE: u8 = 7;

pub struct Ctx {
    pub step: Step,
    /// This test's own copy of the workshop rootfs: before step 03 a
    /// container's writes land in ROOTFS itself, and a test that checks a
    /// later step's feature on an earlier step must not change what other
    /// tests see.
    pub rootfs: PathBuf,
    _rootfs_copy: Scratch,
    /// This test's own `--root`, from step 03 on; removed with the test.
    pub state: Scratch,
    /// This test's own `--cgroup-parent`, from step 04 on; removed with the test.
    pub cgroup: cgroup::Parent,
    /// The network namespaces the runtime runs in, from step 05 on: its
    /// bridge, rules and containers are made there, never on this host.
    pub net: Option<NetLab>,
    /// Whether `run` is as the test wrote it (a behaviour of step 07's), not
    /// with `--rm -i` added for an earlier step's (see DOCKER_RUN_SINCE).
    pub docker_run: bool,
}

impl Drop for Ctx {
    /// From step 07 a container may outlive its `run`: remove what a test
    /// left (a failed one, say), through the runtime itself, before the
    /// test's --root and cgroups go. `rm -f` kills a container that still
    /// runs, and its supervisor then ends.
    fn drop(&mut self) {
        if self.step.number < DOCKER_RUN_SINCE || !self.step.binary.exists() {
            return;
        }
        let listed = self.ferry("ps", &["-aq"]).output();
        let ids: Vec<String> = match listed {
            Ok(outcome) => outcome
                .stdout
                .split_whitespace()
                .map(str::to_owned)
                .collect(),
            Err(_) => return,
        };
        if ids.is_empty() {
            return;
        }
        let removed = self.ferry("rm", &["-f"]).args(&ids).output();
        if let Ok(outcome) = removed
            && outcome.status != 0
        {
            eprintln!("warning: could not remove the test's containers: {outcome}");
        }
    }
}

impl Ctx {
    pub fn new(step: Step, behaviour: &Behaviour) -> Result<Self> {
        ensure!(
            step.binary.exists(),
            "{} does not exist: build the steps first (`cargo build --workspace`, or `just test`)",
            step.binary.display()
        );
        let copy = Scratch::new("rootfs")?;
        let rootfs = copy.join("rootfs");
        rootfs::copy(&rootfs::built()?, &rootfs)?;
        Self {
            step,
            rootfs,
            _rootfs_copy: copy,
            state: Scratch::new("state")?,
            cgroup: cgroup::Parent::new(),
            net: None,
            docker_run: behaviour.since >= DOCKER_RUN_SINCE,
        }
        .with_network_lab(behaviour)
    }

    /// A runtime of step 05 or later makes a network on the host; and a
    /// step 05 behaviour checked on step 04 runs in the same kind of lab.
    /// (The cgroup test machine has no veth to make a lab with: it runs
    /// step 04's behaviours, which need none.)
    fn with_network_lab(mut self, behaviour: &Behaviour) -> Result<Self> {
        if self.step.number.max(behaviour.since) >= NETWORK_SINCE {
            self.net = Some(NetLab::new()?);
        }
        Ok(self)
    }

    /// The network lab, for a behaviour of step 05 or later.
    pub fn net(&self) -> Result<&NetLab> {
        self.net
            .as_ref()
            .context("this step runs in no network lab")
    }

    /// The step binary, with no arguments yet (in the network lab, from
    /// step 05 on).
    pub fn runtime(&self) -> Run {
        match &self.net {
            Some(net) => {
                let prefix = net.command_prefix();
                Run::new(&prefix[0])
                    .args(&prefix[1..])
                    .args([&self.step.binary])
            }
            None => Run::new(&self.step.binary),
        }
    }

    /// `stepNN run OPTIONS ROOTFS COMMAND...` in the workshop rootfs.
    pub fn run(&self, options: &[&str], command: &[&str]) -> Run {
        self.run_with_rootfs(&self.rootfs, options, command)
    }

    /// `stepNN run OPTIONS ROOTFS COMMAND...` with a ROOTFS of the test's choosing.
    pub fn run_with_rootfs(&self, rootfs: &Path, options: &[&str], command: &[&str]) -> Run {
        self.runtime().args(self.run_args(rootfs, options, command))
    }

    /// The arguments of `run`, with this test's own `--root` and
    /// `--cgroup-parent` from the steps that take them.
    pub fn run_args(&self, rootfs: &Path, options: &[&str], command: &[&str]) -> Vec<OsString> {
        let mut args = if options.contains(&"--root") {
            vec!["run".into()]
        } else {
            self.store_args("run")
        };
        if self.step.number >= CGROUP_PARENT_SINCE && !options.contains(&"--cgroup-parent") {
            args.extend(["--cgroup-parent".into(), self.cgroup.name.clone().into()]);
        }
        if self.step.number >= DOCKER_RUN_SINCE && !self.docker_run {
            args.extend(["--rm".into(), "-i".into()]);
        }
        args.extend(options.iter().map(OsString::from));
        args.push(rootfs.into());
        args.extend(command.iter().map(OsString::from));
        args
    }

    /// `VERB --root ROOT`: a verb of step 07's (or `run`) on this test's
    /// containers and images.
    pub fn store_args(&self, verb: &str) -> Vec<OsString> {
        let mut args = vec![OsString::from(verb)];
        if self.step.number >= ROOT_OPTION_SINCE {
            args.extend(["--root".into(), self.state.path().into()]);
        }
        args
    }

    /// `ferry VERB ARGS...` on this test's --root, in its network lab.
    pub fn ferry(&self, verb: &str, args: &[&str]) -> Run {
        self.runtime().args(self.store_args(verb)).args(args)
    }

    /// The whole `stepNN run …` command line, quoted for a shell.
    pub fn run_line(&self, options: &[&str], command: &[&str]) -> String {
        let quote = |word: &OsStr| format!("'{}'", word.to_string_lossy().replace('\'', r"'\''"));
        let prefix = self
            .net
            .as_ref()
            .map(NetLab::command_prefix)
            .unwrap_or_default();
        prefix
            .iter()
            .map(|word| quote(word))
            .chain(std::iter::once(quote(self.step.binary.as_os_str())))
            .chain(
                self.run_args(&self.rootfs, options, command)
                    .iter()
                    .map(|a| quote(a)),
            )
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Nothing that a container made is left under this test's `--root`.
    pub fn nothing_under_root(&self) -> Result<()> {
        let left = listing(self.state.path())?;
        ensure!(left.is_empty(), "left under --root: {left}");
        Ok(())
    }

    /// Runs `sh -c SCRIPT` in the container and returns the outcome.
    pub fn sh(&self, options: &[&str], script: &str) -> Result<Outcome> {
        self.run(options, &["/bin/sh", "-c", script]).output()
    }
}

/// A file on the host, outside every rootfs, and a shell script that says
/// whether a container can see it: "visible" or "hidden".
pub struct HostMarker {
    _scratch: Scratch,
    path: PathBuf,
}

impl HostMarker {
    pub fn new() -> Result<Self> {
        let scratch = Scratch::new("host")?;
        let path = scratch.join("marker");
        fs::write(&path, "on the host\n")?;
        Ok(Self {
            _scratch: scratch,
            path,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn probe(&self) -> String {
        format!(
            "if test -e '{}'; then echo visible; else echo hidden; fi",
            self.path.display()
        )
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

/// The pid of the process named `name` (its `comm`) that the run started,
/// directly or further down, once it exists.
pub fn process_named(running: &Running, name: &str) -> Result<i32> {
    let runtime = running.pid();
    running.poll(&format!("`{name}` to start"), || {
        host::descendants(runtime)
            .into_iter()
            .find(|&pid| host::command_name(pid).as_deref() == Some(name))
    })
}

/// Starts a container, kills its runtime with SIGKILL, and waits until the
/// container has died with it. Returns the container's process id.
pub fn kill_runtime_mid_run(ctx: &Ctx) -> Result<i32> {
    kill_runtime_mid_run_with(ctx, &[])
}

/// The same, with these options for `run`.
pub fn kill_runtime_mid_run_with(ctx: &Ctx, options: &[&str]) -> Result<i32> {
    let mut running = ctx
        .run(options, &["/bin/sh", "-c", "echo ready; exec sleep 1000"])
        .spawn()?;
    running.wait_for_line("ready")?;
    let sleep = process_named(&running, "sleep")?;
    host::signal(running.pid(), Signal::SIGKILL)?;
    wait_until(
        "the container's death after its runtime was killed with SIGKILL",
        Duration::from_secs(10),
        || host::has_ended(sleep).then_some(()),
    )?;
    Ok(sleep)
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

/// Everything in a tree: each path with its type, mode and owner, and the
/// bytes of a file or the target of a link.
pub type Tree = BTreeMap<PathBuf, (String, Vec<u8>)>;

pub fn snapshot(root: &Path) -> Result<Tree> {
    let mut found = Tree::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(path) = pending.pop() {
        let meta =
            fs::symlink_metadata(&path).with_context(|| format!("stat {}", path.display()))?;
        let content = if meta.is_symlink() {
            fs::read_link(&path)?.into_os_string().into_encoded_bytes()
        } else if meta.is_dir() {
            for entry in fs::read_dir(&path)? {
                pending.push(entry?.path());
            }
            Vec::new()
        } else {
            fs::read(&path)?
        };
        let what = format!(
            "{:?}, mode {:o}, owner {}",
            meta.file_type(),
            meta.mode(),
            meta.uid()
        );
        found.insert(
            path.strip_prefix(root)
                .expect("below the root")
                .to_path_buf(),
            (what, content),
        );
    }
    Ok(found)
}

/// The two snapshots are the same, or the error names every path that differs.
pub fn same_tree(before: &Tree, after: &Tree) -> Result<()> {
    let mut paths: Vec<&PathBuf> = before.keys().chain(after.keys()).collect();
    paths.sort();
    paths.dedup();
    let changed: Vec<String> = paths
        .into_iter()
        .filter(|path| before.get(*path) != after.get(*path))
        .map(|path| format!("/{}", path.display()))
        .collect();
    ensure!(changed.is_empty(), "changed: {}", changed.join(", "));
    Ok(())
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
