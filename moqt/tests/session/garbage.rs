//! Random bytes on every kind of stream never make a session panic.

use super::*;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, max: usize) -> Bytes {
        let n = (self.next() as usize) % (max + 1);
        let mut v = Vec::with_capacity(n);
        // Bias towards small values so varints and types are plausible.
        for _ in 0..n {
            let r = self.next();
            v.push(if r.is_multiple_of(3) {
                (r >> 8) as u8 & 0x1f
            } else {
                (r >> 8) as u8
            });
        }
        Bytes::from(v)
    }
}

fn feed_garbage(s: &mut Session, stream: StreamRef, rng: &mut Rng, prefix: Option<Bytes>) {
    if let Some(p) = prefix {
        let _ = s.on_stream_data(stream, p, false);
    }
    for _ in 0..4 {
        let fin = rng.next().is_multiple_of(5);
        let _ = s.on_stream_data(stream, rng.bytes(40), fin);
        if fin {
            break;
        }
    }
    if rng.next().is_multiple_of(7) {
        let _ = s.on_stream_reset(stream, rng.next() % 20);
    }
    if rng.next().is_multiple_of(7) {
        let _ = s.on_stop_sending(stream, rng.next() % 20);
    }
    drain(s);
}

#[test]
fn garbage_on_every_stream_kind_never_panics() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for round in 0..3000 {
        let role = if round % 2 == 0 {
            Role::Server
        } else {
            Role::Client
        };
        let mut s = Session::new(role, SessionConfig::default());
        drain(&mut s);
        let ready = round % 3 != 0;
        if ready {
            let ctrl = s.on_peer_stream(false);
            s.on_stream_data(ctrl, setup_bytes(), false).unwrap();
            match round % 5 {
                // Garbage on the control stream after SETUP.
                0 => feed_garbage(&mut s, ctrl, &mut rng, None),
                // A valid request then garbage on its stream.
                1 => {
                    let bidi = s.on_peer_stream(true);
                    let id = if role == Role::Server { 0 } else { 1 };
                    feed_garbage(&mut s, bidi, &mut rng, Some(subscribe_msg(id)));
                }
                // A subgroup header then garbage objects.
                2 => {
                    let uni = s.on_peer_stream(false);
                    let mut h = BytesMut::new();
                    SubgroupHeader {
                        track_alias: 1,
                        has_properties: rng.next().is_multiple_of(2),
                        ..SubgroupHeader::default()
                    }
                    .encode(&mut h)
                    .unwrap();
                    feed_garbage(&mut s, uni, &mut rng, Some(h.freeze()));
                }
                _ => {}
            }
        }
        let bidi = s.on_peer_stream(true);
        feed_garbage(&mut s, bidi, &mut rng, None);
        let uni = s.on_peer_stream(false);
        feed_garbage(&mut s, uni, &mut rng, None);
        for _ in 0..3 {
            let _ = s.on_datagram(rng.bytes(30));
        }
        if !ready {
            let ctrl = s.on_peer_stream(false);
            let _ = s.on_stream_data(ctrl, setup_bytes(), false);
        }
        // Whatever happened, the session still answers calls sanely.
        let _ = s.subscribe(track("x"), Parameters::new());
        drain(&mut s);
    }
}

#[test]
fn garbage_between_live_sessions_never_panics() {
    let mut rng = Rng(12345);
    for _ in 0..300 {
        let mut p = Pair::ready();
        let (_, _, alias) = subscribed(&mut p);
        p.s.s.send_object(object(alias, 1, 0, 0, "ok")).unwrap();
        p.pump();
        // Corrupt one random command from the server's next batch.
        p.s.s.send_object(object(alias, 1, 0, 1, "ok2")).unwrap();
        p.s.s
            .namespace(RequestId(99), ns(&["x"]))
            .expect_err("unknown request");
        let cmds = p.take_commands(Side::S);
        for c in cmds {
            let c = match c {
                Command::Write { stream, fin, .. } if rng.next().is_multiple_of(2) => {
                    Command::Write {
                        stream,
                        data: rng.bytes(20),
                        fin,
                    }
                }
                c => c,
            };
            p.deliver(Side::S, c);
        }
        p.pump();
    }
}
