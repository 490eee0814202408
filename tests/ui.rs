//! The web UI (`/ui/`): its pages over HTTP (what they show, escaping,
//! paging, CSRF), its logins (htpasswd, the token server's ACL) and a real
//! headless Chromium driving it.

mod common;

#[path = "ui/access.rs"]
mod access;
#[path = "common/browser.rs"]
#[allow(dead_code)]
mod browser;
#[path = "ui/chromium.rs"]
mod chromium;
#[path = "ui/fill.rs"]
mod fill;
#[path = "ui/pages.rs"]
mod pages;
#[path = "token_server/support.rs"]
#[allow(dead_code)]
mod support;
#[path = "ui/web.rs"]
mod web;
