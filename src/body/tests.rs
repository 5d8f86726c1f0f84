use super::*;
use prometheus_client::metrics::gauge::Gauge;
use std::collections::VecDeque;

/// An in-memory body of several data frames.
pub struct Chunks(pub VecDeque<Bytes>);

impl Chunks {
    pub fn of(parts: &[&'static str]) -> Self {
        Chunks(
            parts
                .iter()
                .map(|p| Bytes::from_static(p.as_bytes()))
                .collect(),
        )
    }
}

impl Body for Chunks {
    type Data = Bytes;
    type Error = BoxError;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
    }
    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }
}

/// A body that yields `first` and then never anything again.
struct Stalls(Option<Bytes>);

impl Body for Stalls {
    type Data = Bytes;
    type Error = BoxError;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.0.take() {
            Some(b) => Poll::Ready(Some(Ok(Frame::data(b)))),
            None => Poll::Pending,
        }
    }
}

const IDLE: Duration = Duration::from_secs(60);

fn request_body(
    b: impl Body<Data = Bytes, Error = BoxError> + Send + 'static,
    limit: u64,
) -> RequestBody {
    RequestBody::new(BodyExt::boxed_unsync(b), limit, IDLE)
}

#[tokio::test]
async fn limit_passes_a_body_of_exactly_the_limit() {
    let body = request_body(Chunks::of(&["abc", "de"]), 5);
    let progress = body.progress();
    let all = body.collect().await.unwrap().to_bytes();
    assert_eq!(&all[..], b"abcde");
    assert!(!progress.tripped());
    assert_eq!(progress.bytes(), 5);
}

#[tokio::test]
async fn limit_cuts_the_stream_one_byte_over() {
    let body = request_body(Chunks::of(&["abc", "def"]), 5);
    let progress = body.progress();
    let err = body.collect().await.unwrap_err();
    assert!(err.downcast_ref::<LimitExceeded>().is_some());
    assert!(progress.tripped());
}

#[tokio::test(start_paused = true)]
async fn a_stalled_body_fails_after_idle_timeout_and_says_the_client_stalled() {
    let mut body = request_body(Stalls(Some(Bytes::from_static(b"x"))), 100);
    let progress = body.progress();
    assert!(body.frame().await.unwrap().is_ok());
    assert!(!progress.waiting_on_client());
    let started = Instant::now();
    let err = body.frame().await.unwrap().unwrap_err();
    assert_eq!(started.elapsed(), IDLE);
    assert!(err.downcast_ref::<BodyIdle>().is_some());
    assert!(matches!(read_error(&err, 100), ProxyError::RequestIdle(d) if d == IDLE));
}

#[tokio::test(start_paused = true)]
async fn progress_says_when_the_client_is_the_one_waited_on() {
    let mut body = request_body(Stalls(None), 100);
    let progress = body.progress();
    let poll = tokio::time::timeout(Duration::from_secs(1), body.frame()).await;
    assert!(poll.is_err(), "still pending");
    assert!(progress.waiting_on_client());
}

#[tokio::test]
async fn prefixed_puts_the_first_chunk_back() {
    let body = Prefixed::new(Bytes::from_static(b"first-"), Chunks::of(&["rest"]));
    assert!(!body.is_end_stream());
    assert_eq!(&body.collect().await.unwrap().to_bytes()[..], b"first-rest");
}

fn budget(total: u64) -> (Budget, Gauge) {
    let g = Gauge::default();
    (Budget::new(total, g.clone()), g)
}

#[tokio::test]
async fn buffering_keeps_the_frames_hashes_them_and_holds_the_budget_until_dropped() {
    let (b, gauge) = budget(1 << 20);
    let parts = [Bytes::from(vec![b'a'; 5000]), Bytes::from(vec![b'b'; 3000])];
    let ptrs: Vec<*const u8> = parts.iter().map(|p| p.as_ptr()).collect();
    let body = request_body(Chunks(parts.iter().cloned().collect()), 1 << 20);
    let reserve = Reserve::Wait {
        budget: &b,
        wait: Duration::from_secs(1),
    };
    let buffered = Arc::new(buffer(body, Some(8000), reserve, true).await.unwrap());
    assert_eq!(buffered.len(), 8000);
    let mut all = vec![b'a'; 5000];
    all.extend_from_slice(&[b'b'; 3000]);
    assert_eq!(
        buffered.sha256(),
        Some(hex::encode(Sha256::digest(&all)).as_str())
    );
    // One copy: the frames themselves, not a contiguous copy of them.
    let kept: Vec<*const u8> = buffered.chunks.iter().map(|c| c.as_ptr()).collect();
    assert_eq!(kept, ptrs);
    assert_eq!(gauge.get(), 8192, "8000 bytes, reserved in whole KiB");
    // Sent twice (the token replay), each time exactly.
    for _ in 0..2 {
        let body = buffered.body();
        assert_eq!(body.size_hint().exact(), Some(8000));
        assert_eq!(
            body.collect().await.unwrap().to_bytes(),
            Bytes::from(all.clone())
        );
    }
    drop(buffered);
    assert_eq!(gauge.get(), 0);
}

#[tokio::test]
async fn a_chunked_body_reserves_step_by_step() {
    let (b, gauge) = budget(1 << 20);
    let frames: VecDeque<Bytes> = (0..10).map(|_| Bytes::from(vec![b'x'; 50_000])).collect();
    let body = request_body(Chunks(frames), 1 << 20);
    let reserve = Reserve::Wait {
        budget: &b,
        wait: Duration::from_secs(1),
    };
    let buffered = buffer(body, None, reserve, false).await.unwrap();
    assert_eq!(buffered.len(), 500_000);
    assert!(buffered.sha256().is_none());
    let reserved = gauge.get() as u64;
    assert!(
        (500_000..=1_000_000).contains(&reserved),
        "reserved {reserved}"
    );
}

#[tokio::test(start_paused = true)]
async fn no_room_in_the_budget_is_503_overloaded_before_any_byte_is_read() {
    let (b, _) = budget(64 * 1024);
    let _held = b.try_reserve(64 * 1024).unwrap();
    let body = request_body(Chunks::of(&["never read"]), 1 << 20);
    let progress = body.progress();
    let reserve = Reserve::Wait {
        budget: &b,
        wait: Duration::from_secs(5),
    };
    let err = buffer(body, Some(10), reserve, true).await.err().unwrap();
    assert!(matches!(err, ProxyError::Overloaded { .. }), "{err:?}");
    assert_eq!(err.status(), 503);
    assert_eq!(progress.bytes(), 0, "nothing was read");
}
