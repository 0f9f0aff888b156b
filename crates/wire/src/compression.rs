//! `OP_COMPRESSED` compressors: names, ids, compression and bounded decompression.
//!
//! The wire protocol identifies compressors by a one-byte id (0 noop, 1 snappy, 2 zlib, 3 zstd)
//! and, during the handshake, by name (`compression: ["zstd", "zlib"]`). zlib uses the zlib
//! container (RFC 1950, as produced by `compress2`), not raw deflate; zstd uses standard zstd
//! frames. Snappy is recognised only to reject it with a clear error.
//!
//! Decompression never trusts `uncompressedSize`: output is read through a limit of one byte
//! more than the declared size, so a "zip bomb" stops at the limit, and the real size must equal
//! the declared one.

use std::io::Read;

use crate::WireError;

/// compressorId of the noop compressor (payload stored as is).
pub const COMPRESSOR_ID_NOOP: u8 = 0;
/// compressorId of snappy (not supported by this crate).
pub const COMPRESSOR_ID_SNAPPY: u8 = 1;
/// compressorId of zlib.
pub const COMPRESSOR_ID_ZLIB: u8 = 2;
/// compressorId of zstd.
pub const COMPRESSOR_ID_ZSTD: u8 = 3;

/// A compressor usable in `OP_COMPRESSED` messages.
///
/// `level` is only used when compressing; `None` means the library default (zlib 6, zstd 3).
/// Decoded messages report the compressor with `level: None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compressor {
    /// zlib (compressorId 2); level 0-9.
    Zlib {
        /// Compression level 0 (store) to 9 (best), `None` for the default.
        level: Option<u32>,
    },
    /// zstd (compressorId 3); level within `zstd::compression_level_range()`.
    Zstd {
        /// Compression level, `None` for the default.
        level: Option<i32>,
    },
}

impl Compressor {
    /// The name used in the handshake's `compression` array and in connection strings.
    pub fn name(&self) -> &'static str {
        match self {
            Compressor::Zlib { .. } => "zlib",
            Compressor::Zstd { .. } => "zstd",
        }
    }

    /// The compressor for a handshake name (`"zlib"`, `"zstd"`), with the default level; `None`
    /// for names this crate cannot compress with (`"snappy"`, `"noop"`, anything else).
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "zlib" => Some(Compressor::Zlib { level: None }),
            "zstd" => Some(Compressor::Zstd { level: None }),
            _ => None,
        }
    }

    /// The compressorId byte written in `OP_COMPRESSED`.
    pub fn id(&self) -> u8 {
        match self {
            Compressor::Zlib { .. } => COMPRESSOR_ID_ZLIB,
            Compressor::Zstd { .. } => COMPRESSOR_ID_ZSTD,
        }
    }

    /// Compresses `data` with this compressor.
    pub fn compress(&self, data: &[u8]) -> Result<Vec<u8>, WireError> {
        match *self {
            Compressor::Zlib { level } => {
                let level = level.unwrap_or(6);
                if level > 9 {
                    return Err(WireError::InvalidArgument {
                        what: "zlib compression level".to_owned(),
                        reason: format!("{level} is outside 0..=9"),
                    });
                }
                let mut encoder = flate2::read::ZlibEncoder::new(data, flate2::Compression::new(level));
                let mut out = Vec::new();
                encoder.read_to_end(&mut out).map_err(|e| WireError::Compression {
                    compressor: "zlib",
                    reason: e.to_string(),
                })?;
                Ok(out)
            }
            Compressor::Zstd { level } => {
                let level = level.unwrap_or(zstd::DEFAULT_COMPRESSION_LEVEL);
                let range = zstd::compression_level_range();
                if !range.contains(&level) {
                    return Err(WireError::InvalidArgument {
                        what: "zstd compression level".to_owned(),
                        reason: format!("{level} is outside {}..={}", range.start(), range.end()),
                    });
                }
                zstd::bulk::compress(data, level).map_err(|e| WireError::Compression {
                    compressor: "zstd",
                    reason: e.to_string(),
                })
            }
        }
    }
}

/// Registered name of a compressorId, for messages.
pub(crate) fn compressor_name(id: u8) -> &'static str {
    match id {
        COMPRESSOR_ID_NOOP => "noop",
        COMPRESSOR_ID_SNAPPY => "snappy",
        COMPRESSOR_ID_ZLIB => "zlib",
        COMPRESSOR_ID_ZSTD => "zstd",
        _ => "unknown",
    }
}

/// Largest zstd window (as a power of two) accepted for a message of `expected` bytes.
///
/// A zstd frame announces the window its decoder must allocate, up to 2^27 bytes by default,
/// whatever the size of the data. The limit here is twice the declared message size, but never
/// below 2^24 (compressors that do not know the input size announce the window of their level,
/// 2^23 at most up to level 19) nor above zstd's default 2^27, so a small message cannot make
/// the decoder reserve 128 MiB.
fn zstd_window_log_max(expected: usize) -> u32 {
    let needed = usize::BITS.saturating_sub(expected.saturating_sub(1).leading_zeros());
    needed.saturating_add(1).clamp(24, 27)
}

/// Decompresses `payload` compressed with compressor `id`, appending to `out`; the result must be
/// exactly `expected` bytes long.
pub(crate) fn decompress_into(id: u8, payload: &[u8], expected: usize, out: &mut Vec<u8>) -> Result<(), WireError> {
    let name = compressor_name(id);
    let start = out.len();
    let limit = u64::try_from(expected).unwrap_or(u64::MAX).saturating_add(1);
    let failed = |e: std::io::Error| WireError::Decompression {
        compressor: name,
        reason: e.to_string(),
    };
    match id {
        COMPRESSOR_ID_NOOP => {
            out.extend_from_slice(payload);
        }
        COMPRESSOR_ID_ZLIB => {
            flate2::read::ZlibDecoder::new(payload)
                .take(limit)
                .read_to_end(out)
                .map_err(failed)?;
        }
        COMPRESSOR_ID_ZSTD => {
            let mut decoder = zstd::stream::read::Decoder::with_buffer(payload).map_err(failed)?;
            decoder.window_log_max(zstd_window_log_max(expected)).map_err(failed)?;
            decoder.take(limit).read_to_end(out).map_err(failed)?;
        }
        other => {
            return Err(WireError::UnsupportedCompressor {
                id: other,
                name: compressor_name(other),
            });
        }
    }
    let actual = out.len().saturating_sub(start);
    if actual != expected {
        let actual = if actual > expected {
            format!("more than {expected}")
        } else {
            actual.to_string()
        };
        return Err(WireError::Decompression {
            compressor: name,
            reason: format!(
                "uncompressedSize declares {expected} bytes but the payload decompresses to {actual} bytes"
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for c in [Compressor::Zlib { level: None }, Compressor::Zstd { level: None }] {
            assert_eq!(Compressor::from_name(c.name()), Some(c));
        }
        assert_eq!(Compressor::from_name("snappy"), None);
        assert_eq!(Compressor::from_name("noop"), None);
    }

    #[test]
    fn zlib_output_is_zlib_container() {
        // RFC 1950: first byte 0x78 (deflate, 32 KiB window), header checksum multiple of 31.
        let out = Compressor::Zlib { level: None }.compress(b"hello hello hello").unwrap();
        assert_eq!(out[0], 0x78);
        assert_eq!((u16::from(out[0]) << 8 | u16::from(out[1])) % 31, 0);
    }

    #[test]
    fn zstd_output_has_frame_magic() {
        // RFC 8878: a zstd frame starts with the magic number 0xFD2FB528 (little-endian).
        let out = Compressor::Zstd { level: Some(1) }
            .compress(b"hello hello hello")
            .unwrap();
        assert_eq!(out[..4], [0x28, 0xB5, 0x2F, 0xFD]);
    }

    #[test]
    fn bad_levels_are_rejected() {
        assert!(matches!(
            Compressor::Zlib { level: Some(10) }.compress(b"x"),
            Err(WireError::InvalidArgument { .. })
        ));
        assert!(matches!(
            Compressor::Zstd { level: Some(i32::MAX) }.compress(b"x"),
            Err(WireError::InvalidArgument { .. })
        ));
    }

    #[test]
    fn decompression_is_bounded_by_declared_size() {
        let data = vec![7u8; 100_000];
        for c in [Compressor::Zlib { level: None }, Compressor::Zstd { level: None }] {
            let compressed = c.compress(&data).unwrap();
            let mut out = Vec::new();
            decompress_into(c.id(), &compressed, data.len(), &mut out).unwrap();
            assert_eq!(out, data);
            // Declaring less than the real size stops after limit+1 bytes and fails.
            let mut out = Vec::new();
            let err = decompress_into(c.id(), &compressed, 10, &mut out).unwrap_err();
            assert!(err.to_string().contains("more than 10"), "{err}");
            assert!(out.len() <= 11);
            // Declaring more fails too.
            let mut out = Vec::new();
            assert!(decompress_into(c.id(), &compressed, 100_001, &mut out).is_err());
        }
    }

    #[test]
    fn zstd_window_limit() {
        assert_eq!(zstd_window_log_max(0), 24);
        assert_eq!(zstd_window_log_max(1000), 24);
        assert_eq!(zstd_window_log_max(1 << 24), 25);
        assert_eq!(zstd_window_log_max(48_000_000), 27);
        // A frame announcing a 2^27 window for a few bytes of content is refused before the
        // window is allocated; the same data with a small window is accepted.
        let data = b"small message".repeat(4);
        // Streaming (size unknown when compression starts), as a client compressing on the fly.
        let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        encoder
            .set_parameter(zstd::zstd_safe::CParameter::WindowLog(27))
            .unwrap();
        std::io::Write::write_all(&mut encoder, &data).unwrap();
        let big_window = encoder.finish().unwrap();
        // Frame header descriptor (RFC 8878): no single-segment flag, window descriptor 2^27.
        assert_eq!(big_window[4] & 0x20, 0);
        assert_eq!(big_window[5] >> 3, 27 - 10);
        let err = decompress_into(COMPRESSOR_ID_ZSTD, &big_window, data.len(), &mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("zstd decompression"), "{err}");
        let small = Compressor::Zstd { level: Some(19) }.compress(&data).unwrap();
        let mut out = Vec::new();
        decompress_into(COMPRESSOR_ID_ZSTD, &small, data.len(), &mut out).unwrap();
        assert_eq!(out, data);
    }

    #[test]
    fn snappy_is_rejected_by_name() {
        let err = decompress_into(COMPRESSOR_ID_SNAPPY, b"", 0, &mut Vec::new()).unwrap_err();
        assert!(
            err.to_string().contains("compressorId 1 (snappy) is not supported"),
            "{err}"
        );
    }
}
