//! The filesystem backend passes the conformance suite and stores each key as the file of the same path.

use bytes::Bytes;
use tidemark_storage::conformance::{AWKWARD_KEYS, pseudo_random, run_backend_suite};
use tidemark_storage::{Storage, StorageConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fs_backend_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("repo");
    let storage = Storage::open(root.to_str().unwrap(), &StorageConfig::default())
        .await
        .unwrap();
    run_backend_suite(&storage).await;
}

#[tokio::test]
async fn file_url_with_escapes_names_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("my backups");
    let url = format!("file://{}", dir.path().join("my%20backups").display());
    let storage = Storage::open(&url, &StorageConfig::default()).await.unwrap();
    storage
        .put("snapshots/one", Bytes::from_static(b"hello"))
        .await
        .unwrap();
    assert_eq!(std::fs::read(root.join("snapshots/one")).unwrap(), b"hello");
}

#[tokio::test]
async fn objects_are_plain_files_and_temporaries_never_show() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(dir.path().to_str().unwrap(), &StorageConfig::default())
        .await
        .unwrap();
    for (i, key) in AWKWARD_KEYS.iter().enumerate() {
        storage.put(key, pseudo_random(i + 10, 9)).await.unwrap();
    }
    storage.put("data/ab/abcdef", pseudo_random(4096, 1)).await.unwrap();
    storage.put("data/ab/abcdef", pseudo_random(100, 2)).await.unwrap();

    // Read back with the standard library: each key is the file at the same relative path.
    for (i, key) in AWKWARD_KEYS.iter().enumerate() {
        assert_eq!(
            std::fs::read(dir.path().join(key)).unwrap(),
            pseudo_random(i + 10, 9),
            "{key:?}"
        );
    }
    assert_eq!(
        std::fs::read(dir.path().join("data/ab/abcdef")).unwrap(),
        pseudo_random(100, 2)
    );

    // Writes go through a temporary file that is renamed into place: nothing is left behind.
    let temp = dir.path().join(".tmp");
    assert!(temp.is_dir(), "writes are staged in {temp:?}");
    assert_eq!(
        std::fs::read_dir(&temp).unwrap().count(),
        0,
        "no temporary file left after completed puts"
    );

    // A stray temporary (as a crash would leave) is not an object.
    std::fs::write(temp.join("abcdef.partial"), b"half").unwrap();
    let listed: Vec<String> = storage.list("").await.unwrap().into_iter().map(|m| m.key).collect();
    assert_eq!(listed.len(), AWKWARD_KEYS.len() + 1);
    assert!(listed.iter().all(|k| !k.starts_with(".tmp")), "{listed:?}");

    // Files written by someone else are objects too.
    std::fs::create_dir_all(dir.path().join("index")).unwrap();
    std::fs::write(dir.path().join("index/external"), b"12345").unwrap();
    let head = storage.head("index/external").await.unwrap().unwrap();
    assert_eq!(head.size, 5);
}

#[tokio::test]
async fn unreadable_root_is_a_clean_error_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let err = Storage::open(file.to_str().unwrap(), &StorageConfig::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not-a-dir"), "{err}");

    let storage = Storage::open(dir.path().to_str().unwrap(), &StorageConfig::default())
        .await
        .unwrap();
    // "not-a-dir" is a file, so nothing can be stored beneath it.
    let err = storage
        .put("not-a-dir/child", Bytes::from_static(b"y"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not-a-dir/child"), "{err}");
    assert!(!err.is_not_found() && !err.is_retryable(), "{err:?}");
}
