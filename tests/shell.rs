//! The shell side: --help, --version, completions, the man page.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_supervisor");

fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(BIN)
        .args(args)
        .output()
        .expect("run supervisor");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn help_lists_exit_codes_and_signals() {
    let (code, text) = run(&["--help"]);
    assert_eq!(code, 0);
    for needle in [
        "Exit codes",
        "78",
        "SIGHUP",
        "SIGUSR1",
        "SIGTERM",
        "status",
        "reopen-logs",
    ] {
        assert!(text.contains(needle), "--help lacks {needle:?}:\n{text}");
    }
}

#[test]
fn version_names_the_program() {
    let (code, text) = run(&["--version"]);
    assert_eq!(code, 0);
    assert_eq!(
        text.trim(),
        format!("supervisor {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn completions_for_each_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let (code, text) = run(&["completions", shell]);
        assert_eq!(code, 0, "{shell}");
        for sub in ["check-config", "reopen-logs", "status"] {
            assert!(text.contains(sub), "{shell} completions lack {sub}");
        }
    }
    let (code, _) = run(&["completions", "tcsh-of-the-future"]);
    assert_eq!(code, 2, "an unknown shell is a usage error");
}

#[test]
fn man_page_is_roff_with_the_exit_codes() {
    let (code, text) = run(&["man"]);
    assert_eq!(code, 0);
    assert!(text.contains(".TH supervisor 1"), "{text}");
    assert!(
        text.contains("Exit codes") && text.contains("SIGHUP"),
        "{text}"
    );
}
