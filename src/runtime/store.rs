//! The live policy set: one `ArcSwap<Snapshot>`, replaced whole on a successful reload.

use super::compile::compile;
use super::snapshot::Snapshot;
use super::unsupported::check_gateway;
use crate::config::gateway::GatewayFile;
use crate::config::{self, GatewayConfig, Problems};
use crate::metrics;
use arc_swap::ArcSwap;
use serde_json::json;
use sha2::{Digest, Sha256};
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// The directories to watch and the entries in them whose changes matter. Other files in
/// those directories (a log file next to gateway.yaml, an editor's swap file) are ignored:
/// their writes must not keep postponing a reload.
#[derive(Debug, Default)]
pub struct WatchPlan {
    /// Canonical directory, and the one entry that matters in it (`None`: every policy
    /// file, `*.yaml`/`*.yml`).
    entries: Vec<(PathBuf, Option<OsString>)>,
}

impl WatchPlan {
    fn add(&mut self, dir: &Path, name: Option<&OsStr>) {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
        self.entries.push((dir, name.map(OsStr::to_os_string)));
    }

    /// The directories to watch (canonical, so event paths compare without syscalls).
    pub fn dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = self.entries.iter().map(|(d, _)| d.clone()).collect();
        dirs.sort();
        dirs.dedup();
        dirs
    }

    /// Whether a change at `path` (as reported by the watcher) may change the policy set.
    pub fn relevant(&self, path: &Path) -> bool {
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
            return true;
        };
        let text = name.to_string_lossy();
        // Kubernetes swaps a ConfigMap's content by renaming a `..data` symlink.
        if text.starts_with("..data") {
            return true;
        }
        let policy_file = text.ends_with(".yaml") || text.ends_with(".yml");
        self.entries.iter().any(|(dir, want)| {
            dir == parent
                && match want {
                    Some(w) => w == name,
                    None => policy_file,
                }
        })
    }
}

/// What a reload did.
#[derive(Debug)]
pub enum Reloaded {
    /// A new generation is live.
    Swapped(Arc<Snapshot>),
    /// Nothing changed on disk since the live generation was built.
    Unchanged,
}

pub struct Store {
    current: ArcSwap<Snapshot>,
    /// The TLS listeners' certificates and client CAs, re-read on every reload.
    pub tls: crate::tls::TlsSet,
    /// Problems that do not stop the gateway (certificates close to expiry).
    pub warnings: Vec<String>,
    /// gateway.yaml as read at start: addresses and the policy path come from here.
    started: GatewayConfig,
    state: Mutex<State>,
    /// Serializes reloads so two triggers at once cannot interleave.
    reloading: Mutex<()>,
}

#[derive(Default)]
struct State {
    last_error: Option<String>,
    restart_required: Vec<String>,
    /// Hash of every input of the live generation (gateway.yaml, policies, referenced files).
    inputs: String,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Settings that only take effect at start: reported when they change, otherwise ignored.
fn restart_keys(old: &GatewayFile, new: &GatewayFile) -> Vec<String> {
    let mut keys = Vec::new();
    let mut cmp = |name: &str, changed: bool| {
        if changed {
            keys.push(name.to_string());
        }
    };
    cmp("listeners", old.listeners != new.listeners);
    cmp("admin", old.admin != new.admin);
    cmp("policies", old.policies != new.policies);
    cmp("store", old.store != new.store);
    cmp(
        "rate_limit_store",
        old.rate_limit_store != new.rate_limit_store,
    );
    cmp("log", old.log != new.log);
    cmp("threads", old.threads != new.threads);
    cmp("shutdown_grace", old.shutdown_grace != new.shutdown_grace);
    cmp("tracing", old.tracing != new.tracing);
    keys
}

/// Hash of everything a generation was built from.
fn inputs_hash(gw: &GatewayConfig, policies: &str, referenced: &[PathBuf]) -> String {
    let mut h = Sha256::new();
    h.update(gw.hash.as_bytes());
    h.update(policies.as_bytes());
    for f in referenced {
        h.update(f.to_string_lossy().as_bytes());
        h.update(std::fs::read(f).unwrap_or_default());
    }
    hex::encode(h.finalize())
}

impl Store {
    /// Loads, checks and compiles everything for the first time.
    pub fn open(gateway: GatewayConfig) -> Result<Store, Problems> {
        let mut problems = check_gateway(&gateway);
        let tls = crate::tls::load(&gateway)
            .map_err(|p| problems.extend(p))
            .ok();
        let set = config::load_policies(&gateway.policies_path());
        let compiled = set.and_then(|set| {
            let snap = compile(&gateway, &set, None, 1)?;
            Ok((set.hash, snap))
        });
        let (policy_hash, snapshot, tls) = match (compiled, tls) {
            (Ok((hash, snap)), Some(tls)) if problems.is_empty() => (hash, snap, tls),
            (Err(p), _) => {
                problems.extend(p);
                return Err(problems);
            }
            _ => return Err(problems),
        };
        let mut warnings = tls.warnings.clone();
        warnings.extend(snapshot.warnings.iter().cloned());
        metrics::CONFIG_GENERATION.set(1);
        let inputs = inputs_hash(&gateway, &policy_hash, &snapshot.referenced);
        Ok(Store {
            tls: crate::tls::TlsSet::new(&gateway, tls),
            warnings,
            current: ArcSwap::from_pointee(snapshot),
            started: gateway,
            state: Mutex::new(State {
                inputs,
                ..State::default()
            }),
            reloading: Mutex::new(()),
        })
    }

    /// The live snapshot; a request takes it once and keeps it to the end.
    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// gateway.yaml as read at start.
    pub fn gateway(&self) -> &GatewayConfig {
        &self.started
    }

    /// What to watch: the directories, and which of their entries matter.
    pub fn watch_plan(&self) -> WatchPlan {
        let mut plan = WatchPlan::default();
        let gw = &self.started.path;
        plan.add(self.started.dir(), gw.file_name());
        let policies = self.started.policies_path();
        if policies.is_dir() {
            plan.add(&policies, None);
        }
        plan.add(
            policies.parent().unwrap_or(Path::new(".")),
            policies.file_name(),
        );
        for f in &self.load().referenced {
            plan.add(f.parent().unwrap_or(Path::new(".")), f.file_name());
        }
        plan
    }

    /// Re-reads gateway.yaml and every policy file; when anything changed (or `force`),
    /// compiles a whole new generation and swaps it in at once. On any problem the live set
    /// stays. Blocking (file reads): call it off the request path.
    pub fn reload(&self, force: bool) -> Result<Reloaded, Problems> {
        let _guard = lock(&self.reloading);
        let result = self.try_reload(force);
        let mut state = lock(&self.state);
        match &result {
            Ok(Reloaded::Swapped(next)) => {
                state.last_error = None;
                metrics::CONFIG_RELOADS
                    .with_label_values(&["success"])
                    .inc();
                metrics::CONFIG_GENERATION.set(next.generation as i64);
                tracing::info!(
                    generation = next.generation,
                    routes = next.routes.len(),
                    "policy set reloaded"
                );
            }
            // The files are back to what is live: nothing is wrong any more.
            Ok(Reloaded::Unchanged) => state.last_error = None,
            Err(problems) => {
                state.last_error = Some(problems.to_string());
                metrics::CONFIG_RELOADS
                    .with_label_values(&["failure"])
                    .inc();
                for p in &problems.0 {
                    tracing::error!(problem = %p, "reload failed; the previous policy set stays in force");
                }
            }
        }
        result
    }

    fn try_reload(&self, force: bool) -> Result<Reloaded, Problems> {
        let mut gw = config::load_gateway(&self.started.path)?;
        let restart = restart_keys(&self.started.file, &gw.file);
        if !restart.is_empty() {
            tracing::warn!(keys = ?restart, "gateway.yaml settings changed that apply only at start; restart the gateway to apply them");
        }
        // Start-time settings stay as they were; the rest (limits, trusted proxies) apply now.
        gw.file.policies = self.started.file.policies.clone();
        gw.file.listeners = self.started.file.listeners.clone();
        let result = self.swap(gw, force);
        // Published once the new set is live: a reader that sees it sees the new limits.
        lock(&self.state).restart_required = restart;
        result
    }

    /// Loads, compiles and swaps in the policy set under `gw`.
    fn swap(&self, gw: config::GatewayConfig, force: bool) -> Result<Reloaded, Problems> {
        let set = config::load_policies(&gw.policies_path())?;
        let prev = self.current.load_full();
        let inputs = inputs_hash(&gw, &set.hash, &prev.referenced);
        if !force && inputs == lock(&self.state).inputs {
            return Ok(Reloaded::Unchanged);
        }
        // Certificates are read again; nothing changes unless all of them load.
        let tls = crate::tls::load(&gw);
        let next = compile(&gw, &set, Some(&prev), prev.generation + 1);
        let (next, tls) = match (next, tls) {
            (Ok(next), Ok(tls)) => (Arc::new(next), tls),
            (Err(mut p), Err(t)) => {
                p.extend(t);
                return Err(p);
            }
            (Err(p), _) | (_, Err(p)) => return Err(p),
        };
        for w in &tls.warnings {
            tracing::warn!(warning = %w, "certificate expires soon");
        }
        self.tls.apply(tls);
        // Referenced files may differ between generations: hash what the new one uses.
        let inputs = inputs_hash(&gw, &set.hash, &next.referenced);
        self.current.store(next.clone());
        lock(&self.state).inputs = inputs;
        Ok(Reloaded::Swapped(next))
    }

    pub fn last_error(&self) -> Option<String> {
        lock(&self.state).last_error.clone()
    }

    /// The admin `/config` document.
    pub fn describe(&self) -> serde_json::Value {
        let s = self.load();
        let state = lock(&self.state);
        json!({
            "generation": s.generation,
            "hash": s.hash,
            "loaded_at": humantime::format_rfc3339_seconds(s.loaded_at).to_string(),
            "routes": s.route_names(),
            "last_error": state.last_error,
            "restart_required": state.restart_required,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_configuration_entries_are_relevant() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir(root.join("policies")).unwrap();
        std::fs::create_dir(root.join("keys")).unwrap();
        let mut plan = WatchPlan::default();
        plan.add(&root, Some(OsStr::new("gateway.yaml")));
        plan.add(&root.join("policies"), None);
        plan.add(&root, Some(OsStr::new("policies")));
        plan.add(&root.join("keys"), Some(OsStr::new("corp.pem")));
        assert_eq!(plan.dirs().len(), 3);
        for yes in [
            "gateway.yaml",
            "policies",
            "policies/routes.yaml",
            "policies/x.yml",
            "policies/..data",
            "keys/corp.pem",
        ] {
            assert!(plan.relevant(&root.join(yes)), "{yes} is relevant");
        }
        for no in [
            "gateway.log",
            ".gateway.yaml.swp",
            "policies/NOTES.txt",
            "keys/other.pem",
            "elsewhere/gateway.yaml",
        ] {
            assert!(!plan.relevant(&root.join(no)), "{no} is not relevant");
        }
    }
}
