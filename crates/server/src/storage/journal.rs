//! The journal: a write-ahead log of encoded write batches with group commit.
//!
//! Records are framed as `[payload_len u32][crc32c u32][lsn u64][payload]` (little-endian, CRC-32C over the
//! LSN bytes and the payload) inside segment files `journal/segment-<first lsn hex16>.wal`, each starting
//! with a 24-byte header (see the [`crate::storage`] module docs for the full format).
//!
//! Appending writes the record to the OS with one `write` call under the journal mutex and hands back its
//! LSN; durability is a separate step ([`Journal::sync_to`]) so that many writers share one fsync: the first
//! waiter whose LSN is not durable yet becomes the leader, fsyncs everything appended so far and wakes all
//! waiters; waiters arriving meanwhile wait for the next round (classic group commit). A background flusher
//! ([`Journal::start_flusher`]) runs the same group commit every [`crate::storage::JOURNAL_COMMIT_INTERVAL`]
//! for writes that did not ask for `j: true`.
//!
//! Reading ([`scan_records`], [`read_segment`]) is pure over bytes and stops at the first record that is cut
//! short, fails its checksum or breaks the LSN sequence: that is the crash point. Nothing read from disk can
//! make it panic; lengths are checked against the bytes actually present before anything is allocated.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use super::{FORMAT_VERSION, StopSignal, StorageError, StorageResult, sync_dir};

/// Magic bytes opening every journal segment.
pub const SEGMENT_MAGIC: [u8; 8] = *b"TMJOURNL";
/// Size of a segment header: magic, version u32, reserved u32, first LSN u64.
pub const SEGMENT_HEADER_LEN: usize = 24;
/// Size of a record header: payload length u32, CRC-32C u32, LSN u64.
pub const RECORD_HEADER_LEN: usize = 16;
/// Directory of the journal inside the dbpath.
pub const JOURNAL_DIR: &str = "journal";

const CRC32C: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);

/// CRC-32C of the LSN (little-endian) followed by the payload, as stored in a record header.
pub fn record_crc(lsn: u64, payload: &[u8]) -> u32 {
    let mut digest = CRC32C.digest();
    digest.update(&lsn.to_le_bytes());
    digest.update(payload);
    digest.finalize()
}

/// Frames one record. Fails if the payload is larger than a `u32` length can describe.
pub fn encode_record(lsn: u64, payload: &[u8]) -> Result<Vec<u8>, std::num::TryFromIntError> {
    let len = u32::try_from(payload.len())?;
    let mut out = Vec::with_capacity(RECORD_HEADER_LEN + payload.len());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&record_crc(lsn, payload).to_le_bytes());
    out.extend_from_slice(&lsn.to_le_bytes());
    out.extend_from_slice(payload);
    Ok(out)
}

/// Builds a segment header.
pub fn encode_segment_header(first_lsn: u64) -> [u8; SEGMENT_HEADER_LEN] {
    let mut h = [0u8; SEGMENT_HEADER_LEN];
    h[..8].copy_from_slice(&SEGMENT_MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[16..24].copy_from_slice(&first_lsn.to_le_bytes());
    h
}

/// One intact record found by [`scan_records`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScannedRecord<'a> {
    /// The record's LSN.
    pub lsn: u64,
    /// Offset of the record header in the scanned bytes.
    pub offset: usize,
    /// The payload.
    pub payload: &'a [u8],
}

/// Why a scan stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanEnd {
    /// The bytes ended exactly after the last record.
    Clean,
    /// The last record is cut short (a write interrupted by a crash).
    Torn {
        /// Offset of the incomplete record.
        offset: usize,
    },
    /// A complete-looking record is damaged or out of sequence.
    Corrupt {
        /// Offset of the bad record.
        offset: usize,
        /// What is wrong with it.
        reason: String,
    },
}

/// The intact prefix of a run of records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan<'a> {
    /// Records in order, each with LSN one above the previous one.
    pub records: Vec<ScannedRecord<'a>>,
    /// Length of the intact prefix: where the next record would be written.
    pub valid_len: usize,
    /// Why the scan stopped.
    pub end: ScanEnd,
}

/// Reads records from `bytes` (which start with a record, not a segment header). `expected_first_lsn`, when
/// given, is the LSN the first record must have; each following record must have the previous LSN plus one.
pub fn scan_records(bytes: &[u8], expected_first_lsn: Option<u64>) -> Scan<'_> {
    let mut records = Vec::new();
    let mut pos = 0usize;
    let mut expected = expected_first_lsn;
    let end = loop {
        let rest = &bytes[pos..];
        if rest.is_empty() {
            break ScanEnd::Clean;
        }
        let Some(header) = rest.get(..RECORD_HEADER_LEN) else {
            break ScanEnd::Torn { offset: pos };
        };
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let mut lsn_bytes = [0u8; 8];
        lsn_bytes.copy_from_slice(&header[8..16]);
        let lsn = u64::from_le_bytes(lsn_bytes);
        let Ok(len) = usize::try_from(len) else {
            break ScanEnd::Corrupt {
                offset: pos,
                reason: format!("record length {len} does not fit in memory"),
            };
        };
        let Some(payload) = rest.get(RECORD_HEADER_LEN..).and_then(|p| p.get(..len)) else {
            break ScanEnd::Torn { offset: pos };
        };
        if record_crc(lsn, payload) != crc {
            break ScanEnd::Corrupt {
                offset: pos,
                reason: format!("checksum mismatch in record of {len} bytes"),
            };
        }
        if let Some(want) = expected
            && lsn != want
        {
            break ScanEnd::Corrupt {
                offset: pos,
                reason: format!("record has lsn {lsn}, expected {want}"),
            };
        }
        records.push(ScannedRecord {
            lsn,
            offset: pos,
            payload,
        });
        expected = lsn.checked_add(1);
        // Cannot overflow: `len + RECORD_HEADER_LEN` bytes exist in `rest`.
        pos += RECORD_HEADER_LEN + len;
    };
    Scan {
        records,
        valid_len: pos,
        end,
    }
}

/// A segment's header fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Format version.
    pub version: u32,
    /// LSN of the first record.
    pub first_lsn: u64,
}

/// Parses a segment header, or says why the bytes are not one.
pub fn parse_segment_header(bytes: &[u8]) -> Result<SegmentHeader, String> {
    let Some(h) = bytes.get(..SEGMENT_HEADER_LEN) else {
        return Err(format!(
            "segment header is cut short ({} of {SEGMENT_HEADER_LEN} bytes)",
            bytes.len()
        ));
    };
    if h[..8] != SEGMENT_MAGIC {
        return Err("not a journal segment (bad magic)".to_string());
    }
    let version = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
    let mut lsn = [0u8; 8];
    lsn.copy_from_slice(&h[16..24]);
    Ok(SegmentHeader {
        version,
        first_lsn: u64::from_le_bytes(lsn),
    })
}

/// File name of the segment whose first record has `first_lsn`.
pub fn segment_file_name(first_lsn: u64) -> String {
    format!("segment-{first_lsn:016x}.wal")
}

/// Parses a segment file name back into its first LSN.
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    let hex = name.strip_prefix("segment-")?.strip_suffix(".wal")?;
    if hex.len() != 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

/// Segment files in a journal directory, sorted by first LSN. A missing directory has none.
pub fn list_segments(dir: &Path) -> StorageResult<Vec<(u64, PathBuf)>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StorageError::io("list", dir)(e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(StorageError::io("list", dir))?;
        let name = entry.file_name();
        if let Some(lsn) = name.to_str().and_then(parse_segment_file_name) {
            out.push((lsn, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// A segment read from disk: its intact records (owned) and where its intact part ends.
#[derive(Debug)]
pub struct SegmentContents {
    /// `(lsn, offset in file, payload)` of each intact record.
    pub records: Vec<(u64, u64, Vec<u8>)>,
    /// Length of the intact part of the file (header included).
    pub valid_len: u64,
    /// Why reading stopped; offsets here are file offsets.
    pub end: ScanEnd,
    /// Total file length.
    pub file_len: u64,
}

/// Reads one segment file. `expected_first_lsn` is the LSN its first record must carry (from the file name
/// and the previous segment). A damaged header is reported as [`ScanEnd::Corrupt`] at offset 0 with no
/// records; an unknown format version is an error.
pub fn read_segment(path: &Path, expected_first_lsn: u64) -> StorageResult<SegmentContents> {
    let bytes = std::fs::read(path).map_err(StorageError::io("read", path))?;
    let file_len = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
    let header = match parse_segment_header(&bytes) {
        Ok(h) => h,
        Err(reason) => {
            let end = if bytes.len() < SEGMENT_HEADER_LEN && SEGMENT_MAGIC.starts_with(&bytes[..bytes.len().min(8)]) {
                ScanEnd::Torn { offset: 0 }
            } else {
                ScanEnd::Corrupt { offset: 0, reason }
            };
            return Ok(SegmentContents {
                records: Vec::new(),
                valid_len: 0,
                end,
                file_len,
            });
        }
    };
    if header.version != FORMAT_VERSION {
        return Err(StorageError::Unsupported {
            path: path.to_path_buf(),
            reason: format!(
                "journal format version {} (this build reads version {FORMAT_VERSION})",
                header.version
            ),
        });
    }
    if header.first_lsn != expected_first_lsn {
        return Err(StorageError::corrupt(
            path,
            16,
            format!(
                "segment header says first lsn {}, expected {expected_first_lsn}",
                header.first_lsn
            ),
        ));
    }
    let scan = scan_records(&bytes[SEGMENT_HEADER_LEN..], Some(expected_first_lsn));
    let shift = |o: usize| u64::try_from(o + SEGMENT_HEADER_LEN).unwrap_or(u64::MAX);
    let records = scan
        .records
        .iter()
        .map(|r| (r.lsn, shift(r.offset), r.payload.to_vec()))
        .collect();
    let end = match scan.end {
        ScanEnd::Clean => ScanEnd::Clean,
        ScanEnd::Torn { offset } => ScanEnd::Torn {
            offset: offset + SEGMENT_HEADER_LEN,
        },
        ScanEnd::Corrupt { offset, reason } => ScanEnd::Corrupt {
            offset: offset + SEGMENT_HEADER_LEN,
            reason,
        },
    };
    Ok(SegmentContents {
        records,
        valid_len: shift(scan.valid_len),
        end,
        file_len,
    })
}

/// Creates an empty segment (header only), fsyncs it and its directory.
fn create_segment(dir: &Path, first_lsn: u64) -> StorageResult<(File, PathBuf)> {
    let path = dir.join(segment_file_name(first_lsn));
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .map_err(StorageError::io("create", &path))?;
    file.write_all(&encode_segment_header(first_lsn))
        .map_err(StorageError::io("write", &path))?;
    file.sync_all().map_err(StorageError::io("fsync", &path))?;
    sync_dir(dir)?;
    Ok((file, path))
}

struct State {
    file: Arc<File>,
    path: PathBuf,
    first_lsn: u64,
    len: u64,
    /// Next LSN to assign.
    next_lsn: u64,
    /// Highest LSN handed to the OS.
    written: u64,
    /// Highest LSN known to be on stable storage.
    durable: u64,
    /// Whether a group-commit leader is fsyncing right now.
    syncing: bool,
    /// Set after a failed write or fsync: the journal accepts nothing more.
    failed: Option<String>,
    /// Older segments still on disk: `(first lsn, path)`, ascending.
    older: Vec<(u64, PathBuf)>,
}

/// An open journal accepting appends.
pub struct Journal {
    dir: PathBuf,
    state: Mutex<State>,
    /// Signalled when a group commit ends (waiters re-check `durable`).
    changed: Condvar,
    /// Stops the background flusher.
    flusher_stop: Arc<StopSignal>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Journal {
    /// Opens the journal in `dir` (created if missing) for appending records from `next_lsn` on, in a new
    /// segment. `older` lists segments already on disk (all holding LSNs below `next_lsn`), which are kept
    /// until a checkpoint covers them.
    pub fn open(dir: &Path, next_lsn: u64, older: Vec<(u64, PathBuf)>) -> StorageResult<Self> {
        std::fs::create_dir_all(dir).map_err(StorageError::io("create directory", dir))?;
        let mut older = older;
        // A segment of the same name would be replaced: it can only be an empty leftover.
        older.retain(|(lsn, _)| *lsn != next_lsn);
        let (file, path) = create_segment(dir, next_lsn)?;
        let last = next_lsn.saturating_sub(1);
        Ok(Self {
            dir: dir.to_path_buf(),
            state: Mutex::new(State {
                file: Arc::new(file),
                path,
                first_lsn: next_lsn,
                len: u64::try_from(SEGMENT_HEADER_LEN).unwrap_or(24),
                next_lsn,
                written: last,
                durable: last,
                syncing: false,
                failed: None,
                older,
            }),
            changed: Condvar::new(),
            flusher_stop: Arc::default(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The journal directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// LSN of the last record appended (0 if none ever).
    pub fn last_lsn(&self) -> u64 {
        self.lock().written
    }

    /// LSN of the last record known durable.
    pub fn durable_lsn(&self) -> u64 {
        self.lock().durable
    }

    /// Appends one record and returns its LSN. The record is in the OS but not necessarily on disk yet; call
    /// [`Journal::sync_to`] for that.
    pub fn append(&self, payload: &[u8]) -> StorageResult<u64> {
        let mut st = self.lock();
        if let Some(f) = &st.failed {
            return Err(StorageError::JournalFailed(f.clone()));
        }
        let lsn = st.next_lsn;
        let record = encode_record(lsn, payload).map_err(|_| StorageError::Apply {
            what: format!("write batch of {} bytes", payload.len()),
            reason: "a journal record holds at most 4 GiB".to_string(),
        })?;
        let result = (&*st.file).write_all(&record);
        if let Err(e) = result {
            // Cut off whatever part of the record reached the file, so later records do not follow garbage.
            let len = st.len;
            if let Err(e2) = st.file.set_len(len) {
                st.failed = Some(format!("cannot cut failed append off {}: {e2}", st.path.display()));
            }
            return Err(StorageError::io("append to", &st.path.clone())(e));
        }
        st.len = st.len.saturating_add(u64::try_from(record.len()).unwrap_or(u64::MAX));
        st.next_lsn = lsn.saturating_add(1);
        st.written = lsn;
        Ok(lsn)
    }

    /// Returns once every record up to `lsn` is on stable storage, sharing fsyncs between concurrent callers.
    pub fn sync_to(&self, lsn: u64) -> StorageResult<()> {
        let mut st = self.lock();
        // Nothing beyond what was appended can become durable; never wait for it.
        let lsn = lsn.min(st.written);
        loop {
            if st.durable >= lsn {
                return Ok(());
            }
            if let Some(f) = &st.failed {
                return Err(StorageError::JournalFailed(f.clone()));
            }
            if st.syncing {
                st = self.changed.wait(st).unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            st.syncing = true;
            let target = st.written;
            let file = Arc::clone(&st.file);
            let path = st.path.clone();
            drop(st);
            let result = file.sync_data();
            st = self.lock();
            st.syncing = false;
            match result {
                Ok(()) => st.durable = st.durable.max(target),
                Err(e) => st.failed = Some(format!("fsync of {} failed: {e}", path.display())),
            }
            self.changed.notify_all();
        }
    }

    /// Makes everything appended so far durable.
    pub fn sync_all(&self) -> StorageResult<()> {
        let lsn = self.last_lsn();
        self.sync_to(lsn)
    }

    /// Fsyncs the current segment and starts a new one at the next LSN, so that a checkpoint covering
    /// everything so far can delete every older segment. Returns the LSN of the last record before the switch.
    pub fn rotate(&self) -> StorageResult<u64> {
        let mut st = self.lock();
        if let Some(f) = &st.failed {
            return Err(StorageError::JournalFailed(f.clone()));
        }
        let last = st.written;
        if st.first_lsn == st.next_lsn {
            // The current segment is empty: nothing to switch.
            return Ok(last);
        }
        if let Err(e) = st.file.sync_data() {
            st.failed = Some(format!("fsync of {} failed: {e}", st.path.display()));
            return Err(StorageError::io("fsync", &st.path.clone())(e));
        }
        st.durable = st.durable.max(last);
        let (file, path) = create_segment(&self.dir, st.next_lsn)?;
        let old_first = st.first_lsn;
        let old_path = std::mem::replace(&mut st.path, path);
        st.older.push((old_first, old_path));
        st.file = Arc::new(file);
        st.first_lsn = st.next_lsn;
        st.len = u64::try_from(SEGMENT_HEADER_LEN).unwrap_or(24);
        self.changed.notify_all();
        Ok(last)
    }

    /// Deletes older segments holding no record above `lsn` (they are covered by a durable checkpoint).
    pub fn remove_through(&self, lsn: u64) -> StorageResult<()> {
        let removable: Vec<PathBuf> = {
            let mut st = self.lock();
            let current_first = st.first_lsn;
            let older = std::mem::take(&mut st.older);
            let mut keep = Vec::new();
            let mut remove = Vec::new();
            for (i, (first, path)) in older.iter().enumerate() {
                // A segment's records end right before the next segment's first LSN.
                let next_first = older.get(i + 1).map_or(current_first, |n| n.0);
                if next_first.saturating_sub(1) <= lsn {
                    remove.push(path.clone());
                } else {
                    keep.push((*first, path.clone()));
                }
            }
            st.older = keep;
            remove
        };
        for path in &removable {
            match std::fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(StorageError::io("delete", path)(e)),
            }
        }
        if !removable.is_empty() {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// Starts the background group commit: every `interval`, everything appended is made durable. The thread
    /// ends when the journal is dropped or [`Journal::stop_flusher`] is called.
    pub fn start_flusher(self: &Arc<Self>, interval: Duration) -> std::io::Result<std::thread::JoinHandle<()>> {
        let weak: Weak<Self> = Arc::downgrade(self);
        let stop = Arc::clone(&self.flusher_stop);
        std::thread::Builder::new()
            .name("journal-flusher".into())
            .spawn(move || {
                // Only the stop signal is held while sleeping, so dropping the journal is never delayed.
                while !stop.sleep(interval) {
                    let Some(journal) = weak.upgrade() else { return };
                    if let Err(e) = journal.sync_all() {
                        tracing::error!("journal group commit failed: {e}");
                        return;
                    }
                }
            })
    }

    /// Asks the background flusher to exit.
    pub fn stop_flusher(&self) {
        self.flusher_stop.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn records(lsns: std::ops::RangeInclusive<u64>) -> (Vec<u8>, Vec<usize>) {
        let mut bytes = Vec::new();
        let mut offsets = Vec::new();
        for lsn in lsns {
            offsets.push(bytes.len());
            let payload = format!("payload number {lsn}").into_bytes();
            bytes.extend(encode_record(lsn, &payload).unwrap());
        }
        (bytes, offsets)
    }

    #[test]
    fn crc_is_crc32c_castagnoli() {
        // Check value of CRC-32C (RFC 3720, appendix B.4): "123456789" -> 0xE3069283.
        assert_eq!(CRC32C.checksum(b"123456789"), 0xE306_9283);
        // Independently: the record CRC is CRC-32C over the LSN bytes then the payload.
        let mut joined = 7u64.to_le_bytes().to_vec();
        joined.extend_from_slice(b"abc");
        assert_eq!(record_crc(7, b"abc"), CRC32C.checksum(&joined));
    }

    #[test]
    fn record_layout_is_len_crc_lsn_payload() {
        let r = encode_record(0x0102_0304_0506_0708, b"xyz").unwrap();
        assert_eq!(&r[0..4], &3u32.to_le_bytes());
        assert_eq!(&r[8..16], &[8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(&r[16..], b"xyz");
    }

    #[test]
    fn clean_scan_returns_every_record() {
        let (bytes, offsets) = records(5..=9);
        let scan = scan_records(&bytes, Some(5));
        assert_eq!(scan.end, ScanEnd::Clean);
        assert_eq!(scan.valid_len, bytes.len());
        assert_eq!(
            scan.records.iter().map(|r| r.lsn).collect::<Vec<_>>(),
            vec![5, 6, 7, 8, 9]
        );
        assert_eq!(scan.records.iter().map(|r| r.offset).collect::<Vec<_>>(), offsets);
        assert_eq!(scan.records[2].payload, b"payload number 7");
    }

    #[test]
    fn torn_tail_stops_at_last_whole_record() {
        let (bytes, offsets) = records(1..=4);
        // Every cut inside the last record (header or payload) is a torn write.
        for cut in offsets[3] + 1..bytes.len() {
            let scan = scan_records(&bytes[..cut], Some(1));
            assert_eq!(scan.end, ScanEnd::Torn { offset: offsets[3] }, "cut at {cut}");
            assert_eq!(scan.records.len(), 3);
            assert_eq!(scan.valid_len, offsets[3]);
        }
    }

    #[test]
    fn corrupt_crc_stops_and_is_reported() {
        let (mut bytes, offsets) = records(1..=4);
        bytes[offsets[2] + RECORD_HEADER_LEN + 3] ^= 0x40;
        let scan = scan_records(&bytes, Some(1));
        assert!(
            matches!(scan.end, ScanEnd::Corrupt { offset, .. } if offset == offsets[2]),
            "{:?}",
            scan.end
        );
        assert_eq!(scan.records.len(), 2);
        assert_eq!(scan.valid_len, offsets[2]);
    }

    #[test]
    fn lsn_gap_is_corruption() {
        let mut bytes = encode_record(1, b"a").unwrap();
        bytes.extend(encode_record(3, b"c").unwrap());
        let scan = scan_records(&bytes, Some(1));
        assert_eq!(scan.records.len(), 1);
        assert!(matches!(&scan.end, ScanEnd::Corrupt { reason, .. } if reason.contains("expected 2")));
        // A wrong first LSN is caught too.
        assert_eq!(scan_records(&bytes, Some(2)).records.len(), 0);
    }

    #[test]
    fn zero_filled_tail_is_not_a_record() {
        let (mut bytes, _) = records(1..=2);
        let good = bytes.len();
        bytes.extend([0u8; 64]);
        let scan = scan_records(&bytes, Some(1));
        assert_eq!(scan.records.len(), 2);
        assert_eq!(scan.valid_len, good);
        assert!(matches!(scan.end, ScanEnd::Corrupt { .. }));
    }

    #[test]
    fn segment_names_and_headers_round_trip() {
        assert_eq!(segment_file_name(42), "segment-000000000000002a.wal");
        assert_eq!(parse_segment_file_name("segment-000000000000002a.wal"), Some(42));
        assert_eq!(parse_segment_file_name("segment-2a.wal"), None);
        assert_eq!(parse_segment_file_name("segment-000000000000002a.wal.tmp"), None);
        let h = encode_segment_header(42);
        assert_eq!(
            parse_segment_header(&h),
            Ok(SegmentHeader {
                version: FORMAT_VERSION,
                first_lsn: 42
            })
        );
        assert!(parse_segment_header(&h[..10]).is_err());
        assert!(parse_segment_header(&[0u8; 24]).is_err());
    }

    #[test]
    fn journal_append_sync_rotate_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let jdir = dir.path().join(JOURNAL_DIR);
        let journal = Journal::open(&jdir, 1, Vec::new()).unwrap();
        for i in 1..=3u64 {
            assert_eq!(journal.append(format!("batch {i}").as_bytes()).unwrap(), i);
        }
        journal.sync_to(2).unwrap();
        assert!(journal.durable_lsn() >= 2);
        assert_eq!(journal.rotate().unwrap(), 3);
        assert_eq!(journal.append(b"batch 4").unwrap(), 4);
        journal.sync_all().unwrap();
        let segs = list_segments(&jdir).unwrap();
        assert_eq!(segs.iter().map(|s| s.0).collect::<Vec<_>>(), vec![1, 4]);
        let first = read_segment(&segs[0].1, 1).unwrap();
        assert_eq!(first.end, ScanEnd::Clean);
        assert_eq!(first.records.iter().map(|r| r.0).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert_eq!(first.records[1].2, b"batch 2");
        assert_eq!(first.valid_len, first.file_len);
        let second = read_segment(&segs[1].1, 4).unwrap();
        assert_eq!(second.records.len(), 1);
        // A checkpoint through lsn 3 makes the first segment removable, not the current one.
        journal.remove_through(3).unwrap();
        assert_eq!(
            list_segments(&jdir).unwrap().iter().map(|s| s.0).collect::<Vec<_>>(),
            vec![4]
        );
        // A segment read with the wrong expected LSN is refused with the file named.
        let err = read_segment(&segs[1].1, 5).unwrap_err().to_string();
        assert!(err.contains("segment-0000000000000004.wal"), "{err}");
    }

    #[test]
    fn concurrent_writers_share_group_commits() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Arc::new(Journal::open(&dir.path().join(JOURNAL_DIR), 1, Vec::new()).unwrap());
        let handles: Vec<_> = (0..8)
            .map(|t| {
                let j = Arc::clone(&journal);
                std::thread::spawn(move || {
                    for i in 0..20 {
                        let lsn = j.append(format!("{t}-{i}").as_bytes()).unwrap();
                        j.sync_to(lsn).unwrap();
                        assert!(j.durable_lsn() >= lsn);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(journal.last_lsn(), 160);
        let segs = list_segments(journal.dir()).unwrap();
        let seg = read_segment(&segs[0].1, 1).unwrap();
        assert_eq!(seg.records.len(), 160);
        assert_eq!(seg.end, ScanEnd::Clean);
    }

    #[test]
    fn flusher_makes_unsynced_appends_durable() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Arc::new(Journal::open(&dir.path().join(JOURNAL_DIR), 1, Vec::new()).unwrap());
        let handle = journal.start_flusher(Duration::from_millis(5)).unwrap();
        let lsn = journal.append(b"x").unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while journal.durable_lsn() < lsn {
            assert!(std::time::Instant::now() < deadline, "flusher never synced");
            std::thread::sleep(Duration::from_millis(2));
        }
        journal.stop_flusher();
        handle.join().unwrap();
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512), first in any::<u64>()) {
            let scan = scan_records(&bytes, Some(first));
            prop_assert!(scan.valid_len <= bytes.len());
            let _ = parse_segment_header(&bytes);
        }

        #[test]
        fn any_damage_keeps_an_intact_prefix(n in 1usize..8, flip in any::<prop::sample::Index>(), bit in 0u8..8) {
            let (mut bytes, offsets) = records(1..=u64::try_from(n).unwrap());
            let at = flip.index(bytes.len());
            bytes[at] ^= 1 << bit;
            let scan = scan_records(&bytes, Some(1));
            // Every record wholly before the damaged byte survives; nothing after the damage is returned.
            let before = offsets.iter().enumerate().filter(|(i, o)| {
                let end = offsets.get(i + 1).copied().unwrap_or(bytes.len());
                **o < at && end <= at
            }).count();
            // (A flipped bit always changes the checksummed bytes or the framing; CRC-32C catches it.)
            prop_assert_eq!(scan.records.len(), before);
            for r in &scan.records {
                let want = format!("payload number {}", r.lsn);
                prop_assert_eq!(r.payload, want.as_bytes());
            }
        }

        #[test]
        fn truncation_anywhere_keeps_whole_records(n in 1usize..8, cut in any::<prop::sample::Index>()) {
            let (bytes, offsets) = records(1..=u64::try_from(n).unwrap());
            let cut = cut.index(bytes.len() + 1);
            let scan = scan_records(&bytes[..cut], Some(1));
            let whole = offsets.iter().enumerate().filter(|(i, _)| {
                offsets.get(i + 1).copied().unwrap_or(bytes.len()) <= cut
            }).count();
            prop_assert_eq!(scan.records.len(), whole);
        }
    }
}
