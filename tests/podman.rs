//! The supervisor as PID 1 of a real container (podman; SPEC.md
//! "Containers and orchestrators"). Linux only; every test says it is
//! skipped, and why, where podman cannot run a container.
//!
//! No image can be pulled here, so the containers are of two kinds:
//! - `--rootfs /:O`: an overlay of this machine's root (it has Python and
//!   the test children), with the test's temp dir bind-mounted so the
//!   children's events reach the test, and the host's network. The binary
//!   under test ([`BIN`]) is run from its own path, as PID 1.
//! - a `FROM scratch` image the test builds from the static (musl)
//!   supervisor and the static `listenfd_child` example (see
//!   [`scratch_image`]), for `podman kube play` of the shipped manifest.
//!
//! podman is pointed at a `containers.conf` of ours (`CONTAINERS_CONF`):
//! this kernel's hybrid cgroups defeat podman's default runtime (crun), and
//! its default open-files limit is above the hard limit here. Containers
//! and images have names unique to the test and are removed by a guard.
#![cfg(target_os = "linux")]

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// podman's own commands can be slow on a busy 2-core box.
const PODMAN: Duration = Duration::from_secs(120);

/// Our `containers.conf`, written once per test process.
fn containers_conf() -> &'static Path {
    static CONF: OnceLock<PathBuf> = OnceLock::new();
    CONF.get_or_init(|| {
        let path = std::env::temp_dir().join(format!("suptest-podman-{}.conf", std::process::id()));
        std::fs::write(
            &path,
            "[containers]\n\
             default_ulimits = [\"nofile=4096:4096\", \"nproc=4096:4096\"]\n\
             [engine]\n\
             runtime = \"runc\"\n\
             cgroup_manager = \"cgroupfs\"\n",
        )
        .expect("write containers.conf");
        path
    })
}

/// `podman ARGS` with our containers.conf, to completion (or [`PODMAN`]).
fn podman(args: &[&str]) -> Out {
    podman_for(args, PODMAN)
}

fn podman_for(args: &[&str], timeout: Duration) -> Out {
    // run_cmd inherits our environment: CONTAINERS_CONF goes in through it.
    std::env::set_var("CONTAINERS_CONF", containers_conf());
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    match run_cmd("podman", &args, timeout) {
        Ok(out) => out,
        Err(e) => panic!("{e}"),
    }
}

/// Why podman cannot run a container here, if it cannot (checked once).
fn engine_missing() -> Option<&'static str> {
    static WHY: OnceLock<Option<String>> = OnceLock::new();
    WHY.get_or_init(|| {
        if !Path::new("/usr/bin/podman").exists()
            && std::process::Command::new("podman")
                .arg("--version")
                .output()
                .is_err()
        {
            return Some("podman is not installed (.ci/run installs it with apt)".into());
        }
        if unsafe { libc::geteuid() } != 0 {
            return Some("podman with --rootfs and runc needs root here".into());
        }
        let out = podman(&[
            "run",
            "--rm",
            "--network",
            "host",
            "--rootfs",
            "/:O",
            "true",
        ]);
        match out.code {
            Some(0) => None,
            _ => Some(format!("podman cannot run a container here:\n{out}")),
        }
    })
    .as_deref()
}

macro_rules! need_engine {
    () => {
        if let Some(why) = engine_missing() {
            eprintln!("skipped: {why}");
            return;
        }
    };
}

/// A container (or image) name unique to this test; removed when dropped.
struct Named {
    name: String,
    image: bool,
}

impl Named {
    fn container(what: &str) -> Named {
        Named {
            name: unique(what),
            image: false,
        }
    }
}

impl Drop for Named {
    fn drop(&mut self) {
        let args: &[&str] = match self.image {
            false => &["rm", "-f", "-t", "0", &self.name],
            true => &["rmi", "-f", &self.name],
        };
        let _ = run_cmd(
            "podman",
            &args.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            PODMAN,
        );
    }
}

fn unique(what: &str) -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "suptest-{what}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// `podman run -d` of `BIN --config CONFIG run` as PID 1 of an overlay of
/// this machine's root, the temp dir mounted. The config's address becomes
/// `0.0.0.0:PORT` inside the container's own network, published on the
/// host's 127.0.0.1:PORT: what answers there comes from inside.
fn run_detached(env: &mut Env, name: &str, extra: &[&str]) {
    let text = env.config_text.replace(
        &format!("address = \"127.0.0.1:{}\"", env.port),
        &format!("address = \"0.0.0.0:{}\"", env.port),
    );
    std::fs::write(&env.config, &text).unwrap();
    env.config_text = text;
    let mount = format!("{}:{}", env.dir_s, env.dir_s);
    let publish = format!("127.0.0.1:{0}:{0}", env.port);
    let config = env.config.display().to_string();
    let mut args = vec!["run", "-d", "--name", name, "-p", &publish, "-v", &mount];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--rootfs", "/:O", BIN, "--config", &config, "run"]);
    let out = podman(&args);
    if out.code != Some(0) {
        env.fail(format!("podman run failed\n{out}"));
    }
}

/// The container's exit code once it has exited.
fn exit_code(name: &str) -> Option<i32> {
    let out = podman(&[
        "inspect",
        "--format",
        "{{.State.Status}} {{.State.ExitCode}}",
        name,
    ]);
    let text = out.stdout.trim();
    let (status, code) = text.split_once(' ')?;
    (status == "exited" || status == "stopped")
        .then(|| code.parse().ok())
        .flatten()
}

/// Every process in the container: (pid, state, ppid, comm), from /proc
/// inside it.
fn processes(name: &str) -> Vec<(i32, char, i32, String)> {
    let out = podman(&[
        "exec",
        name,
        "/bin/sh",
        "-c",
        "for f in /proc/[0-9]*/stat; do cat $f 2>/dev/null; echo; done",
    ]);
    out.stdout
        .lines()
        .filter_map(|l| {
            let (head, rest) = l.split_once(" (")?;
            let (comm, tail) = rest.rsplit_once(") ")?;
            let mut f = tail.split_whitespace();
            let state = f.next()?.chars().next()?;
            let ppid = f.next()?.parse().ok()?;
            Some((head.parse().ok()?, state, ppid, comm.to_string()))
        })
        .collect()
}

#[test]
fn pid_1_serves_from_outside_is_healthy_logs_and_stops_gracefully() {
    need_engine!();
    let mut env = Setup::new("chatty.py")
        .arg("40")
        .set("log", "to", "stdout")
        .set("child", "stop_timeout", "5s")
        .build();
    let c = Named::container("pid1");
    let ready = format!(
        "{BIN} --config {} status --check ready",
        env.config.display()
    );
    run_detached(
        &mut env,
        &c.name,
        &[
            "--health-cmd",
            &ready,
            "--health-interval",
            "disable",
            "--stop-timeout",
            "20",
        ],
    );
    // PID 1 is the supervisor, PID 2.. its child.
    let ps = processes(&c.name);
    if !ps
        .iter()
        .any(|(pid, _, _, comm)| *pid == 1 && comm == "supervisor")
    {
        env.fail(format!("PID 1 is not the supervisor: {ps:?}"));
    }
    env.wait_for("podman healthcheck run passes", DEADLINE, || {
        podman(&["healthcheck", "run", &c.name]).code == Some(0)
    });
    let answer = match request(env.addr(), DEADLINE) {
        Ok(a) => a,
        Err(e) => env.fail(format!("no answer from outside the container: {e}")),
    };
    if answer.trim().is_empty() {
        env.fail("an empty answer from the container");
    }
    env.wait_for("podman logs shows the child's lines", DEADLINE, || {
        let logs = podman(&["logs", &c.name]);
        let all = format!("{}{}", logs.stdout, logs.stderr);
        all.contains("chatty-") && all.contains("supervisor: INFO started child")
    });
    let started = Instant::now();
    let stop = podman(&["stop", "-t", "20", &c.name]);
    let took = started.elapsed();
    if stop.code != Some(0) {
        env.fail(format!("podman stop failed\n{stop}"));
    }
    let code = exit_code(&c.name);
    if code != Some(0) {
        let logs = podman(&["logs", &c.name]);
        env.fail(format!(
            "want exit 0 after podman stop, got {code:?}\n{logs}"
        ));
    }
    if took > Duration::from_secs(10) {
        env.fail(format!(
            "podman stop took {took:?}: not a graceful stop well within 20 s"
        ));
    }
    if env.events_of("term").is_empty() {
        env.fail("the child never got its graceful stop (no SIGTERM recorded)");
    }
}

#[test]
fn pid_1_reaps_a_double_forking_childs_orphans() {
    need_engine!();
    // The child leaves five orphans that outlive it by 50 ms, then serves.
    let mut env = Setup::new("serve.py")
        .prelude(&[
            "/bin/sh",
            "-c",
            "for i in 1 2 3 4 5; do (sleep 0.05 3>&- &); done; exec \"$@\"",
            "sh",
        ])
        .set("log", "to", "stdout")
        .build();
    let c = Named::container("zombies");
    run_detached(&mut env, &c.name, &[]);
    env.wait_for("the child to answer", DEADLINE, || {
        request(env.addr(), Duration::from_secs(2)).is_ok_and(|a| !a.is_empty())
    });
    let mut left = Vec::new();
    let settled = wait_until(DEADLINE, || {
        let all = processes(&c.name);
        left = all
            .iter()
            .filter(|(_, state, _, comm)| *state == 'Z' || comm == "sleep")
            .cloned()
            .collect();
        // An empty listing proves nothing: PID 1 must be in it.
        all.iter().any(|p| p.0 == 1) && left.is_empty()
    });
    if settled.is_err() {
        env.fail(format!(
            "orphans or zombies left in the container: {left:?}"
        ));
    }
    let stop = podman(&["stop", "-t", "20", &c.name]);
    if stop.code != Some(0) || exit_code(&c.name) != Some(0) {
        env.fail(format!("podman stop: want exit 0\n{stop}"));
    }
}

#[test]
fn give_up_after_makes_the_container_exit_1() {
    need_engine!();
    let env = Setup::new("crash.py")
        .raw("restart", "give_up_after", "2")
        .set("log", "to", "stdout")
        .build();
    let c = Named::container("giveup");
    let mount = format!("{}:{}", env.dir_s, env.dir_s);
    let config = env.config.display().to_string();
    let out = podman(&[
        "run",
        "--name",
        &c.name,
        "--network",
        "host",
        "-v",
        &mount,
        "--rootfs",
        "/:O",
        BIN,
        "--config",
        &config,
        "run",
    ]);
    if out.code != Some(1) {
        env.fail(format!("want the container to exit 1\n{out}"));
    }
    if !out
        .stderr
        .contains("supervisor: ERROR gave up: 2 failed starts in a row")
    {
        env.fail(format!("the reason is not in the container's log\n{out}"));
    }
    if env.events_of("start").len() != 2 {
        env.fail("want exactly 2 starts");
    }
}

/// `examples/container/`: the shipped config and app, run as the
/// Containerfile lays them out (`/etc/supervisor/supervisor.toml`,
/// `/app/app.py`, `/run/supervisor`, `SUPERVISOR_CONFIG`), in an overlay of
/// this machine's root instead of the image (whose `FROM python` and `pip
/// install` need a registry), with the tests' venv first in PATH. One
/// change to the config: `child.allow_root = true`, because this machine's
/// Python is readable by root only, so the container runs as root rather
/// than as the image's user 10001.
#[test]
fn shipped_config_and_app_serve_and_get_ready_through_the_http_probe() {
    need_engine!();
    let env = Setup::new("serve.py").build();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/container");
    let config = std::fs::read_to_string(shipped.join("supervisor.toml")).unwrap();
    let config = config.replacen("[child]\n", "[child]\nallow_root = true\n", 1);
    let config_path = env.path("shipped.toml");
    std::fs::write(&config_path, config).unwrap();
    let state = env.path("state");
    std::fs::create_dir(&state).unwrap();
    let venv_bin = venv().join("bin");
    let path = format!("PATH={}:/usr/local/bin:/usr/bin:/bin", venv_bin.display());
    let c = Named::container("shipped");
    let port = free_port();
    let publish = format!("127.0.0.1:{port}:8420");
    let mounts = [
        format!(
            "{}:/etc/supervisor/supervisor.toml:ro",
            config_path.display()
        ),
        format!("{}:/app/app.py:ro", shipped.join("app.py").display()),
        format!("{}:/run/supervisor", state.display()),
    ];
    let health = format!("{BIN} status --check ready");
    let out = podman(&[
        "run",
        "-d",
        "--name",
        &c.name,
        "-p",
        &publish,
        "-v",
        &mounts[0],
        "-v",
        &mounts[1],
        "-v",
        &mounts[2],
        "-e",
        "SUPERVISOR_CONFIG=/etc/supervisor/supervisor.toml",
        "-e",
        &path,
        "--health-cmd",
        &health,
        "--health-interval",
        "disable",
        "--rootfs",
        "/:O",
        BIN,
        "run",
    ]);
    if out.code != Some(0) {
        env.fail(format!("podman run failed\n{out}"));
    }
    let logs = || {
        let l = podman(&["logs", &c.name]);
        format!("{}{}", l.stdout, l.stderr)
    };
    let mut last = None;
    let ready = wait_until(Duration::from_secs(60), || {
        let hc = podman(&["healthcheck", "run", &c.name]);
        let ok = hc.code == Some(0);
        last = Some(hc);
        ok
    });
    if ready.is_err() {
        env.fail(format!("never ready: {:?}\n{}", last, logs()));
    }
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    match http_get(addr, "/", DEADLINE) {
        Ok((200, body)) if body.contains("\"pid\"") => {}
        other => env.fail(format!("GET / from outside: {other:?}\n{}", logs())),
    }
    let all = logs();
    let probed = all
        .lines()
        .any(|l| l.starts_with("supervisor: INFO child ") && l.ends_with(" is ready"));
    if !probed || !all.contains("INFO app: serving") {
        env.fail(format!(
            "the log does not show the app ready through its probe\n{all}"
        ));
    }
    let stop = podman(&["stop", "-t", "30", &c.name]);
    if stop.code != Some(0) || exit_code(&c.name) != Some(0) {
        env.fail(format!("podman stop: want exit 0\n{stop}\n{}", logs()));
    }
}
