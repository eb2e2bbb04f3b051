//! Rendezvous, collectives, timeouts and the launcher with real processes on 127.0.0.1: this test
//! binary starts copies of itself (the `worker_process` entry below, which does nothing unless
//! `LDM_DIST_TEST_SCENARIO` is set) as the ranks, and checks what each printed and how long the
//! failure paths took.

use std::ffi::OsString;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ldm_dist::group::fingerprint_f32;
use ldm_dist::launch::{launch, LaunchOptions};
use ldm_dist::{rendezvous, RendezvousOptions, WorldSpec};

const SCENARIO: &str = "LDM_DIST_TEST_SCENARIO";

fn spec() -> WorldSpec {
    WorldSpec::from_env().expect("worker environment")
}

fn opts(fingerprint: u64) -> RendezvousOptions {
    RendezvousOptions {
        timeout: Duration::from_secs(2),
        op_timeout: Duration::from_secs(20),
        fingerprint,
        blob: b"unique-id-from-rank-0".to_vec(),
    }
}

fn report(r: Result<String, String>) {
    match r {
        Ok(s) => println!("RESULT ok {s}"),
        Err(e) => println!("RESULT err {e}"),
    }
}

/// What one rank does in each scenario (runs only inside a worker process).
fn worker(scenario: &str) -> Result<String, String> {
    let spec = spec();
    let fp = if scenario == "fingerprint" && spec.rank == 1 {
        99
    } else {
        7
    };
    let (g, blob) = rendezvous(&spec, &opts(fp)).map_err(|e| e.to_string())?;
    match scenario {
        "collectives" => {
            let rank = g.rank() as f32;
            let mut v: Vec<f32> = (0..5000)
                .map(|i| (rank + 1.0) * 0.1 + i as f32 * 1e-3)
                .collect();
            g.all_reduce_mean(&mut v).map_err(|e| e.to_string())?;
            g.barrier().map_err(|e| e.to_string())?;
            let mut b: Vec<f32> = if g.is_root() {
                vec![1.5, -2.0, 3.25]
            } else {
                vec![0.0; 3]
            };
            g.broadcast(&mut b).map_err(|e| e.to_string())?;
            let mut bytes = if g.is_root() {
                b"config".to_vec()
            } else {
                Vec::new()
            };
            g.broadcast_bytes(&mut bytes).map_err(|e| e.to_string())?;
            g.check_identical("the parameters", fingerprint_f32(&[&v]))
                .map_err(|e| e.to_string())?;
            let differs = g
                .check_identical("the rank numbers", g.rank() as u64)
                .map_err(|e| e.to_string())
                .unwrap_err();
            Ok(format!(
                "blob={} v0={} v4999={} bits={:016x} b={b:?} bytes={} differs=[{differs}]",
                String::from_utf8_lossy(&blob),
                v[0],
                v[4999],
                fingerprint_f32(&[&v]),
                String::from_utf8_lossy(&bytes)
            ))
        }
        "rank_dies" => {
            if g.rank() == 2 {
                std::process::exit(3);
            }
            let mut v = vec![1.0f32; 100];
            g.all_reduce_mean(&mut v)
                .map(|_| "survived".to_string())
                .map_err(|e| e.to_string())
        }
        "launch_fail" => {
            if g.rank() == 1 {
                std::process::exit(7);
            }
            // Rank 0 does not notice (no collective) and is killed after the grace period.
            std::thread::sleep(Duration::from_secs(60));
            Ok("slept".into())
        }
        _ => Ok(format!("joined blob={}", String::from_utf8_lossy(&blob))),
    }
}

/// Entry point of the worker processes; returns at once in a normal test run.
#[test]
fn worker_process() {
    if let Ok(s) = std::env::var(SCENARIO) {
        report(worker(&s));
    }
}

fn start(scenario: &str, rank: usize, world: usize, port: u16) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "worker_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(SCENARIO, scenario)
        .env("RANK", rank.to_string())
        .env("WORLD_SIZE", world.to_string())
        .env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", port.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn result(c: Child) -> String {
    let o = c.wait_with_output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    out.lines()
        .find_map(|l| l.split_once("RESULT ").map(|(_, r)| r.to_string()))
        .unwrap_or_else(|| format!("no result; exit {:?}: {out}", o.status))
}

/// Starts ranks with the given world sizes and returns each one's result and the wall time.
fn run(scenario: &str, worlds: &[usize]) -> (Vec<String>, Duration) {
    let port = ldm_dist::launch::free_port().unwrap();
    let t = Instant::now();
    let children: Vec<Child> = worlds
        .iter()
        .enumerate()
        .map(|(r, &w)| start(scenario, r, w, port))
        .collect();
    let res = children.into_iter().map(result).collect();
    (res, t.elapsed())
}

#[test]
fn rendezvous_and_collectives_agree_bitwise_on_every_rank() {
    let (res, _) = run("collectives", &[3, 3, 3]);
    for r in &res {
        assert!(r.starts_with("ok blob=unique-id-from-rank-0"), "{res:?}");
        assert!(r.contains("b=[1.5, -2.0, 3.25] bytes=config"), "{r}");
        assert!(
            r.contains("differs=[rank 0: the rank numbers on rank(s) 1, 2 differ from rank 0's]")
                || r.contains("the rank numbers on rank(s) 1, 2 differ from rank 0's"),
            "{r}"
        );
    }
    // mean of 0.1, 0.2, 0.3 (+ i/1000); identical bits everywhere.
    let bits: Vec<&str> = res
        .iter()
        .map(|r| r.split("bits=").nth(1).unwrap().split(' ').next().unwrap())
        .collect();
    assert!(bits.iter().all(|b| *b == bits[0]), "{res:?}");
    let v0: f32 = res[0]
        .split("v0=")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!((v0 - 0.2).abs() < 1e-6, "{v0}");
}

#[test]
fn a_missing_rank_fails_every_other_rank_in_bounded_time_naming_it() {
    let port = ldm_dist::launch::free_port().unwrap();
    let t = Instant::now();
    // World of 3; rank 2 never starts.
    let children: Vec<Child> = (0..2).map(|r| start("join", r, 3, port)).collect();
    let res: Vec<String> = children.into_iter().map(result).collect();
    let took = t.elapsed();
    assert!(
        res[0].contains("rank(s) 2 of 3 did not join within 2.0 s"),
        "{res:?}"
    );
    assert!(
        res[1].contains("rank 0 stopped the rendezvous: rank(s) 2 of 3 did not join"),
        "{res:?}"
    );
    assert!(took < Duration::from_secs(10), "took {took:?}");
    // Rank 0 missing: the others give up at their deadline.
    let t = Instant::now();
    let res = result(start("join", 1, 2, ldm_dist::launch::free_port().unwrap()));
    assert!(
        res.contains("rank 1: rank 0 did not answer within 2.0 s"),
        "{res}"
    );
    assert!(t.elapsed() < Duration::from_secs(10));
}

#[test]
fn wrong_world_size_or_configuration_is_a_clear_error_on_both_sides() {
    let (res, took) = run("join", &[2, 3]);
    for r in &res {
        assert!(
            r.contains("rank 1 was started with world size 3, rank 0 with 2"),
            "{res:?}"
        );
    }
    assert!(took < Duration::from_secs(10));
    let (res, _) = run("fingerprint", &[2, 2]);
    for r in &res {
        assert!(
            r.contains("rank 1 runs another configuration than rank 0"),
            "{res:?}"
        );
    }
}

#[test]
fn a_rank_that_dies_stops_the_others_with_its_name() {
    let (res, took) = run("rank_dies", &[3, 3, 3]);
    assert!(
        res[0].contains("rank 2 is gone during all-reduce #1"),
        "{res:?}"
    );
    assert!(
        res[1].contains("rank 0 stopped the run: rank 2 is gone"),
        "{res:?}"
    );
    assert!(res[2].starts_with("no result"), "{res:?}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
}

#[test]
fn launcher_stops_the_other_ranks_and_names_the_failed_one() {
    let t = Instant::now();
    let o = LaunchOptions {
        program: std::env::current_exe().unwrap(),
        args: [
            "--exact",
            "worker_process",
            "--nocapture",
            "--test-threads=1",
        ]
        .map(OsString::from)
        .to_vec(),
        nproc: 2,
        env: vec![(SCENARIO.into(), "launch_fail".into())],
        grace: Duration::from_secs(1),
    };
    let e = launch(&o).unwrap_err().to_string();
    assert!(
        e.contains("rank 1 failed first (exit status 7)") && e.contains("were killed"),
        "{e}"
    );
    assert!(
        t.elapsed() < Duration::from_secs(15),
        "took {:?}",
        t.elapsed()
    );
    let ok = LaunchOptions {
        env: vec![(SCENARIO.into(), "join".into())],
        ..o
    };
    launch(&ok).unwrap();
}
