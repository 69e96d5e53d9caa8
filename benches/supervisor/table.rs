//! Statistics (median, min, max over a run's repetitions) and the one
//! Markdown table the bench prints, with the machine it ran on.

use crate::services::{Kind, Peers};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::process::Command;
use std::thread;

#[derive(Clone, Debug)]
pub(crate) struct Stats {
    pub(crate) v: Vec<f64>,
}

impl Stats {
    pub(crate) fn new(mut v: Vec<f64>) -> Option<Stats> {
        if v.is_empty() {
            return None;
        }
        v.sort_by(|a, b| a.total_cmp(b));
        Some(Stats { v })
    }
    pub(crate) fn median(&self) -> f64 {
        let n = self.v.len();
        if n % 2 == 1 {
            self.v[n / 2]
        } else {
            (self.v[n / 2 - 1] + self.v[n / 2]) / 2.0
        }
    }
    pub(crate) fn min(&self) -> f64 {
        self.v[0]
    }
    pub(crate) fn max(&self) -> f64 {
        self.v[self.v.len() - 1]
    }
    pub(crate) fn show(&self, prec: usize) -> String {
        format!(
            "{:.p$} ({:.p$}–{:.p$}) n={}",
            self.median(),
            self.min(),
            self.max(),
            self.v.len(),
            p = prec
        )
    }
}

pub(crate) fn show(s: &Option<Stats>, prec: usize) -> String {
    s.as_ref().map_or("failed".into(), |s| s.show(prec))
}

pub(crate) struct Row {
    pub(crate) figure: String,
    pub(crate) ours: String,
    pub(crate) beside: String,
    pub(crate) target: String,
    pub(crate) verdict: String,
    pub(crate) peers: BTreeMap<Kind, String>,
}

pub(crate) struct Table {
    pub(crate) rows: Vec<Row>,
    pub(crate) peers: Vec<(Kind, bool)>,
}

impl Table {
    pub(crate) fn new(p: &Peers) -> Table {
        Table {
            rows: Vec::new(),
            peers: Kind::PEERS.iter().map(|k| (*k, p.has(*k))).collect(),
        }
    }

    pub(crate) fn add(
        &mut self,
        figure: &str,
        ours: String,
        beside: String,
        target: &str,
        met: Option<bool>,
    ) {
        let verdict = match met {
            Some(true) => "met",
            Some(false) => "MISSED",
            None => "—",
        };
        eprintln!("  {figure}: {ours} | {beside} | {verdict}");
        self.rows.push(Row {
            figure: figure.into(),
            ours,
            beside,
            target: target.into(),
            verdict: verdict.into(),
            peers: BTreeMap::new(),
        });
    }

    pub(crate) fn peer(&mut self, figure: &str, k: Kind, cell: String) {
        eprintln!("  {figure} [{}]: {cell}", k.name());
        if let Some(r) = self.rows.iter_mut().find(|r| r.figure == figure) {
            r.peers.insert(k, cell);
        }
    }

    pub(crate) fn render(&self) -> String {
        let mut head = vec![
            "figure".to_string(),
            "supervisor".into(),
            "beside (same run)".into(),
            "target".into(),
            "verdict".into(),
        ];
        for (k, present) in &self.peers {
            head.push(if *present {
                k.name().into()
            } else {
                format!("{} (absent)", k.name())
            });
        }
        let mut out = String::new();
        let line = |cells: &[String], out: &mut String| {
            let _ = writeln!(out, "| {} |", cells.join(" | "));
        };
        line(&head, &mut out);
        line(&vec!["---".to_string(); head.len()], &mut out);
        for r in &self.rows {
            let mut cells = vec![
                r.figure.clone(),
                r.ours.clone(),
                r.beside.clone(),
                r.target.clone(),
                r.verdict.clone(),
            ];
            for (k, present) in &self.peers {
                cells.push(match r.peers.get(k) {
                    Some(c) => c.clone(),
                    None if *present => "n/a".into(),
                    None => "—".into(),
                });
            }
            line(&cells, &mut out);
        }
        out
    }
}

pub(crate) fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

pub(crate) fn machine() -> String {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = thread::available_parallelism().map_or(0, |n| n.get());
    let mem = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or("?".into(), |kb| format!("{:.0} GiB", kb as f64 / 1048576.0));
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let rustc = Command::new("rustc")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    format!(
        "Machine: {cpu}, {cores} cores, {mem} RAM, Linux {}, {rustc}, release profile",
        kernel.trim()
    )
}
