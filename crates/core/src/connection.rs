//! Connecting to the source or destination server with the tools' connection options.
//!
//! mongodump and mongorestore accept a connection string (positional or `--uri`) and the
//! individual flags `--host`, `--port`, `--username`, `--password`, `--authenticationDatabase`,
//! `--authenticationMechanism`, `--readPreference` and the TLS flags. They are folded into one
//! driver [`ClientOptions`]: the connection string first, then the flags on top.

use mongodb::{
    Client,
    options::{AuthMechanism, ClientOptions, Credential, ReadPreference, SelectionCriteria, Tls, TlsOptions},
};

use crate::error::{Error, MongoContext, Result};

/// Connection settings shared by dump and restore.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ConnectionOptions {
    /// `mongodb://` or `mongodb+srv://` connection string.
    pub uri: Option<String>,
    /// `host[:port]`, a comma list, or `setname/h1,h2`.
    pub host: Option<String>,
    /// Port for hosts without one.
    pub port: Option<u16>,
    /// User name.
    pub username: Option<String>,
    /// Password (the CLI prompts for it when a user name is given without one).
    pub password: Option<String>,
    /// Authentication database (default `admin`).
    pub authentication_database: Option<String>,
    /// Authentication mechanism name (`SCRAM-SHA-256`, `SCRAM-SHA-1`, `PLAIN`, ...).
    pub authentication_mechanism: Option<String>,
    /// Read preference mode (`primary`, `secondaryPreferred`, ...).
    pub read_preference: Option<String>,
    /// Enable TLS.
    pub tls: bool,
    /// CA bundle.
    pub tls_ca_file: Option<std::path::PathBuf>,
    /// Client certificate and key (PEM).
    pub tls_certificate_key_file: Option<std::path::PathBuf>,
    /// Skip certificate and host name verification.
    pub tls_insecure: bool,
    /// Application name sent in the handshake.
    pub app_name: Option<String>,
}

fn build_uri(options: &ConnectionOptions) -> String {
    if let Some(uri) = &options.uri {
        return uri.clone();
    }
    let host = options.host.clone().unwrap_or_else(|| "localhost".to_owned());
    let (set_name, hosts) = match host.split_once('/') {
        Some((set, hosts)) => (Some(set.to_owned()), hosts.to_owned()),
        None => (None, host),
    };
    let port = options.port.unwrap_or(27017);
    let hosts: Vec<String> = hosts
        .split(',')
        .map(|h| {
            if h.contains(':') {
                h.to_owned()
            } else {
                format!("{h}:{port}")
            }
        })
        .collect();
    let mut uri = format!("mongodb://{}/", hosts.join(","));
    if let Some(set) = set_name {
        uri.push_str(&format!("?replicaSet={set}"));
    } else if hosts.len() == 1 {
        uri.push_str("?directConnection=true");
    }
    uri
}

/// Parses a read preference mode name.
///
/// # Errors
/// [`Error::Options`] for an unknown mode.
pub fn parse_read_preference(mode: &str) -> Result<ReadPreference> {
    let mode = mode.trim();
    let mode = if mode.starts_with('{') {
        let value: serde_json::Value =
            serde_json::from_str(mode).map_err(|e| Error::Options(format!("invalid --readPreference JSON: {e}")))?;
        value
            .get("mode")
            .and_then(|m| m.as_str())
            .unwrap_or("primary")
            .to_owned()
    } else {
        mode.to_owned()
    };
    Ok(match mode.as_str() {
        "primary" => ReadPreference::Primary,
        "primaryPreferred" => ReadPreference::PrimaryPreferred { options: None },
        "secondary" => ReadPreference::Secondary { options: None },
        "secondaryPreferred" => ReadPreference::SecondaryPreferred { options: None },
        "nearest" => ReadPreference::Nearest { options: None },
        other => return Err(Error::Options(format!("invalid readPreference mode '{other}'"))),
    })
}

/// Builds the driver options (no network I/O except SRV lookups for `mongodb+srv://`).
///
/// # Errors
/// [`Error::Options`] for an invalid connection string or option.
pub async fn client_options(options: &ConnectionOptions, default_app_name: &str) -> Result<ClientOptions> {
    let uri = build_uri(options);
    let mut opts = ClientOptions::parse(&uri)
        .await
        .map_err(|e| Error::Options(format!("error parsing connection string '{uri}': {e}")))?;
    if options.username.is_some() || options.password.is_some() || options.authentication_mechanism.is_some() {
        let mut credential = opts.credential.clone().unwrap_or_default();
        if let Some(user) = &options.username {
            credential.username = Some(user.clone());
        }
        if let Some(password) = &options.password {
            credential.password = Some(password.clone());
        }
        if let Some(mechanism) = &options.authentication_mechanism {
            credential.mechanism = Some(
                mechanism
                    .parse::<AuthMechanism>()
                    .map_err(|e| Error::Options(format!("invalid authenticationMechanism '{mechanism}': {e}")))?,
            );
        }
        opts.credential = Some(credential);
    }
    if let Some(db) = &options.authentication_database {
        let credential: &mut Credential = opts.credential.get_or_insert_with(Credential::default);
        credential.source = Some(db.clone());
    }
    if let Some(mode) = &options.read_preference {
        opts.selection_criteria = Some(SelectionCriteria::ReadPreference(parse_read_preference(mode)?));
    }
    if options.tls
        || options.tls_ca_file.is_some()
        || options.tls_certificate_key_file.is_some()
        || options.tls_insecure
    {
        let mut tls = TlsOptions::default();
        tls.ca_file_path.clone_from(&options.tls_ca_file);
        tls.cert_key_file_path.clone_from(&options.tls_certificate_key_file);
        if options.tls_insecure {
            tls.allow_invalid_certificates = Some(true);
        }
        opts.tls = Some(Tls::Enabled(tls));
    }
    if opts.app_name.is_none() {
        opts.app_name = Some(options.app_name.clone().unwrap_or_else(|| default_app_name.to_owned()));
    }
    Ok(opts)
}

/// Connects and checks the server answers `ping`.
///
/// # Errors
/// [`Error::Options`] for bad options, [`Error::Mongo`] when the server cannot be reached.
pub async fn connect(options: &ConnectionOptions, default_app_name: &str) -> Result<Client> {
    let opts = client_options(options, default_app_name).await?;
    let hosts: Vec<String> = opts.hosts.iter().map(ToString::to_string).collect();
    let client = Client::with_options(opts).context(|| "error creating the client".to_owned())?;
    client
        .database("admin")
        .run_command(bson::doc! {"ping": 1})
        .await
        .context(|| format!("error connecting to host {}", hosts.join(",")))?;
    Ok(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_ports_become_a_uri() {
        let mut o = ConnectionOptions::default();
        assert_eq!(build_uri(&o), "mongodb://localhost:27017/?directConnection=true");
        o.host = Some("rs0/a,b:27018".into());
        o.port = Some(1234);
        assert_eq!(build_uri(&o), "mongodb://a:1234,b:27018/?replicaSet=rs0");
        o.uri = Some("mongodb://x/".into());
        assert_eq!(build_uri(&o), "mongodb://x/");
    }

    #[test]
    fn read_preference_modes() {
        assert!(matches!(
            parse_read_preference("nearest"),
            Ok(ReadPreference::Nearest { .. })
        ));
        assert!(matches!(
            parse_read_preference("{\"mode\":\"secondary\"}"),
            Ok(ReadPreference::Secondary { .. })
        ));
        assert!(parse_read_preference("fastest").is_err());
    }
}
