//! Payload parsing and validation: raw webhook body bytes → `serde_json::from_slice` →
//! `HandoffRequest::from_json` with the Genesys id rules, as the webhook handler runs them, plus
//! the `Idempotency-Key` header through `IdempotencyKey::parse`.
//!
//! Checked beyond "no panic": an accepted payload reads back unchanged from its canonical JSON
//! (with the same rules, and as the ledger re-reads it, with the generic id check), every
//! rejection names a field and a problem, and a key is accepted exactly when it is 1-128 visible
//! ASCII characters.
#![no_main]

use handoff_domain::{HandoffRequest, IdempotencyKey};
use handoff_genesys::GenesysIds;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(payload) = serde_json::from_slice::<serde_json::Value>(data) {
        match HandoffRequest::from_json(&payload, &GenesysIds) {
            Ok(request) => {
                let again = HandoffRequest::from_json(&request.to_json(), &GenesysIds);
                assert_eq!(again.as_ref(), Ok(&request), "an accepted payload must round-trip");
                let stored = HandoffRequest::from_stored_json(&request.to_json());
                assert_eq!(stored.as_ref(), Ok(&request), "the ledger must read it back");
            }
            Err(errors) => {
                assert!(!errors.errors().is_empty(), "a rejection without a problem");
                for e in errors.errors() {
                    assert!(!e.field.is_empty() && !e.problem.is_empty(), "{errors:?}");
                }
                // The 400 body lists them; this must not panic either.
                let _ = errors.to_string();
            }
        }
    }

    if let Ok(raw) = std::str::from_utf8(data) {
        let expected = (1..=128).contains(&raw.len()) && raw.bytes().all(|b| b.is_ascii_graphic());
        let key = IdempotencyKey::parse(raw);
        assert_eq!(key.is_ok(), expected, "Idempotency-Key {raw:?}");
        if let Ok(key) = key {
            assert_eq!(key.as_str(), raw);
        }
    }
});
