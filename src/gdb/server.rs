//! The TCP server: one gdb session at a time, and after a detach or a dropped connection, the
//! next one, without restarting.

use super::conn::{BufferedTcp, console_packet};
use super::target::{CANNOT_RESUME, DmaTarget};
use gdbstub::common::Signal;
use gdbstub::conn::ConnectionExt;
use gdbstub::stub::run_blocking::{BlockingEventLoop, Event, WaitForStopReasonError};
use gdbstub::stub::{DisconnectReason, GdbStub, MultiThreadStopReason};
use log::{info, warn};
use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

/// The largest packet gdb may send or ask for. gdb sizes its `m` reads from it; bigger
/// packets mean fewer round trips in a large `dump`.
pub const PACKET_SIZE: usize = 0x20000;

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

/// A listening gdb server.
pub struct Server {
    listener: TcpListener,
}

impl Server {
    pub fn new(listener: TcpListener) -> Self {
        Self { listener }
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves gdb sessions one after another, forever. A session that fails is logged; the
    /// server goes on. A gdb that connects while another is attached is disconnected at once
    /// (it prints "Remote connection closed") rather than left hanging.
    pub fn serve_forever(&self, target: &mut DmaTarget) -> io::Result<()> {
        let listener = self.listener.try_clone()?;
        let busy = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::sync_channel::<(TcpStream, SocketAddr)>(1);
        let acceptor_busy = busy.clone();
        std::thread::spawn(move || {
            loop {
                let (stream, peer) = match listener.accept() {
                    Ok(c) => c,
                    Err(e) => {
                        warn!("accepting a gdb connection failed: {e}");
                        std::thread::sleep(Duration::from_millis(100));
                        continue;
                    }
                };
                // A session that just ended may not have noticed yet: give it a moment.
                let deadline = Instant::now() + Duration::from_millis(500);
                while acceptor_busy.load(Ordering::Acquire) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(5));
                }
                if acceptor_busy.load(Ordering::Acquire) {
                    warn!("refused gdb from {peer}: another gdb is attached (one session at a time)");
                    let _ = stream.shutdown(Shutdown::Both);
                    continue;
                }
                acceptor_busy.store(true, Ordering::Release);
                if tx.send((stream, peer)).is_err() {
                    return;
                }
            }
        });
        for (stream, peer) in rx {
            let result = self.serve_stream(target, stream, peer);
            busy.store(false, Ordering::Release);
            if let Err(e) = result {
                warn!("{e}");
            }
        }
        Err(io::Error::other("the connection acceptor stopped"))
    }

    /// Serves one accepted gdb until it detaches or disconnects.
    fn serve_stream(&self, target: &mut DmaTarget, stream: TcpStream, peer: SocketAddr) -> io::Result<()> {
        info!("gdb connected from {peer}");
        let conn = BufferedTcp::new(stream)?;
        target.on_connect();
        let stub = GdbStub::builder(conn)
            .packet_buffer_size(PACKET_SIZE)
            .build()
            .map_err(|e| io::Error::other(format!("cannot start a gdb session: {e}")))?;
        match stub.run_blocking::<EventLoop<BufferedTcp>>(target) {
            Ok(DisconnectReason::Disconnect) => info!("gdb from {peer} detached"),
            Ok(DisconnectReason::Kill) => {
                info!("gdb from {peer} sent kill: session ended (the machine is untouched)")
            }
            Ok(reason) => info!("gdb session from {peer} ended: {reason:?}"),
            Err(e) if e.is_connection_error() => info!("gdb from {peer} disconnected ({e})"),
            Err(e) => return Err(io::Error::other(format!("gdb session from {peer} failed: {e}"))),
        }
        Ok(())
    }
}

/// gdbstub's blocking event loop over connection `C` (TCP when serving; an in-memory
/// connection in the protocol fuzz target). The target never runs: a resume request is
/// answered at once with a console message and a stop.
pub enum EventLoop<C> {
    #[doc(hidden)]
    _Never(std::convert::Infallible, std::marker::PhantomData<C>),
}

impl<C: ConnectionExt<Error = io::Error>> BlockingEventLoop for EventLoop<C> {
    type Target = DmaTarget;
    type Connection = C;
    type StopReason = MultiThreadStopReason<u64>;

    fn wait_for_stop_reason(
        target: &mut DmaTarget,
        conn: &mut C,
    ) -> Result<Event<Self::StopReason>, WaitForStopReasonError<super::target::FatalError, io::Error>> {
        if target.take_resume_request() {
            conn.write_all(&console_packet(CANNOT_RESUME)).map_err(WaitForStopReasonError::Connection)?;
            conn.flush().map_err(WaitForStopReasonError::Connection)?;
            target.on_stop();
            let tid = target.stop_thread();
            return Ok(Event::TargetStopped(MultiThreadStopReason::SignalWithThread {
                tid,
                signal: Signal(0),
            }));
        }
        conn.read().map(Event::IncomingData).map_err(WaitForStopReasonError::Connection)
    }

    fn on_interrupt(target: &mut DmaTarget) -> Result<Option<Self::StopReason>, super::target::FatalError> {
        target.on_stop();
        let tid = target.stop_thread();
        Ok(Some(MultiThreadStopReason::SignalWithThread { tid, signal: Signal::SIGINT }))
    }
}
