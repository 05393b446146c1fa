//! Batch calls (`POST /v1/check/batch`, `POST /v1/outcome/batch`) and the gRPC streams
//! (`CheckStream`, `OutcomeStream`) against the real binary: answers in order, a bad item answered
//! with its own error while the others are decided.

mod common;

use common::*;
use portcullis_server::pb::gate_client::GateClient;
use portcullis_server::pb::{CheckRequest, OutcomeRequest};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_batches_answer_each_item_in_order_and_a_bad_item_alone() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("data"), &default_policy(), &[]);
    let c = client();
    let (status, answers) = post(
        &c,
        &s.url("/v1/check/batch"),
        &json!([
            {"tenant": "acme", "user": "dave", "ip": "198.51.100.7", "pw": "own"},
            {"tenant": "acme", "ip": "198.51.100.7"},
            {"tenant": "acme", "user": "erin", "ip": "not-an-address"},
            "not an object",
            {"tenant": "acme", "user": "frank", "ip": "203.0.113.5", "pw": "guess"},
        ]),
    )
    .await;
    assert_eq!(status, 200, "{answers}");
    let a = answers.as_array().expect("an array");
    assert_eq!(a.len(), 5, "one answer per item: {answers}");
    assert_eq!(a[0]["decision"], "forward", "{answers}");
    assert_eq!(a[1]["status"], 400);
    assert_eq!(a[1]["error"], "invalid_request");
    assert_eq!(a[1]["field"], "user");
    assert_eq!(a[2]["status"], 400);
    assert_eq!(a[2]["field"], "ip");
    assert_eq!(a[3]["status"], 400);
    assert_eq!(a[4]["decision"], "forward", "{answers}");
    let (id0, id4) = (a[0]["id"].clone(), a[4]["id"].clone());

    let (status, answers) = post(
        &c,
        &s.url("/v1/outcome/batch"),
        &json!([
            {"id": id0, "result": "success"},
            {"id": "12345", "result": "success"},
            {"id": id4, "result": "no_such_result"},
            {"id": id4, "result": "wrong_password"},
            {"id": id0, "result": "success"},
        ]),
    )
    .await;
    assert_eq!(status, 200, "{answers}");
    let a = answers.as_array().expect("an array");
    assert_eq!(a.len(), 5, "{answers}");
    assert_eq!(a[0]["recorded"], true, "{answers}");
    assert_eq!(a[1]["status"], 409, "an unknown id: {answers}");
    assert_eq!(a[1]["error"], "unknown_attempt");
    assert_eq!(a[2]["status"], 400);
    assert_eq!(a[2]["field"], "result");
    assert_eq!(
        a[3]["recorded"], true,
        "the bad item before it changed nothing: {answers}"
    );
    assert_eq!(a[4]["status"], 409, "reported twice: {answers}");

    // A body that is not an array is refused whole.
    let (status, e) = post(&c, &s.url("/v1/check/batch"), &json!({"tenant": "acme"})).await;
    assert_eq!(status, 400);
    assert_eq!(e["field"], "body");
    let (status, answers) = post(&c, &s.url("/v1/check/batch"), &json!([])).await;
    assert_eq!((status, answers), (200, json!([])));
    s.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_streams_answer_each_request_in_order_and_a_bad_one_alone() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("data"), &default_policy(), &[]);
    let mut g = GateClient::connect(s.grpc.clone()).await.unwrap();
    let req = |user: &str, ip: &str| CheckRequest {
        tenant: "acme".into(),
        user: user.into(),
        ip: ip.into(),
        pw: Some(b"pw".to_vec()),
        app: None,
    };
    let reqs = vec![
        req("gina", "198.51.100.8"),
        req("", "198.51.100.8"),
        req("hank", "bad address"),
        req("ivan", "198.51.100.9"),
    ];
    let mut answers = g
        .check_stream(tokio_stream::iter(reqs))
        .await
        .unwrap()
        .into_inner();
    let mut got = Vec::new();
    while let Some(a) = answers.message().await.unwrap() {
        got.push(a);
    }
    assert_eq!(got.len(), 4, "{got:?}");
    let d0 = got[0].decision.clone().expect("decided");
    assert_eq!(d0.decision, "forward");
    let e1 = got[1].error.clone().expect("refused");
    assert_eq!(e1.code, tonic::Code::InvalidArgument as i32);
    assert_eq!(e1.field.as_deref(), Some("user"));
    let e2 = got[2].error.clone().expect("refused");
    assert_eq!(e2.field.as_deref(), Some("ip"));
    let d3 = got[3].decision.clone().expect("decided after the bad ones");
    assert_eq!(d3.decision, "forward");

    let out = |id: &str, result: &str| OutcomeRequest {
        id: id.into(),
        result: result.into(),
        pw: None,
    };
    let reqs = vec![
        out(&d0.id, "success"),
        out(&d0.id, "success"),
        out("99", "success"),
        out(&d3.id, "nonsense"),
        out(&d3.id, "wrong_password"),
    ];
    let mut answers = g
        .outcome_stream(tokio_stream::iter(reqs))
        .await
        .unwrap()
        .into_inner();
    let mut got = Vec::new();
    while let Some(a) = answers.message().await.unwrap() {
        got.push(a);
    }
    assert_eq!(got.len(), 5, "{got:?}");
    assert!(got[0].recorded.is_some(), "{got:?}");
    let again = got[1].error.clone().expect("reported twice");
    assert_eq!(again.code, tonic::Code::FailedPrecondition as i32);
    assert_eq!(again.error, "unknown_attempt");
    assert!(got[2].error.is_some(), "{got:?}");
    assert_eq!(
        got[3].error.clone().unwrap().field.as_deref(),
        Some("result")
    );
    assert!(got[4].recorded.is_some(), "{got:?}");
    s.terminate();
}
