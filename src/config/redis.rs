//! `redis:` — distribution's keys, in both its 2.x form (`addr`, `dialtimeout`,
//! `readtimeout`, `writetimeout`, `pool.*`) and its 3.x form (`addrs`,
//! `username`, `poolsize`, `tls.*`). Several `addrs` mean Redis Cluster.

use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct RedisConfig {
    pub addr: String,
    pub addrs: Vec<String>,
    pub username: String,
    pub password: String,
    pub db: i64,
    pub dialtimeout: String,
    pub readtimeout: String,
    pub writetimeout: String,
    /// Accepted for compatibility; connections are multiplexed, not pooled.
    pub poolsize: Option<u64>,
    pub pool: Option<serde_json::Value>,
    pub tls: RedisTlsConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct RedisTlsConfig {
    pub enabled: bool,
}

fn duration(key: &str, value: &str, default: Duration) -> Result<Duration, String> {
    if value.is_empty() {
        return Ok(default);
    }
    humantime::parse_duration(value).map_err(|e| format!("redis.{key}: {value:?}: {e}"))
}

impl RedisConfig {
    /// Every address, whichever form was used.
    pub fn addresses(&self) -> Vec<String> {
        let mut all = self.addrs.clone();
        if !self.addr.is_empty() && !all.contains(&self.addr) {
            all.insert(0, self.addr.clone());
        }
        all
    }

    pub fn dial_timeout(&self) -> Result<Duration, String> {
        duration("dialtimeout", &self.dialtimeout, Duration::from_secs(2))
    }

    /// How long one cache operation may take before it counts as a miss.
    pub fn op_timeout(&self) -> Result<Duration, String> {
        let read = duration("readtimeout", &self.readtimeout, Duration::from_millis(250))?;
        let write = duration(
            "writetimeout",
            &self.writetimeout,
            Duration::from_millis(250),
        )?;
        Ok(read.max(write))
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.addresses().is_empty() {
            return Err("redis.addr: required (or redis.addrs)".into());
        }
        if self.tls.enabled {
            return Err("redis.tls.enabled: TLS to Redis is not supported yet".into());
        }
        self.dial_timeout()?;
        self.op_timeout()?;
        Ok(())
    }
}
