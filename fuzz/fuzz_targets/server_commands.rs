#![no_main]
use std::sync::Arc;

use bson::{Bson, RawDocumentBuf};
use libfuzzer_sys::fuzz_target;
use tidemark_server::commands::{ConnectionState, Ctx, Request, ServerState, dispatch};
use tidemark_server::config::ServerConfig;
use tidemark_server::engine::Engine;

/// Commands that stop the process, block writes (fsync lock), wait on the clock or reach other
/// servers.
const SKIPPED: &[&str] = &[
    "shutdown",
    "sleep",
    "fsync",
    "replSetStepDown",
    "replSetStepUp",
    "replSetInitiate",
    "replSetReconfig",
];

fuzz_target!(|data: &[u8]| {
    let state = ServerState::new(ServerConfig::default(), Arc::new(Engine::new()));
    let mut conn = ConnectionState::default();
    for line in data.split(|&b| b == b'\n') {
        let Ok(value) = serde_json::from_slice::<serde_json::Value>(line) else {
            continue;
        };
        let Ok(Bson::Document(mut body)) = Bson::try_from(value) else {
            continue;
        };
        let Some(name) = body.keys().next().cloned() else {
            continue;
        };
        if SKIPPED.iter().any(|s| s.eq_ignore_ascii_case(&name)) {
            continue;
        }
        if !body.contains_key("$db") {
            body.insert("$db", "test");
        }
        let Ok(raw) = RawDocumentBuf::from_document(&body) else {
            continue;
        };
        let Ok(request) = Request::from_raw(None, raw, Vec::new()) else {
            continue;
        };
        let mut ctx = Ctx {
            server: &state,
            conn: &mut conn,
        };
        let _ = dispatch(&mut ctx, &request);
    }
});
