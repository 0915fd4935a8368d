//! A network lab: network namespaces of the test's own, so that nothing a
//! runtime does to "the host's" network (the bridge, forwarding, its
//! nftables table, its containers' veths) touches this machine's.
//!
//! ```text
//!   "outside" netns                       lab host netns
//!   out0 198.51.100.1/24  ══ veth ══  up0 198.51.100.2/24
//!   (servers of the test's)             ferry0, the runtime's bridge and table
//! ```
//!
//! Each namespace is held by a process of ours (`unshare --net sleep`);
//! dropping the lab kills them, and the kernel removes the namespaces with
//! everything in them. The addresses are from a documentation range
//! (RFC 5737): no packet of a lab can reach, or come from, another network.
//! A runtime runs in the lab through `nsenter --net`, which execs it (its
//! pid and exit status are the runtime's own).

use std::ffi::OsString;
use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;

use anyhow::{Context, Result, ensure};
use nix::sched::{CloneFlags, setns};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The lab host's address toward the outside, and the outside's own.
pub const HOST: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
pub const OUTSIDE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);

/// A network namespace, held by a process that does nothing else.
struct Holder(Child);

impl Holder {
    fn new() -> Result<Self> {
        let child = Command::new("unshare")
            .args(["--net", "--", "sleep", "100000"])
            .stdin(Stdio::null())
            .spawn()
            .context("start `unshare --net sleep` to hold a network namespace")?;
        let holder = Self(child);
        // unshare execs sleep once the namespace is made: wait for that.
        let own = std::fs::metadata("/proc/self/ns/net")?.ino();
        crate::run::wait_until(
            "the lab's namespace",
            std::time::Duration::from_secs(5),
            || {
                let theirs = std::fs::metadata(holder.netns()).ok()?.ino();
                let exec = std::fs::read_to_string(format!("/proc/{}/comm", holder.0.id())).ok()?;
                (theirs != own && exec.trim() == "sleep").then_some(())
            },
        )?;
        Ok(holder)
    }

    fn netns(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/net", self.0.id()))
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        // Our own child, by its pid.
        let _ = kill(Pid::from_raw(self.0.id() as i32), Signal::SIGKILL);
        let _ = self.0.wait();
    }
}

pub struct NetLab {
    host: Holder,
    outside: Holder,
    /// The runtime's address pool for the lab's bridge (see step 05's
    /// ipam.rs): named after the lab host namespace, removed with it.
    pool: PathBuf,
    _run_dir: RunDirUser,
}

/// How many labs of this process are alive. A runtime in one lab makes
/// `/run/ferry/net-…` with two mkdirs; if another lab's drop removed the
/// then-empty `/run/ferry` between them, that runtime failed ("create
/// /run/ferry/net-…: No such file or directory", seen in CI). So
/// `/run/ferry` is removed only by the last lab to go, under this lock,
/// and no lab starts while it is being removed. (Every runtime of step 05
/// on runs in a lab, and `cargo test` runs one test binary at a time.)
static LIVE_LABS: std::sync::Mutex<usize> = std::sync::Mutex::new(0);

struct RunDirUser;

impl RunDirUser {
    fn new() -> Self {
        *LIVE_LABS.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        Self
    }
}

impl Drop for RunDirUser {
    fn drop(&mut self) {
        let mut live = LIVE_LABS.lock().unwrap_or_else(|e| e.into_inner());
        *live -= 1;
        if *live == 0 {
            // remove_dir removes only an empty folder: a learner's own
            // pools, if any, keep it.
            let _ = std::fs::remove_dir("/run/ferry");
        }
    }
}

impl NetLab {
    pub fn new() -> Result<Self> {
        let run_dir = RunDirUser::new();
        let host = Holder::new()?;
        let outside = Holder::new()?;
        let inode = std::fs::metadata(host.netns())?.ino();
        let lab = Self {
            pool: PathBuf::from(format!("/run/ferry/net-{inode}")),
            host,
            outside,
            _run_dir: run_dir,
        };
        let outside_pid = lab.outside.0.id();
        lab.in_host(&[
            "ip link set lo up".to_owned(),
            format!("ip link add up0 type veth peer name out0 netns {outside_pid}"),
            format!("ip addr add {HOST}/24 dev up0"),
            "ip link set up0 up".to_owned(),
        ])?;
        lab.in_outside(&[
            "ip link set lo up".to_owned(),
            format!("ip addr add {OUTSIDE}/24 dev out0"),
            "ip link set out0 up".to_owned(),
        ])?;
        Ok(lab)
    }

    /// `nsenter --net=… PROGRAM`: a program run in the lab host namespace.
    pub fn command_prefix(&self) -> Vec<OsString> {
        let mut net = OsString::from("--net=");
        net.push(self.host.netns());
        vec!["nsenter".into(), net, "--".into()]
    }

    /// Runs `work` in the lab host namespace, on a thread of its own that
    /// entered it: sockets it makes, and threads it starts (which inherit
    /// the namespace), stay there. A child process it forks would too, but
    /// its PR_SET_PDEATHSIG would fire when that short-lived thread ends:
    /// start children through `command_prefix` instead.
    pub fn in_host_netns<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<T> {
        in_netns(&self.host, work)
    }

    /// Runs shell commands in the lab host namespace; fails with their output.
    pub fn in_host(&self, commands: &[String]) -> Result<String> {
        sh_in(&self.host, commands)
    }

    /// Runs shell commands in the outside namespace.
    pub fn in_outside(&self, commands: &[String]) -> Result<String> {
        sh_in(&self.outside, commands)
    }

    /// A TCP listener in the outside namespace, on OUTSIDE:port.
    pub fn listen_outside(&self, port: u16) -> Result<TcpListener> {
        in_netns(&self.outside, move || {
            TcpListener::bind(SocketAddr::from((OUTSIDE, port))).context("listen outside")
        })
    }

    /// A TCP connection from the outside namespace.
    pub fn connect_from_outside(&self, to: SocketAddr) -> Result<std::net::TcpStream> {
        connect_in(&self.outside, to)
    }

    /// A TCP connection from the lab host itself.
    pub fn connect_from_host(&self, to: SocketAddr) -> Result<std::net::TcpStream> {
        connect_in(&self.host, to)
    }

    /// A UDP socket in the outside namespace.
    pub fn udp_outside(&self) -> Result<UdpSocket> {
        in_netns(&self.outside, || {
            UdpSocket::bind(SocketAddr::from((OUTSIDE, 0))).context("bind a UDP socket outside")
        })
    }

    /// The lab host's links, one name per line, sorted.
    pub fn host_links(&self) -> Result<Vec<String>> {
        let listing = self.in_host(&["ip -o link show | cut -d: -f2 | cut -d@ -f1".to_owned()])?;
        let mut links: Vec<String> = listing.lines().map(|l| l.trim().to_owned()).collect();
        links.sort();
        Ok(links)
    }

    /// The rules in the runtime's nftables table in the lab host, as nft
    /// lists them (empty if there is no table).
    pub fn ferry_rules(&self) -> Result<String> {
        self.in_host(&["nft list table ip ferry 2>/dev/null || true".to_owned()])
    }

    /// The addresses the runtime has leased in the lab, sorted.
    pub fn leases(&self) -> Result<Vec<String>> {
        let mut leases: Vec<String> = match std::fs::read_dir(&self.pool) {
            Ok(entries) => entries
                .map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
                .collect::<Result<_>>()?,
            Err(_) => Vec::new(),
        };
        leases.sort();
        Ok(leases)
    }
}

impl Drop for NetLab {
    fn drop(&mut self) {
        // Then `_run_dir` goes, and with the last lab, /run/ferry.
        let _ = std::fs::remove_dir_all(&self.pool);
    }
}

fn connect_in(holder: &Holder, to: SocketAddr) -> Result<std::net::TcpStream> {
    in_netns(holder, move || {
        std::net::TcpStream::connect_timeout(&to, std::time::Duration::from_secs(5))
            .with_context(|| format!("connect to {to} in the lab"))
    })
}

fn sh_in(holder: &Holder, commands: &[String]) -> Result<String> {
    let script = commands.join(" && ");
    let output = Command::new("nsenter")
        .arg(format!("--net={}", holder.netns().display()))
        .args(["--", "sh", "-c", &script])
        .output()
        .context("run nsenter")?;
    ensure!(
        output.status.success(),
        "in the lab: {script}: {}",
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Runs `work` on a thread of its own that has entered the namespace (setns
/// moves only the calling thread): a socket made there stays in it.
fn in_netns<T: Send + 'static>(
    holder: &Holder,
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let path = holder.netns();
    thread::spawn(move || {
        let netns = File::open(&path).with_context(|| format!("open {}", path.display()))?;
        setns(netns.as_fd(), CloneFlags::CLONE_NEWNET).context("enter the lab's namespace")?;
        work()
    })
    .join()
    .expect("the lab's thread does not panic")
}
