//! The Redis backend: every applicable limit of a request in one atomic Lua script (GCRA on
//! Redis's own clock, so replicas agree whatever their clocks say), one round trip.

use super::{Limit, StoreError, Verdict};
use crate::config::gateway::{OnStoreError, RedisStore};
use crate::state::redis::RedisPool;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;

/// KEYS: one per limit. ARGV: per limit, its interval (µs) and burst.
/// Returns per limit: admitted (0/1), remaining, wait (µs). State is written only when every
/// limit admits; each key expires once its state is indistinguishable from a fresh one.
const SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local out, tats, all = {}, {}, true
for i = 1, #KEYS do
  local interval = tonumber(ARGV[2 * i - 1])
  local burst = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', KEYS[i])) or now
  if tat < now then tat = now end
  local late = tat - now - interval * (burst - 1)
  if late > 0 then
    all = false
    out[#out + 1] = 0; out[#out + 1] = 0; out[#out + 1] = late
  else
    local new = tat + interval
    tats[i] = new
    out[#out + 1] = 1
    out[#out + 1] = math.floor((now + interval * burst - new) / interval)
    out[#out + 1] = new - now
  end
end
if all then
  for i = 1, #KEYS do
    redis.call('SET', KEYS[i], string.format('%.0f', tats[i]), 'PX', math.ceil((tats[i] - now) / 1000) + 1)
  end
end
return out
"#;

/// Client keys longer than this are stored as their SHA-256.
const MAX_RAW_KEY: usize = 128;

/// Rate limits on the shared store's Redis connections.
pub struct RedisBackend {
    pool: Arc<RedisPool>,
    pub on_error: OnStoreError,
    prefix: String,
    script: redis::Script,
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend")
            .field("pool", &self.pool)
            .field("on_error", &self.on_error)
            .finish()
    }
}

impl RedisBackend {
    pub fn new(pool: Arc<RedisPool>, cfg: &RedisStore) -> RedisBackend {
        RedisBackend {
            pool,
            on_error: cfg.on_error,
            prefix: cfg.prefix.clone(),
            script: redis::Script::new(SCRIPT),
        }
    }

    /// The Redis key of `limit` for client key `key`: readable, and the same on every replica.
    pub fn key_name(&self, limit: &Limit, key: &str) -> String {
        if key.len() <= MAX_RAW_KEY {
            format!("{}{}:{key}", self.prefix, limit.name)
        } else {
            let h = hex::encode(Sha256::digest(key.as_bytes()));
            format!("{}{}:sha256:{h}", self.prefix, limit.name)
        }
    }

    pub async fn check(&self, items: &[(&Limit, &str)]) -> Result<Vec<Verdict>, StoreError> {
        let mut call = self.script.prepare_invoke();
        for (limit, key) in items {
            call.key(self.key_name(limit, key));
        }
        for (limit, _) in items {
            let interval = limit.spec.interval().as_micros().max(1) as u64;
            call.arg(interval).arg(limit.spec.burst);
        }
        let out: Vec<i64> = self.pool.invoke(&call).await?;
        if out.len() != 3 * items.len() {
            return Err(StoreError::Failed(format!(
                "unexpected script answer of {} values",
                out.len()
            )));
        }
        Ok(out
            .chunks_exact(3)
            .map(|c| Verdict {
                admitted: c[0] == 1,
                remaining: c[1].max(0) as u64,
                wait: Duration::from_micros(c[2].max(0) as u64),
            })
            .collect())
    }
}
