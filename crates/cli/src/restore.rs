//! `tidemark restore`: a drop-in for `mongorestore`.
//!
//! Accepts mongorestore's option spellings (and kebab-case aliases), validates them with
//! mongorestore's messages, plans the restore from local input only (printed with `--dryRun`),
//! runs it, and ends with mongorestore's result line
//! "N document(s) restored successfully. M document(s) failed to restore." on stderr (or a JSON
//! summary on stdout with `--json`). Any error makes the command fail after that line.

use std::{path::PathBuf, sync::Arc};

use tidemark_core::restore::{RestoreOptions, RestoreSource, parse_write_concern, plan_restore, run_restore};

use crate::{
    CliError,
    dump::{Bars, ConnArgs, OutputArgs, check_dbpath_conflicts, runtime},
};

/// Arguments of `tidemark restore`.
#[derive(Debug, clap::Args)]
#[command(disable_help_flag = true)]
#[allow(clippy::struct_excessive_bools)]
pub(crate) struct Args {
    /// Print help.
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
    /// `[<connection-string>] [<target>]`: a dump directory, a `.bson` file, or `-` for stdin.
    #[arg(value_name = "URI|TARGET", num_args = 0..=2)]
    positionals: Vec<String>,
    #[command(flatten)]
    conn: ConnArgs,
    #[command(flatten)]
    output: OutputArgs,
    /// Restore into a `tidemark-server` data directory directly (created if missing), with no server
    /// running on it; every batch is journaled.
    #[arg(long, value_name = "DIR")]
    dbpath: Option<PathBuf>,
    /// Dump directory (same as the positional target).
    #[arg(long = "dir")]
    dir: Option<String>,
    /// Read an archive from FILE (`--archive=FILE`), or from stdin when no value is given.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "-", value_name = "FILE")]
    archive: Option<String>,
    /// Inputs are gzip-compressed.
    #[arg(long)]
    gzip: bool,
    /// Database to restore into (with a directory: only that database).
    #[arg(short = 'd', long = "db")]
    db: Option<String>,
    /// Collection to restore into (with a `.bson` file).
    #[arg(short = 'c', long = "collection")]
    collection: Option<String>,
    /// Restore only matching namespaces (repeatable; `*` wildcards).
    #[arg(long = "nsInclude", alias = "ns-include", value_name = "PATTERN")]
    ns_include: Vec<String>,
    /// Skip matching namespaces (repeatable).
    #[arg(long = "nsExclude", alias = "ns-exclude", value_name = "PATTERN")]
    ns_exclude: Vec<String>,
    /// Rename: source pattern (paired with --nsTo).
    #[arg(long = "nsFrom", alias = "ns-from", value_name = "PATTERN")]
    ns_from: Vec<String>,
    /// Rename: target pattern (paired with --nsFrom).
    #[arg(long = "nsTo", alias = "ns-to", value_name = "PATTERN")]
    ns_to: Vec<String>,
    /// Deprecated: skip this collection (becomes --nsExclude "*.NAME").
    #[arg(long = "excludeCollection", alias = "exclude-collection", value_name = "NAME")]
    exclude_collection: Vec<String>,
    /// Deprecated: skip collections with this prefix (becomes --nsExclude "*.PREFIX*").
    #[arg(
        long = "excludeCollectionsWithPrefix",
        alias = "exclude-collections-with-prefix",
        value_name = "PREFIX"
    )]
    exclude_collections_with_prefix: Vec<String>,
    /// Drop each collection before restoring it.
    #[arg(long)]
    drop: bool,
    /// Replay the dump's oplog after the data.
    #[arg(long = "oplogReplay", alias = "oplog-replay")]
    oplog_replay: bool,
    /// Replay only entries before `<seconds>[:<increment>]`.
    #[arg(long = "oplogLimit", alias = "oplog-limit", value_name = "TS")]
    oplog_limit: Option<String>,
    /// Oplog file to replay.
    #[arg(long = "oplogFile", alias = "oplog-file", value_name = "FILE")]
    oplog_file: Option<PathBuf>,
    /// Oplog replay workers: entries of different documents are applied in parallel, in batches,
    /// and commands alone (default: the available cores, at most 8).
    #[arg(
        long = "oplogReplayWorkers",
        alias = "oplog-replay-workers",
        value_name = "N",
        allow_negative_numbers = true
    )]
    oplog_replay_workers: Option<i64>,
    /// Validate every document before inserting it.
    #[arg(long)]
    objcheck: bool,
    /// Restore only documents matching this query (Extended JSON).
    #[arg(long)]
    filter: Option<String>,
    /// Do not build indexes.
    #[arg(long = "noIndexRestore", alias = "no-index-restore")]
    no_index_restore: bool,
    /// Create collections without their options.
    #[arg(long = "noOptionsRestore", alias = "no-options-restore")]
    no_options_restore: bool,
    /// Keep the index version `v` of the dump.
    #[arg(long = "keepIndexVersion", alias = "keep-index-version")]
    keep_index_version: bool,
    /// Create collections with the dumped UUIDs (needs --drop).
    #[arg(long = "preserveUUID", alias = "preserve-uuid")]
    preserve_uuid: bool,
    /// Insert in dump order, one worker, stop at the first error.
    #[arg(long = "maintainInsertionOrder", alias = "maintain-insertion-order")]
    maintain_insertion_order: bool,
    /// Stop at the first duplicate-key or validation error.
    #[arg(long = "stopOnError", alias = "stop-on-error")]
    stop_on_error: bool,
    /// Bypass document validation on inserts and oplog replay.
    #[arg(long = "bypassDocumentValidation", alias = "bypass-document-validation")]
    bypass_document_validation: bool,
    /// Write concern: `majority`, a number, a tag, or JSON `{w, j, wtimeout}`.
    #[arg(long = "writeConcern", alias = "write-concern", value_name = "WC")]
    write_concern: Option<String>,
    /// With --db: restore that database's users and roles.
    #[arg(long = "restoreDbUsersAndRoles", alias = "restore-db-users-and-roles")]
    restore_db_users_and_roles: bool,
    /// Collections restored at once.
    #[arg(
        short = 'j',
        long = "numParallelCollections",
        alias = "num-parallel-collections",
        default_value_t = 4,
        allow_negative_numbers = true
    )]
    num_parallel_collections: i64,
    /// Insertion workers per collection.
    #[arg(
        long = "numInsertionWorkersPerCollection",
        alias = "num-insertion-workers-per-collection",
        default_value_t = 1,
        allow_negative_numbers = true
    )]
    num_insertion_workers_per_collection: i64,
    /// Turn `hashed` on dotted fields into ascending indexes.
    #[arg(long = "fixDottedHashIndex", alias = "fix-dotted-hash-index")]
    fix_dotted_hash_index: bool,
    /// Normalise legacy index key values and drop duplicate indexes.
    #[arg(long = "convertLegacyIndexes", alias = "convert-legacy-indexes")]
    convert_legacy_indexes: bool,
    /// Documents per insert batch.
    #[arg(long = "batchSize", alias = "batch-size", default_value_t = 1000, hide = true)]
    batch_size: usize,
    #[command(flatten)]
    repository: crate::restore_repo::RepoSource,
}

fn is_uri(s: &str) -> bool {
    s.starts_with("mongodb://") || s.starts_with("mongodb+srv://")
}

fn invalid_name(kind: &str, name: &str, why: &str) -> CliError {
    CliError::usage(format!("invalid {kind} name: {name}: {why}"))
}

/// mongorestore's option validation (`ParseAndValidateOptions`), with its messages; returns the
/// positional URI and target.
fn validate(args: &Args) -> Result<(Option<String>, Option<String>), CliError> {
    let mut uri = None;
    let mut target = None;
    for p in &args.positionals {
        if is_uri(p) && uri.is_none() {
            uri = Some(p.clone());
        } else if target.is_none() {
            target = Some(p.clone());
        } else {
            return Err(CliError::usage("too many positional arguments"));
        }
    }
    if target.is_some() && args.dir.is_some() {
        return Err(CliError::usage("cannot use both --dir and a positional target"));
    }
    let target = target.or_else(|| args.dir.clone());
    let usage = |m: &str| Err(CliError::usage(m));
    if args.collection.is_some() && args.db.is_none() {
        return usage("cannot restore a collection without a specified database");
    }
    if let Some(db) = &args.db {
        tidemark_format::naming::validate_db_name(db).map_err(|e| invalid_name("db", db, &e.to_string()))?;
    }
    if let Some(c) = &args.collection {
        tidemark_format::naming::validate_collection_grammar(c)
            .map_err(|e| invalid_name("collection", c, &e.to_string()))?;
    }
    if args.restore_db_users_and_roles && args.db.is_none() {
        return usage("cannot use --restoreDbUsersAndRoles without a specified database");
    }
    if args.restore_db_users_and_roles && args.db.as_deref() == Some("admin") {
        return usage("cannot use --restoreDbUsersAndRoles with the admin database");
    }
    if args.oplog_limit.is_some() && !args.oplog_replay {
        return usage("cannot use --oplogLimit without --oplogReplay enabled");
    }
    if let Some(limit) = &args.oplog_limit {
        tidemark_oplog::parse_oplog_limit(limit).map_err(|e| CliError::usage(e.to_string()))?;
    }
    if args.oplog_file.is_some() && !args.oplog_replay {
        return usage("cannot use --oplogFile without --oplogReplay enabled");
    }
    if args.oplog_file.is_some() && args.archive.is_some() {
        return usage("cannot use --oplogFile with --archive specified");
    }
    if args.oplog_replay && (!args.ns_include.is_empty() || args.db.is_some()) {
        return usage("cannot use --oplogReplay with includes specified");
    }
    if args.oplog_replay
        && (!args.ns_exclude.is_empty()
            || !args.exclude_collection.is_empty()
            || !args.exclude_collections_with_prefix.is_empty())
    {
        return usage("cannot use --oplogReplay with excludes specified");
    }
    if args.oplog_replay && !args.ns_from.is_empty() {
        return usage("cannot use --oplogReplay with namespace renames specified");
    }
    if args.collection.is_some() && !args.exclude_collection.is_empty() {
        return usage("--collection is not allowed when --excludeCollection is specified");
    }
    if args.collection.is_some() && !args.exclude_collections_with_prefix.is_empty() {
        return usage("--collection is not allowed when --excludeCollectionsWithPrefix is specified");
    }
    if args.ns_from.len() != args.ns_to.len() {
        return usage("--nsFrom and --nsTo arguments must be specified an equal number of times");
    }
    if args.num_insertion_workers_per_collection < 0 {
        return usage("cannot specify a negative number of insertion workers per collection");
    }
    if args.preserve_uuid && !args.drop {
        return usage("cannot specify --preserveUUID without --drop");
    }
    if target.as_deref() == Some("-") && args.archive.is_some() {
        return usage("cannot restore from \"-\" when --archive is specified");
    }
    if target.as_deref() == Some("-") && args.collection.is_none() {
        return usage("cannot restore from stdin without a specified collection");
    }
    if args.num_parallel_collections <= 0 {
        return usage("numParallelCollections must be positive");
    }
    if args.oplog_replay_workers.is_some_and(|n| n <= 0) {
        return usage("oplogReplayWorkers must be positive");
    }
    if args.repository.at.is_some() {
        if args.oplog_replay || args.oplog_limit.is_some() || args.oplog_file.is_some() {
            return usage(
                "--at replays the oplog up to the point itself: remove --oplogReplay, --oplogLimit and --oplogFile",
            );
        }
        if target.is_some() || args.archive.is_some() || args.repository.out.is_some() || args.dbpath.is_some() {
            return usage(
                "--at restores into a server: give a connection string, not a target, --archive, --out or --dbpath",
            );
        }
    }
    Ok((uri, target))
}

fn parse_filter(text: &str) -> Result<bson::Document, CliError> {
    let json: serde_json::Value =
        serde_json::from_str(text).map_err(|e| CliError::usage(format!("error parsing --filter: {e}")))?;
    match tidemark_format::metadata::ext_value(json) {
        Ok(bson::Bson::Document(d)) => Ok(d),
        Ok(_) => Err(CliError::usage("error parsing --filter: not a JSON object")),
        Err(e) => Err(CliError::usage(format!("error parsing --filter: {e}"))),
    }
}

fn options(args: &Args, target: Option<String>) -> Result<RestoreOptions, CliError> {
    let mut o = RestoreOptions::default();
    o.source = match (&args.archive, target.as_deref()) {
        (Some(a), _) if a == "-" => RestoreSource::Archive(None),
        (Some(a), _) => RestoreSource::Archive(Some(PathBuf::from(a))),
        (None, Some("-")) => RestoreSource::Stdin,
        (None, t) => RestoreSource::Directory(PathBuf::from(t.unwrap_or("dump"))),
    };
    o.gzip = args.gzip;
    o.db.clone_from(&args.db);
    o.collection.clone_from(&args.collection);
    o.ns_include.clone_from(&args.ns_include);
    o.ns_exclude.clone_from(&args.ns_exclude);
    let escape = |s: &str| s.replace('\\', "\\\\").replace('*', "\\*");
    o.ns_exclude
        .extend(args.exclude_collection.iter().map(|c| format!("*.{}", escape(c))));
    o.ns_exclude.extend(
        args.exclude_collections_with_prefix
            .iter()
            .map(|c| format!("*.{}*", escape(c))),
    );
    o.ns_from.clone_from(&args.ns_from);
    o.ns_to.clone_from(&args.ns_to);
    o.drop = args.drop;
    o.oplog_replay = args.oplog_replay;
    o.oplog_limit = args
        .oplog_limit
        .as_deref()
        .map(tidemark_oplog::parse_oplog_limit)
        .transpose()
        .map_err(|e| CliError::usage(e.to_string()))?;
    o.oplog_file.clone_from(&args.oplog_file);
    if let Some(n) = args.oplog_replay_workers {
        o.oplog_replay_workers =
            usize::try_from(n).map_err(|_| CliError::usage("oplogReplayWorkers must be positive"))?;
    }
    o.objcheck = args.objcheck;
    o.filter = args.filter.as_deref().map(parse_filter).transpose()?;
    o.no_index_restore = args.no_index_restore;
    o.no_options_restore = args.no_options_restore;
    o.keep_index_version = args.keep_index_version;
    o.preserve_uuid = args.preserve_uuid;
    o.maintain_insertion_order = args.maintain_insertion_order;
    o.stop_on_error = args.stop_on_error || args.maintain_insertion_order;
    o.bypass_document_validation = args.bypass_document_validation;
    o.write_concern = args
        .write_concern
        .as_deref()
        .map(parse_write_concern)
        .transpose()
        .map_err(|e| CliError::usage(e.to_string()))?;
    o.restore_db_users_and_roles = args.restore_db_users_and_roles;
    o.parallel = usize::try_from(args.num_parallel_collections).unwrap_or(1);
    o.insertion_workers = usize::try_from(args.num_insertion_workers_per_collection)
        .unwrap_or(1)
        .max(1);
    // With -c, -j N > 1 and one worker, mongorestore uses N insertion workers instead.
    if args.collection.is_some() && o.parallel > 1 && o.insertion_workers == 1 {
        o.insertion_workers = o.parallel;
    }
    o.fix_dotted_hash_index = args.fix_dotted_hash_index;
    o.convert_legacy_indexes = args.convert_legacy_indexes;
    o.batch_size = args.batch_size.max(1);
    Ok(o)
}

/// "context: cause: cause ..." as the CLI prints errors.
pub(crate) fn error_chain(error: &tidemark_core::Error) -> String {
    let mut out = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(e) = source {
        out.push_str(": ");
        out.push_str(&e.to_string());
        source = e.source();
    }
    out
}

pub(crate) fn run(args: &Args) -> Result<(), CliError> {
    let (uri, target) = validate(args)?;
    if args.dbpath.is_some() {
        check_dbpath_conflicts(&args.conn, uri.as_deref())?;
    }
    let mut options = options(args, target.clone())?;
    if let Some(at) = &args.repository.at {
        let conn = args.conn.to_options(uri.as_deref())?;
        return crate::restore_pitr::run(at, &args.repository, &conn, &options, &args.output);
    }
    let from_repo = crate::restore_repo::start(
        &args.repository,
        args.archive.as_deref(),
        args.gzip,
        target.as_deref(),
        &mut options,
    )?;
    if matches!(from_repo, crate::restore_repo::RepoRestore::Exported) {
        return Ok(());
    }
    let plan = plan_restore(&options)?;
    if args.output.dry_run {
        eprint!("{plan}");
        eprintln!("dry run completed");
        return Ok(());
    }
    if !args.output.quiet && args.output.verbose > 0 {
        for (what, why) in &plan.skipped {
            eprintln!("{what}: {why}");
        }
    }
    let conn = match args.dbpath {
        Some(_) => tidemark_core::connection::ConnectionOptions::default(),
        None => args.conn.to_options(uri.as_deref())?,
    };
    let result = runtime()?.block_on(async {
        let offline = match &args.dbpath {
            Some(dbpath) => Some(tidemark_core::offline::OfflineServer::open_for_restore(dbpath, true).await?),
            None => None,
        };
        let conn = offline.as_ref().map_or(conn, |s| s.connection_options());
        let result = restore_with(args, &conn, plan, &options).await;
        if let Some(server) = offline {
            server.close().await?;
        }
        result
    });
    // A snapshot that could not be read explains a failed restore better than the engine's error.
    match from_repo.finish() {
        Some(e) => Err(e),
        None => result,
    }
}

async fn restore_with(
    args: &Args,
    conn: &tidemark_core::connection::ConnectionOptions,
    plan: tidemark_core::restore::RestorePlan,
    options: &RestoreOptions,
) -> Result<(), CliError> {
    let quiet = args.output.quiet;
    {
        let client = tidemark_core::connection::connect(conn, "tidemark-restore").await?;
        let bars = Arc::new(Bars::new(quiet, None, "restored"));
        let result = run_restore(&client, plan, options, bars.clone()).await;
        bars.done();
        let (summary, error) = match result {
            Ok(s) => (s, None),
            Err(failure) => (failure.summary, Some(failure.error)),
        };
        if args.output.json {
            let namespaces: Vec<_> = summary
                .namespaces
                .iter()
                .map(|(ns, ok, failed)| serde_json::json!({"namespace": ns, "restored": ok, "failed": failed}))
                .collect();
            let json = serde_json::json!({
                "namespaces": namespaces, "restored": summary.successes, "failed": summary.failures,
                "oplogEntries": summary.oplog_entries, "error": error.as_ref().map(error_chain),
            });
            println!("{json}");
        } else if !quiet {
            for (ns, ok, failed) in &summary.namespaces {
                eprintln!("{ns}: {ok} document(s) restored, {failed} failed");
            }
        }
        eprintln!("{}", summary.result_line());
        match error {
            Some(e) => Err(CliError::from(e)),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: Args,
    }

    fn check(argv: &[&str]) -> Result<(), String> {
        let mut full = vec!["restore"];
        full.extend_from_slice(argv);
        let w = Wrapper::try_parse_from(full).map_err(|e| e.to_string())?;
        validate(&w.args).map(|_| ()).map_err(|e| e.error.to_string())
    }

    #[test]
    fn point_in_time_options() {
        let at = ["--repo", "r", "--at", "1,1"];
        let with = |extra: &[&str]| {
            let mut argv = at.to_vec();
            argv.extend_from_slice(extra);
            check(&argv)
        };
        assert_eq!(with(&[]), Ok(()));
        assert_eq!(
            with(&["--oplogReplay"]).unwrap_err(),
            "--at replays the oplog up to the point itself: remove --oplogReplay, --oplogLimit and --oplogFile"
        );
        for extra in [&["dump/"][..], &["--archive=a"], &["--out", "d"], &["--dbpath", "d"]] {
            assert_eq!(
                with(extra).unwrap_err(),
                "--at restores into a server: give a connection string, not a target, --archive, --out or --dbpath",
                "{extra:?}"
            );
        }
        assert_eq!(
            with(&[
                "mongodb://h:1",
                "--nsInclude",
                "a.*",
                "--nsFrom",
                "a.*",
                "--nsTo",
                "b.*"
            ]),
            Ok(())
        );
        assert!(
            with(&["--snapshot", "latest"])
                .unwrap_err()
                .contains("cannot be used with")
        );
        assert!(check(&["--at", "1,1"]).unwrap_err().contains("--repo"));
    }

    #[test]
    fn mongorestore_messages() {
        let cases: &[(&[&str], &str)] = &[
            (&["-c", "x"], "cannot restore a collection without a specified database"),
            (
                &["--restoreDbUsersAndRoles"],
                "cannot use --restoreDbUsersAndRoles without a specified database",
            ),
            (
                &["-d", "admin", "--restoreDbUsersAndRoles"],
                "cannot use --restoreDbUsersAndRoles with the admin database",
            ),
            (
                &["--oplogLimit", "1"],
                "cannot use --oplogLimit without --oplogReplay enabled",
            ),
            (
                &["--oplogFile", "f"],
                "cannot use --oplogFile without --oplogReplay enabled",
            ),
            (
                &["--oplogReplay", "--oplogFile", "f", "--archive=a"],
                "cannot use --oplogFile with --archive specified",
            ),
            (
                &["--oplogReplay", "--nsInclude", "a.b"],
                "cannot use --oplogReplay with includes specified",
            ),
            (
                &["--oplogReplay", "-d", "a"],
                "cannot use --oplogReplay with includes specified",
            ),
            (
                &["--oplogReplay", "--nsExclude", "a.b"],
                "cannot use --oplogReplay with excludes specified",
            ),
            (
                &["--oplogReplay", "--nsFrom", "a.b", "--nsTo", "c.d"],
                "cannot use --oplogReplay with namespace renames specified",
            ),
            (
                &["-d", "a", "-c", "b", "--excludeCollection", "c"],
                "--collection is not allowed when --excludeCollection is specified",
            ),
            (
                &["--nsFrom", "a.b"],
                "--nsFrom and --nsTo arguments must be specified an equal number of times",
            ),
            (
                &["--numInsertionWorkersPerCollection", "-1"],
                "cannot specify a negative number of insertion workers per collection",
            ),
            (&["--preserveUUID"], "cannot specify --preserveUUID without --drop"),
            (
                &["--archive=x", "-"],
                "cannot restore from \"-\" when --archive is specified",
            ),
            (&["-"], "cannot restore from stdin without a specified collection"),
        ];
        for (argv, message) in cases {
            assert_eq!(check(argv), Err((*message).to_owned()), "{argv:?}");
        }
        assert!(
            check(&["--oplogReplay", "--oplogLimit", "cats"])
                .unwrap_err()
                .starts_with("error parsing timestamp argument to --oplogLimit: ")
        );
        assert!(check(&["-d", "a.b"]).unwrap_err().starts_with("invalid db name: "));
        assert!(
            check(&["-d", "a", "-c", "b$c"])
                .unwrap_err()
                .starts_with("invalid collection name: ")
        );
        assert_eq!(check(&["mongodb://localhost/", "dump", "--ns-include", "a.*"]), Ok(()));
    }
}
