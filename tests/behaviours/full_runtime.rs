//! Step 07 behaviours: `ferry`, Docker's verbs on containers that outlive
//! the `run` that made them. Each is checked through the verbs alone (`ps`,
//! `logs`, `inspect`, `exec`…), as a Docker user would see it, and by what
//! is left on the host afterwards.

use std::ffi::OsString;
use std::fs;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use ferry_tests::netlab::NetLab;
use ferry_tests::pty::Terminal;
use ferry_tests::run::{Outcome, wait_until};
use ferry_tests::scratch::Scratch;

use crate::check::{Ctx, expect, expect_error};
use crate::{Behaviour, Kind::Feature, Kind::Kept};

pub const BEHAVIOURS: &[Behaviour] = &[
    Behaviour {
        name: "run_detached_prints_the_id_and_returns",
        hint: "run -d prints the container's full id (64 hex digits) and returns while the container runs; ps shows it Up, logs shows its output (book: Step 07 › A supervisor per container)",
        since: 7,
        kind: Feature,
        check: run_detached_prints_the_id_and_returns,
    },
    Behaviour {
        name: "ps_shows_dockers_columns",
        hint: "ps: CONTAINER ID, IMAGE, COMMAND, CREATED, STATUS, PORTS, NAMES; running ones only, all with -a, ids with -q; Up …, Exited (N) … ago (book: Step 07 › The record)",
        since: 7,
        kind: Feature,
        check: ps_shows_dockers_columns,
    },
    Behaviour {
        name: "stop_sends_sigterm_then_sigkill",
        hint: "stop: SIGTERM, which a command with a handler acts on (its own status), then SIGKILL after -t seconds for one that ignores it (137, recorded) (book: Step 07 › stop, kill, rm)",
        since: 7,
        kind: Feature,
        check: stop_sends_sigterm_then_sigkill,
    },
    Behaviour {
        name: "logs_keep_both_streams_in_order",
        hint: "logs: stdout lines on stdout, stderr lines on stderr, in the order written, after the container has ended too; -t, --tail (book: Step 07 › The log)",
        since: 7,
        kind: Feature,
        check: logs_keep_both_streams_in_order,
    },
    Behaviour {
        name: "logs_follow_until_the_end",
        hint: "logs -f prints what comes until the container ends, then returns (book: Step 07 › The log)",
        since: 7,
        kind: Feature,
        check: logs_follow_until_the_end,
    },
    Behaviour {
        name: "exec_joins_the_container",
        hint: "exec: setns into every namespace of PID 1 (mount last), into its cgroup, with its environment; its status relayed (book: Step 07 › exec)",
        since: 7,
        kind: Feature,
        check: exec_joins_the_container,
    },
    Behaviour {
        name: "rm_removes_what_the_container_held",
        hint: "rm: refused while the container runs, -f kills it first; afterwards nothing under --root, no cgroup, no address lease (book: Step 07 › stop, kill, rm)",
        since: 7,
        kind: Feature,
        check: rm_removes_what_the_container_held,
    },
    Behaviour {
        name: "rm_flag_removes_after_stop",
        hint: "run --rm: the supervisor removes the container when it ends, also after stop (book: Step 07 › stop, kill, rm)",
        since: 7,
        kind: Feature,
        check: rm_flag_removes_after_stop,
    },
    Behaviour {
        name: "names_name_containers",
        hint: "--name NAME (Docker's grammar, unique), a name made up otherwise; a container is named by name, full id or unique id prefix; an unknown one is status 1, \"no such container\" (book: Step 07 › The record)",
        since: 7,
        kind: Feature,
        check: names_name_containers,
    },
    Behaviour {
        name: "fifty_detached_containers",
        hint: "50 run -d back to back: all running, with distinct ids, names and addresses; rm -f removes them all and what they held (book: Step 07 › A supervisor per container)",
        since: 7,
        kind: Feature,
        check: fifty_detached_containers,
    },
    Behaviour {
        name: "a_killed_supervisor_leaves_a_dead_record",
        hint: "kill -9 of a supervisor: its container dies with it (parent-death signal), ps -a shows it Dead, rm reclaims its cgroup, address, rules and folder (book: Step 07 › The record)",
        since: 7,
        kind: Feature,
        check: a_killed_supervisor_leaves_a_dead_record,
    },
    Behaviour {
        name: "inspect_tells_the_state",
        hint: "inspect prints a JSON array in Docker's shape: Id, Name, State.Status, State.ExitCode, Config.Hostname… (book: Step 07 › The record)",
        since: 7,
        kind: Feature,
        check: inspect_tells_the_state,
    },
    Behaviour {
        name: "init_reaps_orphans",
        hint: "--init: PID 1 is a small init that reaps orphaned processes (no <defunct>) and passes SIGTERM on to the command (book: Step 07 › --init)",
        since: 7,
        kind: Feature,
        check: init_reaps_orphans,
    },
    Behaviour {
        name: "zombies_remain_without_init",
        hint: "without --init, a PID 1 that never waits leaves orphans as zombies: the lesson --init answers (book: Step 07 › --init)",
        since: 7,
        kind: Kept,
        check: zombies_remain_without_init,
    },
    Behaviour {
        name: "volumes_bind_host_directories",
        hint: "-v HOST:CONTAINER[:ro]: the host's files inside, writes landing on the host, :ro refusing them; a symlink on the way is followed inside the container, never on the host (book: Step 07 › Volumes)",
        since: 7,
        kind: Feature,
        check: volumes_bind_host_directories,
    },
    Behaviour {
        name: "interactive_terminal",
        hint: "-it: a terminal of the container's own (job control, Ctrl-C to the foreground command inside, the caller's size, and its changes on SIGWINCH), the caller's terminal restored after, the shell's status relayed (book: Step 07 › -it)",
        since: 7,
        kind: Feature,
        check: interactive_terminal,
    },
];

/// How long a container may take to get where a test waits for it.
const SOON: Duration = Duration::from_secs(20);

/// `run -d OPTIONS ROOTFS sh -c SCRIPT`: the full id it printed.
fn detach(ctx: &Ctx, options: &[&str], script: &str) -> Result<String> {
    let mut all = vec!["-d"];
    all.extend(options);
    let outcome = ctx.run(&all, &["/bin/sh", "-c", script]).output()?;
    let id = outcome.stdout.trim_end().to_owned();
    ensure!(
        outcome.status == 0
            && outcome.stdout.ends_with('\n')
            && id.len() == 64
            && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "expected run -d to print a 64-digit id and exit 0; got\n{outcome}"
    );
    Ok(id)
}

fn ferry(ctx: &Ctx, verb: &str, args: &[&str]) -> Result<Outcome> {
    ctx.ferry(verb, args).output()
}

/// Polls `logs CONTAINER` until its stdout is `wanted`.
fn wait_for_logs(ctx: &Ctx, container: &str, wanted: &str) -> Result<()> {
    let mut last = None;
    wait_until(&format!("logs showing {wanted:?}"), SOON, || {
        let outcome = ferry(ctx, "logs", &[container]).ok()?;
        let done = outcome.stdout == wanted;
        last = Some(outcome);
        done.then_some(())
    })
    .with_context(|| format!("the last logs: {last:?}"))
}

/// The State of `inspect CONTAINER`.
fn inspect_state(ctx: &Ctx, container: &str) -> Result<serde_json::Value> {
    let outcome = ferry(ctx, "inspect", &[container])?;
    ensure!(outcome.status == 0, "inspect failed:\n{outcome}");
    let json: serde_json::Value =
        serde_json::from_str(&outcome.stdout).context("inspect's JSON")?;
    Ok(json[0]["State"].clone())
}

/// Polls until the container's status is `status`.
fn wait_for_status(ctx: &Ctx, container: &str, status: &str) -> Result<serde_json::Value> {
    wait_until(&format!("the container {status}"), SOON, || {
        let state = inspect_state(ctx, container).ok()?;
        (state["Status"] == status).then_some(state)
    })
}

fn run_detached_prints_the_id_and_returns(ctx: &Ctx) -> Result<()> {
    // The container waits for ever: run -d returning proves it is not
    // waited for.
    let id = detach(ctx, &[], "echo ready; exec sleep 1000")?;
    let ps = ferry(ctx, "ps", &["-q"])?;
    expect(&ps, 0, &format!("{}\n", &id[..12]), "")?;
    wait_for_logs(ctx, &id, "ready\n")?;
    let state = inspect_state(ctx, &id)?;
    ensure!(
        state["Status"] == "running" && state["Running"] == true,
        "inspect says {state}"
    );
    expect(&ferry(ctx, "rm", &["-f", &id])?, 0, &format!("{id}\n"), "")
}

fn ps_shows_dockers_columns(ctx: &Ctx) -> Result<()> {
    detach(ctx, &["--name", "up"], "exec sleep 1000")?;
    let ended = ctx
        .run(&["--name", "ended"], &["/bin/sh", "-c", "exit 3"])
        .output()?;
    expect(&ended, 3, "", "")?;
    let all = ferry(ctx, "ps", &["-a"])?;
    let lines: Vec<&str> = all.stdout.lines().collect();
    let header = "CONTAINER ID   IMAGE";
    ensure!(
        all.status == 0 && lines.len() == 3 && lines[0].starts_with(header),
        "expected a header and two containers; got\n{all}"
    );
    for name in ["CREATED", "STATUS", "PORTS", "NAMES", "COMMAND"] {
        ensure!(lines[0].contains(name), "no {name} column:\n{all}");
    }
    // Newest first, as Docker lists them.
    ensure!(
        lines[1].contains("\"/bin/sh -c exit 3\"")
            && lines[1].contains(" Exited (3) ")
            && lines[1].contains(" ago ")
            && lines[1].ends_with(" ended"),
        "the ended container's row: {}",
        lines[1]
    );
    ensure!(
        lines[2].contains("\"/bin/sh -c exec sle…\""),
        "the running container's command, cut to 20 characters: {}",
        lines[2]
    );
    ensure!(
        lines[2].contains(" Up ") && lines[2].ends_with(" up"),
        "the running container's row: {}",
        lines[2]
    );
    let running = ferry(ctx, "ps", &[])?;
    ensure!(
        running.stdout.lines().count() == 2 && running.stdout.contains(" up\n"),
        "ps without -a shows only running containers:\n{running}"
    );
    let quiet = ferry(ctx, "ps", &["-aq"])?;
    let ids: Vec<&str> = quiet.stdout.lines().collect();
    ensure!(
        ids.len() == 2 && ids.iter().all(|id| id.len() == 12),
        "ps -aq lists the two short ids:\n{quiet}"
    );
    Ok(())
}

fn stop_sends_sigterm_then_sigkill(ctx: &Ctx) -> Result<()> {
    // A grace period far longer than the test: the status says which
    // signal ended it, not the time taken.
    let handles = detach(
        ctx,
        &[],
        "trap 'echo bye; exit 0' TERM; echo ready; while :; do sleep 0.05; done",
    )?;
    wait_for_logs(ctx, &handles, "ready\n")?;
    let state = stop(ctx, &handles, "600")?;
    ensure!(
        state["Status"] == "exited" && state["ExitCode"] == 0,
        "a container that handles SIGTERM ends by itself; inspect says {state}"
    );
    wait_for_logs(ctx, &handles, "ready\nbye\n")?;
    // A shell as PID 1 with no handler ignores SIGTERM: SIGKILL after 1 s.
    let ignores = detach(ctx, &[], "echo ready; while :; do sleep 0.05; done")?;
    wait_for_logs(ctx, &ignores, "ready\n")?;
    let state = stop(ctx, &ignores, "1")?;
    ensure!(
        state["Status"] == "exited" && state["ExitCode"] == 137,
        "a container that ignores SIGTERM is killed (137); inspect says {state}"
    );
    // Stopping a stopped container is no error, as with Docker.
    let again = stop(ctx, &ignores, "1")?;
    ensure!(
        again["ExitCode"] == 137,
        "a second stop changed the state: {again}"
    );
    Ok(())
}

/// `stop -t GRACE ID`, which prints the id, then the container's State.
fn stop(ctx: &Ctx, id: &str, grace: &str) -> Result<serde_json::Value> {
    expect(
        &ferry(ctx, "stop", &["-t", grace, id])?,
        0,
        &format!("{id}\n"),
        "",
    )?;
    inspect_state(ctx, id)
}

/// A host directory the container and the test both see, for handshakes.
fn shared_dir() -> Result<(Scratch, String)> {
    let dir = Scratch::new("volume")?;
    let spec = format!("{}:/sync", dir.path().display());
    Ok((dir, spec))
}

fn logs_keep_both_streams_in_order(ctx: &Ctx) -> Result<()> {
    // Each line waits for the test to have seen the one before: the order
    // is the container's, whatever the machine's load.
    let (sync, volume) = shared_dir()?;
    let script = "echo one; until [ -e /sync/1 ]; do sleep 0.01; done; \
                  echo two >&2; until [ -e /sync/2 ]; do sleep 0.01; done; echo three";
    let id = detach(ctx, &["-v", &volume], script)?;
    wait_for_logs(ctx, &id, "one\n")?;
    fs::write(sync.join("1"), "")?;
    wait_until("two on stderr", SOON, || {
        let outcome = ferry(ctx, "logs", &[&id]).ok()?;
        (outcome.stderr == "two\n").then_some(())
    })?;
    fs::write(sync.join("2"), "")?;
    wait_for_status(ctx, &id, "exited")?;
    // After the end: each stream on its own, and the order kept in -t's
    // times (each line is stamped when the supervisor read it).
    expect(&ferry(ctx, "logs", &[&id])?, 0, "one\nthree\n", "two\n")?;
    let stamped = ferry(ctx, "logs", &["-t", &id])?;
    let mut lines: Vec<&str> = stamped
        .stdout
        .lines()
        .chain(stamped.stderr.lines())
        .collect();
    lines.sort();
    let words: Vec<&str> = lines.iter().filter_map(|l| l.split(' ').nth(1)).collect();
    ensure!(
        words == ["one", "two", "three"]
            && lines
                .iter()
                .all(|l| l.len() > 31 && l.as_bytes()[10] == b'T'),
        "logs -t: an RFC 3339 time, then the line, in order:\n{stamped}"
    );
    expect(
        &ferry(ctx, "logs", &["--tail", "1", &id])?,
        0,
        "three\n",
        "",
    )
}

fn logs_follow_until_the_end(ctx: &Ctx) -> Result<()> {
    let id = detach(
        ctx,
        &[],
        "trap 'echo two; exit 0' TERM; echo one; while :; do sleep 0.05; done",
    )?;
    let mut follow = ctx.ferry("logs", &["-f", &id]).spawn()?;
    follow.wait_for_line("one")?;
    expect(&ferry(ctx, "stop", &[&id])?, 0, &format!("{id}\n"), "")?;
    follow.wait_for_line("two")?;
    let outcome = follow.finish()?;
    ensure!(
        outcome.status == 0,
        "logs -f ends with the container:\n{outcome}"
    );
    Ok(())
}

fn exec_joins_the_container(ctx: &Ctx) -> Result<()> {
    let id = detach(
        ctx,
        &[
            "--hostname",
            "box",
            "-e",
            "GREETING=hello",
            "--memory",
            "64m",
        ],
        "echo made > /tmp/mark; ip -4 -o addr show eth0 | tr -s ' ' | cut -d' ' -f4; exec sleep 1000",
    )?;
    let address = wait_until("the container's address in its log", SOON, || {
        let outcome = ferry(ctx, "logs", &[&id]).ok()?;
        let line = outcome.stdout.lines().next()?.to_owned();
        line.contains('/').then_some(line)
    })?;
    let probe = "hostname; echo $GREETING; cat /tmp/mark; \
                 ps -o pid,comm | grep -c ' 1 sleep'; \
                 ip -4 -o addr show eth0 | tr -s ' ' | cut -d' ' -f4; \
                 grep -v name= /proc/self/cgroup | cut -d: -f3 | sort -u; \
                 cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes; \
                 exit 7";
    let outcome = ferry(ctx, "exec", &[&id, "/bin/sh", "-c", probe])?;
    // In the container's cgroup, whose namespace makes it "/".
    expect(
        &outcome,
        7,
        &format!("box\nhello\nmade\n1\n{address}\n/\n67108864\n"),
        "",
    )?;
    expect_error(
        &ferry(ctx, "exec", &[&id, "no-such-command"])?,
        127,
        "not found",
    )?;
    expect_error(
        &ferry(ctx, "exec", &["no-such-container", "true"])?,
        1,
        "no such container",
    )?;
    // Nothing that exec started stays: sleep is alone with the shell that
    // ps ran in.
    let left = ferry(ctx, "exec", &[&id, "ps", "-o", "comm"])?;
    expect(&left, 0, "COMMAND\nsleep\nps\n", "")
}

fn rm_removes_what_the_container_held(ctx: &Ctx) -> Result<()> {
    let id = detach(ctx, &["--name", "held"], "echo ready; exec sleep 1000")?;
    wait_for_logs(ctx, "held", "ready\n")?;
    ensure!(
        !ctx.cgroup.leaves().is_empty(),
        "the container has no cgroup"
    );
    expect_error(&ferry(ctx, "rm", &["held"])?, 1, "running")?;
    expect(&ferry(ctx, "rm", &["-f", "held"])?, 0, "held\n", "")?;
    expect(&ferry(ctx, "ps", &["-aq"])?, 0, "", "")?;
    ensure!(
        ctx.cgroup.leaves().is_empty(),
        "cgroups left: {:?}",
        ctx.cgroup.leaves()
    );
    let leases = ctx.net()?.leases()?;
    ensure!(leases.is_empty(), "address leases left: {leases:?}");
    expect_error(&ferry(ctx, "logs", &[&id])?, 1, "no such container")?;
    ctx.nothing_under_root()
}

fn rm_flag_removes_after_stop(ctx: &Ctx) -> Result<()> {
    let id = detach(ctx, &["--rm"], "echo ready; exec sleep 1000")?;
    wait_for_logs(ctx, &id, "ready\n")?;
    expect(
        &ferry(ctx, "stop", &["-t", "0", &id])?,
        0,
        &format!("{id}\n"),
        "",
    )?;
    wait_until("the container removed", SOON, || {
        let ps = ferry(ctx, "ps", &["-aq"]).ok()?;
        ps.stdout.is_empty().then_some(())
    })?;
    ctx.nothing_under_root()
}

fn names_name_containers(ctx: &Ctx) -> Result<()> {
    let id = detach(ctx, &["--name", "web.1"], "exec sleep 1000")?;
    let again = ctx.run(&["-d", "--name", "web.1"], &["true"]).output()?;
    expect_error(&again, 125, "already in use")?;
    let bad = ctx.run(&["--name", "-web"], &["true"]).output()?;
    expect_error(&bad, 125, "name")?;
    // By name, by full id, by a prefix of the id.
    for name in ["web.1", id.as_str(), &id[..5]] {
        let state = inspect_state(ctx, name)?;
        ensure!(state["Status"] == "running", "inspect {name}: {state}");
    }
    expect_error(
        &ferry(ctx, "stop", &["nobody"])?,
        1,
        "no such container: nobody",
    )?;
    // A name made up when none is given: two words, as Docker's.
    let other = ctx.run(&[], &["true"]).output()?;
    expect(&other, 0, "", "")?;
    let ps = ferry(ctx, "ps", &["-a"])?;
    let made_up = ps
        .stdout
        .lines()
        .nth(1)
        .and_then(|row| row.rsplit(' ').next())
        .unwrap_or_default()
        .to_owned();
    ensure!(
        made_up != "web.1" && made_up.split('_').count() == 2,
        "expected a made-up name like brave_hopper:\n{ps}"
    );
    Ok(())
}

fn fifty_detached_containers(ctx: &Ctx) -> Result<()> {
    let ids: Vec<String> = (0..50)
        .map(|_| {
            detach(
                ctx,
                &[],
                "ip -4 -o addr show eth0 | tr -s ' ' | cut -d' ' -f4; exec sleep 1000",
            )
        })
        .collect::<Result<_>>()?;
    let ps = ferry(ctx, "ps", &[])?;
    let rows: Vec<&str> = ps.stdout.lines().skip(1).collect();
    let mut names: Vec<&str> = rows
        .iter()
        .filter_map(|row| row.rsplit(' ').next())
        .collect();
    names.sort_unstable();
    names.dedup();
    let mut distinct = ids.clone();
    distinct.sort_unstable();
    distinct.dedup();
    ensure!(
        rows.len() == 50 && names.len() == 50 && distinct.len() == 50,
        "expected 50 running containers with distinct ids and names:\n{ps}"
    );
    let mut addresses = Vec::new();
    for id in &ids {
        addresses.push(wait_until(
            "the container's address in its log",
            SOON,
            || {
                let line = ferry(ctx, "logs", &[id]).ok()?.stdout;
                line.contains('/').then_some(line)
            },
        )?);
    }
    addresses.sort();
    addresses.dedup();
    ensure!(addresses.len() == 50, "two containers share an address");
    let mut all = vec!["-f"];
    all.extend(ids.iter().map(String::as_str));
    let removed = ferry(ctx, "rm", &all)?;
    ensure!(
        removed.status == 0 && removed.stdout.lines().count() == 50,
        "rm -f of the 50:\n{removed}"
    );
    ensure!(ctx.cgroup.leaves().is_empty(), "cgroups left");
    ensure!(ctx.net()?.leases()?.is_empty(), "address leases left");
    ctx.nothing_under_root()
}

fn a_killed_supervisor_leaves_a_dead_record(ctx: &Ctx) -> Result<()> {
    let id = detach(
        ctx,
        &["--name", "orphan", "-p", "8080:80"],
        "echo ready; exec sleep 1000",
    )?;
    wait_for_logs(ctx, &id, "ready\n")?;
    let state = inspect_state(ctx, &id)?;
    let pid1 = state["Pid"].as_i64().context("a running container's Pid")? as i32;
    // The supervisor is PID 1's parent: ours to kill, by its pid.
    let stat = fs::read_to_string(format!("/proc/{pid1}/stat"))?;
    let supervisor: i32 = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse().ok())
        .context("PID 1's parent in /proc/PID/stat")?;
    // Only a process of the runtime's binary: comm is its name, cut to 15.
    let binary: String = ctx
        .step
        .binary
        .file_name()
        .map(|name| name.to_string_lossy().chars().take(15).collect())
        .unwrap_or_default();
    ensure!(
        ferry_tests::host::command_name(supervisor).as_deref() == Some(binary.as_str()),
        "PID 1's parent, pid {supervisor}, is not the runtime's supervisor"
    );
    ferry_tests::host::signal(supervisor, nix::sys::signal::Signal::SIGKILL)?;
    wait_until("the container's end with its supervisor", SOON, || {
        ferry_tests::host::has_ended(pid1).then_some(())
    })?;
    let ps = ferry(ctx, "ps", &["-a"])?;
    ensure!(
        ps.stdout
            .lines()
            .nth(1)
            .is_some_and(|row| row.contains(" Dead ") || row.contains(" Exited (")),
        "ps -a shows the container as dead or exited:\n{ps}"
    );
    expect(&ferry(ctx, "rm", &["orphan"])?, 0, "orphan\n", "")?;
    ensure!(
        ctx.cgroup.leaves().is_empty(),
        "cgroups left: {:?}",
        ctx.cgroup.leaves()
    );
    // Its address and its published port go with the next run.
    expect(&ctx.run(&["--rm"], &["true"]).output()?, 0, "", "")?;
    ensure!(ctx.net()?.leases()?.is_empty(), "address leases left");
    let rules = ctx.net()?.ferry_rules()?;
    ensure!(
        !rules.contains("8080"),
        "the published port's rules stay:\n{rules}"
    );
    ctx.nothing_under_root()
}

fn inspect_tells_the_state(ctx: &Ctx) -> Result<()> {
    let ended = ctx
        .run(
            &["--name", "done", "--hostname", "box"],
            &["/bin/sh", "-c", "exit 4"],
        )
        .output()?;
    expect(&ended, 4, "", "")?;
    let outcome = ferry(ctx, "inspect", &["done"])?;
    let json: serde_json::Value = serde_json::from_str(&outcome.stdout)
        .with_context(|| format!("inspect prints JSON:\n{outcome}"))?;
    let it = &json[0];
    ensure!(
        it["Name"] == "/done"
            && it["Id"].as_str().is_some_and(|id| id.len() == 64)
            && it["State"]["Status"] == "exited"
            && it["State"]["ExitCode"] == 4
            && it["State"]["Running"] == false
            && it["Config"]["Hostname"] == "box"
            && it["Path"] == "/bin/sh",
        "inspect done:\n{outcome}"
    );
    // Started, then finished: RFC 3339 times, which sort as they happened.
    let (started, finished) = (&it["State"]["StartedAt"], &it["State"]["FinishedAt"]);
    let (Some(started), Some(finished)) = (started.as_str(), finished.as_str()) else {
        anyhow::bail!("inspect done: no StartedAt or FinishedAt:\n{outcome}");
    };
    ensure!(
        started.starts_with("20") && started <= finished,
        "inspect done: started {started}, finished {finished}"
    );
    expect_error(&ferry(ctx, "inspect", &["nothing-here"])?, 1, "no such")
}

/// The processes of the container, as `exec ps -o stat,comm` shows them.
fn processes(ctx: &Ctx, id: &str) -> Result<String> {
    Ok(ferry(ctx, "exec", &[id, "ps", "-o", "stat,comm"])?.stdout)
}

fn init_reaps_orphans(ctx: &Ctx) -> Result<()> {
    // The subshell's sleep is orphaned at once; PID 1 (sleep) never waits.
    let id = detach(
        ctx,
        &["--init"],
        "(sleep 0.05 &); echo ready; exec sleep 1000",
    )?;
    wait_for_logs(ctx, &id, "ready\n")?;
    // Until the orphan has ended and been reaped: one sleep left, no Z.
    wait_until("the orphan reaped", SOON, || {
        let shown = processes(ctx, &id).ok()?;
        (shown.matches("sleep").count() == 1 && !shown.contains("Z ")).then_some(())
    })?;
    // SIGTERM reaches the command through the init: sleep dies of it.
    let state = stop(ctx, &id, "600")?;
    ensure!(
        state["ExitCode"] == 143,
        "the command killed by the SIGTERM the init passed on (143); inspect says {state}"
    );
    Ok(())
}

fn zombies_remain_without_init(ctx: &Ctx) -> Result<()> {
    let id = detach(ctx, &[], "(sleep 0.05 &); echo ready; exec sleep 1000")?;
    wait_for_logs(ctx, &id, "ready\n")?;
    wait_until("the orphan a zombie", SOON, || {
        processes(ctx, &id)
            .ok()?
            .contains("Z    sleep")
            .then_some(())
    })?;
    Ok(())
}

fn volumes_bind_host_directories(ctx: &Ctx) -> Result<()> {
    let host = Scratch::new("volume")?;
    fs::write(host.join("from-host"), "hello\n")?;
    let rw = format!("{}:/data", host.path().display());
    let outcome = ctx
        .run(
            &["--rm", "-v", &rw],
            &[
                "/bin/sh",
                "-c",
                "cat /data/from-host; echo back > /data/from-container",
            ],
        )
        .output()?;
    expect(&outcome, 0, "hello\n", "")?;
    ensure!(
        fs::read_to_string(host.join("from-container"))? == "back\n",
        "the container's write did not land on the host"
    );
    let ro = format!("{}:/data:ro", host.path().display());
    let outcome = ctx
        .run(
            &["--rm", "-v", &ro],
            &["/bin/sh", "-c", "echo no > /data/refused"],
        )
        .output()?;
    ensure!(
        outcome.status != 0 && outcome.stderr.contains("Read-only file system"),
        "a :ro volume refuses writes; got\n{outcome}"
    );
    ensure!(!host.join("refused").exists(), "the :ro volume was written");
    // A place through a symlink whose target is a host directory of the
    // test's: inside the container that path is the container's own, and
    // the volume must land there, not on the host's directory (runc's
    // CVE-2021-30465).
    let outside = Scratch::new("outside")?;
    std::os::unix::fs::symlink(outside.path(), ctx.rootfs.join("escape"))?;
    let through = format!("{}:/escape/vol", host.path().display());
    let outcome = ctx
        .run(&["--rm", "-v", &through], &["cat", "/escape/vol/from-host"])
        .output()?;
    expect(&outcome, 0, "hello\n", "")?;
    ensure!(
        crate::check::listing(outside.path())?.is_empty(),
        "the volume's place was made on the host, through the symlink: {}",
        crate::check::listing(outside.path())?
    );
    let relative = ctx.run(&["--rm", "-v", "data:/data"], &["true"]).output()?;
    expect_error(&relative, 125, "named volumes")?;
    let missing = format!("{}/no-such-dir:/data", host.path().display());
    let outcome = ctx.run(&["--rm", "-v", &missing], &["true"]).output()?;
    expect_error(&outcome, 125, "does not exist")?;
    ensure!(
        !host.join("no-such-dir").exists(),
        "the missing host directory was made"
    );
    ctx.nothing_under_root()
}

fn interactive_terminal(ctx: &Ctx) -> Result<()> {
    let mut line: Vec<OsString> = ctx
        .net
        .as_ref()
        .map(NetLab::command_prefix)
        .unwrap_or_default();
    line.push(ctx.step.binary.clone().into());
    line.extend(ctx.run_args(&ctx.rootfs, &["--rm", "-it"], &["/bin/sh"]));
    let (program, args) = line.split_first().context("a command line")?;
    let mut terminal = Terminal::spawn(program, args, 37, 101)?;
    let before = terminal.settings()?;
    terminal.expect("# ", SOON)?;
    terminal.send("stty size\r")?;
    terminal.expect("37 101", SOON)?;
    terminal.expect("# ", SOON)?;
    // A resized window reaches the container's terminal (SIGWINCH).
    terminal.resize(24, 80)?;
    wait_until("the new size inside", SOON, || {
        terminal.send("stty size\r").ok()?;
        let shown = terminal.expect("# ", SOON).ok()?;
        shown.contains("24 80").then_some(())
    })?;
    // Job control: a background job, listed by `jobs`.
    terminal.send("sleep 1000 &\r")?;
    terminal.expect("# ", SOON)?;
    terminal.send("jobs\r")?;
    terminal.expect("Running", SOON)?;
    terminal.expect("# ", SOON)?;
    terminal.send("kill %1\r")?;
    terminal.expect("# ", SOON)?;
    // Ctrl-C ends the foreground command inside, not the shell.
    // (Reaped first: the killed job's zombie is a `sleep` too.)
    terminal.send("wait\r")?;
    terminal.expect("# ", SOON)?;
    terminal.send("sleep 1000\r")?;
    wait_until("sleep running in the foreground", SOON, || {
        ferry_tests::host::descendants(terminal.pid())
            .into_iter()
            .any(|pid| {
                ferry_tests::host::command_name(pid).as_deref() == Some("sleep")
                    && fs::read_to_string(format!("/proc/{pid}/stat"))
                        .is_ok_and(|stat| stat.contains(") S "))
            })
            .then_some(())
    })?;
    terminal.send("\x03")?;
    terminal.expect("# ", SOON)?;
    terminal.send("echo status $?\r")?;
    terminal.expect("status 130", SOON)?;
    terminal.send("exit 3\r")?;
    let status = terminal.wait(SOON)?;
    let after = terminal.settings()?;
    ensure!(
        !terminal.screen.contains("job control turned off"),
        "the shell has no job control:\n{}",
        terminal.screen
    );
    ensure!(
        status == 3,
        "expected status 3; got {status}:\n{}",
        terminal.screen
    );
    ensure!(
        before.local_flags == after.local_flags && before.input_flags == after.input_flags,
        "the caller's terminal was not restored (still raw?)"
    );
    Ok(())
}
