//! Output capture of one run: numbering chunks across both streams, cutting at
//! the run's byte limit with a visible marker, and keeping UTF-8 characters
//! whole when a pipe read splits them.
//!
//! It writes only into the sink's channel, never into a store.

use jiff::Timestamp;

use crate::ids::RunId;
use crate::logstore::Sink;
use crate::run::{OutputChunk, StreamKind};

/// Where an executor writes a run's stdout and stderr.
pub struct RunOutput {
    run_id: RunId,
    sink: Option<Sink>,
    next_seq: u64,
    limit: u64,
    written: u64,
    truncated: bool,
    /// Bytes of a character split across reads, per stream (stdout, stderr).
    pending: [Vec<u8>; 2],
}

impl std::fmt::Debug for RunOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunOutput")
            .field("run_id", &self.run_id)
            .field("written", &self.written)
            .field("truncated", &self.truncated)
            .finish()
    }
}

impl RunOutput {
    /// Output of `run_id`, at most `limit_bytes` stored.
    pub fn new(run_id: RunId, sink: Sink, limit_bytes: u64) -> Self {
        Self::with_sink(run_id, Some(sink), limit_bytes)
    }

    /// Output that is counted and cut like any other but stored nowhere (for
    /// benchmarks of the executors themselves).
    pub fn discard(run_id: RunId, limit_bytes: u64) -> Self {
        Self::with_sink(run_id, None, limit_bytes)
    }

    fn with_sink(run_id: RunId, sink: Option<Sink>, limit_bytes: u64) -> Self {
        Self {
            run_id,
            sink,
            next_seq: 0,
            limit: limit_bytes,
            written: 0,
            truncated: false,
            pending: [Vec::new(), Vec::new()],
        }
    }

    /// Bytes of output stored so far.
    pub fn bytes_written(&self) -> u64 {
        self.written
    }

    pub fn is_truncated(&self) -> bool {
        self.truncated
    }

    /// Appends raw bytes read from `stream`.
    pub async fn write(&mut self, stream: StreamKind, bytes: &[u8]) {
        if self.truncated || bytes.is_empty() {
            return;
        }
        let slot = stream_slot(stream);
        let mut buffer = std::mem::take(&mut self.pending[slot]);
        buffer.extend_from_slice(bytes);
        let tail = incomplete_tail_len(&buffer);
        let held = buffer.split_off(buffer.len() - tail);
        self.pending[slot] = held;
        let text = String::from_utf8_lossy(&buffer).into_owned();
        self.emit_text(stream, text).await;
    }

    /// Flushes characters left incomplete at the end of the streams (they
    /// become U+FFFD). Call once, after the process's pipes are closed.
    pub async fn finish(&mut self) {
        for stream in [StreamKind::Stdout, StreamKind::Stderr] {
            let rest = std::mem::take(&mut self.pending[stream_slot(stream)]);
            if !rest.is_empty() && !self.truncated {
                let text = String::from_utf8_lossy(&rest).into_owned();
                self.emit_text(stream, text).await;
            }
        }
    }

    async fn emit_text(&mut self, stream: StreamKind, mut text: String) {
        if text.is_empty() {
            return;
        }
        let room = self.limit.saturating_sub(self.written);
        if text.len() as u64 > room {
            let mut cut = usize::try_from(room).unwrap_or(usize::MAX).min(text.len());
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            self.truncated = true;
        }
        if !text.is_empty() {
            self.written += text.len() as u64;
            self.send(stream, text).await;
        }
        if self.truncated {
            let marker = format!("\n[sandcron: output truncated at {} bytes]\n", self.limit);
            self.send(StreamKind::Stderr, marker).await;
        }
    }

    async fn send(&mut self, stream: StreamKind, data: String) {
        let chunk = OutputChunk {
            run_id: self.run_id,
            seq: self.next_seq,
            stream,
            at: Timestamp::now(),
            data,
        };
        self.next_seq += 1;
        if let Some(sink) = &self.sink {
            sink.chunk(chunk).await;
        }
    }
}

fn stream_slot(stream: StreamKind) -> usize {
    match stream {
        StreamKind::Stdout => 0,
        StreamKind::Stderr => 1,
    }
}

/// How many bytes at the end of `buffer` are the start of a UTF-8 character
/// whose remaining bytes have not arrived yet.
fn incomplete_tail_len(buffer: &[u8]) -> usize {
    for back in 1..=buffer.len().min(3) {
        let byte = buffer[buffer.len() - back];
        if byte & 0b1100_0000 == 0b1000_0000 {
            continue; // a continuation byte: keep looking for the lead byte
        }
        let needed = match byte {
            0xF0..=0xF7 => 4,
            0xE0..=0xEF => 3,
            0xC0..=0xDF => 2,
            _ => 1,
        };
        return if needed > back { back } else { 0 };
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_characters_are_held_back_until_complete() {
        let euro = "€".as_bytes(); // three bytes
        assert_eq!(incomplete_tail_len(b"abc"), 0);
        assert_eq!(incomplete_tail_len(&euro[..1]), 1);
        assert_eq!(incomplete_tail_len(&euro[..2]), 2);
        assert_eq!(incomplete_tail_len(euro), 0);
        let mut text = b"x".to_vec();
        text.extend_from_slice(&"😀".as_bytes()[..3]);
        assert_eq!(incomplete_tail_len(&text), 3);
        assert_eq!(
            incomplete_tail_len(&[0x80, 0x80, 0x80]),
            0,
            "stray continuation bytes are not held"
        );
    }
}
