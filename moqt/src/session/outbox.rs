//! What the session hands out, in order: [`Command`]s for the driver and
//! [`Event`]s for the application. Every part of the session writes here.

use std::borrow::Cow;
use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

use super::{Command, Event, StreamRef};
use crate::codes::{SessionErrorCode, StreamResetCode};
use crate::error::{DecodeError, EncodeError};
use crate::message::ControlMessage;

/// Scratch buffer allocated at a time: many object headers (a few bytes
/// each) and control messages share one allocation, freed when the last
/// of them is acknowledged.
const SCRATCH_CHUNK: usize = 4096;
/// Below this much room left, a fresh chunk is taken before encoding.
const SCRATCH_LOW: usize = 512;

#[derive(Debug, Default)]
pub(super) struct Outbox {
    commands: VecDeque<Command>,
    events: VecDeque<Event>,
    /// Control messages and object headers are encoded here and split off
    /// as their own `Bytes`, so one allocation serves many small writes.
    scratch: BytesMut,
}

// The pushers are inlined so an event or command is built where it is
// queued: an `Event` is a few hundred bytes, passed once per object.
impl Outbox {
    #[inline]
    pub(super) fn command(&mut self, command: Command) {
        self.commands.push_back(command);
    }

    #[inline]
    pub(super) fn event(&mut self, event: Event) {
        self.events.push_back(event);
    }

    #[inline]
    pub(super) fn write(&mut self, stream: StreamRef, data: Bytes, fin: bool) {
        self.command(Command::Write { stream, data, fin });
    }

    #[inline]
    pub(super) fn reset(&mut self, stream: StreamRef, code: StreamResetCode) {
        self.command(Command::Reset { stream, code });
    }

    #[inline]
    pub(super) fn stop_sending(&mut self, stream: StreamRef, code: StreamResetCode) {
        self.command(Command::StopSending { stream, code });
    }

    pub(super) fn encode(&mut self, msg: &ControlMessage) -> Result<Bytes, EncodeError> {
        self.encode_with(|buf| msg.encode(buf))
    }

    /// Runs an encoder over the empty scratch buffer and takes what it
    /// wrote; on failure nothing is kept.
    pub(super) fn encode_with(
        &mut self,
        encode: impl FnOnce(&mut BytesMut) -> Result<(), EncodeError>,
    ) -> Result<Bytes, EncodeError> {
        self.scratch.clear();
        // Split-off pieces share their buffer; without room reserved ahead
        // every small header would get a buffer (and a refcount box) of its own.
        if self.scratch.capacity() < SCRATCH_LOW {
            self.scratch.reserve(SCRATCH_CHUNK);
        }
        if let Err(e) = encode(&mut self.scratch) {
            self.scratch.clear();
            return Err(e);
        }
        Ok(self.scratch.split().freeze())
    }

    pub(super) fn poll_command(&mut self) -> Option<Command> {
        self.commands.pop_front()
    }

    pub(super) fn peek_command(&self) -> Option<&Command> {
        self.commands.front()
    }

    pub(super) fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Drops the commands not polled yet (the connection is gone).
    pub(super) fn clear_commands(&mut self) {
        self.commands.clear();
    }
}

/// A violation that ends the session (§3.5). The parts return it instead
/// of closing, so whatever they hold is still consistent; the session
/// closes with it, which clears every part at once.
#[derive(Debug)]
pub(super) struct Fatal {
    pub(super) code: SessionErrorCode,
    pub(super) reason: Cow<'static, str>,
}

impl Fatal {
    pub(super) fn new(code: SessionErrorCode, reason: &'static str) -> Self {
        Fatal {
            code,
            reason: Cow::Borrowed(reason),
        }
    }

    pub(super) fn violation(reason: &'static str) -> Self {
        Fatal::new(SessionErrorCode::ProtocolViolation, reason)
    }

    /// Malformed input: the code the draft gives the error.
    pub(super) fn decode(e: &DecodeError) -> Self {
        Fatal {
            code: e
                .session_error_code()
                .unwrap_or(SessionErrorCode::ProtocolViolation),
            reason: Cow::Owned(e.to_string()),
        }
    }
}
