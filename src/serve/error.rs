//! The error every route answers with, in OpenAI's shape: the body `{"error": {"message", "type", "param",
//! "code"}}` and the one place where an error becomes an HTTP status. (The response itself is built by
//! `http.rs`.)

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::Error;
use crate::pipeline::field::SettingsError;
use crate::serve::names::Names;

/// An error as OpenAI's API writes it: `{"error": {"message", "type", "param", "code"}}` and a status.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: Option<&'static str>,
    /// Seconds for a `Retry-After` header (429).
    pub retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            kind,
            param: None,
            code: None,
            retry_after: None,
        }
    }

    /// 400 for a field: the message starts with the field's name.
    pub fn invalid(param: &str, message: impl std::fmt::Display) -> Self {
        Self {
            param: Some(param.to_string()),
            ..Self::new(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                format!("{param}: {message}"),
            )
        }
    }

    /// 400 for a field the server does not implement (OpenAI's `code: "unsupported_parameter"`).
    pub fn unsupported(param: &str, message: impl std::fmt::Display) -> Self {
        Self {
            code: Some("unsupported_parameter"),
            ..Self::invalid(param, message)
        }
    }

    /// 400 for a prompt (or a prompt plus `max_tokens`) beyond the model's context, with OpenAI's code.
    pub fn context_length(param: &str, message: impl std::fmt::Display) -> Self {
        Self {
            code: Some("context_length_exceeded"),
            ..Self::invalid(param, message)
        }
    }

    /// 400 for a setting the one validation refused, named as the request wrote it.
    pub fn setting(e: &SettingsError, names: &Names) -> Self {
        Self::invalid(&names.json_path(e.field), &e.message)
    }

    /// 400 for the body as a whole (malformed JSON, not an object).
    pub fn bad_body(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self {
            code: Some("invalid_api_key"),
            ..Self::new(StatusCode::UNAUTHORIZED, "authentication_error", message)
        }
    }

    pub fn not_found(message: impl Into<String>, code: &'static str) -> Self {
        Self {
            code: Some(code),
            ..Self::new(StatusCode::NOT_FOUND, "invalid_request_error", message)
        }
    }

    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request_error",
            "method not allowed on this route (generation routes take POST, /v1/models and /health GET)",
        )
    }

    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            format!(
                "the request body is larger than the server's limit of {limit} bytes (stoplab serve --max-body-bytes)"
            ),
        )
    }

    /// 415: the body was declared as something other than JSON.
    pub fn unsupported_media_type(declared: &str) -> Self {
        let shown: String = declared.chars().take(80).collect();
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid_request_error",
            format!(
                "the body is declared as {shown:?}; send JSON with Content-Type: application/json (curl: -H \
                 'Content-Type: application/json')"
            ),
        )
    }

    /// 408: the body did not arrive within the read timeout.
    pub fn timeout(limit: std::time::Duration) -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "invalid_request_error",
            format!(
                "the request body did not arrive within {:.1} s (stoplab serve --read-timeout)",
                limit.as_secs_f64()
            ),
        )
    }

    pub fn queue_full(running: usize, capacity: usize) -> Self {
        Self {
            code: Some("queue_full"),
            retry_after: Some(1),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                format!(
                    "the server is busy: {running} generation{} run and {capacity} wait (stoplab serve \
                     --parallel, --queue); retry later",
                    if running == 1 { "" } else { "s" }
                ),
            )
        }
    }

    pub fn shutting_down() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            "the server is shutting down",
        )
    }

    /// The environment failed (the model backend, a lost worker): never the client's input.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", message)
    }

    /// OpenAI's error body.
    pub fn body(&self) -> Value {
        json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }})
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        match &e {
            Error::Invalid { field, message } => Self::invalid(field, message),
            Error::Settings(e) => Self::setting(e, &Names::default()),
            Error::PromptTooLong { .. } => Self::context_length("prompt", &e),
            Error::UnknownToken { .. } | Error::Tokenizer(_) => Self::invalid("prompt", &e),
            Error::Stop(s) => Self::invalid("stop", s),
            Error::Model { .. }
            | Error::Fetch(_)
            | Error::ContextFull { .. }
            | Error::Backend(_)
            | Error::Output(_) => Self::internal(e.to_string()),
        }
    }
}
