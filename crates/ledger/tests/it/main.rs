//! Integration tests of `handoff-ledger` against real databases (loopback only), one binary.
//!
//! - `contract`: the `LedgerPort` contract, run on `InMemoryLedger`, SQLite and PostgreSQL.
//! - `insights`: the `InsightsPort` read model (keyset pages of summaries), on all three.
//! - `backends`: what only a SQL ledger has (files, migrations, corrupt rows, atomic saves,
//!   several instances on one database).
//! - `tls`: PostgreSQL over TLS (no plaintext fallback; a throwaway `ssl=on` instance).
//! - `support`: fresh databases per test. PostgreSQL is `postgres://postgres@127.0.0.1:5432`; when it
//!   is unreachable its tests print "skipped: …" and pass, unless `CI=true`.

mod backends;
mod contract;
mod insights;
mod support;
mod tls;
