//! Retries hide transient faults; persistent faults end in clean errors naming the key; corruption is
//! passed through unchanged for the repository's checksums to catch.

use std::time::{Duration, Instant};

use bytes::Bytes;
use tidemark_storage::conformance::{pseudo_random, run_backend_suite};
use tidemark_storage::fault::FaultInjecting;
use tidemark_storage::testing::S3TestServer;
use tidemark_storage::{Storage, StorageConfig, StorageError};

fn patient() -> StorageConfig {
    StorageConfig {
        retries: Some(12),
        retry_delay: Some(Duration::from_millis(1)),
        ..StorageConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retries_hide_transient_faults_from_the_whole_suite_in_memory() {
    let faults = FaultInjecting::transient(0.25).with_seed(1);
    let storage = Storage::open_with_faults("memory://", &patient(), faults.clone())
        .await
        .unwrap();
    run_backend_suite(&storage).await;
    assert!(
        faults.injected() > 500,
        "the suite ran through many faults: {}",
        faults.injected()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retries_hide_transient_faults_on_the_filesystem() {
    let dir = tempfile::tempdir().unwrap();
    let faults = FaultInjecting::transient(0.25).with_seed(2);
    let storage = Storage::open_with_faults(dir.path().to_str().unwrap(), &patient(), faults.clone())
        .await
        .unwrap();
    run_backend_suite(&storage).await;
    assert!(
        faults.injected() > 500,
        "the suite ran through many faults: {}",
        faults.injected()
    );
    // No partial object was ever published: every temporary file was either renamed or removed.
    let temp = dir.path().join(".tmp");
    let left: Vec<_> = std::fs::read_dir(&temp)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "temporary files left behind: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_hide_transient_faults_against_s3() {
    let server = S3TestServer::start().unwrap_or_else(|e| panic!("{e}"));
    let faults = FaultInjecting::transient(0.3).with_seed(3);
    let config = StorageConfig {
        retries: Some(12),
        retry_delay: Some(Duration::from_millis(1)),
        ..server.config()
    };
    let storage = Storage::open_with_faults(&server.url("flaky"), &config, faults.clone())
        .await
        .unwrap();
    for i in 0..40 {
        storage
            .put(&format!("data/{i:02}"), pseudo_random(i * 100, 8))
            .await
            .unwrap();
    }
    for i in 0..40 {
        assert_eq!(
            storage.get(&format!("data/{i:02}")).await.unwrap(),
            pseudo_random(i * 100, 8)
        );
        assert_eq!(
            storage
                .get_range(&format!("data/{i:02}"), 0..1)
                .await
                .ok()
                .map(|b| b.len()),
            (i > 0).then_some(1)
        );
    }
    assert_eq!(storage.list("data/").await.unwrap().len(), 40);
    for i in 0..40 {
        storage.delete(&format!("data/{i:02}")).await.unwrap();
    }
    assert!(storage.list("").await.unwrap().is_empty());
    assert!(faults.injected() > 20, "faults were injected: {}", faults.injected());
    // The bucket, read by an independent client, holds nothing left over.
    let count = server
        .boto3("print(s3.list_objects_v2(Bucket=bucket).get('KeyCount'))")
        .unwrap();
    assert_eq!(count.trim(), "0");
}

fn assert_transient_naming(result: Result<impl std::fmt::Debug, StorageError>, key: &str, needle: &str) {
    let err = result.expect_err("a persistent fault must fail the operation");
    assert!(err.is_retryable(), "{err:?}");
    assert!(!err.is_not_found(), "{err:?}");
    assert_eq!(err.key(), Some(key), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains(key) && text.contains(needle) && text.contains("3 retries"),
        "{text}"
    );
}

#[tokio::test]
async fn persistent_transient_faults_give_clean_errors_naming_the_key() {
    let config = StorageConfig {
        retries: Some(3),
        retry_delay: Some(Duration::from_millis(1)),
        ..Default::default()
    };
    let faults = FaultInjecting::transient(1.0);
    let storage = Storage::open_with_faults("memory://", &config, faults.clone())
        .await
        .unwrap();
    let key = "snapshots/0123abcd";
    assert_transient_naming(
        storage.put(key, Bytes::from_static(b"x")).await,
        key,
        "injected transient fault",
    );
    assert_transient_naming(storage.get(key).await, key, "injected transient fault");
    assert_transient_naming(storage.get_range(key, 0..1).await, key, "injected transient fault");
    assert_transient_naming(storage.head(key).await, key, "injected transient fault");
    assert_transient_naming(
        storage.list("snapshots/").await,
        "snapshots/",
        "injected transient fault",
    );
    assert_transient_naming(storage.delete(key).await, key, "injected transient fault");
    // Each operation was attempted once and retried three times.
    assert!(faults.injected() >= 6 * 4, "{}", faults.injected());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_cut_hanging_calls_and_retries_hide_them() {
    let config = StorageConfig {
        timeout: Some(Duration::from_millis(100)),
        retries: Some(10),
        retry_delay: Some(Duration::from_millis(1)),
        ..StorageConfig::default()
    };
    let faults = FaultInjecting::hang(0.3, Duration::from_secs(30)).with_seed(4);
    let storage = Storage::open_with_faults("memory://", &config, faults.clone())
        .await
        .unwrap();
    let started = Instant::now();
    for i in 0..20 {
        storage.put(&format!("k{i}"), pseudo_random(64, i)).await.unwrap();
    }
    for i in 0..20 {
        assert_eq!(storage.get(&format!("k{i}")).await.unwrap(), pseudo_random(64, i));
    }
    assert_eq!(storage.list("").await.unwrap().len(), 20);
    assert!(faults.injected() > 3, "calls were hung: {}", faults.injected());
    // Hung calls were abandoned after the 100 ms timeout, not waited for (30 s each).
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_store_that_always_hangs_times_out_cleanly() {
    let config = StorageConfig {
        timeout: Some(Duration::from_millis(50)),
        retries: Some(3),
        retry_delay: Some(Duration::from_millis(1)),
        ..StorageConfig::default()
    };
    let storage = Storage::open_with_faults("memory://", &config, FaultInjecting::hang(1.0, Duration::from_secs(30)))
        .await
        .unwrap();
    let started = Instant::now();
    assert_transient_naming(storage.head("index/hung").await, "index/hung", "timeout");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn flipped_bits_reach_the_caller_unchanged() {
    let data = pseudo_random(4096, 5);
    let faults = FaultInjecting::flip_bit(1.0);
    let storage = Storage::open_with_faults("memory://", &StorageConfig::default(), faults.clone())
        .await
        .unwrap();
    storage.put("data/ff/blob", data.clone()).await.unwrap();
    let got = storage.get("data/ff/blob").await.unwrap();
    assert_eq!(got.len(), data.len());
    let flipped: u32 = got.iter().zip(data.iter()).map(|(a, b)| (a ^ b).count_ones()).sum();
    assert_eq!(flipped, 1, "exactly one bit differs");
    let part = storage.get_range("data/ff/blob", 100..200).await.unwrap();
    let flipped: u32 = part
        .iter()
        .zip(data[100..200].iter())
        .map(|(a, b)| (a ^ b).count_ones())
        .sum();
    assert_eq!(flipped, 1, "exactly one bit differs in the range");
    assert!(faults.injected() >= 2);
    // Writes, sizes and listings are not corrupted.
    assert_eq!(storage.head("data/ff/blob").await.unwrap().unwrap().size, 4096);

    let clean = Storage::open_with_faults("memory://", &StorageConfig::default(), FaultInjecting::flip_bit(0.0))
        .await
        .unwrap();
    clean.put("k", data.clone()).await.unwrap();
    assert_eq!(clean.get("k").await.unwrap(), data);
}

#[tokio::test]
async fn a_failed_put_publishes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_str().unwrap();
    let config = StorageConfig {
        retries: Some(1),
        retry_delay: Some(Duration::from_millis(1)),
        ..Default::default()
    };
    let faulty = Storage::open_with_faults(root, &config, FaultInjecting::transient(1.0))
        .await
        .unwrap();
    let clean = Storage::open(root, &config).await.unwrap();
    clean.put("data/aa/old", Bytes::from_static(b"old")).await.unwrap();

    assert_put_failed(
        faulty.put("data/aa/new", pseudo_random(1 << 20, 1)).await,
        "data/aa/new",
    );
    assert_put_failed(
        faulty.put("data/aa/old", pseudo_random(1 << 20, 2)).await,
        "data/aa/old",
    );
    assert_eq!(
        clean.head("data/aa/new").await.unwrap(),
        None,
        "a failed put creates nothing"
    );
    assert_eq!(
        clean.get("data/aa/old").await.unwrap(),
        Bytes::from_static(b"old"),
        "a failed put keeps the old object"
    );
    assert!(!dir.path().join("data/aa/new").exists());
    let listed: Vec<String> = clean.list("").await.unwrap().into_iter().map(|m| m.key).collect();
    assert_eq!(listed, ["data/aa/old"]);
}

fn assert_put_failed(result: Result<(), StorageError>, key: &str) {
    let err = result.expect_err("a persistent fault must fail the put");
    assert!(err.is_retryable(), "{err:?}");
    assert_eq!(err.key(), Some(key), "{err:?}");
    assert!(err.to_string().contains("1 retries"), "{err}");
}

/// Runs 4 `head` calls at once against a store where every call takes 200 ms; returns the elapsed time.
async fn four_slow_heads(max_concurrency: usize) -> Duration {
    let config = StorageConfig {
        max_concurrency: Some(max_concurrency),
        ..StorageConfig::default()
    };
    let faults = FaultInjecting::hang(1.0, Duration::from_millis(200));
    let storage = Storage::open_with_faults("memory://", &config, faults).await.unwrap();
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for i in 0..4 {
        let storage = storage.clone();
        set.spawn(async move { storage.head(&format!("k{i}")).await });
    }
    while let Some(done) = set.join_next().await {
        assert_eq!(done.unwrap().unwrap(), None);
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrency_is_bounded() {
    let serial = four_slow_heads(1).await;
    assert!(serial >= Duration::from_millis(800), "one at a time: {serial:?}");
    let parallel = four_slow_heads(4).await;
    assert!(parallel < Duration::from_millis(700), "four at a time: {parallel:?}");
}
