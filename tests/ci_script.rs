//! `.ci/check-macos-step`, the macOS type-check decision of `.ci/run`, run
//! in a copy of `.ci/` laid out as a clone: without `../shared` beside it (a
//! fresh clone anywhere) it skips, says so and why, and exits 0, so the test
//! command works; with the tool beside it (CI's layout) it runs it and
//! passes its failure on; an explicit `CHECK_MACOS` that is missing fails.
//! Running all of `.ci/run` from a test would rebuild and retest everything
//! recursively; the step on its own is the part that differs by checkout.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// `<tmp>/clone/.ci/check-macos-step`, copied from this checkout.
fn clone_layout() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().expect("temp dir");
    let clone = tmp.path().join("clone");
    fs::create_dir_all(clone.join(".ci")).expect("mkdir clone/.ci");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/check-macos-step");
    fs::copy(&src, clone.join(".ci/check-macos-step")).expect("copy the step");
    (tmp, clone)
}

/// A stand-in check-macos at `<tmp>/shared/tools/check-macos`.
fn fake_tool(tmp: &Path, body: &str) -> PathBuf {
    let tools = tmp.join("shared/tools");
    fs::create_dir_all(&tools).expect("mkdir shared/tools");
    let tool = tools.join("check-macos");
    fs::write(&tool, format!("#!/usr/bin/env bash\n{body}\n")).expect("write tool");
    fs::set_permissions(&tool, fs::Permissions::from_mode(0o755)).expect("chmod tool");
    tool
}

fn step(clone: &Path, check_macos: Option<&str>) -> Output {
    let mut cmd = Command::new("bash");
    cmd.arg(".ci/check-macos-step")
        .current_dir(clone)
        .stdin(Stdio::null())
        .env_remove("CHECK_MACOS");
    if let Some(v) = check_macos {
        cmd.env("CHECK_MACOS", v);
    }
    cmd.output().expect("run bash .ci/check-macos-step")
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn a_fresh_clone_without_shared_skips_the_macos_check_and_says_why() {
    let (tmp, clone) = clone_layout();
    assert!(!tmp.path().join("shared").exists());
    let out = step(&clone, None);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(all.contains("check-macos: skipped"), "{all}");
    assert!(all.contains("not found at"), "names where it looked: {all}");
    assert!(all.contains("CHECK_MACOS"), "says how to run it: {all}");
}

#[test]
fn the_tool_beside_the_clone_runs_and_its_failure_fails_the_step() {
    let (tmp, clone) = clone_layout();
    fake_tool(tmp.path(), "echo fake-check-macos-ran");
    let out = step(&clone, None);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(all.contains("fake-check-macos-ran"), "{all}");
    assert!(!all.contains("skipped"), "{all}");

    fake_tool(tmp.path(), "echo fake-check-macos-failed; exit 3");
    let out = step(&clone, None);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
}

#[test]
fn check_macos_off_skips_and_a_missing_explicit_path_fails() {
    let (tmp, clone) = clone_layout();
    fake_tool(tmp.path(), "echo fake-check-macos-ran");
    let out = step(&clone, Some("off"));
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(all.contains("skipped (CHECK_MACOS=off)"), "{all}");
    assert!(!all.contains("fake-check-macos-ran"), "{all}");

    let missing = tmp.path().join("elsewhere/check-macos");
    let out = step(&clone, Some(missing.to_str().expect("utf-8 temp path")));
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(all.contains("not found"), "{all}");
}
