//! Authorization at the glue: the peer's SETUP tokens when the session is
//! ready, and every request before the engine sees it ([`crate::auth`]
//! decides; this applies the decision to the session). Runs once per
//! session and once per request, never per object.

use std::time::{SystemTime, UNIX_EPOCH};

use moqt::{
    session::{RequestId, Session},
    setup::Setup,
    ControlMessage, FetchType, Parameters, TrackNamespace,
};

use crate::auth::{Access, Denied, SessionAuth};

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The peer's SETUP arrived: its tokens are verified, and a bad one closes
/// the session with the draft's code.
pub(super) fn admit(auth: &mut SessionAuth, session: &mut Session, setup: &Setup) {
    if let Err((code, reason)) = auth.admit(setup, now()) {
        tracing::debug!(?code, %reason, "session refused: authorization token in SETUP");
        session.close(code, &reason);
    }
}

/// What a request needs: the access, the namespace, and its parameters
/// (the tokens). `None`: nothing to authorize (a joining FETCH rides on a
/// subscription already authorized; other messages are refused elsewhere).
fn needs(message: &ControlMessage) -> Option<(Access, &TrackNamespace, &Parameters)> {
    use Access::*;
    Some(match message {
        ControlMessage::Subscribe(s) => (Subscribe, s.track.namespace(), &s.parameters),
        ControlMessage::TrackStatus(t) => (Subscribe, t.track.namespace(), &t.parameters),
        ControlMessage::SubscribeNamespace(p) => (Subscribe, &p.prefix, &p.parameters),
        ControlMessage::SubscribeTracks(p) => (Subscribe, &p.prefix, &p.parameters),
        ControlMessage::Fetch(f) => match &f.fetch_type {
            FetchType::Standalone(s) => (Subscribe, s.track.namespace(), &f.parameters),
            _ => return None,
        },
        ControlMessage::Publish(p) => (Publish, p.track.namespace(), &p.parameters),
        ControlMessage::PublishNamespace(p) => (Publish, &p.namespace, &p.parameters),
        _ => return None,
    })
}

/// Whether the peer's new request may go on to the engine. A refused one
/// is answered here: REQUEST_ERROR with the auth code, or the session
/// closed (a token alias the relay cannot have registered).
pub(super) fn allow_request(
    auth: &SessionAuth,
    session: &mut Session,
    id: RequestId,
    message: &ControlMessage,
) -> bool {
    if session.closed().is_some() {
        // Closed by its SETUP tokens: what was queued behind is dropped.
        return false;
    }
    let Some((access, namespace, parameters)) = needs(message) else {
        return true;
    };
    check(
        auth,
        session,
        id,
        access,
        namespace,
        &parameters.authorization_tokens,
    )
}

/// The same check for a REQUEST_UPDATE that moves a SUBSCRIBE_NAMESPACE to
/// another prefix (§10.9): the new prefix must be granted too.
pub(super) fn allow_prefix_update(
    auth: &SessionAuth,
    session: &mut Session,
    id: RequestId,
    prefix: &TrackNamespace,
    parameters: &Parameters,
) -> bool {
    check(
        auth,
        session,
        id,
        Access::Subscribe,
        prefix,
        &parameters.authorization_tokens,
    )
}

fn check(
    auth: &SessionAuth,
    session: &mut Session,
    id: RequestId,
    access: Access,
    namespace: &TrackNamespace,
    tokens: &[moqt::AuthToken],
) -> bool {
    match auth.check(tokens, access, namespace, now()) {
        Ok(()) => true,
        Err(Denied::Request(refusal)) => {
            tracing::debug!(request = id.0, ?access, %refusal, "request refused");
            let _ = session.request_error(id, refusal.request_code(), &refusal.to_string());
            false
        }
        Err(Denied::Session { code, reason }) => {
            tracing::debug!(request = id.0, ?code, reason, "session closed: token alias");
            session.close(code, reason);
            false
        }
    }
}
