//! `tidemark repo`: create a backup repository, export a snapshot as a dump, remove stale locks;
//! plus the repository/password options every repository command shares.

use std::path::PathBuf;

use anyhow::{Context, bail};
use tidemark_repo::export::{export_archive, export_directory};
use tidemark_repo::lock::remove_stale_locks;
use tidemark_repo::{Cipher, InitOptions, Repository, SnapshotReader, Storage, StorageConfig};

use crate::CliError;

/// Where a repository is and how to unlock it.
/// `--cipher`: one of [`Cipher::ALL`] by name.
fn parse_cipher(name: &str) -> Result<Cipher, String> {
    Cipher::from_name(name).ok_or_else(|| {
        let names: Vec<&str> = Cipher::ALL.iter().map(|c| c.name()).collect();
        format!("unknown cipher {name:?} (one of: {})", names.join(", "))
    })
}

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct RepoOptions {
    /// Repository URL: `/abs/path`, `file:///abs/path`, `s3://bucket/prefix?...` or `memory://`.
    #[arg(long = "repo", env = "TIDEMARK_REPOSITORY")]
    pub(crate) repo: String,
    /// Read the password from this file (first line). Otherwise `TIDEMARK_PASSWORD`, otherwise a prompt.
    #[arg(long)]
    pub(crate) password_file: Option<PathBuf>,
    /// The repository is not encrypted (for `repo init`: create it without encryption).
    #[arg(long)]
    pub(crate) insecure_no_password: bool,
}

/// Resolves the password: file, then environment variable, then a prompt.
pub(crate) fn password(
    file: Option<&PathBuf>,
    env_var: &str,
    no_password: bool,
    prompt: &str,
) -> anyhow::Result<Option<String>> {
    if no_password {
        if file.is_some() {
            bail!("--insecure-no-password and a password file are mutually exclusive");
        }
        return Ok(None);
    }
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).with_context(|| format!("read password file {}", path.display()))?;
        let line = text.lines().next().unwrap_or_default().to_owned();
        if line.is_empty() {
            bail!("password file {} is empty", path.display());
        }
        return Ok(Some(line));
    }
    if let Ok(pw) = std::env::var(env_var) {
        return Ok(Some(pw));
    }
    let pw = rpassword::prompt_password(prompt).context("read password from the terminal")?;
    if pw.is_empty() {
        bail!("empty password (use --insecure-no-password for a repository without encryption)");
    }
    Ok(Some(pw))
}

/// A current-thread runtime for the async repository library.
pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start async runtime")
}

/// Opens a repository described by the options.
pub(crate) async fn open(options: &RepoOptions) -> anyhow::Result<Repository> {
    let pw = password(
        options.password_file.as_ref(),
        "TIDEMARK_PASSWORD",
        options.insecure_no_password,
        &format!("password for {}: ", options.repo),
    )?;
    let storage = Storage::open(&options.repo, &StorageConfig::default())
        .await
        .with_context(|| format!("open storage {}", options.repo))?;
    Repository::open(storage, pw.as_deref())
        .await
        .with_context(|| format!("open repository {}", options.repo))
}

/// Arguments of `tidemark repo`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(subcommand)]
    command: RepoCommand,
}

#[derive(Debug, clap::Subcommand)]
enum RepoCommand {
    /// Create a new repository (password from --password-file, TIDEMARK_PASSWORD or a prompt).
    Init {
        #[command(flatten)]
        repo: RepoOptions,
        /// Target pack size in MiB (smaller packs: finer-grained prune, more objects).
        #[arg(long, value_name = "MiB", default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=1024))]
        pack_size: u64,
        /// Average size in KiB of the chunks documents are stored in (cut between documents, at
        /// least half of it, at most 32x or 64 KiB); fixed for the repository's life. Smaller chunks
        /// deduplicate scattered document changes better, at more index entries.
        #[arg(long, value_name = "KiB", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=4096))]
        chunk_size: u32,
        /// Cipher of an encrypted repository, fixed for its life: xaes-256-gcm (AES-256-GCM with a
        /// key per object; fastest on CPUs with AES instructions) or xchacha20poly1305 (fastest
        /// without them).
        #[arg(long, default_value = "xaes-256-gcm", value_parser = parse_cipher)]
        cipher: Cipher,
    },
    /// Write a snapshot as a mongodump directory (or archive with --archive) that mongorestore reads.
    Export {
        #[command(flatten)]
        repo: RepoOptions,
        /// Snapshot id, unique id prefix, or `latest`.
        snapshot: String,
        /// Output directory.
        #[arg(long, required_unless_present = "archive", conflicts_with = "archive")]
        out: Option<PathBuf>,
        /// Output archive file instead of a directory.
        #[arg(long)]
        archive: Option<PathBuf>,
        /// Gzip the output files (directory mode).
        #[arg(long)]
        gzip: bool,
        /// Member (replica set / shard) to export when the snapshot holds several.
        #[arg(long)]
        member: Option<String>,
    },
    /// Remove stale locks (left by crashed processes); with --all, every lock.
    Unlock {
        #[command(flatten)]
        repo: RepoOptions,
        /// Remove all locks, not only stale ones.
        #[arg(long)]
        all: bool,
    },
}

pub(crate) fn run(args: &Args) -> Result<(), CliError> {
    runtime()?.block_on(async {
        match &args.command {
            RepoCommand::Init {
                repo,
                pack_size,
                chunk_size,
                cipher,
            } => {
                let pw = password(
                    repo.password_file.as_ref(),
                    "TIDEMARK_PASSWORD",
                    repo.insecure_no_password,
                    "password for the new repository: ",
                )?;
                if pw.is_some() && repo.password_file.is_none() && std::env::var("TIDEMARK_PASSWORD").is_err() {
                    let again = rpassword::prompt_password("repeat the password: ").context("read password")?;
                    if Some(again) != pw {
                        return Err(CliError::usage("the passwords do not match"));
                    }
                }
                let storage = Storage::open(&repo.repo, &StorageConfig::default())
                    .await
                    .with_context(|| format!("open storage {}", repo.repo))?;
                let avg = chunk_size * 1024;
                let options = InitOptions {
                    pack_size: pack_size * 1024 * 1024,
                    document_chunker: tidemark_repo::ChunkerParams {
                        min_size: (avg / 2).min(1024 * 1024),
                        avg_size: avg,
                        max_size: avg.saturating_mul(32).clamp(64 * 1024, 16 * 1024 * 1024),
                    },
                    cipher: *cipher,
                    ..InitOptions::default()
                };
                let created = Repository::init(storage, pw.as_deref(), &options)
                    .await
                    .with_context(|| format!("create repository {}", repo.repo))?;
                let mode = if created.is_encrypted() {
                    format!("encrypted with {}", created.config().encryption)
                } else {
                    "NOT encrypted".to_owned()
                };
                println!("created repository {} at {} ({mode})", created.config().id, repo.repo);
                Ok(())
            }
            RepoCommand::Export {
                repo,
                snapshot,
                out,
                archive,
                gzip,
                member,
            } => {
                let opened = open(repo).await?;
                let id = opened.find_snapshot(snapshot).await?;
                let reader = SnapshotReader::open(&opened, &id).await?;
                let stats = if let Some(path) = archive {
                    let file = std::fs::File::create(path).with_context(|| format!("create {}", path.display()))?;
                    let (file, stats) =
                        export_archive(&reader, member.as_deref(), std::io::BufWriter::new(file)).await?;
                    file.into_inner()
                        .map_err(|e| e.into_error())
                        .with_context(|| format!("write {}", path.display()))?;
                    stats
                } else if let Some(dir) = out {
                    export_directory(&reader, member.as_deref(), dir, *gzip).await?
                } else {
                    return Err(CliError::usage("give --out DIR or --archive FILE"));
                };
                println!(
                    "exported snapshot {id}: {} namespaces, {} documents",
                    stats.namespaces, stats.documents
                );
                Ok(())
            }
            RepoCommand::Unlock { repo, all } => {
                let opened = open(repo).await?;
                let removed = remove_stale_locks(opened.storage(), *all).await?;
                println!("removed {} lock(s)", removed.len());
                Ok(())
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use clap::Parser;

    use crate::{Cli, CliError, Command};

    fn tidemark(args: &[&str]) -> Result<(), CliError> {
        let cli = Cli::try_parse_from(std::iter::once("tidemark").chain(args.iter().copied()))
            .map_err(|e| CliError::usage(e.to_string()))?;
        match cli.command {
            Command::Repo(a) => super::run(&a),
            Command::Backup(a) => crate::backup::run(&a),
            Command::Snapshots(a) => crate::snapshots::run(&a),
            Command::Check(a) => crate::check::run(&a),
            Command::Forget(a) => crate::forget::run(&a),
            Command::Copy(a) => crate::copy::run(&a),
            other => panic!("not a repository command: {other:?}"),
        }
    }

    fn fixture(name: &str) -> String {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/fixtures/mongo-tools/mongorestore/testdata")
            .join(name)
            .display()
            .to_string()
    }

    /// Backs up a running tidemark-server seeded by pymongo (an independent client), then checks
    /// the exported dump with pymongo's BSON decoder.
    #[test]
    fn backup_from_a_server() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let server = runtime.block_on(tidemark_server::testing::start_test_server(Default::default()));
        let uri = format!("{}/", server.uri());
        let seed = "import pymongo,sys\nc=pymongo.MongoClient(sys.argv[1])\n\
                    c.shop.orders.insert_many([{'_id': i, 'item': 'x' * (i % 50)} for i in range(500)])\n\
                    c.shop.orders.create_index('item')\nprint('ok')";
        let out = std::process::Command::new("python3")
            .args(["-c", seed, &uri])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "s3cret").unwrap();
        let (pw, repo) = (pw.to_str().unwrap(), dir.path().join("repo").display().to_string());
        tidemark(&["repo", "init", "--repo", &repo, "--password-file", pw]).unwrap();
        tidemark(&[
            "backup",
            "--repo",
            &repo,
            "--password-file",
            pw,
            "--uri",
            &uri,
            "--label",
            "shop",
        ])
        .unwrap();
        let out = dir.path().join("export");
        tidemark(&[
            "repo",
            "export",
            "latest",
            "--repo",
            &repo,
            "--password-file",
            pw,
            "--out",
            out.to_str().unwrap(),
        ])
        .unwrap();
        let check = "import bson,json,sys\nds=bson.decode_all(open(sys.argv[1]+'/shop/orders.bson','rb').read())\n\
                     m=json.load(open(sys.argv[1]+'/shop/orders.metadata.json'))\n\
                     print(len(ds), sorted(d['_id'] for d in ds)==list(range(500)), sorted(i['name'] for i in m['indexes']))";
        let got = std::process::Command::new("python3")
            .args(["-c", check, out.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(got.status.success(), "{}", String::from_utf8_lossy(&got.stderr));
        assert_eq!(
            String::from_utf8_lossy(&got.stdout).trim(),
            "500 True ['_id_', 'item_1']"
        );
        runtime.block_on(server.shutdown());
    }

    /// `--oplog` against a replica set: the snapshot records the oplog window and takes its end as
    /// the consistency timestamp.
    #[test]
    fn backup_with_oplog_records_the_window() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let config = tidemark_server::ServerConfig {
            repl_set: Some("rs0".to_owned()),
            ..Default::default()
        };
        let server = runtime.block_on(tidemark_server::testing::start_test_server(config));
        let uri = format!("{}/", server.uri());
        let seed = "import pymongo,sys\nc=pymongo.MongoClient(sys.argv[1], directConnection=True)\n\
                    c.admin.command('replSetInitiate')\nimport time\n\
                    for _ in range(100):\n    if c.admin.command('hello').get('isWritablePrimary'): break\n    time.sleep(0.05)\n\
                    c.app.things.insert_many([{'_id': i} for i in range(50)])\nprint('ok')";
        let out = std::process::Command::new("python3")
            .args(["-c", seed, &uri])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo").display().to_string();
        tidemark(&["repo", "init", "--repo", &repo, "--insecure-no-password"]).unwrap();
        let direct = format!("{uri}?directConnection=true");
        tidemark(&[
            "backup",
            "--repo",
            &repo,
            "--insecure-no-password",
            "--uri",
            &direct,
            "--oplog",
            "--replica-set",
            "rs0",
        ])
        .unwrap();
        runtime.block_on(async {
            let storage = tidemark_repo::Storage::open(&repo, &Default::default()).await.unwrap();
            let opened = tidemark_repo::Repository::open(storage, None).await.unwrap();
            let snaps = opened.snapshots().await.unwrap();
            let snap = &snaps[0].1;
            let member = &snap.members[0];
            assert_eq!(member.name, "rs0");
            let ns = member.namespaces.iter().find(|n| n.name() == "app.things").unwrap();
            assert_eq!(ns.data.documents, 50);
            let oplog = member.oplog.as_ref().expect("oplog captured");
            // mongodump's --oplog keeps at least the entry at its start timestamp.
            let window = oplog.window.expect("oplog window");
            assert!(oplog.data.documents >= 1 && window.first <= window.last);
            assert_eq!(snap.consistency_ts, Some(window.last));
        });
        runtime.block_on(server.shutdown());
    }

    #[test]
    fn repository_commands_end_to_end() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "s3cret\n").unwrap();
        let pw = pw.to_str().unwrap();
        let repo = dir.path().join("repo").display().to_string();
        let copy = dir.path().join("copy").display().to_string();
        let with = |extra: &[&str]| -> Vec<String> {
            let mut v: Vec<String> = extra.iter().map(|s| (*s).to_owned()).collect();
            v.extend([
                "--repo".to_owned(),
                repo.clone(),
                "--password-file".to_owned(),
                pw.to_owned(),
            ]);
            v
        };
        let run = |v: Vec<String>| tidemark(&v.iter().map(String::as_str).collect::<Vec<_>>());

        run(with(&["repo", "init"])).unwrap();
        run(with(&["backup", "--from-dump", &fixture("oplogdump"), "--tag", "t1"])).unwrap();
        run(with(&["backup", "--from-dump", &fixture("oplogdump")])).unwrap();
        run(with(&["snapshots", "--json"])).unwrap();
        run(with(&["check", "--read-data"])).unwrap();
        run(with(&["check", "--read-data-subset", "1/3"])).unwrap();
        // Invalid subsets and missing rules are usage errors.
        assert!(matches!(
            run(with(&["check", "--read-data-subset", "4/3"])).unwrap_err().failure,
            crate::Failure::Usage
        ));
        assert!(matches!(
            run(with(&["forget"])).unwrap_err().failure,
            crate::Failure::Usage
        ));
        run(with(&["forget", "--keep-last", "1", "--prune"])).unwrap();

        let out = dir.path().join("export");
        run(with(&["repo", "export", "latest", "--out", out.to_str().unwrap()])).unwrap();
        assert_eq!(
            std::fs::read(out.join("db1/c1.bson")).unwrap(),
            std::fs::read(Path::new(&fixture("oplogdump")).join("db1/c1.bson")).unwrap()
        );

        // A real mongodump archive (FORMATS.md: test.bar with one document, admin.system.version).
        run(with(&[
            "backup",
            "--from-archive",
            &fixture("test.bar.archive"),
            "--label",
            "archive",
        ]))
        .unwrap();
        let out = dir.path().join("export-archive");
        run(with(&["repo", "export", "latest", "--out", out.to_str().unwrap()])).unwrap();
        let bar = std::fs::read(out.join("test/bar.bson")).unwrap();
        let doc = bson::RawDocument::from_bytes(&bar).unwrap();
        assert_eq!((doc.as_bytes().len(), doc.get_str("foo").unwrap()), (bar.len(), "bar"));
        assert!(out.join("admin/system.version.bson").exists());

        // Wrong password: a clear failure.
        let bad = dir.path().join("bad");
        std::fs::write(&bad, "nope\n").unwrap();
        let err = tidemark(&["snapshots", "--repo", &repo, "--password-file", bad.to_str().unwrap()]).unwrap_err();
        assert!(format!("{:#}", err.error).contains("wrong password"), "{:#}", err.error);

        // Copy into an unencrypted repository.
        tidemark(&["repo", "init", "--repo", &copy, "--insecure-no-password"]).unwrap();
        tidemark(&[
            "copy",
            "--from",
            &repo,
            "--from-password-file",
            pw,
            "--to",
            &copy,
            "--insecure-no-password",
        ])
        .unwrap();
        tidemark(&["check", "--repo", &copy, "--insecure-no-password", "--read-data"]).unwrap();
    }
}
