//! `tidemark dump`: a drop-in for `mongodump`.
//!
//! Accepts mongodump's own option spellings (`--numParallelCollections`, `-d`, `-c`, `-o`,
//! `--excludeCollection`, `--archive[=FILE]`, ...) as well as kebab-case aliases, rejects every
//! contradictory combination with mongodump's exact "bad option: ..." message, then plans the
//! dump with `tidemark-core` (printed as is with `--dryRun`) and runs it with a progress display
//! (`--quiet` to silence it, `--json` for a machine-readable summary on stdout).
//!
//! `-h` is the host, as in the MongoDB tools, so help is only `--help`.

use std::{collections::HashMap, path::PathBuf, sync::Arc, sync::Mutex, time::Duration};

use anyhow::Context as _;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tidemark_core::{
    Progress,
    connection::ConnectionOptions,
    dump::{DumpOptions, DumpTarget, plan_dump, run_dump},
};

use crate::CliError;

/// Connection options shared by `dump` and `restore` (the MongoDB tools' spellings).
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ConnArgs {
    /// Connection string (`mongodb://...` or `mongodb+srv://...`).
    #[arg(long)]
    pub(crate) uri: Option<String>,
    /// Host to connect to: `host[:port]`, a comma list, or `setname/host1,host2`.
    #[arg(short = 'h', long)]
    pub(crate) host: Option<String>,
    /// Server port.
    #[arg(long)]
    pub(crate) port: Option<u16>,
    /// User name for authentication.
    #[arg(short = 'u', long)]
    pub(crate) username: Option<String>,
    /// Password for authentication (prompted for when a user name is given without one).
    #[arg(short = 'p', long)]
    pub(crate) password: Option<String>,
    /// Database that holds the user's credentials.
    #[arg(
        long = "authenticationDatabase",
        alias = "authentication-database",
        value_name = "DB"
    )]
    pub(crate) authentication_database: Option<String>,
    /// Authentication mechanism (SCRAM-SHA-256, SCRAM-SHA-1, PLAIN, ...).
    #[arg(
        long = "authenticationMechanism",
        alias = "authentication-mechanism",
        value_name = "MECHANISM"
    )]
    pub(crate) authentication_mechanism: Option<String>,
    /// Read preference: a mode or JSON `{mode, tagSets, maxStalenessSeconds}`.
    #[arg(long = "readPreference", alias = "read-preference", value_name = "PREF")]
    pub(crate) read_preference: Option<String>,
    /// Connect with TLS.
    #[arg(long = "ssl", alias = "tls")]
    pub(crate) ssl: bool,
    /// CA bundle for TLS.
    #[arg(long = "sslCAFile", alias = "tlsCAFile", value_name = "FILE")]
    pub(crate) ssl_ca_file: Option<PathBuf>,
    /// Client certificate and key (PEM) for TLS.
    #[arg(long = "sslPEMKeyFile", alias = "tlsCertificateKeyFile", value_name = "FILE")]
    pub(crate) ssl_pem_key_file: Option<PathBuf>,
    /// Skip certificate and host name validation.
    #[arg(long = "tlsInsecure", aliases = ["sslAllowInvalidCertificates", "sslAllowInvalidHostnames", "tls-insecure"])]
    pub(crate) tls_insecure: bool,
}

impl ConnArgs {
    /// Folds the flags and an optional positional connection string into core options,
    /// prompting for the password when a user name comes without one.
    pub(crate) fn to_options(&self, positional_uri: Option<&str>) -> Result<ConnectionOptions, CliError> {
        let uri = match (positional_uri, &self.uri) {
            (Some(a), Some(b)) if a != b => {
                return Err(CliError::usage(format!(
                    "illegal argument: the positional connection string '{a}' conflicts with --uri '{b}'"
                )));
            }
            (Some(a), _) => Some(a.to_owned()),
            (None, b) => b.clone(),
        };
        if uri.is_some() && (self.host.is_some() || self.port.is_some()) {
            return Err(CliError::usage(
                "illegal argument: cannot specify --host and/or --port with a connection string",
            ));
        }
        let mut password = self.password.clone();
        if self.username.is_some() && password.is_none() {
            password = Some(rpassword::prompt_password("Enter password for mongo user:").context("read the password")?);
        }
        let mut o = ConnectionOptions::default();
        o.uri = uri;
        o.host.clone_from(&self.host);
        o.port = self.port;
        o.username.clone_from(&self.username);
        o.password = password;
        o.authentication_database.clone_from(&self.authentication_database);
        o.authentication_mechanism.clone_from(&self.authentication_mechanism);
        o.read_preference.clone_from(&self.read_preference);
        o.tls = self.ssl;
        o.tls_ca_file.clone_from(&self.ssl_ca_file);
        o.tls_certificate_key_file.clone_from(&self.ssl_pem_key_file);
        o.tls_insecure = self.tls_insecure;
        Ok(o)
    }
}

/// `--dbpath` works without a server, so the options that reach one contradict it.
pub(crate) fn check_dbpath_conflicts(conn: &ConnArgs, positional_uri: Option<&str>) -> Result<(), CliError> {
    let given = [
        (positional_uri.is_some(), "a connection string"),
        (conn.uri.is_some(), "--uri"),
        (conn.host.is_some(), "--host"),
        (conn.port.is_some(), "--port"),
        (conn.username.is_some(), "--username"),
        (conn.password.is_some(), "--password"),
        (conn.authentication_database.is_some(), "--authenticationDatabase"),
        (conn.authentication_mechanism.is_some(), "--authenticationMechanism"),
        (conn.ssl, "--ssl"),
    ];
    match given.iter().find(|(set, _)| *set) {
        Some((_, option)) => Err(CliError::usage(format!(
            "bad option: --dbpath cannot be used with {option}: it works on the data files directly, \
             without a server"
        ))),
        None => Ok(()),
    }
}

/// Output options shared by `dump` and `restore`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct OutputArgs {
    /// No progress display and no log lines.
    #[arg(long)]
    pub(crate) quiet: bool,
    /// More log lines (repeatable).
    #[arg(short = 'v', long = "verbose", action = clap::ArgAction::Count)]
    pub(crate) verbose: u8,
    /// Print a JSON summary on standard output.
    #[arg(long)]
    pub(crate) json: bool,
    /// Print the plan (namespaces, sizes, what is skipped and why) and do nothing.
    #[arg(long = "dryRun", alias = "dry-run")]
    pub(crate) dry_run: bool,
}

/// Arguments of `tidemark dump`.
#[derive(Debug, clap::Args)]
#[command(disable_help_flag = true)]
pub(crate) struct Args {
    /// Print help.
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
    /// Connection string (same as --uri).
    #[arg(value_name = "URI")]
    positional_uri: Option<String>,
    #[command(flatten)]
    conn: ConnArgs,
    #[command(flatten)]
    output: OutputArgs,
    /// Dump a `tidemark-server` data directory directly, with no server running on it.
    #[arg(long, value_name = "DIR")]
    dbpath: Option<PathBuf>,
    /// Database to dump (all databases when omitted).
    #[arg(short = 'd', long = "db")]
    db: Option<String>,
    /// Collection to dump (needs --db).
    #[arg(short = 'c', long = "collection")]
    collection: Option<String>,
    /// Query filter as Extended JSON (needs --collection).
    #[arg(short = 'q', long = "query")]
    query: Option<String>,
    /// File holding the query filter (needs --collection).
    #[arg(long = "queryFile", alias = "query-file", value_name = "FILE")]
    query_file: Option<PathBuf>,
    /// Deprecated no-op kept for compatibility.
    #[arg(long = "forceTableScan", alias = "force-table-scan")]
    force_table_scan: bool,
    /// Collection to leave out (repeatable; needs --db).
    #[arg(long = "excludeCollection", alias = "exclude-collection", value_name = "NAME")]
    exclude_collection: Vec<String>,
    /// Leave out collections with this prefix (repeatable; needs --db).
    #[arg(
        long = "excludeCollectionsWithPrefix",
        alias = "exclude-collections-with-prefix",
        value_name = "PREFIX"
    )]
    exclude_collections_with_prefix: Vec<String>,
    /// Output directory, or `-` for the raw BSON of one collection on stdout (default `dump`).
    #[arg(short = 'o', long = "out")]
    out: Option<String>,
    /// Write an archive to FILE (`--archive=FILE`), or to stdout when no value is given.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "-", value_name = "FILE")]
    archive: Option<String>,
    /// Gzip every output file, or the whole archive.
    #[arg(long)]
    gzip: bool,
    /// Capture the oplog during the dump for a consistent point in time (full dumps only).
    #[arg(long)]
    oplog: bool,
    /// With --db: also dump that database's users and roles.
    #[arg(long = "dumpDbUsersAndRoles", alias = "dump-db-users-and-roles")]
    dump_db_users_and_roles: bool,
    /// Dump views' contents as collections (and skip ordinary collections).
    #[arg(long = "viewsAsCollections", alias = "views-as-collections")]
    views_as_collections: bool,
    /// Collections dumped at once.
    #[arg(
        short = 'j',
        long = "numParallelCollections",
        alias = "num-parallel-collections",
        default_value_t = 4,
        allow_negative_numbers = true
    )]
    num_parallel_collections: i64,
    /// Read collections with at least this many documents through `-j` concurrent `_id`-range
    /// cursors (not a mongodump option).
    #[arg(
        long = "split-threshold",
        alias = "splitThreshold",
        default_value_t = 500_000,
        value_name = "DOCS"
    )]
    split_threshold: u64,
}

/// mongodump's option validation (`ValidateOptions`), with its exact messages.
fn validate(args: &Args) -> Result<(), String> {
    let bad = |m: &str| Err(format!("bad option: {m}"));
    let stdout = args.out.as_deref() == Some("-");
    if stdout && args.collection.is_none() {
        return bad("can only dump a single collection to stdout");
    }
    if args.collection.is_some() && args.db.is_none() {
        return bad("cannot dump a collection without a specified database");
    }
    if args.query.is_some() && args.collection.is_none() {
        return bad("cannot dump using a query without a specified collection");
    }
    if args.query_file.is_some() && args.collection.is_none() {
        return bad("cannot dump using a queryFile without a specified collection");
    }
    if args.query.is_some() && args.query_file.is_some() {
        return bad("either query or queryFile can be specified as a query option, not both");
    }
    if args.query.is_some() && args.force_table_scan {
        return bad("cannot use --forceTableScan when specifying --query");
    }
    if args.dump_db_users_and_roles && args.db.is_none() {
        return bad("must specify a database when running with dumpDbUsersAndRoles");
    }
    if args.dump_db_users_and_roles && args.collection.is_some() {
        return bad("cannot specify a collection when running with dumpDbUsersAndRoles");
    }
    if args
        .collection
        .as_deref()
        .is_some_and(|c| c.starts_with("system.buckets."))
    {
        return bad(
            "cannot specify a system.buckets collection in --collection. Specifying the timeseries collection will dump the system.buckets collection",
        );
    }
    if args.oplog && (args.db.is_some() || args.collection.is_some()) {
        return bad("--oplog mode only supported on full dumps");
    }
    for (given, flag) in [
        (!args.exclude_collection.is_empty(), "--excludeCollection"),
        (
            !args.exclude_collections_with_prefix.is_empty(),
            "--excludeCollectionsWithPrefix",
        ),
    ] {
        if given && args.collection.is_some() {
            return bad(&format!("--collection is not allowed when {flag} is specified"));
        }
        if given && args.db.is_none() {
            return bad(&format!("--db is required when {flag} is specified"));
        }
    }
    if args.out.is_some() && args.archive.is_some() {
        return bad("--out not allowed when --archive is specified");
    }
    if stdout && args.gzip {
        return bad("compression can't be used when dumping a single collection to standard output");
    }
    if args.num_parallel_collections <= 0 {
        return bad("numParallelCollections must be positive");
    }
    Ok(())
}

fn parse_query(text: &str, origin: &str) -> Result<bson::Document, CliError> {
    let json: serde_json::Value =
        serde_json::from_str(text).map_err(|e| CliError::usage(format!("error parsing {origin}: {e}")))?;
    match tidemark_format::metadata::ext_value(json) {
        Ok(bson::Bson::Document(d)) => Ok(d),
        Ok(_) => Err(CliError::usage(format!("error parsing {origin}: not a JSON object"))),
        Err(e) => Err(CliError::usage(format!("error parsing {origin}: {e}"))),
    }
}

/// A [`Progress`] drawing one bar per active namespace plus a total with docs/s and ETA.
pub(crate) struct Bars {
    multi: MultiProgress,
    total: ProgressBar,
    bars: Mutex<HashMap<String, ProgressBar>>,
    quiet: bool,
    verb: &'static str,
}

impl Bars {
    /// Bars on stderr (hidden with `quiet`); `verb` ("dumped", "restored") words the per-namespace
    /// completion lines.
    pub(crate) fn new(quiet: bool, total: Option<u64>, verb: &'static str) -> Self {
        let target = if quiet {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        };
        let multi = MultiProgress::with_draw_target(target);
        let style =
            ProgressStyle::with_template("{prefix:>30} {wide_bar} {human_pos}/{human_len} docs {per_sec} eta {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar());
        let bar = multi.add(ProgressBar::new(total.unwrap_or(0)));
        bar.set_style(style);
        bar.set_prefix("total");
        Self {
            multi,
            total: bar,
            bars: Mutex::new(HashMap::new()),
            quiet,
            verb,
        }
    }

    /// Sets the expected total of documents (for the ETA).
    pub(crate) fn set_total(&self, total: u64) {
        self.total.set_length(total);
    }

    pub(crate) fn done(&self) {
        self.total.finish_and_clear();
        let _ = self.multi.clear();
    }
}

impl Progress for Bars {
    fn start(&self, namespace: &str, total: Option<u64>) {
        let bar = self
            .multi
            .insert_before(&self.total, ProgressBar::new(total.unwrap_or(0)));
        bar.set_style(
            ProgressStyle::with_template("{prefix:>30} {wide_bar} {human_pos}/{human_len}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_prefix(namespace.to_owned());
        bar.enable_steady_tick(Duration::from_millis(250));
        if let Ok(mut bars) = self.bars.lock() {
            bars.insert(namespace.to_owned(), bar);
        }
    }

    fn advance(&self, namespace: &str, documents: u64) {
        if let Ok(bars) = self.bars.lock()
            && let Some(bar) = bars.get(namespace)
        {
            if bar.length().is_some_and(|l| bar.position() + documents > l) {
                bar.set_length(bar.position() + documents);
            }
            bar.inc(documents);
        }
        if self
            .total
            .length()
            .is_some_and(|l| self.total.position() + documents > l)
        {
            self.total.set_length(self.total.position() + documents);
        }
        self.total.inc(documents);
    }

    fn finish(&self, namespace: &str) {
        if let Ok(mut bars) = self.bars.lock()
            && let Some(bar) = bars.remove(namespace)
        {
            bar.finish_and_clear();
            self.multi.remove(&bar);
            if !self.quiet {
                let _ = self
                    .multi
                    .println(format!("{} {namespace} ({} documents)", self.verb, bar.position()));
            }
        }
    }

    fn expect(&self, documents: u64) {
        self.set_total(documents);
    }

    fn log(&self, message: &str) {
        if !self.quiet {
            let _ = self.multi.println(message);
        }
    }
}

/// A current-thread-free runtime for one command.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the async runtime")?)
}

pub(crate) fn run(args: &Args) -> Result<(), CliError> {
    validate(args).map_err(CliError::usage)?;
    let query = match (&args.query, &args.query_file) {
        (Some(q), _) => Some(parse_query(q, "--query")?),
        (None, Some(f)) => {
            let text = std::fs::read_to_string(f).with_context(|| format!("read --queryFile {}", f.display()))?;
            Some(parse_query(&text, "--queryFile")?)
        }
        (None, None) => None,
    };
    let target = match (&args.archive, args.out.as_deref()) {
        (Some(a), _) if a == "-" => DumpTarget::Archive(None),
        (Some(a), _) => DumpTarget::Archive(Some(PathBuf::from(a))),
        (None, Some("-")) => DumpTarget::Stdout,
        (None, out) => DumpTarget::Directory(PathBuf::from(out.unwrap_or("dump"))),
    };
    let mut options = DumpOptions::default();
    options.db.clone_from(&args.db);
    options.collection.clone_from(&args.collection);
    options.query = query;
    options.exclude_collections.clone_from(&args.exclude_collection);
    options
        .exclude_collection_prefixes
        .clone_from(&args.exclude_collections_with_prefix);
    options.target = target;
    options.gzip = args.gzip;
    options.oplog = args.oplog;
    options.dump_db_users_and_roles = args.dump_db_users_and_roles;
    options.views_as_collections = args.views_as_collections;
    options.parallel = usize::try_from(args.num_parallel_collections).unwrap_or(1);
    options.split_threshold = args.split_threshold;
    if args.dbpath.is_some() {
        check_dbpath_conflicts(&args.conn, args.positional_uri.as_deref())?;
        if args.oplog {
            return Err(CliError::usage(
                "bad option: --oplog cannot be used with --dbpath: nothing writes to a data directory while it \
                 is dumped offline, so the dump is already a consistent point in time",
            ));
        }
    }
    let conn = match args.dbpath {
        Some(_) => ConnectionOptions::default(),
        None => args.conn.to_options(args.positional_uri.as_deref())?,
    };

    // Progress goes to stderr; stdout may carry the archive or the BSON stream.
    let to_stdout = matches!(options.target, DumpTarget::Stdout | DumpTarget::Archive(None));
    runtime()?.block_on(async {
        let offline = match &args.dbpath {
            Some(dbpath) => Some(tidemark_core::offline::OfflineServer::open_for_dump(dbpath).await?),
            None => None,
        };
        let conn = offline.as_ref().map_or(conn, |s| s.connection_options());
        let result = dump_with(args, conn, &options, to_stdout).await;
        if let Some(server) = offline {
            server.close().await?;
        }
        result
    })
}

async fn dump_with(
    args: &Args,
    conn: ConnectionOptions,
    options: &DumpOptions,
    to_stdout: bool,
) -> Result<(), CliError> {
    {
        let client = tidemark_core::connection::connect(&conn, "tidemark-dump").await?;
        let quiet = args.output.quiet;
        let bars = Arc::new(Bars::new(quiet, None, "dumped"));
        let plan = plan_dump(&client, options, bars.as_ref()).await?;
        if args.output.dry_run {
            bars.done();
            eprint!("{plan}");
            return Ok(());
        }
        if !quiet {
            for (ns, why) in &plan.skipped {
                if args.output.verbose > 0 {
                    eprintln!("skipping {ns}: {why}");
                }
            }
        }
        bars.expect(plan.collections.iter().filter_map(|c| c.estimated_count).sum());
        let summary = run_dump(&client, &plan, options, bars.clone()).await;
        bars.done();
        let summary = summary?;
        if args.output.json && !to_stdout {
            let namespaces: Vec<_> = summary
                .namespaces
                .iter()
                .map(|(ns, n)| serde_json::json!({"namespace": ns, "documents": n}))
                .collect();
            let json = serde_json::json!({
                "namespaces": namespaces, "documents": summary.documents, "oplogEntries": summary.oplog_entries,
                "split": summary.split.iter().map(|(ns, n)| serde_json::json!({"namespace": ns, "ranges": n})).collect::<Vec<_>>(),
            });
            println!("{json}");
        } else if !quiet {
            eprintln!(
                "dumped {} document(s) from {} namespace(s)",
                summary.documents,
                summary.namespaces.len()
            );
        }
        Ok::<(), CliError>(())
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
        let mut full = vec!["dump"];
        full.extend_from_slice(argv);
        validate(&Wrapper::try_parse_from(full).map_err(|e| e.to_string())?.args)
    }

    #[test]
    fn mongodump_messages() {
        let cases: &[(&[&str], &str)] = &[
            (&["--out", "-"], "can only dump a single collection to stdout"),
            (&["-c", "x"], "cannot dump a collection without a specified database"),
            (
                &["-d", "x", "-q", "{}"],
                "cannot dump using a query without a specified collection",
            ),
            (
                &["-d", "x", "--queryFile", "f"],
                "cannot dump using a queryFile without a specified collection",
            ),
            (
                &["-d", "x", "-c", "y", "-q", "{}", "--queryFile", "f"],
                "either query or queryFile can be specified as a query option, not both",
            ),
            (
                &["-d", "x", "-c", "y", "-q", "{}", "--forceTableScan"],
                "cannot use --forceTableScan when specifying --query",
            ),
            (
                &["--dumpDbUsersAndRoles"],
                "must specify a database when running with dumpDbUsersAndRoles",
            ),
            (
                &["-d", "x", "-c", "y", "--dumpDbUsersAndRoles"],
                "cannot specify a collection when running with dumpDbUsersAndRoles",
            ),
            (&["--oplog", "-d", "x"], "--oplog mode only supported on full dumps"),
            (
                &["-d", "x", "-c", "y", "--excludeCollection", "z"],
                "--collection is not allowed when --excludeCollection is specified",
            ),
            (
                &["--excludeCollectionsWithPrefix", "z"],
                "--db is required when --excludeCollectionsWithPrefix is specified",
            ),
            (
                &["--out", "o", "--archive=a"],
                "--out not allowed when --archive is specified",
            ),
            (
                &["-d", "x", "-c", "y", "--out", "-", "--gzip"],
                "compression can't be used when dumping a single collection to standard output",
            ),
            (&["-j", "0"], "numParallelCollections must be positive"),
        ];
        for (argv, message) in cases {
            assert_eq!(check(argv), Err(format!("bad option: {message}")), "{argv:?}");
        }
        assert!(
            check(&["-d", "x", "-c", "system.buckets.foo"])
                .unwrap_err()
                .starts_with("bad option: cannot specify a system.buckets collection in --collection.")
        );
        assert_eq!(check(&["--archive", "-d", "x"]), Ok(()));
        assert_eq!(
            check(&[
                "--num-parallel-collections",
                "2",
                "--exclude-collection",
                "a",
                "--db",
                "x"
            ]),
            Ok(())
        );
    }

    #[test]
    fn archive_value_only_in_equals_form() {
        let w = Wrapper::try_parse_from(["dump", "--archive", "mongodb://h/"]).unwrap();
        assert_eq!(w.args.archive.as_deref(), Some("-"));
        assert_eq!(w.args.positional_uri.as_deref(), Some("mongodb://h/"));
        let w = Wrapper::try_parse_from(["dump", "--archive=x.archive"]).unwrap();
        assert_eq!(w.args.archive.as_deref(), Some("x.archive"));
    }
}
