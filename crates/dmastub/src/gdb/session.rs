//! One client session: gdbstub's state machine, fed packet by packet.
//!
//! gdbstub answers nearly everything. The session frames the client's bytes into packets first
//! so that the few that gdbstub 0.7 cannot answer the way gdb and lldb need are answered here:
//!
//! - `qSupported`: gdbstub's reply, with `qXfer:osdata:read+` (gdb's `info os`) and
//!   `qXfer:libraries:read+` (the modules as gdb's libraries) added.
//! - `qXfer:osdata:read`: the task list as gdb's process table.
//! - `D` in extended mode: detached, and the session goes on (gdbstub would end it).
//! - `m` longer than one reply: shortened to what one reply holds, which the protocol allows;
//!   gdbstub would read it in chunks and glue a short chunk to the next chunk's bytes.
//! - `m`: gdbstub parses it and the target reads, but the bytes read are encoded here, in bulk
//!   and byte for byte as gdbstub would (`reply.rs`): its writer takes a call per byte.
//! - `qOffsets` from lldb: one uniform offset, the only form lldb applies.
//! - a bare `c` or `s`: applied to the thread of the last stop (gdbstub would use thread 1).
//! - `k` from lldb: an exit status, which lldb waits for.
//!
//! Every other packet goes to gdbstub unchanged. The target never runs: a resume request is
//! answered with a console message saying why and a stop.

use super::conn::{BufferedConn, console_packet, packet};
use super::reply::MemoryReply;
use super::target::{Client, DmaTarget, FatalError};
use gdbstub::common::Signal;
use gdbstub::conn::{Connection, ConnectionExt};
use gdbstub::stub::state_machine::GdbStubStateMachine;
use gdbstub::stub::{DisconnectReason, GdbStub, GdbStubError, MultiThreadStopReason};
use log::debug;
use std::collections::VecDeque;
use std::io::{self, Read, Write};

/// The most bytes one `m` reply carries: what fits in one packet of [`PACKET_SIZE`] as hex.
pub const MAX_READ: u64 = (PACKET_SIZE as u64 - 32) / 2;

/// The most bytes of one packet the session frames itself; longer ones go to gdbstub as they
/// come (it refuses what overflows its buffer).
const MAX_FRAME: usize = PACKET_SIZE + 8;

/// The largest packet gdb may send or ask for. gdb sizes its `m` reads from it; bigger
/// packets mean fewer round trips in a large `dump`.
pub const PACKET_SIZE: usize = 0x20000;

/// The features added to gdbstub's `qSupported` reply.
const EXTRA_FEATURES: &[u8] = b";qXfer:osdata:read+;qXfer:libraries:read+";

/// Why a session ended in error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// Reading from or writing to the client failed.
    #[error("the connection failed: {0}")]
    Connection(#[source] io::Error),
    /// gdbstub ended the session.
    #[error("the gdb protocol session failed: {message}")]
    Protocol {
        /// What gdbstub said.
        message: String,
        /// gdbstub's own name for the failure (its `Debug` form), e.g. `TargetError(..)` or
        /// `PacketParse(..)`: whether the client or the target ended the session.
        kind: String,
    },
}

impl SessionError {
    /// Whether the client went away (closed, reset, timed out): not a failure of the server.
    pub fn is_connection_error(&self) -> bool {
        matches!(self, SessionError::Connection(_))
    }
}

impl From<GdbStubError<FatalError, io::Error>> for SessionError {
    fn from(e: GdbStubError<FatalError, io::Error>) -> Self {
        if e.is_connection_error() {
            SessionError::Connection(io::Error::new(io::ErrorKind::ConnectionAborted, e.to_string()))
        } else {
            SessionError::Protocol { message: e.to_string(), kind: format!("{e:?}") }
        }
    }
}

/// What the framer makes of the client's bytes.
#[derive(Debug, PartialEq, Eq)]
enum Frame {
    /// Bytes for gdbstub as they are: acks, an interrupt, or the start of an over-long packet.
    Pass(Vec<u8>),
    /// A whole packet, `$…#xx`.
    Packet(Vec<u8>),
}

/// Splits the client's byte stream into packets and the bytes between them.
#[derive(Default)]
struct Framer {
    buf: Vec<u8>,
    /// Checksum digits still to come after `#`, once `#` was seen.
    sum_left: Option<u8>,
}

impl Framer {
    fn push(&mut self, b: u8) -> Option<Frame> {
        if self.buf.is_empty() {
            if b == b'$' {
                self.buf.push(b);
                return None;
            }
            return Some(Frame::Pass(vec![b]));
        }
        self.buf.push(b);
        match self.sum_left {
            None if b == b'#' => self.sum_left = Some(2),
            None if self.buf.len() > MAX_FRAME => {
                // Too long to be one of ours: gdbstub gets it as it comes.
                return Some(Frame::Pass(std::mem::take(&mut self.buf)));
            }
            None => {}
            Some(1) => {
                self.sum_left = None;
                return Some(Frame::Packet(std::mem::take(&mut self.buf)));
            }
            Some(n) => self.sum_left = Some(n - 1),
        }
        None
    }
}

/// The body of a framed packet whose checksum is right, or `None`.
fn checked_body(raw: &[u8]) -> Option<&[u8]> {
    let (body, sum) = raw.strip_prefix(b"$")?.split_at_checked(raw.len().checked_sub(4)?)?;
    let sum = std::str::from_utf8(sum.strip_prefix(b"#")?).ok()?;
    let want = u8::from_str_radix(sum, 16).ok()?;
    (body.iter().fold(0u8, |s, b| s.wrapping_add(*b)) == want).then_some(body)
}

/// A parsed hex number, all of `s`.
fn hex(s: &[u8]) -> Option<u64> {
    u64::from_str_radix(std::str::from_utf8(s).ok()?, 16).ok()
}

/// Runs one client's session to its end.
pub fn run<S: Read + Write>(
    target: &mut DmaTarget,
    conn: BufferedConn<S>,
) -> Result<DisconnectReason, SessionError> {
    run_session(target, conn, true)
}

/// [`run`], with memory replies encoded by the session (`fast_memory`) or by gdbstub (the tests
/// compare the two).
fn run_session<S: Read + Write>(
    target: &mut DmaTarget,
    conn: BufferedConn<S>,
    fast_memory: bool,
) -> Result<DisconnectReason, SessionError> {
    // A session that failed mid-read may have left a capture behind.
    target.take_captured_read();
    let mut encoder = MemoryReply::default();
    let mut read_buf = Vec::new();
    let stub = GdbStub::builder(conn).packet_buffer_size(PACKET_SIZE).build().map_err(|e| {
        SessionError::Protocol { message: format!("cannot start a session: {e}"), kind: format!("{e:?}") }
    })?;
    let mut gdb = stub.run_state_machine(target)?;
    let mut framer = Framer::default();
    let mut pending: VecDeque<u8> = VecDeque::new();
    let mut no_ack = false;
    loop {
        gdb = match gdb {
            GdbStubStateMachine::Idle(mut g) => {
                if let Some(b) = pending.pop_front() {
                    g.incoming_data(target, b)?
                } else {
                    let byte = g.borrow_conn().read().map_err(SessionError::Connection)?;
                    match framer.push(byte) {
                        None => g.into(),
                        Some(Frame::Pass(bytes)) => {
                            pending.extend(bytes);
                            g.into()
                        }
                        Some(Frame::Packet(raw)) => match checked_body(&raw).map(|b| {
                            match answer(target, b) {
                                Answer::Memory(rewritten) if !fast_memory => {
                                    rewritten.map_or(Answer::Pass, Answer::Rewrite)
                                }
                                other => other,
                            }
                        }) {
                            Some(Answer::Reply(body)) => {
                                let conn = g.borrow_conn();
                                if !no_ack {
                                    conn.write(b'+').map_err(SessionError::Connection)?;
                                }
                                conn.send(&packet(&body)).map_err(SessionError::Connection)?;
                                g.into()
                            }
                            Some(Answer::Amend(extra)) => {
                                g.borrow_conn().set_hold(true);
                                let mut state = feed(g.into(), target, &raw, &mut pending)?;
                                // Whatever state gdbstub is in now, its reply goes out.
                                let conn = conn_of(&mut state);
                                conn.set_hold(false);
                                let held = conn.take_held();
                                conn.send(&amend_reply(&held, &extra)).map_err(SessionError::Connection)?;
                                state
                            }
                            Some(Answer::Memory(rewritten)) => {
                                // gdbstub parses the packet, picks the thread and reads (errors,
                                // short reads and the reply budget stay its and the target's);
                                // the bytes read come back here and are encoded in bulk.
                                let packet = rewritten.map_or(raw, |body| packet(&body));
                                target.capture_next_read(std::mem::take(&mut read_buf));
                                g.borrow_conn().set_hold(true);
                                let mut state = feed(g.into(), target, &packet, &mut pending)?;
                                let conn = conn_of(&mut state);
                                conn.set_hold(false);
                                if let Some(bytes) = target.take_captured_read() {
                                    // gdbstub answered the read that gave it no bytes with
                                    // `[+]$#00`: the acknowledgement stays, the reply is ours.
                                    let out = conn.held_mut();
                                    out.truncate(out.iter().position(|&b| b == b'$').unwrap_or(out.len()));
                                    encoder.encode(&bytes, out);
                                    read_buf = bytes;
                                }
                                conn.send(&[]).map_err(SessionError::Connection)?;
                                state
                            }
                            Some(Answer::Rewrite(body)) => {
                                pending.extend(packet(&body));
                                g.into()
                            }
                            other => {
                                if other.is_some() && raw.starts_with(b"$QStartNoAckMode#") {
                                    // gdbstub accepts it: from its reply on, nothing is acked.
                                    no_ack = true;
                                }
                                pending.extend(raw);
                                g.into()
                            }
                        },
                    }
                }
            }
            GdbStubStateMachine::Running(mut g) => {
                let message = target.resume_message();
                let conn = g.borrow_conn();
                conn.write_all(&console_packet(&message)).map_err(SessionError::Connection)?;
                Connection::flush(conn).map_err(SessionError::Connection)?;
                target.on_stop();
                let tid = target.resume_stop_thread();
                g.report_stop(
                    target,
                    MultiThreadStopReason::SignalWithThread { tid, signal: target.resume_stop_signal() },
                )?
            }
            GdbStubStateMachine::CtrlCInterrupt(g) => {
                target.on_stop();
                let tid = target.stop_thread();
                g.interrupt_handled(
                    target,
                    Some(MultiThreadStopReason::SignalWithThread { tid, signal: Signal::SIGINT }),
                )?
            }
            GdbStubStateMachine::Disconnected(g) => return Ok(g.get_reason()),
        };
    }
}

/// Gives gdbstub `bytes` while it waits for input; the rest, once it is in another state, waits
/// in `pending`.
fn feed<'a, S: Read + Write>(
    mut state: GdbStubStateMachine<'a, DmaTarget, BufferedConn<S>>,
    target: &mut DmaTarget,
    bytes: &[u8],
    pending: &mut VecDeque<u8>,
) -> Result<GdbStubStateMachine<'a, DmaTarget, BufferedConn<S>>, SessionError> {
    for &b in bytes {
        state = match state {
            GdbStubStateMachine::Idle(g) => g.incoming_data(target, b)?,
            other => {
                pending.push_back(b);
                other
            }
        };
    }
    Ok(state)
}

/// The connection, in any state of the session.
fn conn_of<'a, 's, S: Read + Write>(
    state: &'s mut GdbStubStateMachine<'a, DmaTarget, BufferedConn<S>>,
) -> &'s mut BufferedConn<S> {
    match state {
        GdbStubStateMachine::Idle(g) => g.borrow_conn(),
        GdbStubStateMachine::Running(g) => g.borrow_conn(),
        GdbStubStateMachine::CtrlCInterrupt(g) => g.borrow_conn(),
        GdbStubStateMachine::Disconnected(g) => g.borrow_conn(),
    }
}

/// What the session does with one packet.
enum Answer {
    /// gdbstub answers it.
    Pass,
    /// The session answers it with this body.
    Reply(Vec<u8>),
    /// gdbstub answers it, and the session adds these bytes to the reply's body.
    Amend(Vec<u8>),
    /// gdbstub answers this packet instead.
    Rewrite(Vec<u8>),
    /// A memory read: gdbstub answers it (or the packet with this body instead), and the
    /// session encodes the bytes read.
    Memory(Option<Vec<u8>>),
}

fn answer(target: &mut DmaTarget, body: &[u8]) -> Answer {
    if let Some(features) = body.strip_prefix(b"qSupported") {
        // lldb announces the register sets it knows; gdb only i386.
        let lldb = features.windows(4).any(|w| w == b",arm");
        target.set_client(if lldb { Client::Lldb } else { Client::Gdb });
        return Answer::Amend(EXTRA_FEATURES.to_vec());
    }
    if body == b"qHostInfo" || body == b"QThreadSuffixSupported" {
        // Only lldb asks these; it may skip qSupported's register list.
        target.set_client(Client::Lldb);
        return Answer::Pass;
    }
    if let Some(rest) = body.strip_prefix(b"qXfer:osdata:read:") {
        return Answer::Reply(osdata_reply(target, rest));
    }
    if let Some(rest) = body.strip_prefix(b"qXfer:libraries:read::") {
        // The loaded modules, as gdb's libraries (see linux::modules::library_list).
        let Some((offset, length)) = xfer_window(rest) else { return Answer::Reply(b"E00".to_vec()) };
        let doc = target.libraries(offset == 0);
        return Answer::Reply(window_reply(doc.as_bytes(), offset, length));
    }
    if (body == b"D" || body.starts_with(b"D;")) && target.is_extended() {
        target.on_detach();
        return Answer::Reply(b"OK".to_vec());
    }
    if body == b"qC"
        && let Some((pid, tid)) = target.attached_thread()
    {
        // gdbstub would name the thread it last read memory in; after `attach PID` gdb must go
        // on in that task's thread.
        return Answer::Reply(format!("QCp{pid:x}.{tid:x}").into_bytes());
    }
    if body == b"qOffsets"
        && target.client() == Client::Lldb
        && let Some(offset) = target.uniform_offset()
    {
        return Answer::Reply(format!("Text={offset:x};Data={offset:x};Bss={offset:x}").into_bytes());
    }
    // gdbstub applies a bare `c`/`s` to its own notion of the current thread (thread 1 until a
    // stop names another); dmastub's is the thread of the last stop.
    if body.first() == Some(&b'c') && body[1..].iter().all(u8::is_ascii_hexdigit) {
        return Answer::Rewrite(b"vCont;c".to_vec());
    }
    if body.first() == Some(&b's') && body[1..].iter().all(u8::is_ascii_hexdigit) {
        return Answer::Rewrite(format!("vCont;s:{:x}", target.last_stop_thread().get()).into_bytes());
    }
    // lldb's `process kill` wants an exit status; nothing is done to the machine.
    if body == b"k" && target.client() == Client::Lldb {
        target.on_detach();
        return Answer::Reply(b"X09".to_vec());
    }
    if let Some(args) = body.strip_prefix(b"m")
        && let Some((addr, len)) = args.iter().position(|&b| b == b',').map(|i| args.split_at(i))
        && let (Some(addr), Some(len)) = (hex(addr), hex(&len[1..]))
    {
        if len > MAX_READ {
            debug!("m {addr:#x},{len:#x}: answered with at most {MAX_READ:#x} bytes, as one reply holds");
            return Answer::Memory(Some(format!("m{addr:x},{MAX_READ:x}").into_bytes()));
        }
        return Answer::Memory(None);
    }
    Answer::Pass
}

/// `qXfer:osdata:read:ANNEX:OFFSET,LENGTH`: a window of the document, `m…` (more follows) or
/// `l…` (the last part); `E00` for a malformed request, an empty reply for an unknown annex.
fn osdata_reply(target: &mut DmaTarget, rest: &[u8]) -> Vec<u8> {
    let Some(colon) = rest.iter().position(|&b| b == b':') else { return b"E00".to_vec() };
    let (annex, window) = (&rest[..colon], &rest[colon + 1..]);
    let Some((offset, length)) = xfer_window(window) else {
        return b"E00".to_vec();
    };
    let Some(doc) = target.osdata(annex) else { return Vec::new() };
    window_reply(doc.as_bytes(), offset, length)
}

/// `OFFSET,LENGTH` of a `qXfer` read.
fn xfer_window(window: &[u8]) -> Option<(u64, u64)> {
    window.iter().position(|&b| b == b',').and_then(|i| Some((hex(&window[..i])?, hex(&window[i + 1..])?)))
}

/// The window `offset`, `length` of `doc`: `m…` (more follows) or `l…` (the last part).
fn window_reply(doc: &[u8], offset: u64, length: u64) -> Vec<u8> {
    let start = usize::try_from(offset).unwrap_or(usize::MAX).min(doc.len());
    let len = usize::try_from(length).unwrap_or(usize::MAX).min(MAX_READ as usize);
    let end = start.saturating_add(len).min(doc.len());
    let mut out = Vec::with_capacity(end - start + 1);
    out.push(if end < doc.len() { b'm' } else { b'l' });
    out.extend_from_slice(&doc[start..end]);
    out
}

/// gdbstub's reply (`[+]$body#xx`) with `extra` added to its body and the checksum redone.
fn amend_reply(held: &[u8], extra: &[u8]) -> Vec<u8> {
    let Some(start) = held.iter().rposition(|&b| b == b'$') else { return held.to_vec() };
    let Some(hash) = held[start..].iter().position(|&b| b == b'#').map(|i| start + i) else {
        return held.to_vec();
    };
    let mut out = held[..start].to_vec();
    let mut body = held[start + 1..hash].to_vec();
    body.extend_from_slice(extra);
    let sum = body.iter().fold(0u8, |s, b| s.wrapping_add(*b));
    out.push(b'$');
    out.extend_from_slice(&body);
    out.extend_from_slice(format!("#{sum:02x}").as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(bytes: &[u8]) -> Vec<Frame> {
        let mut f = Framer::default();
        bytes.iter().filter_map(|&b| f.push(b)).collect()
    }

    #[test]
    fn framer_splits_packets_from_acks_and_interrupts() {
        assert_eq!(
            frames(b"+$m0,4#fd\x03$g#67"),
            vec![
                Frame::Pass(b"+".to_vec()),
                Frame::Packet(b"$m0,4#fd".to_vec()),
                Frame::Pass(vec![3]),
                Frame::Packet(b"$g#67".to_vec()),
            ]
        );
    }

    #[test]
    fn framer_passes_over_long_packets_through() {
        let mut long = vec![b'$'];
        long.extend(std::iter::repeat_n(b'X', MAX_FRAME + 10));
        let out = frames(&long);
        assert_eq!(out.len(), 1 + 10, "the buffered start, then the rest byte by byte");
        let Frame::Pass(first) = &out[0] else { panic!("expected pass-through") };
        assert_eq!(first.len(), MAX_FRAME + 1);
    }

    #[test]
    fn checksums_are_checked() {
        assert_eq!(checked_body(b"$g#67"), Some(&b"g"[..]));
        assert_eq!(checked_body(b"$g#68"), None);
        assert_eq!(checked_body(b"$#00"), Some(&b""[..]));
        assert_eq!(checked_body(b"$g#zz"), None);
    }

    /// Everything the session sends for `input`, with memory replies encoded here or by gdbstub.
    fn session_output(input: &[u8], fast_memory: bool) -> Vec<u8> {
        use crate::mmu::{AddressSpace, MmuConfig};
        use std::cell::RefCell;
        use std::rc::Rc;
        struct Stream {
            input: io::Cursor<Vec<u8>>,
            output: Rc<RefCell<Vec<u8>>>,
        }
        impl Read for Stream {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                self.input.read(buf)
            }
        }
        impl Write for Stream {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                self.output.borrow_mut().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        // 192 KiB at 0x10000: random bytes, then zeros, then small values; nothing elsewhere.
        let mut ram = vec![0u8; 0x30000];
        let mut rng = crate::testing::XorShift::new(7);
        rng.fill(&mut ram[..0x10000]);
        rng.fill(&mut ram[0x20000..]);
        ram[0x20000..].iter_mut().for_each(|b| *b &= 0x11);
        let mem = crate::testing::FakeMemory::new().with_region(0x10000, ram).into_phys();
        let mut target = DmaTarget::new(AddressSpace::new(Box::new(mem), MmuConfig::default()), false);
        target.on_connect();
        let output = Rc::new(RefCell::new(Vec::new()));
        let stream = Stream { input: io::Cursor::new(input.to_vec()), output: output.clone() };
        let _ = run_session(&mut target, BufferedConn::over(stream), fast_memory);
        output.take()
    }

    #[test]
    fn memory_replies_are_gdbstubs_byte_for_byte() {
        let reads = [
            "m10000,10",
            "m10000,0",
            "m1fff0,40",
            // Longer than one reply: shortened.
            "m10000,30000",
            "m20000,fff0",
            // Unmapped: an error; across the end of memory: the readable pieces, else an error.
            "m0,10",
            "m3fff0,20",
            "m38000,10000",
            "M10000,1:00",
            "g",
        ];
        let mut input: Vec<u8> = reads.iter().flat_map(|r| packet(r.as_bytes())).collect();
        input.extend(packet(b"QStartNoAckMode"));
        input.push(b'+');
        input.extend(reads.iter().flat_map(|r| packet(r.as_bytes())));
        let fast = session_output(&input, true);
        let slow = session_output(&input, false);
        assert!(fast.len() > 0x40000, "the reads were answered: {} bytes", fast.len());
        assert!(fast.windows(5).any(|w| w == b"$E79#"), "an error reply among them");
        assert!(
            fast == slow,
            "the replies differ:\n{}\n{}",
            String::from_utf8_lossy(&fast),
            String::from_utf8_lossy(&slow)
        );
    }

    #[test]
    fn amended_reply_has_a_right_checksum() {
        let held = [b"+".as_slice(), &packet(b"PacketSize=20000")].concat();
        let out = amend_reply(&held, EXTRA_FEATURES);
        assert_eq!(out[0], b'+');
        assert_eq!(
            checked_body(&out[1..]),
            Some(&b"PacketSize=20000;qXfer:osdata:read+;qXfer:libraries:read+"[..])
        );
    }

    #[test]
    fn the_library_list_without_a_kernel_is_empty_and_windows_are_checked() {
        let mut input = packet(b"qXfer:libraries:read::0,1000");
        input.extend(packet(b"qXfer:libraries:read::zz"));
        let out = String::from_utf8_lossy(&session_output(&input, true)).into_owned();
        assert!(out.contains("$l<library-list version=\"1.0\"/>\n#"), "{out}");
        assert!(out.contains("$E00#"), "{out}");
    }
}
