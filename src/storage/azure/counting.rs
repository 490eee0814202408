//! Every HTTP request the Azure driver sends, counted
//! ([`super::AzureDriver::requests`]): object_store's calls and [`super::rest`]'s
//! alike, since both go through the one client this connector builds. Each
//! attempt of a retried call counts, as does a token fetch of an Entra ID
//! credential; signing a SAS locally is free. Tests and the README's request
//! figures read it.

use std::sync::{
    atomic::{AtomicU64, Ordering},
    Arc,
};

use async_trait::async_trait;
use object_store::{
    client::{
        HttpClient, HttpConnector, HttpError, HttpRequest, HttpResponse, HttpService,
        ReqwestConnector,
    },
    ClientOptions,
};

/// Builds object_store's own reqwest client, counting what it sends.
#[derive(Debug, Clone)]
pub(super) struct CountingConnector(pub Arc<AtomicU64>);

#[derive(Debug)]
struct Counting {
    inner: HttpClient,
    requests: Arc<AtomicU64>,
}

#[async_trait]
impl HttpService for Counting {
    async fn call(&self, req: HttpRequest) -> Result<HttpResponse, HttpError> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.inner.execute(req).await
    }
}

impl HttpConnector for CountingConnector {
    fn connect(&self, options: &ClientOptions) -> object_store::Result<HttpClient> {
        Ok(HttpClient::new(Counting {
            inner: ReqwestConnector::default().connect(options)?,
            requests: self.0.clone(),
        }))
    }
}
