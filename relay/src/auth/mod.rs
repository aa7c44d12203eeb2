//! Authorization of publishers and subscribers with JWTs (draft-18
//! §10.2.2, §10.3.1.4), sans-IO: bytes and a clock reading in, a decision
//! out. The glue (`app::authz`) asks before a request reaches the engine,
//! so the engine never sees an unauthorized request.
//!
//! A token is an AUTHORIZATION TOKEN of Token Type 0 (the draft's "negotiated
//! out of band") whose value is a compact JWS (a JWT). Its claims name what
//! may be published and subscribed, by namespace prefix (see [`Claims`] and
//! docs/auth.md). Tokens come in the client's SETUP (session-wide) or in the
//! request itself (USE_VALUE). The relay offers no token cache (it sends no
//! MAX_AUTH_TOKEN_CACHE_SIZE, so the peer's limit is 0): REGISTER in SETUP is
//! taken as USE_VALUE (§10.3.1.4), REGISTER in a request overflows the cache
//! (AUTH_TOKEN_CACHE_OVERFLOW), and USE_ALIAS or DELETE name an alias that
//! cannot exist (UNKNOWN_AUTH_TOKEN_ALIAS; in SETUP, PROTOCOL_VIOLATION).
//!
//! Verification is bounded: a token longer than
//! [`AuthConfig::max_token_bytes`] is refused unread, and at most
//! [`MAX_TOKENS_PER_MESSAGE`] tokens of a message are verified.

mod keys;
#[cfg(test)]
mod tests;

use std::sync::{
    atomic::{AtomicU64, Ordering},
    Arc, RwLock,
};

use bytes::Bytes;
use jsonwebtoken::{errors::ErrorKind, Validation};
use moqt::{
    params::AuthToken, setup::Setup, RequestErrorCode, SessionErrorCode, TrackNamespace,
    MAX_NAMESPACE_FIELDS,
};
use serde::{Deserialize, Serialize};

pub use keys::{mint, SigningKey, VerifyKey};

/// The Token Type of a JWT: 0, "negotiated out-of-band" (§15.6); no type is
/// registered for JWTs. Tokens of other types are not this relay's and are
/// ignored.
pub const JWT_TOKEN_TYPE: u64 = 0;
/// Default for [`AuthConfig::max_token_bytes`].
pub const DEFAULT_MAX_TOKEN_BYTES: usize = 4096;
/// Default for [`AuthConfig::leeway_secs`].
pub const DEFAULT_LEEWAY_SECS: u64 = 5;
/// Most JWTs verified for one SETUP or request; more refuse it (each costs a
/// signature check against every key of its algorithm).
pub const MAX_TOKENS_PER_MESSAGE: usize = 4;

/// What a request asks to do with a namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// PUBLISH_NAMESPACE, PUBLISH.
    Publish,
    /// SUBSCRIBE, FETCH, TRACK_STATUS, SUBSCRIBE_NAMESPACE, SUBSCRIBE_TRACKS.
    Subscribe,
}

/// The claims of a token. `publish` and `subscribe` are lists of namespace
/// prefixes, each a list of namespace fields compared element-wise; an empty
/// prefix (`[]`) grants every namespace. `exp` (seconds since the epoch) is
/// required; `nbf` is honoured. Not `sub`: that is JWT's subject claim.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub publish: Vec<Vec<String>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subscribe: Vec<Vec<String>>,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
}

/// Why a token or a request was refused; each maps to the draft's code for
/// a request (REQUEST_ERROR) and for SETUP (session termination).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("an authorization token is required")]
    Missing,
    #[error("malformed authorization token: {0}")]
    Malformed(&'static str),
    #[error("authorization token of {0} bytes is over the limit")]
    TooLarge(usize),
    #[error("more than {MAX_TOKENS_PER_MESSAGE} authorization tokens")]
    TooMany,
    #[error("token signature not valid for any configured key")]
    BadSignature,
    #[error("token algorithm not accepted")]
    Algorithm,
    #[error("authorization token expired")]
    Expired,
    #[error("authorization token not yet valid")]
    NotYetValid,
    #[error("namespace not granted by the authorization token")]
    NotGranted,
    #[error("the token names an audience (aud); this relay accepts none")]
    Audience,
}

impl Refusal {
    /// The REQUEST_ERROR code (§10.6.2).
    pub fn request_code(&self) -> RequestErrorCode {
        match self {
            Refusal::Malformed(_) | Refusal::TooLarge(_) => RequestErrorCode::MalformedAuthToken,
            Refusal::Expired => RequestErrorCode::ExpiredAuthToken,
            // §10.6.2: UNAUTHORIZED "might be retryable if the
            // authorization token is not yet valid".
            _ => RequestErrorCode::Unauthorized,
        }
    }

    /// The session termination code for a token in SETUP (§3.5).
    pub fn session_code(&self) -> SessionErrorCode {
        match self {
            Refusal::Malformed(_) | Refusal::TooLarge(_) => SessionErrorCode::MalformedAuthToken,
            Refusal::Expired => SessionErrorCode::ExpiredAuthToken,
            _ => SessionErrorCode::Unauthorized,
        }
    }
}

/// A request refused: with REQUEST_ERROR, or (a token alias the relay
/// cannot have) by closing the session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Denied {
    Request(Refusal),
    Session {
        code: SessionErrorCode,
        reason: &'static str,
    },
}

/// Verification bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuthConfig {
    /// Longest token value accepted (bytes); longer ones are refused
    /// (MALFORMED_AUTH_TOKEN) before any parsing.
    pub max_token_bytes: usize,
    /// Clock skew tolerated on `exp` and `nbf` (seconds).
    pub leeway_secs: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            max_token_bytes: DEFAULT_MAX_TOKEN_BYTES,
            leeway_secs: DEFAULT_LEEWAY_SECS,
        }
    }
}

/// What a valid token grants, until `expires`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Grants {
    publish: Vec<Vec<Bytes>>,
    subscribe: Vec<Vec<Bytes>>,
    expires: u64,
}

impl Grants {
    /// Whether `access` to `namespace` (or, for a prefix request, to every
    /// namespace under it) is granted.
    pub fn allows(&self, access: Access, namespace: &TrackNamespace) -> bool {
        let prefixes = match access {
            Access::Publish => &self.publish,
            Access::Subscribe => &self.subscribe,
        };
        prefixes
            .iter()
            .any(|p| namespace.fields().starts_with(p.as_slice()))
    }

    /// When the grant ends (seconds since the epoch).
    pub fn expires(&self) -> u64 {
        self.expires
    }
}

/// The grants of a session's SETUP tokens, and the authorizer they answer to.
pub struct SessionAuth {
    authorizer: Arc<Authorizer>,
    grants: Vec<Grants>,
}

impl SessionAuth {
    pub fn new(authorizer: Arc<Authorizer>) -> Self {
        Self {
            authorizer,
            grants: Vec::new(),
        }
    }

    /// The peer's SETUP: its tokens are verified and kept for the session.
    /// An error is the code and reason to close the session with.
    pub fn admit(&mut self, setup: &Setup, now: u64) -> Result<(), (SessionErrorCode, String)> {
        let result = self.authorizer.admit(setup, now);
        let counters = &self.authorizer.counters;
        match result {
            Ok(grants) => {
                counters.sessions_admitted.fetch_add(1, Ordering::Relaxed);
                self.grants = grants;
                Ok(())
            }
            Err(e) => {
                counters.sessions_refused.fetch_add(1, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    /// May a request carrying `tokens` have `access` to `namespace`?
    pub fn check(
        &self,
        tokens: &[AuthToken],
        access: Access,
        namespace: &TrackNamespace,
        now: u64,
    ) -> Result<(), Denied> {
        let result = self
            .authorizer
            .check(&self.grants, tokens, access, namespace, now);
        let counter = match result {
            Ok(()) => &self.authorizer.counters.requests_authorized,
            Err(_) => &self.authorizer.counters.requests_refused,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        result
    }
}

/// Totals over every session of every worker sharing one [`Authorizer`].
#[derive(Debug, Default)]
struct AuthCounters {
    sessions_admitted: AtomicU64,
    sessions_refused: AtomicU64,
    requests_authorized: AtomicU64,
    requests_refused: AtomicU64,
}

/// A snapshot of the authorization counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct AuthCounts {
    /// Sessions whose SETUP tokens (if any) were valid.
    pub sessions_admitted: u64,
    /// Sessions closed for their SETUP tokens.
    pub sessions_refused: u64,
    pub requests_authorized: u64,
    /// Requests refused with REQUEST_ERROR, or whose session was closed
    /// for a token alias.
    pub requests_refused: u64,
}

/// The relay's verifier: the configured keys and bounds, shared by every
/// worker (it holds only atomics besides the keys). The keys may be
/// replaced while workers verify (SIGHUP); a verification takes them under
/// a read lock once per token, never per object.
pub struct Authorizer {
    keys: RwLock<Arc<Vec<VerifyKey>>>,
    config: AuthConfig,
    counters: AuthCounters,
}

impl Authorizer {
    /// Needs at least one key: a relay without keys does no authorization
    /// (and has no `Authorizer`).
    pub fn new(keys: Vec<VerifyKey>, config: AuthConfig) -> anyhow::Result<Self> {
        anyhow::ensure!(!keys.is_empty(), "authorization needs at least one key");
        anyhow::ensure!(
            config.max_token_bytes > 0,
            "the token size limit must be positive"
        );
        Ok(Self {
            keys: RwLock::new(Arc::new(keys)),
            config,
            counters: AuthCounters::default(),
        })
    }

    /// Verifies with `keys` from now on (key rotation); tokens signed
    /// with a key no longer listed are refused. Sessions and requests
    /// already authorized are not re-checked.
    pub fn replace_keys(&self, keys: Vec<VerifyKey>) -> anyhow::Result<()> {
        anyhow::ensure!(!keys.is_empty(), "authorization needs at least one key");
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(keys);
        Ok(())
    }

    pub fn counts(&self) -> AuthCounts {
        let c = &self.counters;
        AuthCounts {
            sessions_admitted: c.sessions_admitted.load(Ordering::Relaxed),
            sessions_refused: c.sessions_refused.load(Ordering::Relaxed),
            requests_authorized: c.requests_authorized.load(Ordering::Relaxed),
            requests_refused: c.requests_refused.load(Ordering::Relaxed),
        }
    }

    /// Verifies one token value at `now` (seconds since the epoch).
    pub fn verify(&self, token: &[u8], now: u64) -> Result<Grants, Refusal> {
        if token.len() > self.config.max_token_bytes {
            return Err(Refusal::TooLarge(token.len()));
        }
        let header =
            jsonwebtoken::decode_header(token).map_err(|_| Refusal::Malformed("not a JWT"))?;
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner()).clone();
        let mut candidates = keys
            .iter()
            .filter(|k| k.algorithms().contains(&header.alg))
            .peekable();
        if candidates.peek().is_none() {
            return Err(Refusal::Algorithm);
        }
        let mut claims = None;
        for key in candidates {
            let mut v = Validation::new(header.alg);
            // Times are checked below against the caller's clock.
            v.validate_exp = false;
            v.validate_nbf = false;
            v.required_spec_claims.clear();
            match jsonwebtoken::decode::<Claims>(token, key.decoding(), &v) {
                Ok(data) => {
                    claims = Some(data.claims);
                    break;
                }
                Err(e) => match e.kind() {
                    ErrorKind::InvalidSignature
                    | ErrorKind::InvalidAlgorithm
                    | ErrorKind::InvalidEcdsaKey
                    | ErrorKind::InvalidEddsaKey
                    | ErrorKind::InvalidRsaKey(_)
                    | ErrorKind::InvalidKeyFormat => continue,
                    // Signed by our key but meant for someone else: the
                    // relay has no audience of its own.
                    ErrorKind::InvalidAudience => return Err(Refusal::Audience),
                    // Shape, encoding or claims: the signature part held,
                    // or never could be checked.
                    _ => return Err(Refusal::Malformed("bad encoding or claims")),
                },
            }
        }
        let claims = claims.ok_or(Refusal::BadSignature)?;
        let leeway = self.config.leeway_secs;
        if claims
            .nbf
            .is_some_and(|nbf| now.saturating_add(leeway) < nbf)
        {
            return Err(Refusal::NotYetValid);
        }
        if now >= claims.exp.saturating_add(leeway) {
            return Err(Refusal::Expired);
        }
        Ok(Grants {
            publish: prefixes(&claims.publish)?,
            subscribe: prefixes(&claims.subscribe)?,
            expires: claims.exp.saturating_add(leeway),
        })
    }

    /// The tokens of a SETUP: every JWT must be valid.
    fn admit(&self, setup: &Setup, now: u64) -> Result<Vec<Grants>, (SessionErrorCode, String)> {
        let mut values = Vec::new();
        for t in setup.authorization_tokens() {
            match t {
                AuthToken::Delete { .. } | AuthToken::UseAlias { .. } => {
                    // §10.2.2: nothing can be registered before SETUP.
                    return Err((
                        SessionErrorCode::ProtocolViolation,
                        "token alias used in SETUP".into(),
                    ));
                }
                // §10.3.1.4: a REGISTER over our cache size (0) is USE_VALUE.
                AuthToken::Register {
                    token_type, value, ..
                }
                | AuthToken::UseValue { token_type, value } => {
                    if *token_type == JWT_TOKEN_TYPE {
                        values.push(value);
                    }
                }
            }
        }
        if values.len() > MAX_TOKENS_PER_MESSAGE {
            let r = Refusal::TooMany;
            return Err((r.session_code(), r.to_string()));
        }
        values
            .into_iter()
            .map(|v| self.verify(v, now))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|r| (r.session_code(), r.to_string()))
    }

    fn check(
        &self,
        session: &[Grants],
        tokens: &[AuthToken],
        access: Access,
        namespace: &TrackNamespace,
        now: u64,
    ) -> Result<(), Denied> {
        let mut values = Vec::new();
        for t in tokens {
            match t {
                AuthToken::Register { .. } => {
                    // The relay's cache size is 0 (no MAX_AUTH_TOKEN_CACHE_SIZE).
                    return Err(Denied::Session {
                        code: SessionErrorCode::AuthTokenCacheOverflow,
                        reason: "this relay registers no token aliases",
                    });
                }
                AuthToken::UseAlias { .. } | AuthToken::Delete { .. } => {
                    return Err(Denied::Session {
                        code: SessionErrorCode::UnknownAuthTokenAlias,
                        reason: "no token alias is registered",
                    });
                }
                AuthToken::UseValue { token_type, value } => {
                    if *token_type == JWT_TOKEN_TYPE {
                        values.push(value);
                    }
                }
            }
        }
        if values.len() > MAX_TOKENS_PER_MESSAGE {
            return Err(Denied::Request(Refusal::TooMany));
        }
        let mut granted = false;
        for v in values {
            let grants = self.verify(v, now).map_err(Denied::Request)?;
            granted |= grants.allows(access, namespace);
        }
        if granted {
            return Ok(());
        }
        let mut expired = false;
        for g in session.iter().filter(|g| g.allows(access, namespace)) {
            if now < g.expires {
                return Ok(());
            }
            expired = true;
        }
        let refusal = if expired {
            Refusal::Expired
        } else if session.is_empty() && tokens.is_empty() {
            Refusal::Missing
        } else {
            Refusal::NotGranted
        };
        Err(Denied::Request(refusal))
    }
}

/// The claim's prefixes as namespace fields, held to the draft's limits.
fn prefixes(claim: &[Vec<String>]) -> Result<Vec<Vec<Bytes>>, Refusal> {
    claim
        .iter()
        .map(|p| {
            if p.len() > MAX_NAMESPACE_FIELDS || p.iter().any(String::is_empty) {
                return Err(Refusal::Malformed("namespace prefix"));
            }
            Ok(p.iter()
                .map(|f| Bytes::copy_from_slice(f.as_bytes()))
                .collect())
        })
        .collect()
}
