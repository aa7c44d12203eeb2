//! The control streams (§3.3, §10.3, §10.4): our SETUP, the peer's, and
//! GOAWAY in both directions.

use bytes::Bytes;

use super::outbox::{Fatal, Outbox};
use super::{Command, Event, Role, SessionError, StreamRef};
use crate::codes::SessionErrorCode;
use crate::error::EncodeError;
use crate::message::{ControlMessage, GoAway};
use crate::setup::Setup;

#[derive(Debug)]
pub(super) struct Control {
    role: Role,
    /// Our control stream.
    send: StreamRef,
    /// The peer's, once its stream type was read.
    recv: Option<StreamRef>,
    /// The peer's SETUP, once received: the session is ready.
    peer_setup: Option<Setup>,
    goaway_received: bool,
    goaway_sent: bool,
}

impl Control {
    pub(super) fn new(role: Role, send: StreamRef) -> Self {
        Control {
            role,
            send,
            recv: None,
            peer_setup: None,
            goaway_received: false,
            goaway_sent: false,
        }
    }

    pub(super) fn role(&self) -> Role {
        self.role
    }

    pub(super) fn is_ready(&self) -> bool {
        self.peer_setup.is_some()
    }

    pub(super) fn peer_setup(&self) -> Option<&Setup> {
        self.peer_setup.as_ref()
    }

    /// The peer sent GOAWAY: no new requests (§10.4 "SHOULD NOT initiate").
    pub(super) fn going_away(&self) -> bool {
        self.goaway_received
    }

    /// Opens our control stream with SETUP (§3.3).
    pub(super) fn open(&self, setup: Setup, out: &mut Outbox) -> Result<(), EncodeError> {
        out.command(Command::OpenUni(self.send));
        let data = out.encode(&ControlMessage::Setup(setup))?;
        out.write(self.send, data, false);
        Ok(())
    }

    /// A peer stream turned out to be its control stream; there is one.
    pub(super) fn bind_peer_stream(&mut self, stream: StreamRef) -> Result<(), Fatal> {
        if self.recv.is_some() {
            return Err(Fatal::violation("second control stream"));
        }
        self.recv = Some(stream);
        Ok(())
    }

    pub(super) fn on_setup(&mut self, setup: Setup, out: &mut Outbox) -> Result<(), Fatal> {
        if self.role == Role::Client && setup.path().is_some() {
            return Err(Fatal::new(
                SessionErrorCode::InvalidPath,
                "PATH in a server's SETUP",
            ));
        }
        self.peer_setup = Some(setup.clone());
        out.event(Event::Ready { peer_setup: setup });
        Ok(())
    }

    /// GOAWAY on the peer's control stream.
    pub(super) fn on_goaway(&mut self, g: GoAway, out: &mut Outbox) -> Result<(), Fatal> {
        if self.goaway_received {
            return Err(Fatal::violation("second GOAWAY on the control stream"));
        }
        if self.role == Role::Server && !g.new_session_uri.is_empty() {
            return Err(Fatal::violation("client GOAWAY with a New Session URI"));
        }
        // Our own request IDs: even from a client, odd from a server
        // (§10.1); absent is malformed on the control stream (§10.4).
        let ours = match self.role {
            Role::Client => 0,
            Role::Server => 1,
        };
        if g.request_id.is_none_or(|id| id % 2 != ours) {
            return Err(Fatal::new(
                SessionErrorCode::InvalidRequestId,
                "GOAWAY Request ID missing or of the wrong parity",
            ));
        }
        self.goaway_received = true;
        out.event(Event::GoAway {
            new_session_uri: g.new_session_uri,
            timeout: g.timeout,
        });
        Ok(())
    }

    /// Sends our one GOAWAY; `request_id` is the smallest peer Request ID
    /// not processed.
    pub(super) fn go_away(
        &mut self,
        new_session_uri: Bytes,
        timeout: u64,
        request_id: u64,
        out: &mut Outbox,
    ) -> Result<(), SessionError> {
        if self.role == Role::Client && !new_session_uri.is_empty() {
            return Err(SessionError::InvalidState(
                "a client's GOAWAY carries an empty URI",
            ));
        }
        if self.goaway_sent {
            return Err(SessionError::InvalidState("GOAWAY already sent"));
        }
        let data = out.encode(&ControlMessage::GoAway(GoAway {
            new_session_uri,
            timeout,
            request_id: Some(request_id),
        }))?;
        self.goaway_sent = true;
        out.write(self.send, data, false);
        Ok(())
    }
}
