//! `tidemark inspect`: what a dump directory or archive holds, optionally fully verified.

use std::path::PathBuf;

use anyhow::anyhow;
use tidemark_format::inspect::{DumpFormat, DumpSummary, InspectOptions, inspect};

use crate::CliError;

/// Arguments of `tidemark inspect`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// A dump directory, a `.bson` file, or an archive file (gzip'd or not; detected).
    path: PathBuf,
    /// Decode every document and report every problem (archive CRCs are always checked).
    #[arg(long)]
    verify: bool,
    /// Treat the input as gzip'd (normally detected).
    #[arg(long)]
    gzip: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(args: &Args) -> Result<(), CliError> {
    let options = InspectOptions {
        verify: args.verify,
        gzip: args.gzip.then_some(true),
    };
    let summary = inspect(&args.path, &options)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print_text(&summary);
    }
    match summary.problem_count() {
        0 => Ok(()),
        n => Err(anyhow!("{} has {n} problem(s)", args.path.display()).into()),
    }
}

fn print_text(summary: &DumpSummary) {
    let format = match summary.format {
        DumpFormat::Directory => "dump directory",
        DumpFormat::Archive => "archive",
    };
    let gzip = if summary.gzip { ", gzip" } else { "" };
    println!("{format} {}{gzip}", summary.path.display());
    if let Some(v) = &summary.server_version {
        let tool = summary.tool_version.as_deref().filter(|t| !t.is_empty());
        match tool {
            Some(t) => println!("source server {v}, written by {t}"),
            None => println!("source server {v}"),
        }
    }
    let width = summary
        .namespaces
        .iter()
        .map(|n| n.namespace.len())
        .max()
        .unwrap_or(9)
        .max(9);
    println!(
        "{:<width$}  {:<13} {:>12} {:>14}  INDEXES",
        "NAMESPACE", "KIND", "DOCUMENTS", "BYTES"
    );
    for ns in &summary.namespaces {
        println!(
            "{:<width$}  {:<13} {:>12} {:>14}  {}",
            ns.namespace,
            ns.kind,
            ns.documents,
            ns.bytes,
            ns.indexes.join(",")
        );
        if let Some(w) = &ns.oplog_window {
            println!("{:<width$}  oplog window {} .. {}", "", w.first, w.last);
        }
        for problem in &ns.problems {
            println!("{:<width$}  PROBLEM: {problem}", "");
        }
    }
    for skipped in &summary.skipped {
        println!("skipped {skipped}");
    }
    let verified = if summary.verified {
        ", every document decoded"
    } else {
        ""
    };
    println!(
        "total: {} namespaces, {} documents, {} bytes{verified}",
        summary.namespaces.len(),
        summary.documents,
        summary.bytes
    );
}
