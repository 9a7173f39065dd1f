//! A bare remote-protocol client: many more requests per second than gdb would send.

use super::*;

fn frame(body: &[u8]) -> Vec<u8> {
    let sum = body.iter().fold(0u8, |s, b| s.wrapping_add(*b));
    let mut v = Vec::with_capacity(body.len() + 4);
    v.push(b'$');
    v.extend_from_slice(body);
    v.extend_from_slice(format!("#{sum:02x}").as_bytes());
    v
}

/// How one request ended.
#[derive(Debug, PartialEq)]
pub(super) enum Outcome {
    /// A reply that is not an error.
    Ok,
    /// An error reply (`E..`) or an empty one (not supported).
    Refused,
    /// No reply within the deadline, or the connection closed.
    Lost(String),
}

/// A remote-protocol client over TCP.
pub(super) struct Rsp {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Rsp {
    pub(super) fn connect(port: u16) -> std::io::Result<Rsp> {
        let s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.set_nodelay(true)?;
        Ok(Rsp { s, buf: Vec::new() })
    }

    /// One reply packet's body (acks skipped, the reply acked).
    pub(super) fn reply(&mut self) -> std::io::Result<Vec<u8>> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(start) = self.buf.iter().position(|&b| b == b'$')
                && let Some(hash) = self.buf[start..].iter().position(|&b| b == b'#').map(|h| h + start)
                && self.buf.len() >= hash + 3
            {
                let body = self.buf[start + 1..hash].to_vec();
                self.buf.drain(..hash + 3);
                self.s.write_all(b"+")?;
                return Ok(body);
            }
            if Instant::now() > deadline {
                return Err(std::io::Error::other("no reply in 30 s"));
            }
            let mut chunk = [0u8; 65536];
            let n = self.s.read(&mut chunk)?;
            if n == 0 {
                return Err(std::io::Error::other("connection closed"));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Sends `body` and reads its reply; console output (`O` packets, as `qRcmd` sends) is
    /// collected until the final reply.
    pub(super) fn request(&mut self, body: &[u8]) -> Outcome {
        if let Err(e) = self.s.write_all(&frame(body)) {
            return Outcome::Lost(format!("send: {e}"));
        }
        loop {
            match self.reply() {
                Ok(r)
                    if r.len() > 1
                        && r[0] == b'O'
                        && r != b"OK"
                        && r[1..].iter().all(u8::is_ascii_hexdigit) =>
                {
                    continue;
                }
                Ok(r) if r.is_empty() || (r[0] == b'E' && r.len() == 3) => return Outcome::Refused,
                Ok(_) => return Outcome::Ok,
                Err(e) => return Outcome::Lost(e.to_string()),
            }
        }
    }
}

pub(super) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub(super) fn monitor(cmd: &str) -> Vec<u8> {
    format!("qRcmd,{}", hex(cmd.as_bytes())).into_bytes()
}

/// Escapes binary data for `X` packets.
pub(super) fn escape(data: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(data.len());
    for &b in data {
        if matches!(b, b'#' | b'$' | b'}' | b'*') {
            v.extend_from_slice(&[b'}', b ^ 0x20]);
        } else {
            v.push(b);
        }
    }
    v
}

/// Requests counted by outcome, in all and by kind: one tally for both soaks.
#[derive(Default)]
pub(super) struct Tally {
    pub(super) ok: u64,
    pub(super) refused: u64,
    pub(super) lost: u64,
    /// Answered, refused, lost, by kind of request.
    pub(super) by_kind: std::collections::BTreeMap<&'static str, [u64; 3]>,
}

impl Tally {
    pub(super) fn count(&mut self, kind: &'static str, outcome: &Outcome) {
        let e = self.by_kind.entry(kind).or_default();
        let i = match outcome {
            Outcome::Ok => 0,
            Outcome::Refused => 1,
            Outcome::Lost(_) => 2,
        };
        e[i] += 1;
        *[&mut self.ok, &mut self.refused, &mut self.lost][i] += 1;
    }

    pub(super) fn total(&self) -> u64 {
        self.ok + self.refused + self.lost
    }
}
