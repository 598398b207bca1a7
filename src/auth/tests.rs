use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::{json, Value};

use super::*;

const NOW: u64 = 1_900_000_000;
const RSA_PRIVATE: &[u8] = include_bytes!("../../tests/fixtures/rsa_private.pem");
const RSA_PUBLIC: &[u8] = include_bytes!("../../tests/fixtures/rsa_public.pem");
const EC_PRIVATE: &[u8] = include_bytes!("../../tests/fixtures/ec_private.pem");
const EC_PUBLIC: &[u8] = include_bytes!("../../tests/fixtures/ec_public.pem");

fn hs(secret: &str, audience: Option<&str>) -> Verifier {
    Verifier::new(&JwtConfig {
        key: JwtKey::Secret(secret.as_bytes().to_vec()),
        audience: audience.map(Into::into),
    })
    .unwrap()
}

fn pem(public: &[u8]) -> Verifier {
    Verifier::new(&JwtConfig {
        key: JwtKey::PublicKeyPem(public.to_vec()),
        audience: None,
    })
    .unwrap()
}

fn claims() -> Value {
    // exp far ahead of the system clock too (the library also checks it).
    json!({"sub": "u1", "exp": NOW + 3600, "channels": ["news", "room:*"], "publish": ["room:1"]})
}

fn hs_token(secret: &str, claims: &Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()).unwrap(),
    )
    .unwrap()
}

fn b64(data: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n = chunk.iter().fold(0u32, |n, &b| n << 8 | b as u32) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

#[test]
fn a_valid_hs256_token_gives_its_grant() {
    let g = hs("s3cret", None)
        .verify(&hs_token("s3cret", &claims()), NOW)
        .unwrap();
    assert_eq!(&*g.sub, "u1");
    assert_eq!(g.exp, NOW + 3600);
    assert!(g.may_subscribe("news"));
    assert!(!g.may_subscribe("news2"), "exact names are exact");
    assert!(g.may_subscribe("room:42"));
    assert!(!g.may_subscribe("roo"));
    assert!(g.may_publish("room:1"));
    assert!(!g.may_publish("room:2"));
    assert!(!g.may_publish("news"));
}

#[test]
fn rs256_and_es256_keys_are_detected_from_the_pem() {
    let rsa = pem(RSA_PUBLIC);
    assert_eq!(rsa.algorithm(), Algorithm::RS256);
    let t = encode(
        &Header::new(Algorithm::RS256),
        &claims(),
        &EncodingKey::from_rsa_pem(RSA_PRIVATE).unwrap(),
    )
    .unwrap();
    assert!(rsa.verify(&t, NOW).is_ok());
    let ec = pem(EC_PUBLIC);
    assert_eq!(ec.algorithm(), Algorithm::ES256);
    let t = encode(
        &Header::new(Algorithm::ES256),
        &claims(),
        &EncodingKey::from_ec_pem(EC_PRIVATE).unwrap(),
    )
    .unwrap();
    assert!(ec.verify(&t, NOW).is_ok());
    assert!(
        rsa.verify(&t, NOW).is_err(),
        "an ES256 token against the RSA key"
    );
    assert!(Verifier::new(&JwtConfig {
        key: JwtKey::PublicKeyPem(b"not a key".to_vec()),
        audience: None,
    })
    .is_err());
}

#[test]
fn attacks_and_bad_tokens_are_refused() {
    let v = hs("s3cret", None);
    let invalid = |r: Result<Grant, AuthError>| matches!(r, Err(AuthError::Invalid(_)));
    assert!(invalid(v.verify("garbage", NOW)));
    assert!(invalid(v.verify("", NOW)));
    assert!(
        invalid(v.verify(&hs_token("other", &claims()), NOW)),
        "wrong secret"
    );
    // alg: none, no signature.
    let none = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(claims().to_string().as_bytes())
    );
    assert!(invalid(v.verify(&none, NOW)));
    assert!(invalid(pem(RSA_PUBLIC).verify(&none, NOW)));
    // HS256 signed with the RSA public key's PEM as the secret, against the RSA key.
    let confused = encode(
        &Header::new(Algorithm::HS256),
        &claims(),
        &EncodingKey::from_secret(RSA_PUBLIC).unwrap(),
    )
    .unwrap();
    assert!(invalid(pem(RSA_PUBLIC).verify(&confused, NOW)));
    // A tampered payload with the original signature.
    let good = hs_token("s3cret", &claims());
    let parts: Vec<&str> = good.split('.').collect();
    let mut c = claims();
    c["channels"] = json!(["*"]);
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        b64(c.to_string().as_bytes()),
        parts[2]
    );
    assert!(invalid(v.verify(&forged, NOW)));
}

#[test]
fn exp_sub_nbf_and_audience_are_enforced() {
    let v = hs("k", None);
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = claims();
        f(&mut c);
        hs_token("k", &c)
    };
    let no_exp = with(&|c| {
        c.as_object_mut().unwrap().remove("exp");
    });
    assert!(v.verify(&no_exp, NOW).is_err(), "exp is required");
    let no_sub = with(&|c| {
        c.as_object_mut().unwrap().remove("sub");
    });
    assert!(v.verify(&no_sub, NOW).is_err(), "sub is required");
    assert!(v.verify(&with(&|c| c["sub"] = json!("")), NOW).is_err());
    // Past exp: by the system clock (the library) and by `now`.
    let past = with(&|c| c["exp"] = json!(unix_now() - 10));
    assert_eq!(v.verify(&past, unix_now()), Err(AuthError::Expired));
    let t = hs_token("k", &claims());
    assert_eq!(v.verify(&t, NOW + 3600), Err(AuthError::Expired), "at exp");
    assert!(v.verify(&t, NOW + 3599).is_ok());
    // nbf in the future: by the system clock and by `now`.
    let future = with(&|c| c["nbf"] = json!(unix_now() + 600));
    assert_eq!(v.verify(&future, unix_now()), Err(AuthError::NotYetValid));
    let real = unix_now();
    let later = with(&|c| c["nbf"] = json!(real - 5));
    assert_eq!(v.verify(&later, real - 10), Err(AuthError::NotYetValid));
    assert!(v.verify(&later, real - 5).is_ok());
    // Audience.
    let a = hs("k", Some("app"));
    assert!(a.verify(&with(&|c| c["aud"] = json!("app")), NOW).is_ok());
    assert!(a
        .verify(&with(&|c| c["aud"] = json!("other")), NOW)
        .is_err());
    assert!(
        a.verify(&t, NOW).is_err(),
        "aud is required when configured"
    );
    assert!(v.verify(&with(&|c| c["aud"] = json!("any")), NOW).is_ok());
}

#[test]
fn patterns() {
    assert!(Pattern::parse("*").matches("anything"));
    assert!(Pattern::parse("a:*").matches("a:"));
    assert!(!Pattern::parse("a:*").matches("a"));
    assert!(
        !Pattern::parse("a:*").matches("xa:1"),
        "a prefix, not a substring"
    );
    assert!(Pattern::parse("a").matches("a"));
    assert!(!Pattern::parse("a").matches("ab"));
}

#[test]
fn the_secret_is_not_in_debug_output() {
    let c = JwtConfig {
        key: JwtKey::Secret(b"hunter2".to_vec()),
        audience: None,
    };
    assert!(!format!("{c:?}").contains("hunter2"));
    assert!(!format!("{:?}", Verifier::new(&c).unwrap()).contains("hunter2"));
}
