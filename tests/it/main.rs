//! Black-box tests: the real `App` and the real `handoff` binary against the Genesys simulator.

mod binary;
mod cluster;
mod durability;
mod handoff;
mod helpers;
mod insights;
mod operations;
mod privacy;
