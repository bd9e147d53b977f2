//! A connection's outgoing bytes: a queue of shared frames drained with vectored writes.
//!
//! Frames are `Bytes`, so a tick's point or an asset's history is queued to many
//! connections without copying. Everything due is written in one `writev`; the queue's
//! length in bytes is what the slow-consumer limit measures.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};

use bytes::Bytes;

/// Frames sent per `writev` at most; more wait for the next call.
const MAX_SLICES: usize = 64;

/// What queueing one frame costs beyond its bytes: its slot in the queue and, for a
/// frame of its own (a pong), the allocation's header. Counted so that many tiny frames
/// weigh what they really cost against the slow-consumer limit.
pub const FRAME_COST: usize = 64;

/// Outgoing frames of one connection, oldest first.
#[derive(Debug, Default)]
pub struct Outbox {
    frames: VecDeque<Bytes>,
    /// Bytes of the front frame already written.
    front_written: usize,
    /// Bytes queued and not yet written.
    queued: usize,
    /// The last queued frame is a pong not yet started.
    pong_at_back: bool,
    /// The front frame must go out even before a close to a slow consumer.
    front_pinned: bool,
}

impl Outbox {
    /// Queues a frame after everything already queued.
    pub fn push(&mut self, frame: Bytes) {
        if frame.is_empty() {
            return;
        }
        self.queued += frame.len();
        self.frames.push_back(frame);
        self.pong_at_back = false;
    }

    /// Queues a frame that [`Outbox::discard_unstarted`] keeps even before it starts:
    /// the `101` response, without which a close frame after it would not be WebSocket.
    pub fn push_pinned(&mut self, frame: Bytes) {
        self.front_pinned |= self.frames.is_empty() && !frame.is_empty();
        self.push(frame);
    }

    /// Queues a pong, replacing the previous one if it is still last and unsent: only
    /// the latest ping is answered when several arrive before the client reads.
    pub fn push_pong(&mut self, pong: Bytes) {
        let unstarted = self.frames.len() > 1 || self.front_written == 0;
        if self.pong_at_back
            && unstarted
            && let Some(last) = self.frames.back_mut()
        {
            self.queued = self.queued - last.len() + pong.len();
            *last = pong;
            return;
        }
        self.push(pong);
        self.pong_at_back = !self.frames.is_empty();
    }

    /// Bytes waiting to be written.
    #[cfg(test)]
    pub fn queued_bytes(&self) -> usize {
        self.queued
    }

    /// What waits behind the frame being written, in bytes plus [`FRAME_COST`] per
    /// frame: the slow-consumer measure. A large frame in flight (a history) does not
    /// count against a client by itself; what piles up behind it because the client
    /// does not read does.
    pub fn backlog_bytes(&self) -> usize {
        let front = self
            .frames
            .front()
            .map_or(0, |f| f.len() - self.front_written);
        let behind = self.frames.len().saturating_sub(1);
        self.queued - front + behind * FRAME_COST
    }

    /// Whether everything has been written.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Drops every frame not yet started, keeping a partly written one so that the
    /// stream stays at a frame boundary, and a pinned one; used before a close frame to
    /// a slow consumer.
    pub fn discard_unstarted(&mut self) {
        let keep = usize::from(self.front_written > 0 || self.front_pinned);
        for frame in self.frames.drain(keep..) {
            self.queued -= frame.len();
        }
        self.pong_at_back = false;
    }

    /// Sends `frame` after whatever is queued, returning the bytes written. With nothing
    /// queued (the usual case for a tick's point) it is written straight from the shared
    /// frame; only what `out` does not take is queued.
    pub fn send(&mut self, frame: &Bytes, out: &mut impl Write) -> io::Result<usize> {
        if self.frames.is_empty() && !frame.is_empty() {
            match out.write(frame) {
                Ok(n) if n == frame.len() => return Ok(n),
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    // The socket is full now; writability will be reported.
                    self.push(frame.slice(n..));
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.push(frame.clone());
                    return Ok(0);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.push(frame.clone());
        self.write_to(out)
    }

    /// Writes as much as `out` takes and returns how many bytes that was; the outbox
    /// is empty afterwards unless `out` would block (then wait for writability).
    pub fn write_to(&mut self, out: &mut impl Write) -> io::Result<usize> {
        let mut total = 0;
        while !self.frames.is_empty() {
            let mut slices = [IoSlice::new(&[]); MAX_SLICES];
            let mut count = 0;
            let mut offered = 0;
            for (slot, frame) in slices.iter_mut().zip(&self.frames) {
                let start = if count == 0 { self.front_written } else { 0 };
                *slot = IoSlice::new(&frame[start..]);
                offered += frame.len() - start;
                count += 1;
            }
            match out.write_vectored(&slices[..count]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(written) => {
                    self.advance(written);
                    total += written;
                    if written < offered {
                        // The socket buffer is full; writing again now would only block.
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(total)
    }

    fn advance(&mut self, mut written: usize) {
        self.queued -= written;
        while let Some(front) = self.frames.front() {
            let left = front.len() - self.front_written;
            if written < left {
                self.front_written += written;
                return;
            }
            written -= left;
            self.front_written = 0;
            self.front_pinned = false;
            self.frames.pop_front();
            if self.frames.is_empty() {
                self.pong_at_back = false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Accepts at most `budget` bytes per call, then blocks once the total is used up.
    struct Trickle {
        got: Vec<u8>,
        per_call: usize,
        total: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.total == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.per_call).min(self.total);
            self.got.extend_from_slice(&buf[..n]);
            self.total -= n;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn partial_writes_resume_where_they_stopped() {
        let mut outbox = Outbox::default();
        outbox.push(Bytes::from_static(b"hello "));
        outbox.push(Bytes::from_static(b""));
        outbox.push(Bytes::from_static(b"world"));
        assert_eq!(outbox.queued_bytes(), 11);
        assert_eq!(
            outbox.backlog_bytes(),
            5 + FRAME_COST,
            "behind the front frame, with its cost"
        );
        let mut out = Trickle {
            got: Vec::new(),
            per_call: 4,
            total: 7,
        };
        assert_eq!(
            outbox.write_to(&mut out).unwrap(),
            4,
            "a short write stops the call"
        );
        let mut total = 4;
        loop {
            match outbox.write_to(&mut out).unwrap() {
                0 => break,
                n => total += n,
            }
        }
        assert_eq!(total, 7);
        assert_eq!(outbox.queued_bytes(), 4);
        assert_eq!(outbox.backlog_bytes(), 0, "only the front frame is left");
        assert!(!outbox.is_empty());
        out.total = 100;
        while !outbox.is_empty() {
            outbox.write_to(&mut out).unwrap();
        }
        assert_eq!(out.got, b"hello world");
        assert!(outbox.is_empty());
        assert_eq!(outbox.queued_bytes(), 0);
    }

    #[test]
    fn discard_keeps_the_partly_written_frame() {
        let mut outbox = Outbox::default();
        for chunk in [&b"abcd"[..], b"efgh", b"ijkl"] {
            outbox.push(Bytes::copy_from_slice(chunk));
        }
        let mut out = Trickle {
            got: Vec::new(),
            per_call: 2,
            total: 2,
        };
        outbox.write_to(&mut out).unwrap();
        outbox.discard_unstarted();
        assert_eq!(outbox.queued_bytes(), 2);
        out.total = 100;
        assert_eq!(outbox.write_to(&mut out).unwrap(), 2);
        assert!(outbox.is_empty());
        assert_eq!(out.got, b"abcd");
    }

    #[test]
    fn discard_keeps_a_pinned_frame_until_it_is_written() {
        let mut outbox = Outbox::default();
        outbox.push_pinned(Bytes::from_static(b"head"));
        outbox.push(Bytes::from_static(b"body"));
        outbox.discard_unstarted();
        assert_eq!(outbox.queued_bytes(), 4, "the unsent head stays");
        let mut out = Trickle {
            got: Vec::new(),
            per_call: 100,
            total: 100,
        };
        outbox.write_to(&mut out).unwrap();
        assert_eq!(out.got, b"head");
        outbox.push(Bytes::from_static(b"next"));
        outbox.discard_unstarted();
        assert!(outbox.is_empty(), "only the frame pushed pinned is kept");
    }

    #[test]
    fn send_writes_directly_and_queues_only_the_rest() {
        let mut outbox = Outbox::default();
        let mut out = Trickle {
            got: Vec::new(),
            per_call: 100,
            total: 8,
        };
        let frame = Bytes::from_static(b"12345");
        assert_eq!(outbox.send(&frame, &mut out).unwrap(), 5);
        assert!(outbox.is_empty(), "fully written: nothing queued");
        assert_eq!(outbox.send(&frame, &mut out).unwrap(), 3);
        assert_eq!(outbox.queued_bytes(), 2, "the rest waits");
        assert_eq!(outbox.send(&frame, &mut out).unwrap(), 0);
        assert_eq!(outbox.queued_bytes(), 7, "queued behind the rest");
        out.total = 100;
        while !outbox.is_empty() {
            outbox.write_to(&mut out).unwrap();
        }
        assert_eq!(out.got, b"123451234512345");
    }

    #[test]
    fn send_goes_behind_what_is_queued() {
        let mut outbox = Outbox::default();
        outbox.push(Bytes::from_static(b"ping,"));
        let mut out = Vec::new();
        outbox
            .send(&Bytes::from_static(b"point"), &mut out)
            .unwrap();
        assert_eq!(out, b"ping,point");
        assert!(outbox.is_empty());
    }

    #[test]
    fn more_frames_than_one_writev_takes() {
        let mut outbox = Outbox::default();
        for i in 0..200u8 {
            outbox.push(Bytes::copy_from_slice(&[i]));
        }
        let mut out = Vec::new();
        assert_eq!(outbox.write_to(&mut out).unwrap(), 200);
        assert!(outbox.is_empty());
        assert_eq!(out, (0..200u8).collect::<Vec<_>>());
    }

    #[test]
    fn a_pong_replaces_the_unsent_pong_before_it() {
        let mut outbox = Outbox::default();
        outbox.push(Bytes::from_static(b"point"));
        for n in 0..1000u16 {
            outbox.push_pong(Bytes::copy_from_slice(&n.to_be_bytes()));
        }
        assert_eq!(outbox.frames.len(), 2, "one pong, the latest");
        assert_eq!(&outbox.frames[1][..], &999u16.to_be_bytes());
        assert_eq!(outbox.queued_bytes(), 7);
        outbox.push(Bytes::from_static(b"next"));
        outbox.push_pong(Bytes::from_static(b"p1"));
        outbox.push_pong(Bytes::from_static(b"p2"));
        assert_eq!(
            outbox.frames.len(),
            4,
            "a pong after a point is queued anew"
        );
        assert_eq!(&outbox.frames[3][..], b"p2");
    }

    #[test]
    fn a_pong_being_written_is_not_replaced() {
        let mut outbox = Outbox::default();
        outbox.push_pong(Bytes::from_static(b"pong1"));
        let mut out = Trickle {
            got: Vec::new(),
            per_call: 2,
            total: 2,
        };
        outbox.write_to(&mut out).unwrap();
        outbox.push_pong(Bytes::from_static(b"pong2"));
        out.total = 100;
        out.per_call = 100;
        while !outbox.is_empty() {
            outbox.write_to(&mut out).unwrap();
        }
        assert_eq!(out.got, b"pong1pong2");
    }

    #[test]
    fn many_small_frames_weigh_their_cost() {
        let mut outbox = Outbox::default();
        for _ in 0..101 {
            outbox.push(Bytes::from_static(b"xy"));
        }
        assert_eq!(outbox.backlog_bytes(), 100 * (2 + FRAME_COST));
    }
}
