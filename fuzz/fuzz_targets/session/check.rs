//! Checking every command and event the session emits.

use bytes::BytesMut;
use moqt::session::{Command, Event};
use moqt::Datagram;

use crate::harness::Harness;
use crate::names::remember;
use crate::output::{DataOut, OutKind, OutStream};

impl Harness {
    /// Drain and check every command and event.
    pub(crate) fn drain(&mut self) {
        while let Some(c) = self.s.poll_command() {
            assert!(!self.close_cmd, "command after Close: {c:?}");
            match c {
                Command::OpenUni(s) | Command::OpenBi(s) => {
                    assert!(self.all.insert(s), "opened an existing stream {s:?}");
                    let bidi = matches!(c, Command::OpenBi(_));
                    let kind = if bidi {
                        self.local_bidi.push(s);
                        OutKind::Request
                    } else {
                        self.local_uni.push(s);
                        if self.out.is_empty() {
                            OutKind::Control { setup_seen: false }
                        } else {
                            OutKind::Data(DataOut::Header)
                        }
                    };
                    self.out.insert(
                        s,
                        OutStream {
                            kind,
                            buf: BytesMut::new(),
                            first: None,
                        },
                    );
                }
                Command::Write { stream, data, fin } => {
                    assert!(
                        self.we_send_on(stream),
                        "write on {stream:?}, not ours to send on"
                    );
                    assert!(
                        !self.send_closed.contains(&stream),
                        "write on {stream:?} after FIN or reset"
                    );
                    if fin {
                        self.send_closed.insert(stream);
                    }
                    self.out
                        .entry(stream)
                        .or_insert_with(|| OutStream {
                            kind: OutKind::Request,
                            buf: BytesMut::new(),
                            first: None,
                        })
                        .feed(&data, &self.fetch_orders);
                }
                Command::Finish(stream) => {
                    assert!(
                        self.we_send_on(stream),
                        "FIN on {stream:?}, not ours to send on"
                    );
                    assert!(
                        self.send_closed.insert(stream),
                        "FIN on {stream:?} after FIN or reset"
                    );
                }
                Command::Reset { stream, .. } => {
                    assert!(
                        self.we_send_on(stream),
                        "reset of {stream:?}, not ours to send on"
                    );
                    self.send_closed.insert(stream);
                }
                Command::StopSending { stream, .. } => {
                    assert!(
                        self.peer_sends_on(stream),
                        "STOP_SENDING on {stream:?}, which the peer does not send on"
                    );
                }
                Command::SendDatagram(d) => {
                    Datagram::decode(&d).expect("the session sent a malformed datagram");
                }
                Command::Close { .. } => {
                    assert!(self.s.closed().is_some(), "Close while not closed");
                    self.close_cmd = true;
                }
            }
        }
        while let Some(e) = self.s.poll_event() {
            assert!(!self.closed_event, "event after Closed: {e:?}");
            match e {
                Event::Ready { peer_setup } => {
                    assert!(!self.ready, "second Ready");
                    self.ready = true;
                    assert_eq!(self.s.peer_setup(), Some(&peer_setup));
                    assert!(self.s.is_ready());
                }
                Event::Request { id, .. } => {
                    assert!(self.ready, "peer request before Ready");
                    remember(&mut self.names.ids, id.0);
                }
                Event::Object(o) => {
                    assert!(self.ready, "object before Ready");
                    if let Some(part) = o.part {
                        assert!(
                            o.payload.len() as u64 <= part.length - part.offset,
                            "part runs past its object: {part:?}, {} bytes",
                            o.payload.len()
                        );
                    }
                    remember(&mut self.names.aliases, o.track_alias);
                }
                Event::Closed { .. } => {
                    assert!(self.s.closed().is_some(), "Closed event while open");
                    self.closed_event = true;
                }
                _ => {}
            }
        }
        if self.s.closed().is_some() {
            assert!(self.closed_event, "closed without an Event::Closed");
        }
    }
}
