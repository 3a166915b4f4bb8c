//! The one mapping from core errors to status codes: gRPC codes here, and HTTP codes
//! derived from them. Transports turn an `Error` into a `tonic::Status` with `?` (the `From`
//! below) and into a REST answer with `response`; no other module makes a code.
use crate::error::Error;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use tonic::{Code, Status};

pub fn code(e: &Error) -> Code {
    match e {
        Error::InvalidArgument { .. } => Code::InvalidArgument,
        Error::ResourceExhausted(_) => Code::ResourceExhausted,
        Error::FailedPrecondition(_) => Code::FailedPrecondition,
        Error::NotFound(_) => Code::NotFound,
        Error::Aborted(_) => Code::Aborted,
        Error::Unavailable(_) => Code::Unavailable,
        Error::Internal(_) => Code::Internal,
        Error::Unauthenticated(_) => Code::Unauthenticated,
        Error::PermissionDenied(_) => Code::PermissionDenied,
    }
}

/// Server-side failures are logged here, once, whichever transport answers.
fn log(e: &Error) {
    if matches!(e, Error::Internal(_) | Error::Unavailable(_)) {
        tracing::error!(error = %e, "request failed");
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Status {
        log(&e);
        Status::new(code(&e), e.to_string())
    }
}

/// The HTTP status of an error, derived from its gRPC code.
pub fn http(e: &Error) -> StatusCode {
    http_of(code(e))
}

fn http_of(c: Code) -> StatusCode {
    StatusCode::from_u16(http_status(c)).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// A REST error answer: `{"error":{"code","message"}}` with the derived HTTP status; an
/// UNAUTHENTICATED one says which scheme to use.
pub fn response(e: Error) -> Response {
    log(&e);
    let c = code(&e);
    let body = serde_json::json!({
        "error": { "code": code_name(c), "message": e.to_string() }
    });
    let mut resp = (http_of(c), axum::Json(body)).into_response();
    if c == Code::Unauthenticated {
        resp.headers_mut().insert(
            http::header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static("Bearer realm=\"preflight\""),
        );
    }
    resp
}

/// A REST body past `limit` bytes, in the same JSON shape as every other error (axum's own
/// answer is plain text). 413 is HTTP's own word for it; the code is RESOURCE_EXHAUSTED.
pub fn body_too_large(limit: usize) -> Response {
    let body = serde_json::json!({ "error": {
        "code": code_name(Code::ResourceExhausted),
        "message": format!("request body: over {limit} bytes"),
    }});
    (StatusCode::PAYLOAD_TOO_LARGE, axum::Json(body)).into_response()
}

/// Whether an answer is axum's own body-limit refusal.
pub fn is_body_too_large(r: &Response) -> bool {
    r.status() == StatusCode::PAYLOAD_TOO_LARGE
}

/// The HTTP status of a readiness answer: 200, or UNAVAILABLE's 503.
pub fn ready(ok: bool) -> StatusCode {
    if ok {
        StatusCode::OK
    } else {
        http_of(Code::Unavailable)
    }
}

/// The code's canonical name (`INVALID_ARGUMENT`), for metric labels and REST error bodies.
pub fn code_name(c: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match c {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

/// The HTTP status for a gRPC code, as grpc-gateway maps them.
pub fn http_status(code: Code) -> u16 {
    match code {
        Code::Ok => 200,
        Code::InvalidArgument | Code::OutOfRange | Code::FailedPrecondition => 400,
        Code::Unauthenticated => 401,
        Code::PermissionDenied => 403,
        Code::NotFound => 404,
        Code::AlreadyExists | Code::Aborted => 409,
        Code::ResourceExhausted => 429,
        Code::Cancelled => 499,
        Code::Unimplemented => 501,
        Code::Unavailable => 503,
        Code::DeadlineExceeded => 504,
        Code::Unknown | Code::Internal | Code::DataLoss => 500,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_variant_with_its_grpc_and_http_code() {
        // Adding a variant without a row here fails to compile in `code` above; this
        // table is what docs/api.md's error section lists.
        let cases = [
            (Error::invalid("channel", "x"), Code::InvalidArgument, 400),
            (
                Error::ResourceExhausted("x".into()),
                Code::ResourceExhausted,
                429,
            ),
            (
                Error::FailedPrecondition("x".into()),
                Code::FailedPrecondition,
                400,
            ),
            (Error::NotFound("x".into()), Code::NotFound, 404),
            (Error::Aborted("x".into()), Code::Aborted, 409),
            (Error::Unavailable("x".into()), Code::Unavailable, 503),
            (Error::Internal("x".into()), Code::Internal, 500),
            (
                Error::Unauthenticated("x".into()),
                Code::Unauthenticated,
                401,
            ),
            (
                Error::PermissionDenied("x".into()),
                Code::PermissionDenied,
                403,
            ),
        ];
        assert_eq!(code_name(Code::InvalidArgument), "INVALID_ARGUMENT");
        assert_eq!(code_name(Code::Unauthenticated), "UNAUTHENTICATED");
        for (e, c, h) in cases {
            assert_eq!(code(&e), c, "{e:?}");
            assert_eq!(http_status(code(&e)), h, "{e:?}");
            assert_eq!(http(&e).as_u16(), h, "{e:?}");
            assert_eq!(Status::from(e.clone()).code(), c);
            assert_eq!(response(e).status().as_u16(), h);
        }
    }
}
