//! Encryption, deduplication, damage detection, crashes, retention, prune and copy.

mod common;

use bytes::Bytes;
use common::*;
use tidemark_repo::check::{CheckOptions, check};
use tidemark_repo::copy::{CopyOutcome, copy_snapshots};
use tidemark_repo::forget::{KeepPolicy, forget, forget_ids, prune};
use tidemark_repo::lock::{LockInfo, list_locks};
use tidemark_repo::pack::{BlobKind, pack_key};
use tidemark_repo::{
    CommitOptions, Id, InitOptions, NamespaceMetadata, RepoError, Repository, SnapshotReader, SnapshotStats,
    SnapshotWriter, Storage,
};

async fn backup(repo: &Repository, namespaces: &[(&str, &[bson::RawDocumentBuf])]) -> (Id, SnapshotStats) {
    let mut writer = SnapshotWriter::new(repo, progress()).await.unwrap();
    for (name, docs) in namespaces {
        let mut ns = writer
            .begin_namespace(name, NamespaceMetadata::default())
            .await
            .unwrap();
        for d in *docs {
            ns.write_document(d).await.unwrap();
        }
        ns.finish().await.unwrap();
    }
    writer.commit(CommitOptions::default()).await.unwrap()
}

async fn all_objects(storage: &Storage) -> Vec<(String, Bytes)> {
    let mut out = Vec::new();
    for meta in storage.list("").await.unwrap() {
        out.push((meta.key.clone(), storage.get(&meta.key).await.unwrap()));
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

async fn read_all(repo: &Repository, id: &Id, ns: &str) -> Result<Vec<u8>, RepoError> {
    let reader = SnapshotReader::open(repo, id).await?;
    let (member, entry) = reader.find_namespace(ns).unwrap();
    let mut stream = reader.documents(member, entry);
    let mut out = Vec::new();
    while let Some(d) = stream.next_document().await? {
        out.extend_from_slice(d.as_bytes());
    }
    Ok(out)
}

#[tokio::test]
async fn wrong_password_and_mode_errors_are_clear() {
    let (storage, _) = init_memory().await;
    let err = Repository::open(storage.clone(), Some("nope")).await.unwrap_err();
    assert!(matches!(err, RepoError::WrongPassword { keys: 1, .. }), "{err}");
    assert!(err.to_string().contains("wrong password"), "{err}");
    let err = Repository::open(storage.clone(), None).await.unwrap_err();
    assert!(err.to_string().contains("password is required"), "{err}");
    let err = Repository::init(storage.clone(), Some("x"), &test_options())
        .await
        .unwrap_err();
    assert!(matches!(err, RepoError::AlreadyExists { .. }));
    let empty = memory().await;
    assert!(matches!(
        Repository::open(empty, Some("x")).await,
        Err(RepoError::NotARepository { .. })
    ));
    // A clear key planted in an encrypted repository neither opens it without the password nor
    // stops the password from working.
    let id = Repository::open(storage.clone(), Some(PASSWORD))
        .await
        .unwrap()
        .config()
        .id;
    let planted = tidemark_repo::crypto::MasterKeys::generate(id, None);
    let file =
        tidemark_repo::crypto::KeyFile::wrap(&planted, None, test_options().kdf, String::new(), String::new()).unwrap();
    storage
        .put("keys/planted", Bytes::from(serde_json::to_vec(&file).unwrap()))
        .await
        .unwrap();
    assert!(Repository::open(storage.clone(), None).await.is_err());
    Repository::open(storage.clone(), Some(PASSWORD)).await.unwrap();
    storage.delete("keys/planted").await.unwrap();
    // A second password opens the same repository.
    let repo = Repository::open(storage.clone(), Some(PASSWORD)).await.unwrap();
    repo.add_key("second", test_options().kdf).await.unwrap();
    assert_eq!(
        Repository::open(storage, Some("second")).await.unwrap().config().id,
        repo.config().id
    );
}

#[tokio::test]
async fn stored_objects_do_not_contain_plaintext() {
    let marker = b"TOP-SECRET-CUSTOMER-RECORD-4242";
    let docs: Vec<_> = (0..50)
        .map(
            |i| bson::rawdoc! { "_id": i, "secret": std::str::from_utf8(marker).unwrap(), "pad": noise(i as u64, 200) },
        )
        .collect();
    let (storage, repo) = init_memory().await;
    backup(&repo, &[("crm.people", &docs)]).await;
    for (key, bytes) in all_objects(&storage).await {
        assert!(!contains(&bytes, marker), "{key} leaks plaintext");
        assert!(
            !contains(&bytes, b"crm.people") && !contains(&bytes, b"people"),
            "{key} leaks a namespace name"
        );
    }
    // Control: without encryption the manifest is JSON naming the namespace once decompressed
    // (zstd), so the search above can fail.
    let plain_storage = memory().await;
    let plain = Repository::init(plain_storage.clone(), None, &test_options())
        .await
        .unwrap();
    assert!(!plain.is_encrypted());
    backup(&plain, &[("crm.people", &docs)]).await;
    let leaked = all_objects(&plain_storage).await.into_iter().any(|(key, b)| {
        key.starts_with("snapshots/") && contains(&zstd::decode_all(&b[..]).unwrap(), b"\"collection\":\"people\"")
    });
    assert!(leaked);
    let err = Repository::open(plain_storage.clone(), Some("pw")).await.unwrap_err();
    assert!(matches!(err, RepoError::PasswordMode(_)), "{err}");
    Repository::open(plain_storage, None).await.unwrap();
}

#[tokio::test]
async fn dedup_of_unchanged_and_slightly_changed_data() {
    let (_, repo) = init_memory().await;
    let docs = documents(4000, &[], 0);
    let (_, first) = backup(&repo, &[("db.c", &docs)]).await;
    assert_eq!(first.deduplicated_bytes, 0);
    assert_eq!(first.new_bytes, first.total_bytes);

    let (_, second) = backup(&repo, &[("db.c", &docs)]).await;
    assert_eq!(second.new_bytes, 0, "{second:?}");
    assert_eq!(second.added_bytes, 0);
    assert_eq!(second.deduplicated_bytes, second.total_bytes);

    // Change 1% of the documents (40 of 4000, spread out).
    let changed: Vec<i32> = (0..40).map(|i| i * 100 + 7).collect();
    let modified = documents(4000, &changed, 1);
    let (id, third) = backup(&repo, &[("db.c", &modified)]).await;
    let fraction = third.new_bytes as f64 / third.total_bytes as f64;
    // Each change touches the ~4 KiB chunk around it (plus a neighbour when a cut moves):
    // about 40 * 2 * 4 KiB of 4 MiB ≈ 8%; allow up to 20%.
    eprintln!("1% of documents changed: {:.1}% new bytes", fraction * 100.0);
    assert!(
        fraction > 0.0 && fraction < 0.20,
        "1% change added {:.1}% new bytes",
        fraction * 100.0
    );
    assert_eq!(read_all(&repo, &id, "db.c").await.unwrap(), concat(&modified));
}

#[tokio::test]
async fn bit_flips_are_detected_and_name_the_namespace() {
    let (storage, repo) = init_memory().await;
    let a = documents(300, &[], 0);
    let b = documents(300, &[], 9);
    let (id, _) = backup(&repo, &[("shop.a", &a), ("shop.b", &b)]).await;
    assert!(check_read_data(&repo).await.unwrap().is_ok());

    // Flip one bit inside the third chunk of shop.a.
    let snap = repo.load_snapshot(&id).await.unwrap();
    let chunk = chunk_ids(&repo, &snap.members[0].namespaces[0].data).await[2];
    let loc = repo.locate(&chunk).unwrap();
    let key = pack_key(&loc.pack);
    let mut bytes = storage.get(&key).await.unwrap().to_vec();
    let at = usize::try_from(loc.entry.offset).unwrap() + 30;
    bytes[at] ^= 0x10;
    storage.put(&key, Bytes::from(bytes)).await.unwrap();

    // The structural check does not read data; read-data finds the damage.
    assert!(check(&repo, CheckOptions::default()).await.unwrap().is_ok());
    let report = check_read_data(&repo).await.unwrap();
    assert!(!report.is_ok());
    assert!(report.errors.iter().any(|e| e.contains(&key)), "{:?}", report.errors);
    assert!(
        report.errors.iter().any(|e| e.contains("shop.a")),
        "{:?}",
        report.errors
    );
    // Subsets 1/2 and 2/2 together find it too.
    let mut found = 0;
    for n in 1..=2 {
        let r = check(
            &repo,
            CheckOptions {
                read_data_subset: Some((n, 2)),
                ..CheckOptions::default()
            },
        )
        .await
        .unwrap();
        found += r.errors.len();
    }
    assert!(found > 0);

    let err = read_all(&repo, &id, "shop.a").await.unwrap_err();
    assert!(
        matches!(&err, RepoError::NamespaceDamaged { namespace, .. } if namespace == "shop.a"),
        "{err}"
    );
    let mates = frame_mates(&repo, &chunk).await;
    assert!(mates.iter().any(|id| err.to_string().contains(id)), "{err}");
}

#[tokio::test]
async fn damaged_manifest_and_index_are_detected() {
    let (storage, repo) = init_memory().await;
    let (id, _) = backup(&repo, &[("db.c", &documents(50, &[], 0))]).await;
    let key = format!("snapshots/{id}");
    let mut bytes = storage.get(&key).await.unwrap().to_vec();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    storage.put(&key, Bytes::from(bytes)).await.unwrap();
    let err = repo.load_snapshot(&id).await.unwrap_err();
    assert!(err.to_string().contains(&key), "{err}");
    let report = check(&repo, CheckOptions::default()).await.unwrap();
    assert!(report.errors.iter().any(|e| e.contains(&key)), "{:?}", report.errors);
    let index_key = storage.list("index/").await.unwrap()[0].key.clone();
    storage.put(&index_key, Bytes::from_static(b"garbage")).await.unwrap();
    let err = Repository::open(storage, Some(PASSWORD)).await.unwrap_err();
    assert!(err.to_string().contains(&index_key), "{err}");
}

#[tokio::test]
async fn crash_before_commit_leaves_a_usable_repository() {
    let (storage, repo) = init_memory().await;
    // Enough for several batches, so some pack uploads complete before the crash.
    let docs = documents(10_000, &[], 3);
    {
        let mut writer = SnapshotWriter::new(&repo, progress()).await.unwrap();
        let mut ns = writer
            .begin_namespace("db.c", NamespaceMetadata::default())
            .await
            .unwrap();
        for d in &docs {
            ns.write_document(d).await.unwrap();
        }
        // A crash: no finish, no commit, no destructor.
        std::mem::forget(ns);
        std::mem::forget(writer);
    }
    assert!(
        !storage.list("data/").await.unwrap().is_empty(),
        "packs were uploaded before the crash"
    );
    assert!(storage.list("snapshots/").await.unwrap().is_empty());
    assert!(storage.list("index/").await.unwrap().is_empty());
    let report = check_read_data(&repo).await.unwrap();
    assert!(report.is_ok(), "{:?}", report.errors);
    assert!(!report.notes.is_empty(), "unreferenced packs are reported as notes");

    // The dead process's lock: simulate its process being gone, so it is stale.
    let (lock_key, mut info): (String, LockInfo) = list_locks(&storage).await.unwrap().remove(0);
    info.pid = u32::MAX;
    storage
        .put(&lock_key, Bytes::from(serde_json::to_vec(&info).unwrap()))
        .await
        .unwrap();

    let repo = Repository::open(storage.clone(), Some(PASSWORD)).await.unwrap();
    let (id, _) = backup(&repo, &[("db.c", &docs)]).await;
    assert_eq!(read_all(&repo, &id, "db.c").await.unwrap(), concat(&docs));
    let plan = prune(&repo, false).await.unwrap();
    assert!(!plan.unindexed_packs.is_empty());
    let report = check_read_data(&repo).await.unwrap();
    assert!(report.is_ok() && report.notes.is_empty(), "{report:?}");
}

#[tokio::test]
async fn locks_exclude_prune_during_backup() {
    let (storage, repo) = init_memory().await;
    let writer = SnapshotWriter::new(&repo, progress()).await.unwrap();
    let err = prune(&repo, false).await.unwrap_err();
    assert!(matches!(err, RepoError::Locked { .. }), "{err}");
    // Shared locks coexist.
    let second = SnapshotWriter::new(&repo, progress()).await.unwrap();
    second.abort().await.unwrap();
    writer.abort().await.unwrap();
    assert!(list_locks(&storage).await.unwrap().is_empty());
    prune(&repo, false).await.unwrap();

    // A writer abandoned by an error releases its lock in the background.
    drop(SnapshotWriter::new(&repo, progress()).await.unwrap());
    for _ in 0..100 {
        if list_locks(&storage).await.unwrap().is_empty() {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(list_locks(&storage).await.unwrap().is_empty());

    // A lock not refreshed for longer than the stale limit is ignored, whoever holds it.
    let old = LockInfo {
        host: "elsewhere".into(),
        pid: 1,
        exclusive: true,
        time: 1_000_000,
    };
    storage
        .put("locks/old", Bytes::from(serde_json::to_vec(&old).unwrap()))
        .await
        .unwrap();
    prune(&repo, false).await.unwrap();
    let fresh = LockInfo {
        time: i64::MAX / 2,
        ..old
    };
    storage
        .put("locks/fresh", Bytes::from(serde_json::to_vec(&fresh).unwrap()))
        .await
        .unwrap();
    let err = SnapshotWriter::new(&repo, progress()).await.unwrap_err();
    assert!(
        err.to_string().contains("locks/fresh") && err.to_string().contains("elsewhere"),
        "{err}"
    );
    let removed = tidemark_repo::lock::remove_stale_locks(&storage, false).await.unwrap();
    assert_eq!(removed, ["locks/old"]);
}

#[tokio::test]
async fn forget_and_prune_keep_what_the_policy_says() {
    let (storage, repo) = init_memory().await;
    let mut ids = Vec::new();
    for v in 0..3 {
        // 500 documents shared by all snapshots, 300 unique to each.
        let mut docs = documents(500, &[], 0);
        docs.extend(
            (500..800).map(|i: i32| bson::rawdoc! { "_id": i, "v": noise(v * 7919 + u64::try_from(i).unwrap(), 900) }),
        );
        let (id, _) = backup(&repo, &[("db.c", &docs)]).await;
        ids.push((id, docs));
    }
    let size_before: u64 = storage.list("data/").await.unwrap().iter().map(|m| m.size).sum();
    let policy = KeepPolicy {
        last: 1,
        ..KeepPolicy::default()
    };
    let dry = forget(&repo, &policy, true).await.unwrap();
    assert_eq!(dry.remove.len(), 2);
    assert_eq!(repo.snapshot_ids().await.unwrap().len(), 3, "dry run removes nothing");
    let plan = forget(&repo, &policy, false).await.unwrap();
    // All three share a time bucket order by id; the kept one is the newest by time.
    assert_eq!(plan.keep.len(), 1);
    let kept = plan.keep[0].id;
    assert_eq!(repo.snapshot_ids().await.unwrap(), vec![kept]);

    let dry = prune(&repo, true).await.unwrap();
    assert!(!dry.delete_packs.is_empty() || !dry.repack_packs.is_empty());
    assert_eq!(
        storage.list("data/").await.unwrap().iter().map(|m| m.size).sum::<u64>(),
        size_before
    );
    let done = prune(&repo, false).await.unwrap();
    assert_eq!(done.delete_packs, dry.delete_packs);
    let size_after: u64 = storage.list("data/").await.unwrap().iter().map(|m| m.size).sum();
    assert!(size_after < size_before * 2 / 3, "{size_after} vs {size_before}");
    let report = check_read_data(&repo).await.unwrap();
    assert!(report.is_ok() && report.notes.is_empty(), "{report:?}");
    let docs = &ids.iter().find(|(id, _)| *id == kept).unwrap().1;
    let repo = Repository::open(storage, Some(PASSWORD)).await.unwrap();
    assert_eq!(read_all(&repo, &kept, "db.c").await.unwrap(), concat(docs));
    assert!(matches!(
        forget(&repo, &KeepPolicy::default(), false).await,
        Err(RepoError::InvalidOption { .. })
    ));
}

#[tokio::test]
async fn copy_produces_an_identical_snapshot() {
    let (_, source) = init_memory().await;
    let docs = documents(1000, &[], 5);
    let (id, _) = backup(&source, &[("db.c", &docs), ("db.d", &documents(10, &[], 6))]).await;
    let target_storage = memory().await;
    let target = Repository::init(target_storage.clone(), Some("other password"), &test_options())
        .await
        .unwrap();
    let result = copy_snapshots(&source, &target, &[id]).await.unwrap();
    let CopyOutcome::Copied(new_id) = result[0].1 else {
        panic!("{result:?}")
    };
    let target = Repository::open(target_storage, Some("other password")).await.unwrap();
    let a = source.load_snapshot(&id).await.unwrap();
    let b = target.load_snapshot(&new_id).await.unwrap();
    assert_eq!(
        (a.time, &a.label, &a.tags, a.members.len()),
        (b.time, &b.label, &b.tags, b.members.len())
    );
    for (x, y) in a.members[0].namespaces.iter().zip(&b.members[0].namespaces) {
        assert_eq!(
            (x.name(), x.data.content_hash, x.data.documents),
            (y.name(), y.data.content_hash, y.data.documents)
        );
        assert_ne!(x.data.chunk_lists, y.data.chunk_lists, "ids are keyed per repository");
        assert_ne!(
            chunk_ids(&source, &x.data).await,
            chunk_ids(&target, &y.data).await,
            "ids are keyed per repository"
        );
        // The chunk lists were rewritten with the target's ids and stored in the target.
        for list in &y.data.chunk_lists {
            assert_eq!(target.locate(list).unwrap().entry.kind, BlobKind::ChunkList);
            assert!(source.locate(list).is_none());
        }
    }
    assert_eq!(read_all(&target, &new_id, "db.c").await.unwrap(), concat(&docs));
    assert!(check_read_data(&target).await.unwrap().is_ok());
    // Copying again is a no-op.
    let again = copy_snapshots(&source, &target, &[id]).await.unwrap();
    assert_eq!(again[0].1, CopyOutcome::AlreadyPresent(new_id));
}

/// Documents shaped like `tidemark bench`'s: an ObjectId `_id`, small fields and 744 random bytes,
/// 1,020 bytes in all (the benchmark's size, about `avg_size - min_size` of the default chunking).
fn bench_like(n: u64, changed_every: Option<u64>) -> Vec<bson::RawDocumentBuf> {
    (0..n)
        .map(|i| {
            let changed = changed_every.is_some_and(|k| i % k == 7);
            let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            let payload: Vec<u8> = (0..744)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x.to_le_bytes()[0]
                })
                .collect();
            let mut oid = [0u8; 12];
            oid[4..].copy_from_slice(&i.to_be_bytes());
            bson::rawdoc! {
                "_id": bson::oid::ObjectId::from_bytes(oid),
                "seq": i64::try_from(i).unwrap(),
                "name": format!("customer-{i:012}"),
                "score": if changed { -1.5 } else { i as f64 / 7.0 },
                "active": changed || i % 3 == 0,
                "payload": bson::Binary { subtype: bson::spec::BinarySubtype::Generic, bytes: payload },
                "address": { "street": "1 Main Street", "city": "Springfield", "zip": i64::try_from(i % 99_999).unwrap() },
                "note": "x".repeat(PADDING),
            }
        })
        .collect()
}

/// Bytes of the `note` field that bring a [`bench_like`] document to 1,020 bytes.
const PADDING: usize = 85;

/// With the repository's default parameters, a second backup of an unchanged collection adds at
/// most 1% of the first backup's stored bytes, and one after updating 1% of the documents (spread
/// over the whole collection) at most 5%.
#[tokio::test]
async fn default_parameters_meet_the_dedup_targets() {
    let storage = memory().await;
    let options = InitOptions {
        kdf: test_options().kdf,
        ..InitOptions::default()
    };
    let repo = Repository::init(storage.clone(), Some(PASSWORD), &options)
        .await
        .unwrap();
    let stored = || async {
        let mut total = 0;
        for m in storage.list("").await.unwrap() {
            total += m.size;
        }
        total
    };
    let docs = bench_like(12_000, None);
    assert_eq!(docs[0].as_bytes().len(), 1_020);
    let empty = stored().await;
    backup(&repo, &[("bench.large", &docs)]).await;
    let first = stored().await - empty;
    backup(&repo, &[("bench.large", &docs)]).await;
    let unchanged = stored().await - empty - first;
    let changed_docs = bench_like(12_000, Some(100));
    let (id, _) = backup(&repo, &[("bench.large", &changed_docs)]).await;
    let changed = stored().await - empty - first - unchanged;
    // The same documents again, in batches from four `_id` ranges read at once, arriving in another
    // order: what a parallel dump of an unchanged large collection delivers. (A dump's batches hold
    // about 1 MiB of documents, rarely an even number of chunks.)
    let batches: Vec<&[bson::RawDocumentBuf]> = changed_docs.chunks(997).collect();
    let reordered: Vec<bson::RawDocumentBuf> = [0, 3, 6, 9, 1, 4, 10, 7, 2, 11, 5, 8, 12]
        .iter()
        .flat_map(|&b| batches[b].iter().cloned())
        .collect();
    backup(&repo, &[("bench.large", &reordered)]).await;
    let reordered_added = stored().await - empty - first - unchanged - changed;
    let pct = |b: u64| b as f64 * 100.0 / first as f64;
    eprintln!(
        "first {first} bytes; unchanged +{:.2}%; 1% changed +{:.2}%; reordered +{:.2}%",
        pct(unchanged),
        pct(changed),
        pct(reordered_added)
    );
    assert!(pct(unchanged) <= 1.0, "unchanged: +{:.2}%", pct(unchanged));
    assert!(pct(changed) <= 5.0, "1% changed: +{:.2}%", pct(changed));
    assert!(
        pct(reordered_added) <= 1.0,
        "batches reordered: +{:.2}%",
        pct(reordered_added)
    );
    assert_eq!(
        read_all(&repo, &id, "bench.large").await.unwrap(),
        concat(&changed_docs)
    );
}

#[tokio::test]
async fn a_damaged_chunk_list_is_found_by_check_and_restore_and_names_the_namespace() {
    let (storage, repo) = init_memory().await;
    let all: Vec<i32> = (0..300).collect();
    let other = documents(300, &all, 9);
    // About 250 chunks: several chunk lists (a list ends after 1 id in 16, at random).
    let (id, _) = backup(&repo, &[("shop.a", &documents(1000, &[], 0)), ("shop.b", &other)]).await;
    let snap = repo.load_snapshot(&id).await.unwrap();
    let list = snap.members[0].namespaces[0].data.chunk_lists[1];
    let loc = repo.locate(&list).unwrap();
    assert_eq!(loc.entry.kind, BlobKind::ChunkList);
    let key = pack_key(&loc.pack);
    let mut bytes = storage.get(&key).await.unwrap().to_vec();
    bytes[usize::try_from(loc.entry.offset).unwrap() + 30] ^= 0x01;
    storage.put(&key, Bytes::from(bytes)).await.unwrap();

    // The structural check reads chunk lists, so it finds the damage without --read-data.
    let mates = frame_mates(&repo, &list).await;
    let report = check(&repo, CheckOptions::default()).await.unwrap();
    assert!(
        report
            .errors
            .iter()
            .any(|e| e.contains("shop.a") && mates.iter().any(|id| e.contains(id))),
        "{:?}",
        report.errors
    );
    assert!(
        !report.errors.iter().any(|e| e.contains("shop.b")),
        "{:?}",
        report.errors
    );
    let err = read_all(&repo, &id, "shop.a").await.unwrap_err();
    assert!(
        matches!(&err, RepoError::NamespaceDamaged { namespace, .. } if namespace == "shop.a"),
        "{err}"
    );
    assert!(mates.iter().any(|id| err.to_string().contains(id)), "{err}");
    assert_eq!(read_all(&repo, &id, "shop.b").await.unwrap(), concat(&other));
    // Prune cannot tell what the damaged list references, so it refuses rather than guess.
    let err = prune(&repo, true).await.unwrap_err();
    assert!(err.to_string().contains("shop.a"), "{err}");
}

#[tokio::test]
async fn prune_keeps_the_chunk_lists_in_use() {
    let (storage, repo) = init_memory().await;
    let old = documents(2000, &[], 0);
    let (first, _) = backup(&repo, &[("db.c", &old)]).await;
    let changed: Vec<i32> = (0..20).map(|i| i * 100 + 7).collect();
    let new = documents(2000, &changed, 1);
    let (second, _) = backup(&repo, &[("db.c", &new)]).await;
    forget_ids(&repo, &[first]).await.unwrap();
    let plan = prune(&repo, false).await.unwrap();
    assert!(
        !plan.repack_packs.is_empty() || !plan.delete_packs.is_empty(),
        "the first snapshot's own chunks and chunk lists were freed: {plan:?}"
    );
    let repo = Repository::open(storage, Some(PASSWORD)).await.unwrap();
    let snap = repo.load_snapshot(&second).await.unwrap();
    for list in &snap.members[0].namespaces[0].data.chunk_lists {
        let loc = repo.locate(list).expect("chunk list still indexed");
        assert_eq!(loc.entry.kind, BlobKind::ChunkList);
    }
    let report = check_read_data(&repo).await.unwrap();
    assert!(report.is_ok() && report.notes.is_empty(), "{report:?}");
    assert_eq!(read_all(&repo, &second, "db.c").await.unwrap(), concat(&new));
}

#[tokio::test]
async fn an_older_format_is_refused_with_both_versions() {
    let (storage, _) = init_memory().await;
    let mut config: serde_json::Value = serde_json::from_slice(&storage.get("config").await.unwrap()).unwrap();
    config["version"] = 1.into();
    config.as_object_mut().unwrap().remove("document_chunker");
    storage
        .put("config", Bytes::from(serde_json::to_vec(&config).unwrap()))
        .await
        .unwrap();
    let err = Repository::open(storage, Some(PASSWORD)).await.unwrap_err();
    assert!(
        matches!(
            err,
            RepoError::UnsupportedVersion {
                found: 1,
                supported: 2,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains("format version 1, this tidemark reads 2"),
        "{err}"
    );
}

/// Replaces every index object by one holding the same packs, encoded as `encoding`.
async fn rewrite_index(storage: &Storage, repo: &Repository, encoding: tidemark_repo::index::IndexEncoding) {
    let files = repo.index_files().await.unwrap();
    let packs = files.iter().flat_map(|(_, f)| f.packs.clone()).collect();
    for (key, _) in &files {
        storage.delete(key).await.unwrap();
    }
    repo.write_index_as(packs, encoding).await.unwrap();
}

#[tokio::test]
async fn index_objects_written_as_json_before_still_read() {
    use tidemark_repo::index::IndexEncoding;
    let (storage, repo) = init_memory().await;
    let docs = documents(200, &[], 0);
    let (first, _) = backup(&repo, &[("db.c", &docs)]).await;
    let binary = storage.list("index/").await.unwrap();
    rewrite_index(&storage, &repo, IndexEncoding::Json).await;
    let json = storage.list("index/").await.unwrap();
    assert_eq!(json.len(), 1);
    // The JSON object is the larger one (hex ids, field names), even compressed.
    assert!(json[0].size > binary[0].size, "{} vs {}", json[0].size, binary[0].size);

    let reopened = Repository::open(storage.clone(), Some(PASSWORD)).await.unwrap();
    assert_eq!(read_all(&reopened, &first, "db.c").await.unwrap(), concat(&docs));
    assert!(check_read_data(&reopened).await.unwrap().errors.is_empty());
    // A backup over the JSON index deduplicates against it and adds a binary object beside it.
    let more = documents(210, &[], 0);
    let (second, stats) = backup(&reopened, &[("db.c", &more)]).await;
    assert!(stats.deduplicated_bytes > stats.new_bytes, "{stats:?}");
    assert_eq!(storage.list("index/").await.unwrap().len(), 2);
    let reopened = Repository::open(storage.clone(), Some(PASSWORD)).await.unwrap();
    assert_eq!(read_all(&reopened, &second, "db.c").await.unwrap(), concat(&more));
    assert!(check_read_data(&reopened).await.unwrap().errors.is_empty());
}

#[tokio::test]
async fn a_damaged_binary_index_is_named_without_encryption_too() {
    let storage = memory().await;
    let repo = Repository::init(storage.clone(), None, &test_options()).await.unwrap();
    backup(&repo, &[("db.c", &documents(100, &[], 0))]).await;
    let key = storage.list("index/").await.unwrap()[0].key.clone();
    let good = storage.get(&key).await.unwrap();
    // Without a seal, the object is the zstd frame itself: damage it after decompression by
    // rewriting it with one byte of a blob id changed, keeping the zstd frame valid.
    let mut plain = zstd::decode_all(&good[..]).unwrap();
    assert_eq!(&plain[..4], b"TMIX");
    plain[60] ^= 1;
    storage
        .put(&key, Bytes::from(zstd::encode_all(&plain[..], 1).unwrap()))
        .await
        .unwrap();
    let err = Repository::open(storage.clone(), None).await.unwrap_err().to_string();
    assert!(err.contains(&key) && err.contains("checksum mismatch"), "{err}");
    // Truncated: the zstd frame itself is incomplete.
    storage.put(&key, good.slice(..good.len() / 2)).await.unwrap();
    let err = Repository::open(storage.clone(), None).await.unwrap_err().to_string();
    assert!(err.contains(&key), "{err}");
    storage.put(&key, good).await.unwrap();
    Repository::open(storage, None).await.unwrap();
}

#[tokio::test]
async fn check_reports_an_index_that_disagrees_with_the_packs() {
    use tidemark_repo::index::IndexEncoding;
    let (storage, repo) = init_memory().await;
    backup(&repo, &[("db.c", &documents(100, &[], 0))]).await;
    let files = repo.index_files().await.unwrap();
    let mut packs: Vec<_> = files.iter().flat_map(|(_, f)| f.packs.clone()).collect();
    for (key, _) in &files {
        storage.delete(key).await.unwrap();
    }
    packs[0].blobs[1].length += 1;
    packs[0].size += 1;
    let wrong_pack = pack_key(&packs[0].id);
    repo.write_index_as(packs, IndexEncoding::Binary).await.unwrap();
    let repo = Repository::open(storage, Some(PASSWORD)).await.unwrap();
    let report = check_read_data(&repo).await.unwrap();
    let expect = [
        format!("pack {wrong_pack} has size"),
        format!("{wrong_pack}: header differs from the index"),
    ];
    for e in expect {
        assert!(report.errors.iter().any(|r| r.contains(&e)), "{e}: {:?}", report.errors);
    }
}
