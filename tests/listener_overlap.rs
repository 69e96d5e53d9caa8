//! The incident's own cause, on every OS: never start a child while another
//! socket listens on an overlapping address of our port (a wildcard of
//! either family beside our specific address), yet bind at once when only
//! TIME_WAIT leftovers remain. Linux's kernel refuses such overlaps anyway;
//! on macOS it is the supervisor's own check that refuses them, and these
//! same tests prove it there.

mod common;

use common::*;
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};

/// A foreign server listening on `host:port` with SO_REUSEADDR (as uvicorn
/// and most servers set it). It names the test's temp dir in its argv, so
/// the harness's cleanup finds it too.
struct Foreign(Child);

impl Foreign {
    fn start(env: &Env, host: &str, port: u16) -> Foreign {
        let family = if host.contains(':') {
            "AF_INET6"
        } else {
            "AF_INET"
        };
        let script = format!(
            "import os, socket, sys, time\n\
             s = socket.socket(socket.{family})\n\
             s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
             s.bind(('{host}', {port}))\n\
             s.listen(8)\n\
             open(os.path.join(sys.argv[1], 'foreign-ready'), 'w').close()\n\
             time.sleep(120)\n"
        );
        let child = Command::new(python())
            .args(["-c", &script, &env.dir_s])
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn the foreign server");
        let f = Foreign(child);
        env.wait_for("the foreign server listens", DEADLINE, || {
            env.path("foreign-ready").exists()
        });
        f
    }

    fn pid(&self) -> i32 {
        self.0.id() as i32
    }
}

impl Drop for Foreign {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The supervisor on 127.0.0.1:P waits while `foreign` listens on an
/// overlapping address, names it, starts no child; once it is gone, binds
/// and starts one.
fn waits_for(env: &Env, foreign: Foreign) {
    let _sup = env.spawn();
    let v = env.wait_value(
        "waiting-for-port naming the foreign server",
        DEADLINE,
        || {
            let (_, v) = env.status_json();
            (v["state"] == "waiting-for-port" && v["port_holder"]["pid"].as_i64().is_some())
                .then_some(v)
        },
    );
    if v["port_holder"]["pid"].as_i64() != Some(foreign.pid() as i64) {
        env.fail(format!("port_holder should be {}: {v:#}", foreign.pid()));
    }
    // Retried at least twice, and never a child.
    let log = env.log_dir.join("supervisor.log");
    env.wait_for("two refused binds", DEADLINE, || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .matches("cannot bind")
            .count()
            >= 2
    });
    if !env.events_of("start").is_empty() {
        env.fail("a child started while another server listened on the port");
    }
    drop(foreign);
    env.wait_child(&[]);
}

#[test]
fn an_ipv4_wildcard_listener_keeps_the_child_from_starting() {
    let env = Setup::new("serve.py").build();
    let foreign = Foreign::start(&env, "0.0.0.0", env.port);
    waits_for(&env, foreign);
}

#[test]
fn an_ipv6_wildcard_listener_keeps_the_child_from_starting() {
    let env = Setup::new("serve.py").build();
    let foreign = Foreign::start(&env, "::", env.port);
    waits_for(&env, foreign);
}

#[test]
fn the_same_address_keeps_the_child_from_starting() {
    let env = Setup::new("serve.py").build();
    let foreign = Foreign::start(&env, "127.0.0.1", env.port);
    waits_for(&env, foreign);
}

/// A previous server's connections left in TIME_WAIT on the port (the
/// server closed first, as after a restart) do not delay the bind.
#[test]
fn time_wait_leftovers_do_not_keep_the_port() {
    let env = Setup::new("serve.py").build();
    let addr = env.addr();
    {
        // std sets SO_REUSEADDR on listeners, as the previous supervisor did.
        let previous = TcpListener::bind(addr).expect("bind the previous server");
        for _ in 0..3 {
            let client = TcpStream::connect(addr).unwrap();
            let (served, _) = previous.accept().unwrap();
            drop(served);
            let mut byte = [0u8; 1];
            let _ = std::io::Read::read(&mut &client, &mut byte);
        }
    }
    // The leftovers are there: a bind without SO_REUSEADDR is refused.
    let plain = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    match plain.bind(&addr.into()) {
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {}
        other => env.fail(format!(
            "expected TIME_WAIT leftovers to refuse a plain bind, got {other:?}"
        )),
    }
    drop(plain);
    let _sup = env.spawn();
    let v = env.wait_state("running");
    if v["listen"]["bound"] != true {
        env.fail(format!("running but not bound: {v:#}"));
    }
    let log = std::fs::read_to_string(env.log_dir.join("supervisor.log")).unwrap_or_default();
    if log.contains("cannot bind") {
        env.fail("the bind was refused at least once");
    }
}
