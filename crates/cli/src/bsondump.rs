//! `tidemark bsondump`: BSON files as Extended JSON, compatible with MongoDB's `bsondump`.
//!
//! Output is byte-identical to the real tool: one canonical Extended JSON document per line (or
//! relaxed with `--relaxed`, tab-indented with `--pretty`), or the structural `--type=debug`
//! listing, and `N objects found` on stderr. As in the real tool, a document that cannot be decoded
//! is reported and skipped unless `--objcheck` is given, while a broken stream (bad length,
//! truncation) always fails, naming the byte offset.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::PathBuf;

use anyhow::Context as _;
use bson::RawDocument;
use bson::raw::RawBsonRef;
use tidemark_directio::InputFile;
use tidemark_format::bson_stream::{BsonReader, MAX_OPLOG_DOCUMENT_SIZE};
use tidemark_format::extjson::{self, Mode};

use crate::CliError;

/// Bytes of standard input buffered for the document parser.
const STDIN_BUFFER: usize = 256 * 1024;

/// Output styles of `--type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum OutputType {
    /// Extended JSON, one document per line.
    Json,
    /// Element names, type numbers and sizes.
    Debug,
}

/// Arguments of `tidemark bsondump`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// BSON file to read (standard input when omitted).
    file: Option<PathBuf>,
    /// BSON file to read (alternative to the positional argument).
    #[arg(long = "bsonFile", alias = "bson-file", value_name = "FILE")]
    bson_file: Option<PathBuf>,
    /// Write to this file instead of standard output.
    #[arg(long = "outFile", alias = "out-file", value_name = "FILE")]
    out_file: Option<PathBuf>,
    /// Output style.
    #[arg(long = "type", value_enum, default_value = "json")]
    output_type: OutputType,
    /// Indent JSON output with tabs.
    #[arg(long)]
    pretty: bool,
    /// Relaxed Extended JSON (plain numbers and ISO dates) instead of canonical.
    #[arg(long)]
    relaxed: bool,
    /// Validate every document fully and stop at the first invalid one.
    #[arg(long)]
    objcheck: bool,
    /// Do not print the `N objects found` summary.
    #[arg(long)]
    quiet: bool,
}

pub(crate) fn run(args: &Args) -> Result<(), CliError> {
    let path = match (&args.file, &args.bson_file) {
        (Some(_), Some(_)) => {
            return Err(CliError::usage("cannot specify both a positional file and --bsonFile"));
        }
        (Some(p), None) | (None, Some(p)) => Some(p.clone()),
        (None, None) => None,
    };
    let name = path
        .as_ref()
        .map_or_else(|| "standard input".to_owned(), |p| p.display().to_string());
    let input: Box<dyn BufRead> = match &path {
        Some(p) => Box::new(InputFile::open(p).with_context(|| format!("couldn't open BSON file {}", p.display()))?),
        None => Box::new(BufReader::with_capacity(STDIN_BUFFER, io::stdin().lock())),
    };
    let output: Box<dyn Write> = match &args.out_file {
        Some(p) => Box::new(File::create(p).with_context(|| format!("couldn't create output file {}", p.display()))?),
        None => Box::new(io::stdout().lock()),
    };
    let mut out = BufWriter::with_capacity(256 * 1024, output);
    let result = dump(args, input, &mut out);
    let flushed = out.flush();
    let count = match result {
        Ok(count) => count,
        Err((count, e)) => {
            summary(args, count);
            return Err(e.context(format!("reading {name}")).into());
        }
    };
    flushed.context("writing output")?;
    summary(args, count);
    Ok(())
}

fn summary(args: &Args, count: u64) {
    if !args.quiet {
        log(&format!("{count} objects found"));
    }
}

/// Streams every document; returns the number of documents seen, or that number with the error.
fn dump(args: &Args, input: impl BufRead, out: &mut impl Write) -> Result<u64, (u64, anyhow::Error)> {
    let mode = if args.relaxed { Mode::Relaxed } else { Mode::Canonical };
    let mut reader = BsonReader::buffered(input, MAX_OPLOG_DOCUMENT_SIZE);
    let mut buf = Vec::new();
    let mut count = 0u64;
    let mut line = String::new();
    loop {
        let offset = reader.offset();
        match reader.read_into(&mut buf) {
            Ok(true) => {}
            Ok(false) => return Ok(count),
            Err(e) => return Err((count, e.into())),
        }
        count += 1;
        let doc = RawDocument::from_bytes(&buf).map_err(|e| (count, e.into()))?;
        let rendered = match args.output_type {
            OutputType::Json => extjson::to_string(doc, mode).map(|json| {
                line.clear();
                if args.pretty {
                    line.push_str(&extjson::indent_tabs(&json));
                } else {
                    line.push_str(&json);
                }
                line.push('\n');
            }),
            OutputType::Debug => {
                // With --objcheck the whole document is decoded before anything is printed.
                let checked = if args.objcheck {
                    extjson::to_string(doc, mode).map(drop)
                } else {
                    Ok(())
                };
                checked.map(|()| {
                    line.clear();
                    if let Err(e) = debug_document(&mut line, doc, 0) {
                        log(&format!("encountered error debugging BSON data: {e}"));
                    }
                })
            }
        };
        match rendered {
            Ok(()) => out.write_all(line.as_bytes()).map_err(|e| (count, e.into()))?,
            Err(e) if args.objcheck => {
                return Err((
                    count,
                    anyhow::anyhow!("failed to validate document {count} at byte offset {offset}: {e}"),
                ));
            }
            Err(e) => log(&format!("unable to dump document {count} (byte offset {offset}): {e}")),
        }
    }
}

/// The `--type=debug` listing: sizes, element names and type numbers, nested documents indented.
/// Like the real tool, a level whose elements cannot all be decoded prints only its header.
fn debug_document(out: &mut String, doc: &RawDocument, indent: usize) -> Result<(), bson::raw::Error> {
    use std::fmt::Write as _;
    if indent > 3 * extjson::MAX_DEPTH {
        return Ok(());
    }
    let pad = "\t".repeat(indent);
    let _ = writeln!(out, "{pad}--- new object ---");
    let _ = writeln!(out, "{pad}\tsize : {}", doc.as_bytes().len());
    let mut elements = Vec::new();
    for element in doc.iter_elements() {
        let element = element?;
        let value = element.value()?;
        elements.push((element.key(), element.element_type() as u8, element.len(), value));
    }
    for (key, type_number, len, value) in elements {
        let _ = writeln!(out, "{pad}\t\t{key}");
        let _ = writeln!(
            out,
            "{pad}\t\t\ttype: {:>4} size: {}",
            i8::from_ne_bytes([type_number]),
            2 + key.len() + len
        );
        match value {
            RawBsonRef::Document(d) => debug_document(out, d, indent + 3)?,
            RawBsonRef::Array(a) => debug_document(out, RawDocument::from_bytes(a.as_bytes())?, indent + 3)?,
            _ => {}
        }
    }
    Ok(())
}

/// A log line on stderr in the Go tools' format: `<time>\t<message>`.
fn log(message: &str) {
    // Go's layout `2006-01-02T15:04:05.000-0700`: always three fraction digits, UTC as `+0000`.
    let now = bson::DateTime::now().try_to_rfc3339_string().unwrap_or_default();
    let body = now.strip_suffix('Z').unwrap_or(&now);
    let (seconds, fraction) = body.split_once('.').unwrap_or((body, ""));
    eprintln!("{seconds}.{:0<3}+0000\t{message}", &fraction[..fraction.len().min(3)]);
}
