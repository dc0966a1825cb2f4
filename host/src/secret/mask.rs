//! Masking of secret values in a run's output, as it streams: every
//! occurrence of a value of at least [`MIN_MASKED_BYTES`] bytes becomes
//! `***`, including one split across two writes. To see those, the masker
//! holds back the end of a write while it could still be the start of a
//! value, and only that: output that cannot begin a value passes at once.
//!
//! Masking is a safety net against a job printing its own credentials, not
//! a boundary: a guest that encodes a value (base64, reversed, one byte per
//! line) prints it unmasked.

/// Values shorter than this are not masked (masking `a` or `on` would wreck
/// the output and hide nothing).
pub const MIN_MASKED_BYTES: usize = 4;

/// What a value is replaced by.
const MASK: &[u8] = b"***";

/// A streaming masker for one output stream.
#[derive(Debug, Clone, Default)]
pub struct Masker {
    /// The values to mask, longest first, so the longest match wins.
    values: Vec<Vec<u8>>,
    /// Bytes held back from the previous write: a possible start of a value.
    held: Vec<u8>,
}

impl Masker {
    pub fn new<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Self {
        let mut values: Vec<Vec<u8>> = values
            .into_iter()
            .filter(|value| value.len() >= MIN_MASKED_BYTES)
            .map(<[u8]>::to_vec)
            .collect();
        values.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        values.dedup();
        Self {
            values,
            held: Vec::new(),
        }
    }

    /// Whether there is nothing to mask.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Masks the next bytes of the stream; returns what may be emitted now.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<u8> {
        if self.values.is_empty() {
            return bytes.to_vec();
        }
        let mut buffer = std::mem::take(&mut self.held);
        buffer.extend_from_slice(bytes);
        let (out, held_from) = self.scan(&buffer, false);
        self.held = buffer[held_from..].to_vec();
        out
    }

    /// Emits what is still held, masked, at the end of the stream.
    pub fn finish(&mut self) -> Vec<u8> {
        let buffer = std::mem::take(&mut self.held);
        self.scan(&buffer, true).0
    }

    /// Masks `buffer`; unless `at_end`, stops at the first position whose
    /// rest could still grow into a value and returns it as the held start.
    fn scan(&self, buffer: &[u8], at_end: bool) -> (Vec<u8>, usize) {
        let mut out = Vec::with_capacity(buffer.len());
        let mut at = 0;
        while at < buffer.len() {
            let rest = &buffer[at..];
            if let Some(value) = self.values.iter().find(|value| rest.starts_with(value)) {
                out.extend_from_slice(MASK);
                at += value.len();
                continue;
            }
            if !at_end && self.values.iter().any(|value| value.starts_with(rest)) {
                return (out, at);
            }
            out.push(buffer[at]);
            at += 1;
        }
        (out, buffer.len())
    }
}

/// `text` with every value masked (for whole texts: errors, ledger entries).
pub fn mask_text(masker: &Masker, text: &str) -> String {
    if masker.is_empty() {
        return text.to_owned();
    }
    let mut whole = Masker::new(masker.values.iter().map(Vec::as_slice));
    let mut bytes = whole.push(text.as_bytes());
    bytes.extend(whole.finish());
    String::from_utf8_lossy(&bytes).into_owned()
}
