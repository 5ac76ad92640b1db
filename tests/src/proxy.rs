//! A TCP proxy between a runner and its coordinator, inside the tests: it
//! passes traffic, or holds it (a blackhole), delays it, or cuts every
//! connection, as a flaky network does.
//!
//! A blackhole holds bytes rather than dropping them from the middle of a
//! stream: a path that drops packets makes TCP deliver them late, once it
//! heals, or the peers give up first — never a stream with a hole in it.
//! Connections made during a blackhole are accepted and carry nothing.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy does to the traffic from now on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    Pass,
    /// Nothing passes, either way; connections stay open.
    Blackhole,
    /// Each chunk waits this long before it passes, one after another (a
    /// slow link: later chunks wait behind earlier ones).
    Delay(Duration),
}

#[derive(Clone, Copy, Debug)]
struct State {
    fault: Fault,
    /// Bumped by each cut: connections made before it end.
    cuts: u64,
}

/// A proxy on a loopback port to `target`; it stops with its last handle.
pub struct Proxy {
    pub addr: SocketAddr,
    state: watch::Sender<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("the proxy binds");
        let addr = listener.local_addr().expect("its address");
        let (state, _) = watch::channel(State { fault: Fault::Pass, cuts: 0 });
        let states = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(target).await else { continue };
                let _ = (client.set_nodelay(true), server.set_nodelay(true));
                let born = states.borrow().cuts;
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(pump(client_read, server_write, states.subscribe(), born));
                tokio::spawn(pump(server_read, client_write, states.subscribe(), born));
            }
        });
        Proxy { addr, state, task }
    }

    /// The proxy as the `http://` URL of what it stands in front of.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set(&self, fault: Fault) {
        self.state.send_modify(|s| s.fault = fault);
    }

    /// Ends every connection open now (later ones pass as the fault says).
    pub fn cut(&self) {
        self.state.send_modify(|s| s.cuts += 1);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        self.cut();
    }
}

/// Waits until the state lets bytes through: false when the connection
/// was cut (or the proxy is gone).
async fn passable(state: &mut watch::Receiver<State>, born: u64) -> Option<Fault> {
    loop {
        let now = *state.borrow_and_update();
        if now.cuts != born {
            return None;
        }
        if now.fault != Fault::Blackhole {
            return Some(now.fault);
        }
        state.changed().await.ok()?;
    }
}

/// Moves bytes one way until either end closes or a cut.
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut state: watch::Receiver<State>, born: u64) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        if passable(&mut state, born).await.is_none() {
            return;
        }
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            },
            // A blackhole or a cut that begins while waiting for bytes.
            changed = state.changed() => if changed.is_err() { return } else { continue },
        };
        // Held through a blackhole that began meanwhile; delayed as asked.
        let Some(fault) = passable(&mut state, born).await else { return };
        if let Fault::Delay(d) = fault {
            tokio::time::sleep(d).await;
        }
        if passable(&mut state, born).await.is_none() || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
    let _ = to.shutdown().await;
}
