//! Opens N keep-alive connections to an HTTP/1.1 server, completes one request on each,
//! and holds them all open, so a benchmark can read the server's memory per connection.
//!
//! ```text
//! hold_connections ADDR N [HOLD_SECS] [HEADER: VALUE]...
//! ```
//!
//! Prints `READY N` once every connection has had its answer, holds them for HOLD_SECS
//! (default 30; the caller usually kills it sooner), then prints `OPEN K`: how many the
//! server had not closed meanwhile. Exits 1 on the first connection or response error.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Upper bound on connections, so a typo cannot exhaust the machine's descriptors.
const MAX_CONNECTIONS: usize = 50_000;
/// Upper bound on one response head plus body: the benchmark upstream answers a few bytes.
const MAX_RESPONSE: usize = 64 * 1024;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hold_connections: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: hold_connections ADDR N [HOLD_SECS] [HEADER: VALUE]...";
    let addr: SocketAddr = args
        .first()
        .ok_or(usage)?
        .parse()
        .map_err(|e| format!("ADDR: {e}"))?;
    let n: usize = args
        .get(1)
        .ok_or(usage)?
        .parse()
        .map_err(|e| format!("N: {e}"))?;
    if n == 0 || n > MAX_CONNECTIONS {
        return Err(format!("N must be between 1 and {MAX_CONNECTIONS}"));
    }
    let hold = match args.get(2) {
        Some(s) => Duration::from_secs(s.parse().map_err(|e| format!("HOLD_SECS: {e}"))?),
        None => Duration::from_secs(30),
    };
    let mut request = format!("GET / HTTP/1.1\r\nHost: {addr}\r\n");
    for h in args.iter().skip(3) {
        if !h.contains(':') || h.contains('\r') || h.contains('\n') {
            return Err(format!("{h:?} is not a `Name: value` header"));
        }
        request.push_str(h);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");

    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .map_err(|e| format!("connection {i}: connect: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(|e| format!("connection {i}: {e}"))?;
        s.write_all(request.as_bytes())
            .map_err(|e| format!("connection {i}: write: {e}"))?;
        let status = read_response(&mut s).map_err(|e| format!("connection {i}: {e}"))?;
        if !(200..300).contains(&status) {
            return Err(format!("connection {i}: status {status}"));
        }
        conns.push(s);
    }
    println!("READY {n}");

    let until = Instant::now() + hold;
    while Instant::now() < until {
        std::thread::sleep(Duration::from_millis(100).min(until - Instant::now()));
    }
    let open = conns.iter().filter(|s| still_open(s)).count();
    println!("OPEN {open}");
    Ok(())
}

/// Reads one response (Content-Length or chunked) and returns its status code.
fn read_response(s: &mut TcpStream) -> Result<u16, String> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(p) = find(&buf, b"\r\n\r\n") {
            break p + 4;
        }
        read_more(s, &mut buf, &mut chunk)?;
    };
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| "response head is not UTF-8")?;
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("bad status line: {:?}", head.lines().next()))?;
    let header = |name: &str| {
        head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    };
    if let Some(len) = header("content-length") {
        let len: usize = len.parse().map_err(|_| "bad Content-Length")?;
        while buf.len() < head_end + len {
            read_more(s, &mut buf, &mut chunk)?;
        }
    } else if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        while find(&buf[head_end..], b"0\r\n\r\n").is_none() {
            read_more(s, &mut buf, &mut chunk)?;
        }
    }
    Ok(status)
}

fn read_more(s: &mut TcpStream, buf: &mut Vec<u8>, chunk: &mut [u8]) -> Result<(), String> {
    let k = s.read(chunk).map_err(|e| format!("read: {e}"))?;
    if k == 0 {
        return Err("the server closed the connection mid-response".into());
    }
    buf.extend_from_slice(&chunk[..k]);
    if buf.len() > MAX_RESPONSE {
        return Err(format!("response larger than {MAX_RESPONSE} bytes"));
    }
    Ok(())
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A peer that closed shows as end-of-stream; an open idle one would block.
fn still_open(s: &TcpStream) -> bool {
    if s.set_nonblocking(true).is_err() {
        return false;
    }
    let mut b = [0u8; 1];
    matches!(s.peek(&mut b), Err(e) if e.kind() == ErrorKind::WouldBlock)
}
