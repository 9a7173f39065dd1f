//! Memory replies encoded in bulk, byte for byte as gdbstub encodes them.
//!
//! gdbstub 0.7 writes a reply one byte at a time through its run-length encoder: for a 64 MiB
//! `dump binary memory` that writer was two thirds of dmastub's CPU time. [`MemoryReply`]
//! produces the same bytes (hex digits, gdbstub's run-length encoding, `#` and checksum) from
//! whole buffers: the hex is written from a table, and the runs worth encoding (four or more
//! equal digits) are found eight positions at a time.
//!
//! gdbstub's encoder, which this one matches: a run of one digit is cut at 98; a run of 1 to
//! 3 is sent as it is; a run of 7 or 8 sends one digit plain and goes on with one fewer (the
//! count characters `#` and `$` are reserved); any other run of n is the digit, `*` and the
//! character 28 + n (gdb repeats the digit n - 1 more times).

/// The longest run gdbstub encodes at once: its count character must stay printable (`~`).
const MAX_RUN: usize = 98;

/// Two lowercase hex digits for every byte value.
const HEX: [[u8; 2]; 256] = {
    let digits = b"0123456789abcdef";
    let mut table = [[0u8; 2]; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = [digits[i >> 4], digits[i & 0xf]];
        i += 1;
    }
    table
};

/// Encodes memory replies; keeps its scratch buffer between replies.
#[derive(Default)]
pub(crate) struct MemoryReply {
    hex: Vec<u8>,
}

impl MemoryReply {
    /// Appends gdbstub's reply to a read of `data` to `out`: `$`, the run-length encoded hex
    /// of `data`, `#` and the checksum.
    pub(crate) fn encode(&mut self, data: &[u8], out: &mut Vec<u8>) {
        let len = data.len() * 2;
        if self.hex.len() < len {
            self.hex.resize(len, 0);
        }
        let hex = &mut self.hex[..len];
        let mut words = data.chunks_exact(4);
        let mut digits = hex.chunks_exact_mut(8);
        for (word, eight) in words.by_ref().zip(digits.by_ref()) {
            eight.copy_from_slice(&hex_of_four(word));
        }
        for (&b, pair) in words.remainder().iter().zip(digits.into_remainder().chunks_exact_mut(2)) {
            pair.copy_from_slice(&HEX[usize::from(b)]);
        }
        out.reserve(len + 4);
        out.push(b'$');
        let body = out.len();
        run_length_encode(hex, out);
        let sum = out[body..].iter().fold(0u8, |s, &b| s.wrapping_add(b));
        out.push(b'#');
        out.extend_from_slice(&HEX[usize::from(sum)]);
    }
}

/// The eight hex digits of four bytes, computed in one word: each nibble spread into a byte,
/// then `'0' + n`, plus `'a' - '0' - 10` where `n` is 10 or more.
fn hex_of_four(bytes: &[u8]) -> [u8; 8] {
    let mut x = u64::from(u32::from_be_bytes(bytes.try_into().unwrap_or([0; 4])));
    x = (x | (x << 16)) & 0x0000_ffff_0000_ffff;
    x = (x | (x << 8)) & 0x00ff_00ff_00ff_00ff;
    x = (x | (x << 4)) & 0x0f0f_0f0f_0f0f_0f0f;
    let letters = ((x + 0x0606_0606_0606_0606) >> 4) & 0x0101_0101_0101_0101;
    (x + 0x3030_3030_3030_3030 + letters * 39).to_be_bytes()
}

/// Stops gdbstub's checksum scan early in the packet buffer a captured read left: `buf` is the
/// read's part of that buffer, which starts just past the `m` packet.
///
/// gdbstub 0.7.10 takes a packet's checksum as the bytes from its `#` to the next `#` anywhere in
/// its 128 KiB packet buffer (then the first two of them), and an `m` read leaves memory there:
/// in zeroed memory every packet scanned to the buffer's end, a quarter of dmastub's CPU time
/// in a dump. `#`s where the read began, beyond the end of any read request, end the scan there.
pub(crate) fn stop_checksum_scan(buf: &mut [u8]) {
    let n = buf.len().min(64);
    buf[..n].fill(b'#');
}

/// Appends `hex` to `out` with gdbstub's run-length encoding.
fn run_length_encode(hex: &[u8], out: &mut Vec<u8>) {
    let mut plain = 0;
    while let Some(start) = run_of_four(hex, plain) {
        // Runs before `start` are shorter than four: sent as they are. The run at `start`
        // begins there: the digit before it differs (it ended the last run, or a run of four
        // would have been found one place earlier).
        out.extend_from_slice(&hex[plain..start]);
        let digit = hex[start];
        let len = run_end(hex, start) - start;
        let mut left = len;
        while left > 0 {
            let n = left.min(MAX_RUN);
            encode_run(digit, n, out);
            left -= n;
        }
        plain = start + len;
    }
    out.extend_from_slice(&hex[plain..]);
}

/// One run of `n` (1..=98) equal digits, as gdbstub sends it.
fn encode_run(digit: u8, n: usize, out: &mut Vec<u8>) {
    match n {
        1..=3 => out.extend(std::iter::repeat_n(digit, n)),
        // 28 + 7 is `#` and 28 + 8 is `$`: one digit goes plain and the run is one shorter.
        7 | 8 => {
            out.push(digit);
            encode_run(digit, n - 1, out);
        }
        _ => out.extend_from_slice(&[digit, b'*', 28 + n as u8]),
    }
}

/// The end of the run of equal digits at `start`, found eight digits at a time.
fn run_end(hex: &[u8], start: usize) -> usize {
    let digit = hex[start];
    let all = u64::from_ne_bytes([digit; 8]);
    let mut at = start;
    while let Some(word) = hex.get(at..at + 8).and_then(|w| <[u8; 8]>::try_from(w).ok()) {
        let diff = u64::from_le_bytes(word) ^ all;
        if diff != 0 {
            return at + (diff.trailing_zeros() / 8) as usize;
        }
        at += 8;
    }
    at + hex[at..].iter().position(|&b| b != digit).unwrap_or(hex.len() - at)
}

/// The first position at or after `from` where four equal digits begin.
fn run_of_four(hex: &[u8], from: usize) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let word = |at: usize| hex.get(at..at + 8).map(|w| u64::from_le_bytes(w.try_into().unwrap_or([0; 8])));
    let mut at = from;
    // Eight starting positions at a time: byte i of `diff` is zero where the digits at
    // at+i .. at+i+3 are equal (the classic zero-byte test says whether any is).
    while at + 11 < hex.len() {
        if let (Some(w0), Some(w1), Some(w2), Some(w3)) = (word(at), word(at + 1), word(at + 2), word(at + 3))
        {
            let diff = (w0 ^ w1) | (w1 ^ w2) | (w2 ^ w3);
            if diff.wrapping_sub(ONES) & !diff & HIGHS != 0 {
                break;
            }
        }
        at += 8;
    }
    (at..hex.len().saturating_sub(3))
        .find(|&i| hex[i] == hex[i + 1] && hex[i] == hex[i + 2] && hex[i] == hex[i + 3])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// gdbstub 0.7.10's `ResponseWriter` with run-length encoding, transcribed as a model: one
    /// byte at a time, then `#` and the checksum.
    fn model(data: &[u8]) -> Vec<u8> {
        struct W {
            out: Vec<u8>,
            sum: u8,
            ch: u8,
            rep: u8,
        }
        impl W {
            fn inner(&mut self, b: u8) {
                if self.out.is_empty() {
                    self.out.push(b'$');
                }
                self.sum = self.sum.wrapping_add(b);
                self.out.push(b);
            }
            fn write(&mut self, b: u8) {
                if b == self.ch && b' ' - 4 + (self.rep + 1) <= b'~' {
                    self.rep += 1;
                    return;
                }
                loop {
                    match self.rep {
                        0 => {}
                        1..=3 => (0..self.rep).for_each(|_| self.inner(self.ch)),
                        7 | 8 => {
                            self.inner(self.ch);
                            self.rep -= 1;
                            continue;
                        }
                        _ => {
                            self.inner(self.ch);
                            self.inner(b'*');
                            self.inner(b' ' - 4 + self.rep);
                        }
                    }
                    self.ch = b;
                    self.rep = 1;
                    break;
                }
            }
        }
        let mut w = W { out: Vec::new(), sum: 0, ch: 0, rep: 0 };
        for &b in data {
            for d in HEX[usize::from(b)] {
                w.write(d);
            }
        }
        w.write(b'#');
        let sum = w.sum;
        for d in HEX[usize::from(sum)] {
            w.write(d);
        }
        w.write(0);
        w.out
    }

    fn encoded(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        MemoryReply::default().encode(data, &mut out);
        out
    }

    #[test]
    fn small_replies_match_gdbstub() {
        assert_eq!(encoded(&[]), b"$#00");
        assert_eq!(encoded(&[0x12, 0x34]), b"$1234#ca");
        // Eight zero digits: neither "0*$" nor "0*#" may be sent, so two go plain and six follow.
        assert_eq!(encoded(&[0; 4]), model(&[0; 4]));
        assert_eq!(&encoded(&[0; 4])[..7], b"$000*\"#");
    }

    #[test]
    fn every_run_length_matches_gdbstub() {
        for len in 0..400 {
            for (before, after) in [(None, None), (Some(0x12u8), None), (Some(0x10), Some(0x0f))] {
                // A run of about `len` zero digits, alone or between others (0x10's low digit
                // and 0x0f's high digit extend it).
                let mut data: Vec<u8> = before.into_iter().collect();
                data.extend(std::iter::repeat_n(0u8, len / 2));
                if len % 2 == 1 {
                    data.push(0x05);
                }
                data.extend(after);
                assert_eq!(encoded(&data), model(&data), "run of {len}, {before:?} {after:?}");
            }
        }
    }

    #[test]
    fn random_and_patterned_memory_matches_gdbstub() {
        let mut rng = crate::testing::XorShift::new(14);
        for round in 0..300 {
            let len = rng.below(3000) as usize;
            let mut data = vec![0u8; len];
            rng.fill(&mut data);
            // Mostly small values and zero stretches, as in real memory: runs of every length.
            for b in data.iter_mut() {
                match round % 3 {
                    0 => {}
                    1 => *b &= 0x11,
                    _ => *b = if *b < 200 { 0 } else { *b & 0xf0 },
                }
            }
            assert_eq!(encoded(&data), model(&data), "round {round}");
        }
    }

    #[test]
    fn hex_digits_of_every_byte() {
        for b in 0..=255u8 {
            let four = [b, b.wrapping_add(1), b ^ 0xa5, b.rotate_left(4)];
            let want: Vec<u8> = four.iter().flat_map(|&b| format!("{b:02x}").into_bytes()).collect();
            assert_eq!(hex_of_four(&four).as_slice(), want.as_slice(), "{four:x?}");
        }
    }

    #[test]
    fn finds_where_a_run_ends() {
        assert_eq!(run_end(b"0", 0), 1);
        assert_eq!(run_end(b"00000000000000000001", 0), 19);
        assert_eq!(run_end(b"00000000000000000001", 5), 19);
        assert_eq!(run_end(b"0000000a", 0), 7);
        assert_eq!(run_end(b"000000000", 0), 9);
        assert_eq!(run_end(b"01", 1), 2);
    }

    #[test]
    fn finds_the_first_run_of_four() {
        assert_eq!(run_of_four(b"0123456789abcdef", 0), None);
        assert_eq!(run_of_four(b"0123456789abcccc", 0), Some(12));
        assert_eq!(run_of_four(b"01111", 0), Some(1));
        assert_eq!(run_of_four(b"0111", 0), None);
        assert_eq!(run_of_four(b"00000000000000000000", 3), Some(3));
    }
}
