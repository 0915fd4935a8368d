//! The files in /etc that describe the container's network, as Docker
//! provides them: its name, its name's address, and where to ask for other
//! names. They are written into the container's upper layer before the
//! overlay is mounted, so they hide the image's own, and go with the layer.

use std::fs;
use std::net::Ipv4Addr;
use std::path::Path;

use anyhow::{Context, Result};

use crate::network;

// ANCHOR: files
/// `address` is the container's on the bridge; None: it has no address of
/// its own (`--network none`, or `host`, where the names are the host's).
pub fn write(upper: &Path, hostname: &str, address: Option<Ipv4Addr>) -> Result<()> {
    // ANCHOR: lab05-7-etc /etc/hosts, /etc/hostname and /etc/resolv.conf in the upper layer, as Docker writes them [05-veth.md#the-code]
    let etc = upper.join("etc");
    fs::create_dir_all(&etc).with_context(|| format!("create {}", etc.display()))?;
    let mut hosts = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n".to_owned();
    match address {
        Some(address) => hosts.push_str(&format!("{address}\t{hostname}\n")),
        None => hosts.push_str(&format!("127.0.1.1\t{hostname}\n")),
    }
    let resolv: String = network::nameservers()
        .iter()
        .map(|server| format!("nameserver {server}\n"))
        .collect();
    for (name, text) in [
        ("hosts", hosts),
        ("hostname", format!("{hostname}\n")),
        ("resolv.conf", resolv),
    ] {
        let path = etc.join(name);
        fs::write(&path, text).with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
    // ANCHOR_END: lab05-7-etc instead: Ok(())
}
// ANCHOR_END: files
