//! Elections follow MongoDB's vote rules, with real `tidemark-server` processes: a member that missed
//! majority-committed writes (killed while they were acknowledged by the others) is refused by the member
//! that has them, so its `replSetStepUp` fails with mongod's CommandFailed "Election failed."; the
//! up-to-date member wins, and its oplog holds every write acknowledged with `w: "majority"`. A vote, stored
//! in `local.replset.election`, survives a restart: a member never votes twice in one term.

use std::time::Duration;

use bson::{Bson, Document, doc};
use mongodb::Client;
use mongodb::options::{Acknowledgment, ClientOptions, WriteConcern};
use tidemark_server::testing::replset::{ReplSet, ReplSetOptions};

const BIN: &str = env!("CARGO_BIN_EXE_tidemark-server");

async fn direct(set: &ReplSet, i: usize) -> Client {
    let mut opts = ClientOptions::parse(set.members[i].direct_uri()).await.unwrap();
    opts.server_selection_timeout = Some(Duration::from_secs(10));
    Client::with_options(opts).unwrap()
}

fn code_of(e: &mongodb::error::Error) -> Option<i32> {
    match e.kind.as_ref() {
        mongodb::error::ErrorKind::Command(c) => Some(c.code),
        _ => None,
    }
}

fn int(d: &Document, key: &str) -> i64 {
    match d.get(key) {
        Some(Bson::Int32(i)) => i64::from(*i),
        Some(Bson::Int64(i)) => *i,
        other => panic!("{key} is {other:?} in {d}"),
    }
}

/// `_id`s of the inserts into `app.e` recorded in member `i`'s oplog.
async fn oplog_inserts(set: &ReplSet, i: usize) -> Vec<i64> {
    let c = direct(set, i).await;
    let mut cursor = c
        .database("local")
        .collection::<Document>("oplog.rs")
        .find(doc! { "op": "i", "ns": "app.e" })
        .await
        .unwrap();
    let mut ids = Vec::new();
    while cursor.advance().await.unwrap() {
        let entry = cursor.deserialize_current().unwrap();
        ids.push(int(entry.get_document("o").unwrap(), "_id"));
    }
    ids.sort_unstable();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_missing_majority_writes_cannot_be_elected() {
    let mut set = ReplSet::start(ReplSetOptions::processes(3, BIN)).await.unwrap();
    let primary = set.wait_for_primary(Duration::from_secs(5)).await.unwrap();
    let (behind, current) = ((primary + 1) % 3, (primary + 2) % 3);
    let mut opts = ClientOptions::parse(set.uri()).await.unwrap();
    opts.server_selection_timeout = Some(Duration::from_secs(10));
    let coll = Client::with_options(opts)
        .unwrap()
        .database("app")
        .collection::<Document>("e");
    let majority = WriteConcern::builder()
        .w(Acknowledgment::Majority)
        .w_timeout(Duration::from_secs(10))
        .build();
    for i in 0..5 {
        coll.insert_one(doc! { "_id": i })
            .write_concern(majority.clone())
            .await
            .unwrap();
    }
    set.wait_for_caught_up(behind, primary, Duration::from_secs(10))
        .await
        .unwrap();
    set.kill(behind).await;
    // Acknowledged by a majority (the primary and `current`) while `behind` is down.
    for i in 5..25 {
        coll.insert_one(doc! { "_id": i })
            .write_concern(majority.clone())
            .await
            .unwrap();
    }
    set.kill(primary).await;
    set.restart(behind).await.unwrap();

    // Asked directly, the up-to-date member refuses a candidate at `behind`'s optime, with mongod's reply
    // fields and reason.
    let cfg = set
        .command(current, "admin", doc! { "replSetGetConfig": 1 })
        .await
        .unwrap();
    let cfg = cfg.get_document("config").unwrap();
    let behind_hello = set.command(behind, "admin", doc! { "hello": 1 }).await.unwrap();
    let behind_optime = behind_hello
        .get_document("lastWrite")
        .and_then(|w| w.get_document("opTime"))
        .unwrap()
        .clone();
    let status = set
        .command(current, "admin", doc! { "replSetGetStatus": 1 })
        .await
        .unwrap();
    let term = int(&status, "term");
    let vote = set
        .command(
            current,
            "admin",
            doc! {
                "replSetRequestVotes": 1, "setName": "rs0", "dryRun": true, "term": term,
                "candidateIndex": i64::try_from(behind).unwrap(), "configVersion": int(cfg, "version"),
                "configTerm": int(cfg, "term"), "lastAppliedOpTime": behind_optime,
            },
        )
        .await
        .unwrap();
    assert!(!vote.get_bool("voteGranted").unwrap(), "{vote}");
    assert_eq!(int(&vote, "term"), term, "{vote}");
    assert!(
        vote.get_str("reason")
            .unwrap()
            .starts_with("candidate's data is staler than mine"),
        "{vote}"
    );

    // So the member that is behind cannot collect a majority (2 of 3): replSetStepUp fails as on mongod,
    // with the dry run and without it.
    let behind_client = direct(&set, behind).await;
    let admin = behind_client.database("admin");
    let err = admin.run_command(doc! { "replSetStepUp": 1 }).await.unwrap_err();
    assert_eq!(code_of(&err), Some(125), "{err}");
    assert!(err.to_string().contains("Election failed."), "{err}");
    let err = admin
        .run_command(doc! { "replSetStepUp": 1, "skipDryRun": true })
        .await
        .unwrap_err();
    assert_eq!(code_of(&err), Some(125), "{err}");
    // The real attempt raised the term and stored the candidate's vote for itself, as mongod does.
    let last_vote = behind_client
        .database("local")
        .collection::<Document>("replset.election")
        .find_one(doc! {})
        .await
        .unwrap()
        .expect("a stored last vote");
    assert_eq!(int(&last_vote, "term"), term + 1, "{last_vote}");
    assert_eq!(int(&last_vote, "candidateIndex"), i64::try_from(behind).unwrap());
    assert!(set.primary().await.is_none(), "no member may be primary");

    // The up-to-date member wins (the other member votes for it), in a later term.
    set.step_up(current).await.unwrap();
    assert_eq!(set.wait_for_primary(Duration::from_secs(5)).await.unwrap(), current);
    let status = set
        .command(current, "admin", doc! { "replSetGetStatus": 1 })
        .await
        .unwrap();
    assert!(int(&status, "term") > term + 1, "{status}");
    // Its oplog holds every write acknowledged with w: "majority", and the other member catches up from it.
    assert_eq!(oplog_inserts(&set, current).await, (0..25).collect::<Vec<_>>());
    set.wait_for_caught_up(behind, current, Duration::from_secs(15))
        .await
        .unwrap();
    assert_eq!(oplog_inserts(&set, behind).await, (0..25).collect::<Vec<_>>());

    // A voter's vote survives a restart: asked again in the same term by another candidate, it refuses.
    let won = int(&status, "term");
    set.kill(behind).await;
    set.restart(behind).await.unwrap();
    let cfg = set
        .command(current, "admin", doc! { "replSetGetConfig": 1 })
        .await
        .unwrap();
    let cfg = cfg.get_document("config").unwrap();
    let vote = set
        .command(
            behind,
            "admin",
            doc! {
                "replSetRequestVotes": 1, "setName": "rs0", "dryRun": false, "term": won,
                "candidateIndex": i64::try_from(primary).unwrap(), "configVersion": int(cfg, "version"),
                "configTerm": int(cfg, "term"),
                "lastAppliedOpTime": { "ts": bson::Timestamp { time: u32::MAX, increment: 1 }, "t": won },
            },
        )
        .await
        .unwrap();
    assert!(!vote.get_bool("voteGranted").unwrap(), "{vote}");
    assert_eq!(
        vote.get_str("reason").unwrap(),
        format!("already voted for another candidate ({current}) this term ({won})"),
        "{vote}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_up_to_date_secondary_steps_up_while_the_primary_runs() {
    let set = ReplSet::start(ReplSetOptions::processes(3, BIN)).await.unwrap();
    let old = set.wait_for_primary(Duration::from_secs(5)).await.unwrap();
    let next = (old + 1) % 3;
    let c = direct(&set, old).await;
    let all = WriteConcern::builder()
        .w(Acknowledgment::Nodes(3))
        .w_timeout(Duration::from_secs(10))
        .build();
    c.database("app")
        .collection::<Document>("e")
        .insert_one(doc! { "_id": 1 })
        .write_concern(all)
        .await
        .unwrap();
    let before = int(
        &set.command(old, "admin", doc! { "replSetGetStatus": 1 }).await.unwrap(),
        "term",
    );
    set.step_up(next).await.unwrap();
    assert_eq!(set.wait_for_primary(Duration::from_secs(5)).await.unwrap(), next);
    // The old primary learned the new term from the vote request and stepped down.
    let status = set.command(old, "admin", doc! { "replSetGetStatus": 1 }).await.unwrap();
    assert_eq!(int(&status, "myState"), 2, "{status}");
    assert_eq!(int(&status, "term"), before + 1, "{status}");
    let hello = direct(&set, next)
        .await
        .database("admin")
        .run_command(doc! { "hello": 1 })
        .await
        .unwrap();
    assert!(hello.get_bool("isWritablePrimary").unwrap(), "{hello}");
}
