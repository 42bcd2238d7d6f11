//! Keeping a document for FastGPT: stored in the files bucket (JetStream
//! object store, `topology`'s `{ns}_files`) under a name derived from the
//! message and the resource key, and handed to FastGPT as a signed link to
//! the ingress (`common::file_link`).
//!
//! The bucket has a time to live (every object expires) and a size limit
//! that refuses a new file when reached (`discard: new`): a full bucket
//! gives the user a notice, never drops a file still in use. The room left
//! is looked at before a file is written, so a file that cannot fit leaves
//! no partial chunks behind.

use std::collections::HashMap;

use async_nats::jetstream::{self, object_store};
use bytes::Bytes;
use common::file_link::{now_secs, LinkSigner, META_NAME, META_TYPE};
use common::topology::Topology;
use url::Url;

/// Why a file was not stored.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The bucket is at its limit (`nats.files_max_bytes`) or JetStream is
    /// out of storage: retrying soon does not help.
    #[error("the files bucket {bucket} is full: {detail} (raise nats.files_max_bytes, or wait for files to expire)")]
    Full { bucket: String, detail: String },
    /// NATS did not answer or failed: worth retrying.
    #[error("cannot store the file in {bucket}: {detail}")]
    Unavailable { bucket: String, detail: String },
}

/// Room kept beyond a file's bytes for its chunk headers and metadata.
const OVERHEAD: u64 = 64 * 1024;

/// The files bucket and how links to it are made.
pub struct FileStore {
    store: object_store::ObjectStore,
    js: jetstream::Context,
    bucket: String,
    stream: String,
    max_bytes: u64,
    signer: LinkSigner,
    public_url: Url,
}

impl FileStore {
    pub fn new(
        store: object_store::ObjectStore,
        js: jetstream::Context,
        topology: &Topology,
        max_bytes: u64,
        signer: LinkSigner,
        public_url: Url,
    ) -> Self {
        Self {
            store,
            js,
            bucket: topology.files_bucket(),
            stream: topology.files_bucket_config().name,
            max_bytes,
            signer,
            public_url,
        }
    }

    /// Stores `bytes` as `object`, to be served as `name` of type `mime`.
    /// The same `object` again replaces it.
    pub async fn put(&self, object: &str, name: &str, mime: &str, bytes: Bytes) -> Result<(), StoreError> {
        let unavailable = |detail: String| StoreError::Unavailable { bucket: self.bucket.clone(), detail };
        let used = match self.js.get_stream(&self.stream).await {
            Ok(mut s) => s.info().await.map(|i| i.state.bytes).map_err(|e| unavailable(e.to_string()))?,
            Err(e) => return Err(unavailable(e.to_string())),
        };
        let needs = bytes.len() as u64 + OVERHEAD;
        if used.saturating_add(needs) > self.max_bytes {
            return Err(StoreError::Full {
                bucket: self.bucket.clone(),
                detail: format!("{used} of {} bytes used, {needs} more needed", self.max_bytes),
            });
        }
        let meta = object_store::ObjectMetadata {
            name: object.to_owned(),
            metadata: HashMap::from([(META_NAME.to_owned(), name.to_owned()), (META_TYPE.to_owned(), mime.to_owned())]),
            ..Default::default()
        };
        let mut reader: &[u8] = &bytes;
        match self.store.put(meta, &mut reader).await {
            Ok(_) => Ok(()),
            Err(e) if is_full(&e.to_string()) => {
                Err(StoreError::Full { bucket: self.bucket.clone(), detail: e.to_string() })
            }
            Err(e) => Err(unavailable(e.to_string())),
        }
    }

    /// The signed link to `object` under `name`, valid as long as it lives.
    pub fn link(&self, object: &str, name: &str) -> String {
        self.signer.link(&self.public_url, object, name, now_secs())
    }
}

/// JetStream's words for a write refused for want of room: the stream's
/// `max_bytes` with `discard: new`, or the server's or account's storage.
fn is_full(error: &str) -> bool {
    let e = error.to_ascii_lowercase();
    ["maximum bytes exceeded", "insufficient storage", "insufficient resources", "resource limits exceeded"]
        .iter()
        .any(|words| e.contains(words))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_for_room_is_told_apart() {
        assert!(is_full("failed getting chunk ack: nats: maximum bytes exceeded"));
        assert!(is_full("failed chunk publish: Insufficient Resources"));
        assert!(!is_full("failed chunk publish: timed out"));
    }
}
