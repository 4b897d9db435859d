//! Builds the rate limits of a policy set: plans, the consumers' plans and the routes'
//! limits. A limit whose name (owner, key, rate) is unchanged keeps its state: the previous
//! generation's limit is reused as it is.

use super::memory::MemLimit;
use super::quota::{MemQuota, Quota};
use super::{Backend, Limit, LimitSet, Spec};
use crate::config::gateway::{RateLimitStore, StoreBackend};
use crate::config::policy::{LimitDef, QuotaDef, QuotaPeriod, RouteDef};
use crate::config::values::ClientKey;
use crate::config::{GatewayConfig, PolicySet, PolicySource, Problems};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// The compiled rate limits of one generation.
#[derive(Debug)]
pub struct RateLimits {
    pub backend: Arc<Backend>,
    /// Each consumer's plan, by consumer id.
    pub consumer_plans: HashMap<String, Arc<LimitSet>>,
    /// Every limit of the generation, by name: swept by the memory backend, reused by the
    /// next generation.
    pub limits: HashMap<String, Arc<Limit>>,
    /// The memory backend's quota counts, one table per period, kept across reloads.
    pub quota_counts: HashMap<QuotaPeriod, Arc<MemQuota>>,
}

/// The store's settings from gateway.yaml: `store`, or its older name.
pub fn settings(
    gw: &GatewayConfig,
) -> Result<(RateLimitStore, &'static str), crate::config::Problem> {
    match (&gw.file.store, &gw.file.rate_limit_store) {
        (Some(_), Some(_)) => Err(gw.problem(
            "rate_limit_store",
            "`store` and its older name `rate_limit_store` are both set: keep `store`",
        )),
        (Some(s), None) => Ok((s.clone(), "store")),
        (None, Some(s)) => Ok((s.clone(), "rate_limit_store")),
        (None, None) => Ok((RateLimitStore::default(), "store")),
    }
}

/// The process's shared state and rate-limit backend, from gateway.yaml: one Redis pool
/// serves both.
pub fn backend(
    gw: &GatewayConfig,
) -> Result<(crate::state::Shared, Backend), crate::config::Problem> {
    let (cfg, at) = settings(gw)?;
    let memory = super::memory::Settings {
        max_keys: usize::try_from(cfg.max_keys).unwrap_or(usize::MAX),
        sweep_interval: cfg.sweep_interval.0,
    };
    let kv_memory =
        || crate::state::Kv::Memory(crate::state::memory::MemoryKv::new(memory.max_keys));
    match (cfg.backend, &cfg.redis) {
        (StoreBackend::Memory, None) => Ok((
            crate::state::Shared {
                kv: kv_memory(),
                on_error: crate::config::gateway::OnStoreError::Allow,
                prefix: String::new(),
                queue: Arc::new(crate::deliver::memory::MemoryQueue::default()),
            },
            Backend::Memory(memory),
        )),
        (StoreBackend::Memory, Some(_)) => Err(gw.problem(
            &format!("{at}.redis"),
            "`redis` is set but `backend` is memory: set `backend: redis` or remove `redis`",
        )),
        (StoreBackend::Redis, None) => Err(gw.problem(
            &format!("{at}.backend"),
            "`backend: redis` needs a `redis` mapping with at least `url`",
        )),
        // Every key set the gateway keeps together carries its own hash tag after the
        // prefix; a brace in the prefix would make Redis Cluster hash that instead.
        (StoreBackend::Redis, Some(r)) if r.prefix.contains(['{', '}']) => Err(gw.problem(
            &format!("{at}.redis.prefix"),
            format!(
                "prefix {:?} has a brace: Redis Cluster would hash it instead of the gateway's own hash tags",
                r.prefix
            ),
        )),
        (StoreBackend::Redis, Some(r)) => {
            let pool = crate::state::redis::RedisPool::new(r)
                .map(std::sync::Arc::new)
                .map_err(|e| gw.problem(&format!("{at}.redis"), e))?;
            let shared = crate::state::Shared {
                kv: crate::state::Kv::Redis(pool.clone()),
                on_error: r.on_error,
                prefix: r.prefix.clone(),
                queue: Arc::new(crate::deliver::redis::RedisQueue::new(
                    pool.clone(),
                    &r.prefix,
                )),
            };
            let rl = super::redis::RedisBackend::new(pool, r);
            Ok((shared, Backend::Redis(Box::new(rl))))
        }
    }
}

/// Builds limits, reusing the previous generation's where the name is unchanged.
pub struct Builder<'a> {
    backend: Arc<Backend>,
    prev: Option<&'a RateLimits>,
    limits: HashMap<String, Arc<Limit>>,
    plans: HashMap<String, Arc<LimitSet>>,
    quota_counts: HashMap<QuotaPeriod, Arc<MemQuota>>,
}

fn key_label(key: &ClientKey) -> String {
    match key {
        ClientKey::Consumer => "consumer".into(),
        ClientKey::ClientIp => "client_ip".into(),
        ClientKey::Header(h) => format!("header:{h}"),
    }
}

/// Checks one limit definition; `at` is its dotted path.
fn spec(src: &PolicySource, at: &str, def: &LimitDef, p: &mut Problems) -> Option<Spec> {
    let mut bad = |field: &str, msg: &str| {
        p.push(src.problem(&format!("{at}.{field}"), msg.to_string()));
        None
    };
    let Some(requests) = u32::try_from(def.requests).ok().filter(|r| *r > 0) else {
        return bad("requests", "requests must be between 1 and 4294967295");
    };
    let burst = def.burst.unwrap_or(def.requests);
    let Some(burst) = u32::try_from(burst).ok().filter(|b| *b > 0) else {
        return bad("burst", "burst must be between 1 and 4294967295");
    };
    let spec = Spec {
        requests,
        per: def.per.0,
        burst,
    };
    if def.per.0.is_zero() {
        return bad("per", "per must be longer than zero");
    }
    if spec.interval() < Duration::from_micros(1) {
        return bad(
            "requests",
            "more than one request per microsecond is not supported",
        );
    }
    Some(spec)
}

impl<'a> Builder<'a> {
    pub fn new(backend: Arc<Backend>, prev: Option<&'a RateLimits>) -> Self {
        Builder {
            quota_counts: prev.map(|r| r.quota_counts.clone()).unwrap_or_default(),
            backend,
            prev,
            limits: HashMap::new(),
            plans: HashMap::new(),
        }
    }

    fn set(
        &mut self,
        src: &PolicySource,
        at: &str,
        owner: &str,
        key: ClientKey,
        defs: &[LimitDef],
        p: &mut Problems,
    ) -> Arc<LimitSet> {
        let mut limits = Vec::new();
        for (i, def) in defs.iter().enumerate() {
            let Some(spec) = spec(src, &format!("{at}.{i}"), def, p) else {
                continue;
            };
            let name = format!(
                "{owner}:{}:{}/{}ms/{}",
                key_label(&key),
                spec.requests,
                spec.per.as_millis(),
                spec.burst
            );
            let reused = self
                .prev
                .and_then(|r| r.limits.get(&name))
                .filter(|l| l.spec == spec)
                .cloned();
            let limit = reused.unwrap_or_else(|| {
                let memory = match &*self.backend {
                    Backend::Memory(m) => MemLimit::new(&spec, m.max_keys),
                    Backend::Redis(_) => None,
                };
                Arc::new(Limit {
                    spec,
                    name: name.clone(),
                    memory,
                })
            });
            self.limits.insert(name, limit.clone());
            limits.push(limit);
        }
        Arc::new(LimitSet {
            key,
            limits,
            quotas: Vec::new(),
        })
    }

    /// A plan's quotas: at most one per period, each of at least one request.
    fn quotas(
        &mut self,
        src: &PolicySource,
        at: &str,
        defs: &[QuotaDef],
        p: &mut Problems,
    ) -> Vec<Arc<Quota>> {
        let mut out: Vec<Arc<Quota>> = Vec::new();
        for (i, def) in defs.iter().enumerate() {
            let at = format!("{at}.{i}");
            if def.requests == 0 {
                p.push(src.problem(
                    &format!("{at}.requests"),
                    "a quota allows at least 1 request".to_string(),
                ));
                continue;
            }
            if out.iter().any(|q| q.per == def.per) {
                p.push(src.problem(
                    &format!("{at}.per"),
                    "a plan has at most one quota per period (day, month)".to_string(),
                ));
                continue;
            }
            let memory = match &*self.backend {
                Backend::Memory(m) => {
                    let max = m.max_keys;
                    Some(
                        self.quota_counts
                            .entry(def.per)
                            .or_insert_with(|| Arc::new(MemQuota::new(max)))
                            .clone(),
                    )
                }
                Backend::Redis(_) => None,
            };
            out.push(Arc::new(Quota {
                requests: def.requests,
                per: def.per,
                name: Quota::name_of(def.per),
                memory,
            }));
        }
        out
    }

    /// Every plan of the set; a name defined twice is an error naming both files.
    pub fn plans(&mut self, set: &PolicySet, p: &mut Problems) {
        let mut origin: HashMap<&str, &PolicySource> = HashMap::new();
        for src in &set.sources {
            for (name, def) in &src.file.plans {
                let at = format!("plans.{name}");
                if let Some(first) = origin.insert(name, src) {
                    let msg = format!(
                        "plan {name:?} is defined twice (first in {})",
                        first.path.display()
                    );
                    p.push(src.problem(&at, msg));
                    continue;
                }
                let owner = format!("plan:{name}");
                let limits_at = format!("{at}.rate_limits");
                let limits = self.set(
                    src,
                    &limits_at,
                    &owner,
                    ClientKey::Consumer,
                    &def.rate_limits,
                    p,
                );
                let quotas = self.quotas(src, &format!("{at}.quotas"), &def.quotas, p);
                let s = Arc::new(LimitSet {
                    key: limits.key.clone(),
                    limits: limits.limits.clone(),
                    quotas,
                });
                self.plans.insert(name.clone(), s);
            }
        }
    }

    /// Each consumer's plan, which must exist.
    pub fn consumer_plans(
        &self,
        set: &PolicySet,
        p: &mut Problems,
    ) -> HashMap<String, Arc<LimitSet>> {
        let mut out = HashMap::new();
        for src in &set.sources {
            for (id, def) in &src.file.consumers {
                let Some(plan) = &def.plan else { continue };
                match self.plans.get(plan) {
                    Some(s) if !s.limits.is_empty() || !s.quotas.is_empty() => {
                        out.insert(id.clone(), s.clone());
                    }
                    Some(_) => {}
                    None => p.push(src.problem(
                        &format!("consumers.{id}.plan"),
                        format!("consumer {id:?} names an unknown plan {plan:?}"),
                    )),
                }
            }
        }
        out
    }

    /// A route's own limits, if it has any.
    pub fn route(
        &mut self,
        src: &PolicySource,
        at: &str,
        def: &RouteDef,
        p: &mut Problems,
    ) -> Option<Arc<LimitSet>> {
        let rl = def.rate_limit.as_ref()?;
        let at = format!("{at}.rate_limit");
        if rl.limits.is_empty() {
            p.push(src.problem(
                &format!("{at}.limits"),
                "rate_limit.limits is empty: give at least one limit, or remove rate_limit",
            ));
            return None;
        }
        let owner = format!("route:{}", def.name);
        let set = self.set(
            src,
            &format!("{at}.limits"),
            &owner,
            rl.key.clone(),
            &rl.limits,
            p,
        );
        Some(set)
    }

    pub fn finish(self, consumer_plans: HashMap<String, Arc<LimitSet>>) -> RateLimits {
        RateLimits {
            backend: self.backend,
            consumer_plans,
            limits: self.limits,
            quota_counts: self.quota_counts,
        }
    }
}
