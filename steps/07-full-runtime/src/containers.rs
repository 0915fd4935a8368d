//! The verbs on containers that are not `run`: `ps`, `logs`, `stop`,
//! `kill`, `rm` and `inspect`. Each is a process of its own that finds the
//! container by its record under `--root` (record.rs), and its supervisor
//! by the lock that the supervisor holds (state.rs).

use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::Serialize;

use crate::cli::{InspectArgs, KillArgs, LogsArgs, PsArgs, RmArgs, StopArgs};
use crate::exit::Failure;
use crate::record::{Record, Status};
use crate::reference::Reference;
use crate::store::Store;
use crate::{clock, logs, state, table};

// ANCHOR: ps
/// `ps`: the running containers, or with `-a` all of them, newest first.
pub fn ps(args: PsArgs) -> Result<()> {
    let mut rows = vec![
        [
            "CONTAINER ID",
            "IMAGE",
            "COMMAND",
            "CREATED",
            "STATUS",
            "PORTS",
            "NAMES",
        ]
        .map(String::from)
        .to_vec(),
    ];
    let mut all = state::containers(&args.store.root)?;
    all.reverse();
    for (dir, record) in all {
        let status = status_of(&dir, &record);
        if !args.all && status != Status::Running {
            continue;
        }
        if args.quiet {
            println!("{}", record.short_id());
            continue;
        }
        rows.push(vec![
            record.short_id().to_owned(),
            record.image.clone(),
            shown_command(&record.command),
            format!("{} ago", clock::human(clock::since(record.created))),
            shown_status(&record, status),
            // Published while it runs: Docker shows none for one that ended.
            if status == Status::Running {
                record.ports.join(", ")
            } else {
                String::new()
            },
            record.name.clone(),
        ]);
    }
    if args.quiet {
        return Ok(());
    }
    table::print(&rows)
}
// ANCHOR_END: ps

/// What the container is now: what its record says, unless its supervisor
/// died (or PID 1 is gone) while the record still says running.
fn status_of(dir: &Path, record: &Record) -> Status {
    match record.status {
        Status::Running | Status::Created if !state::supervised(dir) => Status::Dead,
        status => status,
    }
}

/// Docker's COMMAND column: the command line cut to 20 characters, quoted.
fn shown_command(command: &[String]) -> String {
    let line = command.join(" ");
    let cut: String = if line.chars().count() > 20 {
        line.chars().take(19).chain(['…']).collect()
    } else {
        line
    };
    serde_json::Value::String(cut).to_string()
}

fn shown_status(record: &Record, status: Status) -> String {
    match status {
        Status::Created => "Created".to_owned(),
        Status::Running => format!(
            "Up {}",
            clock::human(clock::since(record.started.unwrap_or(record.created)))
        ),
        Status::Exited => format!(
            "Exited ({}) {} ago",
            record.exit_code.unwrap_or_default(),
            clock::human(clock::since(record.finished.unwrap_or(record.created)))
        ),
        Status::Dead => "Dead".to_owned(),
    }
}

/// `logs`: what the container wrote, while it runs or after.
pub fn logs(args: LogsArgs) -> Result<()> {
    let (dir, _) = state::find(&args.store.root, &args.container)?;
    let options = logs::Options {
        follow: args.follow,
        tail: args.tail,
        timestamps: args.timestamps,
    };
    logs::show(&dir, &options, || state::supervised(&dir))
}

/// Runs `act` on each container named, as Docker does: it prints the name
/// of each one done, and an error for each one not; the last error is the
/// command's (status 1 for a container that does not exist).
fn each(names: &[String], act: impl Fn(&str) -> Result<()>) -> Result<()> {
    let mut last = None;
    for name in names {
        match act(name) {
            Ok(()) => println!("{name}"),
            Err(error) => {
                if let Some(previous) = last.replace(error) {
                    eprintln!("error: {previous:#}");
                }
            }
        }
    }
    last.map_or(Ok(()), Err)
}

// ANCHOR: stop
/// `stop`: SIGTERM, then SIGKILL if the container is still there after the
/// grace period. PID 1 of a PID namespace dies of SIGTERM only if it asked
/// to (a handler): a shell or `sleep` as PID 1 ignores it, and is killed
/// when the time is up, as `docker stop` does (status 137).
pub fn stop(args: StopArgs) -> Result<()> {
    let grace = Duration::from_secs(args.time);
    each(&args.containers, |name| {
        let (dir, record) = state::find(&args.store.root, name)?;
        let Some(pid) = running_pid(&dir, &record) else {
            return Ok(());
        };
        // ANCHOR: lab07-4-stop Stop it: SIGTERM, wait until the supervisor has gone (its lock), then SIGKILL when the grace period is over (stop) [07-full-runtime.md#stop-kill-rm]
        signal(pid, Signal::SIGTERM)?;
        if wait_for_end(&dir, grace) {
            return Ok(());
        }
        signal(pid, Signal::SIGKILL)?;
        if wait_for_end(&dir, Duration::from_secs(30)) {
            return Ok(());
        }
        bail!("container {name} did not end after SIGKILL")
        // ANCHOR_END: lab07-4-stop
    })
}
// ANCHOR_END: stop

/// `kill`: one signal, and no waiting.
pub fn kill_containers(args: KillArgs) -> Result<()> {
    let signal_to_send = parse_signal(&args.signal)?;
    each(&args.containers, |name| {
        let (dir, record) = state::find(&args.store.root, name)?;
        let Some(pid) = running_pid(&dir, &record) else {
            return Err(Failure {
                status: 1,
                message: format!("container {name} is not running"),
            }
            .into());
        };
        signal(pid, signal_to_send)
    })
}

/// `rm`: a container that has ended; with `-f`, one that runs is killed first.
pub fn rm(args: RmArgs) -> Result<()> {
    each(&args.containers, |name| {
        let (dir, record) = state::find(&args.store.root, name)?;
        if args.force
            && let Some(pid) = running_pid(&dir, &record)
        {
            signal(pid, Signal::SIGKILL)?;
            if !wait_for_end(&dir, Duration::from_secs(30)) {
                bail!("container {name} did not end after SIGKILL");
            }
        }
        // A `--rm` container's supervisor removed it as it ended.
        if !dir.exists() {
            return Ok(());
        }
        state::remove(&dir, &record)
    })
}

/// PID 1 of a container whose supervisor is alive, if it is still the
/// process the record names (a pid is reused once its process is gone).
fn running_pid(dir: &Path, record: &Record) -> Option<Pid> {
    if !state::supervised(dir) {
        return None;
    }
    record.live_pid().map(Pid::from_raw)
}

fn signal(pid: Pid, signal: Signal) -> Result<()> {
    match kill(pid, signal) {
        // Ended a moment ago: what we wanted.
        Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
        Err(errno) => Err(errno).with_context(|| format!("send {signal} to pid {pid}")),
    }
}

/// Waits until the container's supervisor has recorded its end and gone.
fn wait_for_end(dir: &Path, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if !state::supervised(dir) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// `KILL`, `SIGKILL` or `9`, as `docker kill -s` takes them.
fn parse_signal(text: &str) -> Result<Signal> {
    let upper = text.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    let parsed = match text.parse::<i32>() {
        Ok(number) => Signal::try_from(number).ok(),
        Err(_) => name.parse().ok(),
    };
    parsed.with_context(|| format!("invalid signal: {text}"))
}

// ANCHOR: inspect
/// `inspect`: what ferry knows of containers or images, as a JSON array
/// in the shape of Docker's (the fields ferry has).
pub fn inspect(args: InspectArgs) -> Result<()> {
    let mut found = Vec::new();
    for name in &args.names {
        found.push(match state::find(&args.store.root, name) {
            Ok((dir, record)) => Found::Container(dir, Box::new(record)),
            Err(_) => Found::Image(Box::new(image_json(&args.store.root, name)?)),
        });
    }
    let shown: Vec<Inspected> = found
        .iter()
        .map(|found| match found {
            Found::Container(dir, record) => {
                Inspected::Container(Box::new(container_json(dir, record)))
            }
            Found::Image(image) => Inspected::Image(image),
        })
        .collect();
    println!("{}", serde_json::to_string_pretty(&shown)?);
    Ok(())
}

enum Found {
    Container(PathBuf, Box<Record>),
    Image(Box<ImageJson>),
}

#[derive(Serialize)]
#[serde(untagged)]
enum Inspected<'a> {
    Container(Box<ContainerJson<'a>>),
    Image(&'a ImageJson),
}
// ANCHOR_END: inspect

/// A container as `docker inspect` shows one (the fields ferry has), in
/// Docker's order: structs, since a JSON object of serde_json's would sort
/// its keys.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ContainerJson<'a> {
    id: &'a str,
    created: String,
    path: &'a str,
    args: &'a [String],
    state: StateJson,
    image: &'a str,
    name: String,
    log_path: PathBuf,
    host_config: HostConfigJson<'a>,
    config: ConfigJson<'a>,
    network_settings: NetworkJson<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct StateJson {
    status: Status,
    running: bool,
    dead: bool,
    pid: i32,
    exit_code: u8,
    started_at: String,
    finished_at: String,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct HostConfigJson<'a> {
    auto_remove: bool,
    cgroup_parent: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ConfigJson<'a> {
    hostname: &'a str,
    env: &'a [String],
    cmd: &'a [String],
    working_dir: &'a str,
    user: &'a str,
    tty: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct NetworkJson<'a> {
    ports: &'a [String],
}

fn container_json<'a>(dir: &Path, record: &'a Record) -> ContainerJson<'a> {
    let status = status_of(dir, record);
    // Docker's time for "never": Go's zero time.
    let time = |t: Option<u64>| t.map_or("0001-01-01T00:00:00Z".to_owned(), clock::rfc3339);
    let (path, args) = record
        .command
        .split_first()
        .map_or(("", &[][..]), |(path, args)| (path.as_str(), args));
    ContainerJson {
        id: &record.id,
        created: clock::rfc3339(record.created),
        path,
        args,
        state: StateJson {
            status,
            running: status == Status::Running,
            dead: status == Status::Dead,
            pid: if status == Status::Running {
                record.pid.unwrap_or(0)
            } else {
                0
            },
            exit_code: record.exit_code.unwrap_or(0),
            started_at: time(record.started),
            finished_at: time(record.finished),
        },
        image: &record.image,
        name: format!("/{}", record.name),
        log_path: dir.join(logs::FILE),
        host_config: HostConfigJson {
            auto_remove: record.auto_remove,
            cgroup_parent: &record.cgroup_parent,
        },
        config: ConfigJson {
            hostname: &record.hostname,
            env: &record.env,
            cmd: &record.command,
            working_dir: record.workdir.as_deref().unwrap_or_default(),
            user: record.user.as_deref().unwrap_or_default(),
            tty: record.tty,
        },
        network_settings: NetworkJson {
            ports: &record.ports,
        },
    }
}

/// An image as `docker image inspect` shows one (the fields ferry has).
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ImageJson {
    id: String,
    repo_tags: Vec<String>,
    repo_digests: Vec<String>,
    created: serde_json::Value,
    architecture: serde_json::Value,
    os: serde_json::Value,
    config: serde_json::Value,
    #[serde(rename = "RootFS")]
    root_fs: serde_json::Value,
    size: u64,
}

fn image_json(root: &Path, name: &str) -> Result<ImageJson> {
    let no_such = || Failure {
        status: 1,
        message: format!("no such object: {name}"),
    };
    let reference = Reference::parse(name).map_err(|_| no_such())?;
    let store = Store::open(root)?;
    let entry = store.find(&reference)?.ok_or_else(no_such)?;
    let mut config: serde_json::Value = serde_json::from_slice(&store.read_blob(&entry.config)?)
        .context("parse the image's config")?;
    let mut take = |key: &str| {
        config
            .get_mut(key)
            .map(serde_json::Value::take)
            .unwrap_or_default()
    };
    Ok(ImageJson {
        id: entry.config.to_string(),
        repo_tags: vec![reference.to_string()],
        repo_digests: vec![format!(
            "{}/{}@{}",
            reference.registry, reference.repository, entry.manifest
        )],
        created: take("created"),
        architecture: take("architecture"),
        os: take("os"),
        config: take("config"),
        root_fs: take("rootfs"),
        size: entry.size,
    })
}
