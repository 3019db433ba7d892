//! A minimal HTTP/1.1 server side on `std::net`: one thread per connection,
//! keep-alive, `Content-Length` and chunked request bodies, `Expect: 100-continue`.
//!
//! Written by hand so the emulator needs no async runtime and so that faults
//! (closing a socket mid-request, answering with garbage) are fully under our control.
//! A connection is plain TCP or TLS (rustls, server side); the TLS handshake happens on the
//! connection's own thread, at the first read, under the same idle and shutdown rules as
//! waiting for a request.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rustls::{ServerConfig, ServerConnection, StreamOwned};

/// Largest accepted request head; real clients send a few hundred bytes.
const MAX_HEAD: usize = 64 * 1024;
/// How often a blocked read wakes up to look at the shutdown flag.
const POLL: Duration = Duration::from_millis(200);
/// An idle keep-alive connection is closed after this long (nginx: 65 s).
const IDLE_LIMIT: Duration = Duration::from_secs(65);
/// Give up on a response when the client has not read anything for this long.
const WRITE_STALL: Duration = Duration::from_secs(60);

pub(crate) struct Request {
    pub method: String,
    /// Request target as sent (path plus optional `?query`).
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub keep_alive: bool,
}

impl Request {
    /// First header with this (case-insensitive) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    pub fn query(&self) -> &str {
        self.target.split_once('?').map(|(_, q)| q).unwrap_or("")
    }
}

pub(crate) struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(status: u16, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            content_type: "application/json",
            body: body.into(),
        }
    }
}

/// The byte stream under HTTP: the socket itself, or TLS over it. Timeouts are set on the
/// socket in both cases; rustls passes them through as `WouldBlock`/`TimedOut` errors and keeps
/// partial records buffered, so a timed-out read can simply be retried.
enum Stream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ServerConnection, TcpStream>>),
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => s.get_ref(),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

pub(crate) struct Conn {
    stream: Stream,
    buf: Vec<u8>,
    /// Set by [`Conn::abort`]: the socket is shut down, so no TLS `close_notify` on drop.
    aborted: bool,
}

impl Conn {
    /// Wrap an accepted socket; with `tls`, as the server side of a TLS connection (the
    /// handshake happens at the first read).
    pub fn new(stream: TcpStream, tls: Option<&Arc<ServerConfig>>) -> io::Result<Conn> {
        stream.set_read_timeout(Some(POLL))?;
        // A client that stops reading a large list must not pin this thread forever.
        stream.set_write_timeout(Some(WRITE_STALL))?;
        stream.set_nodelay(true)?;
        let stream = match tls {
            None => Stream::Plain(stream),
            Some(config) => {
                let conn = ServerConnection::new(Arc::clone(config)).map_err(io::Error::other)?;
                Stream::Tls(Box::new(StreamOwned::new(conn, stream)))
            }
        };
        Ok(Conn {
            stream,
            buf: Vec::new(),
            aborted: false,
        })
    }

    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.stream.tcp().peer_addr()
    }

    /// Close the socket at once, without an answer and (under TLS) without `close_notify`,
    /// like a proxy or server that dies mid-request.
    pub fn abort(&mut self) {
        self.aborted = true;
        let _ = self.stream.tcp().shutdown(Shutdown::Both);
    }

    /// Read more bytes; Ok(false) on EOF. Timeouts are retried unless `idle_exit`
    /// says the connection should be given up (shutdown, or idle too long).
    fn fill(&mut self, idle_exit: &dyn Fn() -> bool) -> io::Result<bool> {
        let mut tmp = [0u8; 16 * 1024];
        loop {
            match self.stream.read(&mut tmp) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    self.buf.extend_from_slice(&tmp[..n]);
                    return Ok(true);
                }
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                    if idle_exit() {
                        return Ok(false);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Next request on this connection, or None when the peer closed it, the server
    /// is shutting down, or it sat idle past the keep-alive limit.
    pub fn next_request(&mut self, shutdown: &AtomicBool) -> io::Result<Option<Request>> {
        let started = Instant::now();
        let head_end = loop {
            if let Some(p) = find(&self.buf, b"\r\n\r\n") {
                break p;
            }
            if self.buf.len() > MAX_HEAD {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "head too large"));
            }
            let waiting_for_new = self.buf.is_empty();
            let exit = || shutdown.load(Ordering::SeqCst) && waiting_for_new || started.elapsed() > IDLE_LIMIT;
            if !self.fill(&exit)? {
                return Ok(None);
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        self.buf.drain(..head_end + 4);
        let mut lines = head.split("\r\n");
        let request_line = lines.next().unwrap_or("");
        let mut parts = request_line.split(' ');
        let method = parts.next().unwrap_or("").to_string();
        let target = parts.next().unwrap_or("/").to_string();
        let version = parts.next().unwrap_or("HTTP/1.1").to_string();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        let mut req = Request {
            method,
            target,
            headers,
            body: Vec::new(),
            keep_alive: true,
        };
        let conn_hdr = req.header("connection").map(|c| c.to_ascii_lowercase());
        req.keep_alive = if version == "HTTP/1.0" {
            conn_hdr.as_deref() == Some("keep-alive")
        } else {
            conn_hdr.as_deref() != Some("close")
        };
        if req
            .header("expect")
            .is_some_and(|e| e.eq_ignore_ascii_case("100-continue"))
        {
            self.stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
            self.stream.flush()?;
        }
        let never = || started.elapsed() > IDLE_LIMIT;
        if req
            .header("transfer-encoding")
            .is_some_and(|t| t.to_ascii_lowercase().contains("chunked"))
        {
            req.body = self.read_chunked(&never)?;
        } else if let Some(len) = req.header("content-length") {
            let len: usize = len
                .parse()
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad content-length"))?;
            while self.buf.len() < len {
                if !self.fill(&never)? {
                    return Ok(None);
                }
            }
            req.body = self.buf.drain(..len).collect();
        }
        Ok(Some(req))
    }

    fn read_line(&mut self, exit: &dyn Fn() -> bool) -> io::Result<Option<String>> {
        loop {
            if let Some(p) = find(&self.buf, b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..p]).into_owned();
                self.buf.drain(..p + 2);
                return Ok(Some(line));
            }
            if !self.fill(exit)? {
                return Ok(None);
            }
        }
    }

    fn read_chunked(&mut self, exit: &dyn Fn() -> bool) -> io::Result<Vec<u8>> {
        let bad = || io::Error::new(io::ErrorKind::InvalidData, "bad chunked body");
        let mut body = Vec::new();
        loop {
            let line = self.read_line(exit)?.ok_or_else(bad)?;
            let size_hex = line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_hex, 16).map_err(|_| bad())?;
            if size == 0 {
                // Trailers until the empty line.
                while let Some(l) = self.read_line(exit)? {
                    if l.is_empty() {
                        break;
                    }
                }
                return Ok(body);
            }
            while self.buf.len() < size + 2 {
                if !self.fill(exit)? {
                    return Err(bad());
                }
            }
            body.extend(self.buf.drain(..size));
            self.buf.drain(..2);
        }
    }

    /// Write the answer, gzip-compressed when `gzip` says so (see [`gzip_wanted`]); returns
    /// the bytes written (head and body, before TLS) and whether the body went compressed.
    pub fn write_response(
        &mut self,
        resp: &Response,
        keep_alive: bool,
        cookie: &str,
        gzip: bool,
    ) -> io::Result<(u64, bool)> {
        let compressed = (gzip && compressible(resp)).then(|| gzip_body(&resp.body));
        let (body, encoding) = match &compressed {
            Some(body) => (body, "Content-Encoding: gzip\r\nVary: Accept-Encoding\r\n"),
            None => (&resp.body, ""),
        };
        let head = format!(
            "HTTP/1.1 {} {}\r\nServer: nginx\r\nContent-Type: {}\r\nContent-Length: {}\r\n{encoding}Set-Cookie: MCSESSID={}; path=/; secure; HttpOnly; SameSite=Lax\r\nConnection: {}\r\n\r\n",
            resp.status,
            reason(resp.status),
            resp.content_type,
            body.len(),
            cookie,
            if keep_alive { "keep-alive" } else { "close" }
        );
        self.stream.write_all(head.as_bytes())?;
        self.stream.write_all(body)?;
        self.stream.flush()?;
        Ok(((head.len() + body.len()) as u64, compressed.is_some()))
    }
}

impl Drop for Conn {
    /// Under TLS, end the session cleanly (`close_notify`) as nginx does; a client that reads
    /// to EOF would otherwise see a truncation error.
    fn drop(&mut self) {
        if self.aborted {
            return;
        }
        if let Stream::Tls(s) = &mut self.stream {
            s.conn.send_close_notify();
            let _ = s.flush();
        }
    }
}

/// mailcow's nginx (data/conf/nginx/templates/sites-default.conf.j2, included by every
/// server block): `gzip on; gzip_proxied off; gzip_comp_level 6; gzip_http_version 1.1;
/// gzip_min_length 256; gzip_types text/plain … application/json …` (text/html always).
pub(crate) const GZIP_MIN_LENGTH: usize = 256;
const GZIP_LEVEL: u32 = 6;

/// Whether the request asks for gzip as nginx reads it: `gzip` in `Accept-Encoding`, and
/// (`gzip_proxied off`) no `Via` header.
pub(crate) fn gzip_wanted(req: &Request) -> bool {
    let accepts = req.header("accept-encoding").is_some_and(|v| {
        v.split(',')
            .map(|t| t.split(';').next().unwrap_or("").trim())
            .any(|t| t.eq_ignore_ascii_case("gzip"))
    });
    accepts && req.header("via").is_none()
}

/// A body nginx would compress: a listed type, at least `gzip_min_length` bytes.
fn compressible(resp: &Response) -> bool {
    let kind = resp.content_type.split(';').next().unwrap_or("").trim();
    matches!(kind, "application/json" | "text/html" | "text/plain") && resp.body.len() >= GZIP_MIN_LENGTH
}

fn gzip_body(body: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(GZIP_LEVEL));
    enc.write_all(body).expect("gzip into memory");
    enc.finish().expect("gzip into memory")
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

pub(crate) fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Time-out",
        _ => "Status",
    }
}
