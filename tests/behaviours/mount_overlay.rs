//! Step 03 behaviours: an overlay root of the container's own, pivot_root,
//! and a minimal /dev, /proc and /sys; nothing left behind.

use std::fs;

use anyhow::{Result, ensure};
use ferry_tests::scratch::Scratch;
use ferry_tests::{host, rootfs};
use nix::sys::signal::Signal;

use crate::check::{
    Ctx, HostMarker, expect, expect_error, kill_runtime_mid_run, leaves_mounts_alone, listing,
    process_named, same_tree, snapshot,
};
use crate::{Behaviour, Kind::BadInput, Kind::Feature};

pub const BEHAVIOURS: &[Behaviour] = &[
    Behaviour {
        name: "writes_leave_rootfs_unchanged",
        hint: "writes land in an overlay's upper layer, and ROOTFS stays as it was (book: Step 03 › Overlay: one writable layer on a read-only image)",
        since: 3,
        kind: Feature,
        check: writes_leave_rootfs_unchanged,
    },
    Behaviour {
        name: "containers_do_not_share_writes",
        hint: "two containers of one ROOTFS each have a writable layer of their own (book: Step 03 › Overlay: one writable layer on a read-only image)",
        since: 3,
        kind: Feature,
        check: containers_do_not_share_writes,
    },
    Behaviour {
        name: "writable_layer_lives_under_root",
        hint: "the upper layer lives under --root while the container runs, and is removed after (book: Step 03 › The code)",
        since: 3,
        kind: Feature,
        check: writable_layer_lives_under_root,
    },
    Behaviour {
        name: "chroot_escape_stays_inside",
        hint: "chapter 1's breakout reaches only the container's root: pivot_root(2) and a detached old root (book: Step 03 › pivot_root: a new root, and the old one gone)",
        since: 3,
        kind: Feature,
        check: chroot_escape_stays_inside,
    },
    Behaviour {
        name: "mount_table_is_its_own",
        hint: "inside, the overlay is / and no host mount is visible; the host's table is unchanged (book: Step 03 › pivot_root: a new root, and the old one gone)",
        since: 3,
        kind: Feature,
        check: mount_table_is_its_own,
    },
    Behaviour {
        name: "dev_holds_only_minimal_devices",
        hint: "/dev is a tmpfs with null, zero, full, random, urandom, tty and a devpts of its own (book: Step 03 › The code)",
        since: 3,
        kind: Feature,
        check: dev_holds_only_minimal_devices,
    },
    Behaviour {
        name: "sys_is_read_only",
        hint: "/sys is mounted, read-only (book: Step 03 › The code)",
        since: 3,
        kind: Feature,
        check: sys_is_read_only,
    },
    Behaviour {
        name: "removes_what_a_dead_runtime_left",
        hint: "the next run removes the folder a kill -9'd runtime left under --root, told dead by its lock (book: Step 03 › The code)",
        since: 3,
        kind: Feature,
        check: removes_what_a_dead_runtime_left,
    },
    Behaviour {
        name: "paths_may_hold_overlay_separators",
        hint: "',' ':' and '\\' in ROOTFS or --root are escaped in the overlay's options (book: Step 03 › The code)",
        since: 3,
        kind: Feature,
        check: paths_may_hold_overlay_separators,
    },
    Behaviour {
        name: "rejects_rootfs_overlay_cannot_stack_on",
        hint: "a ROOTFS overlayfs cannot stack on (procfs): exit 125, a clear error, nothing left (book: Step 03 › Try it)",
        since: 3,
        kind: Feature,
        check: rejects_rootfs_overlay_cannot_stack_on,
    },
    Behaviour {
        name: "rejects_unwritable_root",
        hint: "a --root that cannot be created: exit 125, a clear error (book: Step 03 › Try it)",
        since: 3,
        kind: BadInput,
        check: rejects_unwritable_root,
    },
    Behaviour {
        name: "rejects_root_inside_rootfs",
        hint: "a --root inside ROOTFS: exit 125, a clear error (book: Step 03 › Try it)",
        since: 3,
        kind: BadInput,
        check: rejects_root_inside_rootfs,
    },
    Behaviour {
        name: "rejects_root_through_a_symlink_into_rootfs",
        hint: "a --root that leads into ROOTFS through a symlink: refused before anything is created (book: Step 03 › Try it)",
        since: 3,
        kind: BadInput,
        check: rejects_root_through_a_symlink_into_rootfs,
    },
];

/// Created, changed, deleted, chmod'ed: ROOTFS stays the same, byte for byte.
fn writes_leave_rootfs_unchanged(ctx: &Ctx) -> Result<()> {
    let before = snapshot(&ctx.rootfs)?;
    let script = "echo new > /new-file && mkdir /new-dir && echo more >> /etc/passwd && rm /etc/hosts \
                  && rm -r /usr/sbin && chmod 600 /etc/group && echo done";
    let outcome = ctx.run(&[], &["/bin/sh", "-c", script]).output()?;
    expect(&outcome, 0, "done\n", "")?;
    same_tree(&before, &snapshot(&ctx.rootfs)?)
}

/// Two containers from one ROOTFS at the same time each see their own files.
fn containers_do_not_share_writes(ctx: &Ctx) -> Result<()> {
    let first_script = "echo first > /shared; echo ready; read line; cat /shared";
    let mut first = ctx
        .run(&[], &["/bin/sh", "-c", first_script])
        .hold_stdin()
        .spawn()?;
    first.wait_for_line("ready")?;
    let second_script =
        "cat /shared 2>/dev/null || echo absent; echo second > /shared; cat /shared";
    let second = ctx.run(&[], &["/bin/sh", "-c", second_script]).output()?;
    expect(&second, 0, "absent\nsecond\n", "")?;
    expect(&first.finish()?, 0, "ready\nfirst\n", "")?;
    ensure!(
        !ctx.rootfs.join("shared").exists(),
        "a container wrote /shared into ROOTFS"
    );
    Ok(())
}

/// While the container runs, what it writes is a file under --root; when it
/// ends, normally or killed, nothing it created is left there.
fn writable_layer_lives_under_root(ctx: &Ctx) -> Result<()> {
    let mut running = ctx
        .run(
            &[],
            &[
                "/bin/sh",
                "-c",
                "echo hello > /greeting; echo ready; exec sleep 1000",
            ],
        )
        .spawn()?;
    running.wait_for_line("ready")?;
    let written = snapshot(ctx.state.path())?
        .into_iter()
        .any(|(path, (_, bytes))| path.ends_with("greeting") && bytes == b"hello\n");
    ensure!(
        written,
        "no file `greeting` holding \"hello\" under --root while the container runs"
    );
    host::signal(process_named(&running, "sleep")?, Signal::SIGKILL)?;
    expect(&running.finish()?, 137, "ready\n", "")?;
    ctx.nothing_under_root()?;
    expect(&ctx.sh(&[], "exit 3")?, 3, "", "")?;
    expect_error(
        &ctx.run(&[], &["/bin/no-such-command"]).output()?,
        127,
        "no-such-command",
    )?;
    ctx.nothing_under_root()?;
    Ok(())
}

/// Chapter 1's breakout climbs only to the container's own root now.
fn chroot_escape_stays_inside(ctx: &Ctx) -> Result<()> {
    let marker = HostMarker::new()?;
    let outcome = ctx
        .run(&[], &["breakout", "/bin/sh", "-c", &marker.probe()])
        .output()?;
    ensure!(
        outcome.status == 0
            && outcome.stdout
                == "hidden
",
        "the breakout reached the host:
{outcome}"
    );
    Ok(())
}

/// Inside: the overlay as "/" and the container's own mounts, nothing of
/// the host's. Outside: the host's mount table, before, during and after.
fn mount_table_is_its_own(ctx: &Ctx) -> Result<()> {
    let script = "cut -d ' ' -f 2,3 /proc/self/mounts; echo ready; read line || true";
    let before = host::mount_table()?;
    let mut running = ctx
        .run(&[], &["/bin/sh", "-c", script])
        .hold_stdin()
        .spawn()?;
    running.wait_for_line("ready")?;
    ensure!(
        host::mount_table()? == before,
        "the host's mount table changed while the container runs"
    );
    let outcome = running.finish()?;
    ensure!(
        host::mount_table()? == before,
        "the host's mount table changed after the container ran"
    );
    ensure!(outcome.status == 0, "the container failed:\n{outcome}");
    let mut mounts: Vec<&str> = outcome
        .stdout
        .lines()
        .filter(|line| *line != "ready")
        // From step 04, the container's cgroups (its own behaviour checks them).
        .filter(|line| !line.starts_with("/sys/fs/cgroup"))
        .collect();
    mounts.sort();
    let expected = [
        "/ overlay",
        "/dev tmpfs",
        "/dev/pts devpts",
        "/dev/shm tmpfs",
        "/proc proc",
        "/sys sysfs",
    ];
    ensure!(
        mounts == expected,
        "the container's mounts are {mounts:?}, expected {expected:?}"
    );
    Ok(())
}

/// /dev is a tmpfs with only the devices every program expects, and a
/// devpts of its own: none of the host's disks or terminals.
fn dev_holds_only_minimal_devices(ctx: &Ctx) -> Result<()> {
    let script = r#"
        for f in /dev/* /dev/pts/*; do
            if [ -L "$f" ]; then continue; fi
            if [ -c "$f" ]; then echo "char $f"; elif [ -b "$f" ]; then echo "block $f";
            elif [ -d "$f" ]; then echo "dir $f"; else echo "other $f"; fi
        done
        [ -c /dev/ptmx ] && echo "ptmx opens"
        echo data > /dev/null && head -c 3 /dev/zero | wc -c"#;
    let expected = "char /dev/full\nchar /dev/null\ndir /dev/pts\nchar /dev/random\ndir /dev/shm\nchar /dev/tty\n\
                    char /dev/urandom\nchar /dev/zero\nchar /dev/pts/ptmx\nptmx opens\n3\n";
    expect(&ctx.sh(&[], script)?, 0, expected, "")
}

fn sys_is_read_only(ctx: &Ctx) -> Result<()> {
    let outcome = ctx.run(&[], &["touch", "/sys/ferry-test"]).output()?;
    expect(
        &outcome,
        1,
        "",
        "touch: /sys/ferry-test: Read-only file system\n",
    )
}

/// overlayfs's mount options use ',' between options and ':' between lower
/// layers: a ROOTFS and a --root whose names hold them (and the '\\' that
/// escapes them) work like any other.
fn paths_may_hold_overlay_separators(ctx: &Ctx) -> Result<()> {
    let odd = Scratch::new("odd")?;
    let (rootfs, root) = (odd.join(r"root:fs,a\b"), odd.join(r"state:b,c\d"));
    rootfs::copy(&ctx.rootfs, &rootfs)?;
    let root = root.to_str().expect("scratch paths are UTF-8");
    let outcome = leaves_mounts_alone(|| {
        ctx.run_with_rootfs(
            &rootfs,
            &["--root", root],
            &["/bin/sh", "-c", "echo hi > /new; cat /new"],
        )
        .output()
    })?;
    expect(&outcome, 0, "hi\n", "")?;
    ensure!(
        !rootfs.join("new").exists(),
        "the container wrote into ROOTFS"
    );
    let left = listing(root.as_ref())?;
    ensure!(left.is_empty(), "left under --root: {left}");
    Ok(())
}

/// procfs cannot be an overlay's lower layer: a clear error, and nothing
/// mounted or left under --root.
fn rejects_rootfs_overlay_cannot_stack_on(ctx: &Ctx) -> Result<()> {
    let outcome = leaves_mounts_alone(|| {
        ctx.run_with_rootfs("/proc".as_ref(), &[], &["true"])
            .output()
    })?;
    expect_error(&outcome, 125, "overlay")?;
    ctx.nothing_under_root()?;
    Ok(())
}

/// Nothing may be created under /sys, not even by root.
fn rejects_unwritable_root(ctx: &Ctx) -> Result<()> {
    let root = "/sys/ferry-test-root";
    let outcome = leaves_mounts_alone(|| ctx.run(&["--root", root], &["true"]).output())?;
    expect_error(&outcome, 125, root)
}

fn rejects_root_inside_rootfs(ctx: &Ctx) -> Result<()> {
    let before = snapshot(&ctx.rootfs)?;
    let root = ctx.rootfs.join("state");
    let root = root.to_str().expect("scratch paths are UTF-8");
    let outcome = leaves_mounts_alone(|| ctx.run(&["--root", root], &["true"]).output())?;
    expect_error(&outcome, 125, "inside")?;
    same_tree(&before, &snapshot(&ctx.rootfs)?)
}

/// `--root LINK/state`, where LINK points into ROOTFS, also reached through
/// a directory that does not exist yet and `..`: refused before anything is
/// created, so ROOTFS gains no `state` directory.
fn rejects_root_through_a_symlink_into_rootfs(ctx: &Ctx) -> Result<()> {
    let links = Scratch::new("links")?;
    std::os::unix::fs::symlink(&ctx.rootfs, links.join("link"))?;
    let before = snapshot(&ctx.rootfs)?;
    for root in ["link/state", "missing/../link/state"] {
        let root = links.join(root);
        let root = root.to_str().expect("scratch paths are UTF-8");
        let outcome = leaves_mounts_alone(|| ctx.run(&["--root", root], &["true"]).output())?;
        expect_error(&outcome, 125, "inside")?;
        same_tree(&before, &snapshot(&ctx.rootfs)?)?;
    }
    Ok(())
}

/// A runtime killed with `kill -9` cleans up nothing; the next one to run
/// removes the folder it left under --root, and only that.
fn removes_what_a_dead_runtime_left(ctx: &Ctx) -> Result<()> {
    let other = ctx.state.join("not-a-container");
    fs::create_dir(&other)?;
    kill_runtime_mid_run(ctx)?;
    let left = listing(ctx.state.path())?;
    ensure!(
        left.lines().count() == 2,
        "expected the dead runtime's folder beside not-a-container, found:\n{left}"
    );
    expect(&ctx.run(&[], &["true"]).output()?, 0, "", "")?;
    ensure!(
        listing(ctx.state.path())? == "not-a-container\n",
        "left under --root: {}",
        listing(ctx.state.path())?
    );
    fs::remove_dir(&other)?;
    Ok(())
}
