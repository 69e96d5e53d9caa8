//! Starting what is measured: our supervisor, its peers (each only where
//! installed) and the plain restart loops, all supervising the bench's own
//! child; probing the port; and the bench's temp root.

use crate::procs::{children_of, comm, kill, killpg};
use crate::BIN;
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Kind {
    Ours,
    /// The same supervisor linked statically with musl (the container
    /// artifact), where built: `$SUPERVISOR_BENCH_STATIC`, else
    /// `target/x86_64-unknown-linux-musl/release/supervisor`.
    Static,
    Supervisord,
    Runsv,
    S6,
    SdActivate,
}

impl Kind {
    pub(crate) const PEERS: [Kind; 5] = [
        Kind::Static,
        Kind::Supervisord,
        Kind::Runsv,
        Kind::S6,
        Kind::SdActivate,
    ];
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Ours => "supervisor",
            Kind::Static => "supervisor, static musl",
            Kind::Supervisord => "supervisord",
            Kind::Runsv => "runsv",
            Kind::S6 => "s6-supervise",
            Kind::SdActivate => "systemd-socket-activate",
        }
    }
    pub(crate) fn program(self) -> &'static str {
        match self {
            Kind::Ours => BIN,
            Kind::Static => static_bin(),
            Kind::Supervisord => "supervisord",
            Kind::Runsv => "runsv",
            Kind::S6 => "s6-supervise",
            Kind::SdActivate => "systemd-socket-activate",
        }
    }
}

/// Where the static build is looked for (see [`Kind::Static`]).
pub(crate) fn static_bin() -> &'static str {
    static PATH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PATH.get_or_init(|| match std::env::var("SUPERVISOR_BENCH_STATIC") {
        Ok(p) if !p.is_empty() => p,
        _ => format!(
            "{}/target/x86_64-unknown-linux-musl/release/supervisor",
            env!("CARGO_MANIFEST_DIR")
        ),
    })
}

pub(crate) struct Peers {
    pub(crate) found: BTreeMap<Kind, PathBuf>,
}

impl Peers {
    pub(crate) fn find() -> Peers {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut found = BTreeMap::new();
        if Path::new(static_bin()).is_file() {
            found.insert(Kind::Static, PathBuf::from(static_bin()));
        }
        for k in Kind::PEERS.into_iter().filter(|k| *k != Kind::Static) {
            if let Some(p) = std::env::split_paths(&path)
                .map(|d| d.join(k.program()))
                .find(|p| p.is_file())
            {
                found.insert(k, p);
            }
        }
        // runsv's figures include its logger.
        if found.contains_key(&Kind::Runsv) && which("svlogd").is_none() {
            found.remove(&Kind::Runsv);
        }
        Peers { found }
    }
    pub(crate) fn has(&self, k: Kind) -> bool {
        self.found.contains_key(&k)
    }
    pub(crate) fn names(&self) -> String {
        let v: Vec<_> = self.found.keys().map(|k| k.name()).collect();
        if v.is_empty() {
            "none".into()
        } else {
            v.join(", ")
        }
    }
    pub(crate) fn each(&self, ks: &[Kind]) -> Vec<Kind> {
        ks.iter().copied().filter(|k| self.has(*k)).collect()
    }
}

pub(crate) fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

pub(crate) fn exe() -> String {
    std::env::current_exe()
        .expect("current_exe")
        .to_string_lossy()
        .into_owned()
}

pub(crate) fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
}

/// A process tree started by the bench in its own process group; stopped
/// gracefully (SIGTERM), then the group and every child pid seen are killed.
pub(crate) struct Svc {
    pub(crate) kind: Kind,
    pub(crate) proc: Child,
    pub(crate) dir: PathBuf,
    pub(crate) addr: SocketAddr,
    pub(crate) seen: Arc<Mutex<Vec<u32>>>,
}

impl Svc {
    pub(crate) fn pid(&self) -> u32 {
        self.proc.id()
    }

    /// The pids whose cost is the supervisor's: for runsv also its svlogd.
    pub(crate) fn cost_pids(&self) -> Vec<u32> {
        let mut v = vec![self.pid()];
        if self.kind == Kind::Runsv {
            v.extend(
                children_of(self.pid())
                    .into_iter()
                    .filter(|p| comm(*p) == "svlogd"),
            );
        }
        v
    }

    pub(crate) fn note(&self, pid: u32) {
        let mut s = self.seen.lock().unwrap();
        if !s.contains(&pid) {
            s.push(pid);
        }
    }
}

impl Drop for Svc {
    fn drop(&mut self) {
        let pid = self.pid();
        kill(pid, libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.proc.try_wait() {
                break;
            }
            thread::sleep(Duration::from_millis(5));
        }
        killpg(pid, libc::SIGKILL);
        let _ = self.proc.kill();
        let _ = self.proc.wait();
        let me = exe();
        for p in self.seen.lock().unwrap().iter() {
            let cmd = fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmd).contains(&me) {
                kill(*p, libc::SIGKILL);
            }
        }
    }
}

pub(crate) fn write_exec(path: &Path, text: &str) {
    fs::write(path, text).expect("write script");
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).expect("chmod");
}

pub(crate) fn q(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

/// What the supervised child does.
#[derive(Clone)]
pub(crate) enum Job {
    Serve,
    /// Serve once ready: READY=1 after this many ms.
    ServeReady(u64),
    Spew(usize),
    Crash,
}

impl Job {
    /// argv for a child that takes fd 3 (`fd3`) or binds `addr` itself.
    pub(crate) fn argv(&self, fd3: bool, addr: SocketAddr) -> Vec<String> {
        let a = addr.to_string();
        let mut v = vec![exe(), "child".into()];
        match (self, fd3) {
            (Job::Serve, true) => v.push("serve-fd3".into()),
            (Job::ServeReady(ms), _) => v.extend(["serve-ready".into(), ms.to_string()]),
            (Job::Serve, false) => v.extend(["serve-bind".into(), a]),
            (Job::Spew(n), true) => v.extend(["spew-fd3".into(), n.to_string()]),
            (Job::Spew(n), false) => v.extend(["spew-bind".into(), a, n.to_string()]),
            (Job::Crash, _) => v.push("crash".into()),
        }
        v
    }
}

pub(crate) struct OurOpts {
    pub(crate) initial_backoff: &'static str,
    pub(crate) max_backoff: &'static str,
    pub(crate) reset_after: &'static str,
    /// More `[child]` lines.
    pub(crate) child_extra: &'static str,
    /// More sections, after `[log]`.
    pub(crate) sections: &'static str,
    /// More `[restart]` lines.
    pub(crate) restart_extra: &'static str,
    /// `[metrics]` on a free port, written to `metrics.addr` in the dir.
    pub(crate) metrics: bool,
}

pub(crate) const RESTART_FAST: OurOpts = OurOpts {
    initial_backoff: "1ms",
    max_backoff: "1s",
    reset_after: "100ms",
    child_extra: "",
    sections: "",
    restart_extra: "",
    metrics: false,
};

/// With a memory ceiling the child never reaches: one check a second.
pub(crate) const MEMORY_CHECKED: OurOpts = OurOpts {
    child_extra: "max_memory = \"1GiB\"\nmax_memory_check = \"1s\"\n",
    ..RESTART_FAST
};

/// With alerts configured; a healthy child gives them nothing to say.
pub(crate) const ALERTS_IDLE: OurOpts = OurOpts {
    sections: "\n[alerts]\ncommand = [\"/bin/true\"]\n",
    ..RESTART_FAST
};

/// With `[metrics]`; nobody asks while it is idle.
pub(crate) const METRICS_IDLE: OurOpts = OurOpts {
    metrics: true,
    ..RESTART_FAST
};

/// Start `kind` supervising `job` in a fresh temp dir.
pub(crate) fn start(kind: Kind, job: &Job, opts: &OurOpts, root: &Path) -> Svc {
    let dir = tempfile::Builder::new()
        .prefix(kind.name())
        .tempdir_in(root)
        .expect("tempdir")
        .keep();
    let addr = free_addr();
    let out = File::create(dir.join("stdout.txt")).unwrap();
    prepare(kind, job, opts, &dir, addr);
    let proc = command(kind, job, &dir, addr)
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", kind.name()));
    Svc {
        kind,
        proc,
        dir,
        addr,
        seen: Arc::new(Mutex::new(Vec::new())),
    }
}

/// Writes the files `kind` reads in `dir` to supervise `job` on `addr`.
fn prepare(kind: Kind, job: &Job, opts: &OurOpts, dir: &Path, addr: SocketAddr) {
    match kind {
        Kind::Ours | Kind::Static => {
            let argv: Vec<String> = job.argv(true, addr).iter().map(|s| q(s)).collect();
            let cfg = format!(
                "[supervisor]\nstate_dir = \"run\"\n\n[listen]\naddress = \"{addr}\"\n\n\
                 [child]\ncommand = [{}]\nstop_timeout = \"2s\"\nallow_root = true\n{}\n\
                 [restart]\ninitial_backoff = \"{}\"\nmax_backoff = \"{}\"\nreset_after = \"{}\"\n{}\n\
                 [log]\ndir = \"logs\"\nmax_bytes = \"100GB\"\n{}",
                argv.join(", "),
                opts.child_extra,
                opts.initial_backoff,
                opts.max_backoff,
                opts.reset_after,
                opts.restart_extra,
                opts.sections
            );
            let cfg = match opts.metrics {
                true => {
                    let m = free_addr();
                    fs::write(dir.join("metrics.addr"), m.to_string()).unwrap();
                    format!("{cfg}\n[metrics]\naddress = \"{m}\"\n")
                }
                false => cfg,
            };
            fs::write(dir.join("supervisor.toml"), cfg).unwrap();
        }
        Kind::Supervisord => {
            let d = dir.display();
            let cfg = format!(
                "[supervisord]\nnodaemon=true\nuser=root\nlogfile={d}/supervisord.log\n\
                 pidfile={d}/supervisord.pid\nchildlogdir={d}\n\n\
                 [unix_http_server]\nfile={d}/supervisor.sock\n\n\
                 [program:bench]\ncommand={}\nautorestart=true\nstartsecs=1\nstartretries=3\n\
                 stopsignal=KILL\nstdout_logfile={d}/child.log\nstdout_logfile_maxbytes=0\n\
                 redirect_stderr=true\n",
                job.argv(false, addr).join(" ")
            );
            fs::write(dir.join("supervisord.conf"), cfg).unwrap();
        }
        Kind::Runsv | Kind::S6 => {
            let svc = dir.join("svc");
            fs::create_dir(&svc).unwrap();
            write_exec(
                &svc.join("run"),
                &format!(
                    "#!/bin/sh\nexec 2>&1\nexec {}\n",
                    job.argv(false, addr).join(" ")
                ),
            );
            if kind == Kind::Runsv {
                fs::create_dir_all(svc.join("log/main")).unwrap();
                // No size rotation (s0), so every byte stays countable.
                fs::write(svc.join("log/main/config"), "s0\n").unwrap();
                write_exec(&svc.join("log/run"), "#!/bin/sh\nexec svlogd -tt main\n");
            }
        }
        // Nothing to write: it takes the address and the child on its command line.
        Kind::SdActivate => {}
    }
}

/// The command that starts `kind` on what [`prepare`] wrote in `dir`; run
/// again beside a running one, it is the losing copy.
pub(crate) fn command(kind: Kind, job: &Job, dir: &Path, addr: SocketAddr) -> Command {
    let mut cmd;
    match kind {
        Kind::Ours | Kind::Static => {
            cmd = Command::new(kind.program());
            cmd.arg("--config")
                .arg(dir.join("supervisor.toml"))
                .arg("run");
        }
        Kind::Supervisord => {
            cmd = Command::new("supervisord");
            cmd.arg("-c").arg(dir.join("supervisord.conf"));
        }
        Kind::Runsv | Kind::S6 => {
            cmd = Command::new(kind.program());
            cmd.arg(dir.join("svc"));
        }
        Kind::SdActivate => {
            let argv = sd_activate_argv(job, addr);
            cmd = Command::new(&argv[0]);
            cmd.args(&argv[1..]);
        }
    }
    cmd
}

/// systemd-socket-activate listening on `addr`, running `job` on the
/// socket it passes as fd 3.
pub(crate) fn sd_activate_argv(job: &Job, addr: SocketAddr) -> Vec<String> {
    let mut argv = vec![
        Kind::SdActivate.program().to_string(),
        "-l".into(),
        addr.to_string(),
    ];
    argv.extend(job.argv(true, addr));
    argv
}

/// A plain restart loop: re-spawn `argv` the moment it exits.
pub(crate) struct PlainLoop {
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) current: Arc<AtomicU32>,
    pub(crate) handle: Option<thread::JoinHandle<()>>,
    pub(crate) addr: SocketAddr,
}

impl PlainLoop {
    pub(crate) fn start(argv: Vec<String>, addr: SocketAddr) -> PlainLoop {
        let stop = Arc::new(AtomicBool::new(false));
        let current = Arc::new(AtomicU32::new(0));
        let (s, c) = (stop.clone(), current.clone());
        let handle = thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                let Ok(mut ch) = Command::new(&argv[0])
                    .args(&argv[1..])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                else {
                    thread::sleep(Duration::from_millis(10));
                    continue;
                };
                c.store(ch.id(), Ordering::SeqCst);
                let _ = ch.wait();
            }
        });
        PlainLoop {
            stop,
            current,
            handle: Some(handle),
            addr,
        }
    }
}

impl Drop for PlainLoop {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Kill until the loop notices; each kill hits the current child.
        while let Some(h) = &self.handle {
            if h.is_finished() {
                break;
            }
            let p = self.current.load(Ordering::SeqCst);
            if p != 0 {
                kill(p, libc::SIGKILL);
            }
            thread::sleep(Duration::from_millis(2));
        }
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

#[derive(Debug, PartialEq)]
pub(crate) enum Probe {
    Pid(u32),
    Refused,
    Other,
}

pub(crate) fn probe(addr: SocketAddr, wait: Duration) -> Probe {
    match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Probe::Refused,
        Err(_) => Probe::Other,
        Ok(mut s) => {
            let _ = s.set_read_timeout(Some(wait));
            let mut buf = String::new();
            match s.read_to_string(&mut buf) {
                Ok(_) => buf.trim().parse().map_or(Probe::Other, Probe::Pid),
                Err(_) => Probe::Other,
            }
        }
    }
}

/// The pid answering on `addr`, waiting up to `within` for one.
pub(crate) fn serving(addr: SocketAddr, not: u32, within: Duration) -> Option<u32> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Probe::Pid(p) = probe(addr, Duration::from_secs(5)) {
            if p != not {
                return Some(p);
            }
        }
        thread::sleep(Duration::from_micros(200));
    }
    None
}

pub(crate) fn wait_for(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        thread::sleep(Duration::from_millis(5));
    }
    false
}

pub(crate) fn root() -> PathBuf {
    let base = option_env!("CARGO_TARGET_TMPDIR").map_or_else(std::env::temp_dir, PathBuf::from);
    let d = base.join("supervisor-bench");
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    fs::set_permissions(&d, fs::Permissions::from_mode(0o700)).unwrap();
    d
}

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
