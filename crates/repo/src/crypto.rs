//! Keys, identifiers and the sealing of every stored object.
//!
//! A repository has one random *master key set* made of two 256-bit keys: the encryption key
//! (random 24-byte nonce per object, so nonces never need coordination) and the id key (BLAKE3 in
//! keyed mode, so blob ids reveal nothing about content to someone without the key: equal ids only
//! tell that two blobs are equal inside this repository). The master key set is stored in
//! `keys/<id>` objects, each wrapped by a key derived from a password with argon2id (salt and cost
//! parameters stored beside it), so a password can change without re-encrypting data. In the
//! explicit no-encryption mode the master key set is stored in the clear and objects are stored
//! unsealed (but still hashed and checked).
//!
//! Sealed form, whichever [`Cipher`] the repository uses: `nonce (24 bytes) || ciphertext || tag
//! (16 bytes)`.
//!
//! - **XAES-256-GCM** ([C2SP](https://c2sp.org/XAES-256-GCM), the default of new repositories):
//!   AES-256-GCM under a key derived per object from the master key and the nonce's first 12
//!   bytes (two AES-256 blocks, a CMAC-style derivation), with the nonce's last 12 bytes. The
//!   derivation is what makes random 24-byte nonces safe with AES-GCM, whose own 12-byte nonces
//!   are too short to draw at random for a repository's lifetime of objects. The derivation uses
//!   the `aes` crate, the AEAD `ring`, whose AES-NI/VAES assembly seals about four times as fast
//!   as ChaCha20-Poly1305 on CPUs with AES instructions; a test checks every size against
//!   RustCrypto's `xaes-256-gcm` and the specification's vector.
//! - **XChaCha20-Poly1305** (repositories created before, and for CPUs without AES
//!   instructions), computed as its definition says (draft-irtf-cfrg-xchacha): HChaCha20 of the
//!   key and the nonce's first 16 bytes gives a subkey for ChaCha20-Poly1305 (RFC 8439) with the
//!   nonce's last 8 bytes. The subkey comes from the `chacha20` crate, the AEAD from `ring`; a
//!   test checks every size against RustCrypto's `XChaCha20Poly1305`.
//!
//! Key objects are always wrapped with XChaCha20-Poly1305: they are read before anything says
//! which cipher the repository uses, and they are small.

use aes::cipher::{BlockEncrypt, KeyInit};
use ring::aead::{AES_256_GCM, Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use serde::{Deserialize, Serialize};

use crate::error::{RepoError, Result};

/// Length of a sealed object's overhead (nonce + tag).
pub const SEAL_OVERHEAD: usize = NONCE_LEN + TAG_LEN;
/// Length of the random nonce that starts a sealed object.
const NONCE_LEN: usize = 24;
/// Length of the authentication tag that ends a sealed object.
const TAG_LEN: usize = 16;

/// A 32-byte identifier shown as 64 hex digits.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Id(pub [u8; 32]);

impl std::hash::Hash for Id {
    /// Ids are BLAKE3 outputs, already uniform: their first 8 bytes are hash enough.
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let mut first = [0u8; 8];
        first.copy_from_slice(&self.0[..8]);
        state.write_u64(u64::from_le_bytes(first));
    }
}

/// Hasher of maps and sets keyed by [`Id`] ([`IdMap`], [`IdSet`]): passes an id's first 8 bytes
/// through instead of running SipHash over 32 bytes for every chunk looked up. Ids are keyed or
/// content hashes, so nobody without the keys can choose colliding ones.
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only reached through other key types; fold the bytes in.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

/// A hash map keyed by [`Id`].
pub type IdMap<V> = std::collections::HashMap<Id, V, std::hash::BuildHasherDefault<IdHasher>>;
/// A hash set of [`Id`]s.
pub type IdSet = std::collections::HashSet<Id, std::hash::BuildHasherDefault<IdHasher>>;

impl Id {
    /// A fresh random id.
    pub fn random() -> Id {
        Id(rand::random())
    }
    /// Hex form.
    pub fn to_hex(&self) -> String {
        self.hex_digits().iter().map(|&d| char::from(d)).collect()
    }
    /// The 64 lowercase hex digits, without allocating (ids are formatted for every blob of a
    /// pack header and index).
    fn hex_digits(&self) -> [u8; 64] {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 64];
        for (pair, byte) in out.chunks_exact_mut(2).zip(self.0) {
            pair[0] = DIGITS[usize::from(byte >> 4)];
            pair[1] = DIGITS[usize::from(byte & 0x0f)];
        }
        out
    }
    fn with_hex<R>(&self, f: impl FnOnce(&str) -> R) -> R {
        let digits = self.hex_digits();
        // Hex digits are ASCII.
        f(std::str::from_utf8(&digits).unwrap_or_default())
    }
    /// Parses 64 hex digits (either case).
    pub fn from_hex(text: &str) -> Option<Id> {
        fn digit(c: u8) -> Option<u8> {
            match c {
                b'0'..=b'9' => Some(c - b'0'),
                b'a'..=b'f' => Some(c - b'a' + 10),
                b'A'..=b'F' => Some(c - b'A' + 10),
                _ => None,
            }
        }
        let text = text.as_bytes();
        if text.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (byte, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
            *byte = digit(pair[0])? << 4 | digit(pair[1])?;
        }
        Some(Id(out))
    }
    /// Unkeyed BLAKE3 of some bytes (used for pack names and namespace content hashes).
    pub fn hash(data: &[u8]) -> Id {
        Id(*blake3::hash(data).as_bytes())
    }
}

impl std::fmt::Display for Id {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.with_hex(|hex| f.write_str(hex))
    }
}

impl std::fmt::Debug for Id {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.with_hex(|hex| write!(f, "Id({})", &hex[..16]))
    }
}

impl Serialize for Id {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.with_hex(|hex| s.serialize_str(hex))
    }
}

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Id::from_hex(&text).ok_or_else(|| serde::de::Error::custom(format!("invalid id {text:?}")))
    }
}

/// The authenticated encryption that seals a repository's objects (see the module documentation).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Cipher {
    /// XChaCha20-Poly1305: what key files written before ciphers had names hold.
    #[default]
    #[serde(rename = "xchacha20poly1305")]
    XChaCha20Poly1305,
    /// XAES-256-GCM.
    #[serde(rename = "xaes-256-gcm")]
    Xaes256Gcm,
}

impl Cipher {
    /// Every cipher, for option parsing and messages.
    pub const ALL: [Cipher; 2] = [Cipher::Xaes256Gcm, Cipher::XChaCha20Poly1305];

    /// The name in `config` and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Cipher::XChaCha20Poly1305 => "xchacha20poly1305",
            Cipher::Xaes256Gcm => "xaes-256-gcm",
        }
    }

    /// The cipher named `name`.
    pub fn from_name(name: &str) -> Option<Cipher> {
        Cipher::ALL.into_iter().find(|c| c.name() == name)
    }

    /// Seals `buffer[NONCE_LEN..]` in place under `key` (see [`seal_in_place_with`]).
    fn seal_in_place(self, key: &[u8; 32], buffer: &mut Vec<u8>) {
        let nonce_bytes: [u8; NONCE_LEN] = rand::random();
        buffer[..NONCE_LEN].copy_from_slice(&nonce_bytes);
        // Sealing only fails for plaintexts beyond 64 GiB; without a tag, opening fails.
        if let Some((key, nonce)) = self.object_key(key, &nonce_bytes)
            && let Ok(tag) = key.seal_in_place_separate_tag(nonce, Aad::empty(), &mut buffer[NONCE_LEN..])
        {
            buffer.extend_from_slice(tag.as_ref());
        }
    }

    /// Opens `nonce || ciphertext || tag`; `None` when too short or not authentic.
    fn open(self, key: &[u8; 32], sealed: &[u8]) -> Option<Vec<u8>> {
        if sealed.len() < SEAL_OVERHEAD {
            return None;
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let (key, nonce) = self.object_key(key, nonce.try_into().ok()?)?;
        let mut plaintext = ciphertext.to_vec();
        let len = key.open_in_place(nonce, Aad::empty(), &mut plaintext).ok()?.len();
        plaintext.truncate(len);
        Some(plaintext)
    }

    /// The AEAD key and 12-byte nonce that seal the object of 24-byte `nonce`.
    /// (`ring` refuses only keys of another length than the algorithm's.)
    fn object_key(self, key: &[u8; 32], nonce: &[u8; NONCE_LEN]) -> Option<(LessSafeKey, Nonce)> {
        match self {
            Cipher::XChaCha20Poly1305 => {
                let (prefix, suffix) = nonce.split_at(16);
                let subkey = chacha20::hchacha::<chacha20::cipher::consts::U10>(key.into(), prefix.into());
                let mut short = [0u8; 12];
                short[4..].copy_from_slice(suffix);
                let key = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &subkey).ok()?);
                Some((key, Nonce::assume_unique_for_key(short)))
            }
            Cipher::Xaes256Gcm => {
                let (prefix, suffix) = nonce.split_at(12);
                let subkey = xaes_derive_key(key, prefix.try_into().ok()?);
                let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &subkey).ok()?);
                Some((key, Nonce::try_assume_unique_for_key(suffix).ok()?))
            }
        }
    }
}

/// XAES-256-GCM's per-nonce key (C2SP XAES-256-GCM, steps 1 to 4): with L = AES-256_K(0^128) and
/// K1 = L doubled in GF(2^128) (shifted left one bit, 0x87 folded in when the top bit was set),
/// the key is AES-256_K(K1 xor (0x00 0x01 "X" 0x00 || N)) || AES-256_K(K1 xor (0x00 0x02 "X" 0x00 || N)).
fn xaes_derive_key(key: &[u8; 32], nonce_prefix: &[u8; 12]) -> [u8; 32] {
    let aes = aes::Aes256::new(key.into());
    let mut l = aes::Block::default();
    aes.encrypt_block(&mut l);
    let top_bit_set = l[0] & 0x80 != 0;
    let mut k1 = [0u8; 16];
    for i in 0..16 {
        let carry = l.get(i + 1).map_or(0, |next| next >> 7);
        k1[i] = l[i] << 1 | carry;
    }
    if top_bit_set {
        k1[15] ^= 0x87;
    }
    let mut out = [0u8; 32];
    for (counter, half) in [1u8, 2].into_iter().zip(out.chunks_exact_mut(16)) {
        let mut block = aes::Block::default();
        block[..4].copy_from_slice(&[0, counter, b'X', 0]);
        block[4..].copy_from_slice(nonce_prefix);
        for (b, k) in block.iter_mut().zip(k1) {
            *b ^= k;
        }
        aes.encrypt_block(&mut block);
        half.copy_from_slice(&block);
    }
    out
}

/// The secret keys of a repository.
#[derive(Clone, Serialize, Deserialize)]
pub struct MasterKeys {
    /// Repository these keys belong to (checked against `config` on open).
    pub repository_id: Id,
    /// Encryption key, or `None` in no-encryption mode.
    pub encryption: Option<Id>,
    /// Cipher of the encryption key (absent in key files written before ciphers had names:
    /// XChaCha20-Poly1305). Kept in the key, where it is authenticated, and checked against
    /// `config`.
    #[serde(default)]
    pub cipher: Cipher,
    /// BLAKE3 key for blob ids.
    pub id_key: Id,
}

impl std::fmt::Debug for MasterKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterKeys")
            .field("repository_id", &self.repository_id)
            .finish_non_exhaustive()
    }
}

impl MasterKeys {
    /// Fresh random keys: sealing with `cipher`, or no encryption with `None`.
    pub fn generate(repository_id: Id, cipher: Option<Cipher>) -> MasterKeys {
        MasterKeys {
            repository_id,
            encryption: cipher.map(|_| Id::random()),
            cipher: cipher.unwrap_or_default(),
            id_key: Id::random(),
        }
    }

    /// Keyed BLAKE3 of plaintext: the id of a blob.
    pub fn blob_id(&self, plaintext: &[u8]) -> Id {
        Id(*blake3::keyed_hash(&self.id_key.0, plaintext).as_bytes())
    }

    /// [`MasterKeys::blob_id`] of every plaintext, in order, hashed together: several times
    /// faster than one by one for blobs of a few KiB (see the `many_hashes` module). `within`,
    /// when the plaintexts are slices of one buffer, is that buffer: less of them is copied.
    pub fn blob_ids(&self, plaintexts: &[&[u8]], within: Option<&[u8]>) -> Vec<Id> {
        crate::many_hashes::keyed_hashes(&self.id_key.0, plaintexts, within)
            .into_iter()
            .map(Id)
            .collect()
    }

    /// Seed of the chunker's gear table, derived from the id key.
    pub fn chunker_seed(&self) -> u64 {
        let hash = blake3::keyed_hash(&self.id_key.0, b"tidemark chunker seed");
        let mut first = [0u8; 8];
        first.copy_from_slice(&hash.as_bytes()[..8]);
        u64::from_le_bytes(first)
    }

    /// Key of the document cutter's decisions, derived from the id key.
    pub fn document_cut_key(&self) -> [u8; 32] {
        *blake3::keyed_hash(&self.id_key.0, b"tidemark document cut key").as_bytes()
    }

    /// Seals bytes (or returns them unchanged without encryption).
    pub fn seal(&self, plaintext: &[u8]) -> Vec<u8> {
        let mut buffer = self.seal_buffer(plaintext.len());
        buffer.extend_from_slice(plaintext);
        self.seal_in_place(&mut buffer);
        buffer
    }

    /// An empty buffer for [`MasterKeys::seal_in_place`]: room for the nonce (already in place),
    /// `capacity` bytes of plaintext and the tag, so sealing neither copies nor reallocates.
    pub fn seal_buffer(&self, capacity: usize) -> Vec<u8> {
        self.reuse_seal_buffer(Vec::new(), capacity)
    }

    /// [`MasterKeys::seal_buffer`] made of `buffer` (emptied first, grown if needed), for callers
    /// that keep buffers for reuse.
    pub fn reuse_seal_buffer(&self, mut buffer: Vec<u8>, capacity: usize) -> Vec<u8> {
        buffer.clear();
        match &self.encryption {
            None => buffer.reserve(capacity),
            Some(_) => {
                buffer.reserve(capacity + SEAL_OVERHEAD);
                buffer.resize(NONCE_LEN, 0);
            }
        }
        buffer
    }

    /// Seals a buffer from [`MasterKeys::seal_buffer`] holding the plaintext after the nonce room.
    pub fn seal_in_place(&self, buffer: &mut Vec<u8>) {
        if let Some(key) = &self.encryption {
            self.cipher.seal_in_place(&key.0, buffer);
        }
    }

    /// Opens sealed bytes; `object` names the object in the error.
    pub fn open(&self, sealed: &[u8], object: &str) -> Result<Vec<u8>> {
        match &self.encryption {
            None => Ok(sealed.to_vec()),
            Some(key) => self
                .cipher
                .open(&key.0, sealed)
                .ok_or_else(|| RepoError::corrupt(object, "authentication failed (modified or wrong key)")),
        }
    }
}

/// Seals with an explicit key, with XChaCha20-Poly1305 (key files).
pub fn seal_with(key: &[u8; 32], plaintext: &[u8]) -> Vec<u8> {
    let mut buffer = Vec::with_capacity(plaintext.len() + SEAL_OVERHEAD);
    buffer.resize(NONCE_LEN, 0);
    buffer.extend_from_slice(plaintext);
    Cipher::XChaCha20Poly1305.seal_in_place(key, &mut buffer);
    buffer
}

/// Opens what [`seal_with`] sealed; `None` when the data is too short or fails authentication.
pub fn open_with(key: &[u8; 32], sealed: &[u8]) -> Option<Vec<u8>> {
    Cipher::XChaCha20Poly1305.open(key, sealed)
}

/// argon2id cost parameters, stored in each key object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_cost: u32,
    /// Iterations.
    pub t_cost: u32,
    /// Parallelism.
    pub p_cost: u32,
}

impl Default for KdfParams {
    /// OWASP's first argon2id recommendation: 19 MiB, 2 iterations, 1 lane.
    fn default() -> Self {
        KdfParams {
            m_cost: 19 * 1024,
            t_cost: 2,
            p_cost: 1,
        }
    }
}

/// Derives a 32-byte key from a password with argon2id.
pub fn derive_key(password: &[u8], salt: &[u8], params: KdfParams) -> Result<[u8; 32]> {
    let p = argon2::Params::new(params.m_cost, params.t_cost, params.p_cost, Some(32)).map_err(|e| {
        RepoError::InvalidOption {
            option: "kdf",
            message: e.to_string(),
        }
    })?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, p);
    let mut out = [0u8; 32];
    argon
        .hash_password_into(password, salt, &mut out)
        .map_err(|e| RepoError::InvalidOption {
            option: "kdf",
            message: e.to_string(),
        })?;
    Ok(out)
}

/// The stored form of a key object (`keys/<id>`), as JSON in the clear.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyFile {
    /// Creation time (RFC 3339).
    pub created: String,
    /// Host that created the key.
    pub host: String,
    /// `argon2id` or `none` (no-encryption mode).
    pub kdf: String,
    /// argon2id costs (absent in no-encryption mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<KdfParams>,
    /// Salt, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub salt: Option<String>,
    /// Sealed JSON of the master keys (hex), or their JSON in the clear in no-encryption mode.
    pub data: String,
}

impl KeyFile {
    /// Wraps master keys with a password (argon2id) or stores them in the clear.
    pub fn wrap(
        keys: &MasterKeys,
        password: Option<&[u8]>,
        params: KdfParams,
        created: String,
        host: String,
    ) -> Result<Self> {
        let json = serde_json::to_vec(keys).map_err(|e| RepoError::Usage(format!("serialize keys: {e}")))?;
        match password {
            None => Ok(KeyFile {
                created,
                host,
                kdf: "none".into(),
                params: None,
                salt: None,
                data: String::from_utf8_lossy(&json).into_owned(),
            }),
            Some(pw) => {
                let salt: [u8; 16] = rand::random();
                let kek = derive_key(pw, &salt, params)?;
                Ok(KeyFile {
                    created,
                    host,
                    kdf: "argon2id".into(),
                    params: Some(params),
                    salt: Some(hex::encode(salt)),
                    data: hex::encode(seal_with(&kek, &json)),
                })
            }
        }
    }

    /// Unwraps the master keys; `Ok(None)` when the password does not open this key.
    pub fn unwrap_keys(&self, password: Option<&[u8]>, object: &str) -> Result<Option<MasterKeys>> {
        let json = match (self.kdf.as_str(), password) {
            ("none", None) => self.data.as_bytes().to_vec(),
            ("none", Some(_)) => {
                return Err(RepoError::PasswordMode(
                    "this repository is not encrypted; open it without a password (--insecure-no-password)".into(),
                ));
            }
            ("argon2id", None) => {
                return Err(RepoError::PasswordMode(
                    "this repository is encrypted; a password is required".into(),
                ));
            }
            ("argon2id", Some(pw)) => {
                let salt = self.salt.as_deref().and_then(|s| hex::decode(s).ok());
                let (Some(salt), Some(params)) = (salt, self.params) else {
                    return Err(RepoError::corrupt(object, "missing or invalid salt/params"));
                };
                let sealed = hex::decode(&self.data).map_err(|e| RepoError::corrupt(object, format!("data: {e}")))?;
                let kek = derive_key(pw, &salt, params)?;
                match open_with(&kek, &sealed) {
                    Some(json) => json,
                    None => return Ok(None),
                }
            }
            (other, _) => return Err(RepoError::corrupt(object, format!("unknown kdf {other:?}"))),
        };
        serde_json::from_slice(&json)
            .map(Some)
            .map_err(|e| RepoError::corrupt(object, format!("master keys: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_round_trip_and_tamper() {
        for cipher in Cipher::ALL {
            let keys = MasterKeys::generate(Id::random(), Some(cipher));
            let sealed = keys.seal(b"hello");
            assert_eq!(sealed.len(), 5 + SEAL_OVERHEAD);
            assert_eq!(keys.open(&sealed, "x").unwrap(), b"hello");
            let mut bad = sealed.clone();
            bad[30] ^= 1;
            assert!(keys.open(&bad, "x").is_err());
            assert!(keys.open(&sealed[..10], "x").is_err());
            // Sealing in place is the same construction.
            let mut buffer = keys.seal_buffer(5);
            buffer.extend_from_slice(b"hello");
            keys.seal_in_place(&mut buffer);
            assert_eq!(buffer.len(), 5 + SEAL_OVERHEAD);
            assert_eq!(keys.open(&buffer, "x").unwrap(), b"hello");
            // The same key under the other cipher opens nothing.
            let other = Cipher::ALL.into_iter().find(|c| *c != cipher).unwrap();
            let mut swapped = keys.clone();
            swapped.cipher = other;
            assert!(swapped.open(&sealed, "x").is_err(), "{cipher:?}");
        }
        // Without encryption sealing is the identity.
        let clear = MasterKeys::generate(Id::random(), None);
        assert_eq!(clear.seal(b"hello"), b"hello");
    }

    /// The specification's first test vector (C2SP XAES-256-GCM), and RustCrypto's
    /// `xaes-256-gcm` at every size around the AES block (16 bytes) and the sizes a backup seals.
    #[test]
    fn sealing_is_xaes_256_gcm() {
        use xaes_256_gcm::Xaes256Gcm;
        use xaes_256_gcm::aead::{Aead, KeyInit as _, Payload};
        let spec = Cipher::Xaes256Gcm;
        let key = [1u8; 32];
        let mut sealed = b"ABCDEFGHIJKLMNOPQRSTUVWX".to_vec();
        sealed.extend_from_slice(&hex::decode("ce546ef63c9cc60765923609b33a9a1974e96e52daf2fcf7075e2271").unwrap());
        assert_eq!(spec.open(&key, &sealed).as_deref(), Some(&b"XAES-256-GCM"[..]));

        let key: [u8; 32] = rand::random();
        let reference = Xaes256Gcm::new(&key.into());
        for len in (0..80).chain([1023, 1024, 2048, 4097, 65_536 + 7]) {
            let plaintext: Vec<u8> = (0..len).map(|_| rand::random()).collect();
            let mut sealed = vec![0u8; NONCE_LEN];
            sealed.extend_from_slice(&plaintext);
            spec.seal_in_place(&key, &mut sealed);
            let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
            let nonce: [u8; NONCE_LEN] = nonce.try_into().unwrap();
            let expected = reference
                .encrypt(
                    &nonce.into(),
                    Payload {
                        msg: &plaintext,
                        aad: b"",
                    },
                )
                .unwrap();
            assert_eq!(ciphertext, expected, "length {len}");
            let mut theirs = nonce.to_vec();
            theirs.extend_from_slice(&expected);
            assert_eq!(spec.open(&key, &theirs).as_deref(), Some(&plaintext[..]));
            let mut bad = sealed.clone();
            let last = bad.len() - 1;
            bad[last] ^= 0x80;
            assert_eq!(spec.open(&key, &bad), None);
        }
    }

    /// Key files written before ciphers had names hold XChaCha20-Poly1305 keys.
    #[test]
    fn keys_without_a_cipher_are_xchacha20_poly1305() {
        let keys = MasterKeys::generate(Id::random(), Some(Cipher::Xaes256Gcm));
        let mut json: serde_json::Value = serde_json::to_value(&keys).unwrap();
        assert_eq!(json["cipher"], "xaes-256-gcm");
        json.as_object_mut().unwrap().remove("cipher");
        let old: MasterKeys = serde_json::from_value(json).unwrap();
        assert_eq!(old.cipher, Cipher::XChaCha20Poly1305);
        assert_eq!(Cipher::from_name("xaes-256-gcm"), Some(Cipher::Xaes256Gcm));
        assert_eq!(Cipher::from_name("aes"), None);
    }

    /// The construction matches RustCrypto's XChaCha20-Poly1305 at every size around the
    /// ChaCha20 block (64 bytes) and Poly1305 block (16 bytes) boundaries.
    #[test]
    fn sealing_is_xchacha20_poly1305() {
        use chacha20poly1305::aead::{Aead, KeyInit, Payload};
        use chacha20poly1305::{XChaCha20Poly1305, XNonce};
        let key: [u8; 32] = rand::random();
        let reference = XChaCha20Poly1305::new((&key).into());
        for len in (0..300).chain([1023, 1024, 2048, 4097, 65_536 + 7]) {
            let plaintext: Vec<u8> = (0..len).map(|_| rand::random()).collect();
            let sealed = seal_with(&key, &plaintext);
            let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
            let expected = reference
                .encrypt(
                    XNonce::from_slice(nonce),
                    Payload {
                        msg: &plaintext,
                        aad: b"",
                    },
                )
                .unwrap();
            assert_eq!(ciphertext, expected, "length {len}");
            assert_eq!(open_with(&key, &sealed).as_deref(), Some(&plaintext[..]));
            let mut theirs = nonce.to_vec();
            theirs.extend_from_slice(&expected);
            assert_eq!(open_with(&key, &theirs).as_deref(), Some(&plaintext[..]));
            let mut bad = sealed.clone();
            let last = bad.len() - 1;
            bad[last] ^= 0x80;
            assert_eq!(open_with(&key, &bad), None);
        }
    }

    #[test]
    fn key_wrap_rejects_wrong_password() {
        let keys = MasterKeys::generate(Id::random(), Some(Cipher::Xaes256Gcm));
        let small = KdfParams {
            m_cost: 64,
            t_cost: 1,
            p_cost: 1,
        };
        let file = KeyFile::wrap(&keys, Some(b"right"), small, String::new(), String::new()).unwrap();
        assert!(file.unwrap_keys(Some(b"wrong"), "k").unwrap().is_none());
        let back = file.unwrap_keys(Some(b"right"), "k").unwrap().unwrap();
        assert_eq!(back.id_key, keys.id_key);
    }

    #[test]
    fn keyed_ids_depend_on_key() {
        let a = MasterKeys::generate(Id::random(), Some(Cipher::Xaes256Gcm));
        let b = MasterKeys::generate(Id::random(), Some(Cipher::Xaes256Gcm));
        assert_ne!(a.blob_id(b"x"), b.blob_id(b"x"));
        assert_ne!(a.blob_id(b"x"), Id::hash(b"x"));
        // BLAKE3 reference vector: hash of the empty input.
        let empty = "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262";
        assert_eq!(Id::hash(b"").to_hex(), empty);
        assert_eq!(Id::hash(b"").to_string(), empty);
        assert_eq!(serde_json::to_string(&Id::hash(b"")).unwrap(), format!("\"{empty}\""));
        assert_eq!(Id::from_hex(empty), Some(Id::hash(b"")));
        assert_eq!(Id::from_hex(&empty.to_uppercase()), Some(Id::hash(b"")));
        assert_eq!(Id::from_hex(&empty[1..]), None);
        assert_eq!(Id::from_hex(&format!("{}g", &empty[1..])), None);
    }
}
