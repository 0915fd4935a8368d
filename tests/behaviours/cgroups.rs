//! Step 04 behaviours: memory, CPU and process limits through cgroups, on
//! whatever layout the host has (v1, hybrid, or v2; `just test` also runs
//! these in a virtual machine booted once per layout: tests/vm.rs).

use std::time::Duration;

use anyhow::{Result, ensure};
use ferry_tests::cgroup;

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

fn rejects_bad_limits(ctx: &Ctx) -> Result<()> {
    for (option, value) in [
        ("--memory", "10QB"),
        ("--memory", "-1"),
        ("--cpus", "0"),
        ("--pids-limit", "abc"),
    ] {
        expect_error(&ctx.run(&[option, value], &["true"]).output()?, 125, option)?;
        ensure!(
            !cgroup::parent_exists(&ctx.cgroup.name)?,
            "{option} {value}: a cgroup was created"
        );
    }
    Ok(())
}
