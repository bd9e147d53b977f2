//! The single-threaded event loop that drives every client, and the load phases built on
//! it: connect all, subscribe at a steady pace, wait for ticks, subscribe storm.

use crate::check::Findings;
use crate::client::{Behaviour, Client, Ending, Phase};
use crate::frame;
use crate::net;
use crate::tally::{Stamp, Tally};
use crate::tls::ClientTls;
use crate::verify::Verifier;
use crate::wire::Wire;
use mio::{Events, Interest, Poll, Token};
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Room before the read area for bytes kept from the previous read.
const HEADROOM: usize = 16 * 1024;
/// Bytes read per `read` call.
const READ_SIZE: usize = 256 * 1024;
/// Poll wait while a phase is waiting for something.
const POLL_WAIT: Duration = Duration::from_millis(5);

/// How long connecting `clients` may take: a minute plus a millisecond a client.
pub fn connect_limit(clients: usize) -> Duration {
    Duration::from_secs(60) + Duration::from_millis(clients as u64)
}

/// How long subscribing `clients` at a steady pace may take: a minute plus 5 ms a client.
pub fn subscribe_limit(clients: usize) -> Duration {
    Duration::from_secs(60) + Duration::from_millis(5 * clients as u64)
}

/// Where the clients connect and how.
#[derive(Debug, Clone)]
pub struct Setup {
    /// The server's address.
    pub addr: SocketAddr,
    /// WebSocket path.
    pub path: String,
    /// Source addresses to cycle over.
    pub src_ips: u8,
    /// Index of this process's first client among all the load's clients (another client
    /// process continues the cycle over the source addresses where this one stops).
    pub index_offset: usize,
    /// With `--tls`: the clients speak TLS, trusting this root.
    pub tls: Option<ClientTls>,
    /// The clients offer permessage-deflate in their upgrade (a run of `--deflate`).
    pub deflate: bool,
}

/// The clients and what they have seen.
pub struct State {
    /// All clients, indexed by their token.
    pub clients: Vec<Client>,
    /// Running totals.
    pub tally: Tally,
    /// Monotonic base of every [`Stamp`].
    pub base: Instant,
    /// Findings of steady clients whose slot was reused by a new connection (soak).
    pub retired: Findings,
    scratch: Vec<u8>,
    /// The process's one inflater and its memory of verified payloads: every client's
    /// compressed messages and long payloads go through it.
    verifier: Verifier,
    setup: Setup,
    host: String,
}

/// The load generator: a `mio` poll plus the clients.
pub struct Bench {
    poll: Poll,
    events: Events,
    /// Clients and totals.
    pub st: State,
}

impl Bench {
    /// An empty bench for `setup`.
    pub fn new(setup: Setup, base: Instant) -> io::Result<Bench> {
        Ok(Bench {
            poll: Poll::new()?,
            events: Events::with_capacity(4096),
            st: State {
                clients: Vec::new(),
                tally: Tally::default(),
                base,
                retired: Findings::default(),
                scratch: vec![0; HEADROOM + READ_SIZE],
                verifier: Verifier::default(),
                host: setup.addr.to_string(),
                setup,
            },
        })
    }

    /// Monotonic nanoseconds since the base.
    pub fn now_ns(&self) -> u64 {
        self.st.base.elapsed().as_nanos() as u64
    }

    /// One poll (waiting at most `wait`) and the handling of its events.
    pub fn pump(&mut self, wait: Duration) -> io::Result<()> {
        match self.poll.poll(&mut self.events, Some(wait)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(e),
        }
        for ev in self.events.iter() {
            let closed = ev.is_read_closed() || ev.is_error();
            let readable = ev.is_readable() || closed;
            let writable = ev.is_writable() || ev.is_error();
            self.st.event(ev.token().0, readable, writable, closed);
        }
        Ok(())
    }

    /// Keeps serving the clients (pongs, points) for `how_long`.
    pub fn run_for(&mut self, how_long: Duration) -> io::Result<()> {
        let end = Instant::now() + how_long;
        while Instant::now() < end {
            self.pump(
                end.saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(50)),
            )?;
        }
        Ok(())
    }

    /// Opens `total` clients, at most `window` connecting at once; returns when all have
    /// upgraded or failed (or `limit` passed, which fails the stragglers).
    pub fn connect_all(&mut self, total: usize, window: usize, limit: Duration) -> io::Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            while self.st.clients.len() < total && self.st.tally.in_progress < window {
                self.open_one();
            }
            if self.st.clients.len() == total && self.st.tally.in_progress == 0 {
                return Ok(());
            }
            if Instant::now() > deadline {
                for i in 0..self.st.clients.len() {
                    if matches!(
                        self.st.clients[i].phase,
                        Phase::Connecting | Phase::Handshaking
                    ) {
                        self.st.end(
                            i,
                            Ending::Io("no upgrade before the connect phase's time limit".into()),
                        );
                    }
                }
                return Ok(());
            }
            self.pump(POLL_WAIT)?;
        }
    }

    fn open_one(&mut self) {
        let idx = self.st.clients.len();
        self.st.clients.push(Client::failed());
        self.open_at(idx);
    }

    /// Opens a new connection in slot `idx` (a closed client's, or a just pushed one).
    /// A reused slot keeps its behaviour; its steady client's findings are kept in
    /// [`State::retired`].
    pub fn reopen(&mut self, idx: usize) {
        let Some(old) = self.st.clients.get(idx) else {
            return;
        };
        if old.phase != Phase::Closed {
            return;
        }
        if old.behaviour == Behaviour::Steady {
            self.st.retired.add(&old.check, 0);
        }
        self.open_at(idx);
    }

    fn open_at(&mut self, idx: usize) {
        let behaviour = self.st.clients[idx].behaviour;
        let src = net::source_ip(idx + self.st.setup.index_offset, self.st.setup.src_ips);
        let now = self.now_ns();
        let tls = self.st.setup.tls.as_ref().map(|t| t.config.clone());
        let registered = net::connect_from(src, self.st.setup.addr).and_then(|mut sock| {
            self.poll.registry().register(
                &mut sock,
                Token(idx),
                Interest::READABLE | Interest::WRITABLE,
            )?;
            match &tls {
                None => Ok(Wire::Plain(sock)),
                Some(config) => Wire::tls(sock, config),
            }
        });
        match registered {
            Ok(sock) => {
                let mut c = Client::connecting(sock, now);
                c.behaviour = behaviour;
                self.st.clients[idx] = c;
                self.st.tally.in_progress += 1;
            }
            Err(e) => {
                let mut c = Client::failed();
                c.behaviour = behaviour;
                self.st.clients[idx] = c;
                *self
                    .st
                    .tally
                    .failures
                    .entry(format!("connect from {src}: {e}"))
                    .or_default() += 1;
            }
        }
    }

    /// Subscribes every open client (client `i` to `assets[i % len]`), keeping at most
    /// `window` subscriptions waiting for their history; returns when all have arrived.
    pub fn subscribe_paced(
        &mut self,
        assets: &[i32],
        window: usize,
        limit: Duration,
    ) -> io::Result<bool> {
        let deadline = Instant::now() + limit;
        let mut next = 0;
        loop {
            while next < self.st.clients.len() && self.st.tally.awaiting < window {
                self.st.subscribe(next, assets[next % assets.len()]);
                next += 1;
            }
            if next == self.st.clients.len() && self.st.tally.awaiting == 0 {
                return Ok(true);
            }
            if Instant::now() > deadline {
                return Ok(false);
            }
            self.pump(POLL_WAIT)?;
        }
    }

    /// Sends a subscribe from every open client at once (client `i` to
    /// `assets[(i + shift) % len]`); returns when all histories arrived, or false at `limit`.
    pub fn subscribe_storm(
        &mut self,
        assets: &[i32],
        shift: usize,
        limit: Duration,
    ) -> io::Result<bool> {
        let deadline = Instant::now() + limit;
        for i in 0..self.st.clients.len() {
            self.st.subscribe(i, assets[(i + shift) % assets.len()]);
        }
        while self.st.tally.awaiting > 0 {
            if Instant::now() > deadline {
                return Ok(false);
            }
            self.pump(POLL_WAIT)?;
        }
        Ok(true)
    }

    /// Waits until a tick newer than `after` has reached every subscribed client (or `limit`
    /// passed) and returns its time.
    pub fn wait_complete_tick(&mut self, after: i64, limit: Duration) -> io::Result<Option<i64>> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(t) = self.st.newest_complete_tick().filter(|&t| t > after) {
                return Ok(Some(t));
            }
            if Instant::now() > deadline {
                return Ok(None);
            }
            self.pump(POLL_WAIT)?;
        }
    }

    /// Waits until tick `time` is complete: every subscribed client has it, or it is
    /// `grace` old (a client that never gets it is then counted as lost by the checks).
    pub fn wait_tick(&mut self, time: i64, grace: Duration, limit: Duration) -> io::Result<bool> {
        let deadline = Instant::now() + limit;
        loop {
            let now = self.now_ns();
            let done = self
                .st
                .tally
                .ticks
                .range(time..)
                .next()
                .is_some_and(|(&t, agg)| {
                    let old = now.saturating_sub(agg.first.mono_ns) > grace.as_nanos() as u64;
                    (t == time && agg.n as usize >= self.st.tally.subscribed_open) || old
                });
            if done {
                return Ok(true);
            }
            if Instant::now() > deadline {
                return Ok(false);
            }
            self.pump(POLL_WAIT)?;
        }
    }

    /// Closes every client (the tool's own close, not counted as a drop).
    pub fn close_all(&mut self) {
        for idx in 0..self.st.clients.len() {
            self.st.leave(idx, true);
        }
    }
}

impl State {
    /// Sets the index of this process's first client among all the load's clients.
    pub fn set_index_offset(&mut self, offset: usize) {
        self.setup.index_offset = offset;
    }

    /// The newest tick that every subscribed client has received.
    pub fn newest_complete_tick(&self) -> Option<i64> {
        let want = self.tally.subscribed_open;
        self.tally
            .ticks
            .iter()
            .rev()
            .find(|(_, a)| a.n as usize >= want)
            .map(|(&t, _)| t)
    }

    fn event(&mut self, idx: usize, readable: bool, writable: bool, closed: bool) {
        let Some(c) = self.clients.get_mut(idx) else {
            return;
        };
        // A slow or flooding client reads only when the tool says so, or to learn why
        // the server ended it.
        let reads = c.behaviour == Behaviour::Steady || closed;
        if c.phase == Phase::Connecting && (readable || writable) {
            self.finish_connect(idx);
        }
        let Some(c) = self.clients.get_mut(idx) else {
            return;
        };
        if writable
            && c.phase != Phase::Closed
            && let Err(e) = c.flush()
        {
            self.end(idx, Ending::Io(e.to_string()));
            return;
        }
        if readable
            && (reads || self.clients[idx].phase == Phase::Handshaking)
            && matches!(self.clients[idx].phase, Phase::Handshaking | Phase::Open)
        {
            self.read(idx, usize::MAX);
        }
    }

    /// Reads at most `budget` bytes of client `idx` now (a slow client's ration).
    pub fn read_some(&mut self, idx: usize, budget: usize) {
        if self
            .clients
            .get(idx)
            .is_some_and(|c| matches!(c.phase, Phase::Handshaking | Phase::Open))
        {
            self.read(idx, budget);
        }
    }

    /// The tool closes client `idx` itself (not counted as a drop): with a close frame
    /// when `polite`, else by just closing the socket.
    pub fn leave(&mut self, idx: usize, polite: bool) {
        let Some(c) = self.clients.get_mut(idx) else {
            return;
        };
        let t = &mut self.tally;
        match c.phase {
            Phase::Closed => return,
            Phase::Connecting | Phase::Handshaking => {
                t.in_progress = t.in_progress.saturating_sub(1);
            }
            Phase::Open => {
                t.open = t.open.saturating_sub(1);
                if c.check.asset != 0 {
                    t.subscribed_open = t.subscribed_open.saturating_sub(1);
                }
                if c.check.want != 0 {
                    t.awaiting = t.awaiting.saturating_sub(1);
                }
                if polite {
                    // The tool leaves either way; the close frame is only a courtesy.
                    let _ = c.send_frame(frame::CLOSE, &1000u16.to_be_bytes());
                }
            }
        }
        c.release();
    }

    /// Sends `count` pings from client `idx` if everything it sent before has left.
    pub fn ping_flood(&mut self, idx: usize, count: usize) {
        let Some(c) = self.clients.get_mut(idx) else {
            return;
        };
        if c.phase != Phase::Open || c.queued() > 0 {
            return;
        }
        let mut frames = Vec::with_capacity(count * 10);
        for i in 0..count {
            frame::encode_masked(
                &mut frames,
                frame::PING,
                &(i as u32).to_be_bytes(),
                frame::random_mask(),
            );
        }
        if let Err(e) = c.send(&frames) {
            self.end(idx, Ending::Io(format!("sending pings: {e}")));
        }
    }

    fn finish_connect(&mut self, idx: usize) {
        let c = &mut self.clients[idx];
        let Some(sock) = c.sock.as_ref().map(Wire::socket) else {
            return;
        };
        match sock.take_error() {
            Ok(None) => {}
            Ok(Some(e)) | Err(e) => return self.end(idx, Ending::Io(format!("connect: {e}"))),
        }
        match sock.peer_addr() {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
            Err(e) => return self.end(idx, Ending::Io(format!("connect: {e}"))),
        }
        if let Err(e) = c.start_upgrade(&self.host, &self.setup.path, self.setup.deflate) {
            self.end(idx, Ending::Io(format!("sending upgrade: {e}")));
        }
    }

    /// Reads until the socket is drained (or `budget` bytes were read), handing what
    /// arrives to the client ([`Client::receive`]) behind the bytes it kept last time.
    fn read(&mut self, idx: usize, mut budget: usize) {
        loop {
            let State {
                clients,
                tally,
                scratch,
                verifier,
                base,
                ..
            } = self;
            let c = &mut clients[idx];
            let Some(sock) = c.sock.as_mut() else { return };
            let kept = c.pending.len();
            if kept > HEADROOM {
                return self.end(
                    idx,
                    Ending::Protocol(
                        "incomplete frame header or upgrade answer over 16 KiB".into(),
                    ),
                );
            }
            let start = HEADROOM - kept;
            scratch[start..HEADROOM].copy_from_slice(&c.pending);
            let want = READ_SIZE.min(budget);
            let n = match sock.read(&mut scratch[HEADROOM..HEADROOM + want]) {
                Ok(0) => return self.end(idx, Ending::Eof),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return self.end(idx, Ending::Io(e.to_string())),
            };
            let buf = &scratch[start..HEADROOM + n];
            match c.receive(buf, Stamp::now(*base), tally, verifier) {
                Ok(used) => c.keep(&buf[used..]),
                Err(ending) => return self.end(idx, ending),
            }
            budget -= n;
            let drained = n < want && c.sock.as_ref().is_some_and(Wire::short_read_drains);
            if drained || budget == 0 {
                // A short read emptied the socket; the next arrival raises a new event.
                // (A TLS read is short at every record's end: it reads on to WouldBlock.)
                return;
            }
        }
    }

    /// Sends a subscribe to `asset` from client `idx`, if it is open.
    pub fn subscribe(&mut self, idx: usize, asset: i32) {
        let c = &mut self.clients[idx];
        if c.phase != Phase::Open {
            return;
        }
        let payload = format!(r#"{{"action":"subscribe","message":{{"assetId":{asset}}}}}"#);
        if c.check.want == 0 {
            self.tally.awaiting += 1;
        }
        c.check.subscribed(asset);
        c.t0_ns = self.base.elapsed().as_nanos() as u64;
        if let Err(e) = c.send_frame(frame::TEXT, payload.as_bytes()) {
            self.end(idx, Ending::Io(format!("sending subscribe: {e}")));
        }
    }

    /// Ends client `idx` and counts why: a failure before the upgrade, a drop after it
    /// (a slow or flooding client's drop is counted apart: it is what they are for).
    fn end(&mut self, idx: usize, why: Ending) {
        let c = &mut self.clients[idx];
        let t = &mut self.tally;
        if c.behaviour != Behaviour::Steady && c.phase != Phase::Closed {
            if c.phase == Phase::Open {
                t.open = t.open.saturating_sub(1);
                if c.check.asset != 0 {
                    t.subscribed_open = t.subscribed_open.saturating_sub(1);
                }
                if c.check.want != 0 {
                    t.awaiting = t.awaiting.saturating_sub(1);
                }
            } else {
                t.in_progress = t.in_progress.saturating_sub(1);
            }
            *t.misbehaving_ends.entry(why.reason()).or_default() += 1;
            c.release();
            return;
        }
        match c.phase {
            Phase::Closed => return,
            Phase::Connecting | Phase::Handshaking => {
                t.in_progress = t.in_progress.saturating_sub(1);
                *t.failures.entry(why.reason()).or_default() += 1;
            }
            Phase::Open => {
                t.open = t.open.saturating_sub(1);
                if c.check.asset != 0 {
                    t.subscribed_open = t.subscribed_open.saturating_sub(1);
                }
                if c.check.want != 0 {
                    t.awaiting = t.awaiting.saturating_sub(1);
                }
                *t.drops.entry(why.reason()).or_default() += 1;
            }
        }
        c.release();
    }
}
