//! STUB — being written by a helper. Interface only.
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;

/// The resolved, validated configuration. Every path is absolute.
#[derive(Debug, Clone)]
pub struct Config {
    /// Absolute path of the file this was read from.
    pub path: PathBuf,
    pub supervisor: SupervisorSection,
    pub listen: ListenSection,
    pub child: ChildSection,
    pub restart: RestartSection,
    pub log: LogSection,
}

#[derive(Debug, Clone)]
pub struct SupervisorSection {
    pub state_dir: PathBuf,
}

#[derive(Debug, Clone)]
pub struct ListenSection {
    pub address: SocketAddr,
    pub backlog: i32,
    pub name: String,
}

#[derive(Debug, Clone)]
pub struct ChildSection {
    pub command: Vec<String>,
    pub cwd: PathBuf,
    pub env: BTreeMap<String, String>,
    pub stop_signal: Signal,
    pub stop_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct RestartSection {
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    pub reset_after: Duration,
}

#[derive(Debug, Clone)]
pub struct LogSection {
    pub dir: PathBuf,
    pub max_bytes: u64,
    pub max_files: u32,
}

/// Every problem found, each already formatted as
/// `FILE:LINE:COL: key `a.b`: message` (line/col omitted when unknown).
#[derive(Debug, Clone)]
pub struct ConfigError {
    pub problems: Vec<String>,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.problems.join("\n"))
    }
}
impl std::error::Error for ConfigError {}

/// `--config`, else `$SUPERVISOR_CONFIG`, else `config/supervisor.toml` under the current directory.
pub fn locate(cli: Option<&Path>) -> PathBuf {
    todo!("{cli:?}")
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        todo!("{path:?}")
    }
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        todo!("{text}{path:?}")
    }
    /// The resolved config as TOML text (for `check-config`).
    pub fn to_toml(&self) -> String {
        todo!()
    }
}
