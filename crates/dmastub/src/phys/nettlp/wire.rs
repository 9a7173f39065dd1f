//! The NetTLP wire format: one PCIe transaction-layer packet per UDP datagram.
//!
//! A datagram is a 6-byte NetTLP header (16-bit sequence, 32-bit timestamp; senders write zeros
//! and receivers ignore them, as libtlp does), the TLP header in PCIe's big-endian layout, and
//! the payload. The same encoder and parser serve the client (which sends memory requests and
//! takes completions) and the adapter emulator (which does the opposite), so the two cannot
//! drift apart; both were checked against libtlp's tools (see the README).

use nom::{
    IResult,
    bytes::complete::take,
    number::complete::{be_u8, be_u16, be_u32, be_u64},
};
use std::fmt;

/// Length of the NetTLP header in front of every TLP.
pub const NETTLP_HEADER_LEN: usize = 6;
/// UDP port of tag 0 for DMA issued by the host side (libtlp's `NETTLP_LIBTLP_PORT_BASE`):
/// tag T uses source and destination port `PORT_BASE + T`.
pub const PORT_BASE: u16 = 0x3000;
/// The adapter firmware (v0.15.1) routes completions by `tag & 0xF`: at most this many reads
/// can be in flight.
pub const MAX_TAGS: u8 = 16;
/// No request may cross a 4 KiB boundary (PCIe).
pub const REQUEST_BOUNDARY: u64 = 4096;
/// Largest payload or read a single TLP can carry: 1024 DW.
pub const MAX_TLP_BYTES: usize = 4096;
/// Largest datagram either side sends: NetTLP header, 4-DW TLP header, 4 KiB payload.
pub const MAX_DATAGRAM: usize = NETTLP_HEADER_LEN + 16 + MAX_TLP_BYTES;

const FMT_4DW: u8 = 0x20;
const FMT_DATA: u8 = 0x40;
const TYPE_MASK: u8 = 0x1f;
const TYPE_MEM: u8 = 0x00;
const TYPE_CPL: u8 = 0x0a;

/// The UDP port that carries tag `tag`.
pub fn port_for_tag(tag: u8) -> u16 {
    PORT_BASE + u16::from(tag)
}

/// A PCIe requester (or completer) ID: bus, device and function, written `BB:DD` (bus, devfn)
/// as libtlp's `-b` option takes it, or `BB:DD.F`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct RequesterId(pub u16);

impl RequesterId {
    /// Parses `1b:00` (bus 0x1b, devfn 0x00) or `1b:00.1` (bus, device, function).
    pub fn parse(text: &str) -> Result<Self, BadRequesterId> {
        let bad = || BadRequesterId(text.to_string());
        let (bus, rest) = text.split_once(':').ok_or_else(bad)?;
        let bus = u8::from_str_radix(bus, 16).map_err(|_| bad())?;
        let devfn = match rest.split_once('.') {
            Some((dev, func)) => {
                let dev = u8::from_str_radix(dev, 16).map_err(|_| bad())?;
                let func = func.parse::<u8>().map_err(|_| bad())?;
                if dev > 31 || func > 7 {
                    return Err(bad());
                }
                dev << 3 | func
            }
            None => u8::from_str_radix(rest, 16).map_err(|_| bad())?,
        };
        Ok(RequesterId(u16::from(bus) << 8 | u16::from(devfn)))
    }
}

/// Text that is not a requester ID.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a requester ID (BB:DD in hex, e.g. 1b:00, or BB:DD.F)")]
pub struct BadRequesterId(pub String);

impl fmt::Display for RequesterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02x}:{:02x}", self.0 >> 8, self.0 & 0xff)
    }
}

/// Completion status (PCIe Cpl Status field).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CplStatus {
    /// Successful Completion.
    Success,
    /// No memory (or nothing that answers) at the address.
    UnsupportedRequest,
    /// Configuration Request Retry Status.
    ConfigRetry,
    /// Completer Abort.
    CompleterAbort,
    /// A value PCIe reserves.
    Reserved(u8),
}

impl CplStatus {
    fn bits(self) -> u8 {
        match self {
            CplStatus::Success => 0,
            CplStatus::UnsupportedRequest => 1,
            CplStatus::ConfigRetry => 2,
            CplStatus::CompleterAbort => 4,
            CplStatus::Reserved(b) => b & 7,
        }
    }

    fn from_bits(b: u8) -> Self {
        match b {
            0 => CplStatus::Success,
            1 => CplStatus::UnsupportedRequest,
            2 => CplStatus::ConfigRetry,
            4 => CplStatus::CompleterAbort,
            other => CplStatus::Reserved(other),
        }
    }
}

impl fmt::Display for CplStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CplStatus::Success => f.write_str("successful completion"),
            CplStatus::UnsupportedRequest => f.write_str("Unsupported Request"),
            CplStatus::ConfigRetry => f.write_str("Configuration Request Retry"),
            CplStatus::CompleterAbort => f.write_str("Completer Abort"),
            CplStatus::Reserved(b) => write!(f, "reserved completion status {b}"),
        }
    }
}

/// A memory read or write request: the bytes `[addr, addr + len)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemRequest {
    /// Who asks: completions go back to this ID.
    pub requester: RequesterId,
    /// The 8-bit tag; the adapter routes by its low 4 bits.
    pub tag: u8,
    /// Address of the first byte (not DW-aligned: the byte enables say where it starts).
    pub addr: u64,
    /// Bytes, 1 to 4096, not crossing a 4 KiB boundary.
    pub len: u32,
}

/// A completion: with data (CplD) for a successful read, without for an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Completion<'a> {
    /// Who answers (the root complex).
    pub completer: RequesterId,
    /// Whether the read succeeded.
    pub status: CplStatus,
    /// Bytes still to come for the whole request, this packet's included (1 to 4096).
    pub byte_count: u16,
    /// The requester of the read this answers.
    pub requester: RequesterId,
    /// The tag of the read this answers.
    pub tag: u8,
    /// Low 7 bits of the address of this packet's first byte.
    pub lower_addr: u8,
    /// The payload: whole DWs, the first holding the byte at `lower_addr`. Empty for a
    /// completion without data.
    pub payload: &'a [u8],
}

impl Completion<'_> {
    /// The bytes this completion delivers, without the DW padding in front and behind.
    pub fn data(&self) -> &[u8] {
        let skip = usize::from(self.lower_addr & 3);
        let avail = self.payload.len().saturating_sub(skip);
        let n = avail.min(usize::from(self.byte_count));
        self.payload.get(skip..skip + n).unwrap_or(&[])
    }
}

/// A parsed datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tlp<'a> {
    /// A Memory Read request.
    MemRead(MemRequest),
    /// A posted write; `data` is the enabled bytes only.
    MemWrite(MemRequest, &'a [u8]),
    /// A completion, with or without data.
    Completion(Completion<'a>),
}

/// Why a datagram was not a TLP we can use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("{0} bytes is too short for a NetTLP datagram")]
    /// Shorter than any datagram: its length.
    Short(usize),
    #[error("TLP fmt/type {0:#04x} is neither a memory request nor a completion")]
    /// A TLP type we neither send nor serve: its fmt/type byte.
    UnknownType(u8),
    #[error("TLP length {len_dw} DW needs {need} payload bytes, the datagram has {have}")]
    /// The payload is shorter than the header says.
    Truncated {
        /// The header's length field, in DW.
        len_dw: usize,
        /// The payload bytes that needs.
        need: usize,
        /// The payload bytes there are.
        have: usize,
    },
    #[error("memory request with byte enables first {first:#x} last {last:#x} for {len_dw} DW: {why}")]
    /// Byte enables PCIe does not allow for that length.
    ByteEnables {
        /// First DW byte enables.
        first: u8,
        /// Last DW byte enables.
        last: u8,
        /// The length in DW.
        len_dw: usize,
        /// What rule they break.
        why: &'static str,
    },
    #[error("memory request at {addr:#x} (+{len:#x}) crosses a 4 KiB boundary")]
    /// A request that crosses a 4 KiB boundary.
    Crosses4K {
        /// The first byte.
        addr: u64,
        /// Bytes.
        len: u32,
    },
    #[error("memory request at {addr:#x} (+{len:#x}) runs past the top of the 64-bit address space")]
    /// A request that runs past 2^64.
    PastTop {
        /// The first byte.
        addr: u64,
        /// Bytes.
        len: u32,
    },
    #[error("4-DW header for address {0:#x} below 4 GiB")]
    /// A 4-DW header (64-bit address) for an address that needs only 3: PCIe forbids it.
    FourDwBelow4G(u64),
    #[error("completion byte count 0 with data, or data without the with-data format")]
    /// A completion whose byte count and format disagree.
    BadCompletion,
}

/// Length in DW and the byte enables for `len` bytes at `addr`.
fn dw_span(addr: u64, len: u32) -> (usize, u8, u8) {
    // Wrapping: a request may end at 2^64 (the parser refuses it, but encoding must not panic).
    let end = addr.wrapping_add(u64::from(len));
    let head = (addr & 3) as u32;
    let len_dw = (u64::from(head) + u64::from(len)).div_ceil(4) as usize;
    let first_bytes = if len_dw == 1 { len } else { 4 - head };
    let first = ((1u32 << first_bytes) - 1) << head;
    let last = if len_dw == 1 {
        0
    } else {
        let tail = (end.wrapping_sub(1) & 3) + 1;
        (1u8 << tail) - 1
    };
    (len_dw, first as u8 & 0xf, last)
}

/// Appends `req` as a Memory Read request (3-DW header below 4 GiB, 4-DW above).
pub fn encode_read(req: &MemRequest, out: &mut Vec<u8>) {
    encode_request(req, false, out);
}

/// Appends a posted Memory Write of `data` at `req.addr` (`req.len` must equal `data.len()`);
/// bytes outside the enables are sent as zeros.
pub fn encode_write(req: &MemRequest, data: &[u8], out: &mut Vec<u8>) {
    encode_request(req, true, out);
    let pad = (req.addr & 3) as usize;
    out.extend(std::iter::repeat_n(0u8, pad));
    out.extend_from_slice(data);
    let total = pad + data.len();
    out.extend(std::iter::repeat_n(0u8, total.next_multiple_of(4) - total));
}

fn encode_request(req: &MemRequest, with_data: bool, out: &mut Vec<u8>) {
    let (len_dw, first, last) = dw_span(req.addr, req.len);
    let dw_addr = req.addr & !3;
    let four_dw = dw_addr > u64::from(u32::MAX);
    out.extend_from_slice(&[0; NETTLP_HEADER_LEN]);
    let fmt = (if four_dw { FMT_4DW } else { 0 }) | (if with_data { FMT_DATA } else { 0 });
    out.push(fmt | TYPE_MEM);
    out.push(0); // traffic class 0
    out.extend_from_slice(&((len_dw & 0x3ff) as u16).to_be_bytes());
    out.extend_from_slice(&req.requester.0.to_be_bytes());
    out.push(req.tag);
    out.push(last << 4 | first);
    if four_dw {
        out.extend_from_slice(&dw_addr.to_be_bytes());
    } else {
        out.extend_from_slice(&(dw_addr as u32).to_be_bytes());
    }
}

/// Appends a completion. `payload` must be whole DWs (empty for a completion without data).
pub fn encode_completion(c: &Completion<'_>, out: &mut Vec<u8>) {
    out.extend_from_slice(&[0; NETTLP_HEADER_LEN]);
    let with_data = !c.payload.is_empty();
    out.push(if with_data { FMT_DATA } else { 0 } | TYPE_CPL);
    out.push(0);
    out.extend_from_slice(&(((c.payload.len() / 4) & 0x3ff) as u16).to_be_bytes());
    out.extend_from_slice(&c.completer.0.to_be_bytes());
    let count = c.byte_count & 0xfff; // 4096 is sent as 0
    out.extend_from_slice(&(u16::from(c.status.bits()) << 13 | count).to_be_bytes());
    out.extend_from_slice(&c.requester.0.to_be_bytes());
    out.push(c.tag);
    out.push(c.lower_addr & 0x7f);
    out.extend_from_slice(c.payload);
}

struct Header {
    fmt_type: u8,
    len_dw: usize,
}

fn common_header(i: &[u8]) -> IResult<&[u8], Header> {
    let (i, _nettlp) = take(NETTLP_HEADER_LEN)(i)?;
    let (i, fmt_type) = be_u8(i)?;
    let (i, _tc) = be_u8(i)?;
    let (i, flags_len) = be_u16(i)?;
    let len = usize::from(flags_len & 0x3ff);
    Ok((i, Header { fmt_type, len_dw: if len == 0 { 1024 } else { len } }))
}

fn request_fields(i: &[u8], four_dw: bool) -> IResult<&[u8], (u16, u8, u8, u64)> {
    let (i, requester) = be_u16(i)?;
    let (i, tag) = be_u8(i)?;
    let (i, be) = be_u8(i)?;
    let (i, addr) = if four_dw { be_u64(i)? } else { be_u32(i).map(|(i, a)| (i, u64::from(a)))? };
    Ok((i, (requester, tag, be, addr)))
}

fn completion_fields(i: &[u8]) -> IResult<&[u8], (u16, u16, u16, u8, u8)> {
    let (i, completer) = be_u16(i)?;
    let (i, status_count) = be_u16(i)?;
    let (i, requester) = be_u16(i)?;
    let (i, tag) = be_u8(i)?;
    let (i, lower) = be_u8(i)?;
    Ok((i, (completer, status_count, requester, tag, lower)))
}

/// Parses one datagram. Everything is checked against the packet's own length; nothing in it
/// is trusted to be consistent.
pub fn parse(datagram: &[u8]) -> Result<Tlp<'_>, WireError> {
    let short = |_| WireError::Short(datagram.len());
    let (rest, h) = common_header(datagram).map_err(short)?;
    let with_data = h.fmt_type & FMT_DATA != 0;
    let four_dw = h.fmt_type & FMT_4DW != 0;
    let payload_of = |rest: &'_ [u8]| -> Result<(), WireError> {
        let need = h.len_dw * 4;
        if rest.len() < need {
            return Err(WireError::Truncated { len_dw: h.len_dw, need, have: rest.len() });
        }
        Ok(())
    };
    match (h.fmt_type & TYPE_MASK, h.fmt_type & 0x80) {
        (TYPE_MEM, 0) => {
            let (rest, (requester, tag, be, dw_addr)) = request_fields(rest, four_dw).map_err(short)?;
            if four_dw && dw_addr <= u64::from(u32::MAX) {
                return Err(WireError::FourDwBelow4G(dw_addr));
            }
            let (first, last) = (be & 0xf, be >> 4);
            let (addr, len) = enabled_range(dw_addr & !3, h.len_dw, first, last)?;
            let req = MemRequest { requester: RequesterId(requester), tag, addr, len };
            if !with_data {
                return Ok(Tlp::MemRead(req));
            }
            payload_of(rest)?;
            let skip = (addr & 3) as usize;
            Ok(Tlp::MemWrite(req, &rest[skip..skip + len as usize]))
        }
        (TYPE_CPL, 0) => {
            let (rest, (completer, status_count, requester, tag, lower)) =
                completion_fields(rest).map_err(short)?;
            let count = status_count & 0xfff;
            let payload = if with_data {
                payload_of(rest)?;
                &rest[..h.len_dw * 4]
            } else {
                &[][..]
            };
            Ok(Tlp::Completion(Completion {
                completer: RequesterId(completer),
                status: CplStatus::from_bits((status_count >> 13) as u8),
                byte_count: if count == 0 { 4096 } else { count },
                requester: RequesterId(requester),
                tag,
                lower_addr: lower & 0x7f,
                payload,
            }))
        }
        _ => Err(WireError::UnknownType(h.fmt_type)),
    }
}

/// The byte range a request's length and byte enables select. Only contiguous enables are
/// accepted (what libtlp and dmastub send); a zero-length read is refused.
fn enabled_range(dw_addr: u64, len_dw: usize, first: u8, last: u8) -> Result<(u64, u32), WireError> {
    let bad = |why| WireError::ByteEnables { first, last, len_dw, why };
    let contiguous = |be: u8| {
        be != 0 && (be >> be.trailing_zeros()).count_ones() == (be >> be.trailing_zeros()).trailing_ones()
    };
    if !contiguous(first) {
        return Err(bad("first DW enables empty or not contiguous"));
    }
    let head = first.trailing_zeros();
    let (len, addr) = if len_dw == 1 {
        if last != 0 {
            return Err(bad("a 1-DW request must have last enables 0"));
        }
        (first.count_ones(), dw_addr + u64::from(head))
    } else {
        if first.leading_zeros() != 4 {
            return Err(bad("first DW enables must reach the DW's end"));
        }
        if !contiguous(last) || last.trailing_zeros() != 0 {
            return Err(bad("last DW enables must start at the DW's first byte"));
        }
        let len = (len_dw as u32 - 2) * 4 + first.count_ones() + last.count_ones();
        (len, dw_addr + u64::from(head))
    };
    // The last DW of the 64-bit space ends at 2^64: refused rather than wrapped.
    let end = addr.checked_add(u64::from(len)).ok_or(WireError::PastTop { addr, len })?;
    if addr / REQUEST_BOUNDARY != (end - 1) / REQUEST_BOUNDARY {
        return Err(WireError::Crosses4K { addr, len });
    }
    Ok((addr, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(addr: u64, len: u32) -> MemRequest {
        MemRequest { requester: RequesterId(0x1b00), tag: 5, addr, len }
    }

    #[test]
    fn requester_ids_parse_as_libtlp_takes_them() {
        assert_eq!(RequesterId::parse("1b:00"), Ok(RequesterId(0x1b00)));
        assert_eq!(RequesterId::parse("03:1f.7").map(|r| r.0), Ok(0x03ff));
        assert_eq!(RequesterId(0x1b00).to_string(), "1b:00");
        for bad in ["1b", "1g:00", "1b:100", "1b:20.0", "1b:00.8", ""] {
            assert!(RequesterId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn byte_enables_match_libtlp() {
        // (addr, len) -> (DW, first, last), as libtlp's tlp_calculate_* give them.
        for (addr, len, want) in [
            (0u64, 4u32, (1usize, 0xf, 0)),
            (1, 2, (1, 0x6, 0)),
            (2, 4, (2, 0xc, 0x3)),
            (3, 2, (2, 0x8, 0x1)),
            (0, 8, (2, 0xf, 0xf)),
            (0x1000, 4096, (1024, 0xf, 0xf)),
            (5, 1, (1, 0x2, 0)),
        ] {
            assert_eq!(dw_span(addr, len), want, "{addr} {len}");
        }
    }

    #[test]
    fn reads_round_trip_every_start_and_length() {
        let mut out = Vec::new();
        for addr in [0u64, 1, 2, 3, 0xfff, 0x1_0000_0001, 0xffff_fffc] {
            for len in [1u32, 2, 3, 4, 5, 7, 8, 9, 511, 512, 4096] {
                if addr / 4096 != (addr + u64::from(len) - 1) / 4096 {
                    continue;
                }
                out.clear();
                encode_read(&req(addr, len), &mut out);
                let dw_hdr = if addr & !3 > u64::from(u32::MAX) { 16 } else { 12 };
                assert_eq!(out.len(), NETTLP_HEADER_LEN + dw_hdr);
                assert_eq!(parse(&out), Ok(Tlp::MemRead(req(addr, len))), "{addr:#x} {len}");
            }
        }
    }

    #[test]
    fn header_bytes_are_those_libtlp_sends() {
        let mut out = Vec::new();
        encode_read(&req(0x1234_5678, 0x200), &mut out);
        assert_eq!(out, [0, 0, 0, 0, 0, 0, 0x00, 0, 0x00, 0x80, 0x1b, 0x00, 5, 0xff, 0x12, 0x34, 0x56, 0x78]);
        out.clear();
        encode_read(&req(0x1_0000_0000, 4096), &mut out);
        assert_eq!(&out[6..10], [0x20, 0, 0, 0]);
        assert_eq!(&out[14..22], 0x1_0000_0000u64.to_be_bytes());
    }

    #[test]
    fn writes_carry_only_enabled_bytes() {
        let mut out = Vec::new();
        encode_write(&req(0x102, 3), b"abc", &mut out);
        assert_eq!(out[6], 0x40);
        assert_eq!(out.len(), NETTLP_HEADER_LEN + 12 + 8);
        assert_eq!(parse(&out), Ok(Tlp::MemWrite(req(0x102, 3), b"abc")));
    }

    #[test]
    fn completions_round_trip_and_place_their_data() {
        let payload = [0xaau8, 1, 2, 3, 4, 5, 6, 7];
        let c = Completion {
            completer: RequesterId(0),
            status: CplStatus::Success,
            byte_count: 4096,
            requester: RequesterId(0x1b00),
            tag: 3,
            lower_addr: 0x41,
            payload: &payload,
        };
        let mut out = Vec::new();
        encode_completion(&c, &mut out);
        assert_eq!(&out[6..8], [0x4a, 0]);
        assert_eq!(&out[12..14], [0x00, 0x00], "4096 is sent as 0");
        let Ok(Tlp::Completion(back)) = parse(&out) else { panic!("{:?}", parse(&out)) };
        assert_eq!(back, c);
        assert_eq!(back.data(), &payload[1..]);
        let last = Completion { byte_count: 2, ..c };
        assert_eq!(last.data(), [1, 2]);
        let ur = Completion { status: CplStatus::UnsupportedRequest, payload: &[], ..c };
        out.clear();
        encode_completion(&ur, &mut out);
        assert_eq!(out[6], 0x0a);
        assert_eq!(parse(&out), Ok(Tlp::Completion(ur)));
    }

    #[test]
    fn malformed_datagrams_are_refused_not_trusted() {
        let mut good = Vec::new();
        encode_read(&req(0x1000, 8), &mut good);
        for n in 0..good.len() {
            assert!(parse(&good[..n]).is_err(), "truncated to {n}");
        }
        let mut bad = good.clone();
        bad[13] = 0x0f; // last enables 0 on a 2-DW read
        assert!(matches!(parse(&bad), Err(WireError::ByteEnables { .. })));
        bad = good.clone();
        bad[13] = 0xf5; // holes in the first enables
        assert!(parse(&bad).is_err());
        let mut top = Vec::new();
        encode_read(&req(u64::MAX - 3, 4), &mut top);
        assert!(matches!(parse(&top), Err(WireError::PastTop { .. })), "{:?}", parse(&top));
        bad = good.clone();
        bad[6] = 0x04; // configuration read
        assert!(matches!(parse(&bad), Err(WireError::UnknownType(4))));
        bad = good.clone();
        bad[8] = 0x00; // length 1024 DW at 0x1000: fine, but at 0x1004 it crosses
        bad[9] = 0x00;
        bad[17] = 0x04;
        assert!(matches!(parse(&bad), Err(WireError::Crosses4K { .. })));
        let mut cpl = Vec::new();
        encode_completion(
            &Completion {
                completer: RequesterId(0),
                status: CplStatus::Success,
                byte_count: 8,
                requester: RequesterId(0),
                tag: 0,
                lower_addr: 0,
                payload: &[0; 8],
            },
            &mut cpl,
        );
        cpl.truncate(cpl.len() - 1);
        assert!(matches!(parse(&cpl), Err(WireError::Truncated { .. })));
    }
}
