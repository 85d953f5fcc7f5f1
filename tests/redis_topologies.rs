//! The shared DPoP replay store beyond one Redis server, with real `redis-server`s:
//!
//! - a 3-master **Redis Cluster** (`--cluster-enabled yes` + `redis-cli --cluster create`):
//!   two gateway instances share replay state, each proof's keys land in one slot (the
//!   script runs there), and the keys of many DPoP keys spread over all three masters;
//! - a **Sentinel**-managed primary with two replicas: the primary is killed under load,
//!   Sentinel promotes a replica, the gateway follows it by itself; meanwhile every request
//!   is either served or refused with 503 (fail closed), refusals fall only inside the
//!   failover window (its length is printed), and no proof is ever accepted twice — with
//!   `wait_for_replicas: 1` a proof counts only once a replica holds it, so the promoted
//!   replica remembers it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::redis::{RedisProcess, cli};
use common::*;

#[test]
fn redis_server_is_installed() {
    assert!(common::redis::installed(), "{}", common::redis::MISSING);
}

async fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn replay_yaml(target: &str) -> String {
    replay_yaml_with(target, "500ms")
}

/// The failover tests allow 2 s (WAIT gets half): on a busy two-core machine a replica's
/// acknowledgement can take longer than 250 ms, which would refuse a proof before the kill.
fn replay_yaml_with(target: &str, timeout: &str) -> String {
    format!("dpop:\n  replay:\n    store: redis\n{target}    timeout: {timeout}\n")
}

/// Sends fresh proofs until `n` in a row pass: the replicas are connected and caught up.
async fn warm_up(env: &Env, clients: &[Client], n: usize) {
    let started = Instant::now();
    let mut in_a_row = 0;
    for i in 0.. {
        assert!(started.elapsed() < Duration::from_secs(30), "the store never served {n} proofs in a row");
        let client = &clients[i % clients.len()];
        let status = env.send_dpop("GET", "/dpop/x", &client.token, &client.proof(env)).await.status();
        in_a_row = if status == 200 { in_a_row + 1 } else { 0 };
        if in_a_row == n {
            return;
        }
        if status != 200 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// One client: its DPoP key and the token bound to it.
struct Client {
    key: Signer,
    token: String,
}

impl Client {
    fn new(env: &Env, n: usize) -> Client {
        let key = Signer::es256(&format!("client-{n}"));
        let token = env.dpop_token(&key);
        Client { key, token }
    }

    fn proof(&self, env: &Env) -> String {
        self.key.dpop_proof("GET", &env.public_url("/dpop/x"), Some(&self.token))
    }
}

/// A 3-master Redis Cluster (no replicas) on free ports, once every node says `ok`.
async fn start_cluster(dir: &std::path::Path) -> Vec<RedisProcess> {
    start_cluster_with(dir, 0).await
}

/// A 3-master Redis Cluster with `replicas` replicas per master.
async fn start_cluster_with(dir: &std::path::Path, replicas: usize) -> Vec<RedisProcess> {
    let cluster_args: Vec<String> =
        ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000"]
            .map(str::to_string)
            .to_vec();
    let mut nodes = Vec::new();
    for _ in 0..3 * (1 + replicas) {
        nodes.push(RedisProcess::start(dir, &cluster_args).await);
    }
    let addresses: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
    let created = std::process::Command::new("redis-cli")
        .arg("--cluster")
        .arg("create")
        .args(&addresses)
        .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
        .output()
        .expect("redis-cli --cluster create");
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stdout));
    wait_until("the cluster to be ok", Duration::from_secs(30), || {
        nodes.iter().all(|n| n.cli(&["cluster", "info"]).contains("cluster_state:ok"))
            && nodes.iter().all(|n| !n.cli(&["info", "replication"]).contains("master_link_status:down"))
    })
    .await;
    nodes
}

#[tokio::test]
async fn a_redis_cluster_shares_replay_state_across_instances_one_slot_per_proof() {
    if common::redis::missing() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let nodes = start_cluster(dir.path()).await;

    // Seeds: one node is enough to find the others.
    let target = format!("    cluster: [{}]\n", nodes[0].url());
    let env = Env::start_with(Options { dpop: replay_yaml(&target), ..Default::default() }).await;
    let twin = env.start_twin().await;
    for n in 0..24 {
        let client = Client::new(&env, n);
        let proof = client.proof(&env);
        let first = env.send_dpop("GET", "/dpop/x", &client.token, &proof).await;
        assert_eq!(first.status(), 200, "client {n}");
        let again = env.send_dpop_to(twin.local_addr(), "/dpop/x", &client.token, &proof).await;
        assert_eq!(again.status(), 401, "client {n}: a replay on the other instance");
        let body = again.text().await.unwrap();
        assert!(body.contains("already used"), "{body}");
        let fresh = env.send_dpop_to(twin.local_addr(), "/dpop/x", &client.token, &client.proof(&env)).await;
        assert_eq!(fresh.status(), 200, "client {n}: a fresh proof on the other instance");
    }
    // The keys of 24 DPoP keys (a hash tag each) are spread over every master.
    for node in &nodes {
        let keys: u64 = node.cli(&["dbsize"]).parse().unwrap();
        assert!(keys > 0, "node {} holds no replay key", node.port);
    }
    assert!(twin.replay_store_reachable().await);
}

/// A request's outcome in the failover test.
struct Sent {
    at: Instant,
    status: u16,
}

#[tokio::test]
async fn the_primary_killed_under_load_sentinel_fails_over_and_no_proof_passes_twice() {
    if common::redis::missing() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut primary = RedisProcess::start(dir.path(), &[]).await;
    let replicaof = ["--replicaof".to_string(), "127.0.0.1".to_string(), primary.port.to_string()];
    let replicas =
        [RedisProcess::start(dir.path(), &replicaof).await, RedisProcess::start(dir.path(), &replicaof).await];
    wait_until("the replicas to sync", Duration::from_secs(20), || {
        replicas.iter().all(|r| r.cli(&["info", "replication"]).contains("master_link_status:up"))
    })
    .await;
    let sentinel = RedisProcess::sentinel(dir.path(), "fapi", primary.port).await;
    wait_until("Sentinel to know both replicas", Duration::from_secs(30), || {
        let master = sentinel.cli(&["sentinel", "master", "fapi"]);
        master.lines().collect::<Vec<_>>().windows(2).any(|w| w[0] == "num-slaves" && w[1] == "2")
    })
    .await;

    let target = format!("    sentinel: {{ urls: [{}], master: fapi }}\n    wait_for_replicas: 1\n", sentinel.url());
    let env = Env::start_with(Options { dpop: replay_yaml_with(&target, "2s"), ..Default::default() }).await;
    let twin = env.start_twin().await;
    let client = Client::new(&env, 0);
    warm_up(&env, std::slice::from_ref(&client), 10).await;
    let instances = [env.addr, twin.local_addr()];

    let mut sent = Vec::new();
    let mut accepted = Vec::new();
    let mut killed_at = None;
    let started = Instant::now();
    let mut successes_after_refusal = 0;
    let mut refused_once = false;
    for i in 0.. {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "no recovery after the failover:\n{}",
            sentinel.cli(&["sentinel", "master", "fapi"])
        );
        if i == 30 {
            primary.kill();
            killed_at = Some(Instant::now());
        }
        let proof = client.proof(&env);
        let response = env.send_dpop_to(instances[i % 2], "/dpop/x", &client.token, &proof).await;
        let status = response.status().as_u16();
        assert!(status == 200 || status == 503, "request {i}: {status} {}", response.text().await.unwrap());
        sent.push(Sent { at: Instant::now(), status });
        if status == 200 {
            accepted.push(proof);
            if refused_once {
                successes_after_refusal += 1;
                if successes_after_refusal == 30 {
                    break;
                }
            }
        } else {
            refused_once = true;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let killed_at = killed_at.unwrap();
    let refusals: Vec<&Sent> = sent.iter().filter(|s| s.status == 503).collect();
    let first_refusal = refusals.first().expect("the kill was noticed").at;
    let last_refusal = refusals.last().unwrap().at;
    let recovered_at = sent.iter().find(|s| s.status == 200 && s.at > last_refusal).unwrap().at;
    assert!(first_refusal >= killed_at, "no refusal before the primary was killed");
    eprintln!(
        "failover: {} requests refused (503) over {:.1} s, first {:.1} s after the kill; served again {:.1} s after the kill",
        refusals.len(),
        last_refusal.duration_since(first_refusal).as_secs_f64(),
        first_refusal.duration_since(killed_at).as_secs_f64(),
        recovered_at.duration_since(killed_at).as_secs_f64(),
    );

    // No proof passes twice: every accepted one — before, around and after the failover —
    // is refused as a replay by both instances.
    for (n, proof) in accepted.iter().enumerate() {
        for instance in instances {
            let response = env.send_dpop_to(instance, "/dpop/x", &client.token, proof).await;
            assert_eq!(response.status(), 401, "accepted proof {n} of {} passed again", accepted.len());
        }
    }
    let promoted = replicas.iter().filter(|r| r.cli(&["info", "replication"]).contains("role:master")).count();
    // (The other replica may still be being pointed at the new primary: at least one.)
    assert!(promoted >= 1, "Sentinel promoted a replica ({promoted} report role:master)");
    assert_eq!(cli(replicas[0].port, &["ping"]), "PONG");
}

#[test]
fn topology_settings_are_checked() {
    let pki = TestPki::new();
    let cases = [
        ("    url: redis://a:6379\n    cluster: [redis://b:6379]\n", "exactly one of"),
        ("    cluster: []\n", "at least one seed"),
        ("    cluster: [http://b:6379]\n", "redis://"),
        ("    sentinel: { urls: [redis://s:26379], master: '' }\n", "name the primary"),
        ("    sentinel: { urls: [rediss://s:26379], master: m }\n", "not supported yet"),
        ("    key_prefix: 'p:'\n", "needs `url`, `cluster` or `sentinel`"),
        (
            "    url: redis://a:6379\n    wait_for_replicas: 1\n    on_error: local\n",
            "cannot go with `on_error: local`",
        ),
    ];
    for (replay, says) in cases {
        let yaml = format!(
            "listen: {{ address: 127.0.0.1:0, public_url: https://gateway.test, tls: {{ cert: {}, key: {} }} }}\n\
             issuers:\n  - {{ issuer: https://as.test, jwks_file: j.json, audiences: [a] }}\n\
             routes:\n  - {{ name: r, match: {{ path_prefix: / }}, upstream: http://127.0.0.1:1, binding: dpop }}\n{}",
            pki.server_cert_path().display(),
            pki.server_key_path().display(),
            replay_yaml(replay)
        );
        let error = fapi_gateway::config::Config::from_yaml(&yaml, "gateway.yaml", pki.dir())
            .err()
            .unwrap_or_else(|| panic!("accepted: {replay}"))
            .to_string();
        assert!(error.contains(says), "{replay}: {error}");
    }
}

#[tokio::test]
async fn without_the_replicas_it_waits_for_a_fresh_proof_is_refused() {
    if common::redis::missing() {
        return;
    }
    let redis = common::redis::RedisServer::start().await;
    let target = format!("    url: {}\n    wait_for_replicas: 1\n", redis.url());
    let env = Env::start_with(Options { dpop: replay_yaml(&target), ..Default::default() }).await;
    let client = Client::new(&env, 0);
    let response = env.send_dpop("GET", "/dpop/x", &client.token, &client.proof(&env)).await;
    assert_eq!(response.status(), 503, "no replica acknowledged the proof: it does not count");
    assert_eq!(response.headers()["retry-after"], "5");
    assert_eq!(env.upstream.hits(), 0);
}

#[tokio::test]
async fn the_login_session_store_works_on_a_redis_cluster() {
    use fapi_gateway::config::{RedisTarget, SecretUrl};
    use fapi_gateway::login::redis_store::RedisLoginStore;
    if common::redis::missing() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let nodes = start_cluster(dir.path()).await;
    let target = RedisTarget::Cluster(vec![SecretUrl(nodes[1].url())]);
    let secret = [7u8; 32];
    let store =
        RedisLoginStore::new(&target, None, "fapi-gateway:login:web:", Duration::from_secs(1), &secret).unwrap();
    // Records of many sessions land on every master; each command names one key.
    for n in 0..30 {
        let key = store.key("s", format!("session-{n}").as_bytes());
        store.put(&key, format!("record {n}").as_bytes(), Duration::from_secs(60)).await.unwrap();
        assert_eq!(store.get(&key).await.unwrap().unwrap(), format!("record {n}").into_bytes());
        assert!(store.lock(&store.key("lock", key.as_bytes()), Duration::from_secs(5)).await.unwrap());
        assert!(!store.lock(&store.key("lock", key.as_bytes()), Duration::from_secs(5)).await.unwrap(), "one holder");
        let taken = store.take(&key).await.unwrap();
        assert_eq!(taken.unwrap(), format!("record {n}").into_bytes());
        assert_eq!(store.get(&key).await.unwrap(), None, "taken once");
    }
    for node in &nodes {
        let keys: u64 = node.cli(&["dbsize"]).parse().unwrap();
        assert!(keys > 0, "node {} holds no login key", node.port);
    }
    assert!(store.is_reachable().await);
}

#[tokio::test]
async fn a_cluster_primary_killed_under_load_fails_over_and_no_proof_passes_twice() {
    if common::redis::missing() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = start_cluster_with(dir.path(), 1).await;
    let seeds = nodes.iter().map(RedisProcess::url).collect::<Vec<_>>().join(", ");
    let target = format!("    cluster: [{seeds}]\n    wait_for_replicas: 1\n");
    let env = Env::start_with(Options { dpop: replay_yaml_with(&target, "2s"), ..Default::default() }).await;
    let twin = env.start_twin().await;
    let instances = [env.addr, twin.local_addr()];
    // Several DPoP keys: their proofs live on different masters.
    let clients: Vec<Client> = (0..6).map(|n| Client::new(&env, n)).collect();
    warm_up(&env, &clients, 12).await;
    let victim = nodes.iter().position(|n| n.cli(&["info", "replication"]).contains("role:master")).unwrap();

    let mut sent = Vec::new();
    let mut accepted = Vec::new();
    let mut killed_at = None;
    let started = Instant::now();
    let mut served_in_a_row = 0;
    let mut refused_once = false;
    for i in 0.. {
        assert!(started.elapsed() < Duration::from_secs(90), "no recovery after the failover");
        if i == 36 {
            nodes[victim].kill();
            killed_at = Some(Instant::now());
        }
        // Once the cluster has promoted its replica, the crashed node comes back (empty: no
        // persistence) and rejoins as the replica of its successor, so that WAIT has a
        // replica to count again. (Back before the failover, an empty node would still be
        // the primary of its slots and their proofs would be forgotten: the restart case the
        // README warns of.)
        if killed_at.is_some() && i % 5 == 0 {
            let survivor = nodes.iter().enumerate().find(|(n, _)| *n != victim).map(|(_, node)| node.port).unwrap();
            let node = &mut nodes[victim];
            let failed_over = |port: u16| {
                let seen = cli(survivor, &["cluster", "nodes"]);
                let victim_line = seen.lines().find(|l| l.contains(&format!("127.0.0.1:{port}@"))).unwrap_or("");
                // Flags (third field): `fail` once the cluster agreed (`fail?` is only suspicion).
                victim_line.split(' ').nth(2).is_some_and(|flags| flags.split(',').any(|f| f == "fail"))
            };
            if std::net::TcpStream::connect(("127.0.0.1", node.port)).is_err()
                && failed_over(node.port)
                && cli(survivor, &["cluster", "info"]).contains("cluster_state:ok")
            {
                node.restart().await;
            }
        }
        let client = &clients[i % clients.len()];
        let proof = client.proof(&env);
        let response = env.send_dpop_to(instances[i % 2], "/dpop/x", &client.token, &proof).await;
        let status = response.status().as_u16();
        assert!(status == 200 || status == 503, "request {i}: {status} {}", response.text().await.unwrap());
        sent.push(Sent { at: Instant::now(), status });
        if status == 200 {
            accepted.push((i % clients.len(), proof));
            served_in_a_row += 1;
            if refused_once && served_in_a_row == 36 {
                break;
            }
        } else {
            refused_once = true;
            served_in_a_row = 0;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let killed_at = killed_at.unwrap();
    let refusals: Vec<&Sent> = sent.iter().filter(|s| s.status == 503).collect();
    let first_refusal = refusals.first().expect("the kill was noticed").at;
    let last_refusal = refusals.last().unwrap().at;
    assert!(first_refusal >= killed_at, "no refusal before the primary was killed");
    eprintln!(
        "cluster failover: {} of {} requests refused (503) over {:.1} s after the kill; served again {:.1} s after it",
        refusals.len(),
        sent.len(),
        last_refusal.duration_since(first_refusal).as_secs_f64(),
        last_refusal.duration_since(killed_at).as_secs_f64(),
    );
    for (n, (client, proof)) in accepted.iter().enumerate() {
        for instance in instances {
            let response = env.send_dpop_to(instance, "/dpop/x", &clients[*client].token, proof).await;
            assert_eq!(response.status(), 401, "accepted proof {n} of {} passed again", accepted.len());
        }
    }
}
