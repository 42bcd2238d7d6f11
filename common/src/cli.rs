//! The flags every binary takes (DESIGN.md, "Configuration contract"):
//! `--config FILE` (or `LARK_BRIDGE_CONFIG`), `--check`, `--help`.

use std::path::PathBuf;

use crate::config::{ConfigError, Settings};

#[derive(Debug, clap::Parser)]
pub struct Cli {
    /// The TOML configuration shared by the three services.
    #[arg(long, value_name = "FILE", env = crate::config::CONFIG_ENV)]
    pub config: Option<PathBuf>,
    /// Diagnose this service's dependencies, print a checklist and exit
    /// (0 only when every check passed).
    #[arg(long)]
    pub check: bool,
    /// responder only: list the dead letters waiting, with their reasons, and exit.
    #[arg(long)]
    pub dead_letters: bool,
    /// responder only: publish the dead letters back where they died (after
    /// fixing the cause), delete them, and exit.
    #[arg(long)]
    pub redrive: bool,
    /// With --dead-letters or --redrive: only this channel's.
    #[arg(long, value_name = "ID")]
    pub channel: Option<String>,
}

impl Cli {
    pub fn settings(&self) -> Result<Settings, ConfigError> {
        Settings::load(self.config.as_deref())
    }
}
