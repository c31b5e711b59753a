//! Black-box tests: the real `App` and the real `handoff` binary against the Genesys simulator.

mod binary;
mod budget;
mod cluster;
mod durability;
mod handoff;
mod helpers;
mod insights;
mod kit;
mod operations;
mod privacy;
mod restart;
mod sunshine;
