//! The OCI distribution protocol, the client's half: what Docker, skopeo
//! and containerd say to a registry, by hand.
//!
//! ```text
//!   GET /v2/NAME/manifests/TAG              → 401 WWW-Authenticate: Bearer realm=…,service=…,scope=…
//!   GET REALM?service=…&scope=…             → {"token": "…", "expires_in": 300}
//!   GET /v2/NAME/manifests/TAG  (Bearer …)  → the manifest (or an index of manifests)
//!   GET /v2/NAME/blobs/DIGEST   (Bearer …)  → the config, then each layer
//! ```
//!
//! A registry on this machine (localhost, 127.0.0.0/8, ::1) is spoken to
//! over plain HTTP, as Docker does; every other one over HTTPS, unless it
//! is named with --insecure-registry.

use std::io::Read;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ureq::Agent;
use ureq::http::{Response, StatusCode};

use crate::digest::Digest;
use crate::reference::Reference;

// ANCHOR: accept
/// The manifest formats we read, in the order we prefer them. A registry
/// answers a client that sends no Accept header with the old schema 1, or,
/// for an image that exists only as an index, with a 404.
pub const MANIFEST_TYPES: [&str; 4] = [OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST];
// ANCHOR_END: accept
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// A manifest or an index is small; a bigger one is a mistake or an attack.
const MANIFEST_LIMIT: u64 = 4 << 20;

/// "user:password", from $FERRY_AUTH or --username and --password-stdin.
/// Never printed: Debug says only that there is one.
#[derive(Clone)]
pub struct Credentials(pub String);

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials(…)")
    }
}

/// A connection to one repository of one registry.
pub struct Registry {
    agent: Agent,
    /// `http://127.0.0.1:5000` or `https://registry-1.docker.io`.
    base: String,
    repository: String,
    credentials: Option<Credentials>,
    /// Shared by the threads that download layers.
    auth: Mutex<Option<Authorization>>,
}

#[derive(Clone)]
struct Authorization {
    header: String,
    /// None for Basic, which does not expire.
    expires: Option<Instant>,
}

impl Registry {
    // ANCHOR: new
    pub fn new(
        reference: &Reference,
        insecure: &[String],
        credentials: Option<Credentials>,
    ) -> Self {
        let host = reference.api_host();
        let scheme = if is_loopback(host) || insecure.iter().any(|name| name == host) {
            "http"
        } else {
            "https"
        };
        let config = Agent::config_builder()
            // 401 and 404 are answers we read, not errors.
            .http_status_as_error(false)
            // Blob downloads are redirected to storage hosts (S3, a CDN):
            // our token is for the registry and must not go with them.
            .redirect_auth_headers(ureq::config::RedirectAuthHeaders::SameHost)
            .timeout_connect(Some(Duration::from_secs(15)))
            .user_agent(concat!("ferry-step06/", env!("CARGO_PKG_VERSION")))
            .build();
        Self {
            agent: config.into(),
            base: format!("{scheme}://{host}"),
            repository: reference.repository.clone(),
            credentials,
            auth: Mutex::new(None),
        }
    }
    // ANCHOR_END: new

    /// The manifest (or index) that `reference` names: its bytes and media type.
    pub fn manifest(&self, reference: &str) -> Result<(Vec<u8>, String)> {
        let path = format!("/v2/{}/manifests/{reference}", self.repository);
        let mut response = self.get(&path, &MANIFEST_TYPES.join(", "))?;
        let media_type = response
            .headers()
            .get("content-type")
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_owned();
        let body = response
            .body_mut()
            .with_config()
            .limit(MANIFEST_LIMIT)
            .read_to_vec()
            .with_context(|| format!("read the manifest {reference}"))?;
        Ok((body, media_type))
    }

    /// A reader of the blob's bytes, as the registry sends them (unchecked:
    /// the caller hashes them).
    pub fn blob(&self, digest: &Digest) -> Result<impl Read + Send + 'static> {
        let path = format!("/v2/{}/blobs/{digest}", self.repository);
        Ok(self.get(&path, "*/*")?.into_body().into_reader())
    }

    // ANCHOR: get
    /// GET, authenticating when the registry asks to.
    fn get(&self, path: &str, accept: &str) -> Result<Response<ureq::Body>> {
        let url = format!("{}{path}", self.base);
        let send = |auth: Option<&Authorization>| {
            let mut request = self.agent.get(&url).header("Accept", accept);
            if let Some(auth) = auth {
                request = request.header("Authorization", &auth.header);
            }
            request.call().with_context(|| format!("GET {url}"))
        };
        let mut response = send(self.current_auth().as_ref())?;
        if response.status() == StatusCode::UNAUTHORIZED {
            let challenge = response
                .headers()
                .get("www-authenticate")
                .and_then(|value| value.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let auth = self.authenticate(&challenge)?;
            response = send(Some(&auth))?;
        }
        match response.status() {
            status if status.is_success() => Ok(response),
            status => bail!(
                "GET {url}: {status}{}",
                registry_errors(&mut response, &self.repository)
            ),
        }
    }
    // ANCHOR_END: get

    fn current_auth(&self) -> Option<Authorization> {
        let auth = self.auth.lock().expect("no thread panics holding it");
        auth.clone()
            .filter(|auth| auth.expires.is_none_or(|at| Instant::now() < at))
    }

    // ANCHOR: authenticate
    /// Answers a 401's challenge: Basic with our credentials, or Bearer with
    /// a token from the realm the registry named.
    fn authenticate(&self, challenge: &str) -> Result<Authorization> {
        let (scheme, params) = challenge.split_once(' ').unwrap_or((challenge, ""));
        let params = parse_challenge(params);
        let param = |key: &str| {
            params
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .map(|(_, v)| v.as_str())
        };
        let auth = if scheme.eq_ignore_ascii_case("basic") {
            let credentials = self
                .credentials
                .as_ref()
                .context("the registry wants a user name and password ($FERRY_AUTH, or --username and --password-stdin)")?;
            Authorization {
                header: format!("Basic {}", base64(credentials.0.as_bytes())),
                expires: None,
            }
        } else if scheme.eq_ignore_ascii_case("bearer") {
            let realm = param("realm").context("a Bearer challenge without a realm")?;
            self.token(realm, param("service"), param("scope"))?
        } else {
            bail!("the registry asks for authentication this client cannot give: {challenge:?}");
        };
        *self.auth.lock().expect("no thread panics holding it") = Some(auth.clone());
        Ok(auth)
    }

    /// GET REALM?service=…&scope=…: the token service gives a token for
    /// the scope, anonymous or for our credentials.
    fn token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: Option<&str>,
    ) -> Result<Authorization> {
        // ANCHOR: lab06-2-token Get a token: GET the realm with service and scope (and Basic credentials if any); read token or access_token and expires_in (token) [06-registry-pull.md#the-token-dance]
        // Without a scope in the challenge (a GET /v2/), ask for what we are about to do.
        let scope = scope.map_or_else(
            || format!("repository:{}:pull", self.repository),
            str::to_owned,
        );
        let mut request = self.agent.get(realm).query("scope", &scope);
        if let Some(service) = service {
            request = request.query("service", service);
        }
        if let Some(credentials) = &self.credentials {
            request = request.header(
                "Authorization",
                &format!("Basic {}", base64(credentials.0.as_bytes())),
            );
        }
        let asked = Instant::now();
        let mut response = request
            .call()
            .with_context(|| format!("GET a token from {realm}"))?;
        if !response.status().is_success() {
            bail!("the token service {realm} refused: {}", response.status());
        }
        let body = response
            .body_mut()
            .with_config()
            .limit(1 << 20)
            .read_to_vec()
            .with_context(|| format!("read the token from {realm}"))?;
        let body: serde_json::Value = serde_json::from_slice(&body)
            .with_context(|| format!("the token service {realm} sent no JSON"))?;
        // `token` in the distribution spec, `access_token` in OAuth 2.
        let token = body["token"]
            .as_str()
            .or_else(|| body["access_token"].as_str())
            .filter(|token| !token.is_empty())
            .with_context(|| format!("the token service {realm} sent no token"))?;
        // The spec's default is 60 seconds; renew a little early.
        let lifetime = body["expires_in"].as_u64().unwrap_or(60).max(10);
        Ok(Authorization {
            header: format!("Bearer {token}"),
            expires: Some(asked + Duration::from_secs(lifetime - 5)),
        })
        // ANCHOR_END: lab06-2-token
    }
    // ANCHOR_END: authenticate
}

/// `realm="https://auth.docker.io/token",service="registry.docker.io"`:
/// key="value" pairs, where a value may hold commas
/// (`scope="repository:a:pull,push"`).
fn parse_challenge(params: &str) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    let mut rest = params.trim();
    while let Some((key, after)) = rest.split_once('=') {
        let key = key.trim().trim_start_matches(',').trim().to_owned();
        let (value, after) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"').unwrap_or(quoted.len());
            (&quoted[..end], quoted.get(end + 1..).unwrap_or(""))
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        pairs.push((key, value.to_owned()));
        rest = after.trim_start_matches(',').trim();
    }
    pairs
}

/// What a registry says when it refuses: `{"errors": [{"code": …, "message": …}]}`.
fn registry_errors(response: &mut Response<ureq::Body>, repository: &str) -> String {
    let status = response.status();
    let body: serde_json::Value = response
        .body_mut()
        .with_config()
        .limit(64 << 10)
        .read_to_vec()
        .ok()
        .and_then(|body| serde_json::from_slice(&body).ok())
        .unwrap_or_default();
    let said: Vec<String> = body["errors"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|error| {
            format!(
                "{} ({})",
                error["message"].as_str().unwrap_or_default(),
                error["code"].as_str().unwrap_or_default()
            )
        })
        .collect();
    let hint = match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
            format!(": access to {repository} denied (it does not exist, or needs credentials)")
        }
        StatusCode::NOT_FOUND => String::from(": no such image"),
        _ => String::new(),
    };
    if said.is_empty() {
        hint
    } else {
        format!("{hint}: {}", said.join("; "))
    }
}

/// localhost, 127.0.0.0/8 and ::1, with or without a port.
fn is_loopback(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next().unwrap_or_default(),
        None => host.split(':').next().unwrap_or_default(),
    };
    name == "localhost" || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Standard base64, for a Basic header: small enough to write out.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | (b as u32) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_are_read_with_commas_in_quotes() {
        let pairs = parse_challenge(
            r#"realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:a:pull,push""#,
        );
        assert_eq!(
            pairs,
            vec![
                ("realm".into(), "https://auth.docker.io/token".into()),
                ("service".into(), "registry.docker.io".into()),
                ("scope".into(), "repository:a:pull,push".into()),
            ]
        );
    }

    #[test]
    fn loopback_hosts_are_plain_http() {
        for host in [
            "localhost:5000",
            "127.0.0.1:5000",
            "127.1.2.3",
            "[::1]:5000",
            "localhost",
        ] {
            assert!(is_loopback(host), "{host}");
        }
        for host in ["registry-1.docker.io", "10.0.0.1:5000", "[fe80::1]:5000"] {
            assert!(!is_loopback(host), "{host}");
        }
    }

    #[test]
    fn base64_pads() {
        assert_eq!(base64(b"user:pass"), "dXNlcjpwYXNz");
        assert_eq!(base64(b"a:b"), "YTpi");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"a"), "YQ==");
    }
}
