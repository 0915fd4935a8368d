//! A registry of the workshop's own: Debian's `docker-registry` (the
//! reference implementation of the distribution protocol), started as a
//! child with a configuration and storage of ours, and the demo images of
//! step 06 (`crate::registry_lab`), built by hand as OCI layouts and pushed
//! with skopeo.
//!
//! `just classroom-registry` serves it to a room; step 06's tests start one
//! on a free loopback port for themselves, or on fixed ports in a network
//! lab's own loopback (`crate::registry_lab`). Nothing here talks to any
//! registry but the one it started.

use std::collections::HashMap;
use std::fs;
use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

use crate::http::{self, Server};
use crate::netlab::NetLab;
use crate::oci;
use crate::run::wait_until;

/// Debian's package installs the registry under this name.
const REGISTRY: &str = "docker-registry";

/// A running registry; stopped (and waited for) when dropped.
pub struct Registry {
    child: Child,
    /// Where clients reach it: the listening address, or loopback when it
    /// listens on every address.
    pub reach: SocketAddr,
    /// Its configuration, log and storage (`tamper_blob` edits the last).
    data: PathBuf,
}

impl Registry {
    /// Starts a registry listening on `listen` that keeps its blobs and its
    /// configuration under `data`, and waits until it answers.
    pub fn start(listen: &str, data: &Path) -> Result<Self> {
        Self::start_in(listen, data, None)
    }

    /// The same, in `net`'s host namespace if given: `listen` is then an
    /// address of the lab's (its own loopback), and `reach` is reached from
    /// there (`NetLab::in_host_netns`, or a client run through
    /// `command_prefix`).
    pub fn start_in(listen: &str, data: &Path, net: Option<&NetLab>) -> Result<Self> {
        Self::start_with(listen, data, None, net)
    }

    /// The same registry, asking every client for a bearer token from
    /// `issuer` (the distribution token protocol), as Docker Hub does.
    pub fn start_with_token_auth(listen: &str, data: &Path, issuer: &TokenIssuer) -> Result<Self> {
        Self::start_with_token_auth_in(listen, data, issuer, None)
    }

    /// The same, in `net`'s host namespace if given (see `start_in`); the
    /// issuer must be where the registry's clients reach it, in the lab too.
    pub fn start_with_token_auth_in(
        listen: &str,
        data: &Path,
        issuer: &TokenIssuer,
        net: Option<&NetLab>,
    ) -> Result<Self> {
        let auth = format!(
            "auth:\n  token:\n    realm: {}\n    service: {SERVICE}\n    issuer: {ISSUER}\n    \
             rootcertbundle: {}\n",
            issuer.realm(),
            issuer.certificate.display()
        );
        Self::start_with(listen, data, Some(auth), net)
    }

    fn start_with(
        listen: &str,
        data: &Path,
        auth: Option<String>,
        net: Option<&NetLab>,
    ) -> Result<Self> {
        let listen: SocketAddr = listen
            .to_socket_addrs()
            .with_context(|| format!("the address to listen on, {listen}"))?
            .next()
            .with_context(|| format!("{listen} names no address"))?;
        let storage = data.join("storage");
        fs::create_dir_all(&storage).with_context(|| format!("create {}", storage.display()))?;
        let config = data.join("config.yml");
        // With token auth even /v2/ answers 401 (with the challenge) until
        // a client brings a token; that is the registry up too.
        let ready = if auth.is_some() { 401 } else { 200 };
        let configuration = configuration(listen, &storage) + &auth.unwrap_or_default();
        fs::write(&config, configuration).with_context(|| format!("write {}", config.display()))?;
        // In a lab, through `nsenter --net`, which execs the registry (no
        // fork): the child is the registry itself, its pid ours to signal,
        // and its parent-death signal set by this thread, which lives as
        // long as whoever started the registry (the signal follows the
        // thread that forked, so never fork from a thread in the lab).
        let mut words = net.map(NetLab::command_prefix).unwrap_or_default();
        words.push(REGISTRY.into());
        let mut command = Command::new(&words[0]);
        command.args(&words[1..]);
        // SAFETY: between fork and exec only prctl(2), which is
        // async-signal-safe, runs in the child.
        unsafe {
            command.pre_exec(|| {
                // Never left serving when whoever started it dies.
                nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).map_err(std::io::Error::from)
            });
        }
        let log = data.join("registry.log");
        let child = command
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).with_context(|| format!("create {}", log.display()))?)
            .spawn()
            .with_context(|| format!("start {REGISTRY} (`just classroom-registry` installs it)"))?;
        let reach = if listen.ip().is_unspecified() {
            SocketAddr::from(([127, 0, 0, 1], listen.port()))
        } else {
            listen
        };
        let mut registry = Self {
            child,
            reach,
            data: data.to_path_buf(),
        };
        wait_until(
            "the registry answering on /v2/",
            Duration::from_secs(20),
            || {
                if let Ok(Some(_)) = registry.child.try_wait() {
                    return Some(());
                }
                get_in(net, reach, "/v2/")
                    .ok()
                    .filter(|(status, _)| *status == ready)
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

    /// Changes the bytes of a stored blob, keeping its length, so that the
    /// registry serves wrong bytes under the right digest (as a broken
    /// disk or a hostile mirror would). A registry does not check what it
    /// serves: that is the client's job.
    pub fn tamper_blob(&self, digest: &str) -> Result<()> {
        let hex = digest
            .strip_prefix("sha256:")
            .filter(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
            .with_context(|| format!("not a sha256 digest: {digest:?}"))?;
        let path = self
            .data
            .join("storage/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data");
        let mut bytes = fs::read(&path).with_context(|| format!("read {}", path.display()))?;
        ensure!(!bytes.is_empty(), "{digest} is empty: no byte to change");
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        fs::write(&path, bytes).with_context(|| format!("write {}", path.display()))
    }

    /// Builds the demo images (`registry_lab::DEMO_IMAGES`, the ones the
    /// book's step 06 uses) from `rootfs` in `work` and pushes them;
    /// returns their references as a client on this machine names them.
    /// `creds` (`user:password`) log the push in, for a registry that
    /// asks for tokens.
    pub fn push_workshop_images(
        &self,
        rootfs: &Path,
        work: &Path,
        creds: Option<&str>,
    ) -> Result<Vec<String>> {
        let mut pushed = Vec::new();
        for (name_tag, build) in crate::registry_lab::DEMO_IMAGES {
            let (name, tag) = crate::registry_lab::split_tag(name_tag);
            let layout = work.join("oci").join(name.replace('/', "_"));
            oci::write_layout(&layout, tag, &build(rootfs)?)?;
            let reference = format!("{}/{name}:{tag}", self.reach);
            oci::push(&[], &layout, tag, &reference, oci::Format::Oci, creds)?;
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

/// `get` from `net`'s host namespace, if given: `addr` is then the lab's.
pub fn get_in(net: Option<&NetLab>, addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    match net {
        Some(net) => {
            let path = path.to_owned();
            net.in_host_netns(move || get(addr, &path))
        }
        None => get(addr, path),
    }
}

/// Where `just classroom-registry` keeps the registry and the images.
pub fn classroom_dir() -> PathBuf {
    crate::target_dir().join("ferry").join("classroom")
}

/// A free port on loopback: bound by the kernel's choice, then let go for
/// a registry to take (a moment in which another could take it; rare, and
/// the registry's start then fails saying so).
pub fn free_loopback() -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").context("bind 127.0.0.1:0")?;
    listener.local_addr().context("the address bound")
}

/// The names a token-auth registry and its issuer agree on.
pub const SERVICE: &str = "ferry-test-registry";
pub const ISSUER: &str = "ferry-test-issuer";
/// The one account the issuer knows (`user:password`): it may push.
pub const PUSHER: &str = "pusher:secret";

/// A token issuer of the distribution token protocol (what auth.docker.io
/// is to Docker Hub), on a free loopback port (or a lab's, `start_in`),
/// until dropped. It answers `GET /token?service=…&scope=…` with an RS256
/// JWT: everything asked for to `PUSHER`, `pull` of the allowed
/// repositories to anyone, nothing else (an empty access list; a wrong
/// password gets 401).
pub struct TokenIssuer {
    pub addr: SocketAddr,
    certificate: PathBuf,
    seen: Arc<Mutex<Vec<IssuerRequest>>>,
    _server: Server,
}

/// One request the issuer answered.
#[derive(Debug, Clone)]
pub struct IssuerRequest {
    pub method: String,
    /// The path and query as sent (percent-encoded).
    pub target: String,
    /// Whether it carried an Authorization header.
    pub authorization: bool,
    pub account: Option<String>,
    /// The `scope` parameters, decoded: `repository:ferry/busybox:pull`.
    pub scopes: Vec<String>,
}

impl TokenIssuer {
    /// Makes a key and a self-signed certificate in `dir` (with the openssl
    /// command) and starts answering; anonymous clients may pull the
    /// repositories in `anonymous_pull`. It listens on `listen`, which is
    /// also where the realm it names sends clients.
    pub fn start(dir: &Path, anonymous_pull: &[&str], listen: SocketAddr) -> Result<Self> {
        Self::start_at(dir, anonymous_pull, listen, None)
    }

    /// The same issuer on 127.0.0.1:`port` of `net`'s host namespace: its
    /// listener and threads are there, and so the realm it names is the
    /// lab's.
    pub fn start_in(net: &NetLab, port: u16, dir: &Path, anonymous_pull: &[&str]) -> Result<Self> {
        Self::start_at(
            dir,
            anonymous_pull,
            SocketAddr::from(([127, 0, 0, 1], port)),
            Some(net),
        )
    }

    fn start_at(
        dir: &Path,
        anonymous_pull: &[&str],
        listen: SocketAddr,
        net: Option<&NetLab>,
    ) -> Result<Self> {
        fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        let key = dir.join("issuer-key.pem");
        let certificate = dir.join("issuer-cert.pem");
        tool(
            Command::new("openssl")
                .args([
                    "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                ])
                .args(["-subj", &format!("/CN={ISSUER}"), "-keyout"])
                .arg(&key)
                .arg("-out")
                .arg(&certificate),
            "openssl req (the token issuer's key and certificate)",
        )?;
        // A PEM body is the standard base64 of the DER: x5c's very form.
        let pem = fs::read_to_string(&certificate)
            .with_context(|| format!("read {}", certificate.display()))?;
        let der: String = pem
            .lines()
            .filter(|line| !line.starts_with("-----"))
            .collect();
        let header = format!(r#"{{"typ":"JWT","alg":"RS256","x5c":["{der}"]}}"#);
        let issuing = Issuing {
            key,
            header: base64(header.as_bytes(), true),
            anonymous_pull: anonymous_pull.iter().map(|name| name.to_string()).collect(),
            next: AtomicU64::new(0),
        };
        let seen = Arc::new(Mutex::new(Vec::new()));
        let recording = Arc::clone(&seen);
        let server = Server::start_at("token issuer", listen, net, move |stream| {
            let Some((head, _)) = http::read_request(&stream)? else {
                return Ok(());
            };
            let (status, body) = issuing.answer(&head, &recording)?;
            let json = [("Content-Type".to_owned(), "application/json".to_owned())];
            let line = format!("HTTP/1.1 {status} {}", http::reason(status));
            http::respond(&stream, &line, &json, Some(body.as_bytes()))
        })?;
        Ok(Self {
            addr: server.addr,
            certificate,
            seen,
            _server: server,
        })
    }

    /// Where the registry sends clients for a token.
    pub fn realm(&self) -> String {
        format!("http://{}/token", self.addr)
    }

    /// The certificate that signs the tokens (the registry's root bundle).
    pub fn certificate(&self) -> &Path {
        &self.certificate
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<IssuerRequest> {
        locked(&self.seen).clone()
    }

    /// Whether some request asked for `scope` (`repository:NAME:pull`).
    pub fn saw_scope(&self, scope: &str) -> bool {
        locked(&self.seen)
            .iter()
            .any(|request| request.scopes.iter().any(|seen| seen == scope))
    }
}

/// What the issuer's connection threads share.
struct Issuing {
    key: PathBuf,
    /// The JWT header, encoded already.
    header: String,
    anonymous_pull: Vec<String>,
    next: AtomicU64,
}

impl Issuing {
    /// The status and JSON body for one request, which it records.
    fn answer(&self, head: &http::Head, seen: &Mutex<Vec<IssuerRequest>>) -> Result<(u16, String)> {
        let mut words = head.line.split_whitespace();
        let method = words.next().unwrap_or_default().to_owned();
        let target = words.next().unwrap_or_default().to_owned();
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        let params: Vec<(String, String)> = query
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .map(|(key, value)| (percent_decode(key), percent_decode(value)))
            .collect();
        let param = |name: &str| -> Vec<String> {
            params
                .iter()
                .filter(|(key, _)| key == name)
                .map(|(_, value)| value.clone())
                .collect()
        };
        // One scope parameter may hold several, separated by spaces.
        let scopes: Vec<String> = param("scope")
            .iter()
            .flat_map(|scope| {
                scope
                    .split(' ')
                    .filter(|scope| !scope.is_empty())
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .collect();
        let authorization = head.header("authorization");
        locked(seen).push(IssuerRequest {
            method: method.clone(),
            target: target.clone(),
            authorization: authorization.is_some(),
            account: param("account").pop(),
            scopes: scopes.clone(),
        });
        if method != "GET" || path != "/token" {
            return Ok((404, r#"{"errors":[{"code":"NOT_FOUND"}]}"#.into()));
        }
        let pusher = match authorization {
            None => false,
            Some(given) if given == format!("Basic {}", base64(PUSHER.as_bytes(), false)) => true,
            Some(_) => return Ok((401, r#"{"errors":[{"code":"UNAUTHORIZED"}]}"#.into())),
        };
        let access: Vec<Value> = scopes
            .iter()
            .filter_map(|scope| {
                let (kind, rest) = scope.split_once(':')?;
                let (name, actions) = rest.rsplit_once(':')?;
                let actions: Vec<&str> = actions
                    .split(',')
                    .filter(|action| {
                        pusher
                            || (*action == "pull"
                                && kind == "repository"
                                && self.anonymous_pull.iter().any(|allowed| allowed == name))
                    })
                    .collect();
                (!actions.is_empty())
                    .then(|| json!({ "type": kind, "name": name, "actions": actions }))
            })
            .collect();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .context("the clock is before 1970")?
            .as_secs();
        let subject = if pusher { "pusher" } else { "" };
        let claims = json!({
            "iss": ISSUER,
            "sub": subject,
            "aud": param("service").pop().unwrap_or_default(),
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": format!("{}-{}", std::process::id(), self.next.fetch_add(1, Ordering::SeqCst)),
            "access": access,
        });
        let signed = format!(
            "{}.{}",
            self.header,
            base64(claims.to_string().as_bytes(), true)
        );
        let signature = self.sign(signed.as_bytes())?;
        let token = format!("{signed}.{}", base64(&signature, true));
        let body = json!({
            "token": token,
            "access_token": token,
            "expires_in": 300,
            "issued_at": rfc3339(now),
        });
        Ok((200, body.to_string()))
    }

    /// RSASSA-PKCS1-v1_5 with SHA-256 (JWS's RS256) of `input`.
    fn sign(&self, input: &[u8]) -> Result<Vec<u8>> {
        let mut openssl = Command::new("openssl")
            .args(["dgst", "-sha256", "-sign"])
            .arg(&self.key)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("start openssl dgst")?;
        openssl
            .stdin
            .take()
            .context("openssl's stdin")?
            .write_all(input)
            .context("write to openssl dgst")?;
        let output = openssl
            .wait_with_output()
            .context("wait for openssl dgst")?;
        ensure!(
            output.status.success(),
            "openssl dgst failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
        Ok(output.stdout)
    }
}

/// An HTTP proxy in front of a registry, on a free loopback port (or a
/// lab's, `start_in`), until dropped: it forwards every request and records
/// it, or answers a path itself with what a test gave (a manifest no real
/// registry would store).
/// Each connection carries one request; bodies are read whole and sent on
/// with a Content-Length, everything else (401s, redirects) unchanged.
pub struct Proxy {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
    canned: Arc<Mutex<HashMap<String, Canned>>>,
    _server: Server,
}

/// A response the proxy gives itself: status, headers, body.
type Canned = (u16, Vec<(String, String)>, Vec<u8>);

impl Proxy {
    pub fn start(upstream: SocketAddr) -> Result<Self> {
        Self::start_at(upstream, SocketAddr::from(([127, 0, 0, 1], 0)), None)
    }

    /// The same proxy on 127.0.0.1:`port` of `net`'s host namespace, with
    /// `upstream` an address there: its threads are in the lab, so it
    /// connects upstream from there too.
    pub fn start_in(net: &NetLab, port: u16, upstream: SocketAddr) -> Result<Self> {
        Self::start_at(
            upstream,
            SocketAddr::from(([127, 0, 0, 1], port)),
            Some(net),
        )
    }

    fn start_at(upstream: SocketAddr, listen: SocketAddr, net: Option<&NetLab>) -> Result<Self> {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let canned: Arc<Mutex<HashMap<String, Canned>>> = Arc::default();
        let (recording, answers) = (Arc::clone(&seen), Arc::clone(&canned));
        let server = Server::start_at("registry proxy", listen, net, move |client| {
            let Some((head, body)) = http::read_request(&client)? else {
                return Ok(());
            };
            let mut words = head.line.split_whitespace();
            let method = words.next().unwrap_or_default();
            let target = words.next().unwrap_or_default();
            locked(&recording).push(format!("{method} {target}"));
            let path = target.split('?').next().unwrap_or_default();
            let own = locked(&answers).get(path).cloned();
            match own {
                Some((status, mut headers, body)) => {
                    let line = format!("HTTP/1.1 {status} {}", http::reason(status));
                    if method == "HEAD" {
                        headers.push(("Content-Length".into(), body.len().to_string()));
                        http::respond(&client, &line, &headers, None)
                    } else {
                        http::respond(&client, &line, &headers, Some(&body))
                    }
                }
                None => forward(&client, upstream, &head, &body),
            }
        })?;
        Ok(Self {
            addr: server.addr,
            seen,
            canned,
            _server: server,
        })
    }

    /// `"METHOD /path?query"` of every request so far, in order.
    pub fn requests(&self) -> Vec<String> {
        locked(&self.seen).clone()
    }

    /// Forgets the requests so far.
    pub fn clear(&self) {
        locked(&self.seen).clear();
    }

    /// From now on answers requests for `path` (any method, any query)
    /// itself; a HEAD gets the headers and the body's length only.
    pub fn serve(&self, path: &str, status: u16, headers: &[(&str, &str)], body: Vec<u8>) {
        let headers = headers
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect();
        locked(&self.canned).insert(path.to_owned(), (status, headers, body));
    }
}

/// Sends one request upstream, reads the whole response and passes it on.
fn forward(client: &TcpStream, upstream: SocketAddr, head: &http::Head, body: &[u8]) -> Result<()> {
    let mut registry = TcpStream::connect_timeout(&upstream, Duration::from_secs(5))
        .with_context(|| format!("connect to {upstream}"))?;
    registry.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut request = format!("{}\r\n", head.line);
    for (key, value) in head.end_to_end() {
        request.push_str(&format!("{key}: {value}\r\n"));
    }
    if !body.is_empty() || head.header("content-length").is_some() {
        request.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    request.push_str("Connection: close\r\n\r\n");
    let mut bytes = request.into_bytes();
    bytes.extend_from_slice(body);
    registry
        .write_all(&bytes)
        .with_context(|| format!("send {:?} to {upstream}", head.line))?;
    let mut reader = BufReader::new(&registry);
    let response = http::read_head(&mut reader)?
        .with_context(|| format!("{upstream} closed without answering {:?}", head.line))?;
    let status: u16 = response
        .line
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("no status in {:?}", response.line))?;
    let mut headers: Vec<(String, String)> = response.end_to_end().cloned().collect();
    // These have no body, whatever their headers say: pass the headers on.
    if head.line.starts_with("HEAD ") || status == 204 || status == 304 || status < 200 {
        if let Some(length) = response.header("content-length") {
            headers.push(("Content-Length".into(), length.to_owned()));
        }
        return http::respond(client, &response.line, &headers, None);
    }
    let body = http::read_body(&mut reader, &response, true)?;
    http::respond(client, &response.line, &headers, Some(&body))
}

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A thread that panicked holding it left plain data, still readable.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Base64 of `bytes`: padded standard (RFC 4648 §4) or, `url`, unpadded
/// URL-safe (§5), as JWTs are written.
fn base64(bytes: &[u8], url: bool) -> String {
    let alphabet: &[u8; 64] = if url {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    } else {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    };
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let group = chunk.iter().enumerate().fold(0u32, |group, (i, &byte)| {
            group | u32::from(byte) << (16 - 8 * i)
        });
        for i in 0..=chunk.len() {
            out.push(char::from(alphabet[(group >> (18 - 6 * i)) as usize & 63]));
        }
        if !url {
            out.push_str(&"=="[chunk.len() - 1..]);
        }
    }
    out
}

/// `%3A` to `:`, `+` to space, as a query string is encoded.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `2024-05-01T12:00:00Z` for seconds since 1970 (UTC; days to a civil
/// date after Howard Hinnant's `civil_from_days`).
fn rfc3339(secs: u64) -> String {
    let days = (secs / 86400) as i64 + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    let time = secs % 86400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        time / 3600,
        time / 60 % 60,
        time % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_both_alphabets() {
        assert_eq!(base64(b"pusher:secret", false), "cHVzaGVyOnNlY3JldA==");
        assert_eq!(base64(b"ab", false), "YWI=");
        assert_eq!(base64(b"abc", false), "YWJj");
        assert_eq!(base64(&[0xfb, 0xff], true), "-_8");
    }

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_714_564_800), "2024-05-01T12:00:00Z");
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(
            percent_decode("repository%3Aferry%2Fbusybox%3Apull%2Cpush"),
            "repository:ferry/busybox:pull,push"
        );
        assert_eq!(percent_decode("a+b%zz"), "a b%zz");
    }
}
