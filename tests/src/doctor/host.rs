//! The machine around the kernel: who runs the doctor, what kind of machine
//! this is, what the firewall does with forwarded traffic, and disk space.

use std::fs;
use std::path::Path;

use nix::sys::statvfs::statvfs;

use super::{Finding, Machine, first_line};
use crate::{target_dir, workspace};

pub(super) fn root(machine: &Machine) -> Finding {
    const CHECK: &str = "root";
    match (&machine.sudo_user, machine.root) {
        (Some(user), true) => Finding::ok(
            CHECK,
            format!(
                "root through sudo, for {}: the recipes use sudo for what needs root",
                user.name
            ),
        ),
        (None, true) => Finding::ok(CHECK, "running as root"),
        _ if machine.find_for_root("sudo").is_some() => Finding::warn(
            CHECK,
            "not root, so the kernel is not probed; sudo is there, and the recipes use \
             it: check that `sudo true` works, then run `just doctor`, which uses it too",
        ),
        _ => Finding::fail(
            CHECK,
            "not root, and no sudo: work as root (`su -`), or install sudo and add \
             yourself to the sudo group",
        ),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wsl {
    /// WSL 1 translates Linux system calls for Windows: no namespaces, no cgroups.
    One,
    /// WSL 2 runs a real Linux kernel in a light virtual machine.
    Two,
}

/// WSL, from /proc/version: WSL 2's kernels are `…-microsoft-standard-WSL2`
/// (`…-microsoft-standard` before 5.10), WSL 1 reports `…-Microsoft`.
fn wsl(proc_version: &str) -> Option<Wsl> {
    if proc_version.contains("microsoft-standard") || proc_version.contains("WSL2") {
        Some(Wsl::Two)
    } else if proc_version.to_lowercase().contains("microsoft") {
        Some(Wsl::One)
    } else {
        None
    }
}

/// What systemd-detect-virt calls containers; anything else it names is a
/// virtual machine.
const CONTAINERS: [&str; 10] = [
    "docker",
    "podman",
    "lxc",
    "lxc-libvirt",
    "systemd-nspawn",
    "rkt",
    "openvz",
    "proot",
    "pouch",
    "wsl",
];

pub(super) fn machine(machine: &Machine) -> Finding {
    const CHECK: &str = "machine";
    let proc_version = fs::read_to_string("/proc/version").unwrap_or_default();
    match wsl(&proc_version) {
        Some(Wsl::Two) => {
            return Finding::ok(
                CHECK,
                "WSL 2: since WSL 1.1.5 it boots with cgroup v2 only, and systemd may \
                 be off (step 04 copes with both); everything in the workshop works in \
                 a WSL 2 distro, as root",
            );
        }
        Some(Wsl::One) => {
            return Finding::fail(
                CHECK,
                "WSL 1, which has no Linux kernel, so no namespaces and no cgroups: \
                 convert the distro to WSL 2 (`wsl --set-version <distro> 2` in Windows)",
            );
        }
        None => {}
    }
    let detected = machine
        .run_as_root("systemd-detect-virt", &[])
        .and_then(Result::ok)
        .map(|outcome| first_line(&outcome).to_owned())
        .filter(|name| !name.is_empty());
    match detected.as_deref() {
        Some("none") => Finding::ok(
            CHECK,
            "no virtual machine or container (systemd-detect-virt)",
        ),
        Some(name) if CONTAINERS.contains(&name) => Finding::ok(
            CHECK,
            format!(
                "inside a {name} container (systemd-detect-virt): the workshop needs it \
                 privileged (`--privileged`), with the workspace not on overlayfs; the \
                 kernel checks say whether this one is"
            ),
        ),
        Some(name) => Finding::ok(
            CHECK,
            format!("a {name} virtual machine (systemd-detect-virt): fine, with root"),
        ),
        None => match fs::read_to_string("/sys/class/dmi/id/product_name") {
            Ok(product) if !product.trim().is_empty() => {
                Finding::ok(CHECK, format!("product name {:?} (DMI)", product.trim()))
            }
            _ => Finding::ok(
                CHECK,
                "not identified (no systemd-detect-virt, no DMI product name)",
            ),
        },
    }
}

/// iptables' FORWARD policy, as `iptables -S FORWARD` prints it first.
fn iptables_drops_forwarding(rules: &str) -> bool {
    rules.lines().any(|line| line.trim() == "-P FORWARD DROP")
}

/// A chain on nftables' forward hook whose policy is drop, as
/// `nft list ruleset` prints it:
/// `type filter hook forward priority filter; policy drop;`.
fn nft_drops_forwarding(ruleset: &str) -> bool {
    ruleset
        .lines()
        .any(|line| line.contains("hook forward") && line.contains("policy drop"))
}

/// What shows that Docker's daemon is, or was, set up here.
fn docker_traces(machine: &Machine) -> Vec<String> {
    let mut traces: Vec<String> = ["/sys/class/net/docker0", "/run/docker.sock"]
        .into_iter()
        .filter(|path| Path::new(path).exists())
        .map(str::to_owned)
        .collect();
    if let Some(dockerd) = machine.find_for_root("dockerd") {
        traces.push(dockerd.display().to_string());
    }
    traces
}

/// Only reads the rules: the doctor changes nothing in the firewall.
pub(super) fn firewall(machine: &Machine) -> Finding {
    const CHECK: &str = "firewall";
    let docker = docker_traces(machine);
    let read = |tool: &str, args: &[&str]| -> Option<String> {
        let outcome = machine.run_as_root(tool, args)?.ok()?;
        (outcome.status == 0).then_some(outcome.stdout)
    };
    let iptables = read("iptables", &["-w", "-S", "FORWARD"]);
    let nft = read("nft", &["list", "ruleset"]);
    let drops = iptables.as_deref().is_some_and(iptables_drops_forwarding)
        || nft.as_deref().is_some_and(nft_drops_forwarding);
    let by_docker = if docker.is_empty() {
        String::new()
    } else {
        format!(
            " (Docker is here: {}; it sets that policy)",
            docker.join(", ")
        )
    };
    if drops {
        return Finding::warn(
            CHECK,
            format!(
                "the FORWARD policy is DROP{by_docker}, so step 05's containers would not \
                 reach past this host. Nothing was changed; for step 05, allow forwarding \
                 to and from ferry's bridge: `iptables -I FORWARD -i BRIDGE -j ACCEPT` and \
                 `iptables -I FORWARD -o BRIDGE -j ACCEPT` (with Docker, in its DOCKER-USER chain)"
            ),
        );
    }
    match (iptables.is_some() || nft.is_some(), docker.is_empty()) {
        (true, _) => Finding::ok(
            CHECK,
            format!(
                "forwarded traffic is not dropped (read from {}){}",
                [
                    ("iptables -S FORWARD", &iptables),
                    ("nft list ruleset", &nft)
                ]
                .iter()
                .filter(|(_, rules)| rules.is_some())
                .map(|(command, _)| *command)
                .collect::<Vec<_>>()
                .join(" and "),
                if docker.is_empty() {
                    String::new()
                } else {
                    format!("; Docker is here: {}", docker.join(", "))
                }
            ),
        ),
        (false, true) => Finding::ok(
            CHECK,
            "no Docker here, and no iptables or nft to read other rules with",
        ),
        (false, false) => Finding::warn(
            CHECK,
            format!(
                "Docker is here ({}), but neither iptables nor nft is, to read its rules: \
                 Docker sets the FORWARD policy to DROP, which would stop step 05's \
                 traffic; install iptables to let the doctor check",
                docker.join(", ")
            ),
        ),
    }
}

/// What the builds, the rootfs and the test machine's kernel take, roughly.
const ENOUGH_DISK: u64 = 2 << 30;

pub(super) fn disk() -> Finding {
    const CHECK: &str = "disk";
    let target = target_dir();
    let at = if target.exists() { target } else { workspace() };
    let free = match statvfs(&at) {
        Ok(fs) => fs.blocks_available() * fs.fragment_size(),
        Err(error) => return Finding::warn(CHECK, format!("statvfs {}: {error}", at.display())),
    };
    let gib = free as f64 / f64::from(1 << 30);
    if free < ENOUGH_DISK {
        Finding::warn(
            CHECK,
            format!(
                "only {gib:.1} GiB free under {}: the builds, the rootfs and the test \
                 machine's kernel take about 2 GiB; free some space",
                at.display()
            ),
        )
    } else {
        Finding::ok(CHECK, format!("{gib:.1} GiB free under {}", at.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wsl_is_told_from_proc_version() {
        let two = "Linux version 5.15.153.1-microsoft-standard-WSL2 (root@941d701f84f1) \
                   (gcc (GCC) 11.2.0) #1 SMP Fri Mar 29 23:14:13 UTC 2024";
        let two_old = "Linux version 4.19.128-microsoft-standard (oe-user@oe-host) #1 SMP";
        let one = "Linux version 4.4.0-19041-Microsoft (Microsoft@Microsoft.com) \
                   (gcc version 5.4.0 (GCC) ) #1237-Microsoft Sat Sep 11 14:32:00 PST 2021";
        let debian = "Linux version 6.1.0-28-amd64 (debian-kernel@lists.debian.org) #1 SMP";
        assert_eq!(wsl(two), Some(Wsl::Two));
        assert_eq!(wsl(two_old), Some(Wsl::Two));
        assert_eq!(wsl(one), Some(Wsl::One));
        assert_eq!(wsl(debian), None);
    }

    #[test]
    fn docker_forward_policy_is_found_in_iptables_rules() {
        let docker = "-P FORWARD DROP\n-A FORWARD -j DOCKER-USER\n-A FORWARD -j DOCKER-FORWARD\n";
        assert!(iptables_drops_forwarding(docker));
        assert!(!iptables_drops_forwarding("-P FORWARD ACCEPT\n"));
        assert!(!iptables_drops_forwarding("-A FORWARD -i eth9 -j DROP\n"));
    }

    #[test]
    fn docker_forward_policy_is_found_in_an_nft_ruleset() {
        let ruleset = "table ip filter {\n\
                       \tchain DOCKER-USER {\n\t}\n\
                       \tchain FORWARD {\n\
                       \t\ttype filter hook forward priority filter; policy drop;\n\
                       \t\tcounter jump DOCKER-USER\n\t}\n}\n";
        assert!(nft_drops_forwarding(ruleset));
        let accepting = ruleset.replace("policy drop", "policy accept");
        assert!(!nft_drops_forwarding(&accepting));
        let input = ruleset.replace("hook forward", "hook input");
        assert!(!nft_drops_forwarding(&input));
    }
}
