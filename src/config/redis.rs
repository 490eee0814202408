//! `redis:` — distribution's keys, in both its 2.x form (`addr`, `dialtimeout`,
//! `readtimeout`, `writetimeout`, `pool.*`) and its 3.x form (`addrs`,
//! `username`, `poolsize`, `tls.*`). Several `addrs` mean Redis Cluster.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::compat::{RedisPoolSection, Tolerated};

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    pub addr: String,
    pub addrs: Vec<String>,
    pub username: String,
    pub password: String,
    pub db: i64,
    pub dialtimeout: String,
    pub readtimeout: String,
    pub writetimeout: String,
    pub tls: RedisTlsConfig,
    // distribution's (2.x `pool`, 3.x go-redis options), not acted on or
    // refused (see `compat`): connections are multiplexed, not pooled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool: Option<RedisPoolSection>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub poolsize: Tolerated,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maxidleconns: Tolerated,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub minidleconns: Tolerated,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maxactiveconns: Tolerated,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connmaxidletime: Tolerated,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connmaxlifetime: Tolerated,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pooltimeout: Tolerated,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub poolfifo: Tolerated,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clientname: Tolerated,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Tolerated,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maxretries: Tolerated,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub minretrybackoff: Tolerated,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maxretrybackoff: Tolerated,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contexttimeoutenabled: Tolerated,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maxredirects: Tolerated,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub readonly: Tolerated,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routebylatency: Tolerated,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routerandomly: Tolerated,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mastername: Tolerated,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sentinelusername: Tolerated,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sentinelpassword: Tolerated,
}

/// `redis.tls`: 2.x `enabled`, 3.x `certificate`, `key`, `clientcas`; all
/// refused while set (see `compat`): TLS to Redis is not supported yet.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct RedisTlsConfig {
    pub enabled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate: Tolerated,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Tolerated,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clientcas: Tolerated,
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
