//! Output capture of one run: numbering chunks across both streams, cutting at
//! the run's byte limit with a visible marker, keeping UTF-8 characters whole
//! when a pipe read splits them, and picking up the run's result value (a
//! stdout line `::sandcron::result <json>`). The run's secret values are
//! masked first (`secret::Masker`), so neither the stored output nor the
//! result can hold them as printed.
//!
//! It writes only into a [`ChunkSink`] (the log sink's channel, as the
//! worker wires it), never into a store.

use std::sync::Arc;

use async_trait::async_trait;
use jiff::Timestamp;

use crate::ids::RunId;
use crate::run::{MAX_RESULT_BYTES, OutputChunk, RESULT_MARKER, StreamKind};
use crate::secret::Masker;

/// Where a run's numbered output chunks go. The worker implements it over
/// the log sink; executors know nothing else of logs.
#[async_trait]
pub trait ChunkSink: Send + Sync {
    /// Hands one chunk over; may wait while the sink is full.
    async fn chunk(&self, chunk: OutputChunk);
}

/// Where an executor writes a run's stdout and stderr.
pub struct RunOutput {
    run_id: RunId,
    sink: Option<Arc<dyn ChunkSink>>,
    next_seq: u64,
    limit: u64,
    written: u64,
    truncated: bool,
    /// Bytes of a character split across reads, per stream (stdout, stderr).
    pending: [Vec<u8>; 2],
    results: ResultScanner,
    expire_at: Option<Timestamp>,
    /// Maskers of the run's secret values, per stream (stdout, stderr).
    masks: Option<Box<[Masker; 2]>>,
}

/// Finds result lines in stdout as it streams past, holding at most one
/// candidate line (bounded by the result size limit).
#[derive(Debug)]
struct ResultScanner {
    at_line_start: bool,
    candidate: Option<String>,
    result: Option<serde_json::Value>,
    rejected: Option<String>,
}

impl ResultScanner {
    fn new() -> Self {
        Self {
            at_line_start: true,
            candidate: None,
            result: None,
            rejected: None,
        }
    }

    fn scan(&mut self, text: &str) {
        for piece in text.split_inclusive('\n') {
            if self.at_line_start {
                self.candidate = Some(String::new());
            }
            if let Some(candidate) = &mut self.candidate {
                candidate.push_str(piece);
                let line = candidate.trim_end_matches('\n');
                let still_possible = line.starts_with(RESULT_MARKER) || RESULT_MARKER.starts_with(line);
                if !still_possible {
                    self.candidate = None;
                } else if line.len() > RESULT_MARKER.len() + MAX_RESULT_BYTES {
                    self.candidate = None;
                    self.rejected = Some(format!("result value is larger than {MAX_RESULT_BYTES} bytes"));
                }
            }
            self.at_line_start = piece.ends_with('\n');
            if self.at_line_start {
                self.complete();
            }
        }
    }

    fn complete(&mut self) {
        let Some(line) = self.candidate.take() else { return };
        let Some(json) = line.trim_end_matches(['\n', '\r']).strip_prefix(RESULT_MARKER) else {
            return;
        };
        match serde_json::from_str::<serde_json::Value>(json) {
            Ok(value) => {
                self.result = Some(value);
                self.rejected = None;
            }
            Err(err) => self.rejected = Some(format!("result value is not valid JSON: {err}")),
        }
    }
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
    pub fn new(run_id: RunId, sink: Arc<dyn ChunkSink>, limit_bytes: u64) -> Self {
        Self::with_sink(run_id, Some(sink), limit_bytes)
    }

    /// Output that is counted and cut like any other but stored nowhere (for
    /// benchmarks of the executors themselves).
    pub fn discard(run_id: RunId, limit_bytes: u64) -> Self {
        Self::with_sink(run_id, None, limit_bytes)
    }

    fn with_sink(run_id: RunId, sink: Option<Arc<dyn ChunkSink>>, limit_bytes: u64) -> Self {
        Self {
            run_id,
            sink,
            next_seq: 0,
            limit: limit_bytes,
            written: 0,
            truncated: false,
            pending: [Vec::new(), Vec::new()],
            results: ResultScanner::new(),
            expire_at: None,
            masks: None,
        }
    }

    /// Masks every value `masker` knows in both streams.
    pub fn masking(mut self, masker: Masker) -> Self {
        self.masks = (!masker.is_empty()).then(|| Box::new([masker.clone(), masker]));
        self
    }

    /// Marks every chunk as deletable after `expire_at` (the run's retention).
    pub fn expiring_at(mut self, expire_at: Option<Timestamp>) -> Self {
        self.expire_at = expire_at;
        self
    }

    /// The run's result value: the JSON of the last `::sandcron::result` line
    /// on stdout, if any was valid.
    pub fn result(&self) -> Option<&serde_json::Value> {
        self.results.result.as_ref()
    }

    /// Why the last result line was refused, if it was.
    pub fn result_error(&self) -> Option<&str> {
        self.results.rejected.as_deref()
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
        // Past the cap stderr is dropped outright; stdout is still scanned,
        // so a result line at the end of a flood counts.
        if bytes.is_empty() || (self.truncated && stream == StreamKind::Stderr) {
            return;
        }
        let slot = stream_slot(stream);
        let masked;
        let bytes = match &mut self.masks {
            Some(masks) => {
                masked = masks[slot].push(bytes);
                masked.as_slice()
            }
            None => bytes,
        };
        let mut buffer = std::mem::take(&mut self.pending[slot]);
        buffer.extend_from_slice(bytes);
        let tail = incomplete_tail_len(&buffer);
        let held = buffer.split_off(buffer.len() - tail);
        self.pending[slot] = held;
        let text = String::from_utf8_lossy(&buffer).into_owned();
        if stream == StreamKind::Stdout {
            self.results.scan(&text);
        }
        if !self.truncated {
            self.emit_text(stream, text).await;
        }
    }

    /// Flushes characters left incomplete at the end of the streams (they
    /// become U+FFFD). Call once, after the process's pipes are closed.
    pub async fn finish(&mut self) {
        for stream in [StreamKind::Stdout, StreamKind::Stderr] {
            let slot = stream_slot(stream);
            if let Some(masks) = &mut self.masks {
                let held = masks[slot].finish();
                self.pending[slot].extend(held);
            }
            let rest = std::mem::take(&mut self.pending[slot]);
            if !rest.is_empty() {
                let text = String::from_utf8_lossy(&rest).into_owned();
                if stream == StreamKind::Stdout {
                    self.results.scan(&text);
                }
                if !self.truncated {
                    self.emit_text(stream, text).await;
                }
            }
        }
        // A result line without a final newline still counts.
        self.results.complete();
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
            expire_at: self.expire_at,
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

    #[tokio::test]
    async fn result_lines_are_found_across_writes_and_the_last_valid_one_wins() {
        let mut output = RunOutput::discard(RunId::generate(), 1024);
        output.write(StreamKind::Stdout, b"starting\n::sandcron::res").await;
        output
            .write(StreamKind::Stdout, b"ult {\"rows\": 1}\nmore ::sandcron::result 5\n")
            .await;
        assert_eq!(
            output.result(),
            Some(&serde_json::json!({"rows": 1})),
            "only whole lines count"
        );
        output.write(StreamKind::Stderr, b"::sandcron::result 7\n").await;
        assert_eq!(
            output.result(),
            Some(&serde_json::json!({"rows": 1})),
            "stderr does not set results"
        );
        output.write(StreamKind::Stdout, b"::sandcron::result not json\n").await;
        assert_eq!(output.result(), Some(&serde_json::json!({"rows": 1})));
        assert!(output.result_error().is_some_and(|e| e.contains("not valid JSON")));
        output.write(StreamKind::Stdout, b"::sandcron::result [1,2]").await;
        output.finish().await;
        assert_eq!(
            output.result(),
            Some(&serde_json::json!([1, 2])),
            "a final line without newline counts"
        );
        assert_eq!(output.result_error(), None);
    }

    #[tokio::test]
    async fn a_result_after_the_output_cap_still_counts_and_oversized_ones_do_not() {
        let mut output = RunOutput::discard(RunId::generate(), 16);
        output.write(StreamKind::Stdout, &[b'x'; 100]).await;
        output.write(StreamKind::Stdout, b"\n::sandcron::result true\n").await;
        assert!(output.is_truncated());
        assert_eq!(output.result(), Some(&serde_json::json!(true)));
        let mut huge = b"::sandcron::result \"".to_vec();
        huge.extend(std::iter::repeat_n(b'a', MAX_RESULT_BYTES + 10));
        huge.extend_from_slice(b"\"\n");
        output.write(StreamKind::Stdout, &huge).await;
        assert_eq!(output.result(), Some(&serde_json::json!(true)));
        assert!(output.result_error().is_some_and(|e| e.contains("larger than")));
    }

    /// Chunks as stored, joined per stream.
    #[derive(Default)]
    struct Collect(std::sync::Mutex<Vec<OutputChunk>>);

    #[async_trait]
    impl ChunkSink for Collect {
        async fn chunk(&self, chunk: OutputChunk) {
            self.0.lock().expect("lock").push(chunk);
        }
    }

    #[tokio::test]
    async fn secret_values_are_masked_in_stored_output_and_results() {
        let sink = Arc::new(Collect::default());
        let masker = Masker::new([b"hunter22".as_slice()]);
        let mut output = RunOutput::new(RunId::generate(), sink.clone(), 1024).masking(masker);
        output.write(StreamKind::Stdout, b"token hunt").await;
        output.write(StreamKind::Stderr, b"err hunter22\n").await;
        output
            .write(StreamKind::Stdout, b"er22 ok\n::sandcron::result \"hunter22\"\n")
            .await;
        output.write(StreamKind::Stdout, b"tail hunter2").await;
        output.finish().await;
        let chunks = sink.0.lock().expect("lock");
        let text = |stream| -> String {
            chunks
                .iter()
                .filter(|c| c.stream == stream)
                .map(|c| c.data.as_str())
                .collect()
        };
        assert_eq!(
            text(StreamKind::Stdout),
            "token *** ok\n::sandcron::result \"***\"\ntail hunter2"
        );
        assert_eq!(text(StreamKind::Stderr), "err ***\n");
        assert_eq!(output.result(), Some(&serde_json::json!("***")));
        assert_eq!(
            output.bytes_written(),
            chunks.iter().map(|c| c.data.len() as u64).sum::<u64>()
        );
    }

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
