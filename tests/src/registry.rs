//! A registry of the workshop's own: Debian's `docker-registry` (the
//! reference implementation of the distribution protocol), started as a
//! child with a configuration and storage of ours, and the workshop images,
//! built from the workshop rootfs with umoci and pushed with skopeo.
//!
//! `just classroom-registry` serves it to a room; step 06's tests start one
//! on a free loopback port for themselves. Nothing here talks to any
//! registry but the one it started.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::run::wait_until;

/// Debian's package installs the registry under this name.
const REGISTRY: &str = "docker-registry";

/// The workshop images: (repository, tag, the command it runs by default).
pub const IMAGES: [(&str, &str, &str); 1] = [("ferry/busybox", "latest", "/bin/sh")];

/// A running registry; stopped (and waited for) when dropped.
pub struct Registry {
    child: Child,
    /// Where clients reach it: the listening address, or loopback when it
    /// listens on every address.
    pub reach: SocketAddr,
}

impl Registry {
    /// Starts a registry listening on `listen` that keeps its blobs and its
    /// configuration under `data`, and waits until it answers.
    pub fn start(listen: &str, data: &Path) -> Result<Self> {
        let listen: SocketAddr = listen
            .to_socket_addrs()
            .with_context(|| format!("the address to listen on, {listen}"))?
            .next()
            .with_context(|| format!("{listen} names no address"))?;
        let storage = data.join("storage");
        fs::create_dir_all(&storage).with_context(|| format!("create {}", storage.display()))?;
        let config = data.join("config.yml");
        fs::write(&config, configuration(listen, &storage))
            .with_context(|| format!("write {}", config.display()))?;
        let mut command = Command::new(REGISTRY);
        // SAFETY: between fork and exec only prctl(2), which is
        // async-signal-safe, runs in the child.
        unsafe {
            command.pre_exec(|| {
                // Never left serving when whoever started it dies.
                nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).map_err(std::io::Error::from)
            });
        }
        let child = command
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(data.join("registry.log"))?)
            .spawn()
            .with_context(|| format!("start {REGISTRY} (`just classroom-registry` installs it)"))?;
        let reach = if listen.ip().is_unspecified() {
            SocketAddr::from(([127, 0, 0, 1], listen.port()))
        } else {
            listen
        };
        let mut registry = Self { child, reach };
        let log = data.join("registry.log");
        wait_until(
            "the registry answering on /v2/",
            Duration::from_secs(20),
            || {
                if let Ok(Some(_)) = registry.child.try_wait() {
                    return Some(());
                }
                get(reach, "/v2/")
                    .ok()
                    .filter(|(status, _)| *status == 200)
                    .map(|_| ())
            },
        )?;
        if let Some(status) = registry.child.try_wait()? {
            bail!(
                "{REGISTRY} exited ({status}) before it answered; is {listen} in use already? \
                 Its log:\n{}",
                fs::read_to_string(&log).unwrap_or_default().trim()
            );
        }
        Ok(registry)
    }

    /// Builds the workshop images from `rootfs` in `work` and pushes them;
    /// returns their references as a client on this machine names them.
    pub fn push_workshop_images(&self, rootfs: &Path, work: &Path) -> Result<Vec<String>> {
        let mut pushed = Vec::new();
        for (repository, tag, command) in IMAGES {
            let layout = work.join("oci");
            build_image(rootfs, &layout, tag, command, work)?;
            let reference = format!("{}/{repository}:{tag}", self.reach);
            tool(
                Command::new("skopeo")
                    .args(["copy", "--quiet", "--dest-tls-verify=false"])
                    .arg(format!("oci:{}:{tag}", layout.display()))
                    .arg(format!("docker://{reference}")),
                "skopeo copy",
            )?;
            pushed.push(reference);
        }
        Ok(pushed)
    }

    /// Waits for the registry to exit by itself (for `just
    /// classroom-registry`, whose Ctrl-C reaches it too).
    pub fn wait(mut self) -> Result<()> {
        self.child.wait().context("wait for the registry")?;
        Ok(())
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        // Our own child, by the pid we started it with.
        if let Ok(None) = self.child.try_wait() {
            let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        }
        let _ = self.child.wait();
    }
}

/// The registry's configuration: plain HTTP (a loopback or classroom
/// registry has no certificate; clients are told it is insecure), storage
/// on disk, deletes allowed so that tests can remove what they pushed.
fn configuration(listen: SocketAddr, storage: &Path) -> String {
    format!(
        "version: 0.1\n\
         log:\n  level: warn\n  accesslog:\n    disabled: false\n\
         storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
         http:\n  addr: {listen}\n",
        storage.display()
    )
}

/// An OCI image layout at `layout` holding `tag`: one layer, the whole
/// `rootfs`, and a config whose command is `command`.
fn build_image(rootfs: &Path, layout: &Path, tag: &str, command: &str, work: &Path) -> Result<()> {
    let image = format!("{}:{tag}", layout.display());
    let bundle = work.join("bundle");
    for dir in [layout, &bundle] {
        if dir.exists() {
            fs::remove_dir_all(dir).with_context(|| format!("remove {}", dir.display()))?;
        }
    }
    tool(
        Command::new("umoci").args(["init", "--layout"]).arg(layout),
        "umoci init",
    )?;
    tool(
        Command::new("umoci").args(["new", "--image", &image]),
        "umoci new",
    )?;
    tool(
        Command::new("umoci")
            .args(["unpack", "--image", &image])
            .arg(&bundle),
        "umoci unpack",
    )?;
    tool(
        Command::new("cp")
            .arg("-a")
            .arg(rootfs.join("."))
            .arg(bundle.join("rootfs")),
        "copy the rootfs into the bundle",
    )?;
    tool(
        Command::new("umoci")
            .args(["repack", "--image", &image])
            .arg(&bundle),
        "umoci repack",
    )?;
    tool(
        Command::new("umoci").args([
            "config",
            "--image",
            &image,
            "--config.cmd",
            command,
            "--config.env",
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        ]),
        "umoci config",
    )?;
    fs::remove_dir_all(&bundle).with_context(|| format!("remove {}", bundle.display()))
}

/// Runs a tool and fails with what it printed if it fails.
fn tool(command: &mut Command, what: &str) -> Result<()> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("{what}: start {:?}", command.get_program()))?;
    ensure!(
        output.status.success(),
        "{what} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(())
}

/// A plain HTTP/1.1 GET of `path`: the status and the body. Enough to ask a
/// registry on this machine whether it holds something; step 06 is where
/// the protocol is taught.
pub fn get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .with_context(|| format!("connect to {addr}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("no HTTP status from {addr}: {response:?}"))?;
    let body = response
        .split_once("\r\n\r\n")
        .map_or("", |(_, body)| body)
        .to_owned();
    Ok((status, body))
}

/// Where `just classroom-registry` keeps the registry and the images.
pub fn classroom_dir() -> PathBuf {
    crate::target_dir().join("ferry").join("classroom")
}
