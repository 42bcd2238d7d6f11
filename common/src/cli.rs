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
}

impl Cli {
    pub fn settings(&self) -> Result<Settings, ConfigError> {
        Settings::load(self.config.as_deref())
    }
}
