//! `loadtest run`: the CI-fleet scenarios against any registry by URL.

use std::{fmt::Write as _, rc::Rc};

use anyhow::{bail, Result};

use crate::{
    data::{random_bytes, PATTERN_LEN},
    progress::{note, phase},
    regclient::{Credentials, Endpoint},
    scenarios::{self, Ctx, Plan, Scenario},
    RunArgs,
};

/// The printed tables, and whether every operation succeeded.
pub async fn run(args: RunArgs) -> Result<(String, bool)> {
    let plan = Plan::new(
        args.quick,
        args.load.clients,
        args.load.duration,
        args.load.large_layer,
    )?;
    if args.user.is_some() != args.password.is_some() {
        bail!("--user and --password go together");
    }
    let (endpoint, path) = Endpoint::resolve(&args.url).await?;
    if path != "/" {
        bail!("--url is the registry's root (http://host:port), not {path}");
    }
    let creds = Rc::new(Credentials {
        user: args.user.clone(),
        password: args.password.clone(),
        token_url: args.token_url.clone(),
    });
    let mut list = Scenario::expand(&args.scenario);
    let mut notes = Vec::new();
    if creds.user.is_none() && list.contains(&Scenario::MixedAuth) {
        if args.scenario.contains(&Scenario::MixedAuth) {
            bail!("--scenario mixed-auth needs --user and --password");
        }
        list.retain(|s| *s != Scenario::MixedAuth);
        notes.push("mixed-auth skipped: no --user/--password".to_string());
    }
    phase(&format!(
        "{} ({}), {} clients, {:.0} s per scenario",
        args.url,
        endpoint.addr,
        plan.clients,
        plan.duration.as_secs_f64()
    ));
    let ctx = Rc::new(Ctx::new(
        endpoint,
        creds,
        plan,
        random_bytes(1, PATTERN_LEN),
    ));
    let mut out = String::new();
    let mut clean = true;
    for sc in list {
        let r = scenarios::run(sc, ctx.clone(), "registry").await?;
        note(format!(
            "{}: {:.0} ops/s, {:.1} MB/s, {} errors",
            sc.name(),
            r.ops_per_s(),
            r.mb_per_s(),
            r.errors()
        ));
        clean &= r.errors() == 0;
        let _ = writeln!(out, "\n{}", r.render());
    }
    for n in &notes {
        let _ = writeln!(out, "- {n}");
    }
    Ok((out, clean))
}
