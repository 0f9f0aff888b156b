//! Replica sets of real `tidemark-server` processes: a primary killed with SIGKILL and a new one chosen with
//! `replSetStepUp` while a driver client keeps working, and a killed secondary restarted on its `--dbpath`
//! catching up from the primary's oplog.

use std::time::{Duration, Instant};

use bson::{Document, doc};
use mongodb::Client;
use mongodb::options::{Acknowledgment, ClientOptions, WriteConcern};
use tidemark_server::testing::replset::{ReplSet, ReplSetOptions};

const BIN: &str = env!("CARGO_BIN_EXE_tidemark-server");

async fn client(uri: &str) -> Client {
    let mut opts = ClientOptions::parse(uri).await.unwrap();
    opts.server_selection_timeout = Some(Duration::from_secs(10));
    Client::with_options(opts).unwrap()
}

async fn count_on(set: &ReplSet, i: usize, coll: &str) -> i64 {
    let r = set
        .command(
            i,
            "app",
            doc! { "count": coll, "$readPreference": { "mode": "secondaryPreferred" } },
        )
        .await
        .unwrap();
    r.get("n")
        .and_then(|v| v.as_i32().map(i64::from).or_else(|| v.as_i64()))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_primary_then_step_up_keeps_the_client_working() {
    let mut set = ReplSet::start(ReplSetOptions::processes(3, BIN)).await.unwrap();
    let old = set.wait_for_primary(Duration::from_secs(5)).await.unwrap();
    let c = client(&set.uri()).await;
    let coll = c.database("app").collection::<Document>("k");
    let all = WriteConcern::builder()
        .w(Acknowledgment::Nodes(3))
        .w_timeout(Duration::from_secs(10))
        .build();
    for i in 0..20 {
        coll.insert_one(doc! { "_id": i })
            .write_concern(all.clone())
            .await
            .unwrap();
    }
    set.kill(old).await;
    let next = (old + 1) % 3;
    set.step_up(next).await.unwrap();
    assert_eq!(set.wait_for_primary(Duration::from_secs(5)).await.unwrap(), next);
    // Every write acknowledged by all members survived; the same client finds the new primary.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match coll.insert_one(doc! { "_id": 100 }).await {
            Ok(_) => break,
            Err(e) => assert!(Instant::now() < deadline, "client never reached the new primary: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(coll.count_documents(doc! {}).await.unwrap(), 21);
    // The remaining secondary follows the new primary.
    let other = (old + 2) % 3;
    set.wait_for_caught_up(other, next, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(count_on(&set, other, "k").await, 21);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_secondary_restarts_on_its_dbpath_and_catches_up() {
    let mut set = ReplSet::start(ReplSetOptions::processes(3, BIN)).await.unwrap();
    let primary = set.wait_for_primary(Duration::from_secs(5)).await.unwrap();
    let victim = (primary + 1) % 3;
    let c = client(&set.uri()).await;
    let coll = c.database("app").collection::<Document>("r");
    let majority = WriteConcern::builder()
        .w(Acknowledgment::Majority)
        .w_timeout(Duration::from_secs(10))
        .build();
    for i in 0..10 {
        coll.insert_one(doc! { "_id": i })
            .write_concern(majority.clone())
            .await
            .unwrap();
    }
    set.wait_for_caught_up(victim, primary, Duration::from_secs(10))
        .await
        .unwrap();
    set.kill(victim).await;
    // Writes continue with a majority of two while the member is down.
    for i in 10..30 {
        coll.insert_one(doc! { "_id": i })
            .write_concern(majority.clone())
            .await
            .unwrap();
    }
    coll.delete_one(doc! { "_id": 0 })
        .write_concern(majority.clone())
        .await
        .unwrap();
    set.restart(victim).await.unwrap();
    // It rejoins from its stored configuration and resumes from the end of its own oplog.
    set.wait_for_caught_up(victim, primary, Duration::from_secs(15))
        .await
        .unwrap();
    assert_eq!(count_on(&set, victim, "r").await, 29);
    let status = set
        .command(victim, "admin", doc! { "replSetGetStatus": 1 })
        .await
        .unwrap();
    assert_eq!(status.get_i32("myState").unwrap(), 2, "{status}");
    assert_eq!(status.get_str("syncSourceHost").unwrap(), set.members[primary].host);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn single_member_set_restarts_as_primary_with_its_data() {
    let mut set = ReplSet::start(ReplSetOptions::processes(1, BIN)).await.unwrap();
    let c = client(&set.uri()).await;
    let coll = c.database("app").collection::<Document>("one");
    coll.insert_many((0..5).map(|i| doc! { "_id": i })).await.unwrap();
    let before = set.command(0, "admin", doc! { "replSetGetStatus": 1 }).await.unwrap();
    let term_before = before.get_i64("term").unwrap();
    set.kill(0).await;
    set.restart(0).await.unwrap();
    // Like mongod, the only voter elects itself again, in a later term.
    assert_eq!(set.wait_for_primary(Duration::from_secs(10)).await.unwrap(), 0);
    let after = set.command(0, "admin", doc! { "replSetGetStatus": 1 }).await.unwrap();
    assert!(after.get_i64("term").unwrap() > term_before, "{after}");
    let c = client(&set.uri()).await;
    let coll = c.database("app").collection::<Document>("one");
    assert_eq!(coll.count_documents(doc! {}).await.unwrap(), 5);
    coll.insert_one(doc! { "_id": 5 }).await.unwrap();
}
