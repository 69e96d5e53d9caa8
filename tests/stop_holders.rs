//! `stop` and `restart` find every holder of our socket, in our tree or
//! not (issue 25 item 4; SPEC 0.2: after `stop` returns 0, no process that
//! held our socket is alive). The child passes fd 3 over a Unix socket
//! (`SCM_RIGHTS`) to a process this test started — not a descendant of
//! the supervisor — which serves on it.

mod common;

use common::*;
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The process outside the tree, SIGKILLed by pid when dropped.
struct Receiver(Child);

impl Drop for Receiver {
    fn drop(&mut self) {
        kill(self.0.id() as i32, libc::SIGKILL);
        let _ = self.0.wait();
    }
}

impl Receiver {
    fn pid(&self) -> i32 {
        self.0.id() as i32
    }

    /// Gone: exited (a zombie of ours until reaped counts as gone).
    fn gone(&mut self) -> bool {
        matches!(self.0.try_wait(), Ok(Some(_))) || !pid_alive(self.pid())
    }
}

/// Listens on `<dir>/pass.sock`, takes the socket the child sends, and
/// serves on it ("receiver" and a newline) until killed.
fn receiver(env: &Env) -> Receiver {
    let code = "import os, socket, sys\n\
                d = sys.argv[1]\n\
                u = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n\
                u.bind(os.path.join(d, 'pass.sock'))\n\
                u.listen(8)\n\
                conn, _ = u.accept()\n\
                msg, fds, _, _ = socket.recv_fds(conn, 16, 1)\n\
                s = socket.socket(fileno=fds[0])\n\
                s.setblocking(True)\n\
                open(os.path.join(d, 'received'), 'w').write('yes')\n\
                while True:\n\
                \x20   c, _ = s.accept()\n\
                \x20   c.sendall(b'receiver\\n')\n\
                \x20   c.close()\n";
    let child = Command::new(python())
        .args(["-c", code])
        .arg(&env.dir)
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn the receiver");
    let r = Receiver(child);
    env.wait_for("the receiver listens", DEADLINE, || {
        env.path("pass.sock").exists()
    });
    r
}

fn setup() -> (Env, Receiver) {
    let env = Setup::new("pass_fd.py").build();
    let r = receiver(&env);
    (env, r)
}

fn port_closed(env: &Env) -> bool {
    TcpStream::connect_timeout(&env.addr(), Duration::from_millis(500)).is_err()
}

#[test]
fn stop_ends_a_process_outside_the_tree_that_holds_the_socket() {
    let (env, mut r) = setup();
    let sup = env.spawn();
    env.wait_child(&[]);
    env.wait_for("the receiver holds the socket", DEADLINE, || {
        env.path("received").exists()
    });
    let out = env.cli(&["stop"]);
    if out.code != Some(0) {
        env.fail(format!("stop: want 0\n{out}"));
    }
    sup.wait_exit(DEADLINE);
    // Once `stop` returned: nothing that held the socket is alive.
    if !r.gone() {
        env.fail(format!(
            "the receiver (pid {}) outside the tree still runs after stop",
            r.pid()
        ));
    }
    if !port_closed(&env) {
        env.fail("the port still answers after stop");
    }
}

#[test]
fn restart_ends_a_process_outside_the_tree_that_holds_the_socket() {
    let (env, mut r) = setup();
    let _sup = env.spawn();
    let first = env.wait_child(&[]);
    env.wait_for("the receiver holds the socket", DEADLINE, || {
        env.path("received").exists()
    });
    let out = env.cli(&["restart"]);
    if out.code != Some(0) {
        env.fail(format!("restart: want 0\n{out}"));
    }
    env.wait_for("the receiver gone", Duration::from_secs(3), || r.gone());
    let second = env.wait_child(&[first]);
    // Only the new child serves.
    for _ in 0..5 {
        let got = request(env.addr(), DEADLINE).unwrap_or_default();
        if got.trim() != second.to_string() {
            env.fail(format!(
                "after restart the port answered {got:?}, want {second}"
            ));
        }
    }
}
