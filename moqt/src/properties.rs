//! Track and Object Properties (§2.5, §11.2.1.2, §12).
//!
//! Properties are kept as raw [`KeyValuePair`]s so that a relay forwards
//! unknown ones unchanged (§2.5); the accessors below interpret the types
//! defined in §12, searching both the mutable list and the contents of
//! Immutable Properties as §12.7 requires.

use bytes::{BufMut, Bytes};

use crate::error::{DecodeError, EncodeError};
use crate::io::{self, put_varint, DResult, EResult, Reader};
use crate::kvp::{decode_kvps, encode_kvps, KeyValuePair, KvValue};
use crate::types::GroupOrder;

/// Property types defined by draft-18 (§12, §15.8 Table 14).
pub mod property_type {
    /// OBJECT_DELIVERY_TIMEOUT, Track, varint milliseconds (§12.2).
    pub const OBJECT_DELIVERY_TIMEOUT: u64 = 0x02;
    /// MAX_CACHE_DURATION, Track, varint milliseconds (§12.3).
    pub const MAX_CACHE_DURATION: u64 = 0x04;
    /// SUBGROUP_DELIVERY_TIMEOUT, Track, varint milliseconds (§12.1).
    pub const SUBGROUP_DELIVERY_TIMEOUT: u64 = 0x06;
    /// IMMUTABLE_PROPERTIES, Track or Object, nested pairs (§12.7).
    pub const IMMUTABLE_PROPERTIES: u64 = 0x0B;
    /// DEFAULT_PUBLISHER_PRIORITY, Track, 0..=255 (§12.4).
    pub const DEFAULT_PUBLISHER_PRIORITY: u64 = 0x0E;
    /// DEFAULT_PUBLISHER_GROUP_ORDER, Track, 1 or 2 (§12.5).
    pub const DEFAULT_PUBLISHER_GROUP_ORDER: u64 = 0x22;
    /// DYNAMIC_GROUPS, Track, 0 or 1 (§12.6).
    pub const DYNAMIC_GROUPS: u64 = 0x30;
    /// PRIOR_GROUP_ID_GAP, Object, varint (§12.8).
    pub const PRIOR_GROUP_ID_GAP: u64 = 0x3C;
    /// PRIOR_OBJECT_ID_GAP, Object, varint (§12.9).
    pub const PRIOR_OBJECT_ID_GAP: u64 = 0x3E;
    /// First type of the Mandatory Track Property range (§2.5.1).
    pub const MANDATORY_TRACK_FIRST: u64 = 0x4000;
    /// Last type of the Mandatory Track Property range (§2.5.1).
    pub const MANDATORY_TRACK_LAST: u64 = 0x7FFF;
}

/// Default Publisher Priority when the property is absent (§12.4).
pub const DEFAULT_PUBLISHER_PRIORITY: u8 = 128;

/// True for the Mandatory Track Property range 0x4000..=0x7FFF (§2.5.1).
pub const fn is_mandatory_track_property(key: u64) -> bool {
    key >= property_type::MANDATORY_TRACK_FIRST && key <= property_type::MANDATORY_TRACK_LAST
}

/// True for the property ranges reserved for applications, 0x38..=0x3F and
/// 0x3800..=0x3FFF (§2.5).
pub const fn is_application_property(key: u64) -> bool {
    matches!(key, 0x38..=0x3F | 0x3800..=0x3FFF)
}

/// A sequence of Properties, always kept in ascending type order (the only
/// order the delta encoding can express); equal types keep their relative
/// order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Properties {
    pairs: Vec<KeyValuePair>,
}

impl Properties {
    /// No properties.
    pub const fn new() -> Self {
        Properties { pairs: Vec::new() }
    }

    /// Properties from pairs in any order (sorted stably by type). Fails if
    /// a pair's value does not match its type's parity or is too long.
    pub fn from_pairs(pairs: Vec<KeyValuePair>) -> Result<Self, EncodeError> {
        let mut p = Properties::new();
        for pair in pairs {
            p.push(pair)?;
        }
        Ok(p)
    }

    /// Add a pair after any pairs of the same or lower type.
    pub fn push(&mut self, pair: KeyValuePair) -> Result<(), EncodeError> {
        // Validate with the same rules as the constructors.
        let pair = match pair.value {
            KvValue::Varint(v) => KeyValuePair::varint(pair.key, v)?,
            KvValue::Bytes(b) => KeyValuePair::bytes(pair.key, b)?,
        };
        let at = self.pairs.partition_point(|p| p.key <= pair.key);
        self.pairs.insert(at, pair);
        Ok(())
    }

    /// Remove every pair of type `key`, returning how many were removed.
    pub fn remove(&mut self, key: u64) -> usize {
        let before = self.pairs.len();
        self.pairs.retain(|p| p.key != key);
        before - self.pairs.len()
    }

    /// The pairs, in wire order.
    pub fn pairs(&self) -> &[KeyValuePair] {
        &self.pairs
    }

    /// The pairs, in wire order.
    pub fn into_pairs(self) -> Vec<KeyValuePair> {
        self.pairs
    }

    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// True if there are no pairs.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// Pairs of type `key` in the mutable list (not inside Immutable
    /// Properties).
    pub fn get(&self, key: u64) -> impl Iterator<Item = &KeyValuePair> {
        self.pairs.iter().filter(move |p| p.key == key)
    }

    /// Types in the Mandatory Track Property range (§2.5.1), for the
    /// UNSUPPORTED_EXTENSION check against the types a receiver understands.
    pub fn mandatory_track_properties(&self) -> impl Iterator<Item = u64> + '_ {
        self.pairs
            .iter()
            .map(|p| p.key)
            .filter(|&k| is_mandatory_track_property(k))
    }

    /// Contents of the Immutable Properties property (§12.7), if present.
    ///
    /// Errors are [`DecodeError::MalformedTrack`]: more than one instance,
    /// contents that cannot be parsed, or nested Immutable Properties.
    pub fn immutable(&self) -> Result<Option<Properties>, DecodeError> {
        let mut found = self.get(property_type::IMMUTABLE_PROPERTIES);
        let Some(first) = found.next() else {
            return Ok(None);
        };
        if found.next().is_some() {
            return Err(DecodeError::MalformedTrack {
                reason: "more than one Immutable Properties property",
            });
        }
        let empty = Bytes::new();
        let data = first.as_bytes().unwrap_or(&empty);
        let pairs = io::decode_all(data, "immutable properties", decode_kvps).map_err(|_| {
            DecodeError::MalformedTrack {
                reason: "Immutable Properties cannot be parsed",
            }
        })?;
        if pairs
            .iter()
            .any(|p| p.key == property_type::IMMUTABLE_PROPERTIES)
        {
            return Err(DecodeError::MalformedTrack {
                reason: "Immutable Properties inside Immutable Properties",
            });
        }
        Ok(Some(Properties { pairs }))
    }

    /// Build an Immutable Properties pair (type 0x0B) holding `inner`.
    pub fn immutable_pair(inner: &Properties) -> Result<KeyValuePair, EncodeError> {
        if inner
            .get(property_type::IMMUTABLE_PROPERTIES)
            .next()
            .is_some()
        {
            return Err(EncodeError::InvalidValue {
                field: "immutable properties",
                reason: "cannot contain Immutable Properties",
            });
        }
        let mut buf = Vec::new();
        encode_kvps(&inner.pairs, &mut buf)?;
        KeyValuePair::bytes(property_type::IMMUTABLE_PROPERTIES, buf)
    }

    /// Every varint value of type `key`, from the mutable list and then from
    /// Immutable Properties (§12.7).
    fn varints(&self, key: u64) -> Result<Vec<u64>, DecodeError> {
        let mut out: Vec<u64> = self.get(key).filter_map(KeyValuePair::as_varint).collect();
        if let Some(inner) = self.immutable()? {
            out.extend(inner.get(key).filter_map(KeyValuePair::as_varint));
        }
        Ok(out)
    }

    fn first_varint(&self, key: u64) -> Result<Option<u64>, DecodeError> {
        Ok(self.varints(key)?.first().copied())
    }

    fn single_varint(&self, key: u64, reason: &'static str) -> Result<Option<u64>, DecodeError> {
        let v = self.varints(key)?;
        if v.len() > 1 {
            return Err(DecodeError::MalformedTrack { reason });
        }
        Ok(v.first().copied())
    }

    /// OBJECT_DELIVERY_TIMEOUT in milliseconds (§12.2).
    pub fn object_delivery_timeout(&self) -> Result<Option<u64>, DecodeError> {
        self.first_varint(property_type::OBJECT_DELIVERY_TIMEOUT)
    }

    /// SUBGROUP_DELIVERY_TIMEOUT in milliseconds (§12.1).
    pub fn subgroup_delivery_timeout(&self) -> Result<Option<u64>, DecodeError> {
        self.first_varint(property_type::SUBGROUP_DELIVERY_TIMEOUT)
    }

    /// MAX_CACHE_DURATION in milliseconds (§12.3).
    pub fn max_cache_duration(&self) -> Result<Option<u64>, DecodeError> {
        self.first_varint(property_type::MAX_CACHE_DURATION)
    }

    /// DEFAULT_PUBLISHER_PRIORITY (§12.4); values above 255 are invalid.
    pub fn default_publisher_priority(&self) -> Result<Option<u8>, DecodeError> {
        match self.first_varint(property_type::DEFAULT_PUBLISHER_PRIORITY)? {
            None => Ok(None),
            Some(v) => u8::try_from(v)
                .map(Some)
                .map_err(|_| DecodeError::InvalidValue {
                    field: "default publisher priority",
                    value: v,
                }),
        }
    }

    /// DEFAULT_PUBLISHER_GROUP_ORDER (§12.5); values other than 1 and 2
    /// are a PROTOCOL_VIOLATION.
    pub fn default_publisher_group_order(&self) -> Result<Option<GroupOrder>, DecodeError> {
        self.first_varint(property_type::DEFAULT_PUBLISHER_GROUP_ORDER)?
            .map(GroupOrder::from_code)
            .transpose()
    }

    /// DYNAMIC_GROUPS (§12.6); values above 1 are a PROTOCOL_VIOLATION.
    pub fn dynamic_groups(&self) -> Result<Option<bool>, DecodeError> {
        match self.first_varint(property_type::DYNAMIC_GROUPS)? {
            None => Ok(None),
            Some(0) => Ok(Some(false)),
            Some(1) => Ok(Some(true)),
            Some(value) => Err(DecodeError::InvalidValue {
                field: "dynamic groups",
                value,
            }),
        }
    }

    /// PRIOR_GROUP_ID_GAP (§12.8); more than one instance makes the track
    /// malformed.
    pub fn prior_group_id_gap(&self) -> Result<Option<u64>, DecodeError> {
        self.single_varint(
            property_type::PRIOR_GROUP_ID_GAP,
            "more than one Prior Group ID Gap property",
        )
    }

    /// PRIOR_OBJECT_ID_GAP (§12.9); more than one instance makes the track
    /// malformed.
    pub fn prior_object_id_gap(&self) -> Result<Option<u64>, DecodeError> {
        self.single_varint(
            property_type::PRIOR_OBJECT_ID_GAP,
            "more than one Prior Object ID Gap property",
        )
    }

    /// The malformed-track checks that apply to Object Properties: no
    /// Mandatory Track Property (§2.5.1), at most one well-formed,
    /// non-nested Immutable Properties (§12.7), at most one Prior Group ID
    /// Gap and one Prior Object ID Gap (§12.8, §12.9). Errors are
    /// [`DecodeError::MalformedTrack`].
    pub fn validate_object_properties(&self) -> Result<(), DecodeError> {
        let inner = self.immutable()?;
        let all = self
            .pairs
            .iter()
            .chain(inner.iter().flat_map(|p| p.pairs.iter()));
        if all.map(|p| p.key).any(is_mandatory_track_property) {
            return Err(DecodeError::MalformedTrack {
                reason: "Mandatory Track Property on an object",
            });
        }
        self.prior_group_id_gap()?;
        self.prior_object_id_gap()?;
        Ok(())
    }

    /// Properties occupying the rest of `r` (Track Properties, §2.5).
    pub(crate) fn decode_rest(r: &mut Reader<'_>) -> DResult<Self> {
        Ok(Properties {
            pairs: decode_kvps(r)?,
        })
    }

    /// `Properties Length (vi64), Properties (..)` (Object Properties,
    /// §11.2.1.2).
    pub(crate) fn decode_prefixed(r: &mut Reader<'_>) -> DResult<Self> {
        let len = r.varint()?;
        let mut sub = r.sub(len, "object properties")?;
        Properties::decode_rest(&mut sub)
    }

    pub(crate) fn encode_rest<B: BufMut + ?Sized>(&self, buf: &mut B) -> EResult<()> {
        encode_kvps(&self.pairs, buf)
    }

    pub(crate) fn encode_prefixed<B: BufMut + ?Sized>(&self, buf: &mut B) -> EResult<()> {
        let mut tmp = Vec::new();
        encode_kvps(&self.pairs, &mut tmp)?;
        put_varint(buf, tmp.len() as u64);
        buf.put_slice(&tmp);
        Ok(())
    }
}
