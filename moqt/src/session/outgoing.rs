//! Requests this endpoint makes (§10.1): our Request IDs, one new
//! bidirectional stream per request, and REQUEST_UPDATE on an existing one.

use super::outbox::Outbox;
use super::requests::RequestTable;
use super::stream::Kind;
use super::table::StreamTable;
use super::{Command, RequestId, Role, SessionError};
use crate::message::{ControlMessage, RequestUpdate};
use crate::params::Parameters;

#[derive(Debug)]
pub(super) struct Outgoing {
    /// Our next Request ID: even from a client, odd from a server, +2.
    next_id: u64,
}

impl Outgoing {
    pub(super) fn new(role: Role) -> Self {
        Outgoing {
            next_id: match role {
                Role::Client => 0,
                Role::Server => 1,
            },
        }
    }

    /// Opens a request stream with the message `build` makes for the next
    /// Request ID.
    pub(super) fn start(
        &mut self,
        build: impl FnOnce(u64) -> ControlMessage,
        going_away: bool,
        requests: &mut RequestTable,
        streams: &mut StreamTable,
        out: &mut Outbox,
    ) -> Result<RequestId, SessionError> {
        if going_away {
            return Err(SessionError::GoingAway);
        }
        if requests.local_full() {
            return Err(SessionError::TooManyRequests);
        }
        let id = RequestId(self.next_id);
        let msg = build(id.0);
        let kind = msg.message_type();
        let data = out.encode(&msg)?;
        self.next_id += 2;
        let stream = streams.open(Kind::Request(id));
        requests.insert_local(id, stream, kind);
        out.command(Command::OpenBi(stream));
        out.write(stream, data, false);
        Ok(id)
    }

    /// REQUEST_UPDATE on request `id`'s stream; it takes a Request ID of
    /// its own (§10.1), returned.
    pub(super) fn update(
        &mut self,
        id: RequestId,
        parameters: Parameters,
        requests: &mut RequestTable,
        streams: &mut StreamTable,
        out: &mut Outbox,
    ) -> Result<RequestId, SessionError> {
        let update_id = RequestId(self.next_id);
        let msg = RequestUpdate {
            request_id: update_id.0,
            parameters,
        };
        requests.send(id, msg.into(), false, streams, out)?;
        if let Some(r) = requests.get_mut(&id) {
            r.updates_sent += 1;
        }
        self.next_id += 2;
        Ok(update_id)
    }
}
