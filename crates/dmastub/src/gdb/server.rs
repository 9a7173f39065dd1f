//! The TCP server: one client session at a time, and after a detach, a dropped connection or a
//! takeover, the next one, without restarting.

use super::conn::{Activity, BufferedTcp, packet};
use super::session;
use super::target::DmaTarget;
use gdbstub::stub::DisconnectReason;
use log::{info, warn};
use socket2::{Domain, Protocol, Socket, Type};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

/// Binds a listening socket at `addr` (`HOST:PORT`), with `SO_REUSEADDR` so a restarted
/// server can take the port back at once.
pub fn bind(addr: &str) -> io::Result<TcpListener> {
    let sockaddr: SocketAddr = addr.to_socket_addrs()?.next().ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, format!("{addr}: no address to listen on"))
    })?;
    let socket = Socket::new(Domain::for_address(sockaddr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_tcp_nodelay(true)?;
    socket.bind(&sockaddr.into())?;
    socket.listen(8)?;
    Ok(socket.into())
}

/// After this long without a byte from its client, a session may be taken over by a new client.
pub const DEFAULT_TAKEOVER_IDLE: Duration = Duration::from_secs(30);

/// A client that connected this long ago and never sent a byte is not a debugger at work: a new
/// client takes its place at once.
const SILENT_GRACE: Duration = Duration::from_secs(2);

/// How long a new client waits for a session that is ending anyway (its client just closed).
const SESSION_END_GRACE: Duration = Duration::from_millis(500);

/// Refused clients being told why at once, at most [`MAX_REFUSING`].
static REFUSING: AtomicUsize = AtomicUsize::new(0);
const MAX_REFUSING: usize = 8;

/// How long a refused client gets to send its first packet before it is told why.
const REFUSAL_READ: Duration = Duration::from_secs(2);

/// Why a new client is not served: it is told so (gdb prints "Remote failure reply:
/// E.dmastub: …") and disconnected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum Refusal {
    #[error(
        "dmastub: another client ({peer}) is attached and active (last packet {idle_secs} s ago); one client at a \
         time. Detach it, or connect again once it has been idle for {takeover_secs} s, when a new client takes over."
    )]
    Busy { peer: SocketAddr, idle_secs: u64, takeover_secs: u64 },
    #[error("dmastub: the previous client's session did not end within 5 s of being taken over")]
    TakeoverStuck,
}

/// A listening gdb server.
pub struct Server {
    listener: TcpListener,
    takeover_idle: Duration,
}

/// The session being served, as the connection acceptor sees it.
struct Current {
    peer: SocketAddr,
    since: Instant,
    activity: Activity,
    /// A handle on its socket, to end it when a new client takes over.
    stream: TcpStream,
}

impl Server {
    /// A server that accepts clients on `listener` (see [`bind`]).
    pub fn new(listener: TcpListener) -> Self {
        Self { listener, takeover_idle: DEFAULT_TAKEOVER_IDLE }
    }

    /// How long a session must be idle before a new client may take it over.
    pub fn with_takeover_idle(mut self, idle: Duration) -> Self {
        self.takeover_idle = idle;
        self
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves client sessions one after another, forever; a session that fails is logged and
    /// the server goes on. One client is served at a time. A client that connects while
    /// another is attached takes over when the other has been idle for the takeover time (or
    /// never sent anything); otherwise it is told why it cannot attach (gdb prints "Remote
    /// failure reply: E.dmastub: …") and disconnected.
    pub fn serve_forever(&self, target: &mut DmaTarget) -> io::Result<()> {
        let listener = self.listener.try_clone()?;
        let current: Arc<Mutex<Option<Current>>> = Arc::new(Mutex::new(None));
        let (tx, rx) = mpsc::sync_channel::<(BufferedTcp, SocketAddr)>(1);
        let acceptor_current = current.clone();
        let takeover_idle = self.takeover_idle;
        std::thread::spawn(move || {
            loop {
                let (stream, peer) = match listener.accept() {
                    Ok(c) => c,
                    Err(e) => {
                        warn!("accepting a client connection failed: {e}");
                        std::thread::sleep(Duration::from_millis(100));
                        continue;
                    }
                };
                if let Err(refusal) = make_room(&acceptor_current, peer, takeover_idle) {
                    let why = refusal.to_string();
                    warn!("refused the client from {peer}: {why}");
                    // Telling takes up to two reads' timeouts: a flood of connections gets a
                    // bounded number of tellers, the rest are closed at once.
                    if REFUSING.fetch_add(1, Ordering::AcqRel) < MAX_REFUSING {
                        std::thread::spawn(move || {
                            refuse(stream, &why);
                            REFUSING.fetch_sub(1, Ordering::AcqRel);
                        });
                    } else {
                        REFUSING.fetch_sub(1, Ordering::AcqRel);
                        let _ = stream.shutdown(Shutdown::Both);
                    }
                    continue;
                }
                let conn = match stream.try_clone().and_then(|handle| Ok((handle, BufferedTcp::new(stream)?)))
                {
                    Ok((handle, conn)) => {
                        let mut slot = acceptor_current.lock().unwrap_or_else(|e| e.into_inner());
                        *slot = Some(Current {
                            peer,
                            since: Instant::now(),
                            activity: conn.activity(),
                            stream: handle,
                        });
                        conn
                    }
                    Err(e) => {
                        warn!("cannot serve the client from {peer}: {e}");
                        continue;
                    }
                };
                if tx.send((conn, peer)).is_err() {
                    return;
                }
            }
        });
        for (conn, peer) in rx {
            let result = self.serve_conn(target, conn, peer);
            current.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Err(e) = result {
                warn!("{e}");
            }
        }
        Err(io::Error::other("the connection acceptor stopped"))
    }

    /// Serves one accepted client until it detaches or disconnects.
    fn serve_conn(&self, target: &mut DmaTarget, conn: BufferedTcp, peer: SocketAddr) -> io::Result<()> {
        info!("client connected from {peer}");
        target.on_connect();
        match session::run(target, conn) {
            Ok(DisconnectReason::Disconnect) => info!("the client from {peer} detached"),
            Ok(DisconnectReason::Kill) => {
                info!("the client from {peer} sent kill: session ended (the machine is untouched)")
            }
            Ok(reason) => info!("the session from {peer} ended: {reason:?}"),
            Err(e) if e.is_connection_error() => info!("the client from {peer} disconnected ({e})"),
            Err(e) => return Err(io::Error::other(format!("the session from {peer} failed: {e}"))),
        }
        Ok(())
    }
}

/// Decides whether a new client from `peer` is served: at once when no session runs; after
/// ending the current session when that one is idle (or silent); otherwise not, and the error
/// says why.
fn make_room(
    current: &Mutex<Option<Current>>,
    peer: SocketAddr,
    takeover_idle: Duration,
) -> Result<(), Refusal> {
    // A client that just closed its connection may reconnect before its session noticed.
    let settle = Instant::now() + SESSION_END_GRACE;
    while Instant::now() < settle && current.lock().unwrap_or_else(|e| e.into_inner()).is_some() {
        std::thread::sleep(Duration::from_millis(5));
    }
    {
        let slot = current.lock().unwrap_or_else(|e| e.into_inner());
        let Some(cur) = slot.as_ref() else { return Ok(()) };
        let idle = match cur.activity.idle_ms() {
            Some(ms) => Duration::from_millis(ms),
            None if cur.since.elapsed() >= SILENT_GRACE => Duration::MAX,
            None => Duration::ZERO,
        };
        if idle < takeover_idle {
            return Err(Refusal::Busy {
                peer: cur.peer,
                idle_secs: idle.as_secs(),
                takeover_secs: takeover_idle.as_secs(),
            });
        }
        let why = if idle == Duration::MAX {
            "never sent anything".to_string()
        } else {
            format!("idle {} s", idle.as_secs())
        };
        warn!(
            "the client from {peer} takes over from the client at {} ({why}), which is disconnected",
            cur.peer
        );
        let _ = cur.stream.shutdown(Shutdown::Both);
    }
    // Wait for the old session to notice and end.
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if current.lock().unwrap_or_else(|e| e.into_inner()).is_none() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Err(Refusal::TakeoverStuck)
}

/// Tells a refused client why: its first packet is answered with `E.<why>` (gdb prints "Remote
/// failure reply: E.dmastub: …"), and the connection is closed. Bounded in time and bytes.
fn refuse(mut stream: TcpStream, why: &str) {
    let _ = stream.set_read_timeout(Some(REFUSAL_READ));
    // Up to the end of its first packet; then, after the reply, up to the end of its next one,
    // so that the client is reading when the connection closes (gdb then says "Remote
    // connection closed", not "Broken pipe").
    if read_one_packet(&mut stream) {
        let mut reply = b"+".to_vec();
        reply.extend(packet(format!("E.{why}").as_bytes()));
        if stream.write_all(&reply).is_ok() {
            read_one_packet(&mut stream);
        }
    }
    let _ = stream.shutdown(Shutdown::Both);
}

/// Reads up to the end of one packet (`#` and two checksum digits), at most 4 KiB; whether one
/// was seen before the end of the stream or the read timeout.
fn read_one_packet(stream: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    let mut after_hash = None;
    for _ in 0..4096 {
        match stream.read(&mut byte) {
            Ok(1) => {
                after_hash = match (after_hash, byte[0]) {
                    (None, b'#') => Some(0),
                    (Some(n), _) => Some(n + 1),
                    (None, _) => None,
                };
                if after_hash == Some(2) {
                    return true;
                }
            }
            _ => return false,
        }
    }
    false
}
