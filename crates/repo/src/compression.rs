//! How the plaintext of a frame (one blob, or new blobs of a stream stored together, up to 64 KiB)
//! becomes the zstd frame that is sealed: compressed at the repository's level, compressed fast,
//! or stored.
//!
//! Every frame is one zstd frame, whichever way it was made, so readers need no marker and no
//! guess: a plain zstd decoder reads all of them. Every frame records its content size. *Stored*
//! frames hold the plaintext in raw blocks (RFC 8878, section 3.1.1.2), written here directly, at
//! a cost of a copy.
//!
//! Compressing at the configured level costs more than hashing and sealing together, and often
//! buys little: much MongoDB data is binary payloads, already compressed values or encrypted
//! fields. So a stream's frames are compressed at one of three strengths, chosen per stream from
//! measurements ([`Chooser`]): about every [`PROBE_INTERVAL`] bytes a frame's first
//! [`PROBE_BYTES`] are compressed both at the configured level and at [`FAST_LEVEL`] (matches
//! only, no entropy coding of literals, several times faster). The configured level is kept while
//! it saves at least 1/64 of the plaintext over the fast level; otherwise the fast level is used
//! while it saves at least 1/16 of the plaintext; otherwise frames are stored. The choice is
//! revisited after every batch, so a stream whose contents change changes strength too. Chunk ids
//! never depend on compression, so deduplication is unaffected.

use std::cell::RefCell;

use crate::error::{RepoError, Result};

/// How one blob's frame is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// zstd at this level.
    Level(i32),
    /// The plaintext in raw blocks of a zstd frame.
    Stored,
}

/// zstd level of the fast strength: negative levels find matches only and skip entropy coding.
pub const FAST_LEVEL: i32 = -1;
/// Plaintext bytes between two measurements of a stream.
pub const PROBE_INTERVAL: u64 = 1024 * 1024;
/// Bytes of a chunk compressed for a measurement.
pub const PROBE_BYTES: usize = 16 * 1024;
/// The configured level is used while it saves at least 1/64 of the plaintext over the fast one.
const ENTROPY_WORTH: u64 = 64;
/// Otherwise the fast level is used while it saves at least 1/16 of the plaintext: below that,
/// storing costs a copy where compressing costs about as much as sealing.
const FAST_WORTH: u64 = 16;

/// zstd frame magic number (little endian).
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];
/// Largest block of a zstd frame.
const MAX_BLOCK: usize = 128 * 1024;

thread_local! {
    /// zstd contexts by level, reused: creating one costs more than compressing a chunk of a few
    /// KiB. A thread uses at most the configured level, the fast level and the JSON level.
    static COMPRESSORS: RefCell<Vec<(i32, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(Vec::new()) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
    /// Output of measurements, reused.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

fn zstd_error(e: std::io::Error) -> RepoError {
    RepoError::Usage(format!("zstd compression failed: {e}"))
}

/// Runs `f` with this thread's compression context for `level`.
fn with_compressor<R>(
    level: i32,
    f: impl FnOnce(&mut zstd::bulk::Compressor<'static>) -> std::io::Result<R>,
) -> Result<R> {
    COMPRESSORS.with_borrow_mut(|contexts| {
        let index = match contexts.iter().position(|(l, _)| *l == level) {
            Some(i) => i,
            None => {
                contexts.push((level, zstd::bulk::Compressor::new(level).map_err(zstd_error)?));
                contexts.len() - 1
            }
        };
        f(&mut contexts[index].1).map_err(zstd_error)
    })
}

/// Appends the zstd frame of `plaintext` made as `compression` says to `out`.
pub fn append_frame(plaintext: &[u8], compression: Compression, out: &mut Vec<u8>) -> Result<()> {
    match compression {
        Compression::Stored => {
            append_stored_frame(plaintext, out);
            Ok(())
        }
        Compression::Level(level) => {
            out.reserve(zstd::zstd_safe::compress_bound(plaintext.len()));
            let start = out.len();
            let mut cursor = std::io::Cursor::new(std::mem::take(out));
            cursor.set_position(start as u64);
            let result = with_compressor(level, |c| c.compress_to_buffer(plaintext, &mut cursor));
            *out = cursor.into_inner();
            result.map(|_| ())
        }
    }
}

/// Largest frame of `len` plaintext bytes, whichever way it is made.
pub fn frame_bound(len: usize) -> usize {
    zstd::zstd_safe::compress_bound(len).max(stored_frame_len(len))
}

/// Size of the stored frame of `len` bytes: magic, descriptor, content size, block headers.
fn stored_frame_len(len: usize) -> usize {
    len + 4 + 1 + 8 + 3 * len.div_ceil(MAX_BLOCK).max(1)
}

/// Appends a zstd frame holding `plaintext` in raw blocks: single segment, content size given.
fn append_stored_frame(plaintext: &[u8], out: &mut Vec<u8>) {
    let len = plaintext.len();
    out.reserve(stored_frame_len(len));
    out.extend_from_slice(&ZSTD_MAGIC);
    // Frame header descriptor: Single_Segment_flag (bit 5) and Frame_Content_Size_flag (bits
    // 7-6) giving the size field's width: 1 byte, 2 bytes holding len - 256, 4 bytes or 8 bytes.
    if let Ok(small) = u8::try_from(len) {
        out.extend_from_slice(&[0b0010_0000, small]);
    } else if let Ok(medium) = u16::try_from(len - 256) {
        out.push(0b0110_0000);
        out.extend_from_slice(&medium.to_le_bytes());
    } else if let Ok(large) = u32::try_from(len) {
        out.push(0b1010_0000);
        out.extend_from_slice(&large.to_le_bytes());
    } else {
        out.push(0b1110_0000);
        out.extend_from_slice(&(len as u64).to_le_bytes());
    }
    // Block header, 3 bytes little endian: Last_Block (bit 0), Block_Type 0 = raw (bits 1-2),
    // Block_Size (bits 3-23). An empty plaintext is one empty last block.
    let mut blocks = plaintext.chunks(MAX_BLOCK).peekable();
    if blocks.peek().is_none() {
        out.extend_from_slice(&[1, 0, 0]);
    }
    while let Some(block) = blocks.next() {
        let last = u32::from(blocks.peek().is_none());
        // A block is at most 128 KiB, so its size fits in the 21 bits.
        #[allow(clippy::cast_possible_truncation)]
        let header = (block.len() as u32) << 3 | last;
        out.extend_from_slice(&header.to_le_bytes()[..3]);
        out.extend_from_slice(block);
    }
}

/// One zstd frame decompressed (at most `capacity` bytes) with this thread's reused context.
pub fn decompress(frame: &[u8], capacity: usize) -> std::io::Result<Vec<u8>> {
    DECOMPRESSOR.with_borrow_mut(|slot| {
        let decompressor = match slot {
            Some(d) => d,
            None => slot.insert(zstd::bulk::Decompressor::new()?),
        };
        decompressor.decompress(frame, capacity)
    })
}

/// Compressed sizes of a chunk's first [`PROBE_BYTES`] at both strengths.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Probe {
    /// Plaintext bytes measured.
    pub raw: u64,
    /// Their size at [`FAST_LEVEL`].
    pub fast: u64,
    /// Their size at the configured level.
    pub full: u64,
}

impl Probe {
    /// Measures `plaintext` (its first [`PROBE_BYTES`]) against the configured `level`.
    pub fn measure(plaintext: &[u8], level: i32) -> Result<Probe> {
        let sample = &plaintext[..plaintext.len().min(PROBE_BYTES)];
        let size = |level: i32| -> Result<u64> {
            SCRATCH.with_borrow_mut(|scratch| {
                scratch.clear();
                append_frame(sample, Compression::Level(level), scratch)?;
                Ok(scratch.len() as u64)
            })
        };
        Ok(Probe {
            raw: sample.len() as u64,
            fast: size(FAST_LEVEL)?,
            full: size(level)?,
        })
    }
}

impl std::ops::AddAssign for Probe {
    fn add_assign(&mut self, other: Probe) {
        self.raw += other.raw;
        self.fast += other.fast;
        self.full += other.full;
    }
}

/// Chooses the compression of one stream's chunks from measurements of its recent chunks.
#[derive(Debug, Clone)]
pub struct Chooser {
    level: i32,
    current: Compression,
    since_probe: u64,
}

impl Chooser {
    /// A chooser for a repository compressing at `level`; a stream starts at that level and is
    /// measured on its first chunk.
    pub fn new(level: i32) -> Self {
        Chooser {
            level,
            current: Compression::Level(level),
            since_probe: PROBE_INTERVAL,
        }
    }

    /// The configured level.
    pub fn level(&self) -> i32 {
        self.level
    }

    /// How chunks are compressed now.
    pub fn current(&self) -> Compression {
        self.current
    }

    /// Whether the stream's next chunk, of `len` bytes, is to be measured.
    pub fn probe_next(&mut self, len: usize) -> bool {
        let due = self.since_probe >= PROBE_INTERVAL;
        if due {
            self.since_probe = 0;
        }
        self.since_probe += len as u64;
        due
    }

    /// Takes the measurements of a batch into account (none: the choice stays).
    pub fn observe(&mut self, probe: Probe) {
        if probe.raw == 0 {
            return;
        }
        self.current = if probe.fast.saturating_sub(probe.full) >= probe.raw / ENTROPY_WORTH {
            Compression::Level(self.level)
        } else if probe.raw.saturating_sub(probe.fast) >= probe.raw / FAST_WORTH {
            Compression::Level(FAST_LEVEL)
        } else {
            Compression::Stored
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::util::test_noise as random_bytes;

    #[test]
    fn stored_frames_are_read_by_zstd() {
        // Sizes around every width of the content size field and the 128 KiB block limit.
        for len in [0, 1, 255, 256, 257, 65_791, 65_792, 131_071, 131_072, 131_073, 300_000] {
            let plaintext = random_bytes(len, len as u64);
            let mut frame = Vec::new();
            append_stored_frame(&plaintext, &mut frame);
            // The reference decoder reads it, and the frame states its content size.
            assert_eq!(zstd::stream::decode_all(&frame[..]).unwrap(), plaintext, "len {len}");
            assert_eq!(
                zstd::zstd_safe::get_frame_content_size(&frame).ok(),
                Some(Some(len as u64)),
                "len {len}"
            );
            assert_eq!(decompress(&frame, len).unwrap(), plaintext);
        }
    }

    #[test]
    fn frames_append_after_existing_bytes() {
        let plaintext = b"abcabcabcabcabcabcabcabcabcabc".repeat(50);
        for compression in [
            Compression::Level(3),
            Compression::Level(FAST_LEVEL),
            Compression::Stored,
        ] {
            let mut out = b"prefix".to_vec();
            append_frame(&plaintext, compression, &mut out).unwrap();
            assert_eq!(&out[..6], b"prefix");
            assert_eq!(zstd::stream::decode_all(&out[6..]).unwrap(), plaintext);
        }
    }

    #[test]
    fn chooser_follows_the_data() {
        let mut chooser = Chooser::new(3);
        assert_eq!(chooser.current(), Compression::Level(3));
        // Random letters: only entropy coding pays.
        let letters: Vec<u8> = random_bytes(16_384, 5).iter().map(|b| b'a' + b % 26).collect();
        chooser.observe(Probe::measure(&letters, 3).unwrap());
        assert_eq!(chooser.current(), Compression::Level(3));
        // Random bytes: nothing pays.
        chooser.observe(Probe::measure(&random_bytes(16_384, 9), 3).unwrap());
        assert_eq!(chooser.current(), Compression::Stored);
        // Random bytes with repeated runs: matches pay, entropy coding does not.
        let mut mixed = Vec::new();
        for i in 0..16 {
            mixed.extend_from_slice(&random_bytes(700, i));
            mixed.extend_from_slice(&[b'x'; 300]);
        }
        chooser.observe(Probe::measure(&mixed, 3).unwrap());
        assert_eq!(chooser.current(), Compression::Level(FAST_LEVEL));
        // No measurement: the choice stays.
        chooser.observe(Probe::default());
        assert_eq!(chooser.current(), Compression::Level(FAST_LEVEL));
    }

    #[test]
    fn probes_are_spaced_by_bytes() {
        let mut chooser = Chooser::new(3);
        let probed: Vec<bool> = (0..1100).map(|_| chooser.probe_next(2048)).collect();
        // The first chunk, then the one after 1 MiB (512 chunks of 2 KiB).
        let at: Vec<usize> = probed.iter().enumerate().filter(|(_, p)| **p).map(|(i, _)| i).collect();
        assert_eq!(at, vec![0, 512, 1024]);
        // 152 KiB since the last measurement; then large chunks are each measured.
        assert!(!chooser.probe_next(1 << 20));
        assert!(chooser.probe_next(1 << 20));
        assert!(chooser.probe_next(1 << 20));
    }
}
