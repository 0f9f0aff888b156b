//! Measures backup, deduplicated re-backup and verified read-back throughput on generated
//! documents in a local directory repository. Run from a release build:
//! `cargo run --release -p tidemark-repo --example throughput -- [MiB]`.

use std::sync::Arc;
use std::time::Instant;

use tidemark_repo::{
    CommitOptions, InitOptions, KdfParams, NamespaceMetadata, NoProgress, Repository, SnapshotReader, SnapshotWriter,
    Storage, StorageConfig,
};

fn document(i: i64, state: &mut u64) -> bson::RawDocumentBuf {
    let payload: String = (0..900)
        .map(|_| {
            *state ^= *state << 13;
            *state ^= *state >> 7;
            *state ^= *state << 17;
            char::from(b'a' + u8::try_from(*state % 26).unwrap_or(0))
        })
        .collect();
    bson::rawdoc! { "_id": i, "customer": format!("c{}", i % 1000), "payload": payload }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mib: u64 = std::env::args().nth(1).map(|s| s.parse()).transpose()?.unwrap_or(256);
    let dir = tempfile::tempdir()?;
    let storage = Storage::open(dir.path().to_str().ok_or("path")?, &StorageConfig::default()).await?;
    let options = InitOptions {
        kdf: KdfParams {
            m_cost: 64,
            t_cost: 1,
            p_cost: 1,
        },
        ..InitOptions::default()
    };
    let repo = Repository::init(storage, Some("pw"), &options).await?;
    let mut state = 0x1234_5678_9abc_def1u64;
    let docs: Vec<_> = (0..i64::try_from(mib * 1024)?)
        .map(|i| document(i, &mut state))
        .collect();
    let bytes: usize = docs.iter().map(|d| d.as_bytes().len()).sum();
    let mb = bytes as f64 / 1e6;
    for round in ["first backup", "unchanged re-backup"] {
        let start = Instant::now();
        let mut writer = SnapshotWriter::new(&repo, Arc::new(NoProgress)).await?;
        let mut ns = writer
            .begin_namespace("bench.docs", NamespaceMetadata::default())
            .await?;
        for d in &docs {
            ns.write_document(d).await?;
        }
        ns.finish().await?;
        let (id, stats) = writer.commit(CommitOptions::default()).await?;
        let secs = start.elapsed().as_secs_f64();
        println!(
            "{round}: {mb:.0} MB in {secs:.2} s = {:.0} MB/s (new {} B, added {} B)",
            mb / secs,
            stats.new_bytes,
            stats.added_bytes
        );
        if round == "unchanged re-backup" {
            let start = Instant::now();
            let reader = SnapshotReader::open(&repo, &id).await?;
            let (member, entry) = reader.find_namespace("bench.docs").ok_or("namespace")?;
            let count = reader.documents(member, entry).verify().await?;
            let secs = start.elapsed().as_secs_f64();
            println!(
                "verified read: {count} documents in {secs:.2} s = {:.0} MB/s",
                mb / secs
            );
        }
    }
    Ok(())
}
