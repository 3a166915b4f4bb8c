//! The one mapping from core errors to gRPC status codes; HTTP codes derive from it.
use crate::error::Error;
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
    }
}

pub fn to_status(e: Error) -> Status {
    if matches!(e, Error::Internal(_) | Error::Unavailable(_)) {
        tracing::error!(error = %e, "request failed");
    }
    Status::new(code(&e), e.to_string())
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
    fn every_error_has_a_distinct_meaningful_code() {
        let cases = [
            (Error::invalid("channel", "x"), Code::InvalidArgument, 400),
            (
                Error::ResourceExhausted("x".into()),
                Code::ResourceExhausted,
                429,
            ),
            (Error::Unavailable("x".into()), Code::Unavailable, 503),
            (Error::NotFound("x".into()), Code::NotFound, 404),
            (Error::Aborted("x".into()), Code::Aborted, 409),
            (Error::Internal("x".into()), Code::Internal, 500),
        ];
        assert_eq!(code_name(Code::InvalidArgument), "INVALID_ARGUMENT");
        assert_eq!(code_name(Code::Unauthenticated), "UNAUTHENTICATED");
        for (e, c, h) in cases {
            assert_eq!(code(&e), c);
            assert_eq!(http_status(code(&e)), h);
        }
    }
}
