//! A range of a file read at once, with direct I/O where possible.
//!
//! A restore from a repository reads its packs once, in ranges of up to 16 MiB. Through the page
//! cache each range is first read into fresh cache pages and then copied out (the kernel's copy
//! was the largest single cost of the reading thread), and it pushes the host's working set out
//! of the cache. Direct reads need an aligned offset, length and memory: the aligned blocks
//! around the range are read into an aligned place of the caller's buffer, and the range is where
//! it lies among them. The buffer is the caller's to reuse, so its pages are touched and zeroed
//! once, not at every read.
//!
//! Small ranges (below [`DIRECT_MIN`]) are read through the page cache: a restore also reads many
//! small frames (chunk lists, data between other namespaces' frames) that lie close together,
//! and the kernel's read-ahead serves those from memory where each direct read waits for the
//! device.

use std::fs::File;
use std::io;
use std::ops::Range;
use std::path::Path;

use crate::ALIGN;
use crate::input_file::open_file;

/// Ranges at least this long are read with direct I/O.
pub const DIRECT_MIN: u64 = 256 * 1024;

/// Reads bytes `range` of the file at `path` into `buffer` (grown as needed; its contents are
/// overwritten) and returns the buffer with where the range lies in it. With direct I/O (a
/// range of at least [`DIRECT_MIN`] bytes of a regular file on a filesystem that takes it) the
/// aligned blocks around the range are read; otherwise just the range, with an ordinary
/// positional read.
///
/// # Errors
/// The error of opening or reading the file; [`io::ErrorKind::UnexpectedEof`] when the file ends
/// before `range` does.
pub fn read_range(path: &Path, range: Range<u64>, mut buffer: Vec<u8>) -> io::Result<(Vec<u8>, Range<usize>)> {
    let too_large = || io::Error::new(io::ErrorKind::InvalidInput, "range too large for memory");
    let want = usize::try_from(range.end.saturating_sub(range.start)).map_err(|_| too_large())?;
    let large = range.end.saturating_sub(range.start) >= DIRECT_MIN;
    let (mut file, mut direct) = open_file(path, large)?;
    loop {
        let (first, skip) = if direct {
            let first = range.start / ALIGN as u64 * ALIGN as u64;
            (first, usize::try_from(range.start - first).map_err(|_| too_large())?)
        } else {
            (range.start, 0)
        };
        let length = if direct {
            (skip + want).next_multiple_of(ALIGN)
        } else {
            want
        };
        // Room for the padding to an aligned address too, reserved before the address is taken.
        let room = length.checked_add(ALIGN).ok_or_else(too_large)?;
        if buffer.capacity() < room {
            buffer = Vec::with_capacity(room);
        }
        let pad = if direct {
            buffer.as_ptr().align_offset(ALIGN).min(ALIGN)
        } else {
            0
        };
        if buffer.len() < pad + length {
            buffer.resize(pad + length, 0);
        }
        match read_fully_at(&file, &mut buffer[pad..pad + length], first, skip + want) {
            Ok(got) if got >= skip + want => return Ok((buffer, pad + skip..pad + skip + want)),
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("{} ends before byte {}", path.display(), range.end),
                ));
            }
            Err(e) if direct && e.kind() == io::ErrorKind::InvalidInput => {
                // Accepted at open, refused at read: read without direct I/O.
                (file, direct) = open_file(path, false)?;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Reads into `out` at `offset` until at least `needed` bytes came or the file ended; returns the
/// bytes read. Reads after the first start where the one before stopped, so with direct I/O a
/// short read that is not the end of the file (never seen on local filesystems) fails as
/// invalid input, and the caller falls back to ordinary reads.
fn read_fully_at(file: &File, out: &mut [u8], offset: u64, needed: usize) -> io::Result<usize> {
    let mut got = 0;
    while got < needed {
        match read_at(file, &mut out[got..], offset + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

#[cfg(unix)]
fn read_at(file: &File, out: &mut [u8], offset: u64) -> io::Result<usize> {
    std::os::unix::fs::FileExt::read_at(file, out, offset)
}

#[cfg(not(unix))]
fn read_at(file: &File, out: &mut [u8], offset: u64) -> io::Result<usize> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = file;
    file.seek(SeekFrom::Start(offset))?;
    file.read(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::pattern;

    #[test]
    fn every_range_reads_back_exactly_and_the_buffer_is_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pack");
        let min = usize::try_from(DIRECT_MIN).unwrap();
        let len = 3 * min + 123;
        let data = pattern(len);
        std::fs::write(&path, &data).unwrap();
        let mut buffer = Vec::new();
        for (start, end) in [
            (0, 0),
            (0, 1),
            (0, len),
            (1, len),
            (0, min - 1),
            (1, ALIGN),
            (ALIGN - 1, ALIGN + 1),
            (ALIGN, 2 * ALIGN),
            (5000, 70_000),
            (len - 1, len),
            (len, len),
        ] {
            let (back, at) = read_range(&path, start as u64..end as u64, buffer).unwrap();
            assert_eq!(&back[at.clone()], &data[start..end], "{start}..{end}");
            buffer = back;
        }
        // A buffer large enough is kept, not replaced.
        let kept = buffer.as_ptr();
        let (back, _) = read_range(&path, 10..20, buffer).unwrap();
        assert_eq!(back.as_ptr(), kept);
    }

    #[test]
    fn a_range_past_the_end_or_a_missing_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pack");
        std::fs::write(&path, pattern(10_000)).unwrap();
        let err = read_range(&path, 9_000..10_001, Vec::new()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        assert!(err.to_string().contains("pack"), "{err}");
        let err = read_range(&dir.path().join("nothing"), 0..1, Vec::new()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
