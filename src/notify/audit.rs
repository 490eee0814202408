//! The audit log: one line per push, mount and delete, target `berth::audit`,
//! through the same subscriber as every other line (text or, with
//! `log.formatter: json`, one JSON object). Pulls are not audited (the access
//! log has them). Written whether or not webhooks are configured.

use super::event::{Action, RequestContext, Target};

pub fn record(action: Action, target: &Target, ctx: &RequestContext) {
    tracing::info!(
        target: "berth::audit",
        action = action.as_str(),
        repository = %target.repository,
        digest = target.digest.as_deref(),
        tag = target.tag.as_deref(),
        media_type = target.media_type.as_deref(),
        size = target.size,
        from_repository = target.from_repository.as_deref(),
        actor = ctx.actor.as_deref().unwrap_or("anonymous"),
        // The TCP peer; X-Forwarded-For only as sent, since a client can forge it.
        client = %ctx.record.addr,
        forwarded_for = ctx.forwarded_for.as_deref(),
        request_id = %ctx.record.id,
        "audit"
    );
}
