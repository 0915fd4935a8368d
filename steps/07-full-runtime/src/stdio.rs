//! The container's standard input, output and error.
//!
//! Until step 06 the command simply inherited the runtime's. Now its output
//! must also reach the log, and a detached container has no terminal to
//! write to at all. So the container writes into pipes (or a pseudo-
//! terminal) whose other ends the supervisor holds, and the supervisor
//! copies what comes out: into the log, and to `ferry run`'s own output
//! when it is attached (not `-d`).
//!
//! - No `-t`: stdout and stderr are two pipes, so the log knows which line
//!   came from which. Stdin is `/dev/null`, or with `-i` the caller's own
//!   stdin (attached) or a pipe that the supervisor holds open (`-d -i`:
//!   the command waits for input that nobody sends, as with Docker).
//! - `-t`: one pseudo-terminal for all three, made *inside* the container,
//!   on its own devpts, after /dev is mounted: its slave is then a device
//!   the container can name (`tty` prints `/dev/pts/0`), not one of the
//!   host's. The container sends the master to the supervisor over a unix
//!   socket (SCM_RIGHTS carries an open file between processes), as runc
//!   does with its console socket. The slave becomes the controlling
//!   terminal of a new session, so the shell inside has job control and
//!   Ctrl-C reaches the command in the foreground inside.

use std::fs::{File, OpenOptions};
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use anyhow::{Context, Result, bail, ensure};
use nix::fcntl::OFlag;
use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt};
use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};
use nix::unistd::{dup2_stderr, dup2_stdin, dup2_stdout, isatty, pipe2, setsid};

/// How the command's standard streams are wired; made before the clone, so
/// that both processes have their ends.
pub struct Stdio {
    wiring: Wiring,
    interactive: bool,
    attached: bool,
}

enum Wiring {
    /// `exec` without `-t`: the caller's own stdout and stderr.
    Inherit,
    Pipes {
        stdout: (OwnedFd, OwnedFd),
        stderr: (OwnedFd, OwnedFd),
        /// `-d -i`: the container reads the first, the supervisor holds the second.
        stdin: Option<(OwnedFd, OwnedFd)>,
    },
    Terminal {
        /// The supervisor's end, and the container's.
        console: (UnixStream, UnixStream),
        /// The size of the caller's terminal, for the new one.
        size: Option<libc::winsize>,
    },
}

/// The supervisor's ends, once the container holds its own.
pub enum Outside {
    Pipes {
        stdout: OwnedFd,
        stderr: OwnedFd,
        /// Held open (never written) while the container runs.
        _stdin: Option<OwnedFd>,
    },
    Terminal {
        master: OwnedFd,
        /// Whether the caller's stdin is to be copied into the terminal.
        input: bool,
    },
}

impl Stdio {
    pub fn new(tty: bool, interactive: bool, attached: bool) -> Result<Self> {
        let wiring = if tty {
            // Docker's own check: `-it` copies the keyboard into the
            // container's terminal, which needs a keyboard: a terminal here.
            if interactive && attached && !isatty(std::io::stdin()).unwrap_or(false) {
                bail!("the input device is not a TTY (-t with -i needs a terminal on stdin)");
            }
            Wiring::Terminal {
                console: UnixStream::pair().context("create the console socket")?,
                size: attached.then(terminal_size).flatten(),
            }
        } else {
            Wiring::Pipes {
                stdout: pipe2(OFlag::O_CLOEXEC).context("create the stdout pipe")?,
                stderr: pipe2(OFlag::O_CLOEXEC).context("create the stderr pipe")?,
                stdin: (interactive && !attached)
                    .then(|| pipe2(OFlag::O_CLOEXEC).context("create the stdin pipe"))
                    .transpose()?,
            }
        };
        Ok(Self {
            wiring,
            interactive,
            attached,
        })
    }

    /// `exec` without `-t`: the command writes to our own stdout and
    /// stderr (its output is not the container's log), and reads our stdin
    /// with `-i`.
    pub fn inherit(interactive: bool) -> Self {
        Self {
            wiring: Wiring::Inherit,
            interactive,
            attached: true,
        }
    }

    // ANCHOR: inside
    /// In the container, last before the command: put its ends on 0, 1 and
    /// 2. (dup2 clears close-on-exec on the copy: these are meant to stay.)
    pub fn connect_inside(&self) -> Result<()> {
        match &self.wiring {
            Wiring::Inherit if self.interactive => Ok(()),
            Wiring::Inherit => dup2_stdin(null()?).context("put /dev/null on 0"),
            Wiring::Pipes {
                stdout,
                stderr,
                stdin,
            } => {
                match stdin {
                    Some((read, _)) => dup2_stdin(read).context("put the stdin pipe on 0")?,
                    None if self.interactive => {}
                    None => dup2_stdin(null()?).context("put /dev/null on 0")?,
                }
                dup2_stdout(&stdout.1).context("put the stdout pipe on 1")?;
                dup2_stderr(&stderr.1).context("put the stderr pipe on 2")?;
                Ok(())
            }
            Wiring::Terminal { console, size } => open_terminal(&console.1, size.as_ref()),
        }
    }
    // ANCHOR_END: inside

    /// In the supervisor, after the clone: close the container's ends (or
    /// our output would never end), and take the terminal's master from the
    /// container. None if the container failed before it could send it.
    pub fn outside(self) -> Result<Option<Outside>> {
        match self.wiring {
            Wiring::Inherit => Ok(None),
            Wiring::Pipes {
                stdout,
                stderr,
                stdin,
            } => Ok(Some(Outside::Pipes {
                stdout: stdout.0,
                stderr: stderr.0,
                _stdin: stdin.map(|(_, write)| write),
            })),
            Wiring::Terminal { console, .. } => {
                drop(console.1);
                Ok(receive_fd(&console.0)?.map(|master| Outside::Terminal {
                    master,
                    input: self.interactive && self.attached,
                }))
            }
        }
    }
}

fn null() -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .context("open the container's /dev/null")
}

// ANCHOR: terminal
/// Makes a terminal on the container's devpts, gives its master to the
/// supervisor, and makes the slave our controlling terminal and 0, 1, 2.
fn open_terminal(console: &UnixStream, size: Option<&libc::winsize>) -> Result<()> {
    // ANCHOR: lab07-3-pty A terminal on the container's devpts: posix_openpt, grantpt, unlockpt, open the slave, its size (TIOCSWINSZ), setsid and TIOCSCTTY, the master to the supervisor (SCM_RIGHTS), the slave on 0, 1 and 2 (open_terminal) [07-full-runtime.md#a-terminal-of-its-own]
    let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .context("open /dev/ptmx")?;
    grantpt(&master).context("grantpt")?;
    unlockpt(&master).context("unlockpt")?;
    let name = ptsname_r(&master).context("ptsname")?;
    let slave = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&name)
        .with_context(|| format!("open {name}"))?;
    if let Some(size) = size {
        // SAFETY: TIOCSWINSZ reads one winsize, which `size` is.
        let done = unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSWINSZ, size) };
        nix::errno::Errno::result(done).context("set the terminal's size")?;
    }
    // A terminal becomes the controlling terminal of a session leader that
    // has none: leave the runtime's session and start our own.
    setsid().context("setsid")?;
    // SAFETY: TIOCSCTTY takes an int argument (0: don't steal the
    // terminal from another session); it touches no memory of ours.
    let done = unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSCTTY, 0) };
    nix::errno::Errno::result(done).context("make the terminal ours (TIOCSCTTY)")?;
    send_fd(console, master.as_fd())?;
    dup2_stdin(&slave).context("put the terminal on 0")?;
    dup2_stdout(&slave).context("put the terminal on 1")?;
    dup2_stderr(&slave).context("put the terminal on 2")?;
    Ok(())
    // ANCHOR_END: lab07-3-pty instead: anyhow::bail!("-t: the container's terminal is yours to write (lab 07)")
}
// ANCHOR_END: terminal

/// The caller's terminal size, if stdin is a terminal.
pub fn terminal_size() -> Option<libc::winsize> {
    // SAFETY: zeroed is a valid winsize (plain integers).
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes one winsize into `size`.
    let done = unsafe { libc::ioctl(0, libc::TIOCGWINSZ, &mut size) };
    (done == 0).then_some(size)
}

/// Gives the container's terminal the caller's size (after SIGWINCH).
pub fn resize(master: BorrowedFd) {
    if let Some(size) = terminal_size() {
        // SAFETY: TIOCSWINSZ reads one winsize, which `size` is.
        let _ = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &size) };
    }
}

fn send_fd(socket: &UnixStream, fd: BorrowedFd) -> Result<()> {
    let fds = [fd.as_raw_fd()];
    let message = [ControlMessage::ScmRights(&fds)];
    sendmsg::<()>(
        socket.as_raw_fd(),
        &[IoSlice::new(b"t")],
        &message,
        MsgFlags::empty(),
        None,
    )
    .context("send the terminal to the supervisor")?;
    Ok(())
}

fn receive_fd(socket: &UnixStream) -> Result<Option<OwnedFd>> {
    let mut byte = [0u8; 1];
    let mut iov = [IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!(RawFd);
    let message = recvmsg::<()>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .context("receive the container's terminal")?;
    for control in message.cmsgs().context("read the control message")? {
        if let ControlMessageOwned::ScmRights(fds) = control {
            ensure!(fds.len() == 1, "expected one terminal, got {}", fds.len());
            // SAFETY: the kernel just installed this descriptor for us.
            return Ok(Some(unsafe { OwnedFd::from_raw_fd(fds[0]) }));
        }
    }
    // End of file: the container ended, or exec'd with its end closed,
    // before it made a terminal; its own error says why.
    Ok(None)
}
