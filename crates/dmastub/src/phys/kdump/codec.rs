//! The page compressions of the kdump-compressed format: which flag says which, and the codecs
//! themselves (crates, not hand-written decompressors).
//!
//! makedumpfile compresses every page on its own and keeps the compressed form only when it is
//! shorter than the page; otherwise it stores the page raw with no flag. The compressed forms
//! are exactly what these crates read and write: zlib with its 2-byte header (`compress2`), LZO1X
//! (`lzo1x_1_compress`), raw snappy (not the framed format) and a zstd frame.
//! [`Compression::compress`] does the same, so a file written with it reads in makedumpfile,
//! crash and drgn.

use std::cell::RefCell;
use std::fmt;
use std::str::FromStr;

pub use super::header::{
    DUMP_DH_COMPRESSED_LZO, DUMP_DH_COMPRESSED_MASK, DUMP_DH_COMPRESSED_SNAPPY, DUMP_DH_COMPRESSED_ZLIB,
    DUMP_DH_COMPRESSED_ZSTD,
};

/// How one page (or a whole dump) is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Compression {
    /// Stored raw (no flag; the descriptor's size is the block size).
    #[default]
    None,
    /// zlib (`makedumpfile -c`). Written at level 6: zlib-rs's level 1 packs kernel pages
    /// worse than C zlib's level 1 that makedumpfile uses, and a dump must not come out bigger.
    Zlib,
    /// LZO1X-1 (`makedumpfile -l`).
    Lzo,
    /// Raw snappy (`makedumpfile -p`).
    Snappy,
    /// zstd (`makedumpfile -z`), level 1 as makedumpfile uses.
    Zstd,
}

/// Flags that name no compression, or more than one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("page flags {0:#x} name no known compression (zlib 0x1, lzo 0x2, snappy 0x4, zstd 0x20), or several")]
pub struct UnknownCompression(pub u32);

/// A name that is not a compression.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown compression {0:?}: expected zlib, lzo, snappy, zstd or none")]
pub struct UnknownCompressionName(pub String);

impl Compression {
    /// Every compression, raw first.
    pub const ALL: [Compression; 5] =
        [Compression::None, Compression::Zlib, Compression::Lzo, Compression::Snappy, Compression::Zstd];

    /// The `page_desc.flags` / header status bit (0 for [`Compression::None`]).
    pub fn flag(self) -> u32 {
        match self {
            Compression::None => 0,
            Compression::Zlib => DUMP_DH_COMPRESSED_ZLIB,
            Compression::Lzo => DUMP_DH_COMPRESSED_LZO,
            Compression::Snappy => DUMP_DH_COMPRESSED_SNAPPY,
            Compression::Zstd => DUMP_DH_COMPRESSED_ZSTD,
        }
    }

    /// The compression a page descriptor's `flags` name: none, or exactly one known bit. Any
    /// other bit is refused, since guessing would read wrong bytes.
    pub fn from_flags(flags: u32) -> Result<Self, UnknownCompression> {
        match flags {
            0 => Ok(Compression::None),
            DUMP_DH_COMPRESSED_ZLIB => Ok(Compression::Zlib),
            DUMP_DH_COMPRESSED_LZO => Ok(Compression::Lzo),
            DUMP_DH_COMPRESSED_SNAPPY => Ok(Compression::Snappy),
            DUMP_DH_COMPRESSED_ZSTD => Ok(Compression::Zstd),
            _ => Err(UnknownCompression(flags)),
        }
    }

    /// Its name: "none", "zlib", "lzo", "snappy", "zstd" (what [`FromStr`] takes).
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Zlib => "zlib",
            Compression::Lzo => "lzo",
            Compression::Snappy => "snappy",
            Compression::Zstd => "zstd",
        }
    }

    /// Compresses one page into `out` (cleared first). `true` when `out` now holds a compressed
    /// form shorter than the page, to be written with [`Compression::flag`]; `false` when the
    /// page should be stored raw, as makedumpfile does (also always for
    /// [`Compression::None`], and when the codec fails). Per-thread compressor state and `out`'s
    /// capacity are reused, so a loop over pages allocates next to nothing.
    pub fn compress(self, page: &[u8], out: &mut Vec<u8>) -> bool {
        out.clear();
        let n = match self {
            Compression::None => return false,
            Compression::Zlib => compress_zlib(page, out),
            Compression::Lzo => compress_lzo(page, out),
            Compression::Snappy => compress_snappy(page, out),
            Compression::Zstd => compress_zstd(page, out),
        };
        match n {
            Some(n) if n < page.len() => {
                out.truncate(n);
                true
            }
            _ => {
                out.clear();
                false
            }
        }
    }

    /// Decompresses `data` into `out`, which it must fill exactly: a form that decodes to fewer
    /// or more bytes, or does not decode, is an error saying what happened. For
    /// [`Compression::None`], `data` must be exactly as long as `out`.
    pub fn decompress(self, data: &[u8], out: &mut [u8]) -> Result<(), String> {
        let want = out.len();
        let got = match self {
            Compression::None => {
                if data.len() != want {
                    return Err(format!("a raw page holds {} bytes, not {want}", data.len()));
                }
                out.copy_from_slice(data);
                want
            }
            Compression::Zlib => decompress_zlib(data, out)?,
            Compression::Lzo => {
                lzokay::decompress::decompress(data, out).map_err(|e| format!("lzo: {e:?}"))?
            }
            Compression::Snappy => {
                let len = snap::raw::decompress_len(data).map_err(|e| format!("snappy: {e}"))?;
                if len != want {
                    return Err(format!("snappy: the data decodes to {len} bytes, not {want}"));
                }
                snap::raw::Decoder::new().decompress(data, out).map_err(|e| format!("snappy: {e}"))?
            }
            Compression::Zstd => decompress_zstd(data, out)?,
        };
        if got != want {
            return Err(format!("{}: the data decodes to {got} bytes, not {want}", self.name()));
        }
        Ok(())
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Compression {
    type Err = UnknownCompressionName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Compression::ALL
            .into_iter()
            .find(|c| c.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownCompressionName(s.to_string()))
    }
}

thread_local! {
    static ZLIB_C: RefCell<flate2::Compress> = RefCell::new(flate2::Compress::new(flate2::Compression::new(6), true));
    static ZLIB_D: RefCell<flate2::Decompress> = RefCell::new(flate2::Decompress::new(true));
    static LZO_DICT: RefCell<Option<Box<lzokay::compress::Dict>>> = const { RefCell::new(None) };
    static SNAPPY: RefCell<snap::raw::Encoder> = RefCell::new(snap::raw::Encoder::new());
    static ZSTD_C: RefCell<Option<zstd::bulk::Compressor<'static>>> = const { RefCell::new(None) };
    static ZSTD_D: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

/// Makes `out` `len` bytes long for a codec to write into (its capacity is kept across calls).
fn room(out: &mut Vec<u8>, len: usize) {
    out.clear();
    out.resize(len, 0);
}

fn compress_zlib(page: &[u8], out: &mut Vec<u8>) -> Option<usize> {
    room(out, page.len() + page.len() / 1000 + 64);
    ZLIB_C.with(|c| {
        let mut c = c.borrow_mut();
        c.reset();
        match c.compress(page, out, flate2::FlushCompress::Finish) {
            Ok(flate2::Status::StreamEnd) => Some(c.total_out() as usize),
            _ => None,
        }
    })
}

fn decompress_zlib(data: &[u8], out: &mut [u8]) -> Result<usize, String> {
    ZLIB_D.with(|d| {
        let mut d = d.borrow_mut();
        d.reset(true);
        match d.decompress(data, out, flate2::FlushDecompress::Finish) {
            Ok(flate2::Status::StreamEnd) => Ok(d.total_out() as usize),
            Ok(_) => Err(format!("zlib: the stream does not end within {} bytes", out.len())),
            Err(e) => Err(format!("zlib: {e}")),
        }
    })
}

fn compress_lzo(page: &[u8], out: &mut Vec<u8>) -> Option<usize> {
    room(out, lzokay::compress::compress_worst_size(page.len()));
    LZO_DICT.with(|d| {
        let mut d = d.borrow_mut();
        let dict = d.get_or_insert_with(lzokay::compress::Dict::new);
        lzokay::compress::compress_no_alloc(page, out, dict).ok()
    })
}

fn compress_snappy(page: &[u8], out: &mut Vec<u8>) -> Option<usize> {
    room(out, snap::raw::max_compress_len(page.len()));
    SNAPPY.with(|e| e.borrow_mut().compress(page, out).ok())
}

fn compress_zstd(page: &[u8], out: &mut Vec<u8>) -> Option<usize> {
    room(out, zstd::zstd_safe::compress_bound(page.len()));
    ZSTD_C.with(|c| {
        let mut c = c.borrow_mut();
        if c.is_none() {
            *c = zstd::bulk::Compressor::new(1).ok();
        }
        c.as_mut()?.compress_to_buffer(page, out.as_mut_slice()).ok()
    })
}

fn decompress_zstd(data: &[u8], out: &mut [u8]) -> Result<usize, String> {
    ZSTD_D.with(|d| {
        let mut d = d.borrow_mut();
        if d.is_none() {
            *d = Some(zstd::bulk::Decompressor::new().map_err(|e| format!("zstd: {e}"))?);
        }
        let d = d.as_mut().ok_or("zstd: no decompressor")?;
        d.decompress_to_buffer(data, out).map_err(|e| format!("zstd: {e}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pages() -> Vec<Vec<u8>> {
        let mut rng = crate::testing::XorShift::new(7);
        let random: Vec<u8> = (0..4096).map(|_| rng.below(256) as u8).collect();
        let text: Vec<u8> = b"struct task_struct init_task; ".iter().cycle().take(4096).copied().collect();
        let mut mixed = vec![0u8; 4096];
        mixed[100..600].copy_from_slice(&random[..500]);
        vec![vec![0u8; 4096], random, text, mixed]
    }

    #[test]
    fn every_codec_round_trips() {
        let mut out = Vec::new();
        for c in Compression::ALL {
            for (i, page) in pages().iter().enumerate() {
                let compressed = c.compress(page, &mut out);
                let mut back = vec![0xaau8; 4096];
                if compressed {
                    assert!(out.len() < page.len(), "{c} page {i}");
                    c.decompress(&out, &mut back).unwrap_or_else(|e| panic!("{c} page {i}: {e}"));
                } else {
                    assert!(out.is_empty());
                    Compression::None.decompress(page, &mut back).unwrap();
                }
                assert_eq!(&back, page, "{c} page {i}");
            }
            if c != Compression::None {
                assert!(c.compress(&[0u8; 4096], &mut out), "{c} does not shrink a zero page");
                // The random page does not shrink: stored raw.
                assert!(!c.compress(&pages()[1], &mut out), "{c} shrank random bytes");
            }
        }
    }

    #[test]
    fn wrong_lengths_and_garbage_are_errors() {
        let mut out = Vec::new();
        let page = &pages()[2];
        for c in [Compression::Zlib, Compression::Lzo, Compression::Snappy, Compression::Zstd] {
            assert!(c.compress(page, &mut out));
            let mut short = vec![0u8; 2048];
            assert!(c.decompress(&out, &mut short).is_err(), "{c} filled a short page");
            let mut long = vec![0u8; 8192];
            let e = c.decompress(&out, &mut long).unwrap_err();
            assert!(e.starts_with(c.name()), "{e}");
            let mut page_out = vec![0u8; 4096];
            assert!(c.decompress(&[0xff; 37], &mut page_out).is_err(), "{c} decoded garbage");
            assert!(c.decompress(&out[..out.len() / 2], &mut page_out).is_err(), "{c} decoded half");
        }
        assert!(Compression::None.decompress(&[0; 10], &mut [0u8; 4096]).is_err());
    }

    #[test]
    fn flags_and_names() {
        for c in Compression::ALL {
            assert_eq!(Compression::from_flags(c.flag()), Ok(c));
            assert_eq!(c.name().parse::<Compression>(), Ok(c));
        }
        assert_eq!("ZSTD".parse::<Compression>(), Ok(Compression::Zstd));
        assert!("lz4".parse::<Compression>().is_err());
        assert_eq!(Compression::from_flags(0x3), Err(UnknownCompression(3)));
        assert!(Compression::from_flags(0x40).is_err());
        assert_eq!(DUMP_DH_COMPRESSED_MASK, 0x27);
    }
}
