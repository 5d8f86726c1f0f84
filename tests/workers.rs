//! The daemon on worker threads (`server.workers`), as `run` serves: every
//! connection on one worker, the upstream pools per worker, and the drain
//! and cut reaching connections that live on other threads.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use http_body_util::BodyExt;

#[tokio::test]
async fn concurrent_keep_alive_clients_on_two_workers_are_all_signed_and_served() {
    let upstream = stand_in().await;
    let proxy = start_proxy(&format!(
        "[server]\nworkers = 2\n[[route]]\nprefix = \"/\"\nupstream = \"http://{upstream}/v1/infers/svc\"\ncredentials = \"test\"\n{TEST_CREDENTIALS}"
    ))
    .await;
    // Eight clients, each its own pool (so at least eight connections, spread
    // over both workers), each sending ten requests in turn.
    let mut clients = Vec::new();
    for c in 0..8 {
        let url = proxy.url(&format!("/client{c}"));
        clients.push(tokio::spawn(async move {
            let http = client();
            for i in 0..10 {
                let req = request("POST", &url)
                    .header("content-type", "application/json")
                    .body(body(format!("{{\"c\":{c},\"i\":{i}}}")))
                    .unwrap();
                let resp = http.request(req).await.unwrap();
                let status = resp.status();
                let bytes = resp.into_body().collect().await.unwrap().to_bytes();
                assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bytes));
                let echo = json(&bytes);
                assert_eq!(echo["path"], format!("/v1/infers/svc/client{c}"), "{echo}");
            }
        }));
    }
    for c in clients {
        c.await.unwrap();
    }
    assert_eq!(
        proxy.metric("modelarts_proxy_requests_total{route=\"/\",status=\"200\"}"),
        80.0
    );
}

#[tokio::test]
async fn a_drain_lets_requests_in_flight_on_every_worker_finish() {
    let arrived = Arc::new(AtomicUsize::new(0));
    let (release, held) = tokio::sync::watch::channel(false);
    let upstream = held_upstream(arrived.clone(), held).await;
    let mut proxy = start_proxy_with_signals(&format!(
        "[server]\nworkers = 2\nshutdown_grace = \"60s\"\n[[route]]\nupstream = \"http://{upstream}/\"\n"
    ))
    .await;
    // Four connections: two on each worker.
    let in_flight: Vec<_> = (0..4)
        .map(|_| {
            let url = proxy.url("/slow");
            tokio::spawn(async move {
                let resp = client()
                    .request(request("GET", &url).body(body("")).unwrap())
                    .await
                    .unwrap();
                (
                    resp.status(),
                    resp.into_body().collect().await.unwrap().to_bytes(),
                )
            })
        })
        .collect();
    eventually("four requests are in flight", || {
        arrived.load(Ordering::SeqCst) == 4
    })
    .await;
    proxy.signals.as_ref().unwrap().send(()).await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut proxy.task)
            .await
            .is_err(),
        "the drain waits for the requests in flight"
    );
    release.send_replace(true);
    for r in in_flight {
        let (status, bytes) = r.await.unwrap();
        assert_eq!((status.as_u16(), &bytes[..]), (200, &b"done"[..]));
    }
    tokio::time::timeout(Duration::from_secs(10), &mut proxy.task)
        .await
        .expect("the daemon ends once they finish")
        .unwrap();
}

#[tokio::test]
async fn a_second_stop_cuts_connections_on_every_worker_and_the_threads_end() {
    let arrived = Arc::new(AtomicUsize::new(0));
    let (_release, held) = tokio::sync::watch::channel(false);
    let upstream = held_upstream(arrived.clone(), held).await;
    let mut proxy = start_proxy_with_signals(&format!(
        "[server]\nworkers = 2\nshutdown_grace = \"60s\"\ntimeout = \"60s\"\n[[route]]\nupstream = \"http://{upstream}/\"\n"
    ))
    .await;
    let in_flight: Vec<_> = (0..4)
        .map(|_| {
            let url = proxy.url("/slow");
            tokio::spawn(async move {
                client()
                    .request(request("GET", &url).body(body("")).unwrap())
                    .await
            })
        })
        .collect();
    eventually("four requests are in flight", || {
        arrived.load(Ordering::SeqCst) == 4
    })
    .await;
    let signals = proxy.signals.take().unwrap();
    signals.send(()).await.unwrap();
    signals.send(()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), &mut proxy.task)
        .await
        .expect("the cut ends the daemon, worker threads included")
        .unwrap();
    for r in in_flight {
        assert!(
            r.await.unwrap().is_err(),
            "a cut request's connection is closed"
        );
    }
}
