//! The conformance suite on every adapter, one binary: `conformance::<platform>::<scenario>`.
//!
//! - `genesys`: the Genesys harness (`handoff-genesys` against `genesys-sim`).

mod genesys;

mod conformance {
    handoff_conformance::conformance_suite!(genesys, crate::genesys::GenesysHarness);
}
