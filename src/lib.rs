//! `supervisor` keeps one network service alive from outside.
//!
//! How data flows: `main.rs` parses the command line ([`cli`]) and hands it
//! to [`commands`]. `run` loads the [`config`], checks the folders and takes
//! the instance [`lock`], opens the [`logs`], then gives everything to the
//! one async driver in [`daemon`]. The driver binds the [`listener`] (fd 3),
//! starts the [`child`] and feeds every signal, child exit and timer as an
//! event to the pure restart [`policy`], carrying out the actions it returns
//! and recording each transition in `state.json` ([`state`]). The other
//! subcommands find the running supervisor without taking its lock
//! ([`status`]) and talk to it through signals. Platform differences live
//! in [`sys`] only.

pub mod child;
pub mod cli;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod exit;
pub mod health;
pub mod listener;
pub mod lock;
pub mod logs;
pub mod policy;
pub mod state;
pub mod status;
pub mod sys;
