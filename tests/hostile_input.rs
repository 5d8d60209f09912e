//! What a hostile or careless client sends, answered with the code that says whose fault
//! it is: bytes that are not a valid message are INVALID_ARGUMENT (the caller's), an
//! oversize message RESOURCE_EXHAUSTED, an expired deadline DEADLINE_EXCEEDED. Sent with a
//! client that writes raw bytes into a gRPC frame, as a client built from `proto/` alone
//! with a bug (or an attacker) would.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{payment, TestServer};
use fengkong::config::Config;
use fengkong::proto;
use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Code;

/// Sends its bytes as the message, whatever they are; decodes the answer as usual.
#[derive(Default)]
struct RawCodec;

struct RawEncoder;

impl Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        use bytes::BufMut;
        dst.put_slice(&item);
        Ok(())
    }
}

struct ResponseDecoder;

impl Decoder for ResponseDecoder {
    type Item = proto::ScoreResponse;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, tonic::Status> {
        use bytes::Buf;
        let bytes = src.copy_to_bytes(src.remaining());
        proto::ScoreResponse::decode(bytes)
            .map(Some)
            .map_err(|e| tonic::Status::internal(e.to_string()))
    }
}

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = proto::ScoreResponse;
    type Encoder = RawEncoder;
    type Decoder = ResponseDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> ResponseDecoder {
        ResponseDecoder
    }
}

async fn send_raw(
    server: &TestServer,
    bytes: Vec<u8>,
) -> Result<proto::ScoreResponse, tonic::Status> {
    let channel = tonic::transport::Endpoint::new(format!("http://{}", server.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel).max_encoding_message_size(64 << 20);
    grpc.ready().await.unwrap();
    let path = "/fengkong.v1.RiskEngine/Score".parse().unwrap();
    grpc.unary(tonic::Request::new(bytes), path, RawCodec)
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn malformed_messages_are_the_callers_fault_not_ours() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let valid = payment("hostile-1").encode_to_vec();
    let mut random = Vec::new();
    let mut x: u32 = 0x9e37_79b9;
    for _ in 0..200 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        random.push(x as u8);
    }
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("random bytes", random),
        ("a truncated message", valid[..valid.len() / 2].to_vec()),
        // Field 1 (payment_id, a string) sent as a varint.
        ("a wrong wire type", vec![0x08, 0x01]),
        // payment_id = the bytes ff fe, which are not UTF-8.
        ("invalid UTF-8", vec![0x0a, 0x02, 0xff, 0xfe]),
    ];
    for (what, bytes) in cases {
        let err = send_raw(&server, bytes).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{what}: {err:?}");
        assert!(
            err.message().contains("decode"),
            "{what}: the decoder's message is passed on: {}",
            err.message()
        );
    }
    let err = send_raw(&server, vec![0x0a; 5 << 20]).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "oversize: {err:?}");

    // The well-formed message is still scored, over the same raw path.
    let scored = send_raw(&server, valid).await.unwrap();
    assert_eq!(scored.payment_id, "hostile-1");
    server.stop().await;
}

/// A Score the server cannot finish within the caller's deadline is answered
/// DEADLINE_EXCEEDED at the deadline, not CANCELLED and not late.
#[tokio::test]
async fn a_deadline_the_server_cannot_meet_is_deadline_exceeded() {
    let dir = tempfile::tempdir().unwrap();
    // Every durable write lingers 3 s to gather others: no Score can finish in 300 ms.
    let server = TestServer::start_with(Config {
        data_dir: dir.path().to_owned(),
        commit_delay_us: 3_000_000,
        ..Config::default()
    })
    .await;
    let mut client = server.client().await;
    let mut request = tonic::Request::new(payment("late-1"));
    request.set_timeout(Duration::from_millis(300));
    let started = Instant::now();
    let err = client.score(request).await.unwrap_err();
    let took = started.elapsed();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert!(
        took < Duration::from_millis(2_500),
        "answered after {took:?}"
    );
    server.stop().await;
}
