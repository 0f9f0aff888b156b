//! SCRAM-SHA-1 and SCRAM-SHA-256, server side (RFC 5802, RFC 7677), with MongoDB's password rules.
//!
//! MongoDB stores, per user and mechanism, only `{iterationCount, salt, storedKey, serverKey}` (all binary
//! values base64-encoded), never the password. This module derives those values from a password
//! ([`ScramCredential::derive`]) and runs the server half of a conversation against them
//! ([`ScramServer`]):
//!
//! 1. client-first `n,,n=<user>,r=<client nonce>` → server-first `r=<client nonce><server nonce>,s=<salt>,i=<n>`;
//! 2. client-final `c=<base64 gs2 header>,r=<nonce>,p=<proof>` → the proof is checked by recomputing
//!    `ClientKey = proof XOR HMAC(StoredKey, AuthMessage)` and comparing `H(ClientKey)` with `StoredKey`; the
//!    answer is `v=<HMAC(ServerKey, AuthMessage)>` so the client can authenticate the server in turn.
//!
//! MongoDB-specific rules: SCRAM-SHA-1 hashes `hex(MD5("<user>:mongo:<password>"))` instead of the password
//! itself (the legacy MONGODB-CR digest), while SCRAM-SHA-256 uses the SASLprep'd password (RFC 4013). Default
//! iteration counts are 10000 and 15000, salts are 16 and 28 random bytes, as mongod generates them. The code is
//! sans-IO: messages in, messages out; the SASL commands around it live in `auth/sasl.rs`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bson::{Document, doc};
use hmac::{Hmac, Mac};
use md5::{Digest as _, Md5};
use rand::RngCore as _;
use sha1::Sha1;
use sha2::Sha256;

/// A SCRAM mechanism supported by the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Mechanism {
    /// `SCRAM-SHA-1` (RFC 5802) over the MONGODB-CR password digest.
    ScramSha1,
    /// `SCRAM-SHA-256` (RFC 7677) over the SASLprep'd password.
    ScramSha256,
}

impl Mechanism {
    /// Both mechanisms, in the order mongod lists them.
    pub const ALL: [Mechanism; 2] = [Mechanism::ScramSha1, Mechanism::ScramSha256];

    /// The SASL mechanism name (also the key under `credentials` in `admin.system.users`).
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::ScramSha1 => "SCRAM-SHA-1",
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
        }
    }

    /// Parses a mechanism name (exact, case-sensitive as mongod).
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "SCRAM-SHA-1" => Some(Mechanism::ScramSha1),
            "SCRAM-SHA-256" => Some(Mechanism::ScramSha256),
            _ => None,
        }
    }

    /// mongod's default iteration count (`scramIterationCount` / `scramSHA256IterationCount`).
    pub fn default_iterations(self) -> u32 {
        match self {
            Mechanism::ScramSha1 => 10_000,
            Mechanism::ScramSha256 => 15_000,
        }
    }

    /// Length of the random salt mongod generates (hash size minus the 4-byte PBKDF2 block counter).
    pub fn salt_len(self) -> usize {
        match self {
            Mechanism::ScramSha1 => 16,
            Mechanism::ScramSha256 => 28,
        }
    }

    fn key_len(self) -> usize {
        match self {
            Mechanism::ScramSha1 => 20,
            Mechanism::ScramSha256 => 32,
        }
    }

    fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        match self {
            // Both HMAC constructions accept keys of any length, so `new_from_slice` cannot fail.
            Mechanism::ScramSha1 => match Hmac::<Sha1>::new_from_slice(key) {
                Ok(mut m) => {
                    m.update(data);
                    m.finalize().into_bytes().to_vec()
                }
                Err(_) => Vec::new(),
            },
            Mechanism::ScramSha256 => match Hmac::<Sha256>::new_from_slice(key) {
                Ok(mut m) => {
                    m.update(data);
                    m.finalize().into_bytes().to_vec()
                }
                Err(_) => Vec::new(),
            },
        }
    }

    fn hash(self, data: &[u8]) -> Vec<u8> {
        match self {
            Mechanism::ScramSha1 => Sha1::digest(data).to_vec(),
            Mechanism::ScramSha256 => Sha256::digest(data).to_vec(),
        }
    }

    fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        let mut out = vec![0u8; self.key_len()];
        match self {
            Mechanism::ScramSha1 => pbkdf2::pbkdf2_hmac::<Sha1>(password, salt, iterations, &mut out),
            Mechanism::ScramSha256 => pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out),
        }
        out
    }
}

impl std::fmt::Display for Mechanism {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a SCRAM step or a credential operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    /// The client's message does not follow RFC 5802's grammar.
    #[error("invalid SCRAM message: {0}")]
    Malformed(String),
    /// The proof did not match the stored key (wrong password) or the nonce was altered.
    #[error("Authentication failed.")]
    AuthenticationFailed,
    /// The password cannot be prepared (SASLprep rejected it).
    #[error("invalid password: {0}")]
    InvalidPassword(String),
    /// A stored credential document is not in MongoDB's shape.
    #[error("invalid stored credential: {0}")]
    BadCredential(String),
}

/// The password string fed to PBKDF2 for `mechanism`: `hex(MD5("<user>:mongo:<password>"))` for SCRAM-SHA-1,
/// the SASLprep'd password for SCRAM-SHA-256.
pub fn password_input(mechanism: Mechanism, user: &str, password: &str) -> Result<String, ScramError> {
    match mechanism {
        Mechanism::ScramSha1 => Ok(mongo_cr_digest(user, password)),
        Mechanism::ScramSha256 => stringprep::saslprep(password)
            .map(|p| p.into_owned())
            .map_err(|e| ScramError::InvalidPassword(e.to_string())),
    }
}

/// The legacy MONGODB-CR digest `hex(MD5("<user>:mongo:<password>"))`, which is also what a client sends as
/// `pwd` with `digestPassword: false`.
pub fn mongo_cr_digest(user: &str, password: &str) -> String {
    let digest = Md5::digest(format!("{user}:mongo:{password}").as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// One mechanism's stored credential, as in `admin.system.users` `credentials.<mechanism>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScramCredential {
    /// The mechanism this credential belongs to.
    pub mechanism: Mechanism,
    /// PBKDF2 iteration count.
    pub iteration_count: u32,
    /// Random salt.
    pub salt: Vec<u8>,
    /// `H(HMAC(SaltedPassword, "Client Key"))`.
    pub stored_key: Vec<u8>,
    /// `HMAC(SaltedPassword, "Server Key")`.
    pub server_key: Vec<u8>,
}

impl ScramCredential {
    /// Derives a credential from an already prepared password input (see [`password_input`]).
    pub fn derive_from_input(mechanism: Mechanism, input: &[u8], salt: &[u8], iteration_count: u32) -> Self {
        let salted = mechanism.salted_password(input, salt, iteration_count);
        let client_key = mechanism.hmac(&salted, b"Client Key");
        let stored_key = mechanism.hash(&client_key);
        let server_key = mechanism.hmac(&salted, b"Server Key");
        Self {
            mechanism,
            iteration_count,
            salt: salt.to_vec(),
            stored_key,
            server_key,
        }
    }

    /// Derives a credential for `user`/`password` with a fresh random salt and mongod's default iteration count.
    pub fn derive(mechanism: Mechanism, user: &str, password: &str) -> Result<Self, ScramError> {
        let input = password_input(mechanism, user, password)?;
        Ok(Self::derive_from_input(
            mechanism,
            input.as_bytes(),
            &random_bytes(mechanism.salt_len()),
            mechanism.default_iterations(),
        ))
    }

    /// The stored form `{iterationCount, salt, storedKey, serverKey}` (binary values in base64 strings).
    pub fn to_document(&self) -> Document {
        doc! {
            "iterationCount": i32::try_from(self.iteration_count).unwrap_or(i32::MAX),
            "salt": B64.encode(&self.salt),
            "storedKey": B64.encode(&self.stored_key),
            "serverKey": B64.encode(&self.server_key),
        }
    }

    /// Parses the stored form; any missing or mistyped field is an error naming it.
    pub fn from_document(mechanism: Mechanism, d: &Document) -> Result<Self, ScramError> {
        let bad = |what: &str| ScramError::BadCredential(format!("{}: {what}", mechanism.name()));
        let iteration_count = match d.get("iterationCount") {
            Some(bson::Bson::Int32(i)) => u32::try_from(*i).map_err(|_| bad("negative iterationCount"))?,
            Some(bson::Bson::Int64(i)) => u32::try_from(*i).map_err(|_| bad("iterationCount out of range"))?,
            Some(bson::Bson::Double(f)) if f.fract() == 0.0 && *f >= 1.0 && *f <= f64::from(u32::MAX) => {
                // Checked range above: the conversion is exact.
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                let n = *f as u32;
                n
            }
            _ => return Err(bad("missing or non-integer iterationCount")),
        };
        if iteration_count == 0 {
            return Err(bad("iterationCount must be positive"));
        }
        let field = |name: &str| -> Result<Vec<u8>, ScramError> {
            let s = d
                .get_str(name)
                .map_err(|_| bad(&format!("missing or non-string {name}")))?;
            B64.decode(s).map_err(|e| bad(&format!("{name} is not base64: {e}")))
        };
        let salt = field("salt")?;
        let stored_key = field("storedKey")?;
        let server_key = field("serverKey")?;
        if stored_key.len() != mechanism.key_len() || server_key.len() != mechanism.key_len() {
            return Err(bad("storedKey/serverKey have the wrong length"));
        }
        Ok(Self {
            mechanism,
            iteration_count,
            salt,
            stored_key,
            server_key,
        })
    }
}

/// Random bytes from the thread-local CSPRNG.
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    rand::rng().fill_bytes(&mut v);
    v
}

/// A parsed client-first message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFirst {
    /// The user name, with `=2C`/`=3D` unescaped.
    pub user: String,
    /// The client nonce.
    pub nonce: String,
    /// The GS2 header (`n,,` or `y,,`, or with an authzid), echoed base64-encoded in the client-final `c=`.
    gs2_header: String,
    /// The message without the GS2 header (part of the AuthMessage).
    bare: String,
}

impl ClientFirst {
    /// Parses `gs2-header client-first-message-bare` (RFC 5802 §7).
    pub fn parse(payload: &[u8]) -> Result<Self, ScramError> {
        let text = std::str::from_utf8(payload)
            .map_err(|_| ScramError::Malformed("client-first message is not UTF-8".into()))?;
        let mut parts = text.splitn(3, ',');
        let cb_flag = parts.next().unwrap_or_default();
        let authzid = parts
            .next()
            .ok_or_else(|| ScramError::Malformed("missing GS2 header".into()))?;
        let bare = parts
            .next()
            .ok_or_else(|| ScramError::Malformed("missing client-first-message-bare".into()))?;
        match cb_flag {
            "n" | "y" => {}
            f if f.starts_with("p=") => {
                return Err(ScramError::Malformed("channel binding is not supported".into()));
            }
            _ => {
                return Err(ScramError::Malformed(format!(
                    "invalid GS2 channel binding flag '{cb_flag}'"
                )));
            }
        }
        if !authzid.is_empty() && !authzid.starts_with("a=") {
            return Err(ScramError::Malformed(format!("invalid GS2 authzid '{authzid}'")));
        }
        if bare.starts_with("m=") {
            return Err(ScramError::Malformed(
                "SCRAM mandatory extensions are not supported".into(),
            ));
        }
        let mut fields = bare.split(',');
        let user = fields
            .next()
            .and_then(|f| f.strip_prefix("n="))
            .ok_or_else(|| ScramError::Malformed("client-first message must start with n=<user>".into()))?;
        let nonce = fields
            .next()
            .and_then(|f| f.strip_prefix("r="))
            .ok_or_else(|| ScramError::Malformed("client-first message lacks r=<nonce>".into()))?;
        if nonce.is_empty() || !nonce.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b',') {
            return Err(ScramError::Malformed(
                "client nonce must be printable ASCII without ','".into(),
            ))?;
        }
        let user = unescape_username(user)?;
        if let Some(authz) = authzid.strip_prefix("a=")
            && unescape_username(authz)? != user
        {
            return Err(ScramError::Malformed(
                "authorization identity must match the user name".into(),
            ));
        }
        let gs2_header = format!("{cb_flag},{authzid},");
        Ok(Self {
            user,
            nonce: nonce.to_string(),
            gs2_header,
            bare: bare.to_string(),
        })
    }
}

fn unescape_username(s: &str) -> Result<String, ScramError> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find('=') {
        out.push_str(&rest[..pos]);
        let tail = &rest[pos..];
        if tail.starts_with("=2C") {
            out.push(',');
        } else if tail.starts_with("=3D") {
            out.push('=');
        } else {
            return Err(ScramError::Malformed("invalid '=' escape in user name".into()));
        }
        rest = &tail[3..];
    }
    out.push_str(rest);
    if out.is_empty() {
        return Err(ScramError::Malformed("empty user name".into()));
    }
    Ok(out)
}

/// The server half of one SCRAM conversation, after the client-first message.
#[derive(Debug, Clone)]
pub struct ScramServer {
    credential: ScramCredential,
    client_first: ClientFirst,
    server_first: String,
    combined_nonce: String,
}

impl ScramServer {
    /// Starts a conversation with a fresh server nonce; returns the state and the server-first message.
    pub fn start(client_first: ClientFirst, credential: ScramCredential) -> (Self, Vec<u8>) {
        let server_nonce = B64.encode(random_bytes(24));
        Self::start_with_nonce(client_first, credential, &server_nonce)
    }

    /// Starts a conversation with a given server nonce (the RFC test vectors fix it).
    pub fn start_with_nonce(
        client_first: ClientFirst,
        credential: ScramCredential,
        server_nonce: &str,
    ) -> (Self, Vec<u8>) {
        let combined_nonce = format!("{}{}", client_first.nonce, server_nonce);
        let server_first = format!(
            "r={combined_nonce},s={},i={}",
            B64.encode(&credential.salt),
            credential.iteration_count
        );
        let bytes = server_first.clone().into_bytes();
        (
            Self {
                credential,
                client_first,
                server_first,
                combined_nonce,
            },
            bytes,
        )
    }

    /// The user named in the client-first message.
    pub fn user(&self) -> &str {
        &self.client_first.user
    }

    /// Checks the client-final message; on success returns the server-final message `v=<signature>`.
    pub fn finish(&self, client_final: &[u8]) -> Result<Vec<u8>, ScramError> {
        let text = std::str::from_utf8(client_final)
            .map_err(|_| ScramError::Malformed("client-final message is not UTF-8".into()))?;
        let (without_proof, proof) = text
            .rsplit_once(",p=")
            .ok_or_else(|| ScramError::Malformed("client-final message lacks p=<proof>".into()))?;
        let mut fields = without_proof.split(',');
        let channel = fields
            .next()
            .and_then(|f| f.strip_prefix("c="))
            .ok_or_else(|| ScramError::Malformed("client-final message must start with c=".into()))?;
        let nonce = fields
            .next()
            .and_then(|f| f.strip_prefix("r="))
            .ok_or_else(|| ScramError::Malformed("client-final message lacks r=<nonce>".into()))?;
        let channel = B64
            .decode(channel)
            .map_err(|_| ScramError::Malformed("c= is not base64".into()))?;
        if channel != self.client_first.gs2_header.as_bytes() {
            return Err(ScramError::Malformed(
                "channel binding data does not match the GS2 header".into(),
            ));
        }
        if nonce != self.combined_nonce {
            return Err(ScramError::AuthenticationFailed);
        }
        let proof = B64
            .decode(proof)
            .map_err(|_| ScramError::Malformed("p= is not base64".into()))?;
        let mech = self.credential.mechanism;
        if proof.len() != mech.key_len() {
            return Err(ScramError::AuthenticationFailed);
        }
        let auth_message = format!("{},{},{}", self.client_first.bare, self.server_first, without_proof);
        let client_signature = mech.hmac(&self.credential.stored_key, auth_message.as_bytes());
        let client_key: Vec<u8> = proof.iter().zip(&client_signature).map(|(p, s)| p ^ s).collect();
        let computed = mech.hash(&client_key);
        if !constant_time_eq(&computed, &self.credential.stored_key) {
            return Err(ScramError::AuthenticationFailed);
        }
        let server_signature = mech.hmac(&self.credential.server_key, auth_message.as_bytes());
        Ok(format!("v={}", B64.encode(server_signature)).into_bytes())
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A published SCRAM exchange.
    struct Vector {
        mech: Mechanism,
        input: &'static str,
        salt_b64: &'static str,
        iterations: u32,
        client_first: &'static str,
        server_nonce: &'static str,
        server_first: &'static str,
        client_final: &'static str,
        server_final: &'static str,
    }

    /// Runs a full server conversation against a published transcript.
    fn transcript(v: &Vector, input: &str) {
        let salt = B64.decode(v.salt_b64).unwrap();
        let cred = ScramCredential::derive_from_input(v.mech, input.as_bytes(), &salt, v.iterations);
        let cf = ClientFirst::parse(v.client_first.as_bytes()).unwrap();
        let (server, first) = ScramServer::start_with_nonce(cf, cred, v.server_nonce);
        assert_eq!(String::from_utf8(first).unwrap(), v.server_first);
        let fin = server.finish(v.client_final.as_bytes()).unwrap();
        assert_eq!(String::from_utf8(fin).unwrap(), v.server_final);
        // Any change to the proof is rejected.
        let mut tampered = v.client_final.to_string();
        let last = tampered.pop().unwrap();
        tampered.push(if last == 'A' { 'B' } else { 'A' });
        assert!(server.finish(tampered.as_bytes()).is_err());
    }

    #[test]
    fn rfc5802_sha1_example() {
        // RFC 5802 section 5: user "user", password "pencil" (plain password, no MongoDB digest).
        let v = Vector {
            mech: Mechanism::ScramSha1,
            input: "pencil",
            salt_b64: "QSXCR+Q6sek8bf92",
            iterations: 4096,
            client_first: "n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL",
            server_nonce: "3rfcNHYJY1ZVvWVs7j",
            server_first: "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",
            client_final: "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
            server_final: "v=rmF9pqV8S7suAoZWja4dJRkFsKQ=",
        };
        transcript(&v, v.input);
    }

    #[test]
    fn rfc7677_sha256_example() {
        // RFC 7677 section 3.
        let v = Vector {
            mech: Mechanism::ScramSha256,
            input: "pencil",
            salt_b64: "W22ZaJ0SNY7soEsUEjb6gQ==",
            iterations: 4096,
            client_first: "n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
            server_nonce: "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
            server_first: "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
            client_final: "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
            server_final: "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
        };
        transcript(&v, v.input);
    }

    #[test]
    fn mongodb_auth_spec_sha1_example() {
        // MongoDB driver auth specification, SCRAM-SHA-1 example: user "user", password "pencil", whose
        // password input is hex(MD5("user:mongo:pencil")).
        let input = password_input(Mechanism::ScramSha1, "user", "pencil").unwrap();
        assert_eq!(input, "1c33006ec1ffd90f9cadcbcc0e118200");
        let v = Vector {
            mech: Mechanism::ScramSha1,
            input: "1c33006ec1ffd90f9cadcbcc0e118200",
            salt_b64: "rQ9ZY3MntBeuP3E1TDVC4w==",
            iterations: 10000,
            client_first: "n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL",
            server_nonce: "Ho+Vgk7qvUOKUwuWLIWg4l/9SraGMHEE",
            server_first: "r=fyko+d2lbbFgONRv9qkxdawLHo+Vgk7qvUOKUwuWLIWg4l/9SraGMHEE,s=rQ9ZY3MntBeuP3E1TDVC4w==,i=10000",
            client_final: "c=biws,r=fyko+d2lbbFgONRv9qkxdawLHo+Vgk7qvUOKUwuWLIWg4l/9SraGMHEE,p=MC2T8BvbmWRckDw8oWl5IVghwCY=",
            server_final: "v=UMWeI25JD1yNYZRMpZ4VHvhZ9e0=",
        };
        transcript(&v, &input);
    }

    #[test]
    fn sha256_password_is_saslprepped() {
        // RFC 4013 examples: soft hyphen maps to nothing, non-ASCII space maps to a space, controls are refused.
        assert_eq!(password_input(Mechanism::ScramSha256, "u", "I\u{00AD}X").unwrap(), "IX");
        assert_eq!(
            password_input(Mechanism::ScramSha256, "u", "a\u{00A0}b").unwrap(),
            "a b"
        );
        assert!(password_input(Mechanism::ScramSha256, "u", "\u{0007}").is_err());
    }

    #[test]
    fn credential_document_round_trip() {
        let cred = ScramCredential::derive(Mechanism::ScramSha256, "alice", "secret").unwrap();
        assert_eq!(cred.salt.len(), 28);
        assert_eq!(cred.iteration_count, 15000);
        let d = cred.to_document();
        assert_eq!(
            ScramCredential::from_document(Mechanism::ScramSha256, &d).unwrap(),
            cred
        );
        let mut broken = d.clone();
        broken.insert("storedKey", "!!!");
        assert!(ScramCredential::from_document(Mechanism::ScramSha256, &broken).is_err());
    }

    #[test]
    fn malformed_client_messages_are_rejected() {
        for bad in [
            "",
            "n,,",
            "p=tls-unique,,n=u,r=abc",
            "x,,n=u,r=abc",
            "n,,n=u",
            "n,,r=abc",
            "n,,n=a=2Xb,r=x",
        ] {
            assert!(ClientFirst::parse(bad.as_bytes()).is_err(), "{bad}");
        }
        let cf = ClientFirst::parse(b"n,,n=a=2Cb=3Dc,r=xyz").unwrap();
        assert_eq!(cf.user, "a,b=c");
        assert!(ClientFirst::parse(b"n,a=other,n=u,r=x").is_err());
        assert!(ClientFirst::parse(b"n,a=u,n=u,r=x").is_ok());
    }
}
