//! The `portcullis.v1.Gate` gRPC service: `Check`, `Outcome`, `Validate`, with the HTTP API's
//! semantics (both call [`crate::service::Service`]). Errors map through [`crate::Error`]: a bad
//! field is `InvalidArgument` naming it, an unknown attempt id `FailedPrecondition`.

use crate::pb::gate_server::{Gate, GateServer};
use crate::pb::{
    CheckRequest, CheckResponse, CheckStreamResponse, ItemError, OutcomeRequest, OutcomeResponse,
    OutcomeStreamResponse, ValidateRequest, ValidateResponse,
};
use crate::service::{AppState, CheckInput, CheckOutput};
use std::pin::Pin;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

/// A stream of answers, one per request, in order.
type Answers<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// The gRPC front end.
pub struct GrpcGate {
    state: AppState,
}

/// The tonic service for `state`. A message over the HTTP body limit is refused with
/// `InvalidArgument` naming `body`; tonic itself refuses (`OutOfRange`) only what is over four
/// times the limit, before decoding.
pub fn service(state: AppState) -> GateServer<GrpcGate> {
    let limit = state.config.max_body_bytes.saturating_mul(4);
    GateServer::new(GrpcGate::new(state))
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit)
}

impl GrpcGate {
    /// The service without tonic's server around it: the fuzz targets ([`crate::fuzzing`]) call
    /// its [`Gate`] methods directly with decoded messages.
    pub fn new(state: AppState) -> Self {
        GrpcGate { state }
    }

    fn within_limit(&self, m: &impl prost::Message) -> crate::Result<()> {
        if m.encoded_len() > self.state.config.max_body_bytes {
            return Err(crate::Error::bad("body", "is over the size limit"));
        }
        Ok(())
    }
}

fn split(o: CheckOutput) -> (String, String, Option<String>, Option<String>, Option<u64>) {
    (
        o.id.unwrap_or_default(),
        o.decision.to_string(),
        o.result.map(str::to_string),
        o.reason.map(str::to_string),
        o.retry_after_s,
    )
}

/// A refused stream item, as the unary call would have refused it.
pub(crate) fn item_error(e: crate::Error) -> ItemError {
    let (_, body) = e.status_and_body();
    let status = Status::from(e);
    ItemError {
        code: status.code() as i32,
        error: body["error"].as_str().unwrap_or("internal").to_string(),
        field: body["field"].as_str().map(str::to_string),
        message: body["message"].as_str().unwrap_or_default().to_string(),
    }
}

pub(crate) async fn check_one(
    state: &AppState,
    limit: usize,
    r: CheckRequest,
) -> crate::Result<CheckResponse> {
    if prost::Message::encoded_len(&r) > limit {
        return Err(crate::Error::bad("body", "is over the size limit"));
    }
    let input = CheckInput {
        tenant: r.tenant,
        user: r.user,
        ip: r.ip,
        pw: r.pw,
        app: r.app,
    };
    let (id, decision, _, reason, retry_after_s) = split(state.check(&input).await?);
    Ok(CheckResponse {
        id,
        decision,
        reason,
        retry_after_s,
    })
}

pub(crate) async fn outcome_one(
    state: &AppState,
    limit: usize,
    r: OutcomeRequest,
) -> crate::Result<OutcomeResponse> {
    if prost::Message::encoded_len(&r) > limit {
        return Err(crate::Error::bad("body", "is over the size limit"));
    }
    let fx = state.outcome(&r.id, &r.result, r.pw.as_deref()).await?;
    Ok(OutcomeResponse {
        lockout_started: fx.lockout_started,
        source_blocked: fx.source_blocked,
        spray_detected: fx.spray_detected,
        account_flagged: fx.account_flagged,
    })
}

#[tonic::async_trait]
impl Gate for GrpcGate {
    type CheckStreamStream = Answers<CheckStreamResponse>;
    type OutcomeStreamStream = Answers<OutcomeStreamResponse>;

    async fn check_stream(
        &self,
        req: Request<Streaming<CheckRequest>>,
    ) -> Result<Response<Self::CheckStreamStream>, Status> {
        let state = self.state.clone();
        let limit = state.config.max_body_bytes;
        // Each request is decided as its answer is asked for: in order, one at a time. The
        // `Status` error is tonic's, as the stream item type requires.
        #[allow(clippy::result_large_err)]
        let answers = req.into_inner().then(move |r| {
            let state = state.clone();
            async move {
                let r = r?;
                Ok(match check_one(&state, limit, r).await {
                    Ok(d) => CheckStreamResponse {
                        decision: Some(d),
                        error: None,
                    },
                    Err(e) => CheckStreamResponse {
                        decision: None,
                        error: Some(item_error(e)),
                    },
                })
            }
        });
        Ok(Response::new(Box::pin(answers)))
    }

    async fn outcome_stream(
        &self,
        req: Request<Streaming<OutcomeRequest>>,
    ) -> Result<Response<Self::OutcomeStreamStream>, Status> {
        let state = self.state.clone();
        let limit = state.config.max_body_bytes;
        #[allow(clippy::result_large_err)]
        let answers = req.into_inner().then(move |r| {
            let state = state.clone();
            async move {
                let r = r?;
                Ok(match outcome_one(&state, limit, r).await {
                    Ok(o) => OutcomeStreamResponse {
                        recorded: Some(o),
                        error: None,
                    },
                    Err(e) => OutcomeStreamResponse {
                        recorded: None,
                        error: Some(item_error(e)),
                    },
                })
            }
        });
        Ok(Response::new(Box::pin(answers)))
    }

    async fn check(&self, req: Request<CheckRequest>) -> Result<Response<CheckResponse>, Status> {
        let r = req.into_inner();
        self.within_limit(&r)?;
        let input = CheckInput {
            tenant: r.tenant,
            user: r.user,
            ip: r.ip,
            pw: r.pw,
            app: r.app,
        };
        let (id, decision, _, reason, retry_after_s) = split(self.state.check(&input).await?);
        Ok(Response::new(CheckResponse {
            id,
            decision,
            reason,
            retry_after_s,
        }))
    }

    async fn outcome(
        &self,
        req: Request<OutcomeRequest>,
    ) -> Result<Response<OutcomeResponse>, Status> {
        let r = req.into_inner();
        self.within_limit(&r)?;
        let fx = self
            .state
            .outcome(&r.id, &r.result, r.pw.as_deref())
            .await?;
        Ok(Response::new(OutcomeResponse {
            lockout_started: fx.lockout_started,
            source_blocked: fx.source_blocked,
            spray_detected: fx.spray_detected,
            account_flagged: fx.account_flagged,
        }))
    }

    async fn validate(
        &self,
        req: Request<ValidateRequest>,
    ) -> Result<Response<ValidateResponse>, Status> {
        let r = req.into_inner();
        self.within_limit(&r)?;
        let payload =
            serde_json::from_str(&r.payload).unwrap_or(serde_json::Value::String(r.payload));
        let input = CheckInput {
            tenant: r.tenant,
            user: r.user,
            ip: r.ip,
            pw: r.pw,
            app: r.app,
        };
        let out = self.state.validate(&input, payload).await?;
        let (id, decision, result, reason, retry_after_s) = split(out);
        Ok(Response::new(ValidateResponse {
            id,
            decision,
            result,
            reason,
            retry_after_s,
        }))
    }
}
