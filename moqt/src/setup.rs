//! SETUP and its Setup Options (§10.3, §15.4).
//!
//! ```text
//! SETUP Message {
//!   Type (vi64) = 0x2F00,
//!   Length (16),
//!   Setup Options (..) ...,   -- Key-Value-Pairs filling the payload
//! }
//! ```
//! 0x2F00 is also the unidirectional stream type of a control stream
//! (§3.4): the SETUP message's type is the stream's type.

use bytes::{BufMut, Bytes};

use crate::error::DecodeError;
use crate::io::{check_decoded_len, DResult, EResult, Reader};
use crate::kvp::{encode_kvps, KeyValuePair, KvValue, MAX_KVP_VALUE_LEN};
use crate::params::AuthToken;

/// Setup Option types (§15.4 Table 10).
pub mod option_type {
    /// PATH, bytes (§10.3.1.2).
    pub const PATH: u64 = 0x01;
    /// AUTHORIZATION_TOKEN, Token (§10.3.1.4).
    pub const AUTHORIZATION_TOKEN: u64 = 0x03;
    /// MAX_AUTH_TOKEN_CACHE_SIZE, varint (§10.3.1.3).
    pub const MAX_AUTH_TOKEN_CACHE_SIZE: u64 = 0x04;
    /// AUTHORITY, bytes (§10.3.1.1).
    pub const AUTHORITY: u64 = 0x05;
    /// MOQT_IMPLEMENTATION, bytes (§10.3.1.5).
    pub const MOQT_IMPLEMENTATION: u64 = 0x07;
}

/// One Setup Option. Unknown options are kept verbatim: receivers "MUST
/// ignore" them (§10.3), and duplicates of unknown options are allowed.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum SetupOption {
    /// PATH (0x01): path-abempty and optional `?query` of the URI.
    Path(Bytes),
    /// AUTHORIZATION_TOKEN (0x03), may repeat.
    AuthorizationToken(AuthToken),
    /// MAX_AUTH_TOKEN_CACHE_SIZE (0x04), bytes; absent means 0.
    MaxAuthTokenCacheSize(u64),
    /// AUTHORITY (0x05): the URI authority.
    Authority(Bytes),
    /// MOQT_IMPLEMENTATION (0x07): implementation name and version.
    MoqtImplementation(Bytes),
    /// Any other option, including GREASE (§14).
    Unknown(KeyValuePair),
}

impl SetupOption {
    /// The option type.
    pub fn option_type(&self) -> u64 {
        match self {
            SetupOption::Path(_) => option_type::PATH,
            SetupOption::AuthorizationToken(_) => option_type::AUTHORIZATION_TOKEN,
            SetupOption::MaxAuthTokenCacheSize(_) => option_type::MAX_AUTH_TOKEN_CACHE_SIZE,
            SetupOption::Authority(_) => option_type::AUTHORITY,
            SetupOption::MoqtImplementation(_) => option_type::MOQT_IMPLEMENTATION,
            SetupOption::Unknown(kv) => kv.key,
        }
    }

    fn to_kvp(&self) -> EResult<KeyValuePair> {
        match self {
            SetupOption::Path(b) => KeyValuePair::bytes(option_type::PATH, b.clone()),
            SetupOption::AuthorizationToken(t) => {
                KeyValuePair::bytes(option_type::AUTHORIZATION_TOKEN, t.to_vec())
            }
            SetupOption::MaxAuthTokenCacheSize(v) => {
                KeyValuePair::varint(option_type::MAX_AUTH_TOKEN_CACHE_SIZE, *v)
            }
            SetupOption::Authority(b) => KeyValuePair::bytes(option_type::AUTHORITY, b.clone()),
            SetupOption::MoqtImplementation(b) => {
                KeyValuePair::bytes(option_type::MOQT_IMPLEMENTATION, b.clone())
            }
            SetupOption::Unknown(kv) => Ok(kv.clone()),
        }
    }
}

/// The SETUP message (§10.3).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Setup {
    /// The options, in wire (ascending type) order after decoding; encoding
    /// sorts them stably by type.
    pub options: Vec<SetupOption>,
}

impl Setup {
    /// The PATH option, if present.
    pub fn path(&self) -> Option<&Bytes> {
        self.options.iter().find_map(|o| match o {
            SetupOption::Path(b) => Some(b),
            _ => None,
        })
    }

    /// The AUTHORITY option, if present.
    pub fn authority(&self) -> Option<&Bytes> {
        self.options.iter().find_map(|o| match o {
            SetupOption::Authority(b) => Some(b),
            _ => None,
        })
    }

    /// The MOQT_IMPLEMENTATION option, if present.
    pub fn implementation(&self) -> Option<&Bytes> {
        self.options.iter().find_map(|o| match o {
            SetupOption::MoqtImplementation(b) => Some(b),
            _ => None,
        })
    }

    /// MAX_AUTH_TOKEN_CACHE_SIZE, 0 when absent (§10.3.1.3).
    pub fn max_auth_token_cache_size(&self) -> u64 {
        self.options
            .iter()
            .find_map(|o| match o {
                SetupOption::MaxAuthTokenCacheSize(v) => Some(*v),
                _ => None,
            })
            .unwrap_or(0)
    }

    /// All AUTHORIZATION_TOKEN options.
    pub fn authorization_tokens(&self) -> impl Iterator<Item = &AuthToken> {
        self.options.iter().filter_map(|o| match o {
            SetupOption::AuthorizationToken(t) => Some(t),
            _ => None,
        })
    }

    pub(crate) fn decode_payload(r: &mut Reader<'_>) -> DResult<Self> {
        // Key-Value-Pairs (§1.4.3) filling the payload; the Token of an
        // AUTHORIZATION_TOKEN option is parsed from its own bounded reader.
        let mut options = Vec::new();
        let mut prev = 0u64;
        while !r.is_empty() {
            let delta = r.varint()?;
            let key = prev.checked_add(delta).ok_or(DecodeError::Overflow {
                field: "setup option type",
            })?;
            prev = key;
            if key & 1 == 0 {
                let v = r.varint()?;
                options.push(match key {
                    option_type::MAX_AUTH_TOKEN_CACHE_SIZE => SetupOption::MaxAuthTokenCacheSize(v),
                    _ => SetupOption::Unknown(KeyValuePair {
                        key,
                        value: KvValue::Varint(v),
                    }),
                });
                continue;
            }
            let len = r.varint()?;
            check_decoded_len("setup option value", len, MAX_KVP_VALUE_LEN)?;
            if key == option_type::AUTHORIZATION_TOKEN {
                let mut sub = r.sub(len, "authorization token")?;
                options.push(SetupOption::AuthorizationToken(AuthToken::decode_all(
                    &mut sub,
                )?));
                continue;
            }
            let b = r.bytes(len)?;
            options.push(match key {
                option_type::PATH => SetupOption::Path(b),
                option_type::AUTHORITY => SetupOption::Authority(b),
                option_type::MOQT_IMPLEMENTATION => SetupOption::MoqtImplementation(b),
                _ => SetupOption::Unknown(KeyValuePair {
                    key,
                    value: KvValue::Bytes(b),
                }),
            });
        }
        Ok(Setup { options })
    }

    pub(crate) fn encode_payload<B: BufMut + ?Sized>(&self, buf: &mut B) -> EResult<()> {
        let kvps = self
            .options
            .iter()
            .map(SetupOption::to_kvp)
            .collect::<EResult<Vec<_>>>()?;
        encode_kvps(&kvps, buf)
    }
}
