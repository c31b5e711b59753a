//! The conformance suite on every adapter, one binary: `conformance::<platform>::<scenario>`.
//!
//! - `genesys`: the Genesys harness (`handoff-genesys` against `genesys-sim`).
//! - `sunshine`: the Sunshine harness (`handoff-sunshine` against `sunshine-sim`).

mod genesys;
mod sunshine;

mod conformance {
    handoff_conformance::conformance_suite!(genesys, crate::genesys::GenesysHarness);
    handoff_conformance::conformance_suite!(sunshine, crate::sunshine::SunshineHarness);
}
