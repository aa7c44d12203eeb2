//! A parser for what the session writes: anything malformed is a bug.

use std::collections::HashMap;

use bytes::BytesMut;
use moqt::message::MessageType;
use moqt::{
    ControlMessage, DecodeError, FetchDecoder, GroupOrder, SubgroupDecoder, UniStreamHeader,
};

pub(crate) enum OutKind {
    /// Our control stream: SETUP first, then only GOAWAY.
    Control { setup_seen: bool },
    /// A request stream: control messages.
    Request,
    /// A unidirectional data stream.
    Data(DataOut),
}

pub(crate) enum DataOut {
    Header,
    Subgroup(SubgroupDecoder),
    Fetch(FetchDecoder),
}

pub(crate) struct OutStream {
    pub(crate) kind: OutKind,
    pub(crate) buf: BytesMut,
    /// The type of the first message on a request stream.
    pub(crate) first: Option<MessageType>,
}

impl OutStream {
    /// Decode all complete items; anything malformed is a bug.
    pub(crate) fn feed(&mut self, data: &[u8], fetch_orders: &HashMap<u64, GroupOrder>) {
        self.buf.extend_from_slice(data);
        loop {
            let r = match &mut self.kind {
                OutKind::Control { setup_seen } => match ControlMessage::decode(&mut self.buf) {
                    Ok(ControlMessage::Setup(_)) if !*setup_seen => {
                        *setup_seen = true;
                        Ok(())
                    }
                    Ok(ControlMessage::GoAway(g)) if *setup_seen => {
                        assert!(g.request_id.is_some(), "GOAWAY without Request ID");
                        Ok(())
                    }
                    Ok(m) => panic!("unexpected message on our control stream: {m:?}"),
                    Err(e) => Err(e),
                },
                OutKind::Request => ControlMessage::decode(&mut self.buf).map(|m| {
                    assert_ne!(m.message_type(), MessageType::Setup, "SETUP on a request");
                    self.first.get_or_insert(m.message_type());
                }),
                OutKind::Data(d) => match d {
                    DataOut::Header => UniStreamHeader::decode(&mut self.buf).map(|h| {
                        *d = match h {
                            UniStreamHeader::Subgroup(h) => {
                                DataOut::Subgroup(SubgroupDecoder::new(h))
                            }
                            // The Group Order of the peer's FETCH.
                            UniStreamHeader::Fetch(f) => DataOut::Fetch(FetchDecoder::new(
                                fetch_orders.get(&f.request_id).copied().unwrap_or_default(),
                            )),
                            other => panic!("unexpected data stream header {other:?}"),
                        }
                    }),
                    DataOut::Subgroup(dec) => dec.decode_object(&mut self.buf).map(drop),
                    DataOut::Fetch(dec) => dec.decode_item(&mut self.buf).map(drop),
                },
            };
            match r {
                Ok(()) => {}
                Err(DecodeError::Incomplete) => return,
                Err(e) => panic!("the session wrote malformed bytes: {e}"),
            }
        }
    }
}
