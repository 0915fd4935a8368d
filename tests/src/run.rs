//! Running a program under test: its own process group, a deadline, stdout
//! and stderr kept apart, and nothing left running afterwards.

use std::ffi::OsStr;
use std::fmt;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
use nix::unistd::Pid;

/// How long any one run may take before it is killed and reported.
pub const DEADLINE: Duration = Duration::from_secs(60);
/// How often to look again while polling for a state.
pub const POLL: Duration = Duration::from_millis(5);

/// Polls `probe` until it returns Some, or `limit` passes: for a state that
/// does not depend on a run still going (a process that must end).
pub fn wait_until<T>(
    what: &str,
    limit: Duration,
    mut probe: impl FnMut() -> Option<T>,
) -> Result<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(found) = probe() {
            return Ok(found);
        }
        if Instant::now() > deadline {
            bail!("{what} did not happen within {limit:?}");
        }
        thread::sleep(POLL);
    }
}

/// How a run ended, and what it printed.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The exit status, or 128+N for death by signal N, as a shell reports it.
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "status {}\n--- stdout\n{}--- stderr\n{}---",
            self.status, self.stdout, self.stderr
        )
    }
}

pub struct Run {
    command: Command,
    stdin: Vec<u8>,
    hold_stdin: bool,
    limit: Duration,
    /// Descriptors the program inherits besides 0, 1 and 2: (open file, number).
    passed: Vec<(OwnedFd, RawFd)>,
}

impl Run {
    pub fn new(program: impl AsRef<OsStr>) -> Self {
        Self::from_command(Command::new(program))
    }

    /// A run of a command set up elsewhere (a lab's shell, for one).
    pub fn from_command(mut command: Command) -> Self {
        // Our own process group, so that a timeout can end everything the
        // run started, and nothing else.
        command.process_group(0);
        Self {
            command,
            stdin: Vec::new(),
            hold_stdin: false,
            limit: DEADLINE,
            passed: Vec::new(),
        }
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.command.args(args);
        self
    }

    pub fn env(mut self, key: &str, value: impl AsRef<OsStr>) -> Self {
        self.command.env(key, value);
        self
    }

    pub fn env_clear(mut self) -> Self {
        self.command.env_clear();
        self
    }

    pub fn current_dir(mut self, dir: &Path) -> Self {
        self.command.current_dir(dir);
        self
    }

    pub fn stdin(mut self, input: impl Into<Vec<u8>>) -> Self {
        self.stdin = input.into();
        self
    }

    /// Hands the program `file` as descriptor number `number`, open across
    /// its exec, as a shell's `exec 7</` does for the commands it runs.
    pub fn pass_fd(mut self, file: impl Into<OwnedFd>, number: RawFd) -> Self {
        self.passed.push((file.into(), number));
        self
    }

    /// Allows the run more time than DEADLINE (a virtual machine's boot).
    pub fn deadline(mut self, limit: Duration) -> Self {
        self.limit = limit;
        self
    }

    /// Keeps stdin open after the input is written, until
    /// `Running::close_stdin`: a container can `read` to wait for the test.
    pub fn hold_stdin(mut self) -> Self {
        self.hold_stdin = true;
        self
    }

    /// Runs to the end and returns the outcome.
    pub fn output(self) -> Result<Outcome> {
        self.spawn()?.finish()
    }

    /// Starts the run; read its stdout line by line with `Running::wait_for_line`.
    pub fn spawn(mut self) -> Result<Running> {
        let shown = format!("{:?}", self.command);
        let passed: Vec<(RawFd, RawFd)> = self
            .passed
            .iter()
            .map(|(file, number)| (file.as_raw_fd(), *number))
            .collect();
        if !passed.is_empty() {
            // SAFETY: between fork and exec only async-signal-safe calls
            // (dup2, fcntl) on descriptors this process owns.
            unsafe {
                self.command.pre_exec(move || {
                    for &(from, to) in &passed {
                        // dup2 clears close-on-exec on the copy; a copy onto
                        // itself keeps the flag, so clear it by hand.
                        if from == to {
                            libc::fcntl(to, libc::F_SETFD, 0);
                        } else if libc::dup2(from, to) == -1 {
                            return Err(std::io::Error::last_os_error());
                        }
                    }
                    Ok(())
                });
            }
        }
        let mut child = self
            .command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("start {shown}"))?;
        let mut stdin = child.stdin.take().expect("piped");
        let input = std::mem::take(&mut self.stdin);
        // A broken pipe is normal here: the command need not read its input.
        let hold = self.hold_stdin;
        let writer = thread::spawn(move || {
            let _ = stdin.write_all(&input);
            hold.then_some(stdin)
        });
        let stdout = lines_of(child.stdout.take().expect("piped"));
        let stderr = whole(child.stderr.take().expect("piped"));
        Ok(Running {
            child,
            stdin: Some(writer),
            shown,
            stdout,
            stderr,
            seen: String::new(),
            deadline: Instant::now() + self.limit,
            limit: self.limit,
            done: false,
        })
    }
}

/// A run in progress. Dropping it before `finish` kills its process group.
pub struct Running {
    child: Child,
    /// The thread writing stdin; it hands the pipe back when it is held open.
    stdin: Option<thread::JoinHandle<Option<ChildStdin>>>,
    shown: String,
    stdout: Receiver<String>,
    stderr: Receiver<String>,
    seen: String,
    deadline: Instant,
    limit: Duration,
    done: bool,
}

impl Running {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Waits until the run prints `line` on stdout.
    pub fn wait_for_line(&mut self, line: &str) -> Result<()> {
        while self
            .next_line()
            .with_context(|| format!("waiting for the line {line:?}"))?
            != line
        {}
        Ok(())
    }

    /// The next line the run prints on stdout, without its newline.
    pub fn next_line(&mut self) -> Result<String> {
        let next = self
            .stdout
            .recv_timeout(self.deadline.saturating_duration_since(Instant::now()));
        match next {
            Ok(got) => {
                self.seen.push_str(&got);
                Ok(got.trim_end_matches('\n').to_owned())
            }
            Err(RecvTimeoutError::Timeout) => {
                bail!("{}: no line within {:?}", self.shown, self.limit)
            }
            Err(RecvTimeoutError::Disconnected) => {
                bail!("{}: stdout closed; it printed {:?}", self.shown, self.seen)
            }
        }
    }

    /// Closes stdin: a container waiting in `read` goes on.
    pub fn close_stdin(&mut self) {
        if let Some(writer) = self.stdin.take() {
            drop(writer.join());
        }
    }

    /// Polls `probe` until it returns Some, or the deadline passes.
    pub fn poll<T>(&self, what: &str, probe: impl FnMut() -> Option<T>) -> Result<T> {
        self.poll_for(what, self.limit, probe)
    }

    /// The same, for at most `limit` (or the run's deadline, if sooner):
    /// for a state that comes within moments when the runtime works.
    pub fn poll_for<T>(
        &self,
        what: &str,
        limit: Duration,
        mut probe: impl FnMut() -> Option<T>,
    ) -> Result<T> {
        let deadline = self.deadline.min(Instant::now() + limit);
        loop {
            if let Some(found) = probe() {
                return Ok(found);
            }
            if Instant::now() > deadline {
                bail!(
                    "{}: {what} did not happen within {:?}",
                    self.shown,
                    limit.min(self.limit)
                );
            }
            if self.has_exited()? {
                bail!("{}: it ended before {what}", self.shown);
            }
            thread::sleep(POLL);
        }
    }

    /// Whether the run's own process has exited, without reaping it: while
    /// it is unreaped, its pid and process group cannot be reused.
    fn has_exited(&self) -> Result<bool> {
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
        let status = waitid(Id::Pid(Pid::from_raw(self.pid())), flags).context("waitid")?;
        Ok(status != WaitStatus::StillAlive)
    }

    /// Waits for the end and returns the outcome.
    pub fn finish(mut self) -> Result<Outcome> {
        self.close_stdin();
        let leader = Pid::from_raw(self.pid());
        while !self.has_exited()? {
            if Instant::now() > self.deadline {
                // What it printed last says where it stuck (a test machine's
                // console, say).
                while let Ok(line) = self.stdout.try_recv() {
                    self.seen.push_str(&line);
                }
                let tail: Vec<&str> = self.seen.lines().rev().take(30).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                bail!(
                    "{}: still running after {:?}; killed. Its last lines on stdout:\n{}",
                    self.shown,
                    self.limit,
                    tail.join("\n")
                );
            }
            thread::sleep(POLL);
        }
        // Anything the run left behind in its group would hold the output
        // pipes open; it is ours to end.
        let _ = killpg(leader, Signal::SIGKILL);
        let status = self.child.wait().context("wait")?;
        self.done = true;
        let status = status
            .code()
            .or(status.signal().map(|n| 128 + n))
            .expect("exited or signalled");
        let left = self.deadline.saturating_duration_since(Instant::now());
        while let Ok(line) = self.stdout.recv_timeout(left) {
            self.seen.push_str(&line);
        }
        let stderr = self.stderr.recv_timeout(left).context("read stderr")?;
        Ok(Outcome {
            status,
            stdout: std::mem::take(&mut self.seen),
            stderr,
        })
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if !self.done {
            // The leader is not reaped yet, so the group id is still ours.
            let _ = killpg(Pid::from_raw(self.pid()), Signal::SIGKILL);
            let _ = self.child.wait();
        }
    }
}

fn lines_of(pipe: impl Read + Send + 'static) -> Receiver<String> {
    let (send, receive) = channel();
    thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        loop {
            let mut line = Vec::new();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if send
                        .send(String::from_utf8_lossy(&line).into_owned())
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
    });
    receive
}

fn whole(mut pipe: impl Read + Send + 'static) -> Receiver<String> {
    let (send, receive) = channel();
    thread::spawn(move || {
        let mut all = Vec::new();
        let _ = pipe.read_to_end(&mut all);
        let _ = send.send(String::from_utf8_lossy(&all).into_owned());
    });
    receive
}
