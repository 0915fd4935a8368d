//! `-p, --publish [IP:]HOST_PORT:CONTAINER_PORT[/tcp|/udp]`, read as Docker
//! reads it. Docker's forms that choose a host port by themselves (`-p 80`,
//! `-p IP::80`) and port ranges are refused with a clear error here.

use std::fmt;
use std::net::Ipv4Addr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        })
    }
}

/// One published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Publish {
    /// The host address it listens on; None: every one of the host's.
    pub host_ip: Option<Ipv4Addr>,
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: Protocol,
}

impl fmt::Display for Publish {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ip = self
            .host_ip
            .map_or("0.0.0.0".to_owned(), |ip| ip.to_string());
        write!(
            f,
            "{ip}:{}->{}/{}",
            self.host_port, self.container_port, self.protocol
        )
    }
}

// ANCHOR: parse
pub fn parse(text: &str) -> Result<Publish, String> {
    let (ports, protocol) = match text.rsplit_once('/') {
        Some((ports, "tcp")) => (ports, Protocol::Tcp),
        Some((ports, "udp")) => (ports, Protocol::Udp),
        Some((_, other)) => return Err(format!("protocol {other:?}: tcp or udp")),
        None => (text, Protocol::Tcp),
    };
    let parts: Vec<&str> = ports.split(':').collect();
    let (host_ip, host_port, container_port) = match parts[..] {
        [container] => {
            port(container)?;
            return Err(
                "a container port alone asks for a host port chosen at random, which ferry \
                 does not do: give HOST_PORT:CONTAINER_PORT"
                    .to_owned(),
            );
        }
        [host, container] => (None, host, container),
        [_, "", _] => {
            return Err(
                "IP::CONTAINER_PORT (a random host port) is not supported: give HOST_PORT"
                    .to_owned(),
            );
        }
        [ip, host, container] => {
            let ip: Ipv4Addr = ip
                .parse()
                .map_err(|_| format!("{ip:?} is not an IPv4 address"))?;
            (Some(ip), host, container)
        }
        _ => return Err("the form is [IP:]HOST_PORT:CONTAINER_PORT[/tcp|/udp]".to_owned()),
    };
    Ok(Publish {
        host_ip: host_ip.filter(|ip| !ip.is_unspecified()),
        host_port: port(host_port)?,
        container_port: port(container_port)?,
        protocol,
    })
}

fn port(text: &str) -> Result<u16, String> {
    if text.contains('-') {
        return Err(format!("{text:?}: port ranges are not supported"));
    }
    text.parse()
        .ok()
        .filter(|port| *port != 0)
        .ok_or_else(|| format!("{text:?} is not a port: 1 to 65535"))
}
// ANCHOR_END: parse

/// What no single `-p` shows: a host port published twice, and an address
/// that is not the host's own (no connection could come to it). Checked
/// before anything is made.
pub fn check(ports: &[Publish]) -> anyhow::Result<()> {
    for (at, port) in ports.iter().enumerate() {
        let same_port =
            |other: &Publish| (other.protocol, other.host_port) == (port.protocol, port.host_port);
        anyhow::ensure!(
            !ports[..at].iter().any(same_port),
            "-p {port} publishes host port {}/{} a second time",
            port.host_port,
            port.protocol
        );
        if let Some(ip) = port.host_ip {
            // Binding to it succeeds only for an address of this host's.
            std::net::UdpSocket::bind((ip, 0)).map_err(|error| {
                anyhow::anyhow!("-p {port}: {ip} is not an address of this host: {error}")
            })?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_docker_forms_and_refuses_the_rest() {
        let p = parse("8080:80").unwrap();
        assert_eq!(p.to_string(), "0.0.0.0:8080->80/tcp");
        assert_eq!(
            parse("127.0.0.1:53:5353/udp").unwrap().to_string(),
            "127.0.0.1:53->5353/udp"
        );
        for bad in [
            "70000:80",
            "abc",
            "80",
            "1:2:3:4",
            "8080:80/sctp",
            "0:80",
            "10-20:80",
            "1.2.3.4::80",
            "x:1:2",
        ] {
            assert!(parse(bad).is_err(), "{bad} was accepted");
        }
    }
}
