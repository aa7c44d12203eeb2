//! The driver's handling of application operations ([`Op`]).

use std::collections::HashSet;

use anyhow::anyhow;
use moqt::{Parameters, PublishDone, ReasonPhrase, StreamResetCode, STREAM_COUNT_UNKNOWN};

use super::{session_err, Driver, Op, Pending, Publishing};

impl Driver {
    pub(super) fn on_op(&mut self, op: Op) {
        match op {
            Op::Subscribe {
                track,
                parameters,
                reply,
            } => match self.session.subscribe(track, parameters) {
                Ok(id) => {
                    let acc = self.new_sub(id);
                    self.pending.insert(id, Pending::Subscribe(reply, acc));
                }
                Err(e) => {
                    let _ = reply.send(Err(session_err(e)));
                }
            },
            Op::PublishNamespace { namespace, reply } => {
                match self.session.publish_namespace(namespace, Parameters::new()) {
                    Ok(id) => {
                        self.pending.insert(id, Pending::Namespace(reply));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(session_err(e)));
                    }
                }
            }
            Op::FetchJoining {
                subscription,
                fetch_type,
                reply,
            } => {
                if !self.subs.contains_key(&subscription) {
                    let _ = reply.send(Err(anyhow!("subscription {subscription:?} is not active")));
                    return;
                }
                match self.session.fetch(fetch_type, Parameters::new()) {
                    Ok(id) => {
                        let acc = self.new_sub(id);
                        self.pending.insert(id, Pending::Fetch(reply, acc));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(session_err(e)));
                    }
                }
            }
            Op::Accept { id, largest, reply } => {
                let parameters = Parameters {
                    largest_object: largest,
                    ..Parameters::new()
                };
                let r = self
                    .session
                    .subscribe_ok(id, parameters, Default::default())
                    .map_err(session_err);
                if let Ok(alias) = r {
                    self.publishing.insert(
                        id,
                        Publishing {
                            alias,
                            open: HashSet::new(),
                            streams: 0,
                        },
                    );
                }
                let _ = reply.send(r);
            }
            Op::Reject {
                id,
                code,
                reason,
                reply,
            } => {
                let r = self.session.request_error(id, code, &reason);
                let _ = reply.send(r.map_err(session_err));
            }
            Op::SendObject { object, reply } => {
                let key = (object.location.group, object.subgroup);
                let alias = object.track_alias;
                let r = self.session.send_object(object).map_err(session_err);
                if r.is_ok() {
                    if let Some(p) = self.publishing.values_mut().find(|p| p.alias == alias) {
                        if p.open.insert(key) {
                            p.streams += 1;
                        }
                    }
                }
                let _ = reply.send(r.map(|_| ()));
            }
            Op::EndSubgroup {
                alias,
                group,
                subgroup,
                reply,
            } => {
                if let Some(p) = self.publishing.values_mut().find(|p| p.alias == alias) {
                    p.open.remove(&(group, subgroup));
                }
                let _ = reply.send(self.session.end_subgroup(alias, group, subgroup));
            }
            Op::SendDatagram { datagram, reply } => {
                let r = self.session.send_datagram(&datagram);
                let _ = reply.send(r.map_err(session_err));
            }
            Op::PublishDone {
                id,
                code,
                reason,
                reply,
            } => {
                let stream_count = match self.publishing.remove(&id) {
                    Some(p) => {
                        // Finish whatever subgroup streams are still open.
                        for (g, s) in p.open {
                            self.session.end_subgroup(p.alias, g, s);
                        }
                        p.streams
                    }
                    None => STREAM_COUNT_UNKNOWN,
                };
                let done = PublishDone {
                    status_code: code,
                    stream_count,
                    reason: ReasonPhrase::truncated(&reason),
                };
                let r = self.session.publish_done(id, done);
                let _ = reply.send(r.map_err(session_err));
            }
            Op::Cancel { id } => {
                self.pending.remove(&id);
                if let Some(s) = self.subs.remove(&id) {
                    if let Some(a) = s.alias {
                        self.alias_to_sub.remove(&a);
                    }
                }
                let _ = self.session.cancel(id, StreamResetCode::Cancelled);
            }
            Op::Close {
                code,
                reason,
                flush,
                reply,
            } => {
                if self.session.closed().is_some() {
                    let _ = reply.send(());
                    return;
                }
                self.record_closed(code, &reason, false);
                self.fin_close = Some((flush, reply));
                self.session.close(code, &reason);
            }
        }
    }
}
