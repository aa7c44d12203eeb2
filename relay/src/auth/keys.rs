//! Keys: what verifies tokens (an HMAC secret, or a PEM public key) and
//! what signs them (the same secret, or a PEM private key), read from the
//! bytes of a key file. The file's form decides the algorithms.

use anyhow::{bail, Context};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, EncodingKey, Header};

use super::Claims;

/// Shortest HMAC secret accepted: RFC 7518 §3.2 asks for at least the hash
/// size (32 bytes for HS256).
pub const MIN_SECRET_BYTES: usize = 32;

const PEM_START: &[u8] = b"-----BEGIN";

/// A key that verifies tokens, with the algorithms it accepts.
pub struct VerifyKey {
    key: DecodingKey,
    family: AlgorithmFamily,
}

impl VerifyKey {
    /// From a key file's bytes: a PEM public key (`PUBLIC KEY` of an EC,
    /// Ed25519 or RSA key, or `RSA PUBLIC KEY`), or else an HMAC secret (the
    /// file's bytes without trailing whitespace, at least
    /// [`MIN_SECRET_BYTES`]).
    pub fn from_bytes(bytes: &[u8]) -> anyhow::Result<Self> {
        if !is_pem(bytes) {
            let secret = secret(bytes)?;
            return Ok(Self {
                key: DecodingKey::from_secret(secret),
                family: AlgorithmFamily::Hmac,
            });
        }
        if pem_label(bytes).is_some_and(|l| l.contains("PRIVATE")) {
            bail!(
                "a private key: verification needs the public key \
                 (openssl pkey -in KEY -pubout)"
            );
        }
        let (key, family) = if let Ok(k) = DecodingKey::from_ec_pem(bytes) {
            (k, AlgorithmFamily::Ec)
        } else if let Ok(k) = DecodingKey::from_ed_pem(bytes) {
            (k, AlgorithmFamily::Ed)
        } else if let Ok(k) = DecodingKey::from_rsa_pem(bytes) {
            (k, AlgorithmFamily::Rsa)
        } else {
            bail!("not an EC, Ed25519 or RSA public key in PEM");
        };
        Ok(Self { key, family })
    }

    /// The `alg` values this key verifies (its family's).
    pub fn algorithms(&self) -> &'static [Algorithm] {
        family_algorithms(self.family)
    }

    pub(super) fn decoding(&self) -> &DecodingKey {
        &self.key
    }
}

/// A key that signs tokens (for `fastrelay token` and tests).
pub struct SigningKey {
    key: EncodingKey,
    algorithm: Algorithm,
}

impl SigningKey {
    /// From a key file's bytes: a PKCS#8 PEM private key (EC P-256 signs
    /// ES256, Ed25519 EdDSA, RSA RS256), or else an HMAC secret (HS256), as
    /// for [`VerifyKey::from_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> anyhow::Result<Self> {
        if !is_pem(bytes) {
            return Ok(Self {
                key: EncodingKey::from_secret(secret(bytes)?),
                algorithm: Algorithm::HS256,
            });
        }
        let (key, algorithm) = if let Ok(k) = EncodingKey::from_ec_pem(bytes) {
            (k, Algorithm::ES256)
        } else if let Ok(k) = EncodingKey::from_ed_pem(bytes) {
            (k, Algorithm::EdDSA)
        } else if let Ok(k) = EncodingKey::from_rsa_pem(bytes) {
            (k, Algorithm::RS256)
        } else {
            bail!(
                "not a PKCS#8 EC, Ed25519 or RSA private key in PEM \
                 (convert with openssl pkcs8 -topk8 -nocrypt)"
            );
        };
        Ok(Self { key, algorithm })
    }

    /// Signs with another algorithm of the key's family (ES384 for a P-384
    /// key, HS512...).
    pub fn with_algorithm(mut self, algorithm: Algorithm) -> anyhow::Result<Self> {
        if !family_algorithms(self.key.family()).contains(&algorithm) {
            bail!("{algorithm:?} does not fit this key");
        }
        self.algorithm = algorithm;
        Ok(self)
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
}

/// A signed token carrying `claims`.
pub fn mint(key: &SigningKey, claims: &Claims) -> anyhow::Result<String> {
    jsonwebtoken::encode(&Header::new(key.algorithm), claims, &key.key).context("signing the token")
}

fn family_algorithms(family: AlgorithmFamily) -> &'static [Algorithm] {
    match family {
        AlgorithmFamily::Hmac => &[Algorithm::HS256, Algorithm::HS384, Algorithm::HS512],
        AlgorithmFamily::Rsa => &[
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::PS384,
            Algorithm::PS512,
        ],
        AlgorithmFamily::Ec => &[Algorithm::ES256, Algorithm::ES384],
        AlgorithmFamily::Ed => &[Algorithm::EdDSA],
    }
}

fn is_pem(bytes: &[u8]) -> bool {
    bytes.trim_ascii_start().starts_with(PEM_START)
}

/// The label of the first PEM block (`PUBLIC KEY`, `EC PRIVATE KEY`...).
fn pem_label(bytes: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(bytes.trim_ascii_start()).ok()?;
    let rest = text.strip_prefix("-----BEGIN ")?;
    Some(rest[..rest.find("-----")?].to_string())
}

fn secret(bytes: &[u8]) -> anyhow::Result<&[u8]> {
    // `echo secret > file` leaves a newline that is not part of the secret.
    let s = bytes.trim_ascii_end();
    if s.len() < MIN_SECRET_BYTES {
        bail!(
            "an HMAC secret of {} bytes; at least {MIN_SECRET_BYTES} are needed",
            s.len()
        );
    }
    Ok(s)
}
