//! Framing on the rendezvous connections: a 20-byte header (tag u32, sequence number u64, payload
//! length u64, little-endian) and the payload. f32 payloads travel as little-endian bytes,
//! converted in chunks so no second copy of a large buffer is made. Lengths are checked against
//! what the reader expects before anything is allocated.

use std::io::{self, Read, Write};
use std::net::TcpStream;

/// Frame kinds.
pub(crate) mod tag {
    /// Rendezvous: a rank introduces itself.
    pub const HELLO: u32 = 0x4C44_0001;
    /// Rendezvous: rank 0 accepts, payload = the blob.
    pub const WELCOME: u32 = 0x4C44_0002;
    /// Rank 0 gives up; payload = the reason (UTF-8).
    pub const ABORT: u32 = 0x4C44_0003;
    /// Collective data (f32 or bytes).
    pub const DATA: u32 = 0x4C44_0004;
}

pub(crate) const HEADER: usize = 20;
const CHUNK: usize = 1 << 14;

pub(crate) struct Header {
    pub tag: u32,
    pub seq: u64,
    pub len: u64,
}

fn header_bytes(tag: u32, seq: u64, len: u64) -> [u8; HEADER] {
    let mut h = [0u8; HEADER];
    h[..4].copy_from_slice(&tag.to_le_bytes());
    h[4..12].copy_from_slice(&seq.to_le_bytes());
    h[12..].copy_from_slice(&len.to_le_bytes());
    h
}

pub(crate) fn write_bytes(mut s: &TcpStream, tag: u32, seq: u64, payload: &[u8]) -> io::Result<()> {
    s.write_all(&header_bytes(tag, seq, payload.len() as u64))?;
    s.write_all(payload)?;
    s.flush()
}

pub(crate) fn write_f32(mut s: &TcpStream, tag: u32, seq: u64, data: &[f32]) -> io::Result<()> {
    s.write_all(&header_bytes(tag, seq, (data.len() * 4) as u64))?;
    let mut buf = Vec::with_capacity(CHUNK * 4);
    for c in data.chunks(CHUNK) {
        buf.clear();
        c.iter()
            .for_each(|v| buf.extend_from_slice(&v.to_le_bytes()));
        s.write_all(&buf)?;
    }
    s.flush()
}

pub(crate) fn read_header(mut s: &TcpStream) -> io::Result<Header> {
    let mut h = [0u8; HEADER];
    s.read_exact(&mut h)?;
    let u64_at = |i: usize| {
        u64::from_le_bytes([
            h[i],
            h[i + 1],
            h[i + 2],
            h[i + 3],
            h[i + 4],
            h[i + 5],
            h[i + 6],
            h[i + 7],
        ])
    };
    Ok(Header {
        tag: u32::from_le_bytes([h[0], h[1], h[2], h[3]]),
        seq: u64_at(4),
        len: u64_at(12),
    })
}

/// Reads a payload of `len` bytes; the caller has checked `len` against its limit.
pub(crate) fn read_payload(mut s: &TcpStream, len: u64) -> io::Result<Vec<u8>> {
    let mut v = vec![0u8; len as usize];
    s.read_exact(&mut v)?;
    Ok(v)
}

/// Reads `out.len()` f32 values (the header said exactly that many bytes).
pub(crate) fn read_f32_into(mut s: &TcpStream, out: &mut [f32]) -> io::Result<()> {
    let mut buf = vec![0u8; CHUNK * 4];
    for c in out.chunks_mut(CHUNK) {
        let b = &mut buf[..c.len() * 4];
        s.read_exact(b)?;
        for (v, x) in c.iter_mut().zip(b.chunks_exact(4)) {
            *v = f32::from_le_bytes([x[0], x[1], x[2], x[3]]);
        }
    }
    Ok(())
}

/// Reads `out.len()` f32 values and adds them into `out` (the reduction at rank 0).
pub(crate) fn read_f32_add(mut s: &TcpStream, out: &mut [f32]) -> io::Result<()> {
    let mut buf = vec![0u8; CHUNK * 4];
    for c in out.chunks_mut(CHUNK) {
        let b = &mut buf[..c.len() * 4];
        s.read_exact(b)?;
        for (v, x) in c.iter_mut().zip(b.chunks_exact(4)) {
            *v += f32::from_le_bytes([x[0], x[1], x[2], x[3]]);
        }
    }
    Ok(())
}

/// A read or write error in words: a closed connection means the peer process is gone.
pub(crate) fn describe(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::UnexpectedEof
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::BrokenPipe
        | io::ErrorKind::ConnectionAborted => {
            "the connection closed (the process exited or was killed)".into()
        }
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            "no answer before the timeout".into()
        }
        _ => e.to_string(),
    }
}
