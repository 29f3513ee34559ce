//! A TCP proxy between a server and its database that a test can cut, for
//! a real outage: cutting closes every proxied connection and closes each
//! new one as soon as it is accepted, so the database driver sees broken
//! connections, as when the database host goes away.

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct CutProxy {
    /// The database URL, pointed at the proxy.
    pub url: String,
    cut: watch::Sender<bool>,
}

impl CutProxy {
    /// A proxy to the host and port of the database `url`.
    pub async fn to_database(url: &str) -> Self {
        let mut proxied = reqwest::Url::parse(url).expect("a database URL");
        let upstream = format!(
            "{}:{}",
            proxied.host_str().expect("a database host"),
            proxied.port().unwrap_or(5432)
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        proxied.set_host(Some("127.0.0.1")).unwrap();
        proxied.set_port(Some(address.port())).unwrap();
        let (cut, is_cut) = watch::channel(false);
        tokio::spawn(accept(listener, upstream, is_cut));
        Self {
            url: proxied.to_string(),
            cut,
        }
    }

    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    pub fn restore(&self) {
        self.cut.send_replace(false);
    }
}

async fn accept(listener: TcpListener, upstream: String, is_cut: watch::Receiver<bool>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        if *is_cut.borrow() {
            continue; // dropped: closed at once
        }
        tokio::spawn(relay(client, upstream.clone(), is_cut.clone()));
    }
}

/// Copies both ways until either end closes or the proxy is cut.
async fn relay(mut client: TcpStream, upstream: String, mut is_cut: watch::Receiver<bool>) {
    let Ok(mut server) = TcpStream::connect(&upstream).await else {
        return;
    };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
        _ = is_cut.wait_for(|cut| *cut) => {}
    }
}
