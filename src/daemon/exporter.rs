//! `[metrics]`: `GET /metrics` (the Prometheus text format) and `GET
//! /status` (the JSON of `status --json`) on a listener of their own,
//! read-only — nothing sent here reaches the driver.
//!
//! HTTP is hyper's HTTP/1 server on the driver's own (single-threaded)
//! tokio runtime: no thread of its own, nothing polled. The bounds of any
//! server facing a network: a request head within [`HEAD_MAX`] bytes
//! (hyper answers 431 past it) and [`REQUEST_WITHIN`] (hyper's header
//! timer, which starts with the connection), one request per connection,
//! each connection over after [`CONNECTION_MAX`] whatever it does, at most
//! [`MAX_CONNECTIONS`] at once (the next waits in the kernel's backlog). A
//! timer exists only while its connection does: with nobody asking, the
//! listener costs no wake-up.
//!
//! The driver publishes its record at every state write ([`View::publish`]);
//! a request reads that, the live output counts and, for `/metrics`, the
//! child's memory: measured then, or the measure of the same children
//! taken less than [`crate::metrics::MEMORY_REUSED_FOR`] ago (a measure
//! reads `/proc` on the driver's thread; scrapes that come faster share
//! one, however many connections ask).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::Semaphore;
use tracing::warn;

use crate::logs::LogCounts;
use crate::state::{Record, Streams};

/// hyper's smallest read buffer, and the most a request head may take.
pub(crate) const HEAD_MAX: usize = 8 * 1024;
/// A request head must arrive within this after the connection opens.
pub(crate) const REQUEST_WITHIN: Duration = Duration::from_secs(5);
/// A connection is closed this long after it opened, answered or not (a
/// client that never reads its answer).
pub(crate) const CONNECTION_MAX: Duration = Duration::from_secs(10);
/// Connections served at once; more wait in the backlog.
pub(crate) const MAX_CONNECTIONS: usize = 64;
/// The listener's backlog.
const BACKLOG: i32 = 64;

/// The text format's media type.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What a request reads: the driver's latest record, and the output
/// counts as they stand.
pub(crate) struct View {
    latest: Mutex<Latest>,
    counts: Arc<LogCounts>,
    /// The last measure of the child's memory.
    memory: Mutex<crate::metrics::Memory>,
}

struct Latest {
    record: Option<Record>,
    /// The output counted before this image's reader started.
    carried: Streams,
}

impl View {
    pub(crate) fn new(counts: Arc<LogCounts>) -> Arc<View> {
        Arc::new(View {
            latest: Mutex::new(Latest {
                record: None,
                carried: Streams::default(),
            }),
            counts,
            memory: Mutex::new(crate::metrics::Memory::default()),
        })
    }

    /// The child's resident memory for `rec`, measured at most once per
    /// [`crate::metrics::MEMORY_REUSED_FOR`].
    fn memory(&self, rec: &Record) -> u64 {
        let mut memory = self.memory.lock().unwrap_or_else(PoisonError::into_inner);
        memory.get(rec, Instant::now(), crate::metrics::child_memory)
    }

    /// The driver's record as it stands (`carried`: the output counts
    /// handed over by an earlier image).
    pub(crate) fn publish(&self, mut record: Record, carried: Streams, wall: SystemTime) {
        record.updated_at = Some(crate::state::timestamp_ms(wall));
        let mut latest = self.latest.lock().unwrap_or_else(PoisonError::into_inner);
        latest.record = Some(record);
        latest.carried = carried;
    }

    /// The record as `status --json` shows it now, output counts live.
    fn record(&self) -> Option<Record> {
        let (record, carried) = {
            let latest = self.latest.lock().unwrap_or_else(PoisonError::into_inner);
            (latest.record.clone()?, latest.carried)
        };
        let mut rec = crate::status::present(record, SystemTime::now());
        if let Some(c) = rec.counters.as_mut() {
            let (stdout, stderr) = self.counts.get();
            c.log_bytes = Streams {
                stdout: carried.stdout + stdout,
                stderr: carried.stderr + stderr,
            };
        }
        Some(rec)
    }
}

/// Bind `addr` for `[metrics]` by the rule of the service's own listener
/// (no `SO_REUSEADDR` beside an overlapping listener: on macOS it would
/// let us bind beside another server's wildcard socket), IPv6 only on an
/// IPv6 address; close-on-exec (never the child's), non-blocking.
pub(crate) fn bind(addr: SocketAddr) -> std::io::Result<OwnedFd> {
    let fd = crate::listener::bind_listening(addr, BACKLOG, true)?;
    let socket = socket2::SockRef::from(&fd);
    socket.set_cloexec(true)?;
    socket.set_nonblocking(true)?;
    Ok(fd)
}

/// Serve on `fd` from now on (a task on the current runtime). Returns the
/// descriptor's number, which a `reload` hands over.
pub(crate) fn serve(fd: OwnedFd, view: Arc<View>) -> std::io::Result<RawFd> {
    let std = std::net::TcpListener::from(fd);
    std.set_nonblocking(true)?;
    let raw = std.as_raw_fd();
    let listener = tokio::net::TcpListener::from_std(std)?;
    tokio::spawn(accept_loop(listener, view));
    Ok(raw)
}

async fn accept_loop(listener: tokio::net::TcpListener, view: Arc<View>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut said = false;
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors (or memory): say so once, and try
                // again a little later rather than spin.
                if !said {
                    warn!("metrics: cannot accept a connection: {e}; trying again");
                    said = true;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
                continue;
            }
        };
        said = false;
        let view = view.clone();
        tokio::spawn(async move {
            let _slot = permit;
            let service = service_fn(move |req| {
                let view = view.clone();
                async move { Ok::<_, Infallible>(answer(&req, &view)) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(REQUEST_WITHIN)
                .max_buf_size(HEAD_MAX)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            // Errors (a refused head, a client gone) end the connection;
            // there is nobody to tell.
            let _ = tokio::time::timeout(CONNECTION_MAX, conn).await;
        });
    }
}

/// The answer to one request.
fn answer(req: &Request<Incoming>, view: &View) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    if path != "/metrics" && path != "/status" {
        return plain(
            StatusCode::NOT_FOUND,
            "not found: try /metrics or /status\n",
        );
    }
    if req.method() != Method::GET {
        let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET"));
        return r;
    }
    let Some(rec) = view.record() else {
        return plain(StatusCode::SERVICE_UNAVAILABLE, "starting\n");
    };
    let (body, kind) = match path {
        "/status" => (rec.encode(), "application/json"),
        _ => (
            crate::metrics::render(&rec, view.memory(&rec)),
            PROMETHEUS_TEXT,
        ),
    };
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(kind));
    r
}

fn plain(code: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *r.status_mut() = code;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}
