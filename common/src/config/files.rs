//! Whether files are on: two keys of `[ingress]` decide it together, for
//! the ingress and the relay alike, so it is decided here once.

use secrecy::SecretString;
use url::Url;

use super::{Settings, ENV_PREFIX, MIN_SIGNING_KEY_LEN};

/// Whether files (file messages, served to FastGPT through signed links) are
/// on, from the one place that decides it: both `ingress.public_url` (where
/// FastGPT fetches them) and `ingress.files_signing_key` (what signs the
/// links) must be set. Images need neither: they travel inside the question.
#[derive(Debug, Clone, Copy)]
pub enum FilesSetup<'a> {
    Enabled {
        public_url: &'a Url,
        signing_key: &'a SecretString,
    },
    /// `missing` names the keys to set, for the user's notice, the log line
    /// and `--check`.
    Disabled {
        missing: &'static str,
    },
}

impl Settings {
    /// What to set for files to be on: each missing key with its
    /// environment variable and what to put there, for the start-up log and
    /// `--check` (a config with `public_url` alone looks set up, and is not).
    pub fn files_fix(&self) -> String {
        let mut set = Vec::new();
        if self.ingress.public_url.is_none() {
            set.push(format!(
                "ingress.public_url (or {ENV_PREFIX}__INGRESS__PUBLIC_URL), the public address FastGPT fetches files from"
            ));
        }
        if self.ingress.files_signing_key.is_none() {
            set.push(format!(
                "ingress.files_signing_key (or {ENV_PREFIX}__INGRESS__FILES_SIGNING_KEY), a random secret of \
                 {MIN_SIGNING_KEY_LEN} characters or more (e.g. `openssl rand -hex 32`), the same for the ingress and \
                 the relay"
            ));
        }
        format!("set {}", set.join("; and "))
    }

    /// See [`FilesSetup`].
    pub fn files(&self) -> FilesSetup<'_> {
        match (&self.ingress.public_url, &self.ingress.files_signing_key) {
            (Some(public_url), Some(signing_key)) => FilesSetup::Enabled { public_url, signing_key },
            (None, Some(_)) => FilesSetup::Disabled { missing: "ingress.public_url" },
            (Some(_), None) => FilesSetup::Disabled { missing: "ingress.files_signing_key" },
            (None, None) => FilesSetup::Disabled { missing: "ingress.public_url and ingress.files_signing_key" },
        }
    }
}
