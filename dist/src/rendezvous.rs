//! The TCP rendezvous on MASTER_ADDR:MASTER_PORT: rank 0 listens, every other rank connects
//! (retrying until the deadline, as rank 0 may start later) and introduces itself with its rank,
//! world size and run fingerprint; when all have joined, rank 0 sends each the blob (later the
//! NCCL unique id) and the connections stay open as the [`HostGroup`].
//!
//! Bounded failure: rank 0 gives up at the deadline naming the ranks that did not join, and on a
//! wrong world size, rank or fingerprint naming the rank; it tells every connected rank why
//! before returning. A rank that cannot reach rank 0 gives up at its own deadline. Connections
//! that do not speak this protocol (port scanners) are dropped and do not count.

use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use crate::group::HostGroup;
use crate::wire::{self, tag};
use crate::{DistError, WorldSpec};

const MAGIC: &[u8; 8] = b"LDMRDZV1";
const HELLO_LEN: u64 = 32;
/// Largest blob rank 0 may send.
pub const MAX_BLOB: usize = 1 << 20;
/// Extra time a joined rank waits beyond the rendezvous timeout for rank 0's answer.
const GRACE: Duration = Duration::from_secs(5);

/// Settings of one rendezvous.
#[derive(Debug, Clone)]
pub struct RendezvousOptions {
    /// How long to wait for every rank to join (and for rank 0 to be reachable).
    pub timeout: Duration,
    /// How long each later collective may wait for a peer.
    pub op_timeout: Duration,
    /// Every rank must pass the same value (a hash of the configuration and options).
    pub fingerprint: u64,
    /// Rank 0's payload for every rank (ignored on the others); at most [`MAX_BLOB`] bytes.
    pub blob: Vec<u8>,
}

impl Default for RendezvousOptions {
    fn default() -> Self {
        RendezvousOptions {
            timeout: Duration::from_secs(300),
            op_timeout: Duration::from_secs(1800),
            fingerprint: 0,
            blob: Vec::new(),
        }
    }
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// Joins the group described by `spec`; returns it and rank 0's blob. A world of one returns at
/// once (no network).
pub fn rendezvous(
    spec: &WorldSpec,
    o: &RendezvousOptions,
) -> Result<(HostGroup, Vec<u8>), DistError> {
    if spec.world_size <= 1 {
        return Ok((HostGroup::single(), o.blob.clone()));
    }
    let endpoint = spec.master_endpoint().ok_or_else(|| {
        DistError::Env("a world of several processes needs MASTER_ADDR and MASTER_PORT".into())
    })?;
    let fail = |msg: String| DistError::Rendezvous {
        addr: endpoint.clone(),
        msg,
    };
    if o.blob.len() > MAX_BLOB {
        return Err(fail(format!(
            "the blob has {} bytes, at most {MAX_BLOB}",
            o.blob.len()
        )));
    }
    let links = if spec.rank == 0 {
        host(spec, o, &endpoint, &fail)?
    } else {
        vec![join(spec, o, &endpoint, &fail)?]
    };
    for s in &links {
        s.set_nodelay(true)
            .and_then(|_| s.set_read_timeout(Some(o.op_timeout)))
            .and_then(|_| s.set_write_timeout(Some(o.op_timeout)))
            .map_err(|e| fail(e.to_string()))?;
    }
    let blob = if spec.rank == 0 {
        o.blob.clone()
    } else {
        joined_blob(&links[0], spec, o, &fail)?
    };
    Ok((
        HostGroup::from_links(spec.rank, spec.world_size, links),
        blob,
    ))
}

/// The address rank 0 listens on: any interface of MASTER_ADDR's family, MASTER_PORT.
fn listen_addr(endpoint: &str, port: u16) -> SocketAddr {
    let v6 = endpoint
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .is_some_and(|a| a.is_ipv6());
    if v6 {
        SocketAddr::from(([0u16; 8], port))
    } else {
        SocketAddr::from(([0u8; 4], port))
    }
}

fn hello(spec: &WorldSpec, fingerprint: u64) -> Vec<u8> {
    let mut v = MAGIC.to_vec();
    v.extend_from_slice(&(spec.rank as u64).to_le_bytes());
    v.extend_from_slice(&(spec.world_size as u64).to_le_bytes());
    v.extend_from_slice(&fingerprint.to_le_bytes());
    v
}

/// Reads a HELLO: `Some((rank, world, fingerprint))`, or `None` for anything else.
fn read_hello(s: &TcpStream) -> Option<(u64, u64, u64)> {
    let h = wire::read_header(s).ok()?;
    if h.tag != tag::HELLO || h.len != HELLO_LEN {
        return None;
    }
    let p = wire::read_payload(s, HELLO_LEN).ok()?;
    if &p[..8] != MAGIC {
        return None;
    }
    let at = |i: usize| {
        u64::from_le_bytes([
            p[i],
            p[i + 1],
            p[i + 2],
            p[i + 3],
            p[i + 4],
            p[i + 5],
            p[i + 6],
            p[i + 7],
        ])
    };
    Some((at(8), at(16), at(24)))
}

/// Rank 0: accepts the other ranks until all joined or the deadline passed.
fn host(
    spec: &WorldSpec,
    o: &RendezvousOptions,
    endpoint: &str,
    fail: &dyn Fn(String) -> DistError,
) -> Result<Vec<TcpStream>, DistError> {
    let port = spec.master_port.unwrap_or(0);
    let listener = TcpListener::bind(listen_addr(endpoint, port))
        .map_err(|e| fail(format!("rank 0 cannot listen on port {port}: {e}")))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| fail(e.to_string()))?;
    let start = Instant::now();
    let deadline = start + o.timeout;
    let world = spec.world_size;
    let mut joined: Vec<Option<TcpStream>> = (0..world).map(|_| None).collect();
    let abort_all = |joined: &[Option<TcpStream>], extra: Option<&TcpStream>, msg: &str| {
        for s in joined.iter().flatten().chain(extra) {
            let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
            let _ = wire::write_bytes(s, tag::ABORT, 0, msg.as_bytes());
        }
    };
    while joined.iter().skip(1).any(|j| j.is_none()) {
        let now = Instant::now();
        if now >= deadline {
            let missing: Vec<String> = (1..world)
                .filter(|&r| joined[r].is_none())
                .map(|r| r.to_string())
                .collect();
            let msg = format!(
                "rank(s) {} of {world} did not join within {}",
                missing.join(", "),
                secs(o.timeout)
            );
            abort_all(&joined, None, &msg);
            return Err(fail(msg));
        }
        let (s, _) = match listener.accept() {
            Ok(x) => x,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            Err(e) => return Err(fail(format!("accepting a connection: {e}"))),
        };
        let wait = deadline
            .saturating_duration_since(now)
            .clamp(Duration::from_millis(100), Duration::from_secs(10));
        if s.set_nonblocking(false)
            .and_then(|_| s.set_read_timeout(Some(wait)))
            .is_err()
        {
            continue;
        }
        let Some((r, w, fp)) = read_hello(&s) else {
            continue;
        };
        let problem = if w != world as u64 {
            Some(format!(
                "rank {r} was started with world size {w}, rank 0 with {world}"
            ))
        } else if r == 0 || r >= world as u64 {
            Some(format!("a process joined as rank {r}; the ranks of a world of {world} are 1..{} besides rank 0", world - 1))
        } else if joined[r as usize].is_some() {
            Some(format!(
                "rank {r} joined twice (two processes were given the same rank)"
            ))
        } else if fp != o.fingerprint {
            Some(format!(
                "rank {r} runs another configuration than rank 0 (run fingerprint {fp:016x}, rank 0 has {:016x}): \
                 give every rank the same configuration, options and data",
                o.fingerprint
            ))
        } else {
            None
        };
        if let Some(msg) = problem {
            abort_all(&joined, Some(&s), &msg);
            return Err(fail(msg));
        }
        joined[r as usize] = Some(s);
    }
    let links: Vec<TcpStream> = joined.into_iter().skip(1).flatten().collect();
    for (i, s) in links.iter().enumerate() {
        let _ = s.set_write_timeout(Some(o.op_timeout));
        wire::write_bytes(s, tag::WELCOME, 0, &o.blob).map_err(|e| {
            fail(format!(
                "rank {} left during the rendezvous: {}",
                i + 1,
                wire::describe(&e)
            ))
        })?;
    }
    Ok(links)
}

/// Any other rank: connects to rank 0 (retrying until the deadline) and says hello.
fn join(
    spec: &WorldSpec,
    o: &RendezvousOptions,
    endpoint: &str,
    fail: &dyn Fn(String) -> DistError,
) -> Result<TcpStream, DistError> {
    let deadline = Instant::now() + o.timeout;
    let mut last = String::from("no attempt");
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Err(fail(format!(
                "rank {}: rank 0 did not answer within {} (last error: {last})",
                spec.rank,
                secs(o.timeout)
            )));
        }
        let step = deadline
            .saturating_duration_since(now)
            .min(Duration::from_secs(2))
            .max(Duration::from_millis(10));
        // Resolved on every try: a cluster's DNS name for rank 0 may appear only after it starts.
        match endpoint.to_socket_addrs() {
            Ok(addrs) => {
                for a in addrs {
                    match TcpStream::connect_timeout(&a, step) {
                        Ok(s) => {
                            s.set_write_timeout(Some(step))
                                .map_err(|e| fail(e.to_string()))?;
                            wire::write_bytes(&s, tag::HELLO, 0, &hello(spec, o.fingerprint))
                                .map_err(|e| {
                                    fail(format!(
                                        "rank {}: rank 0 closed the connection: {}",
                                        spec.rank,
                                        wire::describe(&e)
                                    ))
                                })?;
                            return Ok(s);
                        }
                        Err(e) => last = e.to_string(),
                    }
                }
            }
            Err(e) => last = format!("cannot resolve the address: {e}"),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Any other rank: waits for rank 0's welcome (or its reason to give up).
fn joined_blob(
    s: &TcpStream,
    spec: &WorldSpec,
    o: &RendezvousOptions,
    fail: &dyn Fn(String) -> DistError,
) -> Result<Vec<u8>, DistError> {
    s.set_read_timeout(Some(o.timeout + GRACE))
        .map_err(|e| fail(e.to_string()))?;
    let lost = |e: std::io::Error| {
        fail(format!(
            "rank {}: rank 0 sent no answer: {}",
            spec.rank,
            wire::describe(&e)
        ))
    };
    let h = wire::read_header(s).map_err(lost)?;
    if h.len > MAX_BLOB as u64 {
        return Err(fail(format!(
            "rank {}: rank 0 sent {} bytes, more than the protocol allows",
            spec.rank, h.len
        )));
    }
    let payload = wire::read_payload(s, h.len).map_err(lost)?;
    match h.tag {
        tag::WELCOME => Ok(payload),
        tag::ABORT => Err(fail(format!(
            "rank {}: rank 0 stopped the rendezvous: {}",
            spec.rank,
            String::from_utf8_lossy(&payload)
        ))),
        t => Err(fail(format!(
            "rank {}: unexpected message {t:#x} from rank 0",
            spec.rank
        ))),
    }
    .and_then(|b| {
        s.set_read_timeout(Some(o.op_timeout))
            .map_err(|e| fail(e.to_string()))?;
        Ok(b)
    })
}
