//! Authorization on the wire: a relay with keys, clients presenting JWTs in
//! SETUP or in their requests; each refusal is read as the client sees it
//! (REQUEST_ERROR code, or the session's termination code), and only the
//! offender pays.

use std::{
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use aws_lc_rs::{
    encoding::AsDer,
    rand::SystemRandom,
    signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING},
};
use bytes::Bytes;
use moqt::{
    message::{FetchType, StandaloneFetch},
    session::{Event as SessionEvent, RequestId},
    setup::{Setup, SetupOption},
    AuthToken, ControlMessage, Location, Parameters, Properties, RequestErrorCode,
    SessionErrorCode,
};
use relay::auth::{mint, AuthConfig, Authorizer, Claims, SigningKey, VerifyKey, JWT_TOKEN_TYPE};

use crate::common::{is_subscribe_ok, is_upstream_subscribe, ns, track, Stepped};
use crate::harness::{publish_namespace, received, send, Harness};

const SECRET: &[u8] = b"in-memory test secret, 32 bytes or more";

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn hmac_key() -> SigningKey {
    SigningKey::from_bytes(SECRET).unwrap()
}

/// A P-256 key pair as PEM: (signing key, verification key).
fn es256_keys() -> (SigningKey, VerifyKey) {
    let alg = &ECDSA_P256_SHA256_FIXED_SIGNING;
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &SystemRandom::new()).unwrap();
    let pair = EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref()).unwrap();
    let spki = pair.public_key().as_der().unwrap();
    let private = pem::encode(&pem::Pem::new("PRIVATE KEY", pkcs8.as_ref().to_vec()));
    let public = pem::encode(&pem::Pem::new("PUBLIC KEY", spki.as_ref().to_vec()));
    (
        SigningKey::from_bytes(private.as_bytes()).unwrap(),
        VerifyKey::from_bytes(public.as_bytes()).unwrap(),
    )
}

fn authorizer(keys: Vec<VerifyKey>) -> Arc<Authorizer> {
    Arc::new(Authorizer::new(keys, AuthConfig::default()).unwrap())
}

/// A token valid from now for an hour, or shifted by `exp`/`nbf` seconds.
fn token(
    key: &SigningKey,
    publish: &[&[&str]],
    subscribe: &[&[&str]],
    exp: i64,
    nbf: Option<i64>,
) -> String {
    let list = |l: &[&[&str]]| {
        l.iter()
            .map(|p| p.iter().map(|f| f.to_string()).collect())
            .collect()
    };
    let claims = Claims {
        publish: list(publish),
        subscribe: list(subscribe),
        exp: (now() + exp) as u64,
        nbf: nbf.map(|n| (now() + n) as u64),
        iat: None,
    };
    mint(key, &claims).unwrap()
}

fn good(key: &SigningKey, publish: &[&[&str]], subscribe: &[&[&str]]) -> String {
    token(key, publish, subscribe, 3600, None)
}

fn value(token: &str) -> AuthToken {
    AuthToken::UseValue {
        token_type: JWT_TOKEN_TYPE,
        value: Bytes::copy_from_slice(token.as_bytes()),
    }
}

fn setup_with(tokens: Vec<AuthToken>) -> Setup {
    Setup {
        options: tokens
            .into_iter()
            .map(SetupOption::AuthorizationToken)
            .collect(),
    }
}

fn params_with(tokens: Vec<AuthToken>) -> Parameters {
    Parameters {
        authorization_tokens: tokens,
        ..Parameters::default()
    }
}

/// How client `c`'s request `id` was answered: the REQUEST_ERROR code, or
/// `None` for an accepting answer (REQUEST_OK, SUBSCRIBE_OK, FETCH_OK).
fn answer(h: &mut Harness, c: usize, id: RequestId) -> Option<u64> {
    let mut answer = None;
    h.run_until("the request's answer", |h| {
        for e in h.clients[c].take(|e| matches!(e, SessionEvent::Message { id: i, .. } if *i == id))
        {
            if let SessionEvent::Message { message, .. } = e {
                answer = Some(match message {
                    ControlMessage::RequestError(e) => Some(e.error_code.code()),
                    _ => None,
                });
            }
        }
        answer.is_some()
    });
    answer.unwrap()
}

/// The termination code client `c`'s session was closed with.
fn closed_code(h: &mut Harness, c: usize) -> u64 {
    let mut code = None;
    h.run_until("the session closed", |h| {
        for e in h.clients[c].take(|e| matches!(e, SessionEvent::Closed { .. })) {
            if let SessionEvent::Closed { code: c, .. } = e {
                code = Some(c.code());
            }
        }
        code.is_some()
    });
    code.unwrap()
}

#[test]
fn valid_tokens_in_setup_and_in_requests_let_objects_flow() {
    let hs = hmac_key();
    let (es, es_verify) = es256_keys();
    let auth = authorizer(vec![VerifyKey::from_bytes(SECRET).unwrap(), es_verify]);
    // The publisher's ES256 token and subscriber 1's HS256 token ride in
    // SETUP; subscriber 2 has none there and brings one in its SUBSCRIBE.
    let setups = [
        setup_with(vec![value(&good(&es, &[&["live", "cam1"]], &[]))]),
        setup_with(vec![value(&good(&hs, &[], &[&["live"]]))]),
        Setup::default(),
    ];
    let mut h = Harness::with_auth(auth.clone(), &setups);
    h.ready();
    let published = h.clients[0]
        .driver
        .session
        .publish_namespace(ns(&["live", "cam1"]), Parameters::default())
        .unwrap();
    assert_eq!(answer(&mut h, 0, published), None);
    h.clients[1]
        .driver
        .session
        .subscribe(track("video"), Parameters::default())
        .unwrap();
    let sub_token = good(&hs, &[], &[&[]]);
    h.clients[2]
        .driver
        .session
        .subscribe(track("video"), params_with(vec![value(&sub_token)]))
        .unwrap();
    let mut upstream = None;
    h.run_until("the relay's upstream SUBSCRIBE", |h| {
        if let Some(SessionEvent::Request { id, .. }) =
            h.clients[0].take(is_upstream_subscribe).pop()
        {
            upstream = Some(id);
        }
        upstream.is_some()
    });
    let alias = h.clients[0]
        .driver
        .session
        .subscribe_ok(upstream.unwrap(), Parameters::default(), Properties::new())
        .unwrap();
    let mut ok = [false; 3];
    h.run_until("SUBSCRIBE_OK for both subscribers", |h| {
        for s in 1..3 {
            ok[s] |= !h.clients[s].take(is_subscribe_ok).is_empty();
        }
        ok[1] && ok[2]
    });
    for o in 0..5 {
        send(&mut h, alias, 0, o, 128, 100);
    }
    let (mut got1, mut got2) = (Vec::new(), Vec::new());
    h.run_until("every object at both subscribers", |h| {
        got1.extend(received(h, 1));
        got2.extend(received(h, 2));
        got1.len() == 5 && got2.len() == 5
    });
    let objects: Vec<u64> = got2.iter().map(|&(_, _, o)| o).collect();
    assert_eq!(objects, vec![0, 1, 2, 3, 4]);
    let counts = auth.counts();
    assert_eq!(counts.sessions_admitted, 3);
    assert_eq!(counts.sessions_refused, 0);
    assert_eq!(counts.requests_authorized, 3);
    assert_eq!(counts.requests_refused, 0);
}

fn session(h: &mut Harness) -> &mut moqt::Session {
    &mut h.clients[0].driver.session
}

#[test]
fn each_bad_request_token_is_refused_with_its_code_and_the_session_goes_on() {
    let hs = hmac_key();
    let auth = authorizer(vec![VerifyKey::from_bytes(SECRET).unwrap()]);
    let mut h = Harness::with_auth(auth.clone(), &[Setup::default()]);
    h.ready();
    let (es, _) = es256_keys();
    let stranger = SigningKey::from_bytes(b"somebody else's secret, long enough too").unwrap();
    let live = &[&["live"][..]][..];
    let unauthorized = RequestErrorCode::Unauthorized.code();
    let subscribe_cases: Vec<(&str, Vec<AuthToken>, u64)> = vec![
        ("no token", vec![], unauthorized),
        (
            "expired",
            vec![value(&token(&hs, &[], live, -120, None))],
            RequestErrorCode::ExpiredAuthToken.code(),
        ),
        (
            "not yet valid",
            vec![value(&token(&hs, &[], live, 3600, Some(600)))],
            unauthorized,
        ),
        (
            "wrong key",
            vec![value(&good(&stranger, &[], live))],
            unauthorized,
        ),
        (
            "algorithm without a key",
            vec![value(&good(&es, &[], live))],
            unauthorized,
        ),
        (
            "garbage",
            vec![value("this is not a JWT")],
            RequestErrorCode::MalformedAuthToken.code(),
        ),
        (
            "other namespace",
            vec![value(&good(&hs, &[], &[&["vod"]]))],
            unauthorized,
        ),
        (
            "publish grant only",
            vec![value(&good(&hs, live, &[]))],
            unauthorized,
        ),
    ];
    for (what, tokens, code) in subscribe_cases {
        let id = session(&mut h)
            .subscribe(track("video"), params_with(tokens))
            .unwrap();
        assert_eq!(answer(&mut h, 0, id), Some(code), "SUBSCRIBE, {what}");
    }

    // Every other request kind, outside its grant.
    let cam2 = good(&hs, &[&["live", "cam2"]], &[&["live", "cam2"]]);
    let p = || params_with(vec![value(&cam2)]);
    let requests = [
        (
            "PUBLISH_NAMESPACE",
            session(&mut h).publish_namespace(ns(&["live", "cam1"]), p()),
        ),
        (
            "PUBLISH",
            session(&mut h)
                .publish(track("audio"), p(), Properties::new())
                .map(|(id, _)| id),
        ),
        (
            "SUBSCRIBE_NAMESPACE",
            session(&mut h).subscribe_namespace(ns(&["live"]), p()),
        ),
        (
            "SUBSCRIBE_TRACKS",
            session(&mut h).subscribe_tracks(ns(&["live"]), p()),
        ),
        (
            "TRACK_STATUS",
            session(&mut h).track_status(track("video"), p()),
        ),
        (
            "FETCH",
            session(&mut h).fetch(
                FetchType::Standalone(StandaloneFetch {
                    track: track("video"),
                    start: Location::new(0, 0),
                    end: Location::new(1, 0),
                }),
                p(),
            ),
        ),
    ];
    for (what, id) in requests {
        assert_eq!(answer(&mut h, 0, id.unwrap()), Some(unauthorized), "{what}");
    }

    // Nothing of it cost the session: inside its grant it is served.
    let id = session(&mut h)
        .publish_namespace(ns(&["live", "cam2", "hd"]), p())
        .unwrap();
    assert_eq!(answer(&mut h, 0, id), None);
    assert!(h.clients[0].driver.session.closed().is_none());
    let counts = auth.counts();
    assert_eq!(counts.requests_refused, 14);
    assert_eq!(counts.requests_authorized, 1);
}

#[test]
fn bad_setup_tokens_close_only_their_own_session() {
    let hs = hmac_key();
    let auth = authorizer(vec![VerifyKey::from_bytes(SECRET).unwrap()]);
    let stranger = SigningKey::from_bytes(b"somebody else's secret, long enough too").unwrap();
    let live = &[&["live"][..]][..];
    let setups = [
        setup_with(vec![value(&good(&hs, live, live))]),
        setup_with(vec![value(&token(&hs, live, &[], -120, None))]),
        setup_with(vec![value("garbage")]),
        setup_with(vec![value(&good(&stranger, live, live))]),
        setup_with(vec![AuthToken::UseAlias { alias: 3 }]),
    ];
    let mut h = Harness::with_auth(auth.clone(), &setups);
    let expected = [
        (1, SessionErrorCode::ExpiredAuthToken),
        (2, SessionErrorCode::MalformedAuthToken),
        (3, SessionErrorCode::Unauthorized),
        // §10.2.2: no alias may be used in SETUP.
        (4, SessionErrorCode::ProtocolViolation),
    ];
    for (c, code) in expected {
        assert_eq!(closed_code(&mut h, c), code.code(), "client {c}");
    }
    // The honest client is served.
    publish_namespace(&mut h);
    assert!(h.clients[0].driver.session.closed().is_none());
    assert_eq!(auth.counts().sessions_refused, 4);
    assert_eq!(auth.counts().sessions_admitted, 1);
}

#[test]
fn token_aliases_in_requests_close_the_session_with_the_draft_codes() {
    let hs = hmac_key();
    let auth = authorizer(vec![VerifyKey::from_bytes(SECRET).unwrap()]);
    let mut h = Harness::with_auth(
        auth,
        &[Setup::default(), Setup::default(), Setup::default()],
    );
    h.ready();
    let t = good(&hs, &[], &[&["live"]]);
    // The relay registers no aliases (its cache size is 0): REGISTER
    // overflows it, USE_ALIAS names an alias that does not exist.
    let register = AuthToken::Register {
        alias: 1,
        token_type: JWT_TOKEN_TYPE,
        value: Bytes::from(t.clone()),
    };
    h.clients[1]
        .driver
        .session
        .subscribe(track("video"), params_with(vec![register]))
        .unwrap();
    h.clients[2]
        .driver
        .session
        .subscribe(
            track("video"),
            params_with(vec![AuthToken::UseAlias { alias: 1 }]),
        )
        .unwrap();
    assert_eq!(
        closed_code(&mut h, 1),
        SessionErrorCode::AuthTokenCacheOverflow.code()
    );
    assert_eq!(
        closed_code(&mut h, 2),
        SessionErrorCode::UnknownAuthTokenAlias.code()
    );
    // Client 0, with the same token by value, is fine.
    let id = h.clients[0]
        .driver
        .session
        .subscribe_namespace(ns(&["live", "cam1"]), params_with(vec![value(&t)]))
        .unwrap();
    assert_eq!(answer(&mut h, 0, id), None);
}

#[test]
fn a_namespace_subscription_cannot_widen_its_prefix_past_the_grant() {
    let hs = hmac_key();
    let auth = authorizer(vec![VerifyKey::from_bytes(SECRET).unwrap()]);
    let setup = setup_with(vec![value(&good(&hs, &[], &[&["live", "cam1"]]))]);
    let mut h = Harness::with_auth(auth, &[setup]);
    h.ready();
    let id = session(&mut h)
        .subscribe_namespace(ns(&["live", "cam1"]), Parameters::default())
        .unwrap();
    assert_eq!(answer(&mut h, 0, id), None);
    let to = |prefix: &[&str]| Parameters {
        track_namespace_prefix: Some(ns(prefix)),
        ..Parameters::default()
    };
    // REQUEST_UPDATE to all of `live`: refused, the subscription stays.
    session(&mut h).request_update(id, to(&["live"])).unwrap();
    assert_eq!(
        answer(&mut h, 0, id),
        Some(RequestErrorCode::Unauthorized.code())
    );
    // Narrower, inside the grant: accepted.
    session(&mut h)
        .request_update(id, to(&["live", "cam1", "hd"]))
        .unwrap();
    assert_eq!(answer(&mut h, 0, id), None);
    assert!(h.clients[0].driver.session.closed().is_none());
}
