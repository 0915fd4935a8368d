//! The firewall rules of the bridge network, all in one nftables table of
//! ferry's own, `ip ferry`. No other table is ever changed.
//!
//! - Out: packets from the subnet that leave through another interface get
//!   the host's address (masquerade), so that the answers come back to the
//!   host, which knows where to send them on.
//! - In: a published port is a destination NAT rule: a connection to
//!   HOST_PORT on one of the host's addresses goes to the container's
//!   address and port instead. Two chains hold them: `prerouting` for
//!   connections from elsewhere, `output` for the host's own (to
//!   127.0.0.1:HOST_PORT, say).
//!
//! Each container's rules carry a comment naming it, `ferry ID tcp
//! 0.0.0.0:8080`, by which they are found again: to refuse a port that is
//! taken, to remove them when the container ends, and to remove those of a
//! container whose runtime died.

use std::net::Ipv4Addr;

use serde_json::Value;

use anyhow::{Context, Result, bail};

use crate::ipam::{Lease, Subnet};
use crate::network::{BRIDGE, run_with_input, tool};
use crate::ports::Publish;

const TABLE: &str = "ip ferry";

// ANCHOR: prepare
/// The table, its chains and the masquerade rules: one transaction, which
/// nft applies whole or not at all, so that runtimes starting at the same
/// moment never see half a table, and never add a rule twice. (-100 is the
/// priority that `dstnat` names; nft 1.0 takes the name only in prerouting.)
pub fn prepare(subnet: Subnet) -> Result<()> {
    // ANCHOR: lab05-5-masquerade The table ip ferry, its nat chains, and the masquerade rule for the subnet (nft -f, one transaction) [05-veth.md#the-code]
    nft(&format!(
        "add table {TABLE}
         add chain {TABLE} postrouting {{ type nat hook postrouting priority srcnat; policy accept; }}
         add chain {TABLE} prerouting {{ type nat hook prerouting priority dstnat; policy accept; }}
         add chain {TABLE} output {{ type nat hook output priority -100; policy accept; }}
         flush chain {TABLE} postrouting
         add rule {TABLE} postrouting ip saddr {subnet} oifname != \"{BRIDGE}\" masquerade
         add rule {TABLE} postrouting ip saddr 127.0.0.0/8 oifname \"{BRIDGE}\" masquerade"
    ))
    // ANCHOR_END: lab05-5-masquerade instead: Ok(())
}
// ANCHOR_END: prepare

/// One of our rules, as nft lists it.
struct Rule {
    chain: String,
    handle: u64,
    /// The container it belongs to.
    id: String,
    /// What it publishes: `tcp 0.0.0.0:8080`.
    what: String,
}

fn rules() -> Result<Vec<Rule>> {
    let output = std::process::Command::new(tool("nft")?)
        .args(["-j", "-a", "list", "table", "ip", "ferry"])
        .output()
        .context("run nft list table")?;
    if !output.status.success() {
        return Ok(Vec::new());
    }
    let listing: Value = serde_json::from_slice(&output.stdout).context("read nft's JSON")?;
    let rules = listing["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|entry| {
            let rule = &entry["rule"];
            let comment = rule["comment"].as_str()?.strip_prefix("ferry ")?;
            let (id, what) = comment.split_once(' ')?;
            Some(Rule {
                chain: rule["chain"].as_str()?.to_owned(),
                handle: rule["handle"].as_u64()?,
                id: id.to_owned(),
                what: what.to_owned(),
            })
        })
        .collect();
    Ok(rules)
}

/// Removes the rules of every container but those `alive` (under the
/// address pool's lock, which says who is).
pub fn remove_rules_of_the_dead(alive: &[String]) -> Result<()> {
    let dead: Vec<Rule> = rules()?
        .into_iter()
        .filter(|rule| !alive.contains(&rule.id))
        .collect();
    delete(&dead)
}

fn delete(rules: &[Rule]) -> Result<()> {
    if rules.is_empty() {
        return Ok(());
    }
    let script: Vec<String> = rules
        .iter()
        .map(|rule| format!("delete rule {TABLE} {} handle {}", rule.chain, rule.handle))
        .collect();
    nft(&script.join("\n"))
}

// ANCHOR: publish
/// A container's published ports: its rules, removed when dropped.
pub struct Published {
    id: String,
}

impl Published {
    /// Adds a DNAT rule for each port, in both chains, after checking that
    /// no other container has published it (under the pool's lock).
    pub fn add(id: &str, lease: &Lease, ports: &[Publish]) -> Result<Option<Self>> {
        // ANCHOR: lab05-6-publish A DNAT rule per published port in prerouting and output, after refusing a port another container has [05-veth.md#the-code]
        if ports.is_empty() {
            return Ok(None);
        }
        let taken = rules()?;
        let mut script = Vec::new();
        for port in ports {
            // Every address of the host's, unless the port names one.
            let ip = port.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED);
            let listen = port
                .host_ip
                .map_or(String::new(), |ip| format!("ip daddr {ip} "));
            let what = format!("{} {ip}:{}", port.protocol, port.host_port);
            let clash = |rule: &&Rule| {
                let Some((protocol, address)) = rule.what.split_once(' ') else {
                    return false;
                };
                let Some((other, host_port)) = address.rsplit_once(':') else {
                    return false;
                };
                let Ok(other) = other.parse::<Ipv4Addr>() else {
                    return false;
                };
                protocol == port.protocol.to_string()
                    && host_port == port.host_port.to_string()
                    && (other == ip || other.is_unspecified() || ip.is_unspecified())
            };
            if let Some(rule) = taken.iter().find(clash) {
                bail!(
                    "port {}/{} is published already, by container {}",
                    port.host_port,
                    port.protocol,
                    rule.id
                );
            }
            for chain in ["prerouting", "output"] {
                script.push(format!(
                    "add rule {TABLE} {chain} {listen}fib daddr type local {} dport {} \
                     dnat to {}:{} comment \"ferry {id} {what}\"",
                    port.protocol,
                    port.host_port,
                    lease.address(),
                    port.container_port
                ));
            }
        }
        nft(&script.join("\n")).context("publish the ports")?;
        Ok(Some(Self { id: id.to_owned() }))
        // ANCHOR_END: lab05-6-publish instead: Ok(None)
    }
}

impl Drop for Published {
    fn drop(&mut self) {
        let result = rules().and_then(|rules| {
            let ours: Vec<Rule> = rules
                .into_iter()
                .filter(|rule| rule.id == self.id)
                .collect();
            delete(&ours)
        });
        if let Err(error) = result {
            eprintln!("warning: could not remove the published ports' rules: {error:#}");
        }
    }
}
// ANCHOR_END: publish

/// The check for what in another table drops forwarded packets, which no
/// rule of ours can undo: nftables drops a packet that any base chain of
/// its hook drops. Docker's iptables (FORWARD policy DROP) and ufw do this.
/// `nft -j list chains` runs as a process of its own meanwhile.
pub struct FirewallCheck(Option<std::process::Child>);

impl FirewallCheck {
    pub fn start() -> Self {
        let child = tool("nft").ok().and_then(|nft| {
            std::process::Command::new(nft)
                .args(["-j", "list", "chains"])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn()
                .ok()
        });
        Self(child)
    }

    /// The chain that drops forwarded packets, if one does.
    pub fn blocked_by(self) -> Option<String> {
        let output = self.0?.wait_with_output().ok()?;
        dropping_forward_chain(&output.stdout)
    }
}

fn dropping_forward_chain(listing: &[u8]) -> Option<String> {
    // ANCHOR: lab05-8-firewall Say what drops forwarded packets: a forward-hook chain of another table whose policy is drop (in nft -j list chains) [05-veth.md#when-the-hosts-firewall-says-no]
    let listing: Value = serde_json::from_slice(listing).ok()?;
    listing["nftables"]
        .as_array()?
        .iter()
        .map(|entry| &entry["chain"])
        .find(|chain| {
            chain["hook"] == "forward" && chain["policy"] == "drop" && chain["table"] != "ferry"
        })
        .map(|chain| {
            format!(
                "table {} {}, chain {}",
                chain["family"].as_str().unwrap_or("?"),
                chain["table"].as_str().unwrap_or("?"),
                chain["name"].as_str().unwrap_or("?")
            )
        })
    // ANCHOR_END: lab05-8-firewall instead: None
}

/// Runs an nft script, as one transaction.
fn nft(script: &str) -> Result<()> {
    run_with_input("nft", &["-f", "-"], script)
}
