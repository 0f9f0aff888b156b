//! A replica set harness for tests: [`ReplSet::start`] runs a 1-, 3- or 5-member set (optionally with a
//! hidden and a delayed member) on free loopback ports, initiates it, waits for a primary and every member to
//! be healthy, and hands out the connection string (`mongodb://h1,h2,h3/?replicaSet=rs0`).
//!
//! Members are either in-process servers ([`MemberMode::InProcess`]: fast, their [`ServerState`] is
//! available for assertions) or real `tidemark-server` child processes ([`MemberMode::Process`]: needed for
//! `kill -9`). Data lives in memory or in temporary `--dbpath` directories (removed on drop). Members can be
//! killed and restarted on the same port and dbpath; everything is torn down when the [`ReplSet`] is dropped.
//!
//! Waiting is done on conditions with deadlines (hello / replSetGetStatus polled every few milliseconds),
//! never with fixed sleeps.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bson::{Bson, Document, doc};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::commands::ServerState;
use crate::config::ServerConfig;
use crate::engine::Engine;
use crate::storage::{Storage, StorageOptions};

/// How members run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberMode {
    /// Servers inside the test process.
    InProcess,
    /// `tidemark-server` child processes started from this binary.
    Process(PathBuf),
}

/// What set to start.
#[derive(Debug, Clone)]
pub struct ReplSetOptions {
    /// Replica set name.
    pub set_name: String,
    /// Number of members (1, 3 or 5 are typical; at most 7 vote).
    pub members: usize,
    /// Makes the second-to-last member hidden (priority 0, `hidden: true`). Needs at least 3 members.
    pub hidden: bool,
    /// Makes the last member delayed by this many seconds (priority 0, hidden, `votes: 0`).
    pub delayed_secs: Option<i64>,
    /// Gives each member a temporary `--dbpath` instead of keeping data in memory.
    pub persistent: bool,
    /// In-process servers or child processes.
    pub mode: MemberMode,
    /// How long to wait for the set to come up.
    pub startup_timeout: Duration,
    /// `--keyFile` for every member (internal authentication, implies `--auth`); the harness's own commands
    /// then authenticate as `__system` with the same key.
    pub key_file: Option<PathBuf>,
}

impl Default for ReplSetOptions {
    fn default() -> Self {
        Self {
            set_name: "rs0".to_string(),
            members: 3,
            hidden: false,
            delayed_secs: None,
            persistent: false,
            mode: MemberMode::InProcess,
            startup_timeout: Duration::from_secs(20),
            key_file: None,
        }
    }
}

impl ReplSetOptions {
    /// Options for `members` in-process members.
    pub fn in_process(members: usize) -> Self {
        Self {
            members,
            ..Self::default()
        }
    }

    /// Options for `members` child processes of `binary` (each with a temporary dbpath).
    pub fn processes(members: usize, binary: impl Into<PathBuf>) -> Self {
        Self {
            members,
            persistent: true,
            mode: MemberMode::Process(binary.into()),
            ..Self::default()
        }
    }
}

/// Finds the `tidemark-server` binary for [`MemberMode::Process`] from another crate's tests: the
/// `TIDEMARK_SERVER_BIN` environment variable, else `tidemark-server` next to the running test executable's
/// directory (`target/<profile>/deps/..`), where `cargo build -p tidemark-server` puts it.
pub fn server_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("TIDEMARK_SERVER_BIN").map(PathBuf::from)
        && p.is_file()
    {
        return Some(p);
    }
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    [dir.join("tidemark-server"), dir.parent()?.join("tidemark-server")]
        .into_iter()
        .find(|p| p.is_file())
}

/// Errors of the harness.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// Binding, spawning or file system failure.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Cause.
        source: std::io::Error,
    },
    /// A condition was not reached in time.
    #[error("timed out after {timeout:?} waiting for {what}")]
    Timeout {
        /// The condition.
        what: String,
        /// The limit.
        timeout: Duration,
    },
    /// A command failed.
    #[error("{0}")]
    Command(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> HarnessError {
    let what = what.into();
    move |source| HarnessError::Io { what, source }
}

/// A running in-process member.
#[derive(Debug)]
struct InProcess {
    state: Arc<ServerState>,
    storage: Option<Arc<Storage>>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

/// One member of the set.
#[derive(Debug)]
pub struct Member {
    /// `127.0.0.1:port`.
    pub host: String,
    /// TCP port (kept across restarts).
    pub port: u16,
    /// Data directory, when persistent.
    pub dbpath: Option<PathBuf>,
    in_process: Option<InProcess>,
    child: Option<Child>,
}

impl Member {
    /// The shared state of an in-process member that is running.
    pub fn state(&self) -> Option<&Arc<ServerState>> {
        self.in_process.as_ref().map(|p| &p.state)
    }

    /// Whether the member is running.
    pub fn is_running(&self) -> bool {
        self.in_process.is_some() || self.child.is_some()
    }

    /// `mongodb://host/?directConnection=true`.
    pub fn direct_uri(&self) -> String {
        format!("mongodb://{}/?directConnection=true", self.host)
    }
}

/// A running replica set; torn down on drop.
#[derive(Debug)]
pub struct ReplSet {
    /// Set name.
    pub set_name: String,
    /// Members, in configuration order (`_id` = index).
    pub members: Vec<Member>,
    options: ReplSetOptions,
    key: Option<Arc<crate::keyfile::InternalKey>>,
    _dir: Option<tempfile::TempDir>,
}

/// `n` distinct free loopback ports: the probing listeners stay open until every port is chosen, so the
/// system cannot hand the same port out twice for one set.
fn free_ports(n: usize) -> Result<Vec<u16>, HarnessError> {
    let listeners = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").map_err(io("bind 127.0.0.1:0")))
        .collect::<Result<Vec<_>, _>>()?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr().map_err(io("local address"))?.port()))
        .collect()
}

impl ReplSet {
    /// Starts the members, initiates the set from member 0 (which becomes primary) and waits until every
    /// member is healthy and in state PRIMARY or SECONDARY.
    pub async fn start(options: ReplSetOptions) -> Result<ReplSet, HarnessError> {
        let n = options.members.max(1);
        let dir = if options.persistent || matches!(options.mode, MemberMode::Process(_)) {
            Some(tempfile::tempdir().map_err(io("create a temporary directory"))?)
        } else {
            None
        };
        let mut members = Vec::with_capacity(n);
        for (i, port) in free_ports(n)?.into_iter().enumerate() {
            let dbpath = match &dir {
                Some(d) => {
                    let p = d.path().join(format!("member{i}"));
                    std::fs::create_dir_all(&p).map_err(io(format!("create {}", p.display())))?;
                    Some(p)
                }
                None => None,
            };
            members.push(Member {
                host: format!("127.0.0.1:{port}"),
                port,
                dbpath,
                in_process: None,
                child: None,
            });
        }
        let key = match &options.key_file {
            Some(p) => Some(Arc::new(
                crate::keyfile::InternalKey::load(p).map_err(|e| HarnessError::Command(e.to_string()))?,
            )),
            None => None,
        };
        let mut set = ReplSet {
            set_name: options.set_name.clone(),
            members,
            options,
            key,
            _dir: dir,
        };
        for i in 0..n {
            set.launch(i).await?;
        }
        for i in 0..n {
            set.wait_until_listening(i, set.options.startup_timeout).await?;
        }
        let config = set.config_document();
        set.command(0, "admin", doc! { "replSetInitiate": config }).await?;
        set.wait_for_healthy(set.options.startup_timeout).await?;
        Ok(set)
    }

    /// The configuration the set is initiated with.
    pub fn config_document(&self) -> Document {
        let n = self.members.len();
        let members: Vec<Bson> = self
            .members
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let mut d = doc! { "_id": i32::try_from(i).unwrap_or(i32::MAX), "host": m.host.clone() };
                if let Some(delay) = self.options.delayed_secs
                    && n >= 2
                    && i == n - 1
                {
                    d.insert("priority", 0);
                    d.insert("hidden", true);
                    d.insert("votes", 0);
                    d.insert("secondaryDelaySecs", delay);
                } else if self.options.hidden && n >= 3 && i == n - 1 - usize::from(self.options.delayed_secs.is_some())
                {
                    d.insert("priority", 0);
                    d.insert("hidden", true);
                }
                Bson::Document(d)
            })
            .collect();
        doc! { "_id": self.set_name.clone(), "version": 1, "members": members }
    }

    /// `mongodb://<visible hosts>/?replicaSet=<name>` (hidden members are left out, as drivers never use them).
    pub fn uri(&self) -> String {
        let cfg = self.config_document();
        let hosts: Vec<String> = cfg
            .get_array("members")
            .map(|a| {
                a.iter()
                    .filter_map(|m| m.as_document())
                    .filter(|m| !m.get_bool("hidden").unwrap_or(false))
                    .filter_map(|m| m.get_str("host").ok().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        format!("mongodb://{}/?replicaSet={}", hosts.join(","), self.set_name)
    }

    /// Hosts of every member, in configuration order.
    pub fn hosts(&self) -> Vec<String> {
        self.members.iter().map(|m| m.host.clone()).collect()
    }

    async fn launch(&mut self, i: usize) -> Result<(), HarnessError> {
        let set_name = self.set_name.clone();
        let mode = self.options.mode.clone();
        let m = &mut self.members[i];
        match mode {
            MemberMode::Process(bin) => {
                let mut cmd = Command::new(&bin);
                cmd.arg("--port")
                    .arg(m.port.to_string())
                    .arg("--bind_ip")
                    .arg("127.0.0.1")
                    .arg("--replSet")
                    .arg(&set_name);
                if let Some(k) = &self.options.key_file {
                    cmd.arg("--keyFile").arg(k);
                }
                if let Some(p) = &m.dbpath {
                    // The log sits next to the data, for looking into a failed test before the drop cleans up.
                    cmd.arg("--dbpath").arg(p).arg("--logpath").arg(p.with_extension("log"));
                }
                cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
                let child = cmd.spawn().map_err(io(format!("start {}", bin.display())))?;
                m.child = Some(child);
            }
            MemberMode::InProcess => {
                let addr = SocketAddr::from(([127, 0, 0, 1], m.port));
                let listener = bind_retry(addr).await?;
                let config = ServerConfig {
                    port: m.port,
                    bind_ip: addr.ip(),
                    repl_set: Some(set_name),
                    dbpath: m.dbpath.clone(),
                    key_file: self.options.key_file.clone(),
                    ..ServerConfig::ephemeral()
                };
                let engine = Arc::new(Engine::new());
                let storage = match &m.dbpath {
                    Some(p) => Some(
                        Storage::open(p, &StorageOptions::default(), &engine)
                            .map_err(|e| HarnessError::Command(format!("open dbpath {}: {e}", p.display())))?,
                    ),
                    None => None,
                };
                let mut state = ServerState::new(config, engine);
                if let Some(s) = &storage {
                    state = state.with_storage(Arc::clone(s));
                }
                let state = Arc::new(state);
                let (stop, stopped) = oneshot::channel::<()>();
                let task = tokio::spawn(crate::net::serve(listener, Arc::clone(&state), async move {
                    let _ = stopped.await;
                }));
                m.in_process = Some(InProcess {
                    state,
                    storage,
                    stop: Some(stop),
                    task: Some(task),
                });
            }
        }
        Ok(())
    }

    async fn wait_until_listening(&self, i: usize, timeout: Duration) -> Result<(), HarnessError> {
        let host = self.members[i].host.clone();
        wait_for(&format!("{host} to accept connections"), timeout, || {
            let host = host.clone();
            let key = self.key.clone();
            async move {
                match crate::keyfile::connect(&host, Duration::from_millis(200), key.as_deref()).await {
                    Ok(mut c) => c.run("admin", doc! { "ping": 1 }, Duration::from_secs(1)).await.is_ok(),
                    Err(_) => false,
                }
            }
        })
        .await
    }

    /// Runs a command on member `i` over a fresh direct connection.
    pub async fn command(&self, i: usize, db: &str, cmd: Document) -> Result<Document, HarnessError> {
        let host = &self.members[i].host;
        let mut c = crate::keyfile::connect(host, Duration::from_secs(2), self.key.as_deref())
            .await
            .map_err(|e| HarnessError::Command(e.to_string()))?;
        c.run(db, cmd, Duration::from_secs(30))
            .await
            .map_err(|e| HarnessError::Command(e.to_string()))
    }

    /// Index of the member that currently reports itself writable primary, if any.
    pub async fn primary(&self) -> Option<usize> {
        for (i, m) in self.members.iter().enumerate() {
            if !m.is_running() {
                continue;
            }
            if let Ok(h) = self.command(i, "admin", doc! { "hello": 1 }).await
                && h.get_bool("isWritablePrimary").unwrap_or(false)
            {
                return Some(i);
            }
        }
        None
    }

    /// Waits until some running member is primary and returns its index.
    pub async fn wait_for_primary(&self, timeout: Duration) -> Result<usize, HarnessError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(p) = self.primary().await {
                return Ok(p);
            }
            if Instant::now() >= deadline {
                return Err(HarnessError::Timeout {
                    what: "a primary".into(),
                    timeout,
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the primary sees every running member healthy in PRIMARY or SECONDARY state.
    pub async fn wait_for_healthy(&self, timeout: Duration) -> Result<(), HarnessError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(p) = self.primary().await
                && let Ok(status) = self.command(p, "admin", doc! { "replSetGetStatus": 1 }).await
            {
                let running: Vec<&str> = self
                    .members
                    .iter()
                    .filter(|m| m.is_running())
                    .map(|m| m.host.as_str())
                    .collect();
                let ok = status.get_array("members").is_ok_and(|ms| {
                    ms.iter().filter_map(|m| m.as_document()).all(|m| {
                        let name = m.get_str("name").unwrap_or_default();
                        let state = m.get_i32("state").unwrap_or(-1);
                        !running.contains(&name) || state == 1 || state == 2
                    })
                });
                if ok {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                return Err(HarnessError::Timeout {
                    what: "every member to be healthy".into(),
                    timeout,
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops member `i` abruptly: `SIGKILL` for a process; for an in-process member the listener and the
    /// replication tasks stop and open connections fail with ShutdownInProgress.
    pub async fn kill(&mut self, i: usize) {
        let m = &mut self.members[i];
        if let Some(mut child) = m.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(mut p) = m.in_process.take() {
            if let Some(stop) = p.stop.take() {
                let _ = stop.send(());
            }
            if let Some(task) = p.task.take() {
                let _ = task.await;
            }
            p.state.topology.stop();
            if let Some(storage) = p.storage.take() {
                let engine = Arc::clone(&p.state.engine);
                let _ = tokio::task::spawn_blocking(move || storage.shutdown(&engine)).await;
            }
        }
    }

    /// Restarts member `i` on its port and dbpath and waits until it accepts connections.
    pub async fn restart(&mut self, i: usize) -> Result<(), HarnessError> {
        if self.members[i].is_running() {
            self.kill(i).await;
        }
        self.launch(i).await?;
        self.wait_until_listening(i, self.options.startup_timeout).await
    }

    /// Runs `replSetStepUp` on member `i`.
    pub async fn step_up(&self, i: usize) -> Result<Document, HarnessError> {
        self.command(i, "admin", doc! { "replSetStepUp": 1 }).await
    }

    /// Waits until member `i` has applied the primary's (member `primary`'s) last optime.
    pub async fn wait_for_caught_up(&self, i: usize, primary: usize, timeout: Duration) -> Result<(), HarnessError> {
        let target = self.applied_optime(primary).await?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(mine) = self.applied_optime(i).await
                && mine >= target
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(HarnessError::Timeout {
                    what: format!("member {i} to catch up"),
                    timeout,
                });
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Member `i`'s last applied optime (from `hello.lastWrite.opTime`) as `(seconds, increment)`.
    pub async fn applied_optime(&self, i: usize) -> Result<(u32, u32), HarnessError> {
        let h = self.command(i, "admin", doc! { "hello": 1 }).await?;
        let ts = h
            .get_document("lastWrite")
            .and_then(|w| w.get_document("opTime"))
            .and_then(|o| o.get_timestamp("ts"))
            .map_err(|_| HarnessError::Command(format!("member {i} reports no lastWrite.opTime")))?;
        Ok((ts.time, ts.increment))
    }
}

impl Drop for ReplSet {
    fn drop(&mut self) {
        for m in &mut self.members {
            if let Some(mut child) = m.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
            if let Some(mut p) = m.in_process.take() {
                if let Some(stop) = p.stop.take() {
                    let _ = stop.send(());
                }
                p.state.topology.stop();
            }
        }
    }
}

async fn bind_retry(addr: SocketAddr) -> Result<TcpListener, HarnessError> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match TcpListener::bind(addr).await {
            Ok(l) => return Ok(l),
            Err(e) if Instant::now() >= deadline => return Err(io(format!("bind {addr}"))(e)),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<(), HarnessError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(HarnessError::Timeout {
                what: what.to_string(),
                timeout,
            });
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
