//! The application side of the harness: requests, responses, objects,
//! GOAWAY, cancel and close.

use bytes::Bytes;
use fastrelay_fuzz::{AFetchType, AId, Ctx};
use moqt::message::{FetchOk, FetchType, JoiningFetch, MessageType, PublishDone, StandaloneFetch};
use moqt::session::{OutgoingObject, RequestId, StreamFlags};
use moqt::{Location, PublishDoneCode, RequestErrorCode};

use crate::harness::Harness;
use crate::input::AppOp;
use crate::names::remember;

impl Harness {
    fn rid(&mut self, a: AId) -> RequestId {
        RequestId(self.names.id(a))
    }

    fn local_id(&mut self, r: Option<RequestId>) {
        if let Some(id) = r {
            remember(&mut self.names.ids, id.0);
        }
    }

    pub(crate) fn app(&mut self, a: &AppOp) {
        use MessageType as M;
        match a {
            AppOp::Subscribe(t, p) => {
                let r = self.s.subscribe(t.build(), p.build(M::Subscribe));
                let r = self.app_result(r);
                self.local_id(r);
            }
            AppOp::Publish(t, p, props) => {
                let r = self
                    .s
                    .publish(t.build(), p.build(M::Publish), props.build());
                if let Some((id, alias)) = self.app_result(r) {
                    remember(&mut self.names.ids, id.0);
                    remember(&mut self.names.aliases, alias);
                }
            }
            AppOp::Fetch(ft, p) => {
                let fetch_type = match ft {
                    AFetchType::Standalone(t, s, e) => FetchType::Standalone(StandaloneFetch {
                        track: t.build(),
                        start: s.build(),
                        end: e.build(),
                    }),
                    AFetchType::RelativeJoining(j, s) => FetchType::RelativeJoining(JoiningFetch {
                        joining_request_id: self.names.id(*j),
                        joining_start: s.0,
                    }),
                    AFetchType::AbsoluteJoining(j, s) => FetchType::AbsoluteJoining(JoiningFetch {
                        joining_request_id: self.names.id(*j),
                        joining_start: s.0,
                    }),
                };
                let r = self.s.fetch(fetch_type, p.build(M::Fetch));
                let r = self.app_result(r);
                self.local_id(r);
            }
            AppOp::TrackStatus(t, p) => {
                let r = self.s.track_status(t.build(), p.build(M::TrackStatus));
                let r = self.app_result(r);
                self.local_id(r);
            }
            AppOp::PublishNamespace(ns, p) => {
                let r = self
                    .s
                    .publish_namespace(ns.build(), p.build(M::PublishNamespace));
                let r = self.app_result(r);
                self.local_id(r);
            }
            AppOp::SubscribeNamespace(ns, p) => {
                let r = self
                    .s
                    .subscribe_namespace(ns.build(), p.build(M::SubscribeNamespace));
                let r = self.app_result(r);
                self.local_id(r);
            }
            AppOp::SubscribeTracks(ns, p) => {
                let r = self
                    .s
                    .subscribe_tracks(ns.build(), p.build(M::SubscribeTracks));
                let r = self.app_result(r);
                self.local_id(r);
            }
            AppOp::RequestUpdate(id, p) => {
                let id = self.rid(*id);
                let r = self.s.request_update(id, p.build(M::RequestUpdate));
                let r = self.app_result(r);
                self.local_id(r);
            }
            AppOp::SubscribeOk(id, p, props) => {
                let id = self.rid(*id);
                let r = self
                    .s
                    .subscribe_ok(id, p.build(M::SubscribeOk), props.build());
                if let Some(alias) = self.app_result(r) {
                    remember(&mut self.names.aliases, alias);
                }
            }
            AppOp::RequestOk(id, ok) => {
                let id = self.rid(*id);
                let msg = moqt::RequestOk {
                    parameters: ok.params.build(M::RequestOk),
                    track_properties: ok.props.build(),
                };
                let r = self.s.request_ok(id, msg);
                self.app_result(r);
            }
            AppOp::RequestError(id, code, reason) => {
                let id = self.rid(*id);
                let reason = String::from_utf8_lossy(&reason.0).into_owned();
                let r = self
                    .s
                    .request_error(id, RequestErrorCode::from_code(code.0), &reason);
                self.app_result(r);
            }
            AppOp::FetchOk(id, eot, end, props) => {
                let id = self.rid(*id);
                let ok = FetchOk {
                    end_of_track: *eot,
                    end_location: end.build(),
                    parameters: Default::default(),
                    track_properties: props.build(),
                };
                let r = self.s.fetch_ok(id, ok);
                self.app_result(r);
            }
            AppOp::Namespace(id, ns) => {
                let id = self.rid(*id);
                let r = self.s.namespace(id, ns.build());
                self.app_result(r);
            }
            AppOp::NamespaceDone(id, ns) => {
                let id = self.rid(*id);
                let r = self.s.namespace_done(id, ns.build());
                self.app_result(r);
            }
            AppOp::PublishDone(id, code, count, reason) => {
                let id = self.rid(*id);
                let done = PublishDone {
                    status_code: PublishDoneCode::from_code(code.0),
                    stream_count: count.0,
                    reason: moqt::ReasonPhrase::new(reason.bytes()).unwrap_or_default(),
                };
                let r = self.s.publish_done(id, done);
                self.app_result(r);
            }
            AppOp::SendMessage(id, m, fin) => {
                let id = self.rid(*id);
                let m = m.build(&mut self.names);
                // SETUP on a request stream would be the application's
                // mistake; the session sends what it is given.
                if m.message_type() == M::Setup {
                    return;
                }
                let r = self.s.send_message(id, m, *fin);
                self.app_result(r);
            }
            AppOp::Finish(id) => {
                let id = self.rid(*id);
                let r = self.s.finish(id);
                self.app_result(r);
            }
            AppOp::Cancel(id, code) => {
                let id = self.rid(*id);
                let r = self.s.cancel(id, code.code());
                self.app_result(r);
            }
            AppOp::SendObject(o) => {
                let alias = self.names.alias(o.alias);
                let key = (alias, o.group.0, o.subgroup.0);
                let object = match self.sent.get(&key) {
                    Some(p) => p.saturating_add(1).saturating_add(o.gap.0),
                    None => o.gap.0,
                };
                let status = fastrelay_fuzz::status(o.status);
                let normal = status == moqt::ObjectStatus::Normal;
                let obj = OutgoingObject {
                    track_alias: alias,
                    location: Location::new(o.group.0, object),
                    subgroup: o.subgroup.0,
                    publisher_priority: o.priority,
                    status,
                    properties: if normal {
                        o.props.build()
                    } else {
                        Default::default()
                    },
                    payload: if normal {
                        o.payload.bytes()
                    } else {
                        Bytes::new()
                    },
                };
                let flags = StreamFlags {
                    end_of_group: o.end_of_group,
                    first_object: o.first_object,
                };
                let r = self.s.send_object_flagged(obj, flags);
                if self.app_result(r).is_some() {
                    self.sent.insert(key, object);
                }
            }
            AppOp::EndSubgroup(a, g, sg) => {
                let alias = self.names.alias(*a);
                self.s.end_subgroup(alias, g.0, sg.0);
                self.drain();
            }
            AppOp::ResetSubgroup(a, g, sg, code) => {
                let alias = self.names.alias(*a);
                self.s.reset_subgroup(alias, g.0, sg.0, code.code());
                self.drain();
            }
            AppOp::ResetTrackSubgroups(a, code) => {
                let alias = self.names.alias(*a);
                self.s.reset_track_subgroups(alias, code.code());
                self.drain();
            }
            AppOp::SendDatagram(d) => {
                let d = d.build(&mut self.names);
                let r = self.s.send_datagram(&d);
                self.app_result(r);
            }
            AppOp::OpenFetchStream(id) => {
                let id = self.rid(*id);
                let r = self.s.open_fetch_stream(id);
                self.app_result(r);
            }
            AppOp::SendFetchObject(id, o) => {
                let id = self.rid(*id);
                let r = self.s.send_fetch_object(id, o.build());
                self.app_result(r);
            }
            AppOp::SendFetchEnd(id, e) => {
                let id = self.rid(*id);
                let r = self.s.send_fetch_end_of_range(id, e.build());
                self.app_result(r);
            }
            AppOp::FinishFetch(id) => {
                let id = self.rid(*id);
                let r = self.s.finish_fetch(id);
                self.app_result(r);
            }
            AppOp::GoAway(uri, timeout) => {
                let r = self.s.go_away(uri.bytes(), timeout.0);
                self.app_result(r);
            }
        }
    }
}
