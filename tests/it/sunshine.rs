//! `HANDOFF_PLATFORM=sunshine` end to end: the real binary's Sunshine demo (the server on the
//! Sunshine adapter against sunshine-sim) passes every scenario.

use std::process::Command;

use crate::helpers::handoff_binary;

#[test]
fn the_sunshine_demo_passes_every_scenario_through_the_real_binary() {
    // Act
    let output = Command::new(handoff_binary())
        .args(["demo", "--platform", "sunshine"])
        .env_clear()
        .current_dir(std::env::temp_dir())
        .output()
        .expect("binary runs");

    // Assert
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "demo failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("demo finished: every scenario behaved as expected"), "{stdout}");
    assert!(
        stdout.contains("must be a 24-character hexadecimal id"),
        "the bad payload is refused by Sunshine's id rules"
    );
    assert!(stdout.contains("/passControl → 429"), "the 429 scenario ran");
    assert!(
        stdout.contains("stage \"transferred\", passControl calls for it: 1"),
        "the accepted transfer was read back"
    );
}
