//! `--gzip` for archives: the whole byte stream, from the magic number on, is one gzip stream.
//!
//! The stream is written as consecutive gzip members compressed in parallel
//! ([`crate::parallel_gzip`]), which every gzip reader reads as one stream. Nothing inside an
//! archive is compressed separately, and the real tools never sniff for gzip:
//! the caller decides from the `--gzip` option. Reading accepts concatenated gzip members, as Go's
//! `gzip.Reader` does. This module also resolves the archive path the way both tools do.

use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::read::MultiGzDecoder;

use crate::parallel_gzip::ParallelGzEncoder;

/// Wraps an archive input in a gzip decoder (multi-member).
pub fn gzip_reader<R: Read>(input: R) -> MultiGzDecoder<BufReader<R>> {
    MultiGzDecoder::new(BufReader::new(input))
}

/// Wraps an archive output in a gzip encoder at the default level (6, Go's default) that
/// compresses on every core. Call [`ParallelGzEncoder::finish`] on it after
/// [`ArchiveWriter::finish`](super::ArchiveWriter::finish) to write the last members.
pub fn gzip_writer<W: Write>(output: W) -> ParallelGzEncoder<W> {
    ParallelGzEncoder::new(output, Compression::default())
}

/// Whether the file starts with the gzip magic bytes (for readers that detect compression
/// by themselves: `inspect`, `convert`, `backup --from-archive`).
///
/// # Errors
/// The error of opening or reading the file.
pub fn sniff_gzip(path: &Path) -> std::io::Result<bool> {
    let mut magic = [0u8; 2];
    let mut file = std::fs::File::open(path)?;
    let n = file.read(&mut magic)?;
    Ok(n == 2 && magic == [0x1f, 0x8b])
}

/// The file an `--archive=<path>` option names: `<path>/archive` (or `<path>/archive.gz` with
/// `--gzip`) when `path` is an existing directory, else `path` itself.
#[must_use]
pub fn resolve_archive_path(path: &Path, gzip: bool) -> PathBuf {
    if path.is_dir() {
        path.join(if gzip { "archive.gz" } else { "archive" })
    } else {
        path.to_path_buf()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_round_trip_and_multi_member() {
        let mut first = gzip_writer(Vec::new());
        first.write_all(b"hello ").unwrap();
        let mut bytes = first.finish().unwrap();
        let mut second = gzip_writer(Vec::new());
        second.write_all(b"world").unwrap();
        bytes.extend(second.finish().unwrap());
        assert_eq!(&bytes[..2], &[0x1f, 0x8b]);
        let mut out = String::new();
        gzip_reader(&bytes[..]).read_to_string(&mut out).unwrap();
        assert_eq!(out, "hello world");
    }

    #[test]
    fn directory_paths_get_the_default_file_name() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(resolve_archive_path(dir.path(), false), dir.path().join("archive"));
        assert_eq!(resolve_archive_path(dir.path(), true), dir.path().join("archive.gz"));
        let file = dir.path().join("x.archive");
        assert_eq!(resolve_archive_path(&file, true), file);
    }
}
