//! Reading request bodies within the server's limits, each failure as an [`ApiError`].

use axum::body::{Body, Bytes, HttpBody};
use axum::http::StatusCode;

use super::error::ApiError;
use super::server::BodyCut;

/// The next piece of a request body: `None` at its end; 408 `request_timeout` once the
/// server's body timeout is spent.
pub async fn next_chunk(body: &mut Body) -> Option<Result<Bytes, ApiError>> {
    loop {
        let frame =
            std::future::poll_fn(|cx| std::pin::Pin::new(&mut *body).poll_frame(cx)).await?;
        match frame {
            Ok(frame) => match frame.into_data() {
                Ok(data) => return Some(Ok(data)),
                // Trailers carry nothing the API reads.
                Err(_) => continue,
            },
            Err(error) => return Some(Err(body_error(error))),
        }
    }
}

/// A whole request body of at most `limit` bytes (413 `payload_too_large` beyond).
pub async fn read_body(mut body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let mut whole = Vec::new();
    while let Some(chunk) = next_chunk(&mut body).await {
        let chunk = chunk?;
        if whole.len() + chunk.len() > limit {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the body is larger than {limit} bytes"),
            ));
        }
        whole.extend_from_slice(&chunk);
    }
    Ok(whole.into())
}

/// Why a request body could not be read: its time ran out (408), the server is stopping
/// (503; either way the connection closes), or the client broke off (400).
fn body_error(error: axum::Error) -> ApiError {
    match error.into_inner().downcast::<BodyCut>().map(|cut| *cut) {
        Ok(cut @ BodyCut::TimedOut(_)) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            cut.to_string(),
        ),
        Ok(cut @ BodyCut::ShuttingDown) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            cut.to_string(),
        ),
        Err(other) => ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("reading the body: {other}"),
        ),
    }
}
