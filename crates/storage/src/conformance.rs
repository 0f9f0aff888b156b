//! The behaviour every backend must have, as one executable suite.
//!
//! [`run_backend_suite`] exercises a [`Storage`] through its public API only, so the same checks run against
//! the filesystem, memory and S3 backends (and against them with injected faults). It expects an empty store,
//! removes everything it wrote, and panics with a message naming the failed check and key — it is meant to
//! be called from tests.
//!
//! What it checks: put/get round trips and overwrites; `get` of a missing key is `NotFound` naming the key;
//! ranged reads at the start, middle and end, empty ranges, and clean errors for ranges beyond the end;
//! `head` sizes; recursive, sorted listing by string prefix over nested keys and over more than 1000 keys
//! (one S3 `ListObjectsV2` page holds at most 1000, so this crosses pages); idempotent deletion, one by one
//! and in batches; empty and 20 MiB objects; concurrent puts of different keys and of the same key (the
//! result is one whole object, also for readers racing the writers); keys with characters that need
//! escaping in URLs or paths; rejection of malformed keys.

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

use crate::{ObjectMeta, Storage, StorageError};

/// Keys (in the escaping check) with characters that URLs, S3 signatures or file systems treat specially.
pub const AWKWARD_KEYS: &[&str] = &[
    "esc/with space",
    "esc/plus+sign",
    "esc/percent%20encoded%2F",
    "esc/question?mark",
    "esc/hash#tag",
    "esc/amp&equals=",
    "esc/colon:semi;comma,",
    "esc/quote'double\"",
    "esc/brackets[]{}()",
    "esc/tilde~star*dollar$at@",
    "esc/back\\slash",
    "esc/caf\u{e9}/\u{4e2d}\u{6587}/\u{1f980}",
    "esc/.hidden",
    "esc/..dots..",
    "esc/trailing.",
];

/// Number of keys in the listing-pagination check (more than one 1000-key S3 page).
pub const MANY_KEYS: usize = 1010;

/// Size of the large-object check.
pub const LARGE_OBJECT_SIZE: usize = 20 << 20;

/// Deterministic pseudo-random bytes.
pub fn pseudo_random(len: usize, seed: u64) -> Bytes {
    let mut data = vec![0u8; len];
    StdRng::seed_from_u64(seed).fill_bytes(&mut data);
    Bytes::from(data)
}

fn expect<T>(result: Result<T, StorageError>, what: &str) -> T {
    match result {
        Ok(value) => value,
        Err(e) => panic!("{what}: unexpected error: {e}"),
    }
}

fn keys(list: &[ObjectMeta]) -> Vec<&str> {
    list.iter().map(|m| m.key.as_str()).collect()
}

/// Runs every check against `storage`, which must be empty; panics on the first failure.
pub async fn run_backend_suite(storage: &Storage) {
    let before = expect(storage.list("").await, "list of the store before the suite");
    assert!(
        before.is_empty(),
        "the conformance suite needs an empty store, found {:?}",
        keys(&before)
    );
    round_trip_and_overwrite(storage).await;
    missing_keys(storage).await;
    ranges(storage).await;
    listing(storage).await;
    many_keys(storage).await;
    deletion(storage).await;
    empty_and_large(storage).await;
    concurrent_puts(storage).await;
    awkward_keys(storage).await;
    invalid_keys(storage).await;
    let after = expect(storage.list("").await, "list of the store after the suite");
    assert!(after.is_empty(), "the suite left objects behind: {:?}", keys(&after));
}

async fn round_trip_and_overwrite(s: &Storage) {
    let key = "config";
    let first = Bytes::from_static(b"first version of the object");
    expect(s.put(key, first.clone()).await, "put config");
    assert_eq!(
        expect(s.get(key).await, "get config"),
        first,
        "get returns what put stored"
    );
    let meta = expect(s.head(key).await, "head config");
    assert_eq!(
        meta,
        Some(ObjectMeta {
            key: key.into(),
            size: 27
        }),
        "head after put"
    );

    let second = Bytes::from_static(b"shorter");
    expect(s.put(key, second.clone()).await, "overwrite config");
    assert_eq!(
        expect(s.get(key).await, "get after overwrite"),
        second,
        "overwrite replaces the whole object"
    );
    assert_eq!(
        expect(s.head(key).await, "head after overwrite").map(|m| m.size),
        Some(7),
        "size after overwrite"
    );
    expect(s.delete(key).await, "delete config");
}

fn assert_not_found<T: std::fmt::Debug>(result: Result<T, StorageError>, key: &str, what: &str) {
    match result {
        Err(e) => {
            assert!(e.is_not_found(), "{what}: expected NotFound, got {e}");
            assert!(!e.is_retryable(), "{what}: NotFound must not be retryable");
            assert_eq!(e.key(), Some(key), "{what}: the error names the key");
            assert!(e.to_string().contains(key), "{what}: message {e} names the key");
        }
        Ok(v) => panic!("{what}: expected NotFound, got {v:?}"),
    }
}

async fn missing_keys(s: &Storage) {
    let key = "snapshots/does-not-exist";
    assert_not_found(s.get(key).await, key, "get of a missing key");
    assert_not_found(s.get_range(key, 0..1).await, key, "get_range of a missing key");
    assert_not_found(s.get_range(key, 0..0).await, key, "empty get_range of a missing key");
    assert_eq!(
        expect(s.head(key).await, "head of a missing key"),
        None,
        "head of a missing key"
    );

    // A key that is only a prefix of other keys is not an object.
    expect(s.put("dir/child", Bytes::from_static(b"x")).await, "put dir/child");
    assert_not_found(s.get("dir").await, "dir", "get of a prefix of other keys");
    assert_eq!(
        expect(s.head("dir").await, "head of a prefix"),
        None,
        "head of a prefix of other keys"
    );
    expect(s.delete("dir/child").await, "delete dir/child");
}

async fn ranges(s: &Storage) {
    let key = "data/ranges";
    let data = pseudo_random(1000, 1);
    expect(s.put(key, data.clone()).await, "put for ranges");
    for range in [0..10u64, 990..1000, 500..501, 0..1000, 123..877] {
        let got = expect(s.get_range(key, range.clone()).await, &format!("get_range {range:?}"));
        let (a, b) = (
            usize::try_from(range.start).unwrap(),
            usize::try_from(range.end).unwrap(),
        );
        assert_eq!(got, data.slice(a..b), "bytes of range {range:?}");
    }
    for range in [0..0u64, 500..500, 1000..1000] {
        let got = expect(
            s.get_range(key, range.clone()).await,
            &format!("empty get_range {range:?}"),
        );
        assert!(got.is_empty(), "empty range {range:?} returns no bytes");
    }
    #[allow(clippy::reversed_empty_ranges)]
    for range in [995..1005u64, 1000..1001, 2000..3000, 1001..1001, 10..5] {
        match s.get_range(key, range.clone()).await {
            Err(e) => {
                assert!(
                    !e.is_not_found(),
                    "range {range:?} beyond the object is not NotFound: {e}"
                );
                assert!(e.to_string().contains(key), "range error {e} names the key");
            }
            Ok(b) => panic!("get_range {range:?} of a 1000-byte object returned {} bytes", b.len()),
        }
    }
    expect(s.delete(key).await, "delete ranges object");
}

async fn listing(s: &Storage) {
    let objects = [
        ("data/00/aa", 1usize),
        ("data/00/ab", 2),
        ("data/01/ba", 3),
        ("data/0z", 4),
        ("database", 5),
        ("index/1", 6),
        ("snapshots/s1", 7),
        ("snapshots/s2/deeper/still", 8),
    ];
    for (key, size) in objects {
        expect(s.put(key, pseudo_random(size, 2)).await, &format!("put {key}"));
    }
    let all = expect(s.list("").await, "list of everything");
    let expected: Vec<ObjectMeta> = objects
        .iter()
        .map(|(k, n)| ObjectMeta {
            key: (*k).into(),
            size: u64::try_from(*n).unwrap(),
        })
        .collect();
    assert_eq!(all, expected, "list(\"\") returns every object, sorted, with sizes");
    for (prefix, want) in [
        ("data/", &["data/00/aa", "data/00/ab", "data/01/ba", "data/0z"][..]),
        ("data/0", &["data/00/aa", "data/00/ab", "data/01/ba", "data/0z"][..]),
        ("data/00/", &["data/00/aa", "data/00/ab"][..]),
        ("data/00/a", &["data/00/aa", "data/00/ab"][..]),
        ("data/00/ab", &["data/00/ab"][..]),
        (
            "data",
            &["data/00/aa", "data/00/ab", "data/01/ba", "data/0z", "database"][..],
        ),
        ("snapshots/", &["snapshots/s1", "snapshots/s2/deeper/still"][..]),
        ("snapshots/s2/", &["snapshots/s2/deeper/still"][..]),
        ("nothing/", &[][..]),
        ("nothing", &[][..]),
        ("data/02/", &[][..]),
    ] {
        let got = expect(s.list(prefix).await, &format!("list {prefix:?}"));
        assert_eq!(keys(&got), want, "list({prefix:?})");
    }
    for (key, _) in objects {
        expect(s.delete(key).await, &format!("delete {key}"));
    }
}

/// Runs `op` on every index with at most `parallel` in flight.
async fn for_each_parallel<F, Fut>(count: usize, parallel: usize, op: F)
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let mut set = tokio::task::JoinSet::new();
    for i in 0..count {
        if set.len() >= parallel
            && let Some(done) = set.join_next().await
        {
            done.expect("task of a parallel storage check");
        }
        set.spawn(op(i));
    }
    while let Some(done) = set.join_next().await {
        done.expect("task of a parallel storage check");
    }
}

async fn many_keys(s: &Storage) {
    let key_of = |i: usize| format!("many/{:02x}/{i:05}", i % 7);
    for_each_parallel(MANY_KEYS, 32, |i| {
        let s = s.clone();
        let key = key_of(i);
        async move { expect(s.put(&key, pseudo_random(i % 13, 3)).await, &format!("put {key}")) }
    })
    .await;
    let listed = expect(s.list("many/").await, "list of many keys");
    let mut expected: Vec<ObjectMeta> = (0..MANY_KEYS)
        .map(|i| ObjectMeta {
            key: key_of(i),
            size: u64::try_from(i % 13).unwrap(),
        })
        .collect();
    expected.sort();
    assert_eq!(listed.len(), MANY_KEYS, "every one of {MANY_KEYS} keys is listed");
    assert_eq!(
        listed, expected,
        "listing of {MANY_KEYS} keys is complete, sorted and sized"
    );
    let some = expect(s.list("many/03/").await, "list of one subdirectory of many");
    assert_eq!(
        some.len(),
        (0..MANY_KEYS).filter(|i| i % 7 == 3).count(),
        "list many/03/"
    );
    // Deleting one subdirectory one key at a time, the rest in batches.
    for meta in &some {
        expect(s.delete(&meta.key).await, &format!("delete {}", meta.key));
    }
    let rest: Vec<String> = (0..MANY_KEYS).filter(|i| i % 7 != 3).map(key_of).collect();
    expect(s.delete_many(&rest).await, "delete_many of many keys");
    expect(s.delete_many(&rest[..10]).await, "delete_many of deleted keys");
    expect(s.delete_many(Vec::<String>::new()).await, "delete_many of nothing");
    assert!(
        expect(s.list("many/").await, "list after deleting many").is_empty(),
        "all many/ keys deleted"
    );
}

async fn deletion(s: &Storage) {
    let key = "locks/lock-1";
    expect(s.put(key, Bytes::from_static(b"lock")).await, "put lock");
    expect(s.delete(key).await, "delete existing");
    assert_not_found(s.get(key).await, key, "get after delete");
    assert_eq!(
        expect(s.head(key).await, "head after delete"),
        None,
        "head after delete"
    );
    expect(s.delete(key).await, "second delete of the same key");
    expect(
        s.delete("locks/never-existed").await,
        "delete of a key that never existed",
    );
    expect(s.delete("no/such/dir/key").await, "delete under a missing prefix");
}

async fn empty_and_large(s: &Storage) {
    expect(s.put("empty", Bytes::new()).await, "put empty object");
    assert_eq!(
        expect(s.get("empty").await, "get empty object"),
        Bytes::new(),
        "empty object round trip"
    );
    assert_eq!(
        expect(s.head("empty").await, "head empty").map(|m| m.size),
        Some(0),
        "empty object size"
    );
    assert_eq!(
        expect(s.list("emp").await, "list empty object"),
        vec![ObjectMeta {
            key: "empty".into(),
            size: 0
        }],
        "empty object is listed"
    );
    expect(s.delete("empty").await, "delete empty");

    let key = "data/large";
    let data = pseudo_random(LARGE_OBJECT_SIZE, 4);
    expect(s.put(key, data.clone()).await, "put 20 MiB");
    let got = expect(s.get(key).await, "get 20 MiB");
    assert!(got == data, "20 MiB object round trip (got {} bytes)", got.len());
    let size = u64::try_from(LARGE_OBJECT_SIZE).unwrap();
    assert_eq!(
        expect(s.head(key).await, "head 20 MiB").map(|m| m.size),
        Some(size),
        "large size"
    );
    let mid = size / 2;
    let got = expect(
        s.get_range(key, mid - 5000..mid + 5000).await,
        "range in the middle of 20 MiB",
    );
    let m = LARGE_OBJECT_SIZE / 2;
    assert!(
        got == data.slice(m - 5000..m + 5000),
        "range in the middle of the large object"
    );
    expect(s.delete(key).await, "delete large");
}

async fn concurrent_puts(s: &Storage) {
    for_each_parallel(64, 64, |i| {
        let s = s.clone();
        async move {
            let key = format!("conc/{i:02}");
            expect(
                s.put(&key, pseudo_random(1000 + i, 5)).await,
                &format!("concurrent put {key}"),
            );
        }
    })
    .await;
    for i in 0..64 {
        let key = format!("conc/{i:02}");
        assert_eq!(
            expect(s.get(&key).await, &key),
            pseudo_random(1000 + i, 5),
            "concurrent put of {key}"
        );
    }
    // Racing writers of one key: the result is exactly one of the versions, never a mix.
    let versions: Vec<Bytes> = (0..16u64).map(|i| pseudo_random(256 << 10, 100 + i)).collect();
    let racing = versions.clone();
    for_each_parallel(versions.len(), 16, move |i| {
        let s = s.clone();
        let data = racing[i].clone();
        async move { expect(s.put("conc/same", data).await, "racing put of conc/same") }
    })
    .await;
    let got = expect(s.get("conc/same").await, "get after racing puts");
    assert!(
        versions.contains(&got),
        "racing puts left a whole version, not a mix ({} bytes)",
        got.len()
    );

    // Readers racing an overwriting writer see one whole version each time, never a partial object.
    let writer = {
        let (s, versions) = (s.clone(), versions.clone());
        tokio::spawn(async move {
            for round in 0..12 {
                let data = versions[round % 2].clone();
                expect(s.put("conc/same", data).await, "overwrite of conc/same");
            }
        })
    };
    while !writer.is_finished() {
        let got = expect(s.get("conc/same").await, "get during overwrites");
        assert!(
            versions.contains(&got),
            "a read during overwrites saw a partial object ({} bytes)",
            got.len()
        );
    }
    writer.await.expect("overwriting task");
    assert_eq!(
        expect(s.list("conc/").await, "list conc").len(),
        65,
        "65 keys under conc/"
    );
    for i in 0..64 {
        expect(s.delete(&format!("conc/{i:02}")).await, "delete conc");
    }
    expect(s.delete("conc/same").await, "delete conc/same");
}

async fn awkward_keys(s: &Storage) {
    for (i, key) in AWKWARD_KEYS.iter().enumerate() {
        expect(s.put(key, pseudo_random(i + 1, 6)).await, &format!("put {key:?}"));
    }
    for (i, key) in AWKWARD_KEYS.iter().enumerate() {
        assert_eq!(
            expect(s.get(key).await, &format!("get {key:?}")),
            pseudo_random(i + 1, 6),
            "{key:?}"
        );
        let size = u64::try_from(i + 1).unwrap();
        assert_eq!(
            expect(s.head(key).await, "head").map(|m| m.size),
            Some(size),
            "head {key:?}"
        );
    }
    let mut expected: Vec<&str> = AWKWARD_KEYS.to_vec();
    expected.sort_unstable();
    let listed = expect(s.list("esc/").await, "list awkward keys");
    assert_eq!(
        keys(&listed),
        expected,
        "awkward keys are listed under their exact names"
    );
    let by_prefix = expect(s.list("esc/caf\u{e9}/").await, "list by a non-ASCII prefix");
    assert_eq!(
        keys(&by_prefix),
        ["esc/caf\u{e9}/\u{4e2d}\u{6587}/\u{1f980}"],
        "non-ASCII prefix"
    );
    for key in AWKWARD_KEYS {
        expect(s.delete(key).await, &format!("delete {key:?}"));
        assert_eq!(expect(s.head(key).await, "head after delete"), None, "{key:?} deleted");
    }
}

async fn invalid_keys(s: &Storage) {
    for key in ["", "/abs", "a//b", "a/../b", "./a", "dir/", ".tmp/x", "nul\0byte"] {
        for result in [
            s.put(key, Bytes::from_static(b"x")).await.map(|_| ()),
            s.get(key).await.map(|_| ()),
            s.head(key).await.map(|_| ()),
            s.delete(key).await,
            s.delete_many(["fine", key]).await,
            s.get_range(key, 0..1).await.map(|_| ()),
        ] {
            match result {
                Err(StorageError::InvalidKey { key: k, .. }) => assert_eq!(k, key, "error names the key"),
                other => panic!("key {key:?} must be rejected as invalid, got {other:?}"),
            }
        }
    }
}
