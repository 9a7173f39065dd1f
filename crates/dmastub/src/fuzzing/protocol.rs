//! The gdb session, packet by packet, over an in-memory stream.

use super::images::{Overlay, test_images};
use super::*;

/// A gdb that sends the input's bytes, then hangs up; what the stub answers is counted.
struct MemStream {
    input: Vec<u8>,
    at: usize,
    sent: u64,
}

impl std::io::Read for MemStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let rest = self.input.get(self.at..).unwrap_or_default();
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        self.at += n;
        Ok(n)
    }
}

impl std::io::Write for MemStream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.sent += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Writes the right checksum after every `$…#` packet (so mutations reach the packet parsers
/// rather than dying at the checksum).
fn fix_checksums(mut bytes: Vec<u8>) -> Vec<u8> {
    let mut i = 0;
    while let Some(start) = bytes[i..].iter().position(|&b| b == b'$').map(|p| p + i) {
        let Some(hash) = bytes[start + 1..].iter().position(|&b| b == b'#').map(|p| p + start + 1) else {
            break;
        };
        let sum = bytes[start + 1..hash].iter().fold(0u8, |s, &b| s.wrapping_add(b));
        let hex = format!("{sum:02x}");
        bytes.resize(bytes.len().max(hash + 3), b'0');
        bytes[hash + 1..hash + 3].copy_from_slice(hex.as_bytes());
        i = hash + 3;
    }
    bytes
}

thread_local! {
    static TARGETS_FOR_GDB: RefCell<Vec<crate::gdb::DmaTarget>> = const { RefCell::new(Vec::new()) };
}

/// A gdb session whose bytes are the input (after a first byte: bit 0, which target; bit 1,
/// fix the checksums): gdbstub's packet parser, every protocol extension dmastub implements,
/// the monitor and the thread list, against (0) the 6.1 trimmed image with its kernel found,
/// read-only, or (1) the synthetic machine with writes allowed.
pub fn protocol(data: &[u8]) {
    let mut input = Input(data);
    let mode = input.u8();
    let bytes = if mode & 2 != 0 { fix_checksums(input.0.to_vec()) } else { input.0.to_vec() };
    TARGETS_FOR_GDB.with(|t| {
        let mut t = t.borrow_mut();
        if t.is_empty() {
            let image = &test_images()[0];
            let mut space = AddressSpace::new(Box::new(Overlay::new(image)), MmuConfig::default());
            let kernel = discover(&mut space, Hints::default()).expect("fuzzing: discovery on the 6.1 image");
            t.push(crate::gdb::DmaTarget::new(space, false).with_linux(Linux::new(kernel)));
            let (ram, facts) = crate::testing::synthetic::synthetic_machine().expect("the synthetic machine");
            let space = AddressSpace::new(
                Box::new(BufferMem::new("synthetic", ram).writable()),
                MmuConfig::default(),
            );
            t.push(crate::gdb::DmaTarget::new(space, true).with_cr3(facts.cr3, "fuzz"));
        }
        let target = &mut t[usize::from(mode & 1)];
        let cr3 = target.linux().map(|l| l.kernel.cr3.value).or(target.state().cr3());
        if let Some(cr3) = cr3 {
            target.set_cr3(cr3, "fuzz");
        }
        let _ = target.run_command(crate::gdb::monitor::Command::Virt);
        target.on_connect();
        let conn = crate::gdb::conn::BufferedConn::over(MemStream { input: bytes, at: 0, sent: 0 });
        // The session may end when the bytes end, or on bytes no gdb sends (a bad checksum, a
        // packet that does not parse); never on the target's side: a gdb that can send the
        // packets would lose its session.
        if let Err(crate::gdb::session::SessionError::Protocol { message, kind }) =
            crate::gdb::session::run(target, conn)
        {
            let target_side =
                ["TargetError", "Missing", "UnsupportedStopReason", "ImplicitSwBreakpoints", "Tracepoint"];
            assert!(
                !target_side.iter().any(|k| kind.contains(k)),
                "the session ended on the target's side: {message}"
            );
        }
    });
}
