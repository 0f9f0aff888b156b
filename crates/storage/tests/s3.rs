//! The S3 backend against a real S3-compatible server (moto, or `TIDEMARK_TEST_S3_ENDPOINT`), checked with
//! an independent client (boto3).

use std::time::Duration;

use bytes::Bytes;
use tidemark_storage::conformance::{AWKWARD_KEYS, pseudo_random, run_backend_suite};
use tidemark_storage::testing::S3TestServer;
use tidemark_storage::{Storage, StorageConfig, StorageError};

fn server() -> S3TestServer {
    S3TestServer::start().unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3_backend_conforms() {
    let server = server();
    let storage = Storage::open(&server.url("repo/main"), &server.config()).await.unwrap();
    assert_eq!(
        storage.url(),
        format!(
            "s3://{}/repo/main?endpoint={}&region=us-east-1",
            server.bucket(),
            server.endpoint()
        )
    );
    run_backend_suite(&storage).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_are_stored_under_their_exact_names() {
    let server = server();
    let storage = Storage::open(&server.url("pfx"), &server.config()).await.unwrap();
    for (i, key) in AWKWARD_KEYS.iter().enumerate() {
        storage.put(key, pseudo_random(i + 1, 7)).await.unwrap();
    }
    // boto3 sees each object under "<prefix>/<key>", with the bytes we stored.
    let listing = server
        .boto3(
            "pages = s3.get_paginator('list_objects_v2').paginate(Bucket=bucket, Prefix='pfx/')\n\
             out = {o['Key']: s3.get_object(Bucket=bucket, Key=o['Key'])['Body'].read().hex() \
                    for p in pages for o in p.get('Contents', [])}\n\
             print(json.dumps(out))",
        )
        .unwrap();
    let seen: std::collections::BTreeMap<String, String> = serde_json::from_str(&listing).unwrap();
    assert_eq!(seen.len(), AWKWARD_KEYS.len(), "{seen:?}");
    for (i, key) in AWKWARD_KEYS.iter().enumerate() {
        let hex: String = pseudo_random(i + 1, 7).iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(seen.get(&format!("pfx/{key}")), Some(&hex), "{key:?} as seen by boto3");
    }

    // An object written by boto3 is read (whole, by range, by head and list) through the storage.
    server
        .boto3("s3.put_object(Bucket=bucket, Key='pfx/snapshots/from boto3+x', Body=b'0123456789')")
        .unwrap();
    assert_eq!(
        storage.get("snapshots/from boto3+x").await.unwrap(),
        Bytes::from_static(b"0123456789")
    );
    assert_eq!(
        storage.get_range("snapshots/from boto3+x", 3..7).await.unwrap(),
        Bytes::from_static(b"3456")
    );
    assert_eq!(storage.head("snapshots/from boto3+x").await.unwrap().unwrap().size, 10);
    let listed: Vec<String> = storage
        .list("snapshots/")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.key)
        .collect();
    assert_eq!(listed, ["snapshots/from boto3+x"]);

    // Deletion through the storage is seen by boto3.
    storage.delete("snapshots/from boto3+x").await.unwrap();
    let count = server
        .boto3("print(s3.list_objects_v2(Bucket=bucket, Prefix='pfx/snapshots/').get('KeyCount'))")
        .unwrap();
    assert_eq!(count.trim(), "0");
}

#[tokio::test]
async fn prefixes_isolate_repositories_in_one_bucket() {
    let server = server();
    let a = Storage::open(&server.url("a"), &server.config()).await.unwrap();
    let ab = Storage::open(&server.url("ab"), &server.config()).await.unwrap();
    let root = Storage::open(&server.url(""), &server.config()).await.unwrap();
    a.put("k", Bytes::from_static(b"in a")).await.unwrap();
    ab.put("k", Bytes::from_static(b"in ab")).await.unwrap();
    assert_eq!(a.get("k").await.unwrap(), Bytes::from_static(b"in a"));
    assert_eq!(ab.get("k").await.unwrap(), Bytes::from_static(b"in ab"));
    assert_eq!(a.list("").await.unwrap().len(), 1, "a/ does not see ab/");
    let all: Vec<String> = root.list("").await.unwrap().into_iter().map(|m| m.key).collect();
    assert_eq!(all, ["a/k", "ab/k"]);
}

#[tokio::test]
async fn credentials_come_from_the_config_or_fail_clearly() {
    let server = server();
    // Missing credentials (and none in the environment of this test run) are a configuration error.
    if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
        let err = Storage::open(&server.url("x"), &StorageConfig::default())
            .await
            .unwrap_err();
        assert!(matches!(err, StorageError::Config { .. }), "{err:?}");
        assert!(err.to_string().contains("AWS_ACCESS_KEY_ID"), "{err}");
    }
    // Credentials from a config file.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("storage.toml");
    let config = server.config();
    std::fs::write(
        &file,
        format!(
            "endpoint = {:?}\naccess_key_id = {:?}\nsecret_access_key = {:?}\nretries = 2\ntimeout = 5\n",
            server.endpoint(),
            config.access_key_id.unwrap(),
            config.secret_access_key.unwrap()
        ),
    )
    .unwrap();
    let loaded = StorageConfig::from_file(&file).unwrap();
    assert_eq!(loaded.timeout, Some(Duration::from_secs(5)));
    let url = format!("s3://{}/from-file", server.bucket());
    let storage = Storage::open(&url, &loaded).await.unwrap();
    assert!(storage.url().contains(server.endpoint()), "{}", storage.url());
    assert!(!storage.url().contains("secret"), "{}", storage.url());
    storage.put("k", Bytes::from_static(b"v")).await.unwrap();
    assert_eq!(storage.get("k").await.unwrap(), Bytes::from_static(b"v"));
}

#[tokio::test]
async fn unreachable_server_is_a_transient_error_naming_the_key() {
    // A port nothing listens on: every attempt is refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = StorageConfig {
        access_key_id: Some("k".into()),
        secret_access_key: Some("s".into()),
        retries: Some(2),
        retry_delay: Some(Duration::from_millis(10)),
        ..StorageConfig::default()
    };
    let url = format!("s3://bucket/prefix?endpoint=http://127.0.0.1:{port}");
    let storage = Storage::open(&url, &config).await.unwrap();
    let err = storage.get("snapshots/abc").await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    assert_eq!(err.key(), Some("snapshots/abc"));
    assert!(
        err.to_string().contains("snapshots/abc") && err.to_string().contains("2 retries"),
        "{err}"
    );
}

#[tokio::test]
async fn missing_bucket_is_not_reported_as_a_missing_object() {
    let server = server();
    let url = format!(
        "s3://no-such-bucket-{}/p?endpoint={}",
        std::process::id(),
        server.endpoint()
    );
    let storage = Storage::open(&url, &server.config()).await.unwrap();
    let err = storage.put("k", Bytes::from_static(b"v")).await.unwrap_err();
    assert!(!err.is_not_found(), "{err:?}");
    assert!(err.to_string().contains("NoSuchBucket"), "{err}");
}
