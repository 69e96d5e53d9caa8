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

impl Named {
    fn image(what: &str) -> Named {
        Named {
            name: format!("localhost/{}:test", unique(what)),
            image: true,
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

/// The static (musl) supervisor and test child for the `FROM scratch`
/// image: `$SUPERVISOR_TEST_STATIC_DIR`, else the release build of
/// `.ci/run` (`target/x86_64-unknown-linux-musl/release`, the child under
/// `examples/`). `None` when either is missing.
fn static_binaries() -> Option<(PathBuf, PathBuf)> {
    let dir = match std::env::var_os("SUPERVISOR_TEST_STATIC_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("target/x86_64-unknown-linux-musl/release"),
    };
    let sup = dir.join("supervisor");
    let child = dir.join("examples/listenfd_child");
    (sup.is_file() && child.is_file()).then_some((sup, child))
}

/// Builds the image `examples/container/deployment.yaml` runs in the
/// test: the Containerfile's layout and settings (`/usr/local/bin/
/// supervisor`, `/etc/supervisor/supervisor.toml`, `/run/supervisor` owned
/// by user 10001, `USER 10001`, `SUPERVISOR_CONFIG`, the entry point) in a
/// `FROM scratch` image, with the static Rust test child
/// (`examples/listenfd_child.rs`, which answers `GET /healthz` with 200) in
/// place of the Python app, whose `FROM python` and `pip install` need a
/// registry. The shipped config is used with only `child.command`
/// changed (and `child.env`, which is Python's, dropped).
fn scratch_image(env: &Env, sup: &Path, child: &Path) -> Named {
    let ctx = env.path("image");
    std::fs::create_dir(&ctx).unwrap();
    std::fs::copy(sup, ctx.join("supervisor")).unwrap();
    std::fs::copy(child, ctx.join("listenfd_child")).unwrap();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/container");
    let config: String = std::fs::read_to_string(shipped.join("supervisor.toml"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("env = "))
        .map(|l| match l.starts_with("command = ") {
            true => "command = [\"/app/listenfd_child\"]\n".to_string(),
            false => format!("{l}\n"),
        })
        .collect();
    std::fs::write(ctx.join("supervisor.toml"), config).unwrap();
    std::fs::create_dir(ctx.join("state")).unwrap();
    std::fs::write(
        ctx.join("Containerfile"),
        "FROM scratch\n\
         COPY supervisor /usr/local/bin/supervisor\n\
         COPY listenfd_child /app/listenfd_child\n\
         COPY supervisor.toml /etc/supervisor/supervisor.toml\n\
         COPY --chown=10001:10001 state/ /run/supervisor/\n\
         USER 10001\n\
         ENV SUPERVISOR_CONFIG=/etc/supervisor/supervisor.toml PATH=/usr/local/bin\n\
         EXPOSE 8420\n\
         STOPSIGNAL SIGTERM\n\
         ENTRYPOINT [\"/usr/local/bin/supervisor\", \"run\"]\n",
    )
    .unwrap();
    let image = Named::image("scratch");
    let out = podman(&["build", "-q", "-t", &image.name, &ctx.display().to_string()]);
    if out.code != Some(0) {
        env.fail(format!("podman build of the scratch image failed\n{out}"));
    }
    image
}

/// The values of `key:` lines in a YAML text (enough for our manifest).
fn yaml_values<'a>(text: &'a str, key: &str) -> Vec<&'a str> {
    text.lines()
        .filter_map(|l| l.trim_start().trim_start_matches("- ").strip_prefix(key))
        .filter_map(|rest| rest.strip_prefix(':'))
        .map(|v| v.split('#').next().unwrap_or("").trim())
        .collect()
}

#[test]
fn shipped_manifest_runs_under_kube_play_gets_ready_and_stops_cleanly() {
    need_engine!();
    let Some((sup, child)) = static_binaries() else {
        eprintln!(
            "skipped: no static build (cargo build --release --target x86_64-unknown-linux-musl \
             --bin supervisor --example listenfd_child; .ci/run does)"
        );
        return;
    };
    let env = Setup::new("serve.py").build();
    let image = scratch_image(&env, &sup, &child);
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/container/deployment.yaml");
    let text = std::fs::read_to_string(&shipped).unwrap();
    let images = yaml_values(&text, "image");
    if images.len() != 1 {
        env.fail(format!("want one image in the manifest, got {images:?}"));
    }
    // podman 4 publishes every containerPort on the host under the same
    // number (Kubernetes does not): one replica, on a port free here.
    let ports = yaml_values(&text, "containerPort");
    let replicas_shipped = yaml_values(&text, "replicas");
    if ports.len() != 1 || replicas_shipped.len() != 1 {
        env.fail(format!(
            "want one containerPort and replicas, got {ports:?} {replicas_shipped:?}"
        ));
    }
    let played = text
        .replace(images[0], &image.name)
        .replace(
            &format!("containerPort: {}", ports[0]),
            &format!("containerPort: {}", free_port()),
        )
        .replace(&format!("replicas: {}", replicas_shipped[0]), "replicas: 1");
    let manifest = env.path("deployment.yaml");
    std::fs::write(&manifest, played).unwrap();
    let manifest_s = manifest.display().to_string();
    let deployment = yaml_values(&text, "name")[0].to_string();
    let replicas = 1;
    let grace: u64 = yaml_values(&text, "terminationGracePeriodSeconds")[0]
        .parse()
        .unwrap();

    struct Down(String);
    impl Drop for Down {
        fn drop(&mut self) {
            let _ = run_cmd(
                "podman",
                &["kube".into(), "down".into(), self.0.clone()],
                PODMAN,
            );
        }
    }
    // The log in a file of ours: it outlives the container's removal.
    let log = env.path("app.log");
    let log_opt = format!("path={}", log.display());
    let play = podman(&[
        "kube",
        "play",
        "--log-driver",
        "k8s-file",
        "--log-opt",
        &log_opt,
        &manifest_s,
    ]);
    let _down = Down(manifest_s.clone());
    if play.code != Some(0) {
        env.fail(format!("podman kube play failed\n{play}"));
    }
    // podman names a Deployment's containers DEPLOYMENT-pod-N-CONTAINER.
    let ours = |all: bool| -> Vec<String> {
        let mut args = vec!["ps", "--format", "{{.Names}}"];
        if all {
            args.push("-a");
        }
        podman(&args)
            .stdout
            .lines()
            .filter(|n| n.starts_with(&format!("{deployment}-pod-")) && !n.ends_with("-infra"))
            .map(str::to_string)
            .collect()
    };
    let containers = ours(false);
    if containers.is_empty() || containers.len() > replicas {
        env.fail(format!(
            "want 1 to {replicas} running containers, got {containers:?}\n{play}"
        ));
    }
    // podman 4 turns a livenessProbe into a healthcheck but ignores a
    // readinessProbe: run the manifest's probe command as the kubelet would.
    let probe: Vec<String> = {
        let line = text
            .lines()
            .skip_while(|l| !l.trim_start().starts_with("readinessProbe:"))
            .find(|l| l.trim_start().starts_with("command:"))
            .unwrap_or_else(|| env.fail("no readinessProbe exec command in the manifest"));
        let list = line
            .split_once('[')
            .and_then(|(_, r)| r.split_once(']'))
            .unwrap()
            .0;
        list.split(',')
            .map(|w| w.trim().trim_matches('"').to_string())
            .collect()
    };
    for c in &containers {
        let mut exec = vec!["exec", c.as_str()];
        exec.extend(probe.iter().map(String::as_str));
        env.wait_for(
            &format!("{c} ready through the manifest's probe"),
            DEADLINE,
            || podman(&exec).code == Some(0),
        );
        // The stop budget of the config in the image is covered.
        let unit = podman(&["exec", c, "/usr/local/bin/supervisor", "systemd", "print"]);
        let budget: u64 = unit
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix("TimeoutStopSec="))
            .and_then(|v| v.trim_end_matches('s').parse().ok())
            .unwrap_or_else(|| env.fail(format!("no TimeoutStopSec in\n{unit}")));
        if grace < budget {
            env.fail(format!(
                "terminationGracePeriodSeconds {grace} does not cover the stop budget {budget} s"
            ));
        }
    }
    // What the kubelet does at a pod's deletion: SIGTERM, then SIGKILL
    // after the grace period. (podman 4's `kube down` removes a running pod
    // by force, SIGKILL at once, so the pod is stopped first.)
    let started = Instant::now();
    let pod = format!("{deployment}-pod-0");
    let stop = podman(&["pod", "stop", "-t", &grace.to_string(), &pod]);
    if stop.code != Some(0) {
        env.fail(format!("podman pod stop failed\n{stop}"));
    }
    for c in &containers {
        if exit_code(c) != Some(0) {
            env.fail(format!(
                "{c}: want exit 0 after the pod's stop, got {:?}",
                exit_code(c)
            ));
        }
    }
    let down = podman(&["kube", "down", &manifest_s]);
    let took = started.elapsed();
    if down.code != Some(0) {
        env.fail(format!("podman kube down failed\n{down}"));
    }
    if took > Duration::from_secs(grace) {
        env.fail(format!("the stop took {took:?}, past the grace period"));
    }
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    if !text.contains("listenfd_child 6 stopping") && !text.contains(" stopping\n") {
        env.fail(format!("the child did not stop gracefully:\n{text}"));
    }
    if !text.contains("supervisor: INFO supervisor 1 stopped") {
        env.fail(format!("the supervisor did not stop cleanly:\n{text}"));
    }
    if !ours(true).is_empty() {
        env.fail(format!("containers left after kube down: {:?}", ours(true)));
    }
}
