//! Step 04 behaviours: memory, CPU and process limits through cgroups, on
//! whatever layout the host has (v1, hybrid, or v2; `just test` also runs
//! these in a virtual machine booted once per layout: tests/vm.rs).

use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use ferry_tests::cgroup;
use nix::unistd::{SysconfVar, sysconf};

use crate::check::{Ctx, expect, expect_error, kill_runtime_mid_run, process_named};
use crate::{Behaviour, Kind::BadInput, Kind::Feature};

pub const BEHAVIOURS: &[Behaviour] = &[
    Behaviour {
        name: "memory_limit_ends_in_oom_kill",
        hint: "--memory: memory.max (v2) or memory.limit_in_bytes (v1); an OOM kill is 137 and says so (book: Step 04 › Out of memory)",
        since: 4,
        kind: Feature,
        check: memory_limit_ends_in_oom_kill,
    },
    Behaviour {
        name: "pids_limit_stops_a_fork_loop",
        hint: "--pids-limit: pids.max stops a fork loop (book: Step 04 › The code)",
        since: 4,
        kind: Feature,
        check: pids_limit_stops_a_fork_loop,
    },
    Behaviour {
        name: "cpu_limit_throttles",
        hint: "--cpus: cpu.max (v2) or the CFS quota and period (v1) (book: Step 04 › The code)",
        since: 4,
        kind: Feature,
        check: cpu_limit_throttles,
    },
    Behaviour {
        name: "cgroup_is_removed_on_exit",
        hint: "the container runs in cgroups of its own under the parent, removed when it ends (book: Step 04 › Cleaning up)",
        since: 4,
        kind: Feature,
        check: cgroup_is_removed_on_exit,
    },
    Behaviour {
        name: "memory_as_docker_reads_it",
        hint: "--memory parsed as Docker parses it: 64m, 1.5g, 32Gb, 0 for no limit (book: Step 04 › The code)",
        since: 4,
        kind: Feature,
        check: memory_as_docker_reads_it,
    },
    Behaviour {
        name: "cpus_as_docker_reads_them",
        hint: "--cpus parsed as Docker's NanoCPUs, the quota rounded down (book: Step 04 › The code)",
        since: 4,
        kind: Feature,
        check: cpus_as_docker_reads_them,
    },
    Behaviour {
        name: "pids_limit_as_docker_reads_it",
        hint: "--pids-limit 0 or less means no limit (book: Step 04 › The code)",
        since: 4,
        kind: Feature,
        check: pids_limit_as_docker_reads_it,
    },
    Behaviour {
        name: "oom_of_another_process_is_a_warning",
        hint: "an OOM kill of another process than the first is a warning, and the status stays the command's (book: Step 04 › Out of memory)",
        since: 4,
        kind: Feature,
        check: oom_of_another_process_is_a_warning,
    },
    Behaviour {
        name: "sees_its_own_cgroup_as_the_root",
        hint: "/proc/self/cgroup shows the container's cgroup as the root: a cgroup namespace (book: Step 04 › The container's view: a cgroup namespace)",
        since: 4,
        kind: Feature,
        check: sees_its_own_cgroup_as_the_root,
    },
    Behaviour {
        name: "reads_its_limits_in_sys_fs_cgroup",
        hint: "the container's own cgroup is mounted read-only at /sys/fs/cgroup (book: Step 04 › The container's view: a cgroup namespace)",
        since: 4,
        kind: Feature,
        check: reads_its_limits_in_sys_fs_cgroup,
    },
    Behaviour {
        name: "removes_the_cgroup_a_dead_runtime_left",
        hint: "the next run removes the cgroup a kill -9'd runtime left (book: Step 04 › Cleaning up)",
        since: 4,
        kind: Feature,
        check: removes_the_cgroup_a_dead_runtime_left,
    },
    Behaviour {
        name: "rejects_bad_limits",
        hint: "bad --memory, --cpus or --pids-limit: exit 125 before anything is created (book: Step 04 › The code)",
        since: 4,
        kind: BadInput,
        check: rejects_bad_limits,
    },
];

/// Holds 64 MiB in the shell's own memory: a command substitution.
const HOLD_64_MIB: &str = r#"x=$(head -c 67108864 /dev/zero | tr '\0' a 2>/dev/null); echo ${#x}"#;

fn memory_limit_ends_in_oom_kill(ctx: &Ctx) -> Result<()> {
    let mut outcome = ctx.sh(&["--memory", "32m"], HOLD_64_MIB)?;
    // The OOM killer may take one of the shell's pipeline first (the shell
    // then says "Killed") before it takes the shell: the end is the same.
    while let Some(rest) = outcome.stderr.strip_prefix("Killed\n") {
        outcome.stderr = rest.to_owned();
    }
    expect_error(&outcome, 137, "out of memory")?;
    expect(&ctx.sh(&[], HOLD_64_MIB)?, 0, "67108864\n", "")
}

/// A subshell forks `sleep`s until fork fails; PID 1 then counts what is left.
fn pids_limit_stops_a_fork_loop(ctx: &Ctx) -> Result<()> {
    let script = r#"
        ( i=0; while [ $i -lt 20 ]; do sleep 1000 & i=$((i+1)); done )
        n=0; for p in /proc/[0-9]*; do n=$((n+1)); done; echo "$n""#;
    let outcome = ctx.sh(&["--pids-limit", "10"], script)?;
    let count: u32 = outcome.stdout.trim().parse().unwrap_or(0);
    ensure!(
        outcome.status == 0 && (2..=10).contains(&count) && outcome.stderr.contains("can't fork"),
        "expected the shell to see fork fail and at most 10 processes; got\n{outcome}"
    );
    Ok(())
}

/// Two seconds of a busy loop at --cpus 0.5 cost about one CPU-second, as
/// the container's cgroup itself counts it.
fn cpu_limit_throttles(ctx: &Ctx) -> Result<()> {
    // Busy for 200 centiseconds of wall time, by /proc/uptime, using shell
    // builtins only.
    let script = r#"
        read up _ < /proc/uptime; now=${up%.*}${up#*.}; end=$((now + 200))
        while [ $now -lt $end ]; do read up _ < /proc/uptime; now=${up%.*}${up#*.}; done
        echo done; read line || true"#;
    let mut running = ctx
        .run(&["--cpus", "0.5"], &["/bin/sh", "-c", script])
        .hold_stdin()
        .spawn()?;
    let shell = process_named(&running, "sh")?;
    running.wait_for_line("done")?;
    let used = cgroup::cpu_usage(shell)?;
    expect(&running.finish()?, 0, "done\n", "")?;
    let (low, high) = (Duration::from_millis(750), Duration::from_millis(1250));
    ensure!(
        (low..=high).contains(&used),
        "used {used:?} of CPU in 2 s at --cpus 0.5; expected 1 s ± 25%"
    );
    Ok(())
}

/// While it runs, the container is in cgroups of its own under the parent;
/// after it ends, not one of them is left, in any hierarchy.
fn cgroup_is_removed_on_exit(ctx: &Ctx) -> Result<()> {
    let mut running = ctx
        .run(&[], &["/bin/sh", "-c", "echo ready; read line || true"])
        .hold_stdin()
        .spawn()?;
    let shell = process_named(&running, "sh")?;
    running.wait_for_line("ready")?;
    let parent = format!("/{}/", ctx.cgroup.name);
    let own: Vec<_> = cgroup::dirs_of(shell)?
        .into_iter()
        .filter(|dir| dir.to_string_lossy().contains(&parent))
        .collect();
    ensure!(
        !own.is_empty(),
        "the container is in no cgroup under {parent}"
    );
    expect(&running.finish()?, 0, "ready\n", "")?;
    let left: Vec<_> = own.iter().filter(|dir| dir.exists()).collect();
    ensure!(
        left.is_empty(),
        "cgroups left after the container ended: {left:?}"
    );
    Ok(())
}

/// The limits the container's cgroups hold while it runs, read from the host.
fn limits_seen(ctx: &Ctx, options: &[&str]) -> Result<cgroup::Limits> {
    let mut running = ctx
        .run(options, &["/bin/sh", "-c", "echo ready; read line || true"])
        .hold_stdin()
        .spawn()?;
    if let Err(error) = running.wait_for_line("ready") {
        bail!("{error:#}\n{}", running.finish()?);
    }
    let limits = cgroup::limits_of(process_named(&running, "sh")?)?;
    expect(&running.finish()?, 0, "ready\n", "")?;
    Ok(limits)
}

/// go-units' RAMInBytes, as `docker run --memory` reads it: binary
/// multiples, a fraction, one space before the unit, "b" or "ib" after it;
/// `0` is no limit. (The kernel keeps whole pages of the limit.)
fn memory_as_docker_reads_it(ctx: &Ctx) -> Result<()> {
    let page = page_size();
    for (size, bytes) in [
        ("1.5g", Some(3 << 29)),
        ("64 m", Some(64 << 20)),
        ("64MiB", Some(64 << 20)),
        ("32Gb", Some(32 << 30)),
        ("1t", Some(1 << 40)),
        ("6291456", Some(6 << 20)),
        ("0", None),
    ] {
        let seen = limits_seen(ctx, &["--memory", size])?.memory;
        let expected = bytes.map(|bytes: u64| bytes / page * page);
        ensure!(
            seen == expected,
            "--memory {size}: the cgroup's memory limit is {seen:?}, expected {expected:?}"
        );
    }
    Ok(())
}

/// Docker's NanoCPUs: an exact decimal, and a CFS quota per 100 ms period
/// rounded down from it (0.123456789 is 12345.6789 µs); `0` is no limit.
fn cpus_as_docker_reads_them(ctx: &Ctx) -> Result<()> {
    for (cpus, quota) in [
        ("0.5", Some((50_000, 100_000))),
        ("0.123456789", Some((12_345, 100_000))),
        ("0.01", Some((1_000, 100_000))),
        ("1.0000000000", Some((100_000, 100_000))),
        ("0", None),
    ] {
        let seen = limits_seen(ctx, &["--cpus", cpus])?.cpu;
        ensure!(
            seen == quota,
            "--cpus {cpus}: the cgroup's CPU quota and period are {seen:?}, expected {quota:?}"
        );
    }
    Ok(())
}

/// `0` or less is no limit, as in Docker; the kernel's largest is allowed.
fn pids_limit_as_docker_reads_it(ctx: &Ctx) -> Result<()> {
    for (limit, expected) in [("0", None), ("-1", None), ("4194304", Some(4_194_304))] {
        let seen = limits_seen(ctx, &["--pids-limit", limit])?.pids;
        ensure!(
            seen == expected,
            "--pids-limit {limit}: the cgroup's pids.max is {seen:?}, expected {expected:?}"
        );
    }
    Ok(())
}

/// Refused while the command line is read: no cgroup, nothing under --root.
fn rejects_bad_limits(ctx: &Ctx) -> Result<()> {
    let online = online_cpus();
    let range = format!(
        "range of CPUs is from 0.01 to {online}.00, as there are only {online} CPUs available"
    );
    let above = (online + 1).to_string();
    for (option, value, mention) in [
        ("--memory", "10QB", "--memory"),
        ("--memory", "-1", "--memory"),
        ("--memory", "64 mb b", "--memory"),
        ("--memory", "1.5.1g", "--memory"),
        ("--memory", "6291455", "Minimum memory limit allowed is 6MB"),
        ("--memory", "99999999999999999999", "--memory"),
        ("--cpus", "half", "--cpus"),
        ("--cpus", "0.0000000001", "too precise"),
        ("--cpus", "0.001", &range),
        ("--cpus", "-1", &range),
        ("--cpus", &above, &range),
        ("--pids-limit", "abc", "--pids-limit"),
        ("--pids-limit", "4194305", "4194304"),
    ] {
        let outcome = ctx.run(&[option, value], &["true"]).output()?;
        expect_error(&outcome, 125, mention).with_context(|| format!("{option} {value}"))?;
        ensure!(
            !cgroup::parent_exists(&ctx.cgroup.name)?,
            "{option} {value}: a cgroup was created"
        );
        ctx.nothing_under_root()?;
    }
    Ok(())
}

fn online_cpus() -> u64 {
    sysconf(SysconfVar::_NPROCESSORS_ONLN)
        .ok()
        .flatten()
        .unwrap_or(1) as u64
}

fn page_size() -> u64 {
    sysconf(SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .unwrap_or(4096) as u64
}

/// The cgroup of a container whose runtime was killed with `kill -9` is
/// removed by the next runtime, with its folder under --root.
fn removes_the_cgroup_a_dead_runtime_left(ctx: &Ctx) -> Result<()> {
    kill_runtime_mid_run(ctx)?;
    let left = ctx.cgroup.leaves();
    ensure!(
        !left.is_empty(),
        "the dead runtime left no cgroup to remove"
    );
    expect(&ctx.run(&[], &["true"]).output()?, 0, "", "")?;
    let still: Vec<_> = left.iter().filter(|dir| dir.exists()).collect();
    ensure!(
        still.is_empty(),
        "cgroups left by the dead runtime: {still:?}"
    );
    ctx.nothing_under_root()
}

/// Status 137 is an out-of-memory kill of the container only when its first
/// process died of SIGKILL and the cgroup counted an OOM kill. A shell that
/// lost a subshell to the OOM killer and then exits 137 itself gets its
/// status and a warning; a plain `exit 137` gets nothing added.
fn oom_of_another_process_is_a_warning(ctx: &Ctx) -> Result<()> {
    // The subshell offers itself to the OOM killer first (raising one's
    // own oom_score_adj needs no privilege): the kernel otherwise weighs
    // PID 1 too, and took it once in a loaded run.
    let script = format!("( echo 1000 > /proc/self/oom_score_adj; {HOLD_64_MIB} ); exit $?");
    let outcome = ctx.sh(&["--memory", "32m"], &script)?;
    let last = outcome.stderr.lines().last().unwrap_or_default();
    ensure!(
        outcome.status == 137
            && outcome.stdout.is_empty()
            && last.starts_with("warning: the out-of-memory killer ended ")
            && last.ends_with(" in the container (limit 32 MiB)")
            && !outcome.stderr.contains("error:"),
        "expected status 137 and a warning naming the out-of-memory kill; got\n{outcome}"
    );
    expect(&ctx.sh(&["--memory", "32m"], "exit 137")?, 137, "", "")
}

/// Inside, the container's cgroup is the root of the cgroup tree it sees
/// (a cgroup namespace): /proc/self/cgroup names no host path, though the
/// host sees it in a cgroup under the parent.
fn sees_its_own_cgroup_as_the_root(ctx: &Ctx) -> Result<()> {
    let running = ctx
        .run(
            &[],
            &["/bin/sh", "-c", "cat /proc/self/cgroup; read line || true"],
        )
        .hold_stdin()
        .spawn()?;
    let shell = process_named(&running, "sh")?;
    let parent = format!("/{}/", ctx.cgroup.name);
    let placed = cgroup::dirs_of(shell)?
        .iter()
        .any(|dir| dir.to_string_lossy().contains(&parent));
    let outcome = running.finish()?;
    ensure!(placed, "the container is in no cgroup under {parent}");
    let paths: Vec<&str> = outcome
        .stdout
        .lines()
        .filter_map(|l| l.rsplit(':').next())
        .collect();
    ensure!(
        outcome.status == 0 && !paths.is_empty() && paths.iter().all(|path| *path == "/"),
        "expected every line of /proc/self/cgroup to end in \":/\"; got\n{outcome}"
    );
    Ok(())
}

/// Programs read their limits where Docker puts them: the container's own
/// cgroup, mounted read-only at /sys/fs/cgroup (v2: memory.max; v1: one
/// directory per hierarchy).
fn reads_its_limits_in_sys_fs_cgroup(ctx: &Ctx) -> Result<()> {
    let script = "cat /sys/fs/cgroup/memory.max 2>/dev/null \
        || cat /sys/fs/cgroup/memory/memory.limit_in_bytes; mkdir /sys/fs/cgroup/ferry";
    expect(
        &ctx.sh(&["--memory", "64m"], script)?,
        1,
        "67108864\n",
        "mkdir: can't create directory '/sys/fs/cgroup/ferry': Read-only file system\n",
    )
}
