//! Internal authentication of replica-set members with a shared key file (`--keyFile`).
//!
//! Rules follow mongod (<https://www.mongodb.com/docs/manual/core/security-internal-authentication/#keyfiles>):
//! the key is 6 to 1024 characters of the base64 set, whitespace in the file is ignored, and on UNIX the
//! file must not be accessible to group or others. A key file implies `--auth`.
//!
//! Members authenticate to each other as the internal user `__system@local` with SCRAM, the key being the
//! password. The server side ([`InternalKey::credential`]) derives that user's SCRAM credentials from the key
//! instead of reading `admin.system.users`, so without the key nobody can log in as `__system`; once
//! authenticated, `__system` holds every privilege (see [`crate::auth::AuthState::is_internal`]). The client
//! side ([`connect`]) opens a [`PeerConnection`] and runs the SCRAM-SHA-256 conversation (RFC 5802/7677)
//! before any replication command, verifying the server's signature too.

use std::path::Path;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bson::{Bson, Document, doc, spec::BinarySubtype};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::auth::UserName;
use crate::auth::scram::{Mechanism, ScramCredential};
use crate::repl::client::{ClientError, PeerConnection};

/// The internal user's name.
pub const SYSTEM_USER: &str = "__system";
/// The internal user's database.
pub const SYSTEM_DB: &str = "local";

/// Why a key file was refused (messages as mongod prints them).
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// The file could not be read.
    #[error("error getting file {path}: {source}")]
    Read {
        /// The key file.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// Group or others may access the file.
    #[error("permissions on {path} are too open")]
    TooOpen {
        /// The key file.
        path: String,
    },
    /// Too short or too long once whitespace is removed.
    #[error("security key in {path} has length {len}, must be between 6 and 1024 chars")]
    Length {
        /// The key file.
        path: String,
        /// Characters found.
        len: usize,
    },
    /// A character outside the base64 set.
    #[error("invalid char in key file {path}: {ch}")]
    InvalidChar {
        /// The key file.
        path: String,
        /// The offending character.
        ch: char,
    },
}

/// `(salt, iterations, salted password)` of a SCRAM exchange, kept to skip PBKDF2 on reconnection.
type SaltedCache = (Vec<u8>, u32, Vec<u8>);

/// The shared secret of a replica set, with the `__system` credentials derived from it.
pub struct InternalKey {
    key: String,
    sha1: OnceLock<ScramCredential>,
    sha256: OnceLock<ScramCredential>,
    /// Client side: `(salt, iterations, salted password)` of the last SCRAM-SHA-256 exchange.
    salted: Mutex<Option<SaltedCache>>,
}

impl std::fmt::Debug for InternalKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InternalKey").finish_non_exhaustive()
    }
}

impl InternalKey {
    /// Validates key text with mongod's rules (`path` names the source in errors).
    pub fn parse(text: &str, path: &str) -> Result<Self, KeyFileError> {
        let key: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        if let Some(ch) = key
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=')))
        {
            return Err(KeyFileError::InvalidChar {
                path: path.to_string(),
                ch,
            });
        }
        let len = key.chars().count();
        if !(6..=1024).contains(&len) {
            return Err(KeyFileError::Length {
                path: path.to_string(),
                len,
            });
        }
        Ok(Self {
            key,
            sha1: OnceLock::new(),
            sha256: OnceLock::new(),
            salted: Mutex::new(None),
        })
    }

    /// Reads and validates a key file, refusing one open to group or others.
    pub fn load(path: &Path) -> Result<Self, KeyFileError> {
        let shown = path.display().to_string();
        let meta = std::fs::metadata(path).map_err(|source| KeyFileError::Read {
            path: shown.clone(),
            source,
        })?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            if meta.permissions().mode() & 0o077 != 0 {
                return Err(KeyFileError::TooOpen { path: shown });
            }
        }
        #[cfg(not(unix))]
        let _ = meta;
        let text = std::fs::read_to_string(path).map_err(|source| KeyFileError::Read {
            path: shown.clone(),
            source,
        })?;
        Self::parse(&text, &shown)
    }

    /// Whether `user` is the internal user this key authenticates.
    pub fn is_system_user(user: &UserName) -> bool {
        user.user == SYSTEM_USER && user.db == SYSTEM_DB
    }

    /// The SCRAM credential of `__system@local` for `mechanism` (derived once from the key).
    pub fn credential(&self, mechanism: Mechanism) -> Option<ScramCredential> {
        let cell = match mechanism {
            Mechanism::ScramSha1 => &self.sha1,
            Mechanism::ScramSha256 => &self.sha256,
        };
        if let Some(c) = cell.get() {
            return Some(c.clone());
        }
        let c = ScramCredential::derive(mechanism, SYSTEM_USER, &self.key).ok()?;
        Some(cell.get_or_init(|| c).clone())
    }

    fn salted_password(&self, salt: &[u8], iterations: u32) -> Result<Vec<u8>, String> {
        let mut cache = self.salted.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((s, i, p)) = cache.as_ref()
            && s == salt
            && *i == iterations
        {
            return Ok(p.clone());
        }
        let password = stringprep::saslprep(&self.key).map_err(|e| format!("key cannot be prepared: {e}"))?;
        let mut out = vec![0u8; 32];
        pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), salt, iterations, &mut out);
        *cache = Some((salt.to_vec(), iterations, out.clone()));
        Ok(out)
    }
}

fn hmac256(key: &[u8], data: &[u8]) -> Vec<u8> {
    match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mut m) => {
            m.update(data);
            m.finalize().into_bytes().to_vec()
        }
        // HMAC accepts keys of any length; this arm is never taken.
        Err(_) => Vec::new(),
    }
}

fn sasl_payload(reply: &Document, host: &str) -> Result<Vec<u8>, ClientError> {
    match reply.get("payload") {
        Some(Bson::Binary(b)) => Ok(b.bytes.clone()),
        _ => Err(ClientError::Protocol {
            host: host.to_string(),
            message: "SASL reply without a binary payload".into(),
        }),
    }
}

fn binary(bytes: Vec<u8>) -> Bson {
    Bson::Binary(bson::Binary {
        subtype: BinarySubtype::Generic,
        bytes,
    })
}

/// Authenticates `conn` as `__system@local` with SCRAM-SHA-256 and the key as password.
pub async fn authenticate(conn: &mut PeerConnection, key: &InternalKey, timeout: Duration) -> Result<(), ClientError> {
    let host = conn.host().to_string();
    let fail = |message: String| ClientError::Protocol {
        host: host.clone(),
        message: format!("internal authentication as {SYSTEM_USER}@{SYSTEM_DB} failed: {message}"),
    };
    let nonce = B64.encode(crate::auth::scram::random_bytes(24));
    let client_first_bare = format!("n={SYSTEM_USER},r={nonce}");
    let start = doc! {
        "saslStart": 1,
        "mechanism": Mechanism::ScramSha256.name(),
        "payload": binary(format!("n,,{client_first_bare}").into_bytes()),
        "autoAuthorize": 1,
        "options": { "skipEmptyExchange": true },
    };
    let reply = conn.run(SYSTEM_DB, start, timeout).await?;
    let conversation_id = reply.get("conversationId").cloned().unwrap_or(Bson::Int32(1));
    let server_first = String::from_utf8(sasl_payload(&reply, &host)?)
        .map_err(|_| fail("server-first message is not UTF-8".into()))?;
    let mut server_nonce = None;
    let mut salt = None;
    let mut iterations = None;
    for part in server_first.split(',') {
        match part.split_once('=') {
            Some(("r", v)) => server_nonce = Some(v.to_string()),
            Some(("s", v)) => salt = B64.decode(v).ok(),
            Some(("i", v)) => iterations = v.parse::<u32>().ok(),
            _ => {}
        }
    }
    let (Some(server_nonce), Some(salt), Some(iterations)) = (server_nonce, salt, iterations) else {
        return Err(fail(format!("malformed server-first message {server_first:?}")));
    };
    if !server_nonce.starts_with(&nonce) || iterations == 0 {
        return Err(fail("server nonce or iteration count is invalid".into()));
    }
    let salted = key.salted_password(&salt, iterations).map_err(fail)?;
    let client_key = hmac256(&salted, b"Client Key");
    let stored_key = Sha256::digest(&client_key);
    let without_proof = format!("c=biws,r={server_nonce}");
    let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
    let signature = hmac256(&stored_key, auth_message.as_bytes());
    let proof: Vec<u8> = client_key.iter().zip(signature.iter()).map(|(a, b)| a ^ b).collect();
    let client_final = format!("{without_proof},p={}", B64.encode(proof));
    let reply = conn
        .run(
            SYSTEM_DB,
            doc! { "saslContinue": 1, "conversationId": conversation_id.clone(), "payload": binary(client_final.into_bytes()) },
            timeout,
        )
        .await?;
    let server_final = String::from_utf8(sasl_payload(&reply, &host)?).unwrap_or_default();
    let expected = B64.encode(hmac256(&hmac256(&salted, b"Server Key"), auth_message.as_bytes()));
    if server_final.strip_prefix("v=") != Some(expected.as_str()) {
        return Err(fail("the server's signature does not match the key".into()));
    }
    if !reply.get_bool("done").unwrap_or(false) {
        conn.run(
            SYSTEM_DB,
            doc! { "saslContinue": 1, "conversationId": conversation_id, "payload": binary(Vec::new()) },
            timeout,
        )
        .await?;
    }
    Ok(())
}

/// Connects to another member, authenticating as `__system` first when the set runs with a key file.
pub async fn connect(host: &str, timeout: Duration, key: Option<&InternalKey>) -> Result<PeerConnection, ClientError> {
    let mut conn = PeerConnection::connect(host, timeout).await?;
    if let Some(key) = key {
        authenticate(&mut conn, key, timeout.max(Duration::from_secs(5))).await?;
    }
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mongod_key_rules() {
        assert!(InternalKey::parse("abc12", "k").is_err());
        assert!(matches!(
            InternalKey::parse("abc12", "k"),
            Err(KeyFileError::Length { len: 5, .. })
        ));
        assert!(InternalKey::parse(" ab c\n12\t3 ", "k").is_ok());
        assert!(matches!(
            InternalKey::parse("abc-123", "k"),
            Err(KeyFileError::InvalidChar { ch: '-', .. })
        ));
        assert!(InternalKey::parse(&"a".repeat(1024), "k").is_ok());
        assert!(InternalKey::parse(&"a".repeat(1025), "k").is_err());
        assert!(InternalKey::parse("abc+/=123", "k").is_ok());
    }
}
