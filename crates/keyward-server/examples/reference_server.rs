//! The load test's reference: a bare hyper HTTP/1.1 server answering every
//! request with a fixed `200 {"valid":true}`, on the same runtime set-up as
//! `keyward serve`. What `keyward serve` achieves is reported as a ratio to
//! this (see scripts/load.sh and docs/PERFORMANCE.md).
//!
//! `cargo run --release -p keyward-server --example reference_server -- 127.0.0.1:8090`

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;

async fn answer(_: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(br#"{"valid":true}"#)))
        .unwrap_or_default())
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let address = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8090".into());
    let listener = tokio::net::TcpListener::bind(&address).await?;
    eprintln!(
        "reference server listening on http://{}",
        listener.local_addr()?
    );
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            // A client closing its connection mid-request is no failure here.
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service_fn(answer))
                .await;
        });
    }
}
