//! Step 05 behaviours: a network of the container's own. Every one runs in
//! the test's network lab (`ferry_tests::netlab`): a namespace standing for
//! the host, with an "outside" one beside it; nothing reaches this host's
//! own network.

use std::collections::BTreeSet;
use std::io::Read;
use std::net::SocketAddr;
use std::thread;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use ferry_tests::host;
use ferry_tests::netlab::{HOST, OUTSIDE};
use ferry_tests::run::{Running, wait_until};
use nix::sys::signal::Signal;

use crate::check::{Ctx, expect, expect_error, kill_runtime_mid_run_with, process_named};
use crate::{Behaviour, Kind::BadInput, Kind::Feature};

pub const BEHAVIOURS: &[Behaviour] = &[
    Behaviour {
        name: "has_its_own_interfaces_and_route",
        hint: "its own network namespace: lo and eth0 (one end of a veth pair) with an address of the subnet and a default route via the bridge; with --network none only lo (book: Step 05 › The code)",
        since: 5,
        kind: Feature,
        check: has_its_own_interfaces_and_route,
    },
    Behaviour {
        name: "network_host_is_the_hosts",
        hint: "--network host: no network namespace, the host's interfaces, where the default gives the container its own (book: Step 05 › The idea)",
        since: 5,
        kind: Feature,
        check: network_host_is_the_hosts,
    },
    Behaviour {
        name: "containers_reach_each_other",
        hint: "two containers on the bridge reach each other by address (book: Step 05 › The idea)",
        since: 5,
        kind: Feature,
        check: containers_reach_each_other,
    },
    Behaviour {
        name: "reaches_outside_as_the_host",
        hint: "a container reaches what the host reaches, with the host's address: IP forwarding and a masquerade rule (book: Step 05 › The code)",
        since: 5,
        kind: Feature,
        check: reaches_outside_as_the_host,
    },
    Behaviour {
        name: "published_ports_reach_the_container",
        hint: "-p HOST_PORT:CONTAINER_PORT[/udp]: DNAT rules from the host's addresses, 127.0.0.1 included, to the container's (book: Step 05 › The code)",
        since: 5,
        kind: Feature,
        check: published_ports_reach_the_container,
    },
    Behaviour {
        name: "refuses_a_port_published_already",
        hint: "a host port that another container publishes: exit 125 and an error naming it (book: Step 05 › The code)",
        since: 5,
        kind: Feature,
        check: refuses_a_port_published_already,
    },
    Behaviour {
        name: "twenty_at_once_get_different_addresses",
        hint: "addresses leased under a lock: twenty containers started at once get twenty, all given back (book: Step 05 › The code)",
        since: 5,
        kind: Feature,
        check: twenty_at_once_get_different_addresses,
    },
    Behaviour {
        name: "leaves_no_network_behind",
        hint: "after a normal end, a 127 and a SIGKILL: no veth, no rule, no lease left; the bridge stays (book: Step 05 › The code)",
        since: 5,
        kind: Feature,
        check: leaves_no_network_behind,
    },
    Behaviour {
        name: "reclaims_what_a_dead_runtime_held",
        hint: "a kill -9'd runtime's lease and rules are taken back by the next run, told dead by the lease's lock (book: Step 05 › The code)",
        since: 5,
        kind: Feature,
        check: reclaims_what_a_dead_runtime_held,
    },
    Behaviour {
        name: "says_what_firewall_drops_forwarding",
        hint: "a host firewall that drops forwarded packets (Docker's, ufw's): a warning naming its chain (book: Step 05 › When the host's firewall says no)",
        since: 5,
        kind: Feature,
        check: says_what_firewall_drops_forwarding,
    },
    Behaviour {
        name: "macs_are_fixed_and_derived",
        hint: "the bridge has a MAC of its own, which no container's coming or going changes, and eth0's MAC comes from its address: 02:66 and the address's four bytes (book: Step 05 › The code)",
        since: 5,
        kind: Feature,
        check: macs_are_fixed_and_derived,
    },
    Behaviour {
        name: "rejects_bad_network_options",
        hint: "bad -p, --network, or a subnet the host routes already: exit 125, a clear error, nothing made (book: Step 05 › The code)",
        since: 5,
        kind: BadInput,
        check: rejects_bad_network_options,
    },
];

/// Prints the container's eth0 address on a line of its own (an empty line
/// if it has none).
const PRINT_ADDRESS: &str =
    "echo \"$(ip -4 -o addr show dev eth0 | sed 's/.* inet \\([0-9.]*\\)\\/.*/\\1/')\"";

fn has_its_own_interfaces_and_route(ctx: &Ctx) -> Result<()> {
    let script = format!("ls /sys/class/net; {PRINT_ADDRESS}; ip -4 route");
    let outcome = ctx.sh(&[], &script)?;
    let lines: Vec<&str> = outcome.stdout.lines().collect();
    ensure!(
        outcome.status == 0
            && lines.len() == 5
            && lines[..2] == ["eth0", "lo"]
            && lines[2].starts_with("10.77.")
            && lines[3].trim() == "default via 10.77.0.1 dev eth0"
            && lines[4].starts_with("10.77.0.0/16 dev eth0"),
        "expected eth0 and lo, an address in 10.77.0.0/16 and a default route via 10.77.0.1; got\n{outcome}"
    );
    let none = ctx.sh(
        &["--network", "none"],
        "ls /sys/class/net; cat /sys/class/net/lo/operstate; ip -4 route",
    )?;
    expect(&none, 0, "lo\nunknown\n", "")
}

fn network_host_is_the_hosts(ctx: &Ctx) -> Result<()> {
    let outcome = ctx.sh(&["--network", "host"], "ls /sys/class/net")?;
    expect(&outcome, 0, "lo\nup0\n", "")?;
    // Only with `host`: by default the container has a namespace of its own.
    let own = ctx.sh(&[], "ls /sys/class/net")?;
    expect(&own, 0, "eth0\nlo\n", "")
}

fn containers_reach_each_other(ctx: &Ctx) -> Result<()> {
    // The server answers every connection; busybox's nc may close one
    // before a byte has crossed, so the client asks until it has heard.
    let script = format!("{PRINT_ADDRESS}; while :; do echo hello | nc -l -p 7000; done");
    let mut server = ctx.run(&[], &["/bin/sh", "-c", &script]).spawn()?;
    let address = server.next_line()?;
    let heard = if address.starts_with("10.77.") {
        // A try that times out while the server is between connections says
        // so on stderr; only the try that hears it counts.
        let client =
            format!("until nc -w 1 {address} 7000 </dev/null 2>/dev/null | grep hello; do :; done");
        Some(ctx.sh(&[], &client))
    } else {
        None
    };
    // The server's PID 1 shell ignores SIGTERM: it ends with its runtime.
    host::signal(server.pid(), Signal::SIGKILL)?;
    let _ = server.finish();
    ensure!(
        address.starts_with("10.77."),
        "the server's address: {address:?}"
    );
    let heard = heard.expect("asked when the server had an address")?;
    expect(&heard, 0, "hello\n", "")
}

fn reaches_outside_as_the_host(ctx: &Ctx) -> Result<()> {
    let net = ctx.net()?;
    let server = net.listen_outside(8000)?;
    let accepted = thread::spawn(move || -> Result<(SocketAddr, String)> {
        let (mut stream, peer) = server.accept().context("accept outside")?;
        let mut text = String::new();
        stream.read_to_string(&mut text)?;
        Ok((peer, text))
    });
    let script = format!("{PRINT_ADDRESS}; echo hello | nc -w 2 {OUTSIDE} 8000");
    let outcome = ctx.sh(&[], &script)?;
    ensure!(
        outcome.status == 0 && outcome.stdout.starts_with("10.77."),
        "the container (an address of its own) connecting out; got\n{outcome}"
    );
    let (peer, text) = accepted.join().expect("no panic")?;
    ensure!(
        peer.ip() == HOST && text == "hello\n",
        "the outside server saw {peer} send {text:?}: the source must be the lab host's {HOST}"
    );
    Ok(())
}

/// How long a published port may take to answer: moments, when it works.
const ANSWER: Duration = Duration::from_secs(5);

/// Connects until the container's server answers, and returns its answer.
fn answer(running: &Running, connect: impl Fn() -> Result<std::net::TcpStream>) -> Result<String> {
    running.poll_for("an answer through the published port", ANSWER, || {
        let mut stream = connect().ok()?;
        let mut text = String::new();
        stream.read_to_string(&mut text).ok()?;
        (!text.is_empty()).then_some(text)
    })
}

fn published_ports_reach_the_container(ctx: &Ctx) -> Result<()> {
    let net = ctx.net()?;
    let script = "echo one | nc -l -p 80; echo two | nc -l -p 80";
    let running = ctx
        .run(&["-p", "8080:80"], &["/bin/sh", "-c", script])
        .spawn()?;
    let from_outside = answer(&running, || {
        net.connect_from_outside(SocketAddr::from((HOST, 8080)))
    })?;
    let from_host = answer(&running, || {
        net.connect_from_host(SocketAddr::from(([127, 0, 0, 1], 8080)))
    })?;
    ensure!(
        (from_outside.as_str(), from_host.as_str()) == ("one\n", "two\n"),
        "through {HOST}:8080 from outside: {from_outside:?}; through 127.0.0.1:8080 from the host: {from_host:?}"
    );
    expect(&running.finish()?, 0, "", "")?;
    // UDP: a datagram to the published port, and the container's answer.
    let mut udp = ctx
        .run(&["-p", "5353:53/udp"], &["udp-echo", "53"])
        .spawn()?;
    udp.wait_for_line("ready")?;
    let socket = net.udp_outside()?;
    socket.set_read_timeout(Some(Duration::from_millis(200)))?;
    let reply = udp.poll_for("a UDP answer", ANSWER, || {
        socket
            .send_to(b"ping", SocketAddr::from((HOST, 5353)))
            .ok()?;
        let mut buffer = [0u8; 16];
        let (length, _) = socket.recv_from(&mut buffer).ok()?;
        Some(buffer[..length].to_vec())
    })?;
    ensure!(reply == b"ping", "the UDP answer: {reply:?}");
    expect(&udp.finish()?, 0, "ready\nping\n", "")
}

/// A container that runs until its `sleep` is killed, publishing `ports`.
fn sleeper(ctx: &Ctx, ports: &[&str]) -> Result<(Running, i32)> {
    let mut running = ctx
        .run(ports, &["/bin/sh", "-c", "echo ready; exec sleep 1000"])
        .spawn()?;
    running.wait_for_line("ready")?;
    let sleep = process_named(&running, "sleep")?;
    Ok((running, sleep))
}

fn refuses_a_port_published_already(ctx: &Ctx) -> Result<()> {
    let (first, sleep) = sleeper(ctx, &["-p", "8080:80"])?;
    let second = ctx.run(&["-p", "8080:81"], &["/bin/true"]).output();
    host::signal(sleep, Signal::SIGKILL)?;
    let _ = first.finish();
    expect_error(&second?, 125, "port 8080/tcp is published already")
}

fn twenty_at_once_get_different_addresses(ctx: &Ctx) -> Result<()> {
    // Each holds its address until its stdin closes: all twenty at once.
    let script = format!("{PRINT_ADDRESS}; read line || true");
    let mut runs: Vec<Running> = (0..20)
        .map(|_| {
            ctx.run(&[], &["/bin/sh", "-c", &script])
                .hold_stdin()
                .spawn()
        })
        .collect::<Result<_>>()?;
    let mut addresses = BTreeSet::new();
    for run in &mut runs {
        let address = run.next_line()?;
        ensure!(address.starts_with("10.77."), "one of twenty: {address:?}");
        addresses.insert(address);
    }
    for mut run in runs {
        run.close_stdin();
        let outcome = run.finish()?;
        ensure!(outcome.status == 0, "one of twenty at its end: {outcome}");
    }
    ensure!(
        addresses.len() == 20,
        "twenty containers running at once got {} different addresses",
        addresses.len()
    );
    let leases = ctx.net()?.leases()?;
    ensure!(
        leases.is_empty(),
        "leases left after they ended: {leases:?}"
    );
    Ok(())
}

/// The lab host holds the bridge and nothing of any container. (The
/// kernel removes a veth pair with the container's namespace, a moment
/// after its last process: poll for that.)
fn nothing_of_containers_left(ctx: &Ctx) -> Result<()> {
    let net = ctx.net()?;
    let wanted = ["ferry0", "lo", "up0"];
    let gone = wait_until(
        "the container's veth pair to go",
        Duration::from_secs(5),
        || net.host_links().ok().filter(|links| *links == wanted),
    );
    ensure!(
        gone.is_ok(),
        "the lab host's links: {:?} (the bridge, and nothing of a container)",
        net.host_links()?
    );
    let rules = net.ferry_rules()?;
    ensure!(!rules.contains("comment \"ferry "), "rules left:\n{rules}");
    let leases = net.leases()?;
    ensure!(leases.is_empty(), "leases left: {leases:?}");
    Ok(())
}

fn leaves_no_network_behind(ctx: &Ctx) -> Result<()> {
    expect(
        &ctx.run(&["-p", "8080:80"], &["/bin/true"]).output()?,
        0,
        "",
        "",
    )?;
    nothing_of_containers_left(ctx)?;
    let missing = ctx.run(&["-p", "8080:80"], &["no-such-command"]).output()?;
    ensure!(missing.status == 127, "a missing command: {missing}");
    nothing_of_containers_left(ctx)?;
    let (running, sleep) = sleeper(ctx, &["-p", "8080:80"])?;
    host::signal(sleep, Signal::SIGKILL)?;
    ensure!(
        running.finish()?.status == 137,
        "the killed container's status"
    );
    nothing_of_containers_left(ctx)
}

fn reclaims_what_a_dead_runtime_held(ctx: &Ctx) -> Result<()> {
    let net = ctx.net()?;
    kill_runtime_mid_run_with(ctx, &["-p", "8080:80"])?;
    ensure!(
        net.leases()?.len() == 1 && net.ferry_rules()?.contains("comment \"ferry "),
        "a killed runtime cleans up nothing: its lease and rules are left for the next run"
    );
    expect(&ctx.run(&[], &["/bin/true"]).output()?, 0, "", "")?;
    nothing_of_containers_left(ctx)
}

fn says_what_firewall_drops_forwarding(ctx: &Ctx) -> Result<()> {
    let net = ctx.net()?;
    net.in_host(&[
        "nft add table ip filter".to_owned(),
        "nft add chain ip filter forward '{ type filter hook forward priority 0; policy drop; }'"
            .to_owned(),
    ])?;
    // Nothing listens outside: dropped, the connection times out (1 s).
    let script = format!("echo hello | nc -w 1 {OUTSIDE} 8000");
    let outcome = ctx.sh(&[], &script)?;
    ensure!(
        outcome.status != 0
            && outcome.stderr.starts_with(
                "warning: the host's firewall drops forwarded packets (table ip filter, chain forward, policy drop"
            ),
        "expected a warning that names the chain, and no way out; got\n{outcome}"
    );
    Ok(())
}

fn macs_are_fixed_and_derived(ctx: &Ctx) -> Result<()> {
    let net = ctx.net()?;
    let script = format!("{PRINT_ADDRESS}; cat /sys/class/net/eth0/address");
    // Twice: the second container comes after the first has gone.
    for _ in 0..2 {
        let outcome = ctx.sh(&[], &script)?;
        let lines: Vec<&str> = outcome.stdout.lines().collect();
        let Some(address) = lines
            .first()
            .and_then(|a| a.parse::<std::net::Ipv4Addr>().ok())
        else {
            bail!("no address: {outcome}");
        };
        let [a, b, c, d] = address.octets();
        let wanted = format!("02:66:{a:02x}:{b:02x}:{c:02x}:{d:02x}");
        ensure!(
            lines.get(1) == Some(&wanted.as_str()),
            "eth0's MAC for {address}: {:?}, not {wanted}",
            lines.get(1)
        );
        let bridge = net.in_host(&["ip -o link show ferry0".to_owned()])?;
        ensure!(
            bridge.contains("link/ether 02:66:0a:4d:00:01 "),
            "the bridge's MAC, after a container ended: {bridge}"
        );
    }
    Ok(())
}

fn rejects_bad_network_options(ctx: &Ctx) -> Result<()> {
    for (options, mention) in [
        (&["-p", "70000:80"][..], "70000"),
        (&["-p", "abc"], "abc"),
        (&["-p", "80"], "HOST_PORT:CONTAINER_PORT"),
        (&["--network", "bogus"], "bogus"),
        (&["-p", "8080:80", "-p", "8080:81"], "a second time"),
        (
            &["-p", "192.0.2.1:8080:80"],
            "192.0.2.1 is not an address of this host",
        ),
    ] {
        let outcome = ctx.run(options, &["/bin/true"]).output()?;
        expect_error(&outcome, 125, mention).with_context(|| options.join(" "))?;
    }
    for (subnet, mention) in [
        (
            "198.51.100.0/24",
            "overlaps the host's route to 198.51.100.0/24",
        ),
        ("10.77.0.0/31", "a prefix of 8 to 30"),
    ] {
        let outcome = ctx
            .run(&[], &["/bin/true"])
            .env("FERRY_SUBNET", subnet)
            .output()?;
        expect_error(&outcome, 125, mention).with_context(|| format!("FERRY_SUBNET={subnet}"))?;
    }
    let links = ctx.net()?.host_links()?;
    ensure!(links == ["lo", "up0"], "made after bad input: {links:?}");
    // A subnet other than the bridge's, once the bridge exists.
    expect(&ctx.run(&[], &["/bin/true"]).output()?, 0, "", "")?;
    let other = ctx
        .run(&[], &["/bin/true"])
        .env("FERRY_SUBNET", "10.88.0.0/16")
        .output()?;
    expect_error(
        &other,
        125,
        "the bridge ferry0 has 10.77.0.1, not 10.88.0.1",
    )
}
