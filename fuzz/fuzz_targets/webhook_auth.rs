//! Webhook signature checking: `WebhookAuth` (Bearer, Basic, HMAC over the raw body) on raw
//! header bytes and bodies, with the secrets read from a `WEBHOOK_SECRET`-style list.
//!
//! Two kinds of case:
//! - raw: arbitrary `Authorization`, timestamp and signature header bytes. Soundness: a request
//!   that authenticates must carry one of the secrets (Bearer/Basic) or a fresh, correct HMAC.
//! - forged: a credential built from one of the secrets. Completeness: a correct Bearer, Basic or
//!   fresh signature authenticates; a signature over another body, or one outside the window,
//!   does not.
#![no_main]

use arbitrary::Arbitrary;
use base64::Engine as _;
use handoff_http::fuzzing::authenticates;
use handoff_http::{WebhookAuth, SIGNATURE_HEADER, SIGNATURE_TOLERANCE_SECS, TIMESTAMP_HEADER};
use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use secrecy::SecretString;
use sha2::Sha256;

#[derive(Debug, Arbitrary)]
enum Credential {
    /// The three headers exactly as given (each may be absent).
    Raw { authorization: Option<Vec<u8>>, timestamp: Option<Vec<u8>>, signature: Option<Vec<u8>> },
    /// `Bearer <secret #pick>`.
    Bearer { pick: u8 },
    /// `Basic base64(<user>:<secret #pick>)`.
    Basic { pick: u8, user: String },
    /// A signature by secret #pick, `skew` seconds away from now, optionally over a body with one
    /// bit flipped.
    Signed { pick: u8, skew: i16, flip_bit: Option<u16> },
}

#[derive(Debug, Arbitrary)]
struct Input {
    secrets: String,
    body: Vec<u8>,
    now: u32,
    credential: Credential,
}

fn hmac(secret: &str, timestamp: &[u8], body: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(timestamp);
    mac.update(b".");
    mac.update(body);
    mac.finalize().into_bytes().to_vec()
}

fn header(headers: &mut HeaderMap, name: &'static str, value: &[u8]) -> bool {
    match HeaderValue::from_bytes(value) {
        Ok(v) => {
            headers.append(HeaderName::from_static(name), v);
            true
        }
        Err(_) => false,
    }
}

/// The secret an `Authorization` value presents, worked out independently of the service: the
/// Bearer token, or the Basic password (after the first `:` of the decoded credentials); the
/// scheme in any case, blanks around the credentials ignored.
fn presented(value: &[u8]) -> Option<Vec<u8>> {
    let space = value.iter().position(|b| *b == b' ')?;
    let (scheme, rest) = (&value[..space], value[space + 1..].trim_ascii());
    if scheme.eq_ignore_ascii_case(b"bearer") {
        return Some(rest.to_vec());
    }
    if !scheme.eq_ignore_ascii_case(b"basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(rest).ok()?;
    let colon = decoded.iter().position(|b| *b == b':')?;
    Some(decoded[colon + 1..].to_vec())
}

fuzz_target!(|input: Input| {
    let Input { secrets: raw_secrets, body, now, credential } = input;
    let Ok(auth) = WebhookAuth::from_comma_separated(&SecretString::from(raw_secrets.clone())) else {
        assert!(raw_secrets.split(',').all(|s| s.trim().is_empty()), "a usable secret was refused");
        return;
    };
    let secrets: Vec<&str> = raw_secrets.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
    // A plausible clock (2001..2137), so a forged timestamp is a plain positive number.
    let now = 1_000_000_000 + i64::from(now);
    let mut headers = HeaderMap::new();

    match credential {
        Credential::Raw { authorization, timestamp, signature } => {
            for (name, value) in
                [("authorization", &authorization), (TIMESTAMP_HEADER, &timestamp), (SIGNATURE_HEADER, &signature)]
            {
                if let Some(value) = value {
                    header(&mut headers, name, value);
                }
            }
            if !authenticates(&auth, &headers, &body, now) {
                return;
            }
            // Soundness: the caller must have presented exactly one of the secrets (a token that
            // merely contains one, e.g. `Bearer <secret>XYZ`, must not pass) or a valid signature.
            let shown_in_authorization = headers
                .get("authorization")
                .and_then(|v| presented(v.as_bytes()))
                .is_some_and(|p| secrets.iter().any(|s| p == s.as_bytes()));
            let valid_signature = || {
                let ts = headers.get(TIMESTAMP_HEADER)?.to_str().ok()?.trim();
                let seconds: i64 = ts.parse().ok()?;
                let fresh = (seconds - now).abs() <= SIGNATURE_TOLERANCE_SECS;
                let sent = headers.get(SIGNATURE_HEADER)?.to_str().ok()?.trim().strip_prefix("sha256=")?;
                let sent = hex::decode(sent).ok()?;
                Some(fresh && secrets.iter().any(|s| hmac(s, ts.as_bytes(), &body) == sent))
            };
            assert!(
                shown_in_authorization || valid_signature() == Some(true),
                "authenticated without a secret: {headers:?}"
            );
        }
        Credential::Bearer { pick } => {
            let secret = secrets[usize::from(pick) % secrets.len()];
            if header(&mut headers, "authorization", format!("Bearer {secret}").as_bytes()) {
                assert!(authenticates(&auth, &headers, &body, now), "a correct Bearer secret was refused");
            }
        }
        Credential::Basic { pick, user } => {
            if user.contains(':') {
                return; // the first colon ends the user name
            }
            let secret = secrets[usize::from(pick) % secrets.len()];
            let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{secret}"));
            assert!(header(&mut headers, "authorization", format!("Basic {encoded}").as_bytes()));
            assert!(authenticates(&auth, &headers, &body, now), "a correct Basic password was refused");
        }
        Credential::Signed { pick, skew, flip_bit } => {
            let secret = secrets[usize::from(pick) % secrets.len()];
            let timestamp = (now + i64::from(skew)).to_string();
            let mac = hex::encode(hmac(secret, timestamp.as_bytes(), &body));
            assert!(header(&mut headers, TIMESTAMP_HEADER, timestamp.as_bytes()));
            assert!(header(&mut headers, SIGNATURE_HEADER, format!("sha256={mac}").as_bytes()));
            let mut sent = body.clone();
            let flipped = match flip_bit {
                Some(bit) if !sent.is_empty() => {
                    let bit = usize::from(bit) % (sent.len() * 8);
                    sent[bit / 8] ^= 1 << (bit % 8);
                    true
                }
                _ => false,
            };
            let fresh = i64::from(skew).abs() <= SIGNATURE_TOLERANCE_SECS;
            assert_eq!(
                authenticates(&auth, &headers, &sent, now),
                fresh && !flipped,
                "signature: fresh={fresh}, body changed={flipped}"
            );
        }
    }
});
