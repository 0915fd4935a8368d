//! The kernel probes, each run as `ferry-lab probe …` in a child process of
//! the doctor. A probe first makes the namespaces it works in, then tries
//! the feature for real, then exits: the kernel removes a namespace when
//! its last process is gone, and with it every mount, interface and
//! nftables table made inside. So nothing a probe makes can outlive it,
//! even if it fails or is killed half-way, and none of it is ever visible
//! to the host.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail, ensure};
use clap::{Subcommand, ValueEnum};
use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, unshare};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, fork, getpid};

#[derive(Subcommand, Debug, Clone)]
pub enum Probe {
    /// unshare(2) one namespace type
    Namespace { kind: Namespace },
    /// Mount an overlay in DIR (empty), in a private mount namespace
    Overlay { dir: std::path::PathBuf },
    /// Whether clone3(2) exists
    Clone3,
    /// Make a veth pair and a bridge with IP (iproute2's `ip`), in a network
    /// namespace of the probe's own
    Veth { ip: std::path::PathBuf },
    /// List nf_tables' tables over netlink in a network namespace of the
    /// probe's own; with --nft, also make a NAT table there
    Nftables {
        #[arg(long)]
        nft: Option<std::path::PathBuf>,
    },
}

/// The namespace types ferry's steps use.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Namespace {
    Pid,
    Uts,
    Ipc,
    Mnt,
    Cgroup,
    Net,
}

impl Namespace {
    pub const ALL: [Self; 6] = [
        Self::Pid,
        Self::Uts,
        Self::Ipc,
        Self::Mnt,
        Self::Cgroup,
        Self::Net,
    ];

    pub fn flag(self) -> CloneFlags {
        match self {
            Self::Pid => CloneFlags::CLONE_NEWPID,
            Self::Uts => CloneFlags::CLONE_NEWUTS,
            Self::Ipc => CloneFlags::CLONE_NEWIPC,
            Self::Mnt => CloneFlags::CLONE_NEWNS,
            Self::Cgroup => CloneFlags::CLONE_NEWCGROUP,
            Self::Net => CloneFlags::CLONE_NEWNET,
        }
    }

    /// The flag's name, as clone(2) and unshare(2) document it.
    pub fn flag_name(self) -> &'static str {
        match self {
            Self::Pid => "CLONE_NEWPID",
            Self::Uts => "CLONE_NEWUTS",
            Self::Ipc => "CLONE_NEWIPC",
            Self::Mnt => "CLONE_NEWNS",
            Self::Cgroup => "CLONE_NEWCGROUP",
            Self::Net => "CLONE_NEWNET",
        }
    }

    /// The argument `ferry-lab probe namespace` takes.
    pub fn argument(self) -> String {
        self.to_possible_value()
            .expect("no variant is skipped")
            .get_name()
            .to_owned()
    }
}

impl Probe {
    /// Runs the probe in this process, which exits right after.
    pub fn run(self) -> Result<()> {
        match self {
            Probe::Namespace { kind } => namespace(kind),
            Probe::Overlay { dir } => overlay(&dir),
            Probe::Clone3 => clone3(),
            Probe::Veth { ip } => veth(&ip),
            Probe::Nftables { nft } => nftables(nft.as_deref()),
        }
    }
}

fn namespace(kind: Namespace) -> Result<()> {
    unshare(kind.flag()).with_context(|| format!("unshare({})", kind.flag_name()))?;
    match kind {
        Namespace::Pid => first_process_is_pid_1(),
        Namespace::Mnt => make_mounts_private(),
        _ => Ok(()),
    }
}

/// After unshare(CLONE_NEWPID) the caller keeps its pid: only its next
/// child is in the new namespace, as its pid 1.
fn first_process_is_pid_1() -> Result<()> {
    // SAFETY: the probe process has started no thread, so the child's copy
    // of memory holds no lock that a missing thread would never release; the
    // child only calls getpid and _exit.
    match unsafe { fork() }.context("fork the new PID namespace's first process")? {
        ForkResult::Child => {
            let status = if getpid().as_raw() == 1 { 0 } else { 1 };
            // SAFETY: _exit ends the child at once, without running the
            // exit handlers and destructors that belong to the parent.
            unsafe { libc::_exit(status) }
        }
        ForkResult::Parent { child } => match waitpid(child, None).context("waitpid")? {
            WaitStatus::Exited(_, 0) => Ok(()),
            status => bail!("the new PID namespace's first process is not pid 1 ({status:?})"),
        },
    }
}

/// systemd makes `/` a shared mount: without this, a mount made in the new
/// mount namespace would propagate back to the host's.
fn make_mounts_private() -> Result<()> {
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .context("make every mount private in the new mount namespace")
}

/// An overlay as step 03 makes one: a file of the lower layer shows through,
/// and a file written on top lands in the upper layer.
fn overlay(dir: &Path) -> Result<()> {
    unshare(CloneFlags::CLONE_NEWNS).context("unshare(CLONE_NEWNS)")?;
    make_mounts_private()?;
    // Relative paths in the options, as Docker's overlay2 uses them: a
    // workspace path with a comma or a colon would split them.
    std::env::set_current_dir(dir).with_context(|| format!("enter {}", dir.display()))?;
    for layer in ["lower", "upper", "work", "merged"] {
        fs::create_dir(layer).with_context(|| format!("create {}/{layer}", dir.display()))?;
    }
    fs::write("lower/file", "lower").context("write a file in the lower layer")?;
    mount(
        Some("overlay"),
        "merged",
        Some("overlay"),
        MsFlags::empty(),
        Some("lowerdir=lower,upperdir=upper,workdir=work"),
    )
    .with_context(|| format!("mount an overlay in {}", dir.display()))?;
    let seen = fs::read_to_string("merged/file");
    let written = fs::write("merged/new", "upper");
    let landed = Path::new("upper/new").exists();
    umount2("merged", MntFlags::empty()).context("unmount the overlay")?;
    ensure!(
        seen.is_ok_and(|text| text == "lower"),
        "the lower layer's file does not show through the overlay"
    );
    written.context("write a file through the overlay")?;
    ensure!(
        landed,
        "a file written through the overlay is not in its upper dir"
    );
    Ok(())
}

/// clone3 with a size below the smallest `struct clone_args` is refused
/// before the kernel reads anything: EINVAL if clone3 exists, ENOSYS if
/// the kernel (before 5.3) or a seccomp filter does not have it.
fn clone3() -> Result<()> {
    // SAFETY: size 0 makes the kernel return EINVAL before it reads the
    // (null) argument or creates any process.
    let result = unsafe { libc::syscall(libc::SYS_clone3, std::ptr::null::<u8>(), 0usize) };
    match Errno::result(result) {
        Err(Errno::EINVAL) => Ok(()),
        Err(errno) => Err(errno).context("clone3"),
        Ok(_) => bail!("clone3 accepted an empty argument"),
    }
}

/// A veth pair with one end on a bridge, as step 05 wires a container.
/// Fixed names are safe here: the namespace is new, so nothing else is in
/// it, and it goes away with them when the probe exits.
fn veth(ip: &Path) -> Result<()> {
    unshare(CloneFlags::CLONE_NEWNET).context("unshare(CLONE_NEWNET)")?;
    run_with_input(
        Command::new(ip).args(["-batch", "-"]),
        "link add ferryprobe0 type veth peer name ferryprobe1\n\
         link add ferryprobebr type bridge\n\
         link set ferryprobe0 master ferryprobebr\n\
         link set ferryprobe0 up\n\
         link set ferryprobebr up\n",
    )
}

fn nftables(nft: Option<&Path>) -> Result<()> {
    unshare(CloneFlags::CLONE_NEWNET).context("unshare(CLONE_NEWNET)")?;
    list_tables_over_netlink()?;
    if let Some(nft) = nft {
        // Source NAT for a bridge's subnet, as step 05 sets it up.
        run_with_input(
            Command::new(nft).args(["-f", "-"]),
            "add table ip ferry_probe\n\
             add chain ip ferry_probe postrouting { type nat hook postrouting priority 100 ; }\n\
             add rule ip ferry_probe postrouting ip saddr 10.0.0.0/8 masquerade\n",
        )?;
    }
    Ok(())
}

/// Runs a command with `input` on its stdin; its stderr becomes the error.
fn run_with_input(command: &mut Command, input: &str) -> Result<()> {
    let shown = format!("{command:?}");
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("start {shown}"))?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(input.as_bytes())
        .with_context(|| format!("write to {shown}"))?;
    let output = child.wait_with_output().context("wait")?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(
        output.status.success(),
        "{shown}: {}",
        stderr.split_whitespace().collect::<Vec<_>>().join(" ")
    );
    Ok(())
}

/// nfnetlink's subsystem for nf_tables, and its "get table" message.
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_GETTABLE: u16 = 1;
/// The size of a netlink message header.
const HEADER: usize = 16;

/// Asks nf_tables for its tables, as `nft list tables` does, without nft:
/// the kernel answers with a (here empty) list if it has nf_tables.
fn list_tables_over_netlink() -> Result<()> {
    // SAFETY: socket(2) takes plain integers; the result is checked below.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_NETFILTER,
        )
    };
    let fd = Errno::result(fd).context("open a netfilter netlink socket (nfnetlink)")?;
    // SAFETY: fd is a new descriptor, owned by nothing else.
    let mut socket = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16;
    let mut request = Vec::new();
    request.extend((HEADER as u32 + 4).to_ne_bytes()); // length
    request.extend((NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_GETTABLE).to_ne_bytes());
    request.extend(flags.to_ne_bytes());
    request.extend(1u32.to_ne_bytes()); // sequence number
    request.extend(0u32.to_ne_bytes()); // port id: the kernel fills it in
    // struct nfgenmsg: every family, version 0, resource id 0.
    request.extend([libc::AF_UNSPEC as u8, 0, 0, 0]);
    // An unconnected netlink socket sends to the kernel.
    socket
        .write_all(&request)
        .context("ask nf_tables for its tables")?;
    let mut datagram = vec![0; 64 * 1024];
    loop {
        let length = socket
            .read(&mut datagram)
            .context("read nf_tables' answer")?;
        if let Some(end) = end_of_dump(&datagram[..length]) {
            return end
                .map_err(anyhow::Error::from)
                .context("nf_tables refused to list its tables");
        }
    }
}

/// Whether a datagram of a netlink dump ends it: Some(Ok) at its end,
/// Some(Err) if the kernel refused; None while more is to come.
fn end_of_dump(mut datagram: &[u8]) -> Option<Result<(), Errno>> {
    while datagram.len() >= HEADER {
        let length = u32::from_ne_bytes(datagram[0..4].try_into().ok()?) as usize;
        let kind = u16::from_ne_bytes(datagram[4..6].try_into().ok()?);
        match i32::from(kind) {
            libc::NLMSG_DONE => return Some(Ok(())),
            libc::NLMSG_ERROR => {
                let code = i32::from_ne_bytes(datagram.get(HEADER..HEADER + 4)?.try_into().ok()?);
                return Some(match code {
                    0 => Ok(()),
                    code => Err(Errno::from_raw(-code)),
                });
            }
            _ => {}
        }
        // Messages are padded to 4 bytes.
        let next = length.checked_next_multiple_of(4)?;
        if length < HEADER || next > datagram.len() {
            return None;
        }
        datagram = &datagram[next..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(kind: i32, payload: &[u8]) -> Vec<u8> {
        let mut bytes = Vec::new();
        bytes.extend((HEADER as u32 + payload.len() as u32).to_ne_bytes());
        bytes.extend((kind as u16).to_ne_bytes());
        bytes.extend([0; 10]);
        bytes.extend(payload);
        bytes
    }

    #[test]
    fn a_dump_ends_with_done_or_an_error() {
        let table = message(0x0a00, &[0; 6]);
        assert_eq!(end_of_dump(&table), None, "a table, more to come");
        let mut last = table.clone();
        last.extend([0; 2]); // padding to 4 bytes
        last.extend(message(libc::NLMSG_DONE, &[0; 4]));
        assert_eq!(end_of_dump(&last), Some(Ok(())));
        let refused = message(libc::NLMSG_ERROR, &(-libc::EOPNOTSUPP).to_ne_bytes());
        assert_eq!(end_of_dump(&refused), Some(Err(Errno::EOPNOTSUPP)));
    }

    #[test]
    fn namespace_arguments_parse_back() {
        for kind in Namespace::ALL {
            assert_eq!(Namespace::from_str(&kind.argument(), false), Ok(kind));
        }
    }
}
