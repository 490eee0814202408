//! distribution's event, field for field (`notifications/event.go`): what a
//! webhook receives, one per registry action, in an envelope
//! `{"events": [...]}` sent as [`EVENTS_MEDIA_TYPE`].

use std::time::SystemTime;

use axum::{
    body::Body,
    extract::{ConnectInfo, Request},
};
use serde::Serialize;

use crate::registry::manifest::Descriptor;

/// distribution 2.x's envelope type, as 2.8.2 sends it (tests/notifications);
/// 3.x labels its envelope `…events.v2+json`. Receivers written for 2.x
/// check for this one.
pub const EVENTS_MEDIA_TYPE: &str = "application/vnd.docker.distribution.events.v1+json";

/// A blob's `target.mediaType`: the registry does not know what a blob holds.
pub const BLOB_MEDIA_TYPE: &str = "application/octet-stream";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Push,
    Pull,
    /// A blob linked from another repository (`POST ?mount=&from=`).
    Mount,
    Delete,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Push => "push",
            Action::Pull => "pull",
            Action::Mount => "mount",
            Action::Delete => "delete",
        }
    }
}

/// What an event is about. Absent fields are left out, as Go's `omitempty`.
#[derive(Debug, Clone, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// = size; distribution keeps it for old receivers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub length: Option<u64>,
    pub repository: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_repository: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// With `notifications.events.includereferences`: what a manifest points at.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub references: Option<Vec<Descriptor>>,
    /// Berth's, on pulls of a mirrored repository (`proxy:`): `hit` when
    /// served from the cache, `miss` when fetched from upstream for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<String>,
}

/// The request that caused the event, taken once per request in `api`.
#[derive(Debug, Clone, Serialize, Default)]
pub struct RequestRecord {
    pub id: String,
    /// The TCP peer (`ip:port`). Unlike distribution, never X-Forwarded-For:
    /// any client can write that header (it goes to the audit log as
    /// `forwarded_for`, marked for what it is).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub addr: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub host: String,
    pub method: String,
    pub useragent: String,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct Actor {
    /// The htpasswd user or the token's subject; absent when anonymous.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// The registry node that generated the event.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Source {
    /// `hostname:port` of this replica.
    pub addr: String,
    /// Changes on every start.
    #[serde(rename = "instanceID")]
    pub instance_id: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub id: String,
    /// RFC 3339, UTC, nanoseconds.
    pub timestamp: String,
    pub action: &'static str,
    pub target: Target,
    pub request: RequestRecord,
    pub actor: Actor,
    pub source: Source,
}

#[derive(Serialize)]
pub struct Envelope<'a> {
    pub events: &'a [Event],
}

impl Event {
    pub fn new(action: Action, target: Target, ctx: &RequestContext, source: &Source) -> Event {
        Event {
            id: uuid::Uuid::new_v4().to_string(),
            timestamp: humantime::format_rfc3339_nanos(SystemTime::now()).to_string(),
            action: action.as_str(),
            target,
            request: ctx.record.clone(),
            actor: Actor {
                name: ctx.actor.clone(),
            },
            source: source.clone(),
        }
    }
}

/// What the HTTP layer knows about a request that events and audit lines
/// need: built once in `api::dispatch`, after access control.
#[derive(Debug, Clone, Default)]
pub struct RequestContext {
    pub record: RequestRecord,
    pub actor: Option<String>,
    /// The X-Forwarded-For header as sent (unverified).
    pub forwarded_for: Option<String>,
    /// `<scheme>://<host><prefix>` (or just the prefix with
    /// `http.relativeurls`), for `target.url`.
    pub url_base: String,
}

/// The request id the access log uses (set by `api`'s middleware).
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

impl RequestContext {
    pub fn from_request(req: &Request<Body>, actor: Option<String>, url_base: String) -> Self {
        let header = |name: &str| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let host = header("host")
            .or_else(|| req.uri().authority().map(|a| a.to_string()))
            .unwrap_or_default();
        RequestContext {
            record: RequestRecord {
                id: req
                    .extensions()
                    .get::<RequestId>()
                    .map(|r| r.0.clone())
                    .unwrap_or_default(),
                addr: req
                    .extensions()
                    .get::<ConnectInfo<std::net::SocketAddr>>()
                    .map(|c| c.0.to_string())
                    .unwrap_or_default(),
                host,
                method: req.method().to_string(),
                useragent: header("user-agent").unwrap_or_default(),
            },
            actor,
            forwarded_for: header("x-forwarded-for"),
            url_base,
        }
    }
}

/// Descriptors a manifest references, as distribution's `References()`:
/// config and layers of an image, the manifests of an index.
pub fn references(body: &[u8]) -> Vec<Descriptor> {
    #[derive(serde::Deserialize)]
    struct Refs {
        config: Option<Descriptor>,
        #[serde(default)]
        layers: Vec<Descriptor>,
        #[serde(default)]
        manifests: Vec<Descriptor>,
    }
    match serde_json::from_slice::<Refs>(body) {
        Ok(r) => r
            .config
            .into_iter()
            .chain(r.layers)
            .chain(r.manifests)
            .collect(),
        Err(_) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_names_are_distributions() {
        let ctx = RequestContext {
            record: RequestRecord {
                id: "r1".into(),
                addr: "10.0.0.1:5555".into(),
                host: "reg:5000".into(),
                method: "PUT".into(),
                useragent: "docker/27".into(),
            },
            actor: Some("alice".into()),
            ..Default::default()
        };
        let source = Source {
            addr: "node:5000".into(),
            instance_id: "i1".into(),
        };
        let target = Target {
            media_type: Some("application/vnd.oci.image.manifest.v1+json".into()),
            digest: Some("sha256:ab".into()),
            size: Some(7),
            length: Some(7),
            repository: "a/b".into(),
            url: Some("http://reg:5000/v2/a/b/manifests/sha256:ab".into()),
            tag: Some("1".into()),
            ..Default::default()
        };
        let e = Event::new(Action::Push, target, &ctx, &source);
        let v = serde_json::to_value(Envelope { events: &[e] }).unwrap();
        let e = &v["events"][0];
        assert_eq!(e["action"], "push");
        assert!(e["timestamp"].as_str().unwrap().ends_with('Z'));
        assert_eq!(
            e["target"]["mediaType"],
            "application/vnd.oci.image.manifest.v1+json"
        );
        assert_eq!(e["target"]["length"], 7);
        assert_eq!(e["target"]["tag"], "1");
        assert!(e["target"].get("fromRepository").is_none());
        assert_eq!(e["request"]["useragent"], "docker/27");
        assert_eq!(e["actor"]["name"], "alice");
        assert_eq!(e["source"]["instanceID"], "i1");
    }

    #[test]
    fn references_of_an_image_and_an_index() {
        let d = |c: char| format!("sha256:{}", c.to_string().repeat(64));
        let image = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"c","digest":"{}","size":1}},"layers":[{{"mediaType":"l","digest":"{}","size":2}}]}}"#,
            d('a'),
            d('b')
        );
        let refs = references(image.as_bytes());
        assert_eq!(refs.len(), 2);
        assert_eq!(refs[1].digest, d('b'));
        let index = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"m","digest":"{}","size":3}}]}}"#,
            d('c')
        );
        assert_eq!(references(index.as_bytes())[0].size, 3);
    }
}
