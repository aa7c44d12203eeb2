//! The session's streams, with the bytes their receive buffers hold, and
//! the handles given to new ones.
//!
//! Every buffer change happens while a stream is out of the table (the
//! session removes a stream, decodes into it, and puts it back), so
//! counting at `insert` and `remove` keeps [`StreamTable::buffered`]
//! exact without a scan: the connection-wide bound
//! ([`super::SessionConfig::max_buffered_bytes`]) costs nothing per byte.

use std::collections::HashMap;

use super::stream::{Kind, Stream};
use super::StreamRef;

#[derive(Debug, Default)]
pub(super) struct StreamTable {
    streams: HashMap<StreamRef, Stream>,
    /// Sum of the receive-buffer capacities of the streams in the table.
    buffered: usize,
    /// The next handle. Handles are never reused, not even after a close.
    next: u64,
}

impl StreamTable {
    /// A fresh handle, not in the table yet.
    pub(super) fn alloc(&mut self) -> StreamRef {
        let s = StreamRef(self.next);
        self.next += 1;
        s
    }

    /// A fresh handle for a stream of `kind`, in the table.
    pub(super) fn open(&mut self, kind: Kind) -> StreamRef {
        let s = self.alloc();
        self.insert(s, Stream::new(kind));
        s
    }

    pub(super) fn insert(&mut self, stream: StreamRef, st: Stream) {
        self.buffered += st.buffered();
        if let Some(old) = self.streams.insert(stream, st) {
            self.buffered -= old.buffered();
        }
    }

    pub(super) fn remove(&mut self, stream: &StreamRef) -> Option<Stream> {
        let st = self.streams.remove(stream)?;
        self.buffered -= st.buffered();
        Some(st)
    }

    pub(super) fn get(&self, stream: &StreamRef) -> Option<&Stream> {
        self.streams.get(stream)
    }

    pub(super) fn clear(&mut self) {
        self.streams.clear();
        self.buffered = 0;
    }

    pub(super) fn len(&self) -> usize {
        self.streams.len()
    }

    /// Bytes the receive buffers of all streams in the table hold.
    pub(super) fn buffered(&self) -> usize {
        self.buffered
    }

    /// The incoming object stream whose receive buffer holds the most (a
    /// linear scan: only called when the connection is over its bound).
    pub(super) fn largest_data_buffer(&self) -> Option<StreamRef> {
        self.streams
            .iter()
            .filter(|(_, st)| st.is_data() && st.buffered() > 0)
            .max_by_key(|(_, st)| st.buffered())
            .map(|(s, _)| *s)
    }
}
