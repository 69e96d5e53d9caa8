//! Finding the child's program the way a shell would, and saying why it
//! did not start in words that name the right thing.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// A known way a command fails with the socket it is handed, in words for
/// a warning: gunicorn given `--bind fd://N` adds that descriptor on top
/// of the one it takes from `LISTEN_FDS` itself, and the second `socket()`
/// on fd 3 dies with EBADF ("Bad file descriptor") at every start.
pub(crate) fn misuses_the_socket(command: &[String]) -> Option<String> {
    let is_gunicorn = command.iter().take(4).any(|a| {
        Path::new(a)
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("gunicorn"))
            || a == "gunicorn"
    });
    let binds_fd = command
        .windows(2)
        .any(|w| matches!(w[0].as_str(), "-b" | "--bind") && w[1].starts_with("fd://"))
        || command
            .iter()
            .any(|a| a.starts_with("--bind=fd://") || a.starts_with("-bfd://"));
    (is_gunicorn && binds_fd).then(|| {
        "gunicorn with `--bind fd://...` adds the socket a second time (it takes fd 3 from \
         LISTEN_FDS by itself) and exits with \"Bad file descriptor\" at every start: drop the \
         --bind"
            .to_owned()
    })
}

/// Find `program` the way a shell would: as given when it has a slash
/// (relative to the child's folder), else along `path`.
pub(crate) fn resolve_program(
    program: &str,
    path: Option<&OsStr>,
    cwd: &Path,
) -> io::Result<PathBuf> {
    if program.is_empty() {
        return Err(io::Error::new(io::ErrorKind::NotFound, "empty command"));
    }
    if program.contains('/') {
        let p = cwd.join(program);
        return if is_executable(&p) {
            Ok(p)
        } else {
            Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} is not an executable file", p.display()),
            ))
        };
    }
    let path = path.unwrap_or(OsStr::new("/usr/bin:/bin"));
    for dir in std::env::split_paths(path) {
        let dir = if dir.as_os_str().is_empty() {
            cwd.to_owned()
        } else {
            cwd.join(dir)
        };
        let candidate = dir.join(program);
        if is_executable(&candidate) {
            return Ok(candidate);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!("{program:?} not found in PATH ({})", path.to_string_lossy()),
    ))
}

/// Why `execve` of `program` failed, naming the right thing: the folder
/// it was to run in, the program, or the interpreter of a script (the
/// kernel reports a missing interpreter as the script being missing).
pub(super) fn why_not_started(e: &io::Error, program: &Path, cwd: &Path) -> String {
    let program_text = program.display();
    if !cwd.is_dir() {
        return format!(
            "cannot start the child: its folder (child.cwd) {} does not exist or is not a folder",
            cwd.display()
        );
    }
    match e.raw_os_error() {
        Some(libc::ENOENT) | Some(libc::EACCES) | Some(libc::ENOEXEC) => {
            if let Some(interp) = interpreter(program) {
                if !is_executable(&interp) {
                    return format!(
                        "cannot start {program_text}: the interpreter its #! line names, {}, \
                         does not exist or is not executable",
                        interp.display()
                    );
                }
            } else if e.raw_os_error() == Some(libc::ENOEXEC) {
                return format!(
                    "cannot start {program_text}: not a program this machine can run \
                     (a script needs a #! line naming its interpreter)"
                );
            }
            format!("cannot start {program_text}: {e}")
        }
        _ => format!("cannot start {program_text}: {e}"),
    }
}

/// The interpreter a script's `#!` line names, if it has one.
fn interpreter(program: &Path) -> Option<PathBuf> {
    let mut head = [0u8; 256];
    let n = File::open(program).ok()?.read(&mut head).ok()?;
    let line = head[..n].strip_prefix(b"#!")?;
    let line = line.split(|b| *b == b'\n').next()?;
    let text = std::str::from_utf8(line).ok()?;
    text.split_whitespace().next().map(PathBuf::from)
}

fn is_executable(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
