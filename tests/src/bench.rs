//! `just bench`: what isolation costs. Every step's `run` of /bin/true,
//! side by side with runc and with the floor (unshare and chroot, no
//! runtime at all), measured in the same minutes on the same machine.
//!
//! The cases run interleaved (A B C A B C …) after a warm-up, so that a
//! slow minute on a shared machine slows every case alike, instead of
//! landing on whichever case happened to run then.

use std::fmt::Write as _;
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::json;

use crate::cgroup;
use crate::netlab::NetLab;
use crate::oci::{self, Format, Image};
use crate::registry_lab::{Auth, RegistryLab};
use crate::scratch::Scratch;
use crate::steps::{self, Step};

pub struct Options {
    pub runs: usize,
    pub warmup: usize,
    /// The step binaries to measure (release builds).
    pub bin_dir: PathBuf,
    pub rootfs: PathBuf,
}

impl Options {
    /// The same, with at most `runs` runs and `warmup` rounds: for the
    /// cases that take a second or more each.
    fn fewer(&self, runs: usize, warmup: usize) -> Self {
        Self {
            runs: self.runs.clamp(1, runs),
            warmup: self.warmup.min(warmup),
            bin_dir: self.bin_dir.clone(),
            rootfs: self.rootfs.clone(),
        }
    }
}

/// One thing to time: a name and the command line that does it.
struct Case {
    name: String,
    program: PathBuf,
    args: Vec<String>,
    /// runc wants a new container name every time: `{n}` is replaced by the round.
    numbered: bool,
}

impl Case {
    fn new(name: impl Into<String>, program: impl Into<PathBuf>, args: &[&str]) -> Self {
        let args = args.iter().map(|arg| arg.to_string()).collect();
        Self {
            name: name.into(),
            program: program.into(),
            args,
            numbered: false,
        }
    }

    /// Runs it once: its wall time.
    fn time(&self, round: usize) -> Result<Duration> {
        let args = self.args.iter().map(|arg| {
            if self.numbered {
                arg.replace("{n}", &round.to_string())
            } else {
                arg.clone()
            }
        });
        let mut command = Command::new(&self.program);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0);
        let start = Instant::now();
        let child = command
            .spawn()
            .with_context(|| format!("start {}", self.program.display()))?;
        let output = child
            .wait_with_output()
            .with_context(|| format!("wait for {}", self.name))?;
        let elapsed = start.elapsed();
        let mut stderr = output.stderr;
        stderr.truncate(2000);
        ensure!(
            output.status.success(),
            "{} failed ({}): {}",
            self.name,
            output.status,
            String::from_utf8_lossy(&stderr)
        );
        Ok(elapsed)
    }
}

impl Case {
    /// Its peak memory, measured in a run of its own under GNU time, which
    /// reports what its child used. The timed runs cannot tell: a child
    /// forked from the bench starts as a copy of the bench, and the kernel
    /// counts that copy's resident pages as the child's peak.
    fn peak_memory(&self, round: usize, scratch: &Path) -> Result<u64> {
        let report = scratch.join("peak-memory");
        let wrapped = Case {
            name: self.name.clone(),
            program: PathBuf::from("/usr/bin/time"),
            args: ["-f", "%M", "-o", &report.display().to_string()]
                .into_iter()
                .map(str::to_owned)
                .chain(std::iter::once(self.program.display().to_string()))
                .chain(self.args.iter().cloned())
                .collect(),
            numbered: self.numbered,
        };
        wrapped.time(round)?;
        let kib: u64 = fs::read_to_string(&report)
            .with_context(|| format!("read {}", report.display()))?
            .trim()
            .parse()
            .context("GNU time's %M")?;
        Ok(kib * 1024)
    }
}

/// Median and 90th percentile of some durations (nearest rank).
fn percentiles(samples: &[Duration]) -> (Duration, Duration) {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let at = |fraction: f64| {
        sorted[((fraction * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1]
    };
    (at(0.5), at(0.9))
}

/// Everything the cases need on disk, removed when dropped.
struct Fixtures {
    scratch: Scratch,
    cgroups: cgroup::Parent,
    /// From step 05 a runtime makes a bridge and firewall rules: it runs in
    /// a network lab, never on this machine's own network.
    net: NetLab,
}

impl Fixtures {
    fn new() -> Result<Self> {
        Ok(Self {
            scratch: Scratch::new("bench")?,
            cgroups: cgroup::Parent::new(),
            net: NetLab::new()?,
        })
    }

    fn state(&self) -> String {
        self.scratch.join("state").display().to_string()
    }

    /// An OCI bundle for runc: the same rootfs, /bin/true, no terminal, and
    /// the same namespaces as ferry's steps (runc's default adds network).
    fn runc_bundle(&self, rootfs: &Path) -> Result<PathBuf> {
        let bundle = self.scratch.join("bundle");
        fs::create_dir_all(&bundle)?;
        let out = Command::new("runc")
            .arg("spec")
            .current_dir(&bundle)
            .output()
            .context("run `runc spec` (is runc installed? `just setup`)")?;
        ensure!(
            out.status.success(),
            "runc spec: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let path = bundle.join("config.json");
        let mut config: serde_json::Value = serde_json::from_str(&fs::read_to_string(&path)?)?;
        config["process"]["terminal"] = json!(false);
        config["process"]["args"] = json!(["/bin/true"]);
        config["root"]["path"] = json!(rootfs);
        config["linux"]["namespaces"] =
            json!([{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}]);
        fs::write(&path, serde_json::to_string_pretty(&config)?)?;
        Ok(bundle)
    }

    /// A copy of the rootfs with one more file of `bytes` (written, not sparse).
    fn bigger_rootfs(&self, rootfs: &Path, name: &str, bytes: usize) -> Result<PathBuf> {
        let copy = self.scratch.join(name);
        crate::rootfs::copy(rootfs, &copy)?;
        let chunk = vec![0x5au8; 1 << 20];
        let mut file = fs::File::create(copy.join("payload"))?;
        for _ in 0..bytes.div_ceil(chunk.len()) {
            std::io::Write::write_all(&mut file, &chunk)?;
        }
        Ok(copy)
    }
}

fn step_case(
    step: &Step,
    bin_dir: &Path,
    fixtures: &Fixtures,
    rootfs: &Path,
    extra: &[&str],
) -> Case {
    let mut args = vec!["run".to_owned()];
    if step.number >= 3 {
        args.extend(["--root".to_owned(), fixtures.state()]);
    }
    if step.number >= 4 {
        args.extend(["--cgroup-parent".to_owned(), fixtures.cgroups.name.clone()]);
    }
    // From step 07 a container stays after it ends, unless --rm.
    if step.number >= 7 {
        args.push("--rm".to_owned());
    }
    args.extend(extra.iter().map(|arg| arg.to_string()));
    args.extend([rootfs.display().to_string(), "/bin/true".to_owned()]);
    let name = format!("step{} {}", step.folder, extra.join(" "))
        .trim()
        .to_owned();
    let binary = bin_dir.join(step.binary.file_name().expect("a binary's name"));
    if step.number < NETWORK_SINCE {
        return Case {
            name,
            program: binary,
            args,
            numbered: false,
        };
    }
    in_network_lab(fixtures, name, binary, args)
}

/// The step from which a runtime makes a network on the host.
const NETWORK_SINCE: u8 = 5;

/// A case run in the network lab, through nsenter (which execs it).
fn in_network_lab(fixtures: &Fixtures, name: String, binary: PathBuf, args: Vec<String>) -> Case {
    let prefix = fixtures.net.command_prefix();
    let mut all: Vec<String> = prefix[1..]
        .iter()
        .map(|word| word.to_string_lossy().into_owned())
        .collect();
    all.push(binary.display().to_string());
    all.extend(args);
    Case {
        name,
        program: PathBuf::from(&prefix[0]),
        args: all,
        numbered: false,
    }
}

const LIMITS: [&str; 6] = ["--memory", "64m", "--cpus", "1", "--pids-limit", "100"];

/// Runs the cases interleaved and returns the markdown report.
pub fn run(options: &Options) -> Result<String> {
    ensure!(options.runs >= 1, "at least one run");
    let fixtures = Fixtures::new()?;
    let all = steps::workspace_steps()?;
    let rootfs = &options.rootfs;
    let mut cases: Vec<Case> = all
        .iter()
        .map(|step| step_case(step, &options.bin_dir, &fixtures, rootfs, &[]))
        .collect();
    if let Some(step4) = all.iter().find(|step| step.number == 4) {
        // Not right after the other step 04 case: moving a process into a
        // cgroup waits for an RCU grace period unless another move has just
        // done so, and the second of two neighbours would look faster than
        // it is. It goes after a case that touches no cgroup.
        let limits = step_case(step4, &options.bin_dir, &fixtures, rootfs, &LIMITS);
        let after = cases
            .iter()
            .position(|case| case.name.starts_with("step02"))
            .map_or(cases.len(), |at| at + 1);
        cases.insert(after, limits);
    }
    // What the network costs: step 04 and step 05 both through nsenter in
    // the lab, side by side, so that the difference is the network alone.
    if let Some(step4) = all.iter().find(|step| step.number == 4) {
        let plain = step_case(step4, &options.bin_dir, &fixtures, rootfs, &[]);
        cases.push(in_network_lab(
            &fixtures,
            format!("{} (through nsenter, in the lab)", plain.name),
            plain.program,
            plain.args,
        ));
    }
    if let Some(step5) = all.iter().find(|step| step.number == 5) {
        let none = step_case(
            step5,
            &options.bin_dir,
            &fixtures,
            rootfs,
            &["--network", "none"],
        );
        cases.push(none);
    }
    let bundle = fixtures.runc_bundle(rootfs)?;
    let runc_root = fixtures.scratch.join("runc");
    let mut runc = Case::new(
        "runc run",
        "runc",
        &[
            "--root",
            &runc_root.display().to_string(),
            "run",
            "--bundle",
            &bundle.display().to_string(),
        ],
    );
    runc.args
        .push(format!("{}-{{n}}", crate::scratch::unique_name("runc")));
    runc.numbered = true;
    cases.push(runc);
    let chroot_floor = [
        "--pid",
        "--uts",
        "--ipc",
        "--mount",
        "--fork",
        "chroot",
        &rootfs.display().to_string(),
        "/bin/true",
    ];
    cases.push(Case::new(
        "floor: unshare + chroot",
        "unshare",
        &chroot_floor,
    ));
    // The same with a network namespace: what step 05 starts from.
    let mut with_net = vec!["--net"];
    with_net.extend(chroot_floor);
    cases.push(Case::new(
        "floor with a network namespace: unshare --net + chroot",
        "unshare",
        &with_net,
    ));
    let main_rows = measure(&cases, options, fixtures.scratch.path())?;

    // Start time against the size of the image: the overlay does not copy it.
    let mut sized = Vec::new();
    for (label, bytes) in [("10 MiB", 10usize << 20), ("1 GiB", 1 << 30)] {
        let image =
            fixtures.bigger_rootfs(rootfs, &format!("image-{}", label.replace(' ', "")), bytes)?;
        for step in all.iter().filter(|step| step.number >= 3) {
            let mut case = step_case(step, &options.bin_dir, &fixtures, &image, &[]);
            case.name = format!("{} | {label}", case.name);
            sized.push(case);
        }
    }
    let sized_rows = measure(&sized, options, fixtures.scratch.path())?;
    // One registry in the lab, with the bench image, for steps 06 and 07.
    let lab = if all.iter().any(|step| step.number >= PULL_SINCE) {
        let lab = RegistryLab::start(&fixtures.net, Auth::Anonymous)?;
        lab.push(BENCH_IMAGE, &bench_image(&options.rootfs)?, Format::Oci)?;
        Some(lab)
    } else {
        None
    };
    // Straight to the registry: the tests' counting proxy, in front of it,
    // is no part of what is measured.
    let image = lab
        .as_ref()
        .map(|lab| format!("{}/{BENCH_IMAGE}", lab.registry().reach));
    let pull_rows = match (all.iter().find(|step| step.number == PULL_SINCE), &image) {
        (Some(step), Some(image)) => pulls(step, options, &fixtures, image)?,
        _ => Vec::new(),
    };
    let mut out = report(options, &main_rows, &sized_rows, &pull_rows);
    if let (Some(step), Some(image)) = (all.iter().find(|step| step.number == FERRY_SINCE), &image)
    {
        let runc = main_rows
            .iter()
            .find(|row| row.name == "runc run")
            .map_or(Duration::ZERO, |row| row.median);
        out.push_str(&full_runtime(step, options, &fixtures, image, runc)?);
    }
    Ok(out)
}

/// The step whose binary is `ferry`, with containers that outlive `run`.
const FERRY_SINCE: u8 = 7;

/// Step 07: a start from a cached image, a detached start and removal, the
/// supervisor's resident memory, and 50 containers back to back.
fn full_runtime(
    step: &Step,
    options: &Options,
    fixtures: &Fixtures,
    image: &str,
    runc: Duration,
) -> Result<String> {
    let binary = options
        .bin_dir
        .join(step.binary.file_name().expect("a binary's name"));
    let state = fixtures.scratch.join("ferry-state");
    // `ferry VERB` on the bench's own --root, as a shell word list.
    let ferry = |verb: &str| {
        let mut words = format!("{} {verb} --root {}", binary.display(), state.display());
        if verb == "run" {
            words.push_str(&format!(" --cgroup-parent {}", fixtures.cgroups.name));
        }
        words
    };
    let in_lab = |script: String| -> Result<String> {
        let prefix = fixtures.net.command_prefix();
        let output = Command::new(&prefix[0])
            .args(&prefix[1..])
            .args(["sh", "-c", &script])
            .output()
            .context("run a step 07 command in the lab")?;
        ensure!(
            output.status.success(),
            "{script}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    };
    in_lab(format!("{} {image} > /dev/null", ferry("pull")))?;
    let cases = [
        // Straight through nsenter, as step 06's starts are: no shell.
        in_network_lab(
            fixtures,
            "ferry run --rm IMAGE /bin/true".to_owned(),
            binary.clone(),
            [
                "run",
                "--root",
                &state.display().to_string(),
                "--cgroup-parent",
                &fixtures.cgroups.name,
                "--rm",
                image,
                "/bin/true",
            ]
            .map(str::to_owned)
            .to_vec(),
        ),
        shell_case(
            fixtures,
            "ferry run -d IMAGE sleep + ferry rm -f",
            format!(
                "id=$({} -d {image} sleep 1000) && exec {} -f $id > /dev/null",
                ferry("run"),
                ferry("rm")
            ),
        ),
    ];
    let rows = measure(&cases, options, fixtures.scratch.path())?;
    // The supervisor's memory while its container runs: PID 1's parent.
    let id = in_lab(format!("{} -d {image} sleep 1000", ferry("run")))?;
    let id = id.trim();
    // Resident in all, and of that its own (anonymous) pages: the rest are
    // the binary's and libc's pages, in the page cache, shared by every
    // supervisor.
    let supervisor_rss = (|| -> Result<(u64, u64)> {
        let record = fs::read_to_string(state.join(&id[..12]).join("state.json"))?;
        let record: serde_json::Value = serde_json::from_str(&record)?;
        let pid = record["supervisor"]
            .as_i64()
            .context("the supervisor's pid")?;
        let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
        let field =
            |name| status_kib(&status, name).with_context(|| format!("{name} of the supervisor"));
        Ok((field("VmRSS")?, field("RssAnon")?))
    })();
    in_lab(format!("{} -f {id} > /dev/null", ferry("rm")))?;
    let (supervisor_rss, supervisor_own) = supervisor_rss?;
    // The floor for any process linked with glibc: coreutils' sleep, idle.
    let floor_rss = {
        let mut sleep = Command::new("sleep")
            .arg("1000")
            .spawn()
            .context("start sleep")?;
        let rss = crate::run::wait_until("sleep's memory", Duration::from_secs(5), || {
            let status = fs::read_to_string(format!("/proc/{}/status", sleep.id())).ok()?;
            // Asleep: exec'd, and in nanosleep.
            let stat = fs::read_to_string(format!("/proc/{}/stat", sleep.id())).ok()?;
            stat.contains("(sleep) S ").then_some(())?;
            status_kib(&status, "VmRSS")
        });
        let _ = sleep.kill();
        let _ = sleep.wait();
        rss?
    };
    // Fifty, started back to back, then removed together.
    let fifty = [shell_case(
        fixtures,
        "50 × ferry run -d, then one ferry rm -f",
        format!(
            "ids=$(for i in $(seq 50); do {} -d {image} sleep 1000 || exit 1; done) && exec {} -f $ids > /dev/null",
            ferry("run"),
            ferry("rm")
        ),
    )];
    let fifty_rows = measure(&fifty, &options.fewer(3, 0), fixtures.scratch.path())?;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nStep 07, `ferry`, with the pulled bench image cached, median of {} runs (runc's from the first table):\n",
        options.runs
    );
    let _ = writeln!(out, "| what | median | p90 | × runc | peak memory |");
    let _ = writeln!(out, "|---|---:|---:|---:|---:|");
    for row in rows.iter().chain(&fifty_rows) {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} MiB |",
            row.name,
            ms(row.median),
            ms(row.p90),
            ratio(row.median, runc),
            row.peak_memory >> 20
        );
    }
    let _ = writeln!(
        out,
        "\n`ferry run --rm IMAGE /bin/true` takes {} runc's time (the goal: at most 0.50×). \
         A supervisor holds {} KiB resident while its container runs (the goal: at most 2048 KiB), \
         of which {} KiB are its own; the rest are pages of the ferry binary and libc, shared by every supervisor. \
         An idle `sleep` holds {} KiB: the floor for any process linked with glibc. \
         conmon, Podman's, {}.",
        ratio(rows[0].median, runc),
        supervisor_rss,
        supervisor_own,
        floor_rss,
        if std::env::var_os("PATH").is_some_and(|path| {
            std::env::split_paths(&path).any(|dir| dir.join("conmon").is_file())
        }) {
            "is installed but not measured here"
        } else {
            "is not installed on this machine"
        }
    );
    Ok(out)
}

/// The step that pulls images.
const PULL_SINCE: u8 = 6;

/// Pulling the bench image from a registry in the lab, from an empty store,
/// against skopeo and umoci doing the same job; and starting from the
/// pulled image against starting from a directory.
fn pulls(step: &Step, options: &Options, fixtures: &Fixtures, image: &str) -> Result<Vec<Row>> {
    let binary = options
        .bin_dir
        .join(step.binary.file_name().expect("a binary's name"));
    let work = fixtures.scratch.join("pulls");
    fs::create_dir_all(&work)?;
    // Both start from nothing: the last round's copy is removed first, in
    // the same way, inside the timed command.
    let ours = work.join("ferry");
    let theirs = work.join("reference");
    let cases = [
        shell_case(
            fixtures,
            &format!("step{} pull", step.folder),
            format!(
                "rm -rf {ours} && exec {} pull --root {ours} {image} 2>/dev/null",
                binary.display(),
                ours = ours.display()
            ),
        ),
        shell_case(
            fixtures,
            "skopeo copy + umoci unpack",
            // skopeo keeps a cache in /var/lib/containers as root: a tmpfs
            // over /var/lib, in a mount namespace of its own (as
            // oci::skopeo does), keeps the host's untouched, for a
            // millisecond or two of the case's time.
            format!(
                "rm -rf {theirs} && mkdir -p {theirs} && \
                 exec unshare --mount --propagation private -- sh -c '\
                 mount -t tmpfs -o mode=0755 ferry-skopeo /var/lib && \
                 skopeo copy --quiet --src-tls-verify=false docker://{image} oci:{theirs}/layout:bench && \
                 exec umoci unpack --image {theirs}/layout:bench {theirs}/bundle'",
                theirs = theirs.display()
            ),
        ),
    ];
    let mut rows = measure(&cases, &options.fewer(10, 1), fixtures.scratch.path())?;
    // Starting a container: from the pulled image's layers, and from a
    // directory, with the same runtime and --root.
    let state = work.join("started");
    let pulled = Command::new(&fixtures.net.command_prefix()[0])
        .args(&fixtures.net.command_prefix()[1..])
        .arg(&binary)
        .args(["pull", "--root"])
        .arg(&state)
        .arg(image)
        .output()
        .context("pull the bench image")?;
    ensure!(
        pulled.status.success(),
        "pull the bench image: {}",
        String::from_utf8_lossy(&pulled.stderr)
    );
    let start = |name: &str, rootfs: &str| {
        let args = vec![
            "run".to_owned(),
            "--root".to_owned(),
            state.display().to_string(),
            "--cgroup-parent".to_owned(),
            fixtures.cgroups.name.clone(),
            rootfs.to_owned(),
            "/bin/true".to_owned(),
        ];
        in_network_lab(fixtures, name.to_owned(), binary.clone(), args)
    };
    let starts = [
        start(&format!("step{} run IMAGE", step.folder), image),
        start(
            &format!("step{} run DIRECTORY", step.folder),
            &options.rootfs.display().to_string(),
        ),
    ];
    rows.extend(measure(&starts, options, fixtures.scratch.path())?);
    Ok(rows)
}

const BENCH_IMAGE: &str = "ferry/bench:latest";

/// The workshop rootfs and two layers of 32 MiB each that gzip cannot
/// shrink (bytes of a fixed pseudo-random sequence): a pull that moves
/// real bytes.
fn bench_image(rootfs: &Path) -> Result<Vec<Image>> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut noise = |bytes: usize| {
        (0..bytes)
            .map(|_| {
                // xorshift64: enough to defeat gzip, the same every time.
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect::<Vec<u8>>()
    };
    let mut layers = vec![oci::dir_layer(rootfs)?];
    for name in ["data/one", "data/two"] {
        let data = noise(32 << 20);
        layers.push(oci::tar_layer(|builder| {
            oci::raw_entry(
                builder,
                tar::EntryType::Regular,
                name.as_bytes(),
                None,
                0o644,
                &data,
            )
        })?);
    }
    Ok(vec![Image::new(layers)])
}

struct Row {
    name: String,
    median: Duration,
    p90: Duration,
    peak_memory: u64,
}

fn measure(cases: &[Case], options: &Options, scratch: &Path) -> Result<Vec<Row>> {
    let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); cases.len()];
    let rounds = options.warmup + options.runs;
    for round in 0..rounds {
        for (i, case) in cases.iter().enumerate() {
            let elapsed = case.time(round)?;
            if round >= options.warmup {
                samples[i].push(elapsed);
            }
        }
    }
    let memory = cases
        .iter()
        .map(|case| case.peak_memory(rounds, scratch))
        .collect::<Result<Vec<u64>>>()?;
    Ok(cases
        .iter()
        .zip(samples.iter().zip(memory))
        .map(|(case, (samples, peak_memory))| {
            let (median, p90) = percentiles(samples);
            Row {
                name: case.name.clone(),
                median,
                p90,
                peak_memory,
            }
        })
        .collect())
}

/// `a` as a multiple of `b`: "0.39×".
fn ratio(a: Duration, b: Duration) -> String {
    if b.is_zero() {
        "–".to_owned()
    } else {
        format!("{:.2}×", a.as_secs_f64() / b.as_secs_f64())
    }
}

/// A field of /proc/PID/status in KiB ("VmRSS", "RssAnon").
fn status_kib(status: &str, field: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        line.strip_prefix(field)?
            .strip_prefix(':')?
            .trim()
            .strip_suffix("kB")?
            .trim()
            .parse()
            .ok()
    })
}

/// `sh -c SCRIPT` in the network lab.
fn shell_case(fixtures: &Fixtures, name: &str, script: String) -> Case {
    in_network_lab(
        fixtures,
        name.to_owned(),
        PathBuf::from("sh"),
        vec!["-c".to_owned(), script],
    )
}

fn ms(duration: Duration) -> String {
    format!("{:.2} ms", duration.as_secs_f64() * 1000.0)
}

fn report(options: &Options, rows: &[Row], sized: &[Row], pulls: &[Row]) -> String {
    let find = |prefix: &str| {
        rows.iter()
            .find(|row| row.name.starts_with(prefix))
            .map(|row| row.median)
    };
    let (runc, floor) = (
        find("runc").unwrap_or_default(),
        find("floor").unwrap_or_default(),
    );
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Measured by `just bench` on {}: {}.",
        today(),
        machine()
    );
    let _ = writeln!(
        out,
        "Each case runs `/bin/true` in the workshop rootfs; {} runs of each, interleaved, after {} warm-up round(s). \
         Peak memory is the largest resident set of any process of the case, from one more run under GNU time.\n",
        options.runs, options.warmup
    );
    let _ = writeln!(
        out,
        "| what | median | p90 | × runc | × floor | peak memory |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|");
    for row in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} MiB |",
            row.name,
            ms(row.median),
            ms(row.p90),
            ratio(row.median, runc),
            ratio(row.median, floor),
            row.peak_memory >> 20
        );
    }
    if let Some(limits) = rows.iter().find(|row| row.name.contains("--memory")) {
        let _ = writeln!(
            out,
            "\nStep 04 with all three limits: {} runc's time (the goal: at most 0.50×) and {} the floor's (the goal: at most 2.00×).",
            ratio(limits.median, runc),
            ratio(limits.median, floor)
        );
    }
    let lab_step4 = rows.iter().find(|row| row.name.contains("in the lab"));
    let step5 = rows.iter().find(|row| row.name == "step05-veth");
    if let (Some(before), Some(after)) = (lab_step4, step5) {
        let added = after.median.as_secs_f64() - before.median.as_secs_f64();
        let _ = writeln!(
            out,
            "\nStep 05's network (a network namespace, an address, a veth pair): {:.2} ms on top of step 04's start, both through nsenter in a network lab (the goal: at most 5 ms).",
            added * 1000.0
        );
    }
    let _ = writeln!(
        out,
        "\nStart time against the size of the image (the lower layer), median of {} runs:\n",
        options.runs
    );
    let _ = writeln!(out, "| what | lower layer | median | p90 |");
    let _ = writeln!(out, "|---|---|---:|---:|");
    for row in sized {
        let (name, size) = row.name.split_once(" | ").unwrap_or((&row.name, ""));
        let _ = writeln!(
            out,
            "| {name} | {size} | {} | {} |",
            ms(row.median),
            ms(row.p90)
        );
    }
    if pulls.len() == 4 {
        let _ = writeln!(
            out,
            "\nPulling a three-layer image of 66 MiB (two layers of incompressible bytes) from a registry in the lab, into an empty store, median of {} runs:\n",
            options.runs.clamp(1, 10)
        );
        let _ = writeln!(
            out,
            "| what | median | p90 | × the reference tools | peak memory |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---:|");
        for row in &pulls[..2] {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} MiB |",
                row.name,
                ms(row.median),
                ms(row.p90),
                ratio(row.median, pulls[1].median),
                row.peak_memory >> 20
            );
        }
        let _ = writeln!(
            out,
            "\nThe pull takes {} the time of skopeo and umoci (the goal: at most 0.50×).",
            ratio(pulls[0].median, pulls[1].median)
        );
        let _ = writeln!(out, "\n| what | median | p90 | × from a directory |");
        let _ = writeln!(out, "|---|---:|---:|---:|");
        for row in &pulls[2..] {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} |",
                row.name,
                ms(row.median),
                ms(row.p90),
                ratio(row.median, pulls[3].median)
            );
        }
        let _ = writeln!(
            out,
            "\nStarting from the image's three layers takes {} the time of starting from a directory (the goal: at most 1.10×).",
            ratio(pulls[2].median, pulls[3].median)
        );
    }
    out
}

fn machine() -> String {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines().find_map(|line| {
                Some(
                    line.strip_prefix("model name")?
                        .trim_start_matches([' ', '\t', ':'])
                        .to_owned(),
                )
            })
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let kernel = kernel.trim();
    format!(
        "{cpu}, {cores} cores, Linux {kernel}, cgroups {}",
        cgroup::layout_name()
    )
}

fn today() -> String {
    let out = Command::new("date").arg("+%Y-%m-%d").output();
    out.map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// Fails unless every tool the bench needs is there.
pub fn check_tools() -> Result<()> {
    for tool in ["runc", "unshare", "cp", "skopeo", "umoci", "/usr/bin/time"] {
        if Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_err()
        {
            bail!("{tool} is not installed: `just setup` installs what the bench needs");
        }
    }
    Ok(())
}
