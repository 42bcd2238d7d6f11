//! Lark's per-app message limit holds for all responder replicas together,
//! at every moment, through rebalances: replicas joining take their share of
//! the limit only as the replicas before them give theirs up.

use std::time::{Duration, Instant};

use lark_bridge_tests::fake_lark::Endpoint;
use lark_bridge_tests::harness::{Bridge, Options};

/// The most requests in any one-second window.
fn busiest_second(times: &[Instant]) -> usize {
    let mut times = times.to_vec();
    times.sort();
    (0..times.len())
        .map(|i| times[i..].iter().take_while(|t| t.duration_since(times[i]) < Duration::from_secs(1)).count())
        .max()
        .unwrap_or(0)
}

#[tokio::test]
async fn three_responders_joining_mid_burst_never_send_more_than_the_apps_limit_in_a_second() {
    let mut b = Bridge::start_with(Options {
        env: vec![("LARK_BRIDGE__RESPONDER__APP_PER_SECOND", "5".to_owned())],
        ..Default::default()
    })
    .await;
    let n = 40;
    for i in 0..n {
        let event = b.events().message_id(format!("om_lim{i:02}")).p2p_text(&format!("oc_lim{i:02}"), "ou_a", "hello");
        b.deliver_ok(&event).await;
    }
    // Two more replicas join while the replies go out: the partitions move.
    tokio::time::sleep(Duration::from_secs(2)).await;
    b.spawn_responder().await;
    b.spawn_responder().await;
    let shown = b.lark.wait_for_messages(n, Duration::from_secs(120)).await;
    assert_eq!(shown.len(), n, "every reply shown");
    let sent: Vec<Instant> = b
        .lark
        .all_attempts()
        .into_iter()
        .filter(|a| matches!(a.endpoint, Endpoint::Reply | Endpoint::Send) && a.code == 0)
        .map(|a| a.received_at)
        .collect();
    let busiest = busiest_second(&sent);
    println!("app limit 5/s, 1 then 3 responders: busiest second {busiest} replies");
    assert!(busiest <= 5, "{busiest} replies reached Lark within one second");
    b.stop().await;
}
