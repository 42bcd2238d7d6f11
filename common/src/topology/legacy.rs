//! What an older version left on NATS, retired at start so that today's
//! layout can take its place.

use async_nats::jetstream::stream;

use super::{Queue, Topology, TopologyError};

impl Topology {
    /// The events queue's single consumer before partitions.
    pub fn relay_consumer(&self) -> String {
        format!("{}_relay", self.ns)
    }
    /// The replies queue's single consumer before partitions.
    pub fn responder_consumer(&self) -> String {
        format!("{}_responder", self.ns)
    }

    /// Before partitions, one unfiltered consumer (`{ns}_relay`,
    /// `{ns}_responder`) took the whole queue; a WorkQueue stream refuses
    /// filtered consumers beside it. Removed when it holds no work; with work
    /// in it, the start stops and says how to drain it.
    pub(super) async fn retire_single_consumer(&self, s: &stream::Stream, queue: Queue) -> Result<(), TopologyError> {
        let name = match queue {
            Queue::Events => self.relay_consumer(),
            Queue::Replies => self.responder_consumer(),
        };
        let Ok(info) = s.consumer_info(&name).await else { return Ok(()) };
        let stream = s.cached_info().config.name.clone();
        if info.num_pending > 0 || info.num_ack_pending > 0 {
            let msg = format!(
                "consumer {name} of an older version still holds {} messages: run the previous version until \
                 they are handled, or delete the consumer once the stream is empty",
                info.num_pending + info.num_ack_pending as u64
            );
            return Err(TopologyError::Consumer { name, stream, source: msg.into() });
        }
        s.delete_consumer(&name).await.map_err(|e| TopologyError::Consumer { name, stream, source: e.into() })?;
        Ok(())
    }
}
