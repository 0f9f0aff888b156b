//! The in-memory backend passes the conformance suite.

use tidemark_storage::conformance::run_backend_suite;
use tidemark_storage::{Storage, StorageConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_backend_conforms() {
    let storage = Storage::open("memory://", &StorageConfig::default()).await.unwrap();
    assert_eq!(storage.url(), "memory://");
    run_backend_suite(&storage).await;
}

#[tokio::test]
async fn memory_stores_are_independent_but_clones_share() {
    let a = Storage::open("memory://", &StorageConfig::default()).await.unwrap();
    let b = Storage::open("memory://", &StorageConfig::default()).await.unwrap();
    a.put("k", bytes::Bytes::from_static(b"v")).await.unwrap();
    assert!(b.get("k").await.unwrap_err().is_not_found());
    assert_eq!(a.clone().get("k").await.unwrap(), bytes::Bytes::from_static(b"v"));
}
