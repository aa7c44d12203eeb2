//! The verifier on its own: every refusal and its codes, prefixes, keys.

use std::sync::Arc;

use aws_lc_rs::{
    encoding::AsDer,
    rand::SystemRandom,
    signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING},
};
use bytes::Bytes;
use moqt::{setup::SetupOption, RequestErrorCode, SessionErrorCode};

use super::*;

const NOW: u64 = 1_800_000_000;
const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-test";

fn ns(parts: &[&str]) -> TrackNamespace {
    TrackNamespace::new(parts.iter().map(|p| Bytes::copy_from_slice(p.as_bytes()))).unwrap()
}

fn prefix(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|p| p.to_string()).collect()
}

fn claims(publish: &[&[&str]], subscribe: &[&[&str]]) -> Claims {
    Claims {
        publish: publish.iter().map(|p| prefix(p)).collect(),
        subscribe: subscribe.iter().map(|p| prefix(p)).collect(),
        exp: NOW + 3600,
        nbf: None,
        iat: Some(NOW),
    }
}

fn hmac() -> (SigningKey, VerifyKey) {
    (
        SigningKey::from_bytes(SECRET).unwrap(),
        VerifyKey::from_bytes(SECRET).unwrap(),
    )
}

/// A fresh P-256 key pair as PEM files' bytes: (private PKCS#8, public SPKI).
fn p256_pem() -> (Vec<u8>, Vec<u8>) {
    let pkcs8 =
        EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
            .unwrap();
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
    let spki = pair.public_key().as_der().unwrap();
    let private = pem::encode(&pem::Pem::new("PRIVATE KEY", pkcs8.as_ref().to_vec()));
    let public = pem::encode(&pem::Pem::new("PUBLIC KEY", spki.as_ref().to_vec()));
    (private.into_bytes(), public.into_bytes())
}

fn authorizer(keys: Vec<VerifyKey>) -> Arc<Authorizer> {
    Arc::new(Authorizer::new(keys, AuthConfig::default()).unwrap())
}

fn use_value(token: &str) -> AuthToken {
    AuthToken::UseValue {
        token_type: JWT_TOKEN_TYPE,
        value: Bytes::copy_from_slice(token.as_bytes()),
    }
}

#[test]
fn a_valid_token_grants_exactly_its_prefixes_element_wise() {
    let (sign, verify) = hmac();
    let a = authorizer(vec![verify]);
    let token = mint(&sign, &claims(&[&["live", "cam1"]], &[&["live"]])).unwrap();
    let g = a.verify(token.as_bytes(), NOW).unwrap();
    assert!(g.allows(Access::Publish, &ns(&["live", "cam1"])));
    assert!(g.allows(Access::Publish, &ns(&["live", "cam1", "hd"])));
    // Element-wise, not by string: "cam10" does not start with field "cam1".
    assert!(!g.allows(Access::Publish, &ns(&["live", "cam10"])));
    assert!(!g.allows(Access::Publish, &ns(&["live"])));
    assert!(g.allows(Access::Subscribe, &ns(&["live", "cam2"])));
    assert!(!g.allows(Access::Subscribe, &ns(&["vod"])));
    assert_eq!(g.expires(), NOW + 3600 + DEFAULT_LEEWAY_SECS);
    // An empty prefix grants everything.
    let all = mint(&sign, &claims(&[&[]], &[])).unwrap();
    let g = a.verify(all.as_bytes(), NOW).unwrap();
    assert!(g.allows(Access::Publish, &ns(&["anything", "at", "all"])));
    assert!(!g.allows(Access::Subscribe, &ns(&["anything"])));
}

#[test]
fn expired_not_yet_valid_wrong_key_and_garbage_are_told_apart() {
    let (sign, verify) = hmac();
    let a = authorizer(vec![verify]);
    let mut c = claims(&[&["live"]], &[]);
    c.exp = NOW - 60;
    let expired = mint(&sign, &c).unwrap();
    assert_eq!(a.verify(expired.as_bytes(), NOW), Err(Refusal::Expired));
    // Within the leeway it is still good.
    c.exp = NOW - DEFAULT_LEEWAY_SECS + 1;
    assert!(a.verify(mint(&sign, &c).unwrap().as_bytes(), NOW).is_ok());

    let mut c = claims(&[&["live"]], &[]);
    c.nbf = Some(NOW + 600);
    let early = mint(&sign, &c).unwrap();
    assert_eq!(a.verify(early.as_bytes(), NOW), Err(Refusal::NotYetValid));
    assert!(a.verify(early.as_bytes(), NOW + 600).is_ok());

    let other = SigningKey::from_bytes(b"another secret, just as long as the first").unwrap();
    let forged = mint(&other, &claims(&[&[]], &[&[]])).unwrap();
    assert_eq!(a.verify(forged.as_bytes(), NOW), Err(Refusal::BadSignature));

    for garbage in [&b"not a jwt"[..], b"a.b.c", b"", b"\xff\xfe.\x00.x"] {
        assert!(
            matches!(a.verify(garbage, NOW), Err(Refusal::Malformed(_))),
            "{garbage:?}"
        );
    }
    // A token for another audience, signed with our key.
    #[derive(serde::Serialize)]
    struct WithAudience {
        aud: &'static str,
        exp: u64,
        publish: Vec<Vec<String>>,
    }
    let elsewhere = WithAudience {
        aud: "some other service",
        exp: NOW + 60,
        publish: vec![vec![]],
    };
    let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    let aud = jsonwebtoken::encode(
        &header,
        &elsewhere,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.trim_ascii_end()),
    )
    .unwrap();
    assert_eq!(a.verify(aud.as_bytes(), NOW), Err(Refusal::Audience));
    assert_eq!(
        Refusal::Audience.request_code(),
        RequestErrorCode::Unauthorized
    );

    let huge = vec![b'a'; DEFAULT_MAX_TOKEN_BYTES + 1];
    assert_eq!(
        a.verify(&huge, NOW),
        Err(Refusal::TooLarge(DEFAULT_MAX_TOKEN_BYTES + 1))
    );

    // Codes: request and session forms of each.
    assert_eq!(
        Refusal::Expired.request_code(),
        RequestErrorCode::ExpiredAuthToken
    );
    assert_eq!(
        Refusal::Malformed("x").request_code(),
        RequestErrorCode::MalformedAuthToken
    );
    assert_eq!(
        Refusal::BadSignature.request_code(),
        RequestErrorCode::Unauthorized
    );
    assert_eq!(
        Refusal::Expired.session_code(),
        SessionErrorCode::ExpiredAuthToken
    );
    assert_eq!(
        Refusal::TooLarge(1).session_code(),
        SessionErrorCode::MalformedAuthToken
    );
    assert_eq!(
        Refusal::NotYetValid.session_code(),
        SessionErrorCode::Unauthorized
    );
}

#[test]
fn es256_tokens_verify_with_the_public_key_and_other_algorithms_are_refused() {
    let (private, public) = p256_pem();
    let sign = SigningKey::from_bytes(&private).unwrap();
    assert_eq!(sign.algorithm(), jsonwebtoken::Algorithm::ES256);
    let a = authorizer(vec![VerifyKey::from_bytes(&public).unwrap()]);
    let token = mint(&sign, &claims(&[&["live"]], &[])).unwrap();
    assert!(a
        .verify(token.as_bytes(), NOW)
        .unwrap()
        .allows(Access::Publish, &ns(&["live", "x"])));
    // Another P-256 key's signature.
    let (other, _) = p256_pem();
    let forged = mint(
        &SigningKey::from_bytes(&other).unwrap(),
        &claims(&[&[]], &[]),
    )
    .unwrap();
    assert_eq!(a.verify(forged.as_bytes(), NOW), Err(Refusal::BadSignature));
    // An HS256 token is refused: no configured key takes HS256 (an HMAC
    // keyed with the public key is the classic confusion).
    let hs = mint(
        &SigningKey::from_bytes(SECRET).unwrap(),
        &claims(&[&[]], &[]),
    )
    .unwrap();
    assert_eq!(a.verify(hs.as_bytes(), NOW), Err(Refusal::Algorithm));
    // alg "none" is refused too.
    let none = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(format!(r#"{{"publish":[[]],"exp":{}}}"#, NOW + 60).as_bytes())
    );
    assert!(a.verify(none.as_bytes(), NOW).is_err());
    // A private key cannot be a verification key; a short secret is refused.
    assert!(VerifyKey::from_bytes(&private).is_err());
    assert!(VerifyKey::from_bytes(b"short\n").is_err());
}

fn b64(bytes: &[u8]) -> String {
    // base64url without padding, enough for a hand-made header.
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (*b as u32) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

#[test]
fn setup_tokens_admit_or_close_with_the_draft_codes() {
    let (sign, verify) = hmac();
    let a = authorizer(vec![verify]);
    let good = mint(&sign, &claims(&[&["live"]], &[&["live"]])).unwrap();
    let setup = |tokens: Vec<AuthToken>| Setup {
        options: tokens
            .into_iter()
            .map(SetupOption::AuthorizationToken)
            .collect(),
    };

    let mut s = SessionAuth::new(a.clone());
    s.admit(&setup(vec![use_value(&good)]), NOW).unwrap();
    assert_eq!(
        s.check(&[], Access::Publish, &ns(&["live", "cam1"]), NOW),
        Ok(())
    );
    assert_eq!(
        s.check(&[], Access::Publish, &ns(&["vod"]), NOW),
        Err(Denied::Request(Refusal::NotGranted))
    );
    // The session's grant runs out with its token.
    assert_eq!(
        s.check(&[], Access::Publish, &ns(&["live"]), NOW + 7200),
        Err(Denied::Request(Refusal::Expired))
    );

    // REGISTER in SETUP counts as USE_VALUE (§10.3.1.4).
    let mut s = SessionAuth::new(a.clone());
    let register = AuthToken::Register {
        alias: 1,
        token_type: JWT_TOKEN_TYPE,
        value: Bytes::from(good.clone()),
    };
    s.admit(&setup(vec![register]), NOW).unwrap();

    let mut c = claims(&[&["live"]], &[]);
    c.exp = NOW - 100;
    let expired = mint(&sign, &c).unwrap();
    let closes = |tokens: Vec<AuthToken>| {
        SessionAuth::new(a.clone())
            .admit(&setup(tokens), NOW)
            .unwrap_err()
            .0
    };
    assert_eq!(
        closes(vec![use_value(&expired)]),
        SessionErrorCode::ExpiredAuthToken
    );
    assert_eq!(
        closes(vec![use_value("garbage")]),
        SessionErrorCode::MalformedAuthToken
    );
    assert_eq!(
        closes(vec![use_value(&good), use_value(&expired)]),
        SessionErrorCode::ExpiredAuthToken
    );
    assert_eq!(
        closes(vec![AuthToken::UseAlias { alias: 1 }]),
        SessionErrorCode::ProtocolViolation
    );
    assert_eq!(
        closes(vec![use_value(&good); MAX_TOKENS_PER_MESSAGE + 1]),
        SessionErrorCode::Unauthorized
    );
    // Tokens of other types are not ours: ignored.
    let other_type = AuthToken::UseValue {
        token_type: 1,
        value: Bytes::from_static(b"a CAT, say"),
    };
    SessionAuth::new(a.clone())
        .admit(&setup(vec![other_type]), NOW)
        .unwrap();
    let counts = a.counts();
    assert_eq!(counts.sessions_admitted, 3);
    assert_eq!(counts.sessions_refused, 5);
    assert_eq!(counts.requests_authorized, 1);
    assert_eq!(counts.requests_refused, 2);
}

#[test]
fn request_tokens_and_aliases() {
    let (sign, verify) = hmac();
    let a = authorizer(vec![verify]);
    let s = SessionAuth::new(a.clone());
    let cam = ns(&["live", "cam1"]);
    assert_eq!(
        s.check(&[], Access::Subscribe, &cam, NOW),
        Err(Denied::Request(Refusal::Missing))
    );
    let sub = mint(&sign, &claims(&[], &[&["live"]])).unwrap();
    assert_eq!(
        s.check(&[use_value(&sub)], Access::Subscribe, &cam, NOW),
        Ok(())
    );
    assert_eq!(
        s.check(&[use_value(&sub)], Access::Publish, &cam, NOW),
        Err(Denied::Request(Refusal::NotGranted))
    );
    // One invalid token refuses the request even next to a good one.
    assert_eq!(
        s.check(
            &[use_value(&sub), use_value("x.y.z")],
            Access::Subscribe,
            &cam,
            NOW
        ),
        Err(Denied::Request(Refusal::Malformed("not a JWT")))
    );
    let register = AuthToken::Register {
        alias: 7,
        token_type: JWT_TOKEN_TYPE,
        value: Bytes::from(sub.clone()),
    };
    assert!(matches!(
        s.check(&[register], Access::Subscribe, &cam, NOW),
        Err(Denied::Session {
            code: SessionErrorCode::AuthTokenCacheOverflow,
            ..
        })
    ));
    for t in [
        AuthToken::UseAlias { alias: 7 },
        AuthToken::Delete { alias: 7 },
    ] {
        assert!(matches!(
            s.check(&[t], Access::Subscribe, &cam, NOW),
            Err(Denied::Session {
                code: SessionErrorCode::UnknownAuthTokenAlias,
                ..
            })
        ));
    }
}
