//! Objects we send (§11): one unidirectional stream per (alias, group,
//! subgroup), objects written whole or in parts (cut-through), datagrams,
//! and the FETCH_HEADER stream answering a peer's FETCH.
//!
//! Each object costs a small header write; its payload `Bytes` goes to the
//! driver untouched. Whether an alias is ours is checked by the caller.

use std::collections::HashMap;

use super::outbox::Outbox;
use super::stream::Kind;
use super::table::StreamTable;
use super::{
    Command, Event, OutgoingObject, PayloadPart, RequestId, SessionError, StreamFlags, StreamRef,
};
use crate::codes::StreamResetCode;
use crate::data::datagram::ObjectDatagram;
use crate::data::fetch::{EndOfRange, FetchEncoder, FetchHeader, FetchObject, FetchObjectHeader};
use crate::data::subgroup::{SubgroupEncoder, SubgroupHeader, SubgroupId, SubgroupObjectHeader};
use crate::error::EncodeError;
use crate::types::GroupOrder;

/// (Track Alias, Group ID, Subgroup ID).
type SubgroupKey = (u64, u64, u64);

/// Our open subgroup streams.
///
/// The stream used last is kept outside the map: a subscriber's objects
/// mostly follow each other on one subgroup, so most objects find their
/// stream without hashing (the key's group and subgroup are the
/// publisher's choice, hence a keyed hash for the rest).
#[derive(Debug, Default)]
pub(super) struct ObjectStreams {
    last: Option<(SubgroupKey, OutSubgroup)>,
    subgroups: HashMap<SubgroupKey, OutSubgroup>,
    /// Subgroup streams opened since the session began.
    opened: u64,
}

#[derive(Debug)]
struct OutSubgroup {
    stream: StreamRef,
    enc: SubgroupEncoder,
    /// An object sent in parts and not complete yet. Nothing else may
    /// follow it on the stream.
    unfinished: Option<Unfinished>,
}

#[derive(Debug)]
struct Unfinished {
    object_id: u64,
    /// Payload bytes written so far.
    written: u64,
    /// The payload length its header declared.
    length: u64,
}

impl ObjectStreams {
    pub(super) fn len(&self) -> usize {
        self.subgroups.len() + usize::from(self.last.is_some())
    }

    pub(super) fn opened(&self) -> u64 {
        self.opened
    }

    pub(super) fn clear(&mut self) {
        self.last = None;
        self.subgroups.clear();
    }

    /// The open subgroup `key`, made the one used last.
    fn get_mut(&mut self, key: SubgroupKey) -> Option<&mut OutSubgroup> {
        if self.last.as_ref().is_none_or(|(k, _)| *k != key) {
            let sub = self.subgroups.remove(&key)?;
            if let Some((k, previous)) = self.last.replace((key, sub)) {
                self.subgroups.insert(k, previous);
            }
        }
        self.last.as_mut().map(|(_, sub)| sub)
    }

    /// A newly opened subgroup `key`, made the one used last.
    fn insert(&mut self, key: SubgroupKey, sub: OutSubgroup) {
        if let Some((k, previous)) = self.last.replace((key, sub)) {
            self.subgroups.insert(k, previous);
        }
    }

    fn remove(&mut self, key: SubgroupKey) -> Option<OutSubgroup> {
        match &self.last {
            Some((k, _)) if *k == key => self.last.take().map(|(_, sub)| sub),
            _ => self.subgroups.remove(&key),
        }
    }

    fn iter(&self) -> impl Iterator<Item = (&SubgroupKey, &OutSubgroup)> {
        self.last
            .iter()
            .map(|(k, sub)| (k, sub))
            .chain(self.subgroups.iter())
    }

    /// Writes an object's header declaring `length` payload bytes, then the
    /// payload given (all of it, or a first part), opening the stream with
    /// its SUBGROUP_HEADER (§11.4.2) on first use.
    pub(super) fn start_object(
        &mut self,
        obj: OutgoingObject,
        length: u64,
        flags: StreamFlags,
        streams: &mut StreamTable,
        out: &mut Outbox,
    ) -> Result<StreamRef, SessionError> {
        let key = (obj.track_alias, obj.location.group, obj.subgroup);
        let h = SubgroupObjectHeader {
            object_id: obj.location.object,
            properties: obj.properties,
            status: obj.status,
            payload_len: length,
        };
        let written = obj.payload.len() as u64;
        let unfinished = (length > written).then_some(Unfinished {
            object_id: h.object_id,
            written,
            length,
        });
        let stream = if let Some(sub) = self.get_mut(key) {
            if sub.unfinished.is_some() {
                return Err(SessionError::InvalidState(
                    "the previous object is unfinished",
                ));
            }
            let head = out.encode_with(|buf| sub.enc.encode_object_header(&h, buf))?;
            // Only once its header is written is the object in progress.
            sub.unfinished = unfinished;
            out.write(sub.stream, head, false);
            sub.stream
        } else {
            let header = SubgroupHeader {
                track_alias: obj.track_alias,
                group_id: obj.location.group,
                subgroup_id: if obj.subgroup == 0 {
                    SubgroupId::Zero
                } else {
                    SubgroupId::Explicit(obj.subgroup)
                },
                publisher_priority: obj.publisher_priority,
                has_properties: true,
                end_of_group: flags.end_of_group,
                first_object: flags.first_object,
            };
            let mut enc = SubgroupEncoder::new(header);
            let head = out.encode_with(|buf| {
                enc.encode_header(buf)?;
                enc.encode_object_header(&h, buf)
            })?;
            let stream = streams.open(Kind::DataSend);
            self.opened += 1;
            self.insert(
                key,
                OutSubgroup {
                    stream,
                    enc,
                    unfinished,
                },
            );
            out.command(Command::OpenUni(stream));
            out.write(stream, head, false);
            stream
        };
        if !obj.payload.is_empty() {
            out.write(stream, obj.payload, false);
        }
        Ok(stream)
    }

    /// A later part of the object in progress on its stream: it must
    /// continue exactly where the previous part ended.
    pub(super) fn continue_object(
        &mut self,
        obj: OutgoingObject,
        part: PayloadPart,
        out: &mut Outbox,
    ) -> Result<StreamRef, SessionError> {
        let key = (obj.track_alias, obj.location.group, obj.subgroup);
        let Some(sub) = self.get_mut(key) else {
            return Err(SessionError::InvalidState("no stream for this part"));
        };
        let Some(u) = sub.unfinished.as_mut() else {
            return Err(SessionError::InvalidState("no object in progress"));
        };
        if u.object_id != obj.location.object || u.written != part.offset {
            return Err(SessionError::InvalidState("part out of sequence"));
        }
        u.written += obj.payload.len() as u64;
        if u.written == u.length {
            sub.unfinished = None;
        }
        let stream = sub.stream;
        if !obj.payload.is_empty() {
            out.write(stream, obj.payload, false);
        }
        Ok(stream)
    }

    /// FIN the stream of `key`, if open. One whose last object is
    /// unfinished (a part never came) is reset instead: a FIN there would
    /// end it inside an object.
    pub(super) fn end(
        &mut self,
        key: SubgroupKey,
        streams: &mut StreamTable,
        out: &mut Outbox,
    ) -> bool {
        let Some(sub) = self.remove(key) else {
            return false;
        };
        streams.remove(&sub.stream);
        match sub.unfinished {
            None => out.command(Command::Finish(sub.stream)),
            Some(_) => out.reset(sub.stream, StreamResetCode::InternalError),
        }
        true
    }

    /// Reset the stream of `key`, if open.
    pub(super) fn reset(
        &mut self,
        key: SubgroupKey,
        code: StreamResetCode,
        streams: &mut StreamTable,
        out: &mut Outbox,
    ) -> bool {
        let Some(sub) = self.remove(key) else {
            return false;
        };
        streams.remove(&sub.stream);
        out.reset(sub.stream, code);
        true
    }

    /// Reset every open stream of `track_alias`; returns how many.
    pub(super) fn reset_track(
        &mut self,
        track_alias: u64,
        code: StreamResetCode,
        streams: &mut StreamTable,
        out: &mut Outbox,
    ) -> usize {
        let keys = self.track(track_alias);
        for &key in &keys {
            self.reset(key, code, streams, out);
        }
        keys.len()
    }

    /// FIN every open stream of `track_alias`; returns how many.
    pub(super) fn finish_track(
        &mut self,
        track_alias: u64,
        streams: &mut StreamTable,
        out: &mut Outbox,
    ) -> usize {
        let keys = self.track(track_alias);
        for &key in &keys {
            self.end(key, streams, out);
        }
        keys.len()
    }

    /// The open subgroups of our track `track_alias`.
    fn track(&self, track_alias: u64) -> Vec<SubgroupKey> {
        self.iter()
            .map(|(k, _)| *k)
            .filter(|k| k.0 == track_alias)
            .collect()
    }

    /// The peer stopped one of our data streams (already reset): forget
    /// it if it is a subgroup stream.
    pub(super) fn on_stopped(
        &mut self,
        stream: StreamRef,
        code: StreamResetCode,
        out: &mut Outbox,
    ) {
        let key = self
            .iter()
            .find(|(_, s)| s.stream == stream)
            .map(|(k, _)| *k);
        if let Some(key) = key {
            self.remove(key);
            out.event(Event::SubgroupStopped {
                track_alias: key.0,
                group: key.1,
                subgroup: key.2,
                code,
            });
        }
    }
}

/// Send an OBJECT_DATAGRAM (§11.3.1).
pub(super) fn send_datagram(
    datagram: &ObjectDatagram,
    out: &mut Outbox,
) -> Result<(), SessionError> {
    let data = out.encode_with(|buf| datagram.encode(buf))?;
    out.command(Command::SendDatagram(data));
    Ok(())
}

/// Our FETCH_HEADER stream answering a peer's FETCH (§11.4.4). The request
/// holds it: the request lasts until it is finished.
#[derive(Debug)]
pub(super) struct FetchOut {
    stream: StreamRef,
    enc: FetchEncoder,
}

impl FetchOut {
    /// Opens the stream and writes its header.
    pub(super) fn open(
        id: RequestId,
        order: GroupOrder,
        streams: &mut StreamTable,
        out: &mut Outbox,
    ) -> Result<Self, EncodeError> {
        let head = out.encode_with(|buf| FetchHeader { request_id: id.0 }.encode(buf))?;
        let stream = streams.open(Kind::DataSend);
        out.command(Command::OpenUni(stream));
        out.write(stream, head, false);
        Ok(FetchOut {
            stream,
            enc: FetchEncoder::new(order),
        })
    }

    pub(super) fn stream(&self) -> StreamRef {
        self.stream
    }

    /// One object: its header, then its payload as its own `Bytes`.
    pub(super) fn send_object(
        &mut self,
        object: FetchObject,
        out: &mut Outbox,
    ) -> Result<(), EncodeError> {
        let h = FetchObjectHeader {
            location: object.location,
            subgroup_id: object.subgroup_id,
            publisher_priority: object.publisher_priority,
            properties: object.properties,
            payload_len: object.payload.len() as u64,
        };
        let head = out.encode_with(|buf| self.enc.encode_object_header(&h, buf))?;
        out.write(self.stream, head, false);
        if !object.payload.is_empty() {
            out.write(self.stream, object.payload, false);
        }
        Ok(())
    }

    /// An End of Range marker (§11.4.4.2).
    pub(super) fn end_of_range(
        &mut self,
        end: &EndOfRange,
        out: &mut Outbox,
    ) -> Result<(), EncodeError> {
        let data = out.encode_with(|buf| self.enc.encode_end_of_range(end, buf))?;
        out.write(self.stream, data, false);
        Ok(())
    }
}
