//! A loop on a thread of its own until the test says stop (client loops,
//! samplers): the stop flag, the join and the stop on drop in one place.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

/// `body` runs on its own thread with the stop flag and returns what
/// [`Background::finish`] hands back. Dropped unfinished (a test that
/// failed), the loop is told to stop and left to end on its own.
pub struct Background<T: Send + 'static> {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<T>>,
}

impl<T: Send + 'static> Background<T> {
    pub fn start(body: impl FnOnce(Arc<AtomicBool>) -> T + Send + 'static) -> Background<T> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        Background {
            stop,
            thread: Some(thread::spawn(move || body(flag))),
        }
    }

    /// Stop the loop, wait for it, and take what it found.
    pub fn finish(mut self) -> T {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread.take().expect("finished once");
        thread.join().expect("the background loop panicked")
    }
}

impl<T: Send + 'static> Drop for Background<T> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
