//! Creating the streams, buckets and consumers, or bringing existing ones to
//! the configuration. Idempotent, so every replica of every service runs it
//! at start and whichever comes first creates; what NATS cannot change in
//! place stops the start with what to do (`diff`).

use std::time::Duration;

use async_nats::jetstream::{self, consumer, kv, object_store, stream};

use super::{describe, diff, Change, Queue, Topology, TopologyError, PARTITIONS};

impl Topology {
    /// Creates the streams, or brings existing ones to the configuration;
    /// returns what it changed. Idempotent; safe to run from every replica.
    pub async fn ensure_streams(&self, js: &jetstream::Context) -> Result<Vec<(String, Change)>, TopologyError> {
        let mut changed = Vec::new();
        for cfg in self.stream_configs() {
            let name = cfg.name.clone();
            changed.extend(ensure_stream(js, cfg).await?.into_iter().map(|c| (name.clone(), c)));
        }
        Ok(changed)
    }

    /// The durable consumers of every partition of `queue`, index = partition,
    /// shared by the service's replicas (a partition is pulled by the replica
    /// holding its lease). `ack_wait` applies to consumers created now; an
    /// existing consumer keeps its own (the worker reads it from the consumer),
    /// which is how a test makes it short.
    pub async fn partition_consumers(
        &self,
        js: &jetstream::Context,
        queue: Queue,
        ack_wait: Duration,
    ) -> Result<Vec<consumer::PullConsumer>, TopologyError> {
        let stream = self.work_stream_name(queue);
        let s = js
            .get_stream(&stream)
            .await
            .map_err(|e| TopologyError::Stream { name: stream.clone(), source: e.into() })?;
        self.retire_single_consumer(&s, queue).await?;
        let mut out = Vec::with_capacity(usize::from(PARTITIONS));
        for p in 0..PARTITIONS {
            let name = self.partition_consumer(queue, p);
            let c = s
                .get_or_create_consumer(&name, self.partition_consumer_config(queue, p, ack_wait))
                .await
                .map_err(|e| TopologyError::Consumer { name, stream: stream.clone(), source: e.into() })?;
            out.push(c);
        }
        Ok(out)
    }

    async fn bucket(&self, js: &jetstream::Context, config: stream::Config) -> Result<kv::Store, TopologyError> {
        let name = config.name.trim_start_matches("KV_").to_owned();
        ensure_stream(js, config).await.map_err(|e| match e {
            TopologyError::Stream { source, .. } => TopologyError::Bucket { name: name.clone(), source },
            other => other,
        })?;
        js.get_key_value(&name).await.map_err(|e| TopologyError::Bucket { name, source: e.into() })
    }

    /// The Reset-generation bucket.
    pub async fn sessions(&self, js: &jetstream::Context) -> Result<kv::Store, TopologyError> {
        self.bucket(js, self.sessions_bucket_config()).await
    }

    /// The answered-events bucket.
    pub async fn handled(&self, js: &jetstream::Context) -> Result<kv::Store, TopologyError> {
        self.bucket(js, self.handled_bucket_config()).await
    }

    /// The status bucket.
    pub async fn status(&self, js: &jetstream::Context) -> Result<kv::Store, TopologyError> {
        self.bucket(js, self.status_bucket_config()).await
    }

    /// The failed-attempts bucket of the consumers.
    pub async fn attempts(&self, js: &jetstream::Context) -> Result<kv::Store, TopologyError> {
        self.bucket(js, self.attempts_bucket_config()).await
    }

    /// The pending-questions bucket.
    pub async fn questions(&self, js: &jetstream::Context) -> Result<kv::Store, TopologyError> {
        self.bucket(js, self.questions_bucket_config()).await
    }

    /// The streaming-cards bucket.
    pub async fn cards(&self, js: &jetstream::Context) -> Result<kv::Store, TopologyError> {
        self.bucket(js, self.cards_bucket_config()).await
    }

    /// The files bucket, created or brought to the configuration. Only the
    /// relay creates it, and only with files enabled (`Settings::files`): its
    /// size limit is reserved on JetStream's disk.
    pub async fn files(&self, js: &jetstream::Context) -> Result<object_store::ObjectStore, TopologyError> {
        let name = self.files_bucket();
        ensure_stream(js, self.files_bucket_config()).await.map_err(|e| match e {
            TopologyError::Stream { source, .. } => TopologyError::ObjectBucket { name: name.clone(), source },
            other => other,
        })?;
        self.open_files(js).await
    }

    /// The files bucket as it is (the ingress reads it; the relay creates it).
    pub async fn open_files(&self, js: &jetstream::Context) -> Result<object_store::ObjectStore, TopologyError> {
        let name = self.files_bucket();
        js.get_object_store(&name).await.map_err(|e| TopologyError::ObjectBucket { name, source: e.into() })
    }

    /// The partition-lease bucket, created with a time to live of `ttl` when
    /// missing. An existing one keeps its own `max_age` (the TTL the workers
    /// follow, so a test can make it short); its other settings follow the
    /// configuration like every bucket's.
    pub async fn leases(&self, js: &jetstream::Context, ttl: Duration) -> Result<kv::Store, TopologyError> {
        let ttl = match js.get_stream(format!("KV_{}", self.leases_bucket())).await {
            Ok(s) if !s.cached_info().config.max_age.is_zero() => s.cached_info().config.max_age,
            _ => ttl,
        };
        self.bucket(js, self.leases_bucket_config(ttl)).await
    }
}

/// Creates `want`, or updates the existing stream to it; returns the
/// settings changed.
async fn ensure_stream(js: &jetstream::Context, want: stream::Config) -> Result<Vec<Change>, TopologyError> {
    let name = want.name.clone();
    let stream_err = |e: async_nats::Error| TopologyError::Stream { name: name.clone(), source: e };
    let (have, holds) = match js.get_stream(&name).await {
        Ok(s) => (s.cached_info().config.clone(), s.cached_info().state.bytes),
        Err(e) if is_not_found(&e) => {
            // Another replica may create it at the same moment: then this
            // finds it (an identical create is not an error either).
            js.get_or_create_stream(want).await.map_err(|e| stream_err(e.into()))?;
            return Ok(Vec::new());
        }
        Err(e) => return Err(stream_err(e.into())),
    };
    let d = diff(&have, &want);
    if !d.fixed.is_empty() {
        return Err(TopologyError::Mismatch { name, changes: describe(&d.fixed) });
    }
    if d.in_place.is_empty() {
        return Ok(Vec::new());
    }
    // JetStream applies a smaller size limit by deleting the oldest messages,
    // whatever the discard policy: never on a work stream's say-so.
    if let Some(limit) = u64::try_from(want.max_bytes).ok().filter(|l| *l > 0 && holds > *l) {
        return Err(TopologyError::WouldDrop { name, holds, limit });
    }
    let changes = describe(&d.in_place);
    if let Err(e) = js.update_stream(&want).await {
        let hint = if d.in_place.iter().any(|c| c.field == "num_replicas") {
            " (nats.replicas must not exceed the JetStream servers of the NATS cluster: 1 on a single server)"
        } else {
            ""
        };
        return Err(TopologyError::Update { name, changes, hint, source: e.into() });
    }
    tracing::warn!(stream = %name, %changes, "JetStream stream updated to the configuration");
    Ok(d.in_place)
}

fn is_not_found(e: &jetstream::context::GetStreamError) -> bool {
    matches!(e.kind(), jetstream::context::GetStreamErrorKind::JetStream(j)
        if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND)
}
