//! Moving a file's bytes over one data channel (docs/PROTOCOL.md, "File transfer"): the
//! sending and receiving tasks the room task spawns. Each reports progress to the room task
//! as an [`Internal`] event and never touches the room's state.
//!
//! The framing is keks-proto's: [`FileSender`] cuts the messages and refuses a source that
//! grew or shrank, [`FileReceiver`] decides whether a file arrived whole (the announced size,
//! `end`, a close without `end`). These tasks only move bytes and watch the channel.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use keks_proto::file::{self, ChannelEvent, FileReceiver, FileSender, Message};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::{mpsc, oneshot, watch};
use webrtc::data_channel::{DataChannel, DataChannelEvent};
use webrtc::peer_connection::PeerConnection;

use crate::room::{DRAIN_TIMEOUT, Internal, NOT_OPENED, Progress, Sink, Source, TransferKey};

/// What a receiver gathers before writing to its sink.
const WRITE_BUFFER: usize = 1 << 20;
/// How long a stopped upload's task lives on after closing its channel, keeping the member's
/// next channel from opening (see [`upload`]): SCTP's reset takes the rest of the stream's
/// queue and a round trip, milliseconds on a LAN.
const CLOSE_GUARD: Duration = Duration::from_secs(1);
/// How long a stopped upload waits for its channel to open before closing it.
const OPEN_WAIT: Duration = Duration::from_secs(5);
/// Why an upload that was stopped failed (the room reported it already).
const STOPPED: &str = "stopped";

/// Watches a data channel's events for a sending task.
fn watch_channel(dc: Arc<dyn DataChannel>) -> watch::Receiver<ChannelState> {
    let (tx, rx) = watch::channel(ChannelState::default());
    tokio::spawn(async move {
        // Polling keeps the driver's per-channel queue drained while the sender is blocked
        // in `send` waiting for window: an unpolled channel would hold the driver back.
        while let Some(event) = dc.poll().await {
            log::trace!("channel {}: {event:?}", dc.id());
            match event {
                DataChannelEvent::OnOpen => tx.send_modify(|s| s.open = true),
                // Also right after the open (nothing buffered yet): only a count, which the
                // sender compares with the count when it sent `end`.
                DataChannelEvent::OnBufferedAmountLow => tx.send_modify(|s| s.lows += 1),
                DataChannelEvent::OnClose => break,
                _ => {}
            }
        }
        tx.send_modify(|s| s.closed = true);
    });
    rx
}

/// What a sender knows of its channel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct ChannelState {
    open: bool,
    closed: bool,
    /// Times the buffered amount fell below the low threshold.
    lows: u64,
}

/// The largest message the member's connection lets us send: the SCTP transport's
/// negotiated maximum, the smaller of the member's `a=max-message-size` and our own (the
/// crate refuses to send a larger one). `None` before the transport started, which it has
/// once a channel opened.
pub(crate) async fn max_message_size(pc: &Arc<dyn PeerConnection>) -> Option<usize> {
    let sctp = pc.sctp().await?;
    let max = sctp.max_message_size().await.ok()?;
    usize::try_from(max).ok()
}

/// Sends one file over `dc` and reports to the room task: `Started` when the channel opened,
/// `Bytes` now and then, and one `Done` or `Failed` at the end.
///
/// `stop` ends it before its end went out (the room withdrew the file or the member sent
/// `request_stop`): the channel is closed, so the member's download fails at once (a close
/// without `end`, PROTOCOL.md) instead of waiting for bytes that never come. Once its end went
/// out, a stop changes nothing: the member finishes on `end`.
///
/// The webrtc crate frees a closed channel's SCTP stream id at once, while SCTP still resets
/// the stream with the member (the rest of the queue, then a round trip). A channel opened on
/// that id meanwhile cannot open, and the reset closes it (the room then opens another, see
/// `OPEN_RETRIES`, a fallback that was seen to fail now and then). So a stopped upload reports
/// only [`CLOSE_GUARD`] after its close, and the room opens the member's next channel only
/// then.
pub(crate) async fn upload(
    key: TransferKey,
    pc: Arc<dyn PeerConnection>,
    dc: Arc<dyn DataChannel>,
    source: Source,
    size: Option<u64>,
    stop: oneshot::Receiver<()>,
    report: mpsc::UnboundedSender<Internal>,
) {
    let state = watch_channel(dc.clone());
    let sent = tokio::select! {
        sent = send_file(&key, &pc, &dc, &state, source, size, &report) => sent,
        // A dropped sender is no stop: the branch is then disabled and the file goes on.
        Ok(()) = stop => {
            // Closed before our side saw it open (the member's acknowledgement on its way), a
            // channel's stream was seen to stay half reset for over 30 s, so the next channel
            // on its id could not open: close it open.
            let mut state = state.clone();
            let _ = tokio::time::timeout(OPEN_WAIT, state.wait_for(|s| s.open || s.closed)).await;
            if let Err(e) = dc.close().await {
                log::debug!("closing the channel of {}: {e}", key.id);
            }
            tokio::time::sleep(CLOSE_GUARD).await;
            let _ = report.send(Internal::Upload(key, Progress::Failed(STOPPED.into())));
            return;
        }
    };
    let progress = match sent {
        Ok(end) => match drain(&key, &dc, &state, end).await {
            Ok(()) => Progress::Done(end.bytes),
            Err(e) => Progress::Failed(e),
        },
        Err(e) => {
            // Failed: the close tells the member to stop waiting.
            let _ = dc.close().await;
            Progress::Failed(e)
        }
    };
    let _ = report.send(Internal::Upload(key, progress));
}

/// Where a channel stood when the file's `end` was handed to it.
#[derive(Debug, Clone, Copy)]
struct EndSent {
    /// The file's bytes.
    bytes: u64,
    /// Low-buffer events before the end, so [`drain`] knows which one follows it.
    lows: u64,
}

/// Sends the file's bytes and its `end`.
async fn send_file(
    key: &TransferKey,
    pc: &Arc<dyn PeerConnection>,
    dc: &Arc<dyn DataChannel>,
    state: &watch::Receiver<ChannelState>,
    source: Source,
    size: Option<u64>,
    report: &mpsc::UnboundedSender<Internal>,
) -> Result<EndSent, String> {
    let opened = state.clone().wait_for(|s| s.open || s.closed).await.map(|s| s.open);
    if !matches!(opened, Ok(true)) {
        return Err(NOT_OPENED.into());
    }
    let _ = report.send(Internal::Upload(key.clone(), Progress::Started));
    let Source::Path(path) = source else {
        return Err("not a file".into());
    };
    let mut file = tokio::fs::File::open(&path)
        .await
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    // Asked once the channel is open: the SCTP transport has started by then, so this is the
    // member's announced limit (the crate refuses a larger message). keks-proto caps it at
    // 64 KiB and takes 64 KiB when it is unknown.
    let mut sender = FileSender::new(max_message_size(pc).await, size);
    let mut last_report = 0u64;
    loop {
        let mut buf = BytesMut::zeroed(sender.chunk_size());
        let n = file
            .read(&mut buf)
            .await
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        if n == 0 {
            break;
        }
        buf.truncate(n);
        if state.borrow().closed {
            return Err("the receiver closed the data channel".into());
        }
        // The sender's cut as lengths, so each message is split off the read buffer uncopied.
        let lengths: Vec<usize> = match sender.push(&buf) {
            Ok(messages) => messages.map(message_len).collect(),
            Err(e) => return Err(format!("{} grew while it was being sent ({e})", path.display())),
        };
        for len in lengths {
            dc.send(buf.split_to(len))
                .await
                .map_err(|e| format!("sending failed: {e}"))?;
        }
        let sent = sender.sent();
        if sent - last_report >= 1 << 20 {
            last_report = sent;
            let _ = report.send(Internal::Upload(key.clone(), Progress::Bytes(sent)));
        }
    }
    let end = match sender.finish() {
        Ok(Message::Text(end)) => end,
        Ok(Message::Binary(_)) | Err(_) => {
            return Err(format!("{} changed size while it was being sent", path.display()));
        }
    };
    let bytes = sender.sent();
    // SCTP's buffered amount falling below one byte: what SCTP holds is acknowledged (see
    // `drain`).
    let _ = dc.set_buffered_amount_low_threshold(1).await;
    let lows = state.borrow().lows;
    dc.send_text(end).await.map_err(|e| format!("sending failed: {e}"))?;
    let _ = report.send(Internal::EndSent(key.clone(), bytes));
    Ok(EndSent { bytes, lows })
}

/// Waits until SCTP reports the file's end acknowledged (or [`DRAIN_TIMEOUT`] passed).
///
/// The channel may still hold the tail above SCTP (the crate's outstanding-bytes counter does
/// not reliably return to zero, so it cannot tell): the application keeps the connection open
/// for [`LINGER`](crate::room::LINGER) or until the receiver left.
///
/// The channel is not closed here. With the webrtc crate, closing a finished channel while the
/// member's next channel was opening closed that one too (seen with several files in a row);
/// an open idle channel costs a stream id and a few bytes until the connection ends. Receivers
/// (rift, browsers) finish on `end`, not on the close.
async fn drain(
    key: &TransferKey,
    dc: &Arc<dyn DataChannel>,
    state: &watch::Receiver<ChannelState>,
    end: EndSent,
) -> Result<(), String> {
    // The last small message was seen to sit in the crate's send pipeline until something
    // woke its driver (with Chromium as the receiver). Setting the threshold wakes it: poke
    // it until SCTP reports the buffer empty, and a few times after (in the background, so
    // a receiver that leaves at once still counts as served), so `end` goes out.
    let poke = |dc: Arc<dyn DataChannel>| async move {
        let _ = dc.set_buffered_amount_low_threshold(1).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // The low-buffer event is edge-triggered and was seen not to come at all now and then;
    // the channel is reliable and still open, so after a while the end counts as sent.
    let deadline = tokio::time::Instant::now() + DRAIN_TIMEOUT;
    loop {
        let now = *state.borrow();
        if now.closed {
            let _ = dc.close().await;
            return Err("the receiver closed the data channel before the end".into());
        }
        if now.lows > end.lows {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            log::debug!(
                "no acknowledgement event for the end of {}; the open channel delivers it",
                key.id
            );
            break;
        }
        poke(dc.clone()).await;
    }
    let dc = dc.clone();
    tokio::spawn(async move {
        for _ in 0..10 {
            poke(dc.clone()).await;
        }
    });
    Ok(())
}

/// The length of one message [`FileSender::push`] cut.
fn message_len(message: Message<'_>) -> usize {
    match message {
        Message::Binary(b) => b.len(),
        Message::Text(t) => t.len(),
    }
}

pub(crate) async fn download(
    key: TransferKey,
    dc: Arc<dyn DataChannel>,
    sink: Sink,
    report: mpsc::UnboundedSender<Internal>,
) {
    let Sink { writer, expected } = sink;
    // Fewer, larger writes: a file sink does each write on a blocking thread.
    let mut writer = tokio::io::BufWriter::with_capacity(WRITE_BUFFER, writer);
    let mut receiver = FileReceiver::new(expected);
    let mut last_report = 0u64;
    let mut started = false;
    let outcome = loop {
        let event = match dc.poll().await {
            None | Some(DataChannelEvent::OnClose) => receiver.handle(ChannelEvent::Closed),
            Some(DataChannelEvent::OnOpen) => {
                if !started {
                    started = true;
                    let _ = report.send(Internal::Download(key.clone(), Progress::Started));
                }
                continue;
            }
            Some(DataChannelEvent::OnMessage(msg)) if msg.is_string => {
                // Not UTF-8 is not `end` either: ignored like any stray text.
                let text = std::str::from_utf8(&msg.data).unwrap_or("");
                receiver.handle(ChannelEvent::Text(text))
            }
            Some(DataChannelEvent::OnMessage(msg)) => {
                if !started {
                    started = true;
                    let _ = report.send(Internal::Download(key.clone(), Progress::Started));
                }
                match receiver.handle(ChannelEvent::Binary(msg.data.len())) {
                    file::Progress::Receiving(received) => {
                        if let Err(e) = writer.write_all(&msg.data).await {
                            break Err(format!("cannot write: {e}"));
                        }
                        if received - last_report >= 1 << 20 {
                            last_report = received;
                            let _ = report.send(Internal::Download(key.clone(), Progress::Bytes(received)));
                        }
                        continue;
                    }
                    other => other,
                }
            }
            Some(_) => continue,
        };
        match event {
            file::Progress::Complete(n) => break Ok(n),
            file::Progress::Failed(e) => break Err(e.to_string()),
            file::Progress::Ignored(_) => log::debug!("ignoring an unexpected text message on {}", key.id),
            file::Progress::Receiving(_) => {}
        }
    };
    let outcome = match outcome {
        Ok(n) => match writer.flush().await.and(writer.shutdown().await) {
            Ok(()) => Progress::Done(n),
            Err(e) => Progress::Failed(format!("cannot write: {e}")),
        },
        Err(e) => {
            // What arrived is kept (the application keeps it as a partial file): the write
            // buffer goes out too.
            if let Err(w) = writer.shutdown().await {
                log::debug!("cannot write the rest of {}: {w}", key.id);
            }
            Progress::Failed(e)
        }
    };
    // A finished channel stays open until the connection ends (see `upload_inner`); a
    // failed one is closed so the sender stops.
    if matches!(outcome, Progress::Failed(_)) {
        let _ = dc.close().await;
    }
    let _ = report.send(Internal::Download(key, outcome));
}
