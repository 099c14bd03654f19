use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What the dispatcher should do about a failed push. Adapters decide the kind at their edge,
/// from the CRM's status and error code; the dispatcher never reads the message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorKind {
    /// A transient failure (5xx, timeout, locked record): try again after a backoff, or after
    /// `retry_after` when the CRM said how long.
    Retryable {
        /// How long the CRM asked to wait, when it said.
        retry_after: Option<Duration>,
    },
    /// The CRM's short-window rate limit: the whole connection waits `retry_after` (or the
    /// limit's window), then carries on. Never counts against the edit's attempts.
    RateLimited {
        /// How long the CRM asked to wait, when it said.
        retry_after: Option<Duration>,
    },
    /// A long-window budget is spent (HubSpot `DAILY`, Salesforce `REQUEST_LIMIT_EXCEEDED`):
    /// the connection pauses until `retry_after` (or an operator resumes it).
    QuotaExhausted {
        /// How long until the budget resets, when known.
        retry_after: Option<Duration>,
    },
    /// Credentials were refused even after the adapter refreshed them once: the connection
    /// pauses until its credentials are fixed.
    Unauthorized,
    /// The CRM refused this edit and will refuse it again: dead-letter it with the CRM's
    /// own code, message and field.
    Permanent {
        /// The unified field the CRM blamed, when it named one.
        field: Option<String>,
    },
    /// The CRM record no longer exists (deleted or merged away): dead-letter the edit and mark
    /// the unified record as gone from its source.
    RecordGone,
    /// The record was merged into another one, `survivor` (the CRM's id of the record that
    /// remains): the unified contact is re-pointed at the survivor and the edit pushed there.
    /// Without an attempt lost.
    RecordMerged {
        /// The CRM id of the record that remains.
        survivor: String,
    },
    /// The CRM refuses every write of this connection for a reason of the account or the
    /// configuration, not of the edit: a missing scope or permission, an API disabled for the
    /// account, a wrong base URL or a retired API version, a mapped field the CRM does not
    /// have. The connection pauses and probes with one small batch at a capped backoff until
    /// the CRM takes it again; no edit is dead-lettered or loses an attempt.
    Misconfigured,
    /// The request was sent and no answer came (timeout, connection lost after sending): the
    /// CRM may still apply it. Retried like [`ErrorKind::Retryable`], but never before the
    /// connection's settle time has passed, so that the old request cannot land after a newer
    /// one.
    OutcomeUnknown,
}

/// A classified failure from a CRM, keeping the CRM's own error code and message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct AdapterError {
    /// What the dispatcher should do about it.
    pub kind: ErrorKind,
    /// The CRM's error code (`INVALID_EMAIL`, `STRING_TOO_LONG`, ...) or, where the CRM gave
    /// none, a unisync code such as `HTTP_503` or `TRANSPORT`.
    pub code: String,
    /// The CRM's own message, unaltered.
    pub message: String,
}

impl AdapterError {
    /// An error of `kind` with the CRM's `code` and `message`.
    pub fn new(kind: ErrorKind, code: impl Into<String>, message: impl Into<String>) -> Self {
        AdapterError {
            kind,
            code: code.into(),
            message: message.into(),
        }
    }

    /// A [`ErrorKind::Retryable`] failure without a wait.
    pub fn retryable(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Retryable { retry_after: None }, code, message)
    }

    /// A [`ErrorKind::RateLimited`] failure, waiting `retry_after` when the CRM said.
    pub fn rate_limited(
        code: impl Into<String>,
        message: impl Into<String>,
        retry_after: Option<Duration>,
    ) -> Self {
        Self::new(ErrorKind::RateLimited { retry_after }, code, message)
    }

    /// A [`ErrorKind::QuotaExhausted`] failure, until `retry_after` when the CRM said.
    pub fn quota_exhausted(
        code: impl Into<String>,
        message: impl Into<String>,
        retry_after: Option<Duration>,
    ) -> Self {
        Self::new(ErrorKind::QuotaExhausted { retry_after }, code, message)
    }

    /// A [`ErrorKind::Unauthorized`] failure.
    pub fn unauthorized(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unauthorized, code, message)
    }

    /// A [`ErrorKind::Permanent`] refusal, naming the unified `field` when the CRM blamed one.
    pub fn permanent(
        code: impl Into<String>,
        message: impl Into<String>,
        field: Option<String>,
    ) -> Self {
        Self::new(ErrorKind::Permanent { field }, code, message)
    }

    /// A [`ErrorKind::RecordGone`] failure.
    pub fn record_gone(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::RecordGone, code, message)
    }

    /// A [`ErrorKind::RecordMerged`] failure, naming the `survivor`.
    pub fn record_merged(
        code: impl Into<String>,
        message: impl Into<String>,
        survivor: impl Into<String>,
    ) -> Self {
        Self::new(
            ErrorKind::RecordMerged {
                survivor: survivor.into(),
            },
            code,
            message,
        )
    }

    /// A [`ErrorKind::Misconfigured`] failure.
    pub fn misconfigured(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Misconfigured, code, message)
    }

    /// An [`ErrorKind::OutcomeUnknown`] failure.
    pub fn outcome_unknown(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::OutcomeUnknown, code, message)
    }

    /// Whether trying the same push again later can succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::Retryable { .. }
                | ErrorKind::RateLimited { .. }
                | ErrorKind::QuotaExhausted { .. }
                | ErrorKind::Unauthorized
                | ErrorKind::Misconfigured
                | ErrorKind::OutcomeUnknown
                | ErrorKind::RecordMerged { .. }
        )
    }

    /// The unified field the CRM blamed, when it named one.
    pub fn field(&self) -> Option<&str> {
        match &self.kind {
            ErrorKind::Permanent { field } => field.as_deref(),
            _ => None,
        }
    }
}
