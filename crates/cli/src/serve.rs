//! `tidemark serve`: a backup snapshot served read-only over MongoDB's wire protocol, so mongosh,
//! Compass and drivers can query it without restoring it anywhere. The serving itself (catalog
//! first, documents loaded in the background, `--at` through a full point-in-time restore) is
//! [`tidemark_drill::serve`]; this module parses the options, prints where it listens and the load
//! progress, and stops on Ctrl-C (or SIGTERM).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use tidemark_drill::serve::{LoadEvent, ServeOptions};

use crate::CliError;
use crate::repo::{RepoOptions, open};
use crate::verify::drill_error;

/// Arguments of `tidemark serve`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    repo: RepoOptions,
    /// The snapshot to serve (id, unique id prefix, or `latest`).
    #[arg(long, value_name = "ID", required_unless_present = "at", conflicts_with = "at")]
    snapshot: Option<String>,
    /// Serve the state at this point (`<seconds>,<increment>`, `Timestamp(s, i)` or an RFC 3339 time):
    /// restored in full with the point-in-time restore first, then served.
    #[arg(long, value_name = "TIME")]
    at: Option<String>,
    /// The member (replica set or shard) to serve when the snapshot holds several.
    #[arg(long)]
    member: Option<String>,
    /// TCP port to listen on.
    #[arg(long, default_value_t = 27017)]
    port: u16,
    /// IP address to listen on.
    #[arg(long = "bind_ip", alias = "bind-ip", default_value = "127.0.0.1")]
    bind_ip: String,
    /// No loading progress lines.
    #[arg(short, long)]
    quiet: bool,
}

pub(crate) fn run(args: &Args) -> Result<(), CliError> {
    let bind_ip: IpAddr = match args.bind_ip.as_str() {
        "localhost" => IpAddr::from([127, 0, 0, 1]),
        other => other
            .parse()
            .map_err(|e| CliError::usage(format!("invalid --bind_ip {other:?}: {e}")))?,
    };
    let runtime = crate::repo::runtime()?;
    let addr = SocketAddr::new(bind_ip, args.port);
    match &args.at {
        Some(at) => runtime.block_on(serve_at(args, at, addr)),
        None => runtime.block_on(serve(args, addr)),
    }
}

/// `--at`: the state at the point, restored in full first and then served.
async fn serve_at(args: &Args, at: &str, addr: SocketAddr) -> Result<(), CliError> {
    let point = tidemark_oplog::parse_restore_point(at).map_err(|e| CliError::usage(e.to_string()))?;
    let started = Instant::now();
    let repository = open(&args.repo).await?;
    let plan = tidemark_core::pitr::plan_pitr(&repository, point, args.member.as_deref()).await?;
    if !args.quiet {
        eprint!("{plan}");
    }
    let bars = Arc::new(crate::dump::Bars::new(args.quiet, None, "restored"));
    let served = tidemark_drill::serve::serve_point_in_time(&repository, plan.clone(), addr, bars.clone()).await;
    bars.done();
    let served = served.map_err(drill_error)?;
    println!(
        "serving the state at {} (base snapshot {}, {} document(s), {} oplog entries replayed) read-only on \
         mongodb://{}/ after {:.2} s; Ctrl-C stops",
        plan.point.last,
        &plan.window.base_snapshot.to_hex()[..8],
        served.report.summary.successes,
        served.report.summary.oplog_entries.unwrap_or(0),
        served.serving.address,
        started.elapsed().as_secs_f64()
    );
    served.serving.serve_until(shutdown_signal()).await;
    println!("stopped");
    Ok(())
}

async fn serve(args: &Args, addr: SocketAddr) -> Result<(), CliError> {
    let started = Instant::now();
    let repository = open(&args.repo).await?;
    let options = ServeOptions {
        snapshot: args.snapshot.clone(),
        member: args.member.clone(),
        address: addr,
    };
    let served = tidemark_drill::serve::serve_snapshot(&repository, &options)
        .await
        .map_err(drill_error)?;
    for p in &served.problems {
        eprintln!("warning: {p}");
    }
    println!(
        "serving snapshot {} ({}, {}) read-only on mongodb://{}/ after {:.2} s",
        &served.snapshot.to_hex()[..8],
        tidemark_repo::rfc3339(served.time),
        served.label,
        served.serving.address,
        started.elapsed().as_secs_f64()
    );
    println!(
        "{} namespace(s) listed; loading {} document(s), {:.1} MB in the background (queries on a \
         collection wait until it is loaded); Ctrl-C stops",
        served.namespaces,
        served.documents,
        served.bytes as f64 / 1e6
    );
    let printer = tokio::spawn(print_load(served.events, args.quiet));
    served.serving.serve_until(shutdown_signal()).await;
    printer.abort();
    println!("stopped");
    Ok(())
}

/// Prints the background load's progress (failures and warnings even with `--quiet`).
async fn print_load(mut events: tokio::sync::mpsc::UnboundedReceiver<LoadEvent>, quiet: bool) {
    while let Some(event) = events.recv().await {
        match event {
            LoadEvent::Loaded {
                namespace,
                documents,
                seconds,
                collections_done,
                collections_total,
                loaded_bytes,
                total_bytes,
                elapsed,
            } if !quiet => {
                let rest = total_bytes.saturating_sub(loaded_bytes);
                let left = if rest == 0 {
                    "done".to_owned()
                } else if loaded_bytes == 0 {
                    "estimating the rest".to_owned()
                } else {
                    format!("about {:.0} s left", rest as f64 * elapsed / loaded_bytes as f64)
                };
                println!(
                    "loaded {namespace}: {documents} document(s) in {seconds:.2} s; {collections_done}/{collections_total} \
                     collections, {:.1} of {:.1} MB, {left}",
                    loaded_bytes as f64 / 1e6,
                    total_bytes as f64 / 1e6,
                );
            }
            LoadEvent::Loaded { .. } => {}
            LoadEvent::Failed { namespace, message } => eprintln!("error: {namespace} cannot be served: {message}"),
            LoadEvent::Warning(message) => eprintln!("warning: {message}"),
            LoadEvent::Finished { seconds, failed } if !quiet => println!(
                "all collections loaded in {seconds:.1} s{}",
                if failed > 0 {
                    format!(" ({failed} failed)")
                } else {
                    String::new()
                }
            ),
            LoadEvent::Finished { .. } => {}
        }
    }
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        if let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
