//! Entry points for the fuzz targets in `fuzz/` and for the corpus regression test
//! (`server/tests/fuzz_corpus.rs`): each feeds raw bytes through the real parsing and decision
//! path of one kind of outside input.
//!
//! | entry | input | path |
//! | --- | --- | --- |
//! | [`policy_toml`] | a policy file | [`Policy::from_toml`] (parse and validation), then an engine with it deciding |
//! | [`trace_line`] | a trace, plain or gzip | [`TraceReader`], then the write/parse round trip |
//! | [`http_body`] | route byte + JSON body | the axum router ([`crate::http::app`]) over an in-memory engine |
//! | [`grpc_message`] | method byte + protobuf | prost decode, then [`GrpcGate`]'s methods over an in-memory engine |
//! | [`agent_answer`] | an agent's answer body | [`crate::agent::parse_answer`] |
//!
//! Invariant: no entry panics on any input. Each may refuse its input (and returns why); a panic
//! inside one is a bug, including the checks each makes on what the real code answered (an HTTP
//! 500, a 400 that names no field, a gRPC `Internal`, an accepted agent answer that is not a
//! protocol object, a trace event that does not survive its round trip).
//!
//! Each HTTP or gRPC input runs against a fresh engine, so a crash reproduces from its input
//! alone. Attempt ids are random, so an outcome input names the id of an attempt checked just
//! before it as `$ID` (in the JSON text for HTTP; as the whole `id` field for gRPC).

use crate::agent::{parse_answer, AgentResponse};
use crate::audit::Audit;
use crate::config::Config;
use crate::grpc::{check_one, outcome_one, GrpcGate};
use crate::pb::gate_server::Gate;
use crate::pb::{CheckRequest, OutcomeRequest, ValidateRequest};
use crate::service::{AppState, CheckInput, Service};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use portcullis_engine::trace::{parse_line, to_json_line, TraceError, TraceReader};
use portcullis_engine::{Attempt, Engine, Options, Outcome, Policy, Timestamp, Verdict};
use prost::Message;
use std::io::{BufReader, Read};
use std::sync::Arc;
use tower::ServiceExt;

/// The placeholder an outcome input uses for the id of the attempt checked before it.
pub const ID_PLACEHOLDER: &str = "$ID";

/// The HTTP routes [`http_body`] reaches, by selector byte: `c` check, `o` outcome,
/// `v` validate, `C` check batch, `O` outcome batch (any other byte: its value modulo 5).
pub const HTTP_ROUTES: [(u8, &str); 5] = [
    (b'c', "/v1/check"),
    (b'o', "/v1/outcome"),
    (b'v', "/v1/validate"),
    (b'C', "/v1/check/batch"),
    (b'O', "/v1/outcome/batch"),
];

/// The gRPC calls [`grpc_message`] reaches, by selector byte: `c` Check, `o` Outcome,
/// `v` Validate, `C` one CheckStream item, `O` one OutcomeStream item.
pub const GRPC_CALLS: [u8; 5] = [b'c', b'o', b'v', b'C', b'O'];

fn select(byte: u8, names: impl Iterator<Item = u8>) -> usize {
    let names: Vec<u8> = names.collect();
    names
        .iter()
        .position(|&n| n == byte)
        .unwrap_or(byte as usize % names.len())
}

thread_local! {
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime builds");
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    RUNTIME.with(|rt| rt.block_on(f))
}

/// A fresh service over an in-memory engine with the default policy and configuration.
fn fresh_state() -> AppState {
    let engine = Engine::new(Policy::default(), Options::in_memory([7; 32]))
        .expect("an in-memory engine with the default policy builds");
    AppState(Arc::new(Service::from_parts(
        Arc::new(engine),
        None,
        None,
        Audit::off(),
        Config::default(),
        None,
    )))
}

/// A policy file: parsed and validated; when accepted, an engine built with it decides a short
/// run of failures for each tenant, so odd but valid settings also reach the decision code.
pub fn policy_toml(data: &[u8]) -> Result<Policy, portcullis_engine::Error> {
    let text = std::str::from_utf8(data)
        .map_err(|_| portcullis_engine::Error::Policy(vec!["the policy is not UTF-8".into()]))?;
    let policy = Policy::from_toml(text)?;
    let _ = policy.describe();
    let mut tenants: Vec<String> = policy.tenants.keys().take(4).cloned().collect();
    tenants.push("default".into());
    let engine = Engine::new(policy.clone(), Options::in_memory([9; 32]))?;
    let mut now = 1_800_000_000_000_i64;
    for tenant in &tenants {
        for i in 0..12u8 {
            let attempt = Attempt {
                tenant,
                user: "alice@example.com",
                ip: std::net::IpAddr::from([192, 0, 2, 1 + i % 3]),
                fingerprint: Some(&[i % 4]),
            };
            now += 1_500;
            let Ok(d) = engine.check(&attempt, Timestamp::from_millis(now)) else {
                continue;
            };
            if let (Verdict::Forward, Some(id)) = (d.verdict, d.attempt_id) {
                let result = if i == 11 {
                    Outcome::Success
                } else {
                    Outcome::WrongPassword
                };
                let _ = engine.outcome(id, result, None, Timestamp::from_millis(now));
            }
        }
    }
    engine.maintain(Timestamp::from_millis(now + 86_400_000));
    Ok(policy)
}

/// A trace: plain JSON lines, or gzip (by its magic bytes, as a `.gz` file would be read).
/// Returns how many events were read before the end or the first error; every event read must
/// come back equal from [`to_json_line`] and [`parse_line`].
pub fn trace_line(data: &[u8]) -> Result<usize, TraceError> {
    let reader: Box<dyn Read + Send> = if data.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(std::io::Cursor::new(
            data.to_vec(),
        )))
    } else {
        Box::new(std::io::Cursor::new(data.to_vec()))
    };
    // A gzip bomb must not make the fuzzer run out of memory: read at most 16 MiB decoded.
    let reader = BufReader::new(reader.take(16 << 20));
    let mut n = 0;
    let mut last_ts = i64::MIN;
    for ev in TraceReader::from_reader(reader) {
        let ev = ev?;
        assert!(
            ev.ts_ms >= last_ts,
            "the reader yielded events out of order"
        );
        last_ts = ev.ts_ms;
        let line = to_json_line(&ev);
        let back = parse_line(&line, 1)
            .unwrap_or_else(|e| panic!("a written event does not parse back: {e}"))
            .expect("a written event is not blank");
        assert_eq!(back, ev, "an event changed in its round trip");
        n += 1;
    }
    Ok(n)
}

async fn post(app: &axum::Router, uri: &str, body: Vec<u8>) -> (StatusCode, serde_json::Value) {
    let req = Request::builder()
        .method("POST")
        .uri(uri)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .expect("a request with a static URI builds");
    let resp = app
        .clone()
        .oneshot(req)
        .await
        .unwrap_or_else(|e| match e {});
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .expect("an in-memory response body reads");
    let value = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    (status, value)
}

/// One HTTP request: the first byte picks the route ([`HTTP_ROUTES`]), the rest is the body as
/// sent, parsed by the real router over a fresh in-memory engine. In an outcome body, `$ID`
/// stands for the id of an attempt checked just before. Returns the status and JSON answer.
pub fn http_body(data: &[u8]) -> (u16, serde_json::Value) {
    let Some((&sel, body)) = data.split_first() else {
        return (0, serde_json::Value::Null);
    };
    let (_, uri) = HTTP_ROUTES[select(sel, HTTP_ROUTES.iter().map(|r| r.0))];
    let state = fresh_state();
    let app = crate::http::app(state);
    block_on(async {
        let mut body = body.to_vec();
        if uri.starts_with("/v1/outcome") {
            let (_, d) = post(
                &app,
                "/v1/check",
                br#"{"tenant":"default","user":"fuzz@example.com","ip":"192.0.2.9"}"#.to_vec(),
            )
            .await;
            let id = d["id"].as_str().unwrap_or("0").as_bytes().to_vec();
            body = replace_all(&body, ID_PLACEHOLDER.as_bytes(), &id);
        }
        let (status, answer) = post(&app, uri, body).await;
        check_http_answer(status, &answer);
        if uri.ends_with("/batch") && status == StatusCode::OK {
            for item in answer.as_array().into_iter().flatten() {
                if let Some(s) = item.get("status").and_then(|s| s.as_u64()) {
                    let s = StatusCode::from_u16(s as u16).expect("an item status is valid");
                    check_http_answer(s, item);
                }
            }
        }
        (status.as_u16(), answer)
    })
}

fn check_http_answer(status: StatusCode, answer: &serde_json::Value) {
    assert!(
        status != StatusCode::INTERNAL_SERVER_ERROR,
        "the service answered 500: {answer}"
    );
    if status == StatusCode::BAD_REQUEST {
        let field = answer["field"].as_str().unwrap_or_default();
        assert!(!field.is_empty(), "a 400 names no field: {answer}");
    }
}

fn replace_all(haystack: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len());
    let mut i = 0;
    while i < haystack.len() {
        if haystack[i..].starts_with(needle) {
            out.extend_from_slice(with);
            i += needle.len();
        } else {
            out.push(haystack[i]);
            i += 1;
        }
    }
    out
}

/// One gRPC message: the first byte picks the call ([`GRPC_CALLS`]), the rest is the message
/// as tonic's prost codec would decode it; the decoded request then goes through the service's
/// own method (or, for a stream item, its per-item function) over a fresh in-memory engine. An
/// outcome whose `id` is `$ID` names the attempt checked just before. Returns the call's status
/// on refusal.
// The error is tonic's `Status`, as the service itself returns it.
#[allow(clippy::result_large_err)]
pub fn grpc_message(data: &[u8]) -> Result<(), tonic::Status> {
    let Some((&sel, msg)) = data.split_first() else {
        return Ok(());
    };
    let call = GRPC_CALLS[select(sel, GRPC_CALLS.iter().copied())];
    let state = fresh_state();
    let limit = state.config.max_body_bytes;
    let gate = GrpcGate::new(state.clone());
    // A message prost refuses never reaches the service (tonic answers it itself).
    let refused = |e: prost::DecodeError| tonic::Status::invalid_argument(e.to_string());
    let result = block_on(async {
        let pending_id = || async {
            let input = CheckInput {
                tenant: "default".into(),
                user: "fuzz@example.com".into(),
                ip: "192.0.2.9".into(),
                pw: None,
                app: None,
            };
            state
                .check(&input)
                .await
                .ok()
                .and_then(|o| o.id)
                .unwrap_or_default()
        };
        match call {
            b'c' => {
                let r = CheckRequest::decode(msg).map_err(refused)?;
                gate.check(tonic::Request::new(r)).await.map(drop)
            }
            b'o' | b'O' => {
                let mut r = OutcomeRequest::decode(msg).map_err(refused)?;
                if r.id == ID_PLACEHOLDER {
                    r.id = pending_id().await;
                }
                if call == b'o' {
                    gate.outcome(tonic::Request::new(r)).await.map(drop)
                } else {
                    outcome_one(&state, limit, r)
                        .await
                        .map(drop)
                        .map_err(tonic::Status::from)
                }
            }
            b'v' => {
                let r = ValidateRequest::decode(msg).map_err(refused)?;
                gate.validate(tonic::Request::new(r)).await.map(drop)
            }
            _ => {
                let r = CheckRequest::decode(msg).map_err(refused)?;
                check_one(&state, limit, r)
                    .await
                    .map(drop)
                    .map_err(tonic::Status::from)
            }
        }
    });
    match result {
        Err(s) => {
            assert!(
                !matches!(s.code(), tonic::Code::Internal | tonic::Code::Unknown),
                "the service failed: {s:?}"
            );
            Err(s)
        }
        Ok(()) => Ok(()),
    }
}

/// An agent's answer body, through [`parse_answer`]. An accepted answer must be a JSON object
/// whose `result` names a known outcome.
pub fn agent_answer(data: &[u8]) -> crate::Result<AgentResponse> {
    let answer = parse_answer(data)?;
    let value: serde_json::Value =
        serde_json::from_slice(data).expect("an accepted answer is JSON");
    assert!(value.is_object(), "an accepted answer is not an object");
    assert_eq!(
        value["result"].as_str(),
        Some(answer.result.as_str()),
        "the accepted result is not the answer's"
    );
    assert!(
        answer.result.parse::<Outcome>().is_ok(),
        "an unknown result was accepted"
    );
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_outcome_reaches_the_checked_attempt() {
        let (status, body) = http_body(br#"o{"id":"$ID","result":"wrong_password"}"#);
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["recorded"], true);
    }

    #[test]
    fn grpc_outcome_reaches_the_checked_attempt() {
        let msg = OutcomeRequest {
            id: ID_PLACEHOLDER.into(),
            result: "wrong_password".into(),
            pw: None,
        };
        let mut data = vec![b'o'];
        data.extend(msg.encode_to_vec());
        grpc_message(&data).unwrap();
        data[0] = b'O';
        grpc_message(&data).unwrap();
    }

    #[test]
    fn refusals_name_their_field() {
        let (status, body) = http_body(br#"c{"tenant":"default","user":" ","ip":"192.0.2.1"}"#);
        assert_eq!((status, body["field"].as_str()), (400, Some("user")));
        let e = grpc_message(b"c\xff").unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(policy_toml(b"[defaults]\nnope = 1\n").is_err());
        assert!(trace_line(b"[1]\n").is_err());
        assert!(agent_answer(br#"["wrong_password"]"#).is_err());
    }
}
