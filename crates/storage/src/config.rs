//! Storage options: S3 endpoint, region and credentials, retries, concurrency, timeouts.
//!
//! Options come from three places, in decreasing priority: the storage URL's query
//! (`?endpoint=...&region=...`), a [`StorageConfig`] (built in code or loaded from a TOML or JSON file with
//! [`StorageConfig::from_file`]), and the standard AWS environment variables (`AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`/`AWS_DEFAULT_REGION`, `AWS_ENDPOINT_URL`).
//! Secrets never appear in `Debug` output or in [`Storage::url`](crate::Storage::url).

use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::StorageError;

/// Default number of retries of a transiently failing operation.
pub const DEFAULT_RETRIES: usize = 6;
/// Default delay before the first retry; later retries double it (with jitter) up to [`MAX_RETRY_DELAY`].
pub const DEFAULT_RETRY_DELAY: Duration = Duration::from_millis(100);
/// Upper bound of the delay between two retries.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(10);
/// Default number of operations in flight at once against one store.
pub const DEFAULT_MAX_CONCURRENCY: usize = 16;
/// Default time limit of one attempt of an operation (and of each read or write of a chunk of data).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Options of a [`Storage`](crate::Storage). Every field is optional; `None` means "use the URL, the
/// environment or the default".
///
/// A config file has the same fields, with `timeout` and `retry_delay` in (possibly fractional) seconds:
///
/// ```toml
/// endpoint = "http://127.0.0.1:9000"
/// region = "us-east-1"
/// access_key_id = "AKIA..."
/// secret_access_key = "..."
/// max_concurrency = 32
/// retries = 8
/// timeout = 30
/// ```
#[derive(Clone, Default, PartialEq)]
pub struct StorageConfig {
    /// S3 endpoint, such as `http://127.0.0.1:9000` (default: AWS for the region).
    pub endpoint: Option<String>,
    /// S3 region (default: `AWS_REGION`, `AWS_DEFAULT_REGION`, else `us-east-1`).
    pub region: Option<String>,
    /// S3 access key id (default: `AWS_ACCESS_KEY_ID`).
    pub access_key_id: Option<String>,
    /// S3 secret access key (default: `AWS_SECRET_ACCESS_KEY`).
    pub secret_access_key: Option<String>,
    /// S3 session token for temporary credentials (default: `AWS_SESSION_TOKEN`).
    pub session_token: Option<String>,
    /// Maximum operations in flight at once (default [`DEFAULT_MAX_CONCURRENCY`]).
    pub max_concurrency: Option<usize>,
    /// Retries of a transiently failing operation (default [`DEFAULT_RETRIES`]; 0 disables retrying).
    pub retries: Option<usize>,
    /// Time limit of one attempt (default [`DEFAULT_TIMEOUT`]).
    pub timeout: Option<Duration>,
    /// Delay before the first retry (default [`DEFAULT_RETRY_DELAY`]).
    pub retry_delay: Option<Duration>,
}

impl fmt::Debug for StorageConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redact = |s: &Option<String>| s.as_ref().map(|_| "<redacted>");
        f.debug_struct("StorageConfig")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &redact(&self.secret_access_key))
            .field("session_token", &redact(&self.session_token))
            .field("max_concurrency", &self.max_concurrency)
            .field("retries", &self.retries)
            .field("timeout", &self.timeout)
            .field("retry_delay", &self.retry_delay)
            .finish()
    }
}

/// The on-disk form of [`StorageConfig`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    endpoint: Option<String>,
    region: Option<String>,
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
    session_token: Option<String>,
    max_concurrency: Option<usize>,
    retries: Option<usize>,
    timeout: Option<f64>,
    retry_delay: Option<f64>,
}

fn seconds(value: Option<f64>, field: &str, origin: &str) -> Result<Option<Duration>, StorageError> {
    value
        .map(|s| {
            Duration::try_from_secs_f64(s).map_err(|_| {
                StorageError::config(format!(
                    "{origin}: `{field}` must be a non-negative number of seconds, got {s}"
                ))
            })
        })
        .transpose()
}

impl StorageConfig {
    /// Parses a config file's text; `format` is `"toml"` or `"json"`, `origin` names the file in errors.
    pub fn parse(text: &str, format: &str, origin: &str) -> Result<StorageConfig, StorageError> {
        let file: FileConfig = match format {
            "toml" => toml::from_str(text).map_err(|e| StorageError::config(format!("{origin}: invalid TOML: {e}")))?,
            "json" => {
                serde_json::from_str(text).map_err(|e| StorageError::config(format!("{origin}: invalid JSON: {e}")))?
            }
            other => {
                return Err(StorageError::config(format!(
                    "{origin}: unknown config format {other:?} (expected toml or json)"
                )));
            }
        };
        if file.max_concurrency == Some(0) {
            return Err(StorageError::config(format!(
                "{origin}: `max_concurrency` must be at least 1"
            )));
        }
        Ok(StorageConfig {
            endpoint: file.endpoint,
            region: file.region,
            access_key_id: file.access_key_id,
            secret_access_key: file.secret_access_key,
            session_token: file.session_token,
            max_concurrency: file.max_concurrency,
            retries: file.retries,
            timeout: seconds(file.timeout, "timeout", origin)?,
            retry_delay: seconds(file.retry_delay, "retry_delay", origin)?,
        })
    }

    /// Loads a config file: TOML if the name ends in `.toml`, JSON if it ends in `.json`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<StorageConfig, StorageError> {
        let path = path.as_ref();
        let origin = path.display().to_string();
        let format = match path.extension().and_then(|e| e.to_str()) {
            Some(ext) if ext.eq_ignore_ascii_case("toml") => "toml",
            Some(ext) if ext.eq_ignore_ascii_case("json") => "json",
            _ => {
                return Err(StorageError::config(format!(
                    "{origin}: config file name must end in .toml or .json"
                )));
            }
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| StorageError::config(format!("{origin}: cannot read config file: {e}")))?;
        StorageConfig::parse(&text, format, &origin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_and_json_files_give_the_same_config() {
        let toml = r#"
            endpoint = "http://127.0.0.1:9000"
            region = "eu-west-3"
            access_key_id = "AKIDEXAMPLE"
            secret_access_key = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
            max_concurrency = 4
            retries = 2
            timeout = 1.5
            retry_delay = 0.25
        "#;
        let json = r#"{"endpoint": "http://127.0.0.1:9000", "region": "eu-west-3", "access_key_id": "AKIDEXAMPLE",
            "secret_access_key": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "max_concurrency": 4, "retries": 2,
            "timeout": 1.5, "retry_delay": 0.25}"#;
        let a = StorageConfig::parse(toml, "toml", "a.toml").unwrap();
        let b = StorageConfig::parse(json, "json", "b.json").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.timeout, Some(Duration::from_millis(1500)));
        assert_eq!(a.retry_delay, Some(Duration::from_millis(250)));
        assert_eq!(a.max_concurrency, Some(4));
        let debug = format!("{a:?}");
        assert!(!debug.contains("wJalr"), "secrets are redacted: {debug}");
        assert!(debug.contains("AKIDEXAMPLE"));
    }

    #[test]
    fn file_errors_name_the_file_and_the_option() {
        let err = StorageConfig::parse("endpont = \"x\"", "toml", "/etc/tm.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("/etc/tm.toml") && err.contains("endpont"), "{err}");
        let err = StorageConfig::parse(r#"{"timeout": -1}"#, "json", "c.json")
            .unwrap_err()
            .to_string();
        assert!(err.contains("c.json") && err.contains("timeout"), "{err}");
        let err = StorageConfig::parse("max_concurrency = 0", "toml", "d.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_concurrency"), "{err}");
        let err = StorageConfig::parse("retries = \"many\"", "toml", "e.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("e.toml") && err.contains("retries"), "{err}");

        let dir = tempfile::tempdir().unwrap();
        let yaml = dir.path().join("storage.yaml");
        std::fs::write(&yaml, "retries: 1").unwrap();
        let err = StorageConfig::from_file(&yaml).unwrap_err().to_string();
        assert!(err.contains("storage.yaml") && err.contains(".toml or .json"), "{err}");
        let missing = dir.path().join("absent.json");
        let err = StorageConfig::from_file(&missing).unwrap_err().to_string();
        assert!(err.contains("absent.json"), "{err}");
        let ok = dir.path().join("storage.JSON");
        std::fs::write(&ok, r#"{"retries": 1}"#).unwrap();
        assert_eq!(StorageConfig::from_file(&ok).unwrap().retries, Some(1));
    }
}
