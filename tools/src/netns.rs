//! `cas local --netns`: every node in a Linux network namespace of its own, on a bridge, so the cluster runs over
//! real interfaces (veth pairs and a bridge, made with iproute2) instead of one loopback. Each node's link can be
//! shaped to a bandwidth (tc tbf on its veth), and each committee link can be given a one-way delay, jitter and loss.
//! The development kernels have no netem, so delay, jitter and loss come from a small UDP relay on each committee
//! link ([`relay`]), run inside the dialing node's namespace: the dialer talks to the relay, the relay forwards to
//! the other node from the dialer's own address (netio checks a peer's IP), and both directions wait the delay.
//!
//! Needs root (CAP_NET_ADMIN) and iproute2; [`Network::available`] says why not where it cannot run. Everything is
//! made under names unique to this process and removed when the [`Network`] is dropped (deleting a namespace
//! deletes its veth ends); a run killed before that leaves namespaces named `cas<pid>...` (`ip netns list`).

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// What each committee link and node interface is given.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LinkShape {
    /// One-way delay on each committee link, each direction.
    pub delay_ms: u64,
    /// Uniform jitter around the delay, +/- this many ms.
    pub jitter_ms: u64,
    /// Packets dropped on each committee link, per direction, in percent.
    pub loss_pct: f64,
    /// Each node's egress bandwidth (tbf on its veth); 0: unshaped.
    pub mbit: u64,
}

impl LinkShape {
    /// Whether committee links need the relay (any delay, jitter or loss).
    pub fn relayed(&self) -> bool {
        self.delay_ms > 0 || self.jitter_ms > 0 || self.loss_pct > 0.0
    }
}

/// The subnet on the bridge: nodes at .10 and up, the load generator at .2.
const SUBNET: [u8; 3] = [10, 99, 0];
const CLIENT_HOST: u8 = 2;
const NODE_HOST_BASE: u8 = 10;
/// Relays listen on the dialer's loopback at this port plus the other node's index.
const RELAY_PORT_BASE: u16 = 20_000;

/// The namespaces, bridge and relays of one run.
pub struct Network {
    prefix: String,
    nodes: usize,
    relays: Vec<Child>,
}

fn ip(args: &[&str]) -> Result<()> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .context("cannot run `ip` (iproute2)")?;
    if !output.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// Runs `args` (a program and its arguments: `ip ...` or `tc ...`) inside namespace `ns`.
fn in_ns(ns: &str, args: &[&str]) -> Result<()> {
    ip(&[&["netns", "exec", ns], args].concat())
}

impl Network {
    /// Why this machine cannot run namespaced clusters, if it cannot: not root, no iproute2, or namespaces refused.
    pub fn available() -> std::result::Result<(), String> {
        if unsafe { libc::geteuid() } != 0 {
            return Err("network namespaces need root (CAP_NET_ADMIN)".into());
        }
        let probe = format!("cas{}probe", std::process::id());
        ip(&["netns", "add", &probe])
            .map_err(|e| format!("cannot make a network namespace: {e:#}"))?;
        let _ = ip(&["netns", "del", &probe]);
        Ok(())
    }

    /// The namespace of node `i`.
    pub fn node_ns(&self, i: usize) -> String {
        format!("{}n{i}", self.prefix)
    }

    /// The namespace the load generator runs in.
    pub fn client_ns(&self) -> String {
        format!("{}cl", self.prefix)
    }

    fn switch_ns(&self) -> String {
        format!("{}sw", self.prefix)
    }

    /// Node `i`'s address on the bridge.
    pub fn node_ip(i: usize) -> Ipv4Addr {
        Ipv4Addr::new(SUBNET[0], SUBNET[1], SUBNET[2], NODE_HOST_BASE + i as u8)
    }

    /// The address node `dialer` dials to reach node `to`'s committee endpoint at `port`: the relay on its own
    /// loopback when links are relayed, else `to`'s address.
    pub fn dial_addr(shape: &LinkShape, to: usize, port: u16) -> SocketAddr {
        if shape.relayed() {
            SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::LOCALHOST,
                RELAY_PORT_BASE + to as u16,
            ))
        } else {
            SocketAddr::V4(SocketAddrV4::new(Network::node_ip(to), port))
        }
    }

    /// Makes the switch namespace with its bridge, a namespace per node and one for the load generator, each on the
    /// bridge by a veth pair, and shapes each node's egress.
    pub fn create(nodes: usize, shape: &LinkShape) -> Result<Network> {
        anyhow::ensure!(
            nodes + NODE_HOST_BASE as usize <= 250,
            "at most 240 namespaced nodes"
        );
        let network = Network {
            prefix: format!("cas{}", std::process::id()),
            nodes,
            relays: Vec::new(),
        };
        let switch = network.switch_ns();
        ip(&["netns", "add", &switch])?;
        in_ns(&switch, &["ip", "link", "add", "br0", "type", "bridge"])?;
        in_ns(&switch, &["ip", "link", "set", "br0", "up"])?;
        let hosts: Vec<(String, u8)> = (0..nodes)
            .map(|i| (network.node_ns(i), NODE_HOST_BASE + i as u8))
            .chain(std::iter::once((network.client_ns(), CLIENT_HOST)))
            .collect();
        for (index, (ns, host)) in hosts.iter().enumerate() {
            ip(&["netns", "add", ns])?;
            let outer = format!("v{index}");
            // Made in the switch namespace, the inner end moved into the host's namespace and renamed eth0.
            in_ns(
                &switch,
                &[
                    "ip", "link", "add", &outer, "type", "veth", "peer", "name", "inner",
                ],
            )?;
            in_ns(&switch, &["ip", "link", "set", "inner", "netns", ns])?;
            in_ns(&switch, &["ip", "link", "set", &outer, "master", "br0"])?;
            in_ns(&switch, &["ip", "link", "set", &outer, "up"])?;
            in_ns(ns, &["ip", "link", "set", "inner", "name", "eth0"])?;
            let address = format!("{}.{}.{}.{host}/24", SUBNET[0], SUBNET[1], SUBNET[2]);
            in_ns(ns, &["ip", "addr", "add", &address, "dev", "eth0"])?;
            in_ns(ns, &["ip", "link", "set", "eth0", "up"])?;
            in_ns(ns, &["ip", "link", "set", "lo", "up"])?;
            if shape.mbit > 0 && *host != CLIENT_HOST {
                let rate = format!("{}mbit", shape.mbit);
                in_ns(
                    ns,
                    &[
                        "tc", "qdisc", "add", "dev", "eth0", "root", "tbf", "rate", &rate, "burst",
                        "256kb", "latency", "100ms",
                    ],
                )?;
            }
        }
        Ok(network)
    }

    /// Starts a relay for every committee link that node `dialer` dials (to each `to` in `dials`), inside the
    /// dialer's namespace: it listens on the dialer's loopback and forwards to `to`'s committee endpoint.
    pub fn start_relays(
        &mut self,
        shape: &LinkShape,
        dialer: usize,
        dials: &[usize],
        peer_port: u16,
    ) -> Result<()> {
        for &to in dials {
            let listen = Network::dial_addr(shape, to, peer_port);
            let target = SocketAddr::V4(SocketAddrV4::new(Network::node_ip(to), peer_port));
            let child = Network::command_in(&self.node_ns(dialer))
                .arg(std::env::current_exe()?)
                .args([
                    "relay",
                    "--listen",
                    &listen.to_string(),
                    "--to",
                    &target.to_string(),
                ])
                .args(["--delay-ms", &shape.delay_ms.to_string()])
                .args(["--jitter-ms", &shape.jitter_ms.to_string()])
                .args(["--loss-pct", &shape.loss_pct.to_string()])
                .args(["--seed", &(dialer * 1_000 + to).to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("cannot start a link relay")?;
            self.relays.push(child);
        }
        Ok(())
    }

    /// A command run inside namespace `ns`.
    pub fn command_in(ns: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", ns]);
        command
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for relay in &mut self.relays {
            let _ = relay.kill();
            let _ = relay.wait();
        }
        for i in 0..self.nodes {
            let _ = ip(&["netns", "del", &self.node_ns(i)]);
        }
        let _ = ip(&["netns", "del", &self.client_ns()]);
        let _ = ip(&["netns", "del", &self.switch_ns()]);
    }
}

/// `cas relay`: forwards UDP datagrams between one client (the first address that sends to `listen`) and `to`,
/// each datagram waiting `delay_ms` +/- `jitter_ms` (uniform) and dropped with probability `loss_pct`, in both
/// directions. At most [`RELAY_QUEUE_MAX`] datagrams wait at once; more are dropped (a link's buffer).
pub fn relay(
    listen: SocketAddr,
    to: SocketAddr,
    delay_ms: u64,
    jitter_ms: u64,
    loss_pct: f64,
    seed: u64,
) -> Result<()> {
    let downstream =
        Arc::new(UdpSocket::bind(listen).with_context(|| format!("relay: cannot bind {listen}"))?);
    let upstream = Arc::new(UdpSocket::bind("0.0.0.0:0")?);
    upstream.connect(to)?;
    let client: Arc<Mutex<Option<SocketAddr>>> = Arc::new(Mutex::new(None));
    let queue = Arc::new((Mutex::new(Pending::default()), Condvar::new()));
    let rng = Arc::new(Mutex::new(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1));
    let schedule = {
        let queue = queue.clone();
        move |up: bool, bytes: Vec<u8>| {
            let mut state = rng.lock().expect("rng lock");
            let mut next = || {
                // xorshift64*: a fixed seed replays the same drops and delays.
                *state ^= *state >> 12;
                *state ^= *state << 25;
                *state ^= *state >> 27;
                state.wrapping_mul(0x2545_F491_4F6C_DD1D)
            };
            if loss_pct > 0.0 && (next() % 1_000_000) as f64 / 10_000.0 < loss_pct {
                return;
            }
            let jitter = if jitter_ms > 0 {
                (next() % (2 * jitter_ms * 1_000 + 1)) as i64 - (jitter_ms * 1_000) as i64
            } else {
                0
            };
            let wait_us = ((delay_ms * 1_000) as i64 + jitter).max(0) as u64;
            drop(state);
            let (lock, wake) = &*queue;
            let mut pending = lock.lock().expect("relay queue lock");
            if pending.heap.len() < RELAY_QUEUE_MAX {
                let seq = pending.seq;
                pending.seq += 1;
                pending.heap.push(std::cmp::Reverse((
                    Instant::now() + Duration::from_micros(wait_us),
                    seq,
                    up,
                    bytes,
                )));
                wake.notify_one();
            }
        }
    };
    let from_client = {
        let (downstream, client, schedule) = (downstream.clone(), client.clone(), schedule.clone());
        std::thread::spawn(move || {
            let mut buffer = vec![0u8; 65_536];
            loop {
                match downstream.recv_from(&mut buffer) {
                    Ok((len, from)) => {
                        *client.lock().expect("client lock") = Some(from);
                        schedule(true, buffer[..len].to_vec());
                    }
                    // An ICMP error for an earlier datagram (the client went away): a link loses it, goes on.
                    Err(_) => std::thread::sleep(Duration::from_millis(1)),
                }
            }
        })
    };
    let from_target = {
        let upstream = upstream.clone();
        std::thread::spawn(move || {
            let mut buffer = vec![0u8; 65_536];
            loop {
                match upstream.recv(&mut buffer) {
                    Ok(len) => schedule(false, buffer[..len].to_vec()),
                    // ECONNREFUSED: a datagram reached the target before it listened (a node starting). The
                    // sender retransmits; the relay must not die of it.
                    Err(_) => std::thread::sleep(Duration::from_millis(1)),
                }
            }
        })
    };
    let (lock, wake) = &*queue;
    loop {
        let mut pending = lock.lock().expect("relay queue lock");
        let due = loop {
            match pending.heap.peek() {
                Some(std::cmp::Reverse((at, ..))) if *at <= Instant::now() => {
                    break pending.heap.pop().expect("peeked").0;
                }
                Some(std::cmp::Reverse((at, ..))) => {
                    let wait = at.saturating_duration_since(Instant::now());
                    pending = wake
                        .wait_timeout(pending, wait)
                        .expect("relay queue lock")
                        .0;
                }
                None => pending = wake.wait(pending).expect("relay queue lock"),
            }
        };
        drop(pending);
        let (_, _, up, bytes) = due;
        if up {
            let _ = upstream.send(&bytes);
        } else if let Some(client) = *client.lock().expect("client lock") {
            let _ = downstream.send_to(&bytes, client);
        }
        if from_client.is_finished() || from_target.is_finished() {
            bail!("relay: a receiving thread ended");
        }
    }
}

/// Datagrams a relay holds at once.
const RELAY_QUEUE_MAX: usize = 65_536;

type Due = (Instant, u64, bool, Vec<u8>);

#[derive(Default)]
struct Pending {
    heap: std::collections::BinaryHeap<std::cmp::Reverse<Due>>,
    seq: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Datagrams cross the relay both ways, each after the delay; with 100% loss none does.
    #[test]
    fn the_relay_delays_both_directions_and_drops_at_its_loss_rate() {
        let target = UdpSocket::bind("127.0.0.1:0").unwrap();
        let target_addr = target.local_addr().unwrap();
        let listen = UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        std::thread::spawn(move || relay(listen, target_addr, 30, 0, 0.0, 1));
        std::thread::sleep(Duration::from_millis(100));
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        target
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let sent = Instant::now();
        client.send_to(b"ping", listen).unwrap();
        let mut buffer = [0u8; 16];
        let (len, relay_side) = target.recv_from(&mut buffer).unwrap();
        assert_eq!(&buffer[..len], b"ping");
        assert!(
            sent.elapsed() >= Duration::from_millis(30),
            "{:?}",
            sent.elapsed()
        );
        target.send_to(b"pong", relay_side).unwrap();
        let len = client.recv(&mut buffer).unwrap();
        assert_eq!(&buffer[..len], b"pong");
        assert!(
            sent.elapsed() >= Duration::from_millis(60),
            "{:?}",
            sent.elapsed()
        );

        // A target that is not listening yet (ICMP port unreachable) does not stop the relay.
        let late = UdpSocket::bind("127.0.0.1:0").unwrap();
        let late_addr = late.local_addr().unwrap();
        drop(late);
        let early = UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let relay_thread = std::thread::spawn(move || relay(early, late_addr, 0, 0, 0.0, 3));
        std::thread::sleep(Duration::from_millis(100));
        client.send_to(b"too early", early).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let late = UdpSocket::bind(late_addr).unwrap();
        late.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        client.send_to(b"in time", early).unwrap();
        let len = late.recv(&mut buffer).unwrap();
        assert_eq!(&buffer[..len], b"in time");
        assert!(
            !relay_thread.is_finished(),
            "the relay died of a refused datagram"
        );

        let lossy = UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        std::thread::spawn(move || relay(lossy, target_addr, 0, 0, 100.0, 2));
        std::thread::sleep(Duration::from_millis(100));
        target
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        client.send_to(b"lost", lossy).unwrap();
        assert!(
            target.recv_from(&mut buffer).is_err(),
            "a datagram crossed a 100% loss link"
        );
    }
}
