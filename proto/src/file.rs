//! File transfer on a data channel (PROTOCOL.md "File transfer on a data channel"), without
//! I/O.
//!
//! The provider opens one data channel per request, labelled with the resource id, sends the
//! file as binary messages, then the text message [`END`], then closes. keks-meet browsers send
//! at most 32 KiB per message; [`FileSender`] uses the peer's maximum message size (SDP
//! `a=max-message-size`) when it is smaller than [`MAX_CHUNK_SIZE`], and that (64 KiB) when it
//! is larger, "no limit" or unknown. [`FileReceiver`] accepts messages of any size and decides
//! when a transfer is complete: `end` after exactly the announced size. A close without `end`,
//! more bytes than announced, or `end` after fewer is a failed transfer. Any other text message
//! is ignored (PROTOCOL.md, "be lenient"; the web client's `receiveFile` does the same): text
//! carries no file bytes, so it cannot corrupt the file.
//!
//! Flow control: the sender keeps a window in flight instead of waiting for each message. It
//! sends while the channel's buffered amount is below [`HIGH_WATERMARK`], then waits for the
//! buffered-amount-low event with the threshold at [`LOW_WATERMARK`] ([`may_send`]).
//!
//! ```text
//! sender:   read chunk_size() bytes -> push(bytes) -> Binary messages ... finish() -> "end"
//! receiver: handle(Binary(len)) -> Progress(n) ... handle(Text("end")) -> Complete
//! ```

use std::fmt;

/// The text message that ends a file.
pub const END: &str = "end";
/// The message size used when the peer's maximum is unknown.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 64 * 1024;
/// The largest message a [`FileSender`] cuts, whatever the peer allows (Chromium allows
/// 256 KiB): RFC 8841's size for a peer that says nothing, which every peer takes, and the
/// size rift's throughput was measured with. The webrtc crate would not send more anyway
/// unless its own announced size were raised: it sends at most the smaller of the two sides'.
pub const MAX_CHUNK_SIZE: usize = DEFAULT_MAX_MESSAGE_SIZE;
/// Stop sending while this much is buffered in the channel.
pub const HIGH_WATERMARK: usize = 1024 * 1024;
/// Resume when the buffered amount falls to this (the channel's buffered-amount-low
/// threshold).
pub const LOW_WATERMARK: usize = 512 * 1024;

/// The size of the messages to send a peer whose maximum message size is `peer_max` (`None`
/// when its SDP did not say, `Some(0)` when it says "no limit", RFC 8841 section 6): at most
/// the peer's maximum and at most [`MAX_CHUNK_SIZE`]. Files and ports alike.
pub fn message_size(peer_max: Option<usize>) -> usize {
    match peer_max {
        None => DEFAULT_MAX_MESSAGE_SIZE,
        Some(0) => MAX_CHUNK_SIZE,
        Some(n) => n.min(MAX_CHUNK_SIZE),
    }
}

/// Whether another message may be queued on a channel with `buffered_amount` bytes waiting.
/// When not, set the channel's buffered-amount-low threshold to [`LOW_WATERMARK`] and wait.
pub fn may_send(buffered_amount: usize) -> bool {
    buffered_amount < HIGH_WATERMARK
}

/// Why a transfer failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FileError {
    /// The channel closed before `end`.
    #[error("the transfer was cut off after {received} bytes (channel closed without \"end\")")]
    ClosedBeforeEnd { received: u64 },
    /// More bytes than the announced size.
    #[error("more data than the announced {expected} bytes")]
    TooLong { expected: u64 },
    /// `end` after fewer bytes than announced.
    #[error("the transfer ended after {received} of {expected} bytes")]
    Short { received: u64, expected: u64 },
    /// The byte count overflowed (only a hostile peer with no announced size gets here).
    #[error("the byte count overflowed")]
    Overflow,
    /// The sender was given bytes after [`FileSender::finish`].
    #[error("data after the end of the file")]
    AfterEnd,
}

/// One message of a file transfer, as the client sends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message<'a> {
    Binary(&'a [u8]),
    Text(&'a str),
}

/// Cuts a file into messages and counts what was sent.
#[derive(Debug, Clone)]
pub struct FileSender {
    chunk_size: usize,
    size: Option<u64>,
    sent: u64,
    finished: bool,
}

impl FileSender {
    /// A sender for a peer whose maximum message size is `max_message_size` (`None` when the
    /// SDP did not say, `Some(0)` when it says "no limit", RFC 8841), for a file of `size`
    /// bytes if announced. Its messages are [`message_size`] long at most.
    pub fn new(max_message_size: Option<usize>, size: Option<u64>) -> Self {
        FileSender {
            chunk_size: message_size(max_message_size),
            size,
            sent: 0,
            finished: false,
        }
    }

    /// The largest binary message this sender makes: read the source in pieces of this size.
    pub fn chunk_size(&self) -> usize {
        self.chunk_size
    }

    /// Bytes handed out so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Cuts `data` (the next bytes of the source) into binary messages of at most
    /// [`Self::chunk_size`] bytes. Refuses bytes past the announced size: the source grew.
    pub fn push<'a>(&mut self, data: &'a [u8]) -> Result<impl Iterator<Item = Message<'a>> + use<'a>, FileError> {
        if self.finished {
            return Err(FileError::AfterEnd);
        }
        let sent = self.sent.checked_add(data.len() as u64).ok_or(FileError::Overflow)?;
        if let Some(expected) = self.size.filter(|e| sent > *e) {
            return Err(FileError::TooLong { expected });
        }
        self.sent = sent;
        Ok(data.chunks(self.chunk_size).map(Message::Binary))
    }

    /// The closing `end` message. Refuses when fewer bytes than announced were sent: the
    /// source shrank, and the receiver would fail anyway.
    pub fn finish(&mut self) -> Result<Message<'static>, FileError> {
        if let Some(expected) = self.size.filter(|e| self.sent < *e) {
            return Err(FileError::Short {
                received: self.sent,
                expected,
            });
        }
        self.finished = true;
        Ok(Message::Text(END))
    }
}

/// What happened on an incoming file's data channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelEvent<'a> {
    /// A binary message of this many bytes (write it only if the result is not `Failed`).
    Binary(usize),
    /// A text message.
    Text(&'a str),
    /// The channel closed.
    Closed,
}

/// Where an incoming file stands after an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Still arriving; this many bytes so far.
    Receiving(u64),
    /// A text message other than `end`, ignored (the client may log it); this many bytes so
    /// far.
    Ignored(u64),
    /// `end` arrived after the whole file (this many bytes). Sticky.
    Complete(u64),
    /// The transfer failed; drop what arrived (keep it as a partial file). Sticky.
    Failed(FileError),
}

/// Decides, message by message, whether an incoming file arrives whole.
#[derive(Debug, Clone)]
pub struct FileReceiver {
    expected: Option<u64>,
    received: u64,
    outcome: Option<Progress>,
}

impl FileReceiver {
    /// A receiver for a file announced with `expected_size` bytes (or no size).
    pub fn new(expected_size: Option<u64>) -> Self {
        FileReceiver {
            expected: expected_size,
            received: 0,
            outcome: None,
        }
    }

    /// Bytes accepted so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Feeds one channel event. After `Complete` or `Failed`, every later event returns the
    /// same outcome.
    pub fn handle(&mut self, event: ChannelEvent<'_>) -> Progress {
        if let Some(done) = &self.outcome {
            return done.clone();
        }
        let result = match event {
            ChannelEvent::Binary(len) => self.binary(len),
            ChannelEvent::Text(END) => match self.expected {
                Some(expected) if self.received < expected => Progress::Failed(FileError::Short {
                    received: self.received,
                    expected,
                }),
                _ => Progress::Complete(self.received),
            },
            ChannelEvent::Text(_) => Progress::Ignored(self.received),
            ChannelEvent::Closed => Progress::Failed(FileError::ClosedBeforeEnd {
                received: self.received,
            }),
        };
        if matches!(result, Progress::Complete(_) | Progress::Failed(_)) {
            self.outcome = Some(result.clone());
        }
        result
    }

    fn binary(&mut self, len: usize) -> Progress {
        let Some(received) = self.received.checked_add(len as u64) else {
            return Progress::Failed(FileError::Overflow);
        };
        if let Some(expected) = self.expected.filter(|e| received > *e) {
            return Progress::Failed(FileError::TooLong { expected });
        }
        self.received = received;
        Progress::Receiving(received)
    }
}

impl fmt::Display for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Progress::Receiving(n) | Progress::Ignored(n) => write!(f, "{n} bytes so far"),
            Progress::Complete(n) => write!(f, "complete ({n} bytes)"),
            Progress::Failed(e) => write!(f, "failed: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic bytes that differ at every offset a chunk boundary could hide.
    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 + i / 251) as u8).collect()
    }

    #[test]
    fn messages_are_the_peers_maximum_capped_at_64_kib() {
        const KIB: usize = 1024;
        let cases = [
            // Unknown: RFC 8841's default.
            (None, 64 * KIB),
            // "No limit" (RFC 8841 section 6): still 64 KiB.
            (Some(0), 64 * KIB),
            // A peer that takes less gets no more than it takes.
            (Some(16 * KIB), 16 * KIB),
            (Some(64 * KIB - 1), 64 * KIB - 1),
            (Some(1), 1),
            // One that takes more (Chromium's 256 KiB, a huge figure) gets 64 KiB.
            (Some(64 * KIB), 64 * KIB),
            (Some(64 * KIB + 1), 64 * KIB),
            (Some(256 * KIB), 64 * KIB),
            (Some(1 << 30), 64 * KIB),
        ];
        for (max, want) in cases {
            assert_eq!(message_size(max), want, "{max:?}");
            assert_eq!(FileSender::new(max, None).chunk_size(), want, "{max:?}");
        }
    }

    #[test]
    fn round_trip_over_many_chunk_and_file_sizes() {
        let maxima = [Some(1), Some(3), Some(7), Some(1000), Some(16 * 1024), None, Some(0)];
        for max in maxima {
            let chunk = FileSender::new(max, None).chunk_size();
            for n in [0, 1, 2, chunk - 1, chunk, chunk + 1, 3 * chunk, 3 * chunk + 5, 200_003] {
                if n > 300_000 || (chunk == 1 && n > 5000) {
                    continue;
                }
                let file = data(n);
                for announced in [Some(n as u64), None] {
                    let mut tx = FileSender::new(max, announced);
                    let mut rx = FileReceiver::new(announced);
                    let mut got = Vec::with_capacity(n);
                    let mut messages = 0;
                    // The source is read in pieces of chunk_size, and once in odd pieces.
                    let piece = if n % 2 == 0 {
                        tx.chunk_size()
                    } else {
                        tx.chunk_size() / 2 + 1
                    };
                    for part in file.chunks(piece.max(1)) {
                        for m in tx.push(part).expect("within the announced size") {
                            let Message::Binary(b) = m else {
                                panic!("text in the middle")
                            };
                            assert!(!b.is_empty() && b.len() <= chunk, "{max:?} {n}: {} bytes", b.len());
                            messages += 1;
                            assert_eq!(
                                rx.handle(ChannelEvent::Binary(b.len())),
                                Progress::Receiving(got.len() as u64 + b.len() as u64)
                            );
                            got.extend_from_slice(b);
                        }
                    }
                    let Message::Text(end) = tx.finish().expect("all sent") else {
                        panic!("end is text")
                    };
                    assert_eq!(
                        rx.handle(ChannelEvent::Text(end)),
                        Progress::Complete(n as u64),
                        "{max:?} {n}"
                    );
                    assert_eq!(rx.handle(ChannelEvent::Closed), Progress::Complete(n as u64), "sticky");
                    assert!(got == file, "{max:?} {n}: bytes differ");
                    assert!(messages >= n.div_ceil(chunk), "{max:?} {n}");
                    assert_eq!(tx.sent(), n as u64);
                }
            }
        }
    }

    #[test]
    fn any_message_size_is_accepted() {
        // A sender with other habits: one 5 MiB message, then a few bytes.
        let mut rx = FileReceiver::new(Some(5 * 1024 * 1024 + 3));
        assert_eq!(
            rx.handle(ChannelEvent::Binary(5 * 1024 * 1024)),
            Progress::Receiving(5 * 1024 * 1024)
        );
        rx.handle(ChannelEvent::Binary(0));
        rx.handle(ChannelEvent::Binary(3));
        assert_eq!(
            rx.handle(ChannelEvent::Text(END)),
            Progress::Complete(5 * 1024 * 1024 + 3)
        );
    }

    #[test]
    fn failed_transfers() {
        use ChannelEvent::{Binary, Closed, Text};
        let cases: Vec<(&str, Option<u64>, Vec<ChannelEvent>, FileError)> = vec![
            (
                "close without end",
                Some(10),
                vec![Binary(4), Closed],
                FileError::ClosedBeforeEnd { received: 4 },
            ),
            (
                "close without end, no size",
                None,
                vec![Binary(4), Binary(6), Closed],
                FileError::ClosedBeforeEnd { received: 10 },
            ),
            (
                "bytes past the announced size",
                Some(10),
                vec![Binary(6), Binary(5)],
                FileError::TooLong { expected: 10 },
            ),
            (
                "end with fewer bytes",
                Some(10),
                vec![Binary(9), Text(END)],
                FileError::Short {
                    received: 9,
                    expected: 10,
                },
            ),
            (
                "end of an empty file that was not empty",
                Some(1),
                vec![Text(END)],
                FileError::Short {
                    received: 0,
                    expected: 1,
                },
            ),
            (
                "a stray text message does not end it",
                None,
                vec![Binary(1), Text("END"), Binary(2), Closed],
                FileError::ClosedBeforeEnd { received: 3 },
            ),
        ];
        for (name, size, events, want) in cases {
            let mut rx = FileReceiver::new(size);
            let mut last = Progress::Receiving(0);
            for e in events {
                last = rx.handle(e);
            }
            assert_eq!(last, Progress::Failed(want.clone()), "{name}");
            // Sticky: a late end does not turn it into a success.
            assert_eq!(rx.handle(ChannelEvent::Text(END)), Progress::Failed(want), "{name}");
        }
        // A hostile peer with no announced size cannot wrap the count around.
        let mut rx = FileReceiver::new(None);
        rx.received = u64::MAX - 1;
        assert_eq!(
            rx.handle(ChannelEvent::Binary(2)),
            Progress::Failed(FileError::Overflow)
        );
        // The failing message was not counted.
        let mut rx = FileReceiver::new(Some(10));
        rx.handle(ChannelEvent::Binary(6));
        rx.handle(ChannelEvent::Binary(5));
        assert_eq!(rx.received(), 6);
    }

    #[test]
    fn stray_text_is_ignored_like_the_web_client_does() {
        let mut rx = FileReceiver::new(Some(3));
        assert_eq!(rx.handle(ChannelEvent::Binary(2)), Progress::Receiving(2));
        assert_eq!(rx.handle(ChannelEvent::Text("hello")), Progress::Ignored(2));
        assert_eq!(rx.handle(ChannelEvent::Text(&"x".repeat(10_000))), Progress::Ignored(2));
        assert_eq!(rx.handle(ChannelEvent::Binary(1)), Progress::Receiving(3));
        assert_eq!(rx.handle(ChannelEvent::Text(END)), Progress::Complete(3));
    }

    #[test]
    fn the_sender_refuses_a_source_that_grew_or_shrank() {
        let mut tx = FileSender::new(None, Some(4));
        assert_eq!(tx.push(b"abc").expect("fits").count(), 1);
        assert_eq!(
            tx.finish(),
            Err(FileError::Short {
                received: 3,
                expected: 4
            })
        );
        assert!(matches!(tx.push(b"de"), Err(FileError::TooLong { expected: 4 })));
        assert_eq!(tx.sent(), 3, "the refused bytes are not counted");
        assert_eq!(tx.push(b"d").expect("fits").count(), 1);
        assert_eq!(tx.finish(), Ok(Message::Text(END)));
        assert!(matches!(tx.push(b""), Err(FileError::AfterEnd)));
    }

    #[test]
    fn watermarks() {
        const { assert!(LOW_WATERMARK < HIGH_WATERMARK) };
        const { assert!(MAX_CHUNK_SIZE < HIGH_WATERMARK) };
        assert!(may_send(0));
        assert!(may_send(HIGH_WATERMARK - 1));
        assert!(!may_send(HIGH_WATERMARK));
    }
}
