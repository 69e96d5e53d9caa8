//! A Rust child built with the `listenfd` crate (examples/listenfd_child.rs)
//! takes the supervisor's socket, keeps answering across a restart, and
//! refuses to run (rather than bind) without a handed-over socket.

mod common;

use common::*;

fn serving_child(env: &Env, not: &[i32]) -> i32 {
    wait_serving(env, not, "listenfd child", |pid, body| {
        (body.trim() == format!("listenfd {pid} web")).then_some(())
    })
    .0
}

#[test]
fn listenfd_child_serves_the_handed_socket_across_a_restart() {
    let bin = example_bin("listenfd_child");
    let mut env = Setup::new("serve.py").set("listen", "name", "web").build();
    let argv = vec![bin.display().to_string(), env.dir_s.clone()];
    env.set_command(&argv);
    let _sup = env.spawn();
    let first = serving_child(&env, &[]);
    let hammer = Hammer::start(env.addr());
    env.wait_for("answers from the first child", DEADLINE, || {
        hammer.tally().ok_with(&format!("listenfd {first} ")) >= 5
    });
    let out = env.cli(&["restart"]);
    if out.code != Some(0) {
        env.fail(format!("restart failed:\n{out}"));
    }
    let second = serving_child(&env, &[first]);
    env.wait_for("answers from the second child", DEADLINE, || {
        hammer.tally().ok_with(&format!("listenfd {second} ")) >= 5
    });
    let t = hammer.finish();
    eprintln!(
        "listenfd: {:?}, {} refused, errors {:?}",
        t.ok, t.refused, t.errors
    );
    if t.refused != 0 || t.errors.len() > 2 {
        env.fail(format!("clients were refused or failed: {t:?}"));
    }
}

#[test]
fn listenfd_child_without_a_socket_exits_instead_of_binding() {
    let bin = example_bin("listenfd_child");
    let out = run_cmd(&bin.display().to_string(), &[], DEADLINE).unwrap();
    assert_eq!(out.code, Some(2), "{out}");
    assert!(out.stderr.contains("no socket handed over"), "{out}");
}
