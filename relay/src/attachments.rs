//! The images and files of a message, made into FastGPT content parts
//! before FastGPT is asked.
//!
//! For each resource of the message, in order:
//! 1. download it from Lark with the tenant token (`LarkClient::download_resource`),
//!    within what is left of `relay.max_file_bytes` for the message, checked
//!    while it streams;
//! 2. sniff what it is from its bytes ([`sniff`]);
//! 3. an image goes inline as a `data:` URL; a document is stored in the
//!    files bucket ([`store`]) and goes as a signed link FastGPT fetches from
//!    the ingress; anything else is refused.
//!
//! Every refusal is one notice to the user ([`notice`]) and FastGPT is not
//! asked; a transient failure (Lark or NATS) is retried by redelivery with
//! backoff, like a FastGPT failure, and after the last attempt becomes a
//! notice. A redelivered event downloads again and stores under the same
//! object name, which replaces the object: FastGPT still gets one question
//! (the handled-events record keeps a re-push from asking again).

pub mod content;
pub mod notice;
pub mod sniff;
pub mod store;

use std::time::Duration;

use async_nats::jetstream;
use common::config::{FilesSetup, Settings};
use common::file_link::LinkSigner;
use common::lark::api::LarkClient;
use common::lark::resource::{DownloadFailure, ResourceType};
use common::status::StatusBoard;
use common::topology::keys::file_object;
use common::topology::{Topology, TopologyError};
use common::worker::backoff;
use tokio_util::sync::CancellationToken;

pub use content::{message_content, ContentPart};
use sniff::Sniffed;
use store::{FileStore, StoreError};

/// One image or file of a message, as the message names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    /// `image_key` or `file_key`.
    pub key: String,
    pub kind: ResourceType,
    /// The user's file name (file messages only).
    pub file_name: Option<String>,
}

/// Why the message's resources do not go to FastGPT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Declined {
    /// Tell the user this, and do not ask FastGPT.
    Notice(String),
    /// Try the whole event again after this long.
    Retry(Duration),
}

/// Whether files can be passed on ([`common::config::FilesSetup`]).
pub enum Files {
    Enabled(Box<FileStore>),
    /// The keys that are not set, for the log line.
    Disabled {
        missing: &'static str,
    },
}

pub struct Attachments {
    /// `relay.max_file_bytes`: for all of one message's resources.
    pub max_bytes: u64,
    /// `relay.max_attempts`.
    pub max_attempts: u32,
    pub files: Files,
    pub status: StatusBoard,
    /// Messages whose images and files are in memory at once (downloaded,
    /// then base64 in FastGPT's request): bounds the relay's memory to a few
    /// times `relay.max_file_bytes`, whatever `relay.max_in_flight`.
    pub in_memory: std::sync::Arc<tokio::sync::Semaphore>,
}

/// How many messages' images and files one relay holds at once.
pub const MESSAGES_IN_MEMORY: usize = 4;

/// The longest wait between two attempts at a download.
const RETRY_CAP: Duration = Duration::from_secs(60);

impl Attachments {
    /// At start: with files enabled (`Settings::files`), the files bucket,
    /// created or brought to the configuration (waiting for NATS like the
    /// other buckets); without, a warning naming the keys to set.
    pub async fn open(
        settings: &Settings,
        js: &jetstream::Context,
        topology: &Topology,
        status: StatusBoard,
        shutdown: &CancellationToken,
    ) -> Result<Self, TopologyError> {
        let files = match settings.files() {
            FilesSetup::Enabled { public_url, signing_key } => {
                let store =
                    common::service::until_ready("opening the files bucket", shutdown, || topology.files(js)).await?;
                let signer = LinkSigner::new(signing_key.clone(), topology.files_max_age());
                tracing::info!(%public_url, bucket = %topology.files_bucket(), "files on: FastGPT fetches them from the ingress");
                let max = settings.nats.files_max_bytes;
                Files::Enabled(Box::new(FileStore::new(store, js.clone(), topology, max, signer, public_url.clone())))
            }
            FilesSetup::Disabled { missing } => {
                tracing::warn!(%missing, "files are off (images work): a file a user sends gets a notice; set {missing} to enable them");
                Files::Disabled { missing }
            }
        };
        Ok(Self {
            max_bytes: settings.relay.max_file_bytes,
            max_attempts: settings.relay.max_attempts,
            files,
            status,
            in_memory: std::sync::Arc::new(tokio::sync::Semaphore::new(MESSAGES_IN_MEMORY)),
        })
    }

    /// The content parts of `resources` of message `message_id`, or why not.
    pub async fn resolve(
        &self,
        lark: Option<&LarkClient>,
        channel: &str,
        message_id: &str,
        resources: &[Resource],
        attempt: u32,
    ) -> Result<Vec<ContentPart>, Declined> {
        let Some(lark) = lark else {
            // The relay always holds the App Secret (`Settings::for_service`).
            tracing::error!("no Lark client for this channel: cannot download its images and files");
            return Err(Declined::Notice(notice::REFUSED.into()));
        };
        let mut left = self.max_bytes;
        let mut parts = Vec::with_capacity(resources.len());
        for resource in resources {
            let started = std::time::Instant::now();
            let downloaded = match lark.download_resource(message_id, &resource.key, resource.kind, left).await {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(error = %e, kind = resource.kind.as_str(), "cannot download a resource of the message");
                    return Err(self.download_failed(channel, resource.kind, e.failure(), &e.to_string(), attempt));
                }
            };
            let size = downloaded.bytes.len() as u64;
            left = left.saturating_sub(size);
            let name = resource.file_name.as_deref();
            let sniffed = sniff::sniff(&downloaded.bytes, name);
            tracing::info!(
                kind = resource.kind.as_str(),
                size,
                lark_type = downloaded.content_type.as_deref().unwrap_or(""),
                sniffed = ?sniffed,
                elapsed = ?started.elapsed(),
                "downloaded a resource of the message"
            );
            match sniffed {
                Sniffed::Image { mime } => {
                    count(channel, "image", "ok");
                    parts.push(ContentPart::image(mime, &downloaded.bytes));
                }
                Sniffed::Document { mime, ext } => {
                    let name = sniff::safe_name(name, ext);
                    let object = file_object(channel, message_id, &resource.key);
                    let url = self.store(channel, &object, &name, &mime, downloaded.bytes, attempt).await?;
                    count(channel, "file", "ok");
                    parts.push(ContentPart::File { name, url });
                }
                Sniffed::Unsupported { what } => {
                    count(channel, resource.kind.as_str(), "unsupported");
                    tracing::info!(%what, "a resource of a type FastGPT does not read; the user is told");
                    return Err(Declined::Notice(notice::unsupported(name, &what)));
                }
            }
        }
        Ok(parts)
    }

    /// Stores a document and returns its link.
    async fn store(
        &self,
        channel: &str,
        object: &str,
        name: &str,
        mime: &str,
        bytes: bytes::Bytes,
        attempt: u32,
    ) -> Result<String, Declined> {
        let files = match &self.files {
            Files::Enabled(files) => files,
            Files::Disabled { missing } => {
                count(channel, "file", "disabled");
                tracing::warn!(
                    %missing,
                    "a user sent a file, but files are off: set {missing} (README, \"Images and files\"); the user is told"
                );
                return Err(Declined::Notice(notice::FILES_DISABLED.into()));
            }
        };
        match files.put(object, name, mime, bytes).await {
            Ok(()) => {
                tracing::info!(%object, %name, %mime, "file stored for FastGPT");
                Ok(files.link(object, name))
            }
            Err(e @ StoreError::Full { .. }) => {
                count(channel, "file", "store_full");
                tracing::error!(error = %e, "cannot store a file: the files bucket is full; the user is told");
                self.status.error(
                    channel,
                    e.to_string(),
                    "raise nats.files_max_bytes, or lower nats.files_max_age_secs",
                );
                Err(Declined::Notice(notice::STORE_FULL.into()))
            }
            Err(e @ StoreError::Unavailable { .. }) if attempt < self.max_attempts => {
                count(channel, "file", "retry");
                let delay = backoff(attempt, RETRY_CAP);
                tracing::warn!(error = %e, attempt, retry_in = ?delay, "cannot store a file; will retry");
                Err(Declined::Retry(delay))
            }
            Err(e) => {
                count(channel, "file", "failed");
                tracing::error!(error = %e, attempt, "cannot store a file after the last attempt; the user is told");
                Err(Declined::Notice(notice::store_failed(attempt)))
            }
        }
    }

    fn download_failed(
        &self,
        channel: &str,
        kind: ResourceType,
        failure: DownloadFailure,
        detail: &str,
        attempt: u32,
    ) -> Declined {
        let kind = kind.as_str();
        match failure {
            DownloadFailure::TooLarge => {
                count(channel, kind, "too_big");
                Declined::Notice(notice::too_big(self.max_bytes))
            }
            DownloadFailure::NotDownloadable => {
                count(channel, kind, "not_downloadable");
                Declined::Notice(notice::NOT_DOWNLOADABLE.into())
            }
            DownloadFailure::Transient { retry_after } if attempt < self.max_attempts => {
                count(channel, kind, "retry");
                let delay = backoff(attempt, RETRY_CAP).max(retry_after.unwrap_or_default());
                tracing::warn!(attempt, retry_in = ?delay, "Lark's download failed; will retry");
                Declined::Retry(delay)
            }
            DownloadFailure::Transient { .. } => {
                count(channel, kind, "failed");
                tracing::error!(attempt, "Lark's download failed at the last attempt; the user is told");
                self.status.error(
                    channel,
                    format!("cannot download a {kind} from Lark: {detail}"),
                    "see the relay's log",
                );
                Declined::Notice(notice::download_failed(attempt))
            }
            DownloadFailure::Refused { fix } => {
                count(channel, kind, "refused");
                tracing::error!(%detail, fix, "Lark refuses the download; the user is told");
                self.status.error(channel, format!("Lark refused a {kind} download: {detail}"), fix);
                Declined::Notice(notice::REFUSED.into())
            }
        }
    }
}

fn count(channel: &str, kind: &str, outcome: &'static str) {
    metrics::counter!(common::metric_names::RELAY_ATTACHMENTS_TOTAL,
        "channel" => channel.to_owned(),
        "kind" => if kind == "image" { "image" } else { "file" },
        "outcome" => outcome
    )
    .increment(1);
}
