//! A small browser stand-in for the UI's HTTP-level tests: keeps the session
//! cookie, never follows redirects (the tests look at them), and finds the
//! form token in a page.

use std::sync::Mutex;

pub struct Page {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Page {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The value of the first `name="csrf"` input.
    pub fn csrf(&self) -> String {
        let re = regex::Regex::new(r#"name="csrf" value="([^"]*)""#).unwrap();
        re.captures(&self.body)
            .unwrap_or_else(|| panic!("no form token in:\n{}", self.body))[1]
            .to_string()
    }

    /// Texts of elements with `class="<class>"` (first level only: enough
    /// for the cells the pages mark).
    pub fn texts(&self, class: &str) -> Vec<String> {
        let re = regex::Regex::new(&format!(
            r#"class="{}"[^>]*>(?:<a [^>]*>)?([^<]*)<"#,
            regex::escape(class)
        ))
        .unwrap();
        re.captures_iter(&self.body)
            .map(|c| c[1].to_string())
            .collect()
    }
}

pub struct Web {
    pub base: String,
    client: reqwest::Client,
    /// `berth_ui=…` as last set.
    pub cookie: Mutex<Option<String>>,
}

impl Web {
    /// `base`: `http://host:port` (the UI is under `/ui/` there, or under
    /// the prefix the test puts into paths).
    pub fn new(base: &str) -> Web {
        Web {
            base: base.trim_end_matches('/').to_string(),
            client: crate::common::http::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookie: Mutex::new(None),
        }
    }

    fn keep_cookie(&self, headers: &reqwest::header::HeaderMap) {
        for v in headers.get_all("set-cookie") {
            let v = v.to_str().unwrap();
            let pair = v.split(';').next().unwrap().to_string();
            if pair.starts_with("berth_ui=") {
                *self.cookie.lock().unwrap() =
                    Some(pair).filter(|p| p != "berth_ui=" && !v.contains("Max-Age=0"));
            }
        }
    }

    async fn finish(&self, r: reqwest::Response) -> Page {
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        self.keep_cookie(&headers);
        Page {
            status,
            headers,
            body: r.text().await.unwrap(),
        }
    }

    fn with_cookie(&self, rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self.cookie.lock().unwrap().clone() {
            Some(c) => rb.header("cookie", c),
            None => rb,
        }
    }

    pub async fn get(&self, path: &str) -> Page {
        let rb = self.client.get(format!("{}{path}", self.base));
        self.finish(self.with_cookie(rb).send().await.unwrap())
            .await
    }

    /// POST a form; `fetch_site`: the `Sec-Fetch-Site` a browser would send
    /// (`same-origin`, `cross-site`, …).
    pub async fn post_from(
        &self,
        path: &str,
        fields: &[(&str, &str)],
        fetch_site: Option<&str>,
    ) -> Page {
        let body: String = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        let mut rb = self
            .client
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        if let Some(site) = fetch_site {
            rb = rb.header("sec-fetch-site", site);
        }
        self.finish(self.with_cookie(rb).send().await.unwrap())
            .await
    }

    pub async fn post(&self, path: &str, fields: &[(&str, &str)]) -> Page {
        self.post_from(path, fields, None).await
    }

    /// Log in through the form at `<ui>/login`; the page the login answers.
    pub async fn login(&self, ui: &str, user: &str, password: &str) -> Page {
        let form = self.get(&format!("{ui}/login")).await;
        assert_eq!(form.status, 200, "{}", form.body);
        let csrf = form.csrf();
        self.post(
            &format!("{ui}/login"),
            &[
                ("username", user),
                ("password", password),
                ("csrf", &csrf),
                ("next", &format!("{ui}/")),
            ],
        )
        .await
    }
}
