//! `dmastub read` and `dmastub vtop`: memory and page walks without gdb.

use crate::CliResult;
use crate::cli::{ReadArgs, VtopArgs};
use crate::source::{mmu_config, open_source};
use dmastub::VirtAddr;
use dmastub::gdb::{Mode, SessionState};
use dmastub::mmu::AddressSpace;
use dmastub::phys::WriteMode;
use std::io::Write;

pub(crate) fn read(a: ReadArgs) -> CliResult {
    let mem = open_source(&a.source, WriteMode::ReadOnly)?;
    let mut space = AddressSpace::new(mem, mmu_config(&a.mmu));
    let mut state = SessionState::new();
    if let Some(cr3) = a.cr3 {
        state.set_cr3(cr3);
        state.set_mode(Mode::Virt)?;
    }
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut buf = vec![0u8; 64 * 1024];
    let mut done = 0u64;
    while done < a.len {
        let n = (a.len - done).min(buf.len() as u64) as usize;
        let addr = a.addr.wrapping_add(done);
        let chunk = &mut buf[..n];
        let got = match state.read(&mut space, addr, chunk) {
            Ok(got) => got,
            Err(e) => {
                out.flush()?;
                return Err(e.into());
            }
        };
        if a.binary {
            out.write_all(&chunk[..got])?;
        } else {
            hexdump(&mut out, addr, &chunk[..got])?;
        }
        done += got as u64;
        if got < n {
            out.flush()?;
            let addr = a.addr.wrapping_add(done);
            let why =
                state.read(&mut space, addr, &mut [0u8; 1]).err().map(|e| e.to_string()).unwrap_or_default();
            return Err(format!("stopped after {done:#x} bytes: {why}").into());
        }
    }
    out.flush()?;
    Ok(())
}

/// `addr: 16 hex bytes  |ascii|`, 16 bytes a line, lines aligned to 16.
fn hexdump(out: &mut impl Write, start: u64, bytes: &[u8]) -> std::io::Result<()> {
    let mut at = 0usize;
    while at < bytes.len() {
        let addr = start.wrapping_add(at as u64);
        let lead = (addr % 16) as usize;
        let take = (16 - lead).min(bytes.len() - at);
        let line = &bytes[at..at + take];
        let mut hex = String::with_capacity(48);
        let mut text = String::with_capacity(16);
        for i in 0..16 {
            if i >= lead && i < lead + take {
                let b = line[i - lead];
                hex.push_str(&format!("{b:02x} "));
                text.push(if b.is_ascii_graphic() || b == b' ' { b as char } else { '.' });
            } else {
                hex.push_str("   ");
                text.push(' ');
            }
            if i == 7 {
                hex.push(' ');
            }
        }
        writeln!(out, "{:016x}: {hex} |{text}|", addr - lead as u64)?;
        at += take;
    }
    Ok(())
}

pub(crate) fn vtop(a: VtopArgs) -> CliResult {
    let mem = open_source(&a.source, WriteMode::ReadOnly)?;
    let mut space = AddressSpace::new(mem, mmu_config(&a.mmu));
    let walk = space.vtop_in(a.cr3, VirtAddr(a.addr));
    println!("{walk}");
    if walk.result.is_err() {
        return Err(format!("virt {:#x} does not translate under CR3 {:#x}", a.addr, a.cr3).into());
    }
    Ok(())
}
