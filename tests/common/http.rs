//! Synchronous HTTP for tests that drive CLIs and child processes: one
//! request on a private current-thread runtime, its answer read whole.

use std::future::Future;

use sha2::Digest as _;

/// An HTTP answer, read whole.
pub struct Resp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body[..self.body.len().min(500)])
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The first error code of a registry error body.
    pub fn error_code(&self) -> String {
        self.json()["errors"][0]["code"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

/// Run `f` to completion on a private current-thread runtime, so the tests
/// around it stay synchronous like the CLIs they drive.
pub fn block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// A reqwest client builder. The tests use the server's reqwest (0.13), built
/// without a bundled crypto provider: it takes rustls' process default, which
/// a test binary installs (ring) as berth's `main` does.
pub fn builder() -> reqwest::ClientBuilder {
    berth::config::tls::install_default_provider();
    reqwest::Client::builder()
}

/// `reqwest::Client::new()`, with the provider installed.
pub fn client() -> reqwest::Client {
    builder().build().unwrap()
}

/// `reqwest::get`, with the provider installed.
pub async fn get(url: impl reqwest::IntoUrl) -> reqwest::Result<reqwest::Response> {
    client().get(url).send().await
}

/// Send the request `build` makes on a client from `client`; a connection or
/// body error is the caller's to judge (some tests expect one).
pub fn exchange(
    client: reqwest::ClientBuilder,
    build: impl FnOnce(&reqwest::Client) -> reqwest::RequestBuilder,
) -> reqwest::Result<Resp> {
    block_on(async {
        let client = client.build().unwrap();
        let r = build(&client).send().await?;
        Ok(Resp {
            status: r.status().as_u16(),
            headers: r.headers().clone(),
            body: r.bytes().await?.to_vec(),
        })
    })
}

/// `sha256:<hex>` of `data`, as registries name content.
pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}
