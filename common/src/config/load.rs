//! Reading the configuration: the TOML file, then the `LARK_BRIDGE__...`
//! environment over it, then validation. Channels are an array, which the
//! `config` crate's environment source cannot address, so their overrides
//! are resolved here by channel id or index.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{invalid, ConfigError, Settings};

pub const CONFIG_ENV: &str = "LARK_BRIDGE_CONFIG";
pub const ENV_PREFIX: &str = "LARK_BRIDGE";

impl Settings {
    /// Loads the file named by `path`, or by `LARK_BRIDGE_CONFIG`, with the
    /// process environment's overrides, and validates it.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let env: BTreeMap<String, String> = std::env::vars().collect();
        let path = match path {
            Some(p) => p.to_path_buf(),
            None => env.get(CONFIG_ENV).map(PathBuf::from).ok_or(ConfigError::NoFile)?,
        };
        let text = std::fs::read_to_string(&path)
            .map_err(|e| ConfigError::Load { path: path.clone(), source: config::ConfigError::Foreign(Box::new(e)) })?;
        Self::from_toml_with_env(&text, &env).map_err(|e| match e {
            ConfigError::Load { source, .. } => ConfigError::Load { path, source },
            other => other,
        })
    }

    /// Parses TOML text with the given environment (a map, so tests need not
    /// touch the process environment).
    pub fn from_toml_with_env(text: &str, env: &BTreeMap<String, String>) -> Result<Self, ConfigError> {
        let load_err = |source| ConfigError::Load { path: PathBuf::from("<text>"), source };
        let file = config::File::from_str(text, config::FileFormat::Toml);
        // Channel overrides are applied by index below; the generic source would
        // turn the `channels` array into a table.
        let general: config::Map<String, String> = env
            .iter()
            .filter(|(k, _)| {
                k.starts_with(&format!("{ENV_PREFIX}__")) && !k.starts_with(&format!("{ENV_PREFIX}__CHANNELS__"))
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let environment = config::Environment::with_prefix(ENV_PREFIX)
            .prefix_separator("__")
            .separator("__")
            .try_parsing(true)
            .source(Some(general));

        // Which channel ids sit at which index, to resolve CHANNELS__{ID}__KEY.
        let ids = config::Config::builder()
            .add_source(file.clone())
            .build()
            .map_err(load_err)?
            .get::<Vec<IdOnly>>("channels")
            .unwrap_or_default();

        let mut builder = config::Config::builder().add_source(file).add_source(environment);
        for (name, value) in env {
            let Some(rest) = name.strip_prefix(&format!("{ENV_PREFIX}__CHANNELS__")) else { continue };
            let Some((who, key)) = rest.split_once("__") else {
                return Err(invalid(name.clone(), "expected LARK_BRIDGE__CHANNELS__{ID or INDEX}__{KEY}"));
            };
            let index = match who.parse::<usize>() {
                Ok(i) if i < ids.len() => i,
                _ => ids
                    .iter()
                    .position(|c| env_token(&c.id) == who)
                    .ok_or_else(|| invalid(name.clone(), format!("no channel with id or index {who:?} in the file")))?,
            };
            builder = builder
                .set_override(format!("channels[{index}].{}", key.to_lowercase()), value.clone())
                .map_err(load_err)?;
        }
        let settings: Settings = builder.build().and_then(|c| c.try_deserialize()).map_err(load_err)?;
        settings.validate()?;
        Ok(settings)
    }
}

#[derive(Deserialize)]
struct IdOnly {
    id: String,
}

/// How a channel id is written in an environment variable name.
pub fn env_token(id: &str) -> String {
    id.to_ascii_uppercase().replace('-', "_")
}
