//! Client connections: accepting, reading HTTP and WebSocket, answering requests,
//! writing, and ending connections.

use super::*;

/// How long a closing connection may linger before it is dropped.
const CLOSE_LINGER: Duration = Duration::from_secs(3);

/// Pause before accepting again after running out of file descriptors.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// Frames read from one client before the others get their turn.
const READ_BUDGET: usize = 32;

impl Reactor {
    pub(super) fn accept(&mut self, now: Instant) {
        let Some(listener) = &self.listener else {
            return;
        };
        loop {
            let (mut stream, addr) = match listener.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if is_resource_exhausted(&e) => {
                    if let Some(suppressed) = self.accept_log.allow(now) {
                        warn!(
                            "cannot accept connections: {e}; pausing accepts briefly \
                             ({suppressed} similar warnings suppressed)"
                        );
                    }
                    self.accept_paused_until = Some(now + ACCEPT_PAUSE);
                    return;
                }
                Err(e) => {
                    debug!("accept failed: {e}");
                    continue;
                }
            };
            self.metrics.connections_total += 1;
            if self.conns.len() >= self.config.max_connections {
                self.metrics.client_dropped(DropReason::ConnectionLimit);
                let busy = http::error_response(503, "connection limit reached", false);
                // Best effort on a fresh socket; the client is turned away either way.
                let _ = io::Write::write(&mut stream, &busy);
                debug!("refused {addr}: connection limit reached");
                continue;
            }
            let _ = stream.set_nodelay(true);
            let entry = self.conns.vacant_entry();
            let key = entry.key();
            if let Err(e) = self.poll.registry().register(
                &mut stream,
                Token(key),
                Interest::READABLE | Interest::WRITABLE,
            ) {
                warn!("cannot register connection from {addr}: {e}");
                continue;
            }
            entry.insert(Conn::new(stream, now, now + self.config.handshake_timeout));
            debug!("connection {key} from {addr}");
        }
    }

    pub(super) fn on_readable(&mut self, key: usize, now: Instant) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        match &conn.phase {
            Phase::Http { .. } => self.read_http(key, now),
            Phase::WebSocket(_) => self.read_websocket(key, now),
            Phase::Closing { .. } => {
                if conn.drain_input() {
                    self.doomed.push((key, Doom::Drop(None)));
                }
            }
        }
    }

    pub(super) fn read_http(&mut self, key: usize, now: Instant) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let head = match conn.read_head() {
            Ok(Some(head)) => head,
            Ok(None) => return,
            Err(None) => {
                self.doomed.push((key, Doom::Drop(None)));
                return;
            }
            Err(Some(status)) => {
                let text = if status == 431 {
                    "request head too large"
                } else {
                    "malformed HTTP request"
                };
                self.respond(key, http::error_response(status, text, false), now);
                return;
            }
        };
        let head_only = head.method == "HEAD";
        let response = match http::route(&head, self.config.enable_ui) {
            Route::WebSocket(ws_key) => {
                conn.upgrade(head.len, &ws_key, self.ws_config);
                self.metrics.websocket_upgrades_total += 1;
                debug!("connection {key} upgraded to WebSocket");
                self.flush(key);
                self.read_websocket(key, now);
                return;
            }
            Route::Page => http::response(200, "text/html; charset=utf-8", "", PAGE, head_only),
            Route::Health => {
                let (status, body) = self.health_body(now);
                http::response(status, "application/json", "", body.as_bytes(), head_only)
            }
            Route::Metrics => {
                let body = self.metrics.render(&self.gauges(now));
                http::response(
                    200,
                    "text/plain; version=0.0.4; charset=utf-8",
                    "",
                    body.as_bytes(),
                    head_only,
                )
            }
            Route::Error(status, text) => http::error_response(status, text, head_only),
        };
        self.respond(key, response, now);
    }

    /// Queues a complete HTTP response and closes the connection after it.
    pub(super) fn respond(&mut self, key: usize, response: Vec<u8>, now: Instant) {
        if let Some(conn) = self.conns.get_mut(key) {
            conn.socket.outbox.push(Bytes::from(response));
            conn.linger(now + CLOSE_LINGER);
            self.flush(key);
        }
    }

    /// Reads and answers a client's messages, at most [`READ_BUDGET`] frames per turn;
    /// a client with more waiting is resumed after everyone else's events.
    pub(super) fn read_websocket(&mut self, key: usize, now: Instant) {
        for _ in 0..READ_BUDGET {
            let Some(conn) = self.conns.get_mut(key) else {
                return;
            };
            match conn.read_message(now) {
                Ok(Some(Incoming::Text(text))) => {
                    let reply = match protocol::parse_request(text.as_str()) {
                        Ok(request) => self.handle_request(key, request),
                        Err(e) => Err(e),
                    };
                    if let Err(e) = reply {
                        self.reply_error(key, &e);
                    }
                }
                Ok(Some(Incoming::Binary)) => {
                    self.reply_error(key, &protocol::binary_frame_error())
                }
                Ok(Some(Incoming::Control)) => {}
                Ok(None) => return self.flush_read(key),
                Err(ended) => {
                    self.doomed.push((key, doom_for(key, ended)));
                    return self.flush_read(key);
                }
            }
        }
        // Budget spent with input left: edge-triggered readiness will not report it
        // again, so remember to come back.
        self.more_to_read.push(key);
        self.flush_read(key);
    }

    /// Writes the replies to what was read; replies (pongs included) piling up for a
    /// client that does not read them make it a slow consumer.
    pub(super) fn flush_read(&mut self, key: usize) {
        self.flush(key);
        if let Some(conn) = self.conns.get(key)
            && conn.socket.outbox.backlog_bytes() > self.config.client_queue_bytes
        {
            self.doomed.push((key, SLOW_CONSUMER));
        }
    }

    /// Continues reading clients that used up their budget in the last pass.
    pub(super) fn resume_reads(&mut self, now: Instant) {
        let mut keys = std::mem::take(&mut self.more_to_read);
        for key in keys.drain(..) {
            if self.conns.get(key).is_some_and(Conn::is_websocket) {
                self.read_websocket(key, now);
            }
        }
        if self.more_to_read.is_empty() {
            // Keep the allocation for the next pass.
            self.more_to_read = keys;
        }
    }

    pub(super) fn handle_request(
        &mut self,
        key: usize,
        request: Request,
    ) -> Result<(), RequestError> {
        match request {
            Request::Assets => {
                self.metrics.requests_total[0] += 1;
                let frame = self.market.assets_frame();
                self.send(key, frame);
            }
            Request::Subscribe { asset_id } => {
                self.metrics.requests_total[1] += 1;
                let index = self
                    .market
                    .index_of(asset_id)
                    .ok_or(RequestError::UnknownAsset(asset_id))?;
                self.unsubscribe(key);
                let (sub, history) = self.market.subscribe(key, index);
                if let Some(conn) = self.conns.get_mut(key) {
                    conn.sub = Some(sub);
                }
                self.send(key, history);
            }
            Request::Unsubscribe => {
                self.metrics.requests_total[2] += 1;
                self.unsubscribe(key);
                self.send(key, self.unsubscribed_frame.clone());
            }
        }
        Ok(())
    }

    pub(super) fn reply_error(&mut self, key: usize, error: &RequestError) {
        self.metrics.request_error(error.error_type());
        debug!("connection {key}: {} {error}", error.error_type());
        self.send(key, text_frame(&protocol::error_message(error)));
    }

    /// Queues a frame for one client (it is written when the loop flushes it).
    pub(super) fn send(&mut self, key: usize, frame: Bytes) {
        if let Some(conn) = self.conns.get_mut(key) {
            self.metrics.messages_sent_total += 1;
            // Checked against the limit once written (see flush_read).
            conn.socket.outbox.push(frame);
        }
    }

    pub(super) fn unsubscribe(&mut self, key: usize) {
        let Some(sub) = self.conns.get_mut(key).and_then(|c| c.sub.take()) else {
            return;
        };
        if let Some(moved) = self.market.unsubscribe(sub)
            && let Some(other) = self.conns.get_mut(moved)
            && let Some(other_sub) = &mut other.sub
        {
            other_sub.slot = sub.slot;
        }
    }

    /// Writes what a connection has queued; a failed socket is dropped.
    pub(super) fn flush(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        match conn.flush() {
            Ok(written) => self.metrics.bytes_sent_total += written as u64,
            Err(e) => {
                debug!("connection {key}: write failed: {e}");
                self.doomed.push((key, Doom::Drop(None)));
            }
        }
    }

    /// Carries out what was decided about connections during the last step.
    pub(super) fn end_doomed(&mut self, now: Instant) {
        while let Some((key, doom)) = self.doomed.pop() {
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            match doom {
                Doom::Close(code, reason, discard, why) => {
                    if matches!(conn.phase, Phase::Closing { .. }) {
                        continue;
                    }
                    conn.close(code, reason, discard, now + CLOSE_LINGER);
                    if let Some(why) = why {
                        self.metrics.client_dropped(why);
                        if why == DropReason::SlowConsumer {
                            warn!("connection {key} closed as a slow consumer");
                        }
                    }
                    self.unsubscribe(key);
                    self.flush(key);
                }
                Doom::Drop(why) => {
                    if let Some(why) = why {
                        self.metrics.client_dropped(why);
                    }
                    self.unsubscribe(key);
                    let mut conn = self.conns.remove(key);
                    let _ = self.poll.registry().deregister(&mut conn.socket.tcp);
                    debug!("connection {key} closed");
                }
            }
        }
    }
}

pub(super) const SLOW_CONSUMER: Doom = Doom::Close(
    CloseCode::Policy,
    "slow consumer",
    true,
    Some(DropReason::SlowConsumer),
);

fn doom_for(key: usize, ended: Ended) -> Doom {
    match ended {
        Ended::Closed => Doom::Drop(None),
        Ended::TooLarge => {
            debug!("connection {key}: message over the size limit");
            Doom::Close(
                CloseCode::Size,
                "message too large",
                false,
                Some(DropReason::MessageTooLarge),
            )
        }
        Ended::Protocol(why) => {
            debug!("connection {key}: protocol error: {why}");
            Doom::Close(
                CloseCode::Protocol,
                "protocol error",
                false,
                Some(DropReason::ProtocolError),
            )
        }
        Ended::InvalidText => Doom::Close(
            CloseCode::Invalid,
            "text is not UTF-8",
            false,
            Some(DropReason::ProtocolError),
        ),
        Ended::Io(e) => {
            debug!("connection {key}: {e}");
            Doom::Drop(None)
        }
    }
}

fn is_resource_exhausted(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}
