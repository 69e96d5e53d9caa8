//! The socket side of the driver: fd 3 bound (or passed by the service
//! manager, or handed over by `reload`), re-armed when a child shut it
//! down, switched to a socket bound for a changed `[listen]`, and the
//! processes other than ours that hold it.

use std::net::SocketAddr;
use std::os::fd::AsFd;

use tracing::{info, warn};

use crate::config::ListenSection;
use crate::listener::{describe_bind_error, Listener, Standby};
use crate::sys;

/// A process that holds a socket only because it was just forked by one
/// that holds it drops it at its exec, within milliseconds: holders seen
/// machine-wide are looked at twice, this far apart, before they count.
const SETTLE: std::time::Duration = std::time::Duration::from_millis(30);

/// `holders` that are still among `look()` after [`SETTLE`] (none looked
/// for when there are none).
pub(super) fn settled(mut holders: Vec<i32>, look: impl Fn() -> Vec<i32>) -> Vec<i32> {
    if !holders.is_empty() {
        std::thread::sleep(SETTLE);
        let again = look();
        holders.retain(|p| again.contains(p));
    }
    holders
}

/// The service manager that passed socket `id` (our parent) when it holds
/// it: excluded from the rivals for good.
fn manager_pids(id: Option<u64>) -> Vec<i32> {
    let Some(id) = id else { return Vec::new() };
    sys::socket_holders(id, sys::Scope::Only(nix::unistd::getppid().as_raw()))
}

/// What `state.json` (its `listen`, `port_holder` and `bind_error`) and
/// the alerts say of the port.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Shown {
    pub(crate) address: String,
    pub(crate) name: String,
    pub(crate) bound: bool,
    /// The service manager passed the socket (`listen.inherited`).
    pub(crate) inherited: bool,
    /// `sys::socket_id` of our listening socket, once bound (or of an
    /// earlier supervisor's, while its holders are being stopped).
    pub(crate) socket_id: Option<u64>,
    /// While the address cannot be bound: who holds it, if that can be
    /// told, and why.
    pub(crate) port_holder: Option<(i32, String)>,
    pub(crate) bind_error: Option<String>,
}

/// fd 3 and what goes with it.
pub(super) struct Port {
    /// Where to bind, and the backlog (the config's `[listen]`).
    address: SocketAddr,
    backlog: i32,
    listener: Option<Listener>,
    /// After a `reload` that changed `[listen]`: the new socket, bound,
    /// waiting for the next launch.
    next: Option<Standby>,
    /// The service manager holding our socket too (a passed one).
    managers: Vec<i32>,
    /// Orphaned descendants come back to us (Linux): then whatever holds
    /// our socket descends from us, and looking there is enough.
    subreaper: bool,
    /// Without a subreaper (macOS) a scan for rivals reads every process
    /// on the machine: set when one, made since the last child's exit,
    /// found nothing holding our socket, so the spawn that follows need
    /// not scan again (nothing but us holds it, and nothing of ours has
    /// run since). Cleared at each spawn. Never set with a subreaper.
    clean_since_exit: bool,
    shown: Shown,
}

impl Port {
    /// A fresh start, with the socket the service manager passed, if any.
    pub(super) fn fresh(listen: &ListenSection, passed: Option<Listener>) -> Port {
        let socket_id = passed.as_ref().and_then(|l| sys::socket_id(l.as_fd()));
        // Whoever passed the socket holds it too, and is never a rival:
        // our parent (systemd, systemd-socket-activate, launchd), if it
        // holds it.
        let managers = match passed {
            Some(_) => manager_pids(socket_id),
            None => Vec::new(),
        };
        let inherited = passed.is_some();
        Port::new(listen, passed, None, managers, (inherited, socket_id))
    }

    /// What an earlier image handed over (`reload`): whether the service
    /// manager passed the socket, and its id.
    pub(super) fn resumed(
        listen: &ListenSection,
        listener: Option<Listener>,
        next: Option<Standby>,
        managers: Vec<i32>,
        socket: (bool, Option<u64>),
    ) -> Port {
        Port::new(listen, listener, next, managers, socket)
    }

    fn new(
        listen: &ListenSection,
        listener: Option<Listener>,
        next: Option<Standby>,
        managers: Vec<i32>,
        (inherited, socket_id): (bool, Option<u64>),
    ) -> Port {
        let shown = Shown {
            address: listen.address.to_string(),
            name: listen.name.clone(),
            bound: listener.as_ref().is_some_and(Listener::is_listening),
            inherited,
            socket_id,
            port_holder: None,
            bind_error: None,
        };
        Port {
            address: listen.address,
            backlog: listen.backlog,
            listener,
            next,
            managers,
            subreaper: false,
            clean_since_exit: false,
            shown,
        }
    }

    pub(super) fn shown(&self) -> &Shown {
        &self.shown
    }

    /// An earlier supervisor's socket, named in our record until we bind
    /// our own: should we die meanwhile, the next supervisor still finds
    /// its holders.
    pub(super) fn name_earlier(&mut self, socket_id: Option<u64>) {
        self.shown.socket_id = socket_id;
    }

    /// Once the driver runs: orphaned descendants come back to us (when
    /// the system has subreapers), to be found and reaped.
    pub(super) fn become_subreaper(&mut self) {
        self.subreaper = sys::set_child_subreaper();
    }

    pub(super) fn listener(&self) -> Option<&Listener> {
        self.listener.as_ref()
    }

    /// A socket bound for a changed `[listen]` waits for the next launch.
    pub(super) fn switching(&self) -> bool {
        self.next.is_some()
    }

    /// Whether the service manager that passed the socket is `pid`.
    pub(super) fn is_manager(&self, pid: i32) -> bool {
        self.managers.contains(&pid)
    }

    /// What the handoff carries of it beside [`Shown`]: fd 3's number
    /// (when bound), the managers.
    pub(super) fn hand(&self) -> (Option<std::os::fd::RawFd>, Vec<i32>) {
        use std::os::fd::AsRawFd;
        (
            self.listener.as_ref().map(|l| l.as_fd().as_raw_fd()),
            self.managers.clone(),
        )
    }

    /// Bind the configured address at fd 3. `false`: it is taken (why, and
    /// who holds it when that can be told, in [`Shown`]).
    pub(super) fn bind(&mut self) -> bool {
        let addr = self.address;
        match Listener::bind(addr, self.backlog) {
            Ok(l) => {
                self.shown.socket_id = sys::socket_id(l.as_fd());
                self.listener = Some(l);
                self.shown.bound = true;
                if self.shown.bind_error.take().is_some() {
                    info!("bound {addr} after waiting for it");
                }
                self.shown.port_holder = None;
                true
            }
            Err(e) => {
                self.shown.bind_error = Some(describe_bind_error(&e));
                self.shown.port_holder = sys::port_holder(addr);
                false
            }
        }
    }

    /// A child may have shut the listening socket down (`shutdown(2)` on
    /// fd 3 disarms it for every holder, on Linux): listen on it again,
    /// or, if that fails, let it go to be bound anew.
    pub(super) fn rearm(&mut self) {
        let Some(l) = &self.listener else { return };
        if l.is_listening() {
            return;
        }
        match l.rearm(self.backlog) {
            Ok(()) => {
                self.shown.bound = true;
                warn!("the listening socket had been shut down (by a child?); it listens again");
            }
            Err(e) => {
                warn!(
                    "the listening socket had been shut down and cannot listen again ({e}); binding {} anew",
                    self.address
                );
                self.listener = None;
                self.shown.bound = false;
            }
        }
    }

    /// Whether it still listens, as a child's exit leaves it (a child may
    /// have shut it down for everyone: said until it is re-armed).
    pub(super) fn check(&mut self) {
        self.shown.bound = self.listener.as_ref().is_some_and(Listener::is_listening);
    }

    /// Before a launch: a socket bound for a changed `[listen]` replaces
    /// the old one (closed here, once no child holds it).
    pub(super) fn switch(&mut self) {
        let Some(next) = self.next.take() else {
            return;
        };
        // The new socket takes fd 3 and the old one closes in one step:
        // fd 3 is never free for another file to land on.
        let moved = match self.listener.as_mut() {
            Some(l) => l.replace(next),
            None => next.into_place().map(|l| self.listener = Some(l)),
        };
        match moved.map(|()| self.listener.as_ref().map(|l| sys::socket_id(l.as_fd()))) {
            Ok(id) => {
                self.shown.socket_id = id.flatten();
                self.shown.address = self.address.to_string();
                self.shown.inherited = false;
                self.shown.bound = true;
                self.managers.clear();
            }
            Err(e) => warn!(
                "reload: cannot move the socket for {} into place ({e}); the child keeps the old one",
                self.address
            ),
        }
    }

    /// The processes that hold our listening socket, other than us, the
    /// service manager that passed it and those `ours` claims (the child,
    /// a handover's second child). With a subreaper they all descend from
    /// `me` (cheap: our few descendants); without one (macOS) they may be
    /// anywhere.
    pub(super) fn rivals(&self, me: i32, ours: impl Fn(i32) -> bool) -> Vec<i32> {
        let scope = match self.subreaper {
            true => sys::Scope::DescendantsOf(me),
            false => sys::Scope::All,
        };
        self.holders(scope, ours)
    }

    /// The holders of our socket in `scope` but those of
    /// [`Port::rivals`]'s exceptions.
    pub(super) fn holders(&self, scope: sys::Scope, ours: impl Fn(i32) -> bool) -> Vec<i32> {
        let Some(id) = self.shown.socket_id else {
            return Vec::new();
        };
        let mut holders = sys::socket_holders(id, scope);
        holders.retain(|p| !ours(*p) && !self.managers.contains(p));
        // Machine-wide (no subreaper), a stranger forked by a holder can be
        // caught between its fork and its exec: look again.
        match scope {
            sys::Scope::All => settled(holders, || sys::socket_holders(id, scope)),
            _ => holders,
        }
    }

    /// After a scan by [`Port::rivals`] between a child's exit and the
    /// next spawn: whether it lets that spawn skip its own. Only without a
    /// subreaper (a machine-wide scan is the costly one; Linux keeps its
    /// cheap scan of our tree before each spawn) and only when `alone`: no
    /// child of ours runs (no handover's second child, which holds the
    /// socket and is left out of the scan).
    pub(super) fn note_scan(&mut self, rivals: &[i32], alone: bool) {
        self.clean_since_exit = !self.subreaper && rivals.is_empty() && alone;
    }

    /// Whether a scan since the last exit found nothing (then the spawn
    /// about to happen need not scan again); forgotten by asking.
    pub(super) fn take_clean(&mut self) -> bool {
        std::mem::take(&mut self.clean_since_exit)
    }

    /// Before a spawn: a scan before the next one is needed again.
    pub(super) fn spawning(&mut self) {
        self.clean_since_exit = false;
        if let Some(l) = &self.listener {
            if let Err(e) = l.make_blocking() {
                warn!(
                    "cannot make the listening socket blocking again ({e}); \
                     a child that calls a blocking accept may get EAGAIN"
                );
            }
        }
    }
}
