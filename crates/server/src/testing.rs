//! A server harness for tests: [`start_test_server`] binds 127.0.0.1 on a free port, serves in the
//! background, and gives back the address, a connection string and a way to stop it.
//! [`replset`] does the same for whole replica sets.

pub mod replset;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::commands::ServerState;
use crate::config::ServerConfig;
use crate::engine::Engine;

/// A running test server.
#[derive(Debug)]
pub struct TestServer {
    /// Address the server listens on.
    pub addr: SocketAddr,
    /// Shared state (engine, cursors...), for assertions that look behind the wire.
    pub state: Arc<ServerState>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestServer {
    /// `mongodb://127.0.0.1:<port>`.
    pub fn uri(&self) -> String {
        format!("mongodb://{}", self.addr)
    }

    /// Stops accepting connections and waits for the accept loop to end.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Starts an in-memory server on 127.0.0.1 with a free port (the `bind_ip`/`port` of `config` are
/// ignored). Panics if no local port can be bound, which only happens in a broken test environment.
pub async fn start_test_server(config: ServerConfig) -> TestServer {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0 for a test server");
    let addr = listener.local_addr().expect("local address of a bound listener");
    let config = ServerConfig {
        port: addr.port(),
        bind_ip: addr.ip(),
        ..config
    };
    let state = Arc::new(ServerState::new(config, Arc::new(Engine::new())));
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(crate::net::serve(listener, Arc::clone(&state), async move {
        let _ = stopped.await;
    }));
    TestServer {
        addr,
        state,
        stop: Some(stop),
        task: Some(task),
    }
}
