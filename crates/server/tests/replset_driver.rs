//! Replica sets through the official Rust driver: discovery with `?replicaSet=`, writes on the primary
//! visible on secondaries, secondary reads, `w: "majority"` and `wtimeout`, stepDown/stepUp handover.

use std::time::Duration;

use bson::{Document, doc};
use mongodb::Client;
use mongodb::options::{Acknowledgment, ClientOptions, ReadPreference, SelectionCriteria, WriteConcern};
use tidemark_server::testing::replset::{ReplSet, ReplSetOptions};

async fn client(uri: &str) -> Client {
    let mut opts = ClientOptions::parse(uri).await.unwrap();
    opts.server_selection_timeout = Some(Duration::from_secs(10));
    Client::with_options(opts).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn discovery_writes_and_secondary_reads() {
    let set = ReplSet::start(ReplSetOptions::in_process(3)).await.unwrap();
    let c = client(&set.uri()).await;
    let coll = c.database("app").collection::<Document>("items");
    coll.insert_one(doc! { "_id": 1, "x": "a" }).await.unwrap();
    let sec = SelectionCriteria::ReadPreference(ReadPreference::Secondary {
        options: Default::default(),
    });
    // Secondary reads are eventually consistent: poll until the secondary has the document.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let got = coll
            .find_one(doc! { "_id": 1 })
            .selection_criteria(sec.clone())
            .await
            .unwrap();
        if let Some(got) = got {
            assert_eq!(got.get_str("x").unwrap(), "a");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "secondary never saw the write");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // readPreference=secondaryPreferred in the URI: the driver sends the reads to a secondary.
    let queries = |i: usize| {
        let st = set.members[i].state().unwrap();
        st.stats.op_query.load(std::sync::atomic::Ordering::Relaxed)
    };
    let primary = set.wait_for_primary(Duration::from_secs(5)).await.unwrap();
    let pref = client(&format!("{}&readPreference=secondaryPreferred", set.uri())).await;
    let pcoll = pref.database("app").collection::<Document>("items");
    // A fresh client falls back to the primary until its monitors have seen a secondary (the
    // server-selection spec); a read that requires a secondary waits for that first.
    pcoll
        .find_one(doc! { "_id": 1 })
        .selection_criteria(sec.clone())
        .await
        .unwrap();
    let before: Vec<i64> = (0..3).map(queries).collect();
    for _ in 0..5 {
        assert!(pcoll.find_one(doc! { "_id": 1 }).await.unwrap().is_some());
    }
    let after: Vec<i64> = (0..3).map(queries).collect();
    assert_eq!(
        after[primary], before[primary],
        "secondaryPreferred reads reached the primary"
    );
    let on_secondaries: i64 = (0..3).filter(|i| *i != primary).map(|i| after[i] - before[i]).sum();
    assert_eq!(on_secondaries, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn in_process_members_on_dbpaths_restart_and_catch_up() {
    let options = ReplSetOptions {
        persistent: true,
        ..ReplSetOptions::in_process(3)
    };
    let mut set = ReplSet::start(options).await.unwrap();
    let primary = set.wait_for_primary(Duration::from_secs(5)).await.unwrap();
    let victim = (primary + 2) % 3;
    let c = client(&set.uri()).await;
    let coll = c.database("app").collection::<Document>("p");
    coll.insert_many((0..10).map(|i| doc! { "_id": i })).await.unwrap();
    set.wait_for_caught_up(victim, primary, Duration::from_secs(10))
        .await
        .unwrap();
    set.kill(victim).await;
    coll.insert_many((10..25).map(|i| doc! { "_id": i })).await.unwrap();
    coll.update_one(doc! { "_id": 3 }, doc! { "$set": { "changed": true } })
        .await
        .unwrap();
    set.restart(victim).await.unwrap();
    set.wait_for_caught_up(victim, primary, Duration::from_secs(10))
        .await
        .unwrap();
    let r = set
        .command(
            victim,
            "app",
            doc! { "find": "p", "filter": { "changed": true }, "$readPreference": { "mode": "secondary" } },
        )
        .await
        .unwrap();
    let batch = r.get_document("cursor").unwrap().get_array("firstBatch").unwrap();
    assert_eq!(batch.len(), 1, "{r}");
    let n = set
        .command(
            victim,
            "app",
            doc! { "count": "p", "$readPreference": { "mode": "secondary" } },
        )
        .await
        .unwrap();
    assert_eq!(n.get_i32("n").unwrap(), 25, "{n}");
}

fn code_of(e: &mongodb::error::Error) -> Option<i32> {
    match e.kind.as_ref() {
        mongodb::error::ErrorKind::Command(c) => Some(c.code),
        mongodb::error::ErrorKind::Write(mongodb::error::WriteFailure::WriteConcernError(w)) => Some(w.code),
        mongodb::error::ErrorKind::Write(mongodb::error::WriteFailure::WriteError(w)) => Some(w.code),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn secondary_refuses_writes_and_unflagged_reads() {
    let set = ReplSet::start(ReplSetOptions::in_process(3)).await.unwrap();
    let primary = set.wait_for_primary(Duration::from_secs(5)).await.unwrap();
    let secondary = (primary + 1) % 3;
    // A direct connection to a secondary: the driver sends primaryPreferred, so reads work, writes do not.
    let c = client(&set.members[secondary].direct_uri()).await;
    let db = c.database("app");
    let err = db
        .collection::<Document>("t")
        .insert_one(doc! { "a": 1 })
        .await
        .unwrap_err();
    assert_eq!(code_of(&err), Some(10107), "{err}");
    let err = db
        .run_command(doc! { "find": "t" })
        .selection_criteria(SelectionCriteria::ReadPreference(ReadPreference::Primary))
        .await;
    // With an explicit primary read preference on a direct connection the driver still sends the command.
    if let Err(e) = err {
        assert_eq!(code_of(&e), Some(13435), "{e}");
    }
    // Without $readPreference the secondary refuses the read as mongod does.
    let raw = set.command(secondary, "app", doc! { "find": "t" }).await.unwrap_err();
    assert!(raw.to_string().contains("NotPrimaryNoSecondaryOk"), "{raw}");
    let hello = set.command(secondary, "admin", doc! { "hello": 1 }).await.unwrap();
    assert!(!hello.get_bool("isWritablePrimary").unwrap());
    assert!(hello.get_bool("secondary").unwrap());
    assert_eq!(hello.get_str("setName").unwrap(), "rs0");
    assert_eq!(hello.get_str("primary").unwrap(), set.members[primary].host);
    assert_eq!(hello.get_str("me").unwrap(), set.members[secondary].host);
    assert_eq!(hello.get_array("hosts").unwrap().len(), 3);
    assert!(hello.get_document("topologyVersion").is_ok());
    assert!(hello.get_document("lastWrite").unwrap().get_document("opTime").is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn majority_write_concern_waits_and_times_out_without_a_majority() {
    let mut set = ReplSet::start(ReplSetOptions::in_process(3)).await.unwrap();
    let primary = set.wait_for_primary(Duration::from_secs(5)).await.unwrap();
    let c = client(&set.uri()).await;
    let coll = c.database("app").collection::<Document>("wc");
    let majority = WriteConcern::builder()
        .w(Acknowledgment::Majority)
        .w_timeout(Duration::from_secs(10))
        .build();
    coll.insert_one(doc! { "_id": 1 })
        .write_concern(majority.clone())
        .await
        .unwrap();
    // A majority acknowledged it: at least one secondary has it right now.
    let mut found = 0;
    for i in 0..3 {
        if i == primary {
            continue;
        }
        let r = set
            .command(
                i,
                "app",
                doc! { "find": "wc", "filter": { "_id": 1 }, "$readPreference": { "mode": "secondary" } },
            )
            .await
            .unwrap();
        found += r.get_document("cursor").unwrap().get_array("firstBatch").unwrap().len();
    }
    assert!(found >= 1, "w:majority returned before any secondary applied the write");
    // w: 3 waits for every member.
    let all = WriteConcern::builder()
        .w(Acknowledgment::Nodes(3))
        .w_timeout(Duration::from_secs(10))
        .build();
    coll.insert_one(doc! { "_id": 2 }).write_concern(all).await.unwrap();
    // w: 4 cannot be satisfied by three members.
    let four = WriteConcern::builder().w(Acknowledgment::Nodes(4)).build();
    let err = coll
        .insert_one(doc! { "_id": 3 })
        .write_concern(four)
        .await
        .unwrap_err();
    assert_eq!(code_of(&err), Some(100), "{err}");
    // Without both secondaries there is no majority: the write happens, the concern times out (64).
    for i in 0..3 {
        if i != primary {
            set.kill(i).await;
        }
    }
    let short = WriteConcern::builder()
        .w(Acknowledgment::Majority)
        .w_timeout(Duration::from_millis(300))
        .build();
    let err = coll
        .insert_one(doc! { "_id": 4 })
        .write_concern(short)
        .await
        .unwrap_err();
    assert_eq!(code_of(&err), Some(64), "{err}");
    // The reply as mongod shapes it: ok 1, the write counted, the concern error with its provenance.
    let raw = set
        .command(
            primary,
            "app",
            doc! { "insert": "wc", "documents": [{ "_id": 5 }], "writeConcern": { "w": "majority", "wtimeout": 100 } },
        )
        .await
        .unwrap();
    assert_eq!(raw.get_i32("n").unwrap(), 1, "{raw}");
    let wce = raw.get_document("writeConcernError").unwrap();
    assert_eq!(wce.get_i32("code").unwrap(), 64);
    assert_eq!(wce.get_str("codeName").unwrap(), "WriteConcernFailed");
    assert_eq!(wce.get_str("errmsg").unwrap(), "waiting for replication timed out");
    let info = wce.get_document("errInfo").unwrap();
    assert!(info.get_bool("wtimeout").unwrap());
    assert_eq!(
        info.get_document("writeConcern")
            .unwrap()
            .get_str("provenance")
            .unwrap(),
        "clientSupplied"
    );
    set.command(
        primary,
        "app",
        doc! { "delete": "wc", "deletes": [{ "q": { "_id": 5 }, "limit": 1 }], "writeConcern": { "w": 1 } },
    )
    .await
    .unwrap();
    let n = set.command(primary, "app", doc! { "count": "wc" }).await.unwrap();
    // Like mongod, the writes happened even though their write concerns failed (ids 1 to 4).
    assert_eq!(n.get_i32("n").unwrap(), 4, "{n}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn step_down_hands_over_and_the_client_keeps_working() {
    let set = ReplSet::start(ReplSetOptions::in_process(3)).await.unwrap();
    let old = set.wait_for_primary(Duration::from_secs(5)).await.unwrap();
    let c = client(&set.uri()).await;
    let coll = c.database("app").collection::<Document>("h");
    coll.insert_one(doc! { "_id": 1 }).await.unwrap();
    set.command(
        old,
        "admin",
        doc! { "replSetStepDown": 30, "secondaryCatchUpPeriodSecs": 10 },
    )
    .await
    .unwrap();
    let new = set.wait_for_primary(Duration::from_secs(10)).await.unwrap();
    assert_ne!(new, old);
    let status = set.command(new, "admin", doc! { "replSetGetStatus": 1 }).await.unwrap();
    assert_eq!(status.get_i32("myState").unwrap(), 1);
    assert!(status.get_i64("term").unwrap() >= 2);
    // The old primary learns of the new one and refuses writes.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let h = set.command(old, "admin", doc! { "hello": 1 }).await.unwrap();
        if h.get_str("primary").ok() == Some(set.members[new].host.as_str()) {
            assert!(!h.get_bool("isWritablePrimary").unwrap());
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "old primary never learned the new one: {h}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The same client retries its writes on the new primary; the earlier write survived the handover.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        match coll.insert_one(doc! { "_id": 2 }).await {
            Ok(_) => break,
            Err(e) => assert!(std::time::Instant::now() < deadline, "no write after handover: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(coll.count_documents(doc! {}).await.unwrap(), 2);
    // replSetStepUp back on the old member (after its stepdown period it could; here it is refused).
    let refused = set.step_up(old).await;
    assert!(refused.is_err(), "a member inside its stepdown period must not step up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn initiate_and_reconfig_follow_the_manual() {
    // A standalone server has no replication.
    let standalone = tidemark_server::testing::start_test_server(tidemark_server::ServerConfig::ephemeral()).await;
    let c = client(&standalone.uri()).await;
    let err = c
        .database("admin")
        .run_command(doc! { "replSetGetStatus": 1 })
        .await
        .unwrap_err();
    assert_eq!(code_of(&err), Some(76), "{err}");
    let hello = c.database("admin").run_command(doc! { "hello": 1 }).await.unwrap();
    assert!(hello.get("setName").is_none() && hello.get_bool("isWritablePrimary").unwrap());

    let set = ReplSet::start(ReplSetOptions::in_process(3)).await.unwrap();
    let primary = set.wait_for_primary(Duration::from_secs(5)).await.unwrap();
    let again = set
        .command(primary, "admin", doc! { "replSetInitiate": set.config_document() })
        .await
        .unwrap_err();
    assert!(again.to_string().contains("AlreadyInitialized"), "{again}");
    let cfg = set
        .command(primary, "admin", doc! { "replSetGetConfig": 1 })
        .await
        .unwrap();
    let mut cfg = cfg.get_document("config").unwrap().clone();
    assert_eq!(cfg.get_i32("version").unwrap(), 1);
    // Same version: refused with NewReplicaSetConfigurationIncompatible (103).
    let same = set
        .command(primary, "admin", doc! { "replSetReconfig": cfg.clone() })
        .await
        .unwrap_err();
    assert!(
        same.to_string().contains("NewReplicaSetConfigurationIncompatible"),
        "{same}"
    );
    // Hide the last non-primary member.
    let hide = (0..3).rev().find(|i| *i != primary).unwrap();
    let members = cfg.get_array_mut("members").unwrap();
    let m = members[hide].as_document_mut().unwrap();
    m.insert("priority", 0);
    m.insert("hidden", true);
    cfg.insert("version", 2);
    set.command(primary, "admin", doc! { "replSetReconfig": cfg })
        .await
        .unwrap();
    // Every member adopts version 2 through heartbeats; the hidden one reports itself hidden.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    for i in 0..3 {
        loop {
            let h = set.command(i, "admin", doc! { "hello": 1 }).await.unwrap();
            if h.get_i32("setVersion").unwrap() == 2 {
                assert_eq!(h.get_array("hosts").unwrap().len(), 2, "{h}");
                assert_eq!(h.get_bool("hidden").unwrap_or(false), i == hide, "{h}");
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "member {i} never adopted version 2"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // The driver no longer sees the hidden member.
    let c = client(&set.uri()).await;
    c.database("app")
        .collection::<Document>("x")
        .insert_one(doc! { "a": 1 })
        .await
        .unwrap();
    let status = set
        .command(primary, "admin", doc! { "replSetGetStatus": 1 })
        .await
        .unwrap();
    assert_eq!(status.get_i32("writableVotingMembersCount").unwrap(), 2, "{status}");
}

/// Other crates' tests often use the default single-threaded test runtime: the harness and a stepdown
/// handover must work there too.
#[tokio::test]
async fn harness_works_on_a_current_thread_runtime() {
    let set = ReplSet::start(ReplSetOptions::in_process(3)).await.unwrap();
    let c = client(&set.uri()).await;
    let coll = c.database("app").collection::<Document>("ct");
    coll.insert_one(doc! { "_id": 1 }).await.unwrap();
    let old = set.wait_for_primary(Duration::from_secs(5)).await.unwrap();
    set.command(old, "admin", doc! { "replSetStepDown": 30 }).await.unwrap();
    let new = set.wait_for_primary(Duration::from_secs(10)).await.unwrap();
    assert_ne!(old, new);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while let Err(e) = coll.insert_one(doc! { "_id": 2 }).await {
        assert!(std::time::Instant::now() < deadline, "no write after handover: {e}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(coll.count_documents(doc! {}).await.unwrap(), 2);
}
