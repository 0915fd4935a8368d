//! Just enough HTTP/1.1 for the token issuer and the proxy in
//! `crate::registry`: one request per connection, bodies read whole
//! (Content-Length or chunked), every response sent with a Content-Length
//! and `Connection: close`. std::net only; a server thread per listener
//! and one per connection, all joined when the server is dropped.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::netlab::NetLab;

/// How long a connection may sit silent before it is dropped, so that no
/// connection thread outlives its server for long.
const SILENCE: Duration = Duration::from_secs(30);

/// A listener answering each connection with `handle` in a thread of its
/// own, until dropped.
pub(crate) struct Server {
    pub addr: SocketAddr,
    /// The listening socket (a clone of the accept thread's): shut down to
    /// wake that thread, from whichever namespace the server is dropped in.
    listener: TcpListener,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl Server {
    /// A server on `listen`, in `net`'s host namespace if given: the
    /// listener is bound, and the accept thread started, from a thread in
    /// that namespace, so the connection threads (and what they connect
    /// to, as the proxy does upstream) are in it too.
    pub fn start_at(
        what: &str,
        listen: SocketAddr,
        net: Option<&NetLab>,
        handle: impl Fn(TcpStream) -> Result<()> + Send + Sync + 'static,
    ) -> Result<Self> {
        let what = what.to_owned();
        let start = move || serve(what, listen, handle);
        let (listener, stop, accept) = match net {
            Some(net) => net.in_host_netns(start)?,
            None => start()?,
        };
        Ok(Self {
            addr: listener.local_addr()?,
            listener,
            stop,
            accept: Some(accept),
        })
    }
}

/// The listener and its accept thread, in the calling thread's namespace.
fn serve(
    what: String,
    listen: SocketAddr,
    handle: impl Fn(TcpStream) -> Result<()> + Send + Sync + 'static,
) -> Result<(TcpListener, Arc<AtomicBool>, JoinHandle<()>)> {
    let listener = TcpListener::bind(listen).with_context(|| format!("{what}: bind {listen}"))?;
    let waker = listener
        .try_clone()
        .with_context(|| format!("{what}: clone the listener"))?;
    let stop = Arc::new(AtomicBool::new(false));
    let stopping = Arc::clone(&stop);
    let handle = Arc::new(handle);
    let accept = thread::Builder::new()
        .name(what.clone())
        .spawn(move || {
            let mut connections: Vec<JoinHandle<()>> = Vec::new();
            for stream in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let handle = Arc::clone(&handle);
                let what = what.clone();
                connections.retain(|connection| !connection.is_finished());
                connections.push(thread::spawn(move || {
                    let _ = stream.set_read_timeout(Some(SILENCE));
                    if let Err(error) = handle(stream) {
                        eprintln!("{what}: {error:#}");
                    }
                }));
            }
            for connection in connections {
                let _ = connection.join();
            }
        })
        .context("start the server thread")?;
    Ok((waker, stop, accept))
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // accept(2) returns for a connection, or (Linux) with EINVAL once
        // its listening socket is shut down. Connecting would do only from
        // the server's own network namespace; shutting down does from any.
        // SAFETY: shutdown(2) on a descriptor this server owns, still open.
        let shut = unsafe { libc::shutdown(self.listener.as_raw_fd(), libc::SHUT_RDWR) };
        // Should it ever fail, the thread is left to end with the process
        // rather than waited for forever.
        if let Some(accept) = self.accept.take().filter(|_| shut == 0) {
            let _ = accept.join();
        }
    }
}

/// A request or response head: the first line and the headers, in order.
pub(crate) struct Head {
    pub line: String,
    pub headers: Vec<(String, String)>,
}

impl Head {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// The headers without those naming how this one connection carries a
    /// message, which each side sets for itself.
    pub fn end_to_end(&self) -> impl Iterator<Item = &(String, String)> {
        const HOP: [&str; 6] = [
            "connection",
            "keep-alive",
            "proxy-connection",
            "transfer-encoding",
            "content-length",
            "expect",
        ];
        self.headers
            .iter()
            .filter(|(key, _)| !HOP.iter().any(|hop| key.eq_ignore_ascii_case(hop)))
    }
}

/// Reads a head; None when the peer closed the connection before one.
pub(crate) fn read_head(reader: &mut impl BufRead) -> Result<Option<Head>> {
    let mut line = String::new();
    if reader.read_line(&mut line).context("read a head")? == 0 {
        return Ok(None);
    }
    let mut headers = Vec::new();
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).context("read a header")? == 0 {
            bail!("the connection closed inside a head");
        }
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let (key, value) = header
            .split_once(':')
            .with_context(|| format!("not a header: {header:?}"))?;
        headers.push((key.trim().to_owned(), value.trim().to_owned()));
    }
    Ok(Some(Head {
        line: line.trim_end().to_owned(),
        headers,
    }))
}

/// Reads the body that follows `head`: by Content-Length, chunked, or (for a
/// response, `to_eof`) up to the end of the connection.
pub(crate) fn read_body(reader: &mut impl BufRead, head: &Head, to_eof: bool) -> Result<Vec<u8>> {
    let mut body = Vec::new();
    if head
        .header("transfer-encoding")
        .is_some_and(|coding| coding.to_ascii_lowercase().contains("chunked"))
    {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size).context("read a chunk size")?;
            let size = size.trim().split(';').next().unwrap_or_default();
            let size = usize::from_str_radix(size, 16)
                .with_context(|| format!("not a chunk size: {size:?}"))?;
            if size == 0 {
                // Trailers, up to the blank line.
                while read_head_line(reader)? {}
                return Ok(body);
            }
            let start = body.len();
            body.resize(start + size, 0);
            reader
                .read_exact(&mut body[start..])
                .context("read a chunk")?;
            let mut end = [0; 2];
            reader.read_exact(&mut end).context("read a chunk's end")?;
        }
    } else if let Some(length) = head.header("content-length") {
        let length: usize = length
            .parse()
            .with_context(|| format!("not a Content-Length: {length:?}"))?;
        body.resize(length, 0);
        reader.read_exact(&mut body).context("read a body")?;
    } else if to_eof {
        reader.read_to_end(&mut body).context("read a body")?;
    }
    Ok(body)
}

/// Reads one line; whether it held anything.
fn read_head_line(reader: &mut impl BufRead) -> Result<bool> {
    let mut line = String::new();
    let read = reader.read_line(&mut line).context("read a trailer")?;
    Ok(read > 0 && !line.trim().is_empty())
}

/// One request, read whole; None when the client sent nothing, or began
/// a TLS handshake (skopeo tries HTTPS first even when told the registry
/// is insecure, and falls back to HTTP when the connection closes).
/// Answers `Expect: 100-continue` first, as a client that sends it waits.
pub(crate) fn read_request(stream: &TcpStream) -> Result<Option<(Head, Vec<u8>)>> {
    const TLS_HANDSHAKE: u8 = 0x16;
    let mut reader = BufReader::new(stream);
    if reader.fill_buf().context("read a request")?.first() == Some(&TLS_HANDSHAKE) {
        return Ok(None);
    }
    let Some(head) = read_head(&mut reader)? else {
        return Ok(None);
    };
    if head
        .header("expect")
        .is_some_and(|expect| expect.eq_ignore_ascii_case("100-continue"))
    {
        let mut stream = stream;
        stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    }
    let body = read_body(&mut reader, &head, false)?;
    Ok(Some((head, body)))
}

/// Sends a response: `line` is the status line, `headers` go as given
/// (with Content-Length among them when `body` is None: a reply to HEAD),
/// else a Content-Length of the body is added.
pub(crate) fn respond(
    mut stream: &TcpStream,
    line: &str,
    headers: &[(String, String)],
    body: Option<&[u8]>,
) -> Result<()> {
    let mut out = format!("{line}\r\n");
    for (key, value) in headers {
        out.push_str(&format!("{key}: {value}\r\n"));
    }
    if let Some(body) = body {
        out.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    out.push_str("Connection: close\r\n\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body.unwrap_or_default());
    stream.write_all(&bytes).context("send a response")?;
    stream.flush().context("send a response")
}

/// The reason phrase for the statuses tests use; HTTP/1.1 ignores it.
pub(crate) fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        307 => "Temporary Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        _ => "Status",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_by_length_chunks_and_end() {
        let body = |text: &[u8], to_eof| {
            let mut reader = text;
            let head = read_head(&mut reader).unwrap().unwrap();
            read_body(&mut reader, &head, to_eof).unwrap()
        };
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nA: b\r\n\r\n";
        assert_eq!(body(chunked, true), b"abcde");
        let sized = b"PUT / HTTP/1.1\r\nContent-Length: 2\r\n\r\nxyz";
        assert_eq!(body(sized, false), b"xy");
        assert_eq!(
            body(b"HTTP/1.0 200 OK\r\n\r\nall of it", true),
            b"all of it"
        );
        assert_eq!(body(b"GET / HTTP/1.1\r\n\r\n", false), b"");
    }
}
