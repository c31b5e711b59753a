//! Rebuilds the crate when a migration changes: `sqlx::migrate!` and `include_str!` embed them.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
