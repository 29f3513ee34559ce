//! A TCP proxy between a server and its database that a test can break, for
//! a real outage, in the two ways networks fail:
//! - [`CutProxy::cut`] closes every proxied connection and each new one as
//!   soon as it is accepted, as when the database host goes away;
//! - [`CutProxy::stall`] keeps every connection open but passes nothing
//!   either way, as in a network partition, where packets are lost rather
//!   than refused.

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    Cut,
    Stalled,
}

pub struct CutProxy {
    /// The database URL, pointed at the proxy.
    pub url: String,
    state: watch::Sender<State>,
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
        let (state, watched) = watch::channel(State::Open);
        tokio::spawn(accept(listener, upstream, watched));
        Self {
            url: proxied.to_string(),
            state,
        }
    }

    pub fn cut(&self) {
        self.state.send_replace(State::Cut);
    }

    pub fn stall(&self) {
        self.state.send_replace(State::Stalled);
    }

    /// Back to passing traffic; connections broken or stalled meanwhile are
    /// closed, so the driver opens fresh ones.
    pub fn restore(&self) {
        self.state.send_replace(State::Open);
    }
}

async fn accept(listener: TcpListener, upstream: String, state: watch::Receiver<State>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        let now = *state.borrow();
        match now {
            State::Open => {
                tokio::spawn(relay(client, upstream.clone(), state.clone()));
            }
            State::Cut => {} // dropped: closed at once
            State::Stalled => {
                tokio::spawn(hold_until_open(client, state.clone()));
            }
        }
    }
}

/// Copies both ways until either end closes or the proxy breaks: cut
/// closes both ends; a stall keeps the client's end open, silent, until the
/// proxy is open again.
async fn relay(mut client: TcpStream, upstream: String, mut state: watch::Receiver<State>) {
    let Ok(mut server) = TcpStream::connect(&upstream).await else {
        return;
    };
    let broken = tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => return,
        broken = state.wait_for(|state| *state != State::Open) => broken.map(|s| *s),
    };
    drop(server);
    if matches!(broken, Ok(State::Stalled)) {
        hold_until_open(client, state).await;
    }
}

async fn hold_until_open(client: TcpStream, mut state: watch::Receiver<State>) {
    let _ = state.wait_for(|state| *state == State::Open).await;
    drop(client);
}
