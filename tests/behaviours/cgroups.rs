//! Step 04 behaviours: memory, CPU and process limits through cgroups, on
//! whatever layout the host has (v1, hybrid, or v2; `just test` also runs
//! these in a virtual machine with a cgroup v2 kernel).

use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use ferry_tests::cgroup;
use nix::unistd::{SysconfVar, sysconf};

use crate::check::{Ctx, expect, expect_error, process_named};
use crate::{Behaviour, Kind::Feature, Kind::RejectedBefore};

pub const BEHAVIOURS: &[Behaviour] = &[
    Behaviour {
        name: "memory_limit_ends_in_oom_kill",
        since: 4,
        kind: Feature,
        check: memory_limit_ends_in_oom_kill,
    },
    Behaviour {
        name: "pids_limit_stops_a_fork_loop",
        since: 4,
        kind: Feature,
        check: pids_limit_stops_a_fork_loop,
    },
    Behaviour {
        name: "cpu_limit_throttles",
        since: 4,
        kind: Feature,
        check: cpu_limit_throttles,
    },
    Behaviour {
        name: "cgroup_is_removed_on_exit",
        since: 4,
        kind: Feature,
        check: cgroup_is_removed_on_exit,
    },
    Behaviour {
        name: "memory_as_docker_reads_it",
        since: 4,
        kind: Feature,
        check: memory_as_docker_reads_it,
    },
    Behaviour {
        name: "cpus_as_docker_reads_them",
        since: 4,
        kind: Feature,
        check: cpus_as_docker_reads_them,
    },
    Behaviour {
        name: "pids_limit_as_docker_reads_it",
        since: 4,
        kind: Feature,
        check: pids_limit_as_docker_reads_it,
    },
    Behaviour {
        name: "rejects_bad_limits",
        since: 4,
        kind: RejectedBefore,
        check: rejects_bad_limits,
    },
];

/// Holds 64 MiB in the shell's own memory: a command substitution.
const HOLD_64_MIB: &str = r#"x=$(head -c 67108864 /dev/zero | tr '\0' a 2>/dev/null); echo ${#x}"#;

fn memory_limit_ends_in_oom_kill(ctx: &Ctx) -> Result<()> {
    let outcome = ctx.sh(&["--memory", "32m"], HOLD_64_MIB)?;
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
