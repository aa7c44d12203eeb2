//! The driver's handling of what the session reports: requests and
//! responses from the peer, objects, and the ends of streams and sessions.

use std::time::Instant;

use anyhow::anyhow;
use moqt::session::{Event, Object, PeerAbort, RequestId};
use moqt::{ControlMessage, ObjectStatus, PublishDoneCode, RequestErrorCode, RequestOk};

use super::{Driver, Input, Pending};
use crate::types::{IncomingSubscribe, ReceivedObject, SubscriptionEnd};
use crate::{ORPHAN_OBJECTS, PUBLISH_DONE_GRACE};

impl Driver {
    pub(super) fn event(&mut self, ev: Event) {
        match ev {
            Event::Ready { .. } => {
                if let Some(r) = self.ready.take() {
                    let _ = r.send(());
                }
            }
            Event::Request { id, message } => self.on_request(id, message),
            Event::Message { id, message } => self.on_message(id, message),
            Event::PeerFinished { id } => {
                if self.pending.contains_key(&id) {
                    self.fail_pending(id, anyhow!("peer finished the request stream unanswered"));
                }
            }
            Event::RequestCancelled { id, abort } => {
                self.publishing.remove(&id);
                if self.pending.contains_key(&id) {
                    self.fail_pending(id, anyhow!("peer cancelled the request: {abort:?}"));
                } else {
                    self.end_sub(id, SubscriptionEnd::Cancelled(abort));
                }
            }
            Event::GoAway { .. } => {}
            Event::Object(o) => self.on_object(o),
            Event::SubgroupEnded {
                track_alias,
                group,
                abort,
                ..
            } => match self.alias_to_sub.get(&track_alias).copied() {
                Some(id) => {
                    if let Some(s) = self.subs.get_mut(&id) {
                        s.ended_streams += 1;
                        if let Some(code) = abort {
                            if let Ok(mut r) = s.resets.lock() {
                                r.push((group, code.code()));
                            }
                        }
                    }
                    self.finish_sub_if_done(id, false);
                }
                None if self.orphan_ends.len() < ORPHAN_OBJECTS => {
                    *self.orphan_ends.entry(track_alias).or_default() += 1;
                }
                None => {}
            },
            Event::SubgroupStopped {
                track_alias,
                group,
                subgroup,
                ..
            } => {
                if let Some(p) = self
                    .publishing
                    .values_mut()
                    .find(|p| p.alias == track_alias)
                {
                    p.open.remove(&(group, subgroup));
                }
            }
            Event::FetchObject { id, object } => {
                if let Some(s) = self.subs.get(&id) {
                    s.deliver(ReceivedObject {
                        group: object.location.group,
                        subgroup: object.subgroup_id,
                        object_id: object.location.object,
                        priority: Some(object.publisher_priority),
                        status: ObjectStatus::Normal,
                        payload: object.payload,
                        datagram: false,
                        received: Instant::now(),
                    });
                }
            }
            Event::FetchEndOfRange { .. } => {}
            Event::FetchEnded { id, abort } => {
                let end = match abort {
                    None => SubscriptionEnd::Done {
                        code: PublishDoneCode::SubscriptionEnded,
                        reason: "fetch stream finished".into(),
                    },
                    Some(code) => SubscriptionEnd::Cancelled(PeerAbort::Reset(code)),
                };
                self.end_sub(id, end);
                let _ = self.session.finish(id);
            }
            Event::Closed { code, reason } => {
                self.record_closed(code, &reason, false);
                let closed = self.shared.closed.lock().ok().and_then(|c| c.clone());
                let ids: Vec<_> = self.pending.keys().copied().collect();
                for id in ids {
                    let err = match &closed {
                        Some(c) => anyhow::Error::new(c.clone()),
                        None => anyhow!("session closed"),
                    };
                    self.fail_pending(id, err);
                }
                let ids: Vec<_> = self.subs.keys().copied().collect();
                for id in ids {
                    if let Some(c) = &closed {
                        self.end_sub(id, SubscriptionEnd::SessionClosed(c.clone()));
                    }
                }
                self.subs.clear();
            }
        }
    }

    fn on_request(&mut self, id: RequestId, message: ControlMessage) {
        match message {
            ControlMessage::Subscribe(s) => {
                let inc = IncomingSubscribe {
                    id,
                    track: s.track,
                    filter: s.parameters.subscription_filter,
                    parameters: s.parameters,
                };
                if self.incoming.try_send(inc).is_err() {
                    let _ = self.session.request_error(
                        id,
                        RequestErrorCode::ExcessiveLoad,
                        "subscription queue full",
                    );
                }
            }
            ControlMessage::PublishNamespace(p) => {
                let _ = self.session.request_ok(id, RequestOk::default());
                let _ = self.namespaces.try_send(p.namespace);
            }
            _ => {
                let _ = self.session.request_error(
                    id,
                    RequestErrorCode::NotSupported,
                    "not supported by this endpoint",
                );
            }
        }
    }

    fn on_message(&mut self, id: RequestId, message: ControlMessage) {
        match message {
            ControlMessage::SubscribeOk(ok) => {
                let Some(Pending::Subscribe(reply, mut acc)) = self.pending.remove(&id) else {
                    return;
                };
                let alias = ok.track_alias;
                acc.alias = Some(alias);
                acc.largest = ok.parameters.largest_object;
                if let Some(s) = self.subs.get_mut(&id) {
                    s.alias = Some(alias);
                    s.ended_streams = self.orphan_ends.remove(&alias).unwrap_or(0);
                }
                self.alias_to_sub.insert(alias, id);
                let _ = reply.send(Ok(acc));
                // Objects that overtook the SUBSCRIBE_OK.
                let orphans = std::mem::take(&mut self.orphans);
                for o in orphans {
                    if o.track_alias == alias {
                        self.on_object(o);
                    } else {
                        self.orphans.push_back(o);
                    }
                }
            }
            ControlMessage::FetchOk(_) => {
                if let Some(Pending::Fetch(reply, acc)) = self.pending.remove(&id) {
                    let _ = reply.send(Ok(acc));
                }
            }
            ControlMessage::RequestOk(_) => {
                if let Some(Pending::Namespace(reply)) = self.pending.remove(&id) {
                    let _ = reply.send(Ok(()));
                }
            }
            ControlMessage::RequestError(e) if self.pending.contains_key(&id) => {
                self.fail_pending(
                    id,
                    anyhow!(
                        "REQUEST_ERROR {:#x} ({:?}): {}",
                        e.error_code.code(),
                        e.error_code,
                        e.reason.to_string_lossy()
                    ),
                );
            }
            ControlMessage::PublishDone(d) => {
                if let Some(s) = self.subs.get_mut(&id) {
                    s.done = Some((
                        SubscriptionEnd::Done {
                            code: d.status_code,
                            reason: d.reason.to_string_lossy(),
                        },
                        d.stream_count,
                    ));
                    let input = self.input_tx.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(PUBLISH_DONE_GRACE).await;
                        let _ = input.send(Input::Grace(id)).await;
                    });
                    self.finish_sub_if_done(id, false);
                }
                let _ = self.session.finish(id);
            }
            _ => {}
        }
    }

    fn on_object(&mut self, o: Object) {
        let Some(id) = self.alias_to_sub.get(&o.track_alias).copied() else {
            if self.orphans.len() >= ORPHAN_OBJECTS {
                self.orphans.pop_front();
            }
            self.orphans.push_back(o);
            return;
        };
        if let Some(s) = self.subs.get(&id) {
            s.deliver(ReceivedObject {
                group: o.location.group,
                subgroup: o.subgroup,
                object_id: o.location.object,
                priority: o.publisher_priority,
                status: o.status,
                payload: o.payload,
                datagram: o.stream.is_none(),
                received: Instant::now(),
            });
        }
    }
}
