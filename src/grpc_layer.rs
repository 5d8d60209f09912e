//! The tower layer in front of every gRPC service: honours the caller's deadline and gives
//! errors that tonic raises before our handlers run the code that says whose fault they are.
//!
//! - `grpc-timeout`: the deadline is put in the request's extensions ([`Deadline`], read by
//!   admission control) and enforced here, so an expired call is answered
//!   DEADLINE_EXCEEDED, not the CANCELLED that tonic's own timer answers.
//! - A request tonic cannot decode (random bytes, truncated messages, wrong wire types,
//!   invalid UTF-8) is the caller's fault: INVALID_ARGUMENT with the decoder's message,
//!   where tonic says INTERNAL. An oversize message is RESOURCE_EXHAUSTED, where tonic says
//!   OUT_OF_RANGE. INTERNAL is left for our own faults.
//!
//! Only trailers-only answers (an error before any message) are looked at, and only these
//! known decoder messages are re-coded: a handler's own INTERNAL stays INTERNAL.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;
use tonic::body::Body;
use tonic::{Code, Status};
use tower::{Layer, Service};

/// When the caller stops waiting, from its `grpc-timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline(pub Instant);

impl Deadline {
    /// The deadline a tonic request carries, if its caller set one.
    pub fn of<T>(request: &tonic::Request<T>) -> Option<Deadline> {
        request.extensions().get::<Deadline>().copied()
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct StatusLayer;

impl<S> Layer<S> for StatusLayer {
    type Service = StatusService<S>;
    fn layer(&self, inner: S) -> StatusService<S> {
        StatusService { inner }
    }
}

#[derive(Debug, Clone)]
pub struct StatusService<S> {
    inner: S,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, B> Service<axum::http::Request<B>> for StatusService<S>
where
    S: Service<axum::http::Request<B>, Response = axum::http::Response<Body>> + Send,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = axum::http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<axum::http::Response<Body>, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: axum::http::Request<B>) -> Self::Future {
        // Taken here, before tonic's own timer (outside this layer) starts its sleep, so
        // ours fires first and the answer is ours.
        let timeout = request
            .headers()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_grpc_timeout);
        let now = Instant::now();
        let deadline = timeout.map(|t| now + t);
        if let Some(deadline) = deadline {
            request.extensions_mut().insert(Deadline(deadline));
        }
        // Our answer leaves a little before the caller's own timer fires (a tenth of the
        // timeout, at most 20 ms), so it arrives as DEADLINE_EXCEEDED instead of racing the
        // client's expiry (which tonic's client reports as CANCELLED).
        let answer_by = timeout.map(|t| now + t - (t / 10).min(Duration::from_millis(20)));
        let answer = self.inner.call(request);
        Box::pin(async move {
            let response = match answer_by {
                Some(answer_by) => match tokio::time::timeout_at(answer_by, answer).await {
                    Ok(response) => response?,
                    Err(_) => {
                        let ms = timeout.map_or(0, |t| t.as_millis());
                        return Ok(Status::deadline_exceeded(format!(
                            "not answered within the caller's deadline of {ms} ms"
                        ))
                        .into_http());
                    }
                },
                None => answer.await?,
            };
            Ok(recode(response))
        })
    }
}

/// Re-codes a trailers-only error answer from tonic's decoder (see the module doc).
fn recode(mut response: axum::http::Response<Body>) -> axum::http::Response<Body> {
    let Some(status) = Status::from_header_map(response.headers()) else {
        return response;
    };
    let message = status.message();
    let code = match status.code() {
        Code::Internal if is_decode_error(message) => Code::InvalidArgument,
        Code::OutOfRange if message.contains("message length too large") => Code::ResourceExhausted,
        _ => return response,
    };
    let recoded = Status::new(code, message);
    let headers = response.headers_mut();
    for name in ["grpc-status", "grpc-message", "grpc-status-details-bin"] {
        headers.remove(name);
    }
    if recoded.add_header(headers).is_err() {
        // Cannot happen for these messages; the original answer is still a valid one.
        tracing::debug!("could not re-code a decoder error");
    }
    response
}

fn is_decode_error(message: &str) -> bool {
    [
        "failed to decode Protobuf message",
        "Missing request message",
        "Unexpected EOF decoding stream",
        "invalid compression flag",
        "Message compressed with",
    ]
    .iter()
    .any(|known| message.contains(known))
}

/// `grpc-timeout`: up to 8 digits and a unit (H, M, S, m, u, n), per the gRPC over HTTP/2
/// spec; anything else is ignored as tonic ignores it.
fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_as_the_spec_says() {
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(
            parse_grpc_timeout("99999u"),
            Some(Duration::from_micros(99_999))
        );
        assert_eq!(parse_grpc_timeout("m"), None);
        assert_eq!(parse_grpc_timeout("123456789S"), None);
        assert_eq!(parse_grpc_timeout("12x"), None);
    }
}
