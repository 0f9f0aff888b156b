//! Oplog slices: contiguity, windows, gaps, verification, retention, prune, check and copy.

mod common;

use bson::{RawDocumentBuf, rawdoc};
use common::*;
use tidemark_repo::check::{CheckOptions, check};
use tidemark_repo::copy::copy_slices;
use tidemark_repo::forget::{KeepPolicy, forget, prune};
use tidemark_repo::oplog_archive::{
    OplogGap, SliceInfo, SliceStart, SliceWriter, list_slices, pitr_timeline, read_range,
};
use tidemark_repo::pack::pack_key;
use tidemark_repo::{CommitOptions, Id, RepoError, Repository, SnapshotWriter, Timestamp};

fn ts(t: u32) -> Timestamp {
    Timestamp { t, i: 1 }
}

/// An insert oplog entry at `ts(t)` with an incompressible payload.
fn entry(t: u32) -> RawDocumentBuf {
    rawdoc! {
        "ts": bson::Timestamp { time: t, increment: 1 }, "t": 1_i64, "op": "i", "ns": "shop.orders",
        "o": { "_id": i64::from(t), "payload": noise(u64::from(t), 300) },
    }
}

/// A snapshot of member `rs0` whose captured oplog runs up to its consistency timestamp `ts(upto)`.
async fn base_snapshot(repo: &Repository, name: &str, upto: u32) -> Id {
    let mut writer = SnapshotWriter::new(repo, progress()).await.unwrap();
    writer.set_member(name, "replset");
    let mut oplog = writer.begin_oplog();
    for t in upto - 2..=upto {
        oplog.write_document(&entry(t)).await.unwrap();
    }
    oplog.finish().await.unwrap();
    let options = CommitOptions {
        consistency_ts: Some(ts(upto)),
        ..CommitOptions::default()
    };
    writer.commit(options).await.unwrap().0
}

async fn slice(repo: &Repository, set: &str, start: SliceStart, range: std::ops::RangeInclusive<u32>) -> SliceInfo {
    let mut writer = SliceWriter::new(repo, set, start);
    for t in range {
        writer.write_entry(&entry(t)).await.unwrap();
    }
    writer.seal().await.unwrap().unwrap()
}

async fn range_ts(repo: &Repository, set: &str, after: u32, upto: u32) -> Result<Vec<u32>, RepoError> {
    let mut range = read_range(repo, set, ts(after), ts(upto)).await?;
    let mut out = Vec::new();
    while let Some(doc) = range.next_entry().await? {
        assert_eq!(
            doc,
            entry(doc.get_timestamp("ts").unwrap().time),
            "entry bytes are preserved"
        );
        out.push(doc.get_timestamp("ts").unwrap().time);
    }
    Ok(out)
}

#[tokio::test]
async fn slices_chain_into_windows_and_ranges_read_across_them() {
    let (_, repo) = init_memory().await;
    let base = base_snapshot(&repo, "rs0", 10).await;
    let a = slice(&repo, "rs0", SliceStart::ContinuesFrom(ts(10)), 11..=50).await;
    let b = slice(&repo, "rs0", SliceStart::ContinuesFrom(ts(50)), 51..=80).await;
    assert_eq!(
        (a.entries, a.first, a.last, a.continues_from),
        (40, ts(11), ts(50), Some(ts(10)))
    );
    assert_eq!(b.continues_from, Some(a.last));

    let listed = list_slices(&repo).await.unwrap();
    assert_eq!(listed, vec![a.clone(), b.clone()]);

    let timeline = pitr_timeline(&repo).await.unwrap();
    assert_eq!(timeline.windows.len(), 1);
    let w = &timeline.windows[0];
    assert_eq!(
        (w.replica_set.as_str(), w.base_snapshot, w.from, w.to),
        ("rs0", base, ts(10), ts(80))
    );
    assert!(timeline.gaps.is_empty());

    assert_eq!(
        range_ts(&repo, "rs0", 10, 80).await.unwrap(),
        (11..=80).collect::<Vec<_>>()
    );
    assert_eq!(
        range_ts(&repo, "rs0", 20, 60).await.unwrap(),
        (21..=60).collect::<Vec<_>>()
    );
    assert_eq!(range_ts(&repo, "rs0", 50, 51).await.unwrap(), vec![51]);
    assert!(range_ts(&repo, "rs0", 30, 30).await.unwrap().is_empty());
    // Past the end of the archive, before its start, or another set: refused before reading.
    let err = range_ts(&repo, "rs0", 10, 81).await.unwrap_err();
    assert!(err.to_string().contains("ends at Timestamp(80, 1)"), "{err}");
    let err = range_ts(&repo, "rs0", 5, 20).await.unwrap_err();
    assert!(matches!(err, RepoError::OplogArchive { .. }), "{err}");
    let err = range_ts(&repo, "rs1", 10, 20).await.unwrap_err();
    assert!(err.to_string().contains("nothing is archived"), "{err}");
}

#[tokio::test]
async fn gaps_are_recorded_reported_and_refused() {
    let (_, repo) = init_memory().await;
    base_snapshot(&repo, "rs0", 10).await;
    slice(&repo, "rs0", SliceStart::ContinuesFrom(ts(10)), 11..=20).await;
    // The follower could not find ts(20) again: entries 21..=29 are lost.
    let gap = slice(&repo, "rs0", SliceStart::GapAfter(ts(20)), 30..=40).await;
    assert_eq!(
        gap.gap,
        Some(OplogGap {
            replica_set: "rs0".into(),
            after: ts(20),
            resumed_at: ts(30)
        })
    );
    assert_eq!(gap.continues_from, None);
    let later = base_snapshot(&repo, "rs0", 35).await;

    let timeline = pitr_timeline(&repo).await.unwrap();
    assert_eq!(
        timeline.gaps,
        vec![OplogGap {
            replica_set: "rs0".into(),
            after: ts(20),
            resumed_at: ts(30)
        }]
    );
    let windows: Vec<_> = timeline.windows.iter().map(|w| (w.from, w.to)).collect();
    assert_eq!(windows, vec![(ts(10), ts(20)), (ts(35), ts(40))]);
    assert_eq!(timeline.windows[1].base_snapshot, later);

    let err = range_ts(&repo, "rs0", 10, 35).await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("after Timestamp(20, 1) are missing") && text.contains("resumes at Timestamp(30, 1)"),
        "{text}"
    );
    // Inside the slice after the gap, reading is fine (it holds every entry of [30, 40]).
    assert_eq!(
        range_ts(&repo, "rs0", 35, 40).await.unwrap(),
        (36..=40).collect::<Vec<_>>()
    );
    // A slice continuing from a point no slice ends at (and no snapshot covers) is a hole too.
    slice(&repo, "rs0", SliceStart::ContinuesFrom(ts(45)), 46..=50).await;
    let timeline = pitr_timeline(&repo).await.unwrap();
    assert_eq!(
        timeline.gaps[1],
        OplogGap {
            replica_set: "rs0".into(),
            after: ts(40),
            resumed_at: ts(46)
        }
    );
}

#[tokio::test]
async fn writer_refuses_out_of_order_entries_and_empty_slices_write_nothing() {
    let (storage, repo) = init_memory().await;
    let mut writer = SliceWriter::new(&repo, "rs0", SliceStart::ContinuesFrom(ts(10)));
    let err = writer.write_entry(&entry(10)).await.unwrap_err();
    assert!(
        err.to_string().contains("does not come after Timestamp(10, 1)"),
        "{err}"
    );
    writer.write_entry(&entry(12)).await.unwrap();
    let err = writer.write_entry(&entry(11)).await.unwrap_err();
    assert!(err.to_string().contains("does not come after"), "{err}");
    let err = writer.write_entry(&rawdoc! {"op": "n"}).await.unwrap_err();
    assert!(err.to_string().contains("no timestamp `ts`"), "{err}");

    let empty = SliceWriter::new(&repo, "rs0", SliceStart::Fresh);
    assert!(empty.seal().await.unwrap().is_none());
    assert!(storage.list("oplog/").await.unwrap().is_empty());
}

#[tokio::test]
async fn damaged_slice_data_fails_reading_and_check() {
    let (storage, repo) = init_memory().await;
    base_snapshot(&repo, "rs0", 10).await;
    let a = slice(&repo, "rs0", SliceStart::ContinuesFrom(ts(10)), 11..=60).await;
    assert!(check_read_data(&repo).await.unwrap().is_ok());

    // Flip one byte inside the first blob of the slice.
    flip_bit_in_blob(&storage, &repo, &chunk_ids(&repo, &a.data).await[0], 40).await;

    let err = range_ts(&repo, "rs0", 10, 60).await.unwrap_err();
    assert!(
        matches!(err, RepoError::SliceDamaged { ref slice, .. } if *slice == a.id.to_hex()),
        "{err}"
    );
    let report = check_read_data(&repo).await.unwrap();
    assert!(
        report.errors.iter().any(|e| e.contains(&a.id.to_hex())),
        "{:?}",
        report.errors
    );

    // A missing manifest-referenced blob is a structural error.
    let first_blob = chunk_ids(&repo, &a.data).await[0];
    let pack = repo.locate(&first_blob).unwrap().pack;
    storage.delete(&pack_key(&pack)).await.unwrap();
    let report = check(&repo, CheckOptions::default()).await.unwrap();
    assert!(!report.is_ok());
}

#[tokio::test]
async fn forget_keeps_the_slices_of_kept_windows_and_prune_keeps_their_data() {
    let (_, repo) = init_memory().await;
    let old = base_snapshot(&repo, "rs0", 10).await;
    slice(&repo, "rs0", SliceStart::ContinuesFrom(ts(10)), 11..=20).await;
    slice(&repo, "rs0", SliceStart::ContinuesFrom(ts(20)), 21..=30).await;
    // Make the newer snapshot at least one second younger for the retention order.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let new = base_snapshot(&repo, "rs0", 25).await;
    slice(&repo, "rs0", SliceStart::ContinuesFrom(ts(30)), 31..=40).await;
    // Another set without a snapshot keeps everything.
    slice(&repo, "rs9", SliceStart::Fresh, 1..=5).await;

    let plan = forget(
        &repo,
        &KeepPolicy {
            last: 1,
            ..KeepPolicy::default()
        },
        false,
    )
    .await
    .unwrap();
    assert_eq!(plan.keep.iter().map(|d| d.id).collect::<Vec<_>>(), vec![new]);
    assert_eq!(plan.remove.iter().map(|d| d.id).collect::<Vec<_>>(), vec![old]);
    // Only the slice entirely before ts(25) goes; the one holding 21..=30 is still needed.
    assert_eq!(
        plan.remove_slices.iter().map(|s| (s.first, s.last)).collect::<Vec<_>>(),
        vec![(ts(11), ts(20))]
    );
    let left: Vec<_> = list_slices(&repo)
        .await
        .unwrap()
        .iter()
        .map(|s| (s.replica_set.clone(), s.first))
        .collect();
    assert_eq!(
        left,
        vec![("rs0".into(), ts(21)), ("rs0".into(), ts(31)), ("rs9".into(), ts(1))]
    );

    let pruned = prune(&repo, false).await.unwrap();
    assert!(
        !pruned.delete_packs.is_empty() || !pruned.repack_packs.is_empty(),
        "{pruned:?}"
    );
    let report = check_read_data(&repo).await.unwrap();
    assert!(report.is_ok(), "{:?}", report.errors);
    assert_eq!(report.slices, 3);
    assert_eq!(
        range_ts(&repo, "rs0", 25, 40).await.unwrap(),
        (26..=40).collect::<Vec<_>>()
    );
    let timeline = pitr_timeline(&repo).await.unwrap();
    assert_eq!(
        timeline.windows.iter().map(|w| (w.from, w.to)).collect::<Vec<_>>(),
        vec![(ts(25), ts(40))]
    );
    assert!(timeline.gaps.is_empty(), "{:?}", timeline.gaps);
}

#[tokio::test]
async fn copy_carries_slices_once() {
    let (_, source) = init_memory().await;
    let (_, target) = init_memory().await;
    slice(&source, "rs0", SliceStart::ContinuesFrom(ts(10)), 11..=30).await;
    slice(&source, "rs0", SliceStart::ContinuesFrom(ts(30)), 31..=50).await;
    let first = copy_slices(&source, &target).await.unwrap();
    assert_eq!(first.len(), 2);
    let again = copy_slices(&source, &target).await.unwrap();
    assert!(
        again
            .iter()
            .all(|(_, o)| matches!(o, tidemark_repo::copy::CopyOutcome::AlreadyPresent(_)))
    );
    let copied = list_slices(&target).await.unwrap();
    assert_eq!(copied.len(), 2);
    assert_eq!(copied[1].continues_from, Some(ts(30)));
    assert_eq!(
        range_ts(&target, "rs0", 10, 50).await.unwrap(),
        (11..=50).collect::<Vec<_>>()
    );
    assert!(check_read_data(&target).await.unwrap().is_ok());
}
