//! How long a partition's new owner waits for what its previous owner still
//! holds, and what that bounds elsewhere. One place, read by the worker
//! (which waits) and by the configuration's checks (which keep every
//! question shorter than the wait).

use std::time::Duration;

/// A partition's new owner waits at most this long for its previous
/// owner's messages before it goes on with their conversations
/// (`worker::partition`).
pub const MAX_WAIT: Duration = Duration::from_secs(300);

/// A FastGPT call must end this long before [`MAX_WAIT`]: a question still
/// in work at a replica that lost its partition is answered before the new
/// owner goes on with that conversation.
pub const MARGIN: Duration = Duration::from_secs(30);

/// The longest `relay.fastgpt_timeout_secs` allowed.
pub const MAX_FASTGPT_TIMEOUT_SECS: u64 = MAX_WAIT.as_secs() - MARGIN.as_secs();
