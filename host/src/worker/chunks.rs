//! Wires the executors' output port ([`ChunkSink`]) to the log sink: the one
//! place that knows both, so that `exec` never imports `logstore`.

use async_trait::async_trait;

use crate::exec::ChunkSink;
use crate::logstore::Sink;
use crate::run::OutputChunk;

#[async_trait]
impl ChunkSink for Sink {
    async fn chunk(&self, chunk: OutputChunk) {
        Sink::chunk(self, chunk).await;
    }
}
