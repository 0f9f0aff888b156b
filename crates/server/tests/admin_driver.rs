//! Server-information and statistics commands through the official Rust driver: the fields MongoDB
//! documents for `buildInfo`, `hello`, `serverStatus`, `dbStats` and `collStats`.

use mongodb::bson::{Bson, Document, doc};
use mongodb::options::ClientOptions;
use tidemark_server::ServerConfig;
use tidemark_server::testing::start_test_server;

#[tokio::test]
async fn server_information_commands() {
    let server = start_test_server(ServerConfig::ephemeral()).await;
    let mut opts = ClientOptions::parse(server.uri()).await.unwrap();
    opts.server_selection_timeout = Some(std::time::Duration::from_secs(5));
    let client = mongodb::Client::with_options(opts).unwrap();
    let admin = client.database("admin");

    let bi = admin.run_command(doc! { "buildInfo": 1 }).await.unwrap();
    let version = bi.get_str("version").unwrap();
    assert!(version.starts_with("7.0."), "{version}");
    let va: Vec<i32> = bi
        .get_array("versionArray")
        .unwrap()
        .iter()
        .filter_map(Bson::as_i32)
        .collect();
    assert_eq!(va.len(), 4);
    assert_eq!(&va[..2], &[7, 0]);
    assert_eq!(format!("{}.{}.{}", va[0], va[1], va[2]), version);
    // Command names are case-sensitive except for the documented lower-case aliases.
    admin.run_command(doc! { "buildinfo": 1 }).await.unwrap();
    let im = admin.run_command(doc! { "ismaster": 1 }).await.unwrap();
    assert!(im.get_bool("ismaster").unwrap());
    assert!(admin.run_command(doc! { "BuildInfo": 1 }).await.is_err());

    let hello = admin.run_command(doc! { "hello": 1, "helloOk": true }).await.unwrap();
    assert!(hello.get_bool("helloOk").unwrap());
    assert!(hello.get_bool("isWritablePrimary").unwrap());
    assert!(hello.get_i64("connectionId").unwrap() > 0);

    let ss = admin.run_command(doc! { "serverStatus": 1 }).await.unwrap();
    assert_eq!(ss.get_str("process").unwrap(), "mongod");
    assert_eq!(ss.get_str("version").unwrap(), version);
    assert!(ss.get_document("connections").unwrap().get_i32("current").unwrap() >= 1);
    assert!(ss.get_document("opcounters").is_ok());

    let db = client.database("stats");
    let coll = db.collection::<Document>("c");
    coll.insert_many(vec![doc! { "_id": 1, "a": "x" }, doc! { "_id": 2, "a": "yy" }])
        .await
        .unwrap();
    db.run_command(doc! { "create": "v", "viewOn": "c" }).await.unwrap();
    let expected_size: i64 = [doc! { "_id": 1, "a": "x" }, doc! { "_id": 2, "a": "yy" }]
        .iter()
        .map(|d| i64::try_from(mongodb::bson::to_vec(d).unwrap().len()).unwrap())
        .sum();
    let cs = db.run_command(doc! { "collStats": "c" }).await.unwrap();
    assert_eq!(cs.get_str("ns").unwrap(), "stats.c");
    assert_eq!(cs.get_i64("count").unwrap(), 2);
    assert_eq!(cs.get_i64("size").unwrap(), expected_size);
    assert_eq!(cs.get_i64("nindexes").unwrap(), 1);
    assert!(cs.get_document("indexSizes").unwrap().contains_key("_id_"));
    let ds = db.run_command(doc! { "dbStats": 1 }).await.unwrap();
    assert_eq!(ds.get_str("db").unwrap(), "stats");
    assert_eq!(ds.get_i64("collections").unwrap(), 1);
    assert_eq!(ds.get_i64("views").unwrap(), 1);
    assert_eq!(ds.get_i64("objects").unwrap(), 2);
    assert_eq!(ds.get_f64("dataSize").unwrap(), expected_size as f64);

    let sess = admin.run_command(doc! { "startSession": 1 }).await.unwrap();
    let id = sess.get_document("id").unwrap().get("id").cloned().unwrap();
    admin
        .run_command(doc! { "endSessions": [ { "id": id } ] })
        .await
        .unwrap();
    let p = admin.run_command(doc! { "getParameter": "*" }).await.unwrap();
    assert_eq!(
        p.get_document("featureCompatibilityVersion")
            .unwrap()
            .get_str("version")
            .unwrap(),
        "7.0"
    );
}
