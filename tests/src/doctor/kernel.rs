//! The kernel features the steps use, each tried for real by a probe
//! (`probe.rs`) in a child process, and the cgroup layout, read from the
//! mount table: no cgroup is created to find out.

use std::fs;

use nix::sys::statfs::{OVERLAYFS_SUPER_MAGIC, statfs};

use super::probe::Namespace;
use super::{DEADLINE, Finding, Machine};
use crate::cgroup::{self, Layout, Mount};
use crate::run::Run;
use crate::scratch::Scratch;

pub(super) fn check(machine: &Machine, report: &mut dyn FnMut(Finding)) {
    for kind in Namespace::ALL {
        report(namespace(machine, kind));
    }
    report(overlayfs(machine));
    let mounts = fs::read_to_string("/proc/self/mountinfo")
        .map(|text| cgroup::parse_mounts(&text))
        .unwrap_or_default();
    let layout = Layout::of(&mounts);
    report(cgroup_layout(layout, &mounts));
    report(cgroup_controllers(layout, &mounts));
    report(clone3(layout));
    report(veth(machine));
    report(nftables(machine));
}

/// Runs `ferry-lab probe ARGS` (this same program) to its end: Err holds
/// its one-line error.
fn probe(args: &[String]) -> Result<(), String> {
    let program = std::env::current_exe().map_err(|error| format!("find ferry-lab: {error}"))?;
    let outcome = Run::new(program)
        .args(["probe"])
        .args(args)
        .deadline(DEADLINE)
        .output()
        .map_err(|error| format!("{error:#}"))?;
    if outcome.status == 0 {
        return Ok(());
    }
    let error = outcome.stderr.lines().last().unwrap_or_default();
    Err(match error.strip_prefix("error: ") {
        Some(error) => error.to_owned(),
        None => format!("the probe ended with status {}: {error}", outcome.status),
    })
}

const NEEDS_ROOT: &str = "not probed: it needs root (see the root check)";

fn namespace(machine: &Machine, kind: Namespace) -> Finding {
    let (check, config) = match kind {
        Namespace::Pid => ("pid namespace", "CONFIG_PID_NS"),
        Namespace::Uts => ("uts namespace", "CONFIG_UTS_NS"),
        Namespace::Ipc => ("ipc namespace", "CONFIG_IPC_NS"),
        Namespace::Mnt => ("mount namespace", "CONFIG_NAMESPACES"),
        Namespace::Cgroup => ("cgroup namespace", "CONFIG_CGROUPS"),
        Namespace::Net => ("network namespace", "CONFIG_NET_NS"),
    };
    if !machine.root {
        return Finding::fail(check, NEEDS_ROOT);
    }
    match probe(&["namespace".into(), kind.argument()]) {
        Ok(()) if kind == Namespace::Pid => Finding::ok(
            check,
            "unshare(CLONE_NEWPID) works, and the first process in it is pid 1",
        ),
        Ok(()) => Finding::ok(check, format!("unshare({}) works", kind.flag_name())),
        Err(error) => Finding::fail(
            check,
            format!(
                "{error}; the kernel lacks it ({config}), or this is a container that \
                 forbids it: run the container with --privileged"
            ),
        ),
    }
}

fn overlayfs(machine: &Machine) -> Finding {
    const CHECK: &str = "overlayfs";
    if !machine.root {
        return Finding::fail(CHECK, NEEDS_ROOT);
    }
    // Under target/, where the lab keeps its containers' layers.
    let scratch = match Scratch::new("doctor") {
        Ok(scratch) => scratch,
        Err(error) => return Finding::fail(CHECK, format!("{error:#}")),
    };
    let on_overlay =
        statfs(scratch.path()).is_ok_and(|fs| fs.filesystem_type() == OVERLAYFS_SUPER_MAGIC);
    let dir = scratch.path().display().to_string();
    match probe(&["overlay".into(), dir]) {
        Ok(()) => Finding::ok(
            CHECK,
            "an overlay mounted under target/, in a private mount namespace, \
             shows its lower layer and writes to its upper one",
        ),
        Err(error) if on_overlay => Finding::fail(
            CHECK,
            format!(
                "{error}; target/ is itself on overlayfs (inside a container?), and an \
                 overlay's upper dir cannot be: keep the workspace on another filesystem \
                 (a volume)"
            ),
        ),
        Err(error) => Finding::fail(
            CHECK,
            format!("{error}; the kernel needs overlayfs (CONFIG_OVERLAY_FS, `modprobe overlay`)"),
        ),
    }
}

/// The controllers step 04 limits; v1 also needs cpuacct, which counts the
/// CPU time (v2's cpu controller does both).
const V2_CONTROLLERS: [&str; 3] = ["memory", "cpu", "pids"];
const V1_CONTROLLERS: [&str; 4] = ["memory", "cpu", "cpuacct", "pids"];

const V2_ROOT: &str = "/sys/fs/cgroup";

fn cgroup_layout(layout: Option<Layout>, mounts: &[Mount]) -> Finding {
    const CHECK: &str = "cgroups";
    let Some(layout) = layout else {
        return Finding::fail(
            CHECK,
            "no cgroup filesystem is mounted: mount cgroup v2 at /sys/fs/cgroup \
             (`mount -t cgroup2 cgroup2 /sys/fs/cgroup`), as systemd does at boot",
        );
    };
    let name = layout.name();
    match layout {
        Layout::Unified
            if mounts
                .iter()
                .any(|m| m.v2 && m.read_only && m.point.as_os_str() == V2_ROOT) =>
        {
            Finding::fail(
                CHECK,
                format!(
                    "{name}, but mounted read-only (a container started without \
                 --privileged): run it with --privileged"
                ),
            )
        }
        Layout::Unified => {
            let enabled =
                fs::read_to_string(format!("{V2_ROOT}/cgroup.subtree_control")).unwrap_or_default();
            let missing: Vec<&str> = V2_CONTROLLERS
                .into_iter()
                .filter(|c| !enabled.split_whitespace().any(|e| e == *c))
                .collect();
            if missing.is_empty() {
                Finding::ok(
                    CHECK,
                    format!("{name}; the root enables memory, cpu and pids"),
                )
            } else {
                Finding::ok(
                    CHECK,
                    format!(
                        "{name}, without {} enabled at the root (no systemd?): \
                         fine, step 04 enables them itself",
                        missing.join(", ")
                    ),
                )
            }
        }
        Layout::Hybrid | Layout::Legacy => Finding::ok(
            CHECK,
            format!("{name}: step 04 uses the v1 hierarchies here"),
        ),
    }
}

fn cgroup_controllers(layout: Option<Layout>, mounts: &[Mount]) -> Finding {
    const CHECK: &str = "cgroup controllers";
    let Some(layout) = layout else {
        return Finding::fail(CHECK, "none: no cgroup filesystem is mounted (see above)");
    };
    let v2_controllers =
        fs::read_to_string(format!("{V2_ROOT}/cgroup.controllers")).unwrap_or_default();
    let proc_cgroups = fs::read_to_string("/proc/cgroups").unwrap_or_default();
    let unusable = unusable_controllers(layout, mounts, &v2_controllers, &proc_cgroups);
    if unusable.is_empty() {
        return match layout {
            Layout::Unified => {
                Finding::ok(CHECK, "memory, cpu and pids are offered at /sys/fs/cgroup")
            }
            _ => Finding::ok(
                CHECK,
                "memory, cpu, cpuacct and pids each have a writable v1 hierarchy",
            ),
        };
    }
    let problems: Vec<String> = unusable
        .iter()
        .map(|(controller, why)| format!("{controller}: {why}"))
        .collect();
    Finding::fail(CHECK, problems.join("; "))
}

/// Each controller step 04 needs that it cannot use here, and why, with
/// what to do.
fn unusable_controllers(
    layout: Layout,
    mounts: &[Mount],
    v2_controllers: &str,
    proc_cgroups: &str,
) -> Vec<(&'static str, String)> {
    let in_v1 = |controller: &str| {
        mounts
            .iter()
            .find(|m| !m.v2 && m.options.iter().any(|o| o == controller))
    };
    let wanted: &[&'static str] = match layout {
        Layout::Unified => &V2_CONTROLLERS,
        Layout::Hybrid | Layout::Legacy => &V1_CONTROLLERS,
    };
    let mut unusable = Vec::new();
    for &controller in wanted {
        let why = match (layout, in_v1(controller)) {
            (Layout::Unified, _) if v2_controllers.split_whitespace().any(|c| c == controller) => {
                continue;
            }
            (Layout::Hybrid | Layout::Legacy, Some(mount)) if !mount.read_only => continue,
            (Layout::Hybrid | Layout::Legacy, Some(mount)) => format!(
                "its hierarchy {} is mounted read-only (a container without --privileged?)",
                mount.point.display()
            ),
            (_, held) => match enabled_at_boot(proc_cgroups, controller) {
                None => "this kernel is built without it".to_owned(),
                Some(false) => format!(
                    "disabled at boot: remove cgroup_disable={controller} from the \
                     kernel command line"
                ),
                Some(true) if layout != Layout::Unified => format!(
                    "no v1 hierarchy holds it: mount one \
                     (`mount -t cgroup -o {controller} cgroup /sys/fs/cgroup/{controller}`)"
                ),
                Some(true) if held.is_some() => "a v1 hierarchy holds it, so v2 cannot: \
                     unmount that hierarchy, or boot with systemd.unified_cgroup_hierarchy=1"
                    .to_owned(),
                Some(true) => "not offered at /sys/fs/cgroup (in a container, the host \
                     must delegate it)"
                    .to_owned(),
            },
        };
        unusable.push((controller, why));
    }
    unusable
}

/// Whether /proc/cgroups says the kernel has `controller` enabled (its
/// last column); None if it does not list it.
fn enabled_at_boot(proc_cgroups: &str, controller: &str) -> Option<bool> {
    proc_cgroups
        .lines()
        .filter(|line| !line.starts_with('#'))
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .find(|fields| fields.first() == Some(&controller))
        .map(|fields| fields.last() == Some(&"1"))
}

/// The first release that can start a child in a cgroup (clone3's
/// CLONE_INTO_CGROUP).
const CLONE_INTO_CGROUP_SINCE: (u64, u64, u64) = (5, 7, 0);

fn clone3(layout: Option<Layout>) -> Finding {
    const CHECK: &str = "clone3";
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let release = release.trim();
    let into_cgroup =
        super::tools::version_in(release).is_some_and(|v| v >= CLONE_INTO_CGROUP_SINCE);
    let (problem, found) = match probe(&["clone3".into()]) {
        Err(error) => (
            true,
            format!("{error}: no clone3 here (Linux before 5.3, or a seccomp filter)"),
        ),
        Ok(()) if into_cgroup => (
            false,
            format!(
                "clone3 is there, and Linux {release} is 5.7 or newer, so it has \
                 CLONE_INTO_CGROUP (the version stands for it: trying it would take a \
                 cgroup of its own)"
            ),
        ),
        Ok(()) => (
            true,
            format!("Linux {release} has clone3 but not CLONE_INTO_CGROUP (5.7)"),
        ),
    };
    match (problem, layout) {
        (false, _) => Finding::ok(CHECK, found),
        (true, Some(Layout::Unified)) => Finding::warn(
            CHECK,
            format!(
                "{found}; step 04 falls back to clone(2), and the child moves itself \
                 into its cgroup, which only starts it a little later"
            ),
        ),
        (true, _) => Finding::ok(
            CHECK,
            format!("{found}; step 04 needs it only on cgroup v2"),
        ),
    }
}

fn veth(machine: &Machine) -> Finding {
    const CHECK: &str = "veth";
    if !machine.root {
        return Finding::fail(CHECK, NEEDS_ROOT);
    }
    let Some(ip) = machine.find_for_root("ip") else {
        return Finding::fail(CHECK, "not probed: it needs `ip` (see iproute2 below)");
    };
    // The probe runs `ip -batch`: any other `ip` (BusyBox's) would fail it,
    // and this line would blame the kernel for what the tool lacks.
    if let Some(Err(_)) = super::tools::iproute2_version(machine) {
        return Finding::fail(
            CHECK,
            format!(
                "not probed: {} does not answer as iproute2's `ip`, which the probe needs \
                 (see iproute2 below)",
                ip.display()
            ),
        );
    }
    match probe(&["veth".into(), ip.display().to_string()]) {
        Ok(()) => Finding::ok(
            CHECK,
            "a veth pair and a bridge, made in a network namespace of the probe's own, \
             gone with it",
        ),
        Err(error) => Finding::fail(
            CHECK,
            format!(
                "{error}; step 05 needs veth and bridge in the kernel \
                 (CONFIG_VETH, CONFIG_BRIDGE; `modprobe veth bridge`)"
            ),
        ),
    }
}

fn nftables(machine: &Machine) -> Finding {
    const CHECK: &str = "nftables";
    if !machine.root {
        return Finding::fail(CHECK, NEEDS_ROOT);
    }
    let nft = machine.find_for_root("nft");
    let mut args = vec!["nftables".to_owned()];
    if let Some(nft) = &nft {
        args.extend(["--nft".to_owned(), nft.display().to_string()]);
    }
    match (probe(&args), nft) {
        (Ok(()), Some(_)) => Finding::ok(
            CHECK,
            "nf_tables answers, and nft made a NAT table with masquerade, in a network \
             namespace of the probe's own",
        ),
        (Ok(()), None) => Finding::ok(
            CHECK,
            "the kernel's nf_tables answers over netlink, in a network namespace of the \
             probe's own; the `nft` command is not installed (`apt-get install nftables` \
             shows the rules step 05 makes)",
        ),
        (Err(error), _) => Finding::fail(
            CHECK,
            format!(
                "{error}; step 05 needs nf_tables with NAT in the kernel (CONFIG_NF_TABLES, \
                 CONFIG_NFT_NAT, CONFIG_NFT_MASQ; `modprobe nf_tables`)"
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROC_CGROUPS: &str = "\
#subsys_name\thierarchy\tnum_cgroups\tenabled
cpu\t1\t4\t1
cpuacct\t2\t4\t1
memory\t0\t1\t0
pids\t8\t4\t1
";

    fn v1(point: &str, controllers: &[&str], read_only: bool) -> Mount {
        Mount {
            point: point.into(),
            v2: false,
            options: controllers.iter().map(|c| c.to_string()).collect(),
            read_only,
        }
    }

    #[test]
    fn v2_controllers_are_those_the_root_offers() {
        let mounts = [Mount {
            point: V2_ROOT.into(),
            v2: true,
            options: vec!["rw".into()],
            read_only: false,
        }];
        let unusable = unusable_controllers(Layout::Unified, &mounts, "cpu pids io", PROC_CGROUPS);
        assert_eq!(unusable.len(), 1);
        assert_eq!(unusable[0].0, "memory");
        assert!(
            unusable[0].1.contains("cgroup_disable=memory"),
            "{unusable:?}"
        );
        assert!(unusable_controllers(Layout::Unified, &mounts, "memory cpu pids", "").is_empty());
    }

    #[test]
    fn v1_controllers_need_a_writable_hierarchy_each() {
        let mounts = [
            v1(
                "/sys/fs/cgroup/cpu,cpuacct",
                &["rw", "cpu", "cpuacct"],
                false,
            ),
            v1("/sys/fs/cgroup/memory", &["rw", "memory"], true),
        ];
        let unusable = unusable_controllers(Layout::Hybrid, &mounts, "", PROC_CGROUPS);
        let names: Vec<&str> = unusable.iter().map(|(c, _)| *c).collect();
        assert_eq!(names, ["memory", "pids"]);
        assert!(unusable[0].1.contains("read-only"));
        assert!(unusable[1].1.contains("no v1 hierarchy"), "{unusable:?}");
    }

    #[test]
    fn proc_cgroups_tells_disabled_from_missing() {
        assert_eq!(enabled_at_boot(PROC_CGROUPS, "cpu"), Some(true));
        assert_eq!(enabled_at_boot(PROC_CGROUPS, "memory"), Some(false));
        assert_eq!(enabled_at_boot(PROC_CGROUPS, "rdma"), None);
    }
}
