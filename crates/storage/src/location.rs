//! Parsing of storage URLs into a backend location.
//!
//! Forms accepted (see the crate documentation for details):
//! - a filesystem path (`/abs/path`, or a relative path resolved against the current directory);
//! - `file:///abs/path` (percent-encoded like any URL);
//! - `memory://` (an in-process store, for tests);
//! - `s3://bucket/optional/prefix?endpoint=http://host:port&region=us-east-1`.

use std::path::PathBuf;

use percent_encoding::percent_decode_str;

use crate::StorageError;

/// Where objects live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Location {
    /// A directory on the local filesystem.
    Fs { root: PathBuf },
    /// A fresh in-memory store.
    Memory,
    /// A bucket (and optional key prefix) of an S3-compatible store.
    S3 {
        bucket: String,
        prefix: String,
        endpoint: Option<String>,
        region: Option<String>,
    },
}

impl Location {
    pub(crate) fn parse(url: &str) -> Result<Location, StorageError> {
        if url.is_empty() {
            return Err(StorageError::config("empty storage URL"));
        }
        let Some((scheme, _)) = url.split_once("://") else {
            return fs_path(url);
        };
        match scheme.to_ascii_lowercase().as_str() {
            "memory" => {
                if url.len() > "memory://".len() {
                    return Err(StorageError::config(format!(
                        "storage URL {url:?}: memory:// takes no path or options"
                    )));
                }
                Ok(Location::Memory)
            }
            "file" => {
                let parsed = url::Url::parse(url)
                    .map_err(|e| StorageError::config(format!("storage URL {url:?}: invalid file URL: {e}")))?;
                if parsed.host_str().is_some_and(|h| !h.is_empty() && h != "localhost") {
                    return Err(StorageError::config(format!(
                        "storage URL {url:?}: file URLs must name a local path (file:///abs/path)"
                    )));
                }
                if parsed.query().is_some() || parsed.fragment().is_some() {
                    return Err(StorageError::config(format!(
                        "storage URL {url:?}: file URLs take no options"
                    )));
                }
                let path = percent_decode_str(parsed.path())
                    .decode_utf8()
                    .map_err(|_| StorageError::config(format!("storage URL {url:?}: path is not UTF-8")))?;
                fs_path(&path)
            }
            "s3" => s3(url),
            other => Err(StorageError::config(format!(
                "storage URL {url:?}: unsupported scheme {other:?} (expected a path, file://, memory:// or s3://)"
            ))),
        }
    }
}

fn fs_path(path: &str) -> Result<Location, StorageError> {
    let root = std::path::absolute(path)
        .map_err(|e| StorageError::config(format!("storage path {path:?}: cannot make it absolute: {e}")))?;
    Ok(Location::Fs { root })
}

fn s3(url: &str) -> Result<Location, StorageError> {
    // URL parsing silently resolves `.` and `..` segments; a prefix must be taken literally, so refuse them.
    let raw_path = url.split(['?', '#']).next().unwrap_or(url);
    if raw_path.split('/').skip(3).any(|segment| {
        let decoded = percent_decode_str(segment).decode_utf8_lossy();
        decoded == "." || decoded == ".."
    }) {
        return Err(StorageError::config(format!(
            "storage URL {url:?}: invalid prefix ('.' or '..' segment)"
        )));
    }
    let parsed =
        url::Url::parse(url).map_err(|e| StorageError::config(format!("storage URL {url:?}: invalid S3 URL: {e}")))?;
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(StorageError::config(format!(
            "storage URL: credentials must not be part of an s3:// URL; use AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY \
             or the config file (bucket {:?})",
            parsed.host_str().unwrap_or_default()
        )));
    }
    let bucket = parsed.host_str().unwrap_or_default().to_owned();
    if bucket.is_empty() {
        return Err(StorageError::config(format!(
            "storage URL {url:?}: missing bucket (s3://bucket/prefix)"
        )));
    }
    if parsed.port().is_some() {
        return Err(StorageError::config(format!(
            "storage URL {url:?}: s3:// names a bucket, not a server; give the server as ?endpoint=http://host:port"
        )));
    }
    let prefix = percent_decode_str(parsed.path())
        .decode_utf8()
        .map_err(|_| StorageError::config(format!("storage URL {url:?}: prefix is not UTF-8")))?
        .trim_matches('/')
        .to_owned();
    if prefix.split('/').any(|s| s == "." || s == "..") || prefix.contains("//") {
        return Err(StorageError::config(format!(
            "storage URL {url:?}: invalid prefix {prefix:?}"
        )));
    }
    let mut endpoint = None;
    let mut region = None;
    for (name, value) in parsed.query_pairs() {
        let slot = match name.as_ref() {
            "endpoint" => &mut endpoint,
            "region" => &mut region,
            other => {
                return Err(StorageError::config(format!(
                    "storage URL for bucket {bucket:?}: unknown option {other:?} (expected endpoint or region; \
                     credentials belong in the environment or the config file)"
                )));
            }
        };
        if value.is_empty() {
            return Err(StorageError::config(format!(
                "storage URL for bucket {bucket:?}: empty option {name:?}"
            )));
        }
        if slot.replace(value.into_owned()).is_some() {
            return Err(StorageError::config(format!(
                "storage URL for bucket {bucket:?}: option {name:?} given twice"
            )));
        }
    }
    if parsed.fragment().is_some() {
        return Err(StorageError::config(format!(
            "storage URL for bucket {bucket:?}: unexpected #fragment"
        )));
    }
    Ok(Location::S3 {
        bucket,
        prefix,
        endpoint,
        region,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_documented_forms() {
        assert_eq!(
            Location::parse("/srv/backups").unwrap(),
            Location::Fs {
                root: PathBuf::from("/srv/backups")
            }
        );
        assert_eq!(
            Location::parse("file:///srv/my%20backups").unwrap(),
            Location::Fs {
                root: PathBuf::from("/srv/my backups")
            }
        );
        assert_eq!(Location::parse("memory://").unwrap(), Location::Memory);
        assert_eq!(
            Location::parse("s3://bucket/some/prefix/?endpoint=http://127.0.0.1:9000&region=eu-west-3").unwrap(),
            Location::S3 {
                bucket: "bucket".into(),
                prefix: "some/prefix".into(),
                endpoint: Some("http://127.0.0.1:9000".into()),
                region: Some("eu-west-3".into()),
            }
        );
        assert_eq!(
            Location::parse("s3://bucket").unwrap(),
            Location::S3 {
                bucket: "bucket".into(),
                prefix: String::new(),
                endpoint: None,
                region: None
            }
        );
    }

    #[test]
    fn rejects_bad_urls_naming_the_fault() {
        for (url, needle) in [
            ("", "empty"),
            ("ftp://host/x", "unsupported scheme"),
            ("s3:///prefix", "missing bucket"),
            ("s3://b/p?secret_access_key=x", "unknown option \"secret_access_key\""),
            ("s3://key:secret@b/p", "credentials must not be part"),
            ("s3://b:9000/p", "endpoint"),
            ("s3://b/p?region=a&region=b", "given twice"),
            ("s3://b/a/../p", "invalid prefix"),
            ("memory://x", "memory://"),
            ("file://host/x", "local path"),
        ] {
            let err = Location::parse(url).unwrap_err().to_string();
            assert!(err.contains(needle), "{url:?}: {err}");
            assert!(!err.contains("secret@"), "{err}");
        }
    }
}
