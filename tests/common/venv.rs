//! What the real-server tests run: the Python venv with uvicorn, gunicorn
//! and starlette, and the example binaries `cargo test` builds.

use super::BIN;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// The Python virtual environment with uvicorn, gunicorn and starlette
/// (`tests/requirements.txt`): `$SUPERVISOR_TEST_VENV`, else `<repo>/.venv`.
/// Panics with how to build it when it is missing or incomplete: the
/// real-server tests are never skipped silently.
pub fn venv() -> PathBuf {
    static VENV: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let found = VENV.get_or_init(|| {
        let dir = match std::env::var_os("SUPERVISOR_TEST_VENV") {
            Some(v) if !v.is_empty() => PathBuf::from(v),
            _ => Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv"),
        };
        let py = dir.join("bin/python");
        let check = "import uvicorn, gunicorn, starlette";
        match Command::new(&py)
            .args(["-c", check])
            .stdin(Stdio::null())
            .output()
        {
            Ok(o) if o.status.success() => Ok(dir),
            Ok(o) => Err(format!(
                "{} -c {check:?} failed: {}",
                py.display(),
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(e) => Err(format!("cannot run {}: {e}", py.display())),
        }
    });
    match found {
        Ok(dir) => dir.clone(),
        Err(why) => panic!(
            "the Python venv for the real-server tests is missing or incomplete: {why}\n\
             Create it (what CI does) from the repository root with:\n    \
             python3 -m venv .venv && .venv/bin/pip install -r tests/requirements.txt\n\
             (`bash .ci/run` does the same), or set SUPERVISOR_TEST_VENV to such a venv."
        ),
    }
}

/// A program in the venv's `bin/`, as a string for a config's command.
pub fn venv_bin(name: &str) -> String {
    venv().join("bin").join(name).display().to_string()
}

/// The binary of `examples/<name>.rs`, which `cargo test` builds next to
/// the supervisor's (`target/<profile>/examples/`). Panics saying how to
/// build it when it is missing (e.g. under `cargo test --test ...`, which
/// builds no example).
pub fn example_bin(name: &str) -> PathBuf {
    let p = Path::new(BIN)
        .parent()
        .expect("binary folder")
        .join("examples")
        .join(name);
    if !p.is_file() {
        panic!(
            "{} is missing: `cargo test` builds the examples; with a filter, build it first: \
             cargo build --example {name}",
            p.display()
        );
    }
    p
}
