//! Signals become events: the handled set, held back from before the lock
//! until the handlers exist, then read as a stream in the one loop.

use std::future::poll_fn;
use std::pin::Pin;

use nix::sys::signal::{SigSet, Signal};
use signal_hook::consts::signal::{SIGCHLD, SIGHUP, SIGINT, SIGTERM, SIGUSR1, SIGUSR2};
use signal_hook_tokio::Signals;

/// Signals we handle; registered before the pid file is written or any
/// child exists, so a SIGTERM can never kill us and orphan a child.
const HANDLED: [i32; 6] = [SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGUSR2, SIGCHLD];

/// Hold the signals we handle back (they stay pending) from just before the
/// lock is taken until their handlers exist: a `stop` that finds the new
/// lock holder at once must get a clean exit 0, not a death by SIGTERM.
pub(crate) fn hold() -> SigSet {
    let mut set = SigSet::empty();
    for sig in HANDLED {
        if let Ok(s) = Signal::try_from(sig) {
            set.add(s);
        }
    }
    let _ = set.thread_block();
    set
}

/// Register the handlers, then let the held signals in.
pub(crate) fn register(held: SigSet) -> std::io::Result<Signals> {
    let signals = Signals::new(HANDLED)?;
    let _ = held.thread_unblock();
    Ok(signals)
}

/// With the handled set blocked ([`hold`]): take what the stream has
/// caught but not yet handed out and raise each again on this thread, so
/// it waits, pending, for whoever unblocks the set next (the new image
/// after `execve`, which keeps a thread's pending signals; or this one,
/// should the exec fail). How many were raised.
pub(crate) fn requeue_caught(signals: &mut Signals) -> usize {
    use futures_core::Stream as _;
    use std::task::{Context, Poll, Waker};
    let mut cx = Context::from_waker(Waker::noop());
    let mut raised = 0;
    while let Poll::Ready(Some(sig)) = Pin::new(&mut *signals).poll_next(&mut cx) {
        if let Ok(sig) = Signal::try_from(sig) {
            if nix::sys::signal::raise(sig).is_ok() {
                raised += 1;
            }
        }
    }
    raised
}

/// The next handled signal. `Signals` is a `futures_core::Stream`; this
/// polls it without pulling in a futures utility crate.
pub(crate) async fn next(signals: &mut Signals) -> Option<i32> {
    use futures_core::Stream as _;
    poll_fn(|cx| Pin::new(&mut *signals).poll_next(cx)).await
}
