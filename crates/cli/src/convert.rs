//! `tidemark convert`: dump directory ⇄ archive, gzip on or off, losslessly.

use std::path::PathBuf;

use tidemark_format::convert::{ConvertOptions, convert};

use crate::CliError;

/// Arguments of `tidemark convert`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Source: a dump directory or an archive file (gzip detected).
    src: PathBuf,
    /// Destination: an archive file (when the source is a directory) or a new directory.
    dst: PathBuf,
    /// Gzip the output (every file of a directory, or the whole archive).
    #[arg(long)]
    gzip: bool,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(args: &Args) -> Result<(), CliError> {
    let options = ConvertOptions {
        input_gzip: None,
        output_gzip: args.gzip,
    };
    let stats = convert(&args.src, &args.dst, &options)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&stats)?);
    } else {
        println!(
            "wrote {}: {} namespaces, {} documents, {} bytes",
            stats.output.display(),
            stats.namespaces,
            stats.documents,
            stats.bytes
        );
    }
    if stats.assumed_server_version {
        eprintln!(
            "warning: the source records no server version; the archive header says {}",
            tidemark_format::convert::ASSUMED_SERVER_VERSION
        );
    }
    Ok(())
}
