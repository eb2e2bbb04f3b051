//! The download path against a loopback HTTP server (127.0.0.1, bounded in connections and
//! time; no other network): resume after a cut transfer, md5 refusal, safe extraction that
//! refuses malicious archives, and no repeat of a finished job.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ldm_trainer::data::download::{download_dataset, download_file, extract_tar, DownloadOptions};
use ldm_trainer::data::DataError;

/// What the server saw: one Range header (or None) per request.
type Log = Arc<Mutex<Vec<Option<String>>>>;

/// Serve `body` at any path. Response `i` is cut (connection closed) after `cut[i]` bytes of
/// body when given. Stops after `max_requests` requests or 20 s.
fn serve(body: Vec<u8>, cut: Vec<Option<usize>>, status_override: Option<u16>, max_requests: usize) -> (String, Log) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}/data/Task01_Test.tar", listener.local_addr().unwrap());
    let log: Log = Arc::new(Mutex::new(Vec::new()));
    let log2 = log.clone();
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut served = 0;
        while served < max_requests && Instant::now() < deadline {
            match listener.accept() {
                Ok((stream, _)) => {
                    let cut_at = cut.get(served).copied().flatten();
                    served += 1;
                    handle(stream, &body, cut_at, status_override, &log2);
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    (url, log)
}

/// Answer one request; its Range header is logged before the response goes out, so a client
/// that has its answer always finds the request in the log.
fn handle(mut stream: TcpStream, body: &[u8], cut: Option<usize>, status_override: Option<u16>, log: &Log) {
    stream.set_nonblocking(false).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut range = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("range:") {
            range = Some(v.trim().to_string());
        }
    }
    log.lock().unwrap().push(range.clone());
    if let Some(code) = status_override {
        let _ = write!(
            stream,
            "HTTP/1.1 {code} Nope\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        return;
    }
    let start = range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.trim_end_matches('-').parse::<usize>().ok())
        .unwrap_or(0);
    let head = if range.is_some() {
        format!(
            "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {}-{}/{}\r\nConnection: close\r\n\r\n",
            body.len() - start,
            start,
            body.len() - 1,
            body.len()
        )
    } else {
        format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
    };
    let _ = stream.write_all(head.as_bytes());
    let rest = &body[start..];
    let n = cut.unwrap_or(rest.len()).min(rest.len());
    let _ = stream.write_all(&rest[..n]);
    let _ = stream.flush();
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

/// A small Task01-like archive: Task01_Test/dataset.json and two images, with some bulk.
fn good_archive() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let add = |b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, path, data).unwrap();
    };
    add(
        &mut b,
        "Task01_Test/dataset.json",
        br#"{"training": [{"image": "./imagesTr/a.nii.gz"}]}"#,
    );
    let bulk: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    add(&mut b, "Task01_Test/imagesTr/a.nii.gz", &bulk);
    add(&mut b, "Task01_Test/imagesTr/b.nii.gz", &bulk[..1000]);
    b.into_inner().unwrap()
}

fn md5_hex(d: &[u8]) -> String {
    format!("{:x}", md5::compute(d))
}

fn opts(url: &str, md5: &str, retries: u32) -> DownloadOptions {
    DownloadOptions {
        url: url.to_string(),
        md5: Some(md5.to_string()),
        retries,
        backoff: Duration::from_millis(0),
        read_timeout: Duration::from_secs(5),
        progress: false,
        remove_archive: false,
    }
}

#[test]
fn cut_transfer_resumes_and_finished_job_is_not_repeated() {
    let body = good_archive();
    let (url, log) = serve(body.clone(), vec![Some(body.len() / 2), None], None, 2);
    let tmp = tempfile::tempdir().unwrap();
    let root = download_dataset(tmp.path(), &opts(&url, &md5_hex(&body), 3)).unwrap();
    assert_eq!(root, tmp.path().join("Task01_Test"));
    let ranges = log.lock().unwrap().clone();
    assert_eq!(ranges.len(), 2, "{ranges:?}");
    assert_eq!(ranges[0], None);
    assert_eq!(
        ranges[1].as_deref(),
        Some(format!("bytes={}-", body.len() / 2).as_str())
    );
    assert_eq!(std::fs::read(tmp.path().join("Task01_Test.tar")).unwrap(), body);
    assert_eq!(
        std::fs::metadata(root.join("imagesTr/a.nii.gz")).unwrap().len(),
        300_000
    );
    // a second run finds the finished job and makes no request (the server would refuse: it
    // stopped after two requests, and a request would hang until the read timeout)
    let t = Instant::now();
    let again = download_dataset(tmp.path(), &opts(&url, &md5_hex(&body), 0)).unwrap();
    assert_eq!(again, root);
    assert!(t.elapsed() < Duration::from_secs(2));
    assert_eq!(log.lock().unwrap().len(), 2);
}

#[test]
fn partial_file_resumes_in_a_later_run() {
    let body = good_archive();
    let (url, log) = serve(body.clone(), vec![Some(1000), None], None, 2);
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("x.tar");
    let err = download_file(&dest, &opts(&url, &md5_hex(&body), 0)).unwrap_err();
    assert!(matches!(err, DataError::Download { .. }), "{err}");
    assert!(!dest.exists());
    assert_eq!(std::fs::metadata(tmp.path().join("x.tar.part")).unwrap().len(), 1000);
    download_file(&dest, &opts(&url, &md5_hex(&body), 0)).unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), body);
    assert_eq!(log.lock().unwrap()[1].as_deref(), Some("bytes=1000-"));
}

#[test]
fn wrong_checksum_is_refused_and_the_file_not_used() {
    let body = good_archive();
    let (url, _log) = serve(body.clone(), vec![], None, 1);
    let tmp = tempfile::tempdir().unwrap();
    let err = download_dataset(tmp.path(), &opts(&url, &md5_hex(b"something else"), 0)).unwrap_err();
    match &err {
        DataError::Checksum { moved_to, .. } => assert!(moved_to.exists()),
        e => panic!("expected a checksum error, got {e}"),
    }
    assert!(err.to_string().contains("md5 mismatch"));
    assert!(!tmp.path().join("Task01_Test.tar").exists());
    assert!(!tmp.path().join("Task01_Test").exists(), "nothing may be extracted");
}

#[test]
fn http_errors_are_reported() {
    let (url, log) = serve(vec![], vec![], Some(404), 1);
    let tmp = tempfile::tempdir().unwrap();
    let err = download_file(&tmp.path().join("x.tar"), &opts(&url, &md5_hex(b""), 3)).unwrap_err();
    assert!(err.to_string().contains("404"), "{err}");
    assert_eq!(log.lock().unwrap().len(), 1, "a 404 is not retried");
}

/// A tar entry with a raw name (the tar crate's builder refuses unsafe names).
fn raw_entry(b: &mut tar::Builder<Vec<u8>>, name: &str, kind: tar::EntryType, link: Option<&str>, data: &[u8]) {
    let mut h = tar::Header::new_old();
    {
        let old = h.as_old_mut();
        old.name[..name.len()].copy_from_slice(name.as_bytes());
        if let Some(l) = link {
            old.linkname[..l.len()].copy_from_slice(l.as_bytes());
        }
    }
    h.set_entry_type(kind);
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    b.append(&h, data).unwrap();
}

fn archive_with(entries: &[(&str, tar::EntryType, Option<&str>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    raw_entry(&mut b, "ok.txt", tar::EntryType::Regular, None, b"fine");
    for (name, kind, link) in entries {
        let data: &[u8] = if *kind == tar::EntryType::Regular { b"evil" } else { b"" };
        raw_entry(&mut b, name, *kind, *link, data);
    }
    b.into_inner().unwrap()
}

fn list_all(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() && !p.is_symlink() {
            out.extend(list_all(&p));
        }
        out.push(p);
    }
    out
}

#[test]
fn malicious_archives_are_refused_with_nothing_written() {
    use tar::EntryType::{Link, Regular, Symlink};
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("path traversal", archive_with(&[("sub/../../evil.txt", Regular, None)])),
        (
            "absolute path",
            archive_with(&[("/tmp/brats-ldm-evil.txt", Regular, None)]),
        ),
        (
            "symlink out",
            archive_with(&[("link", Symlink, Some("../outside")), ("link/evil.txt", Regular, None)]),
        ),
        ("absolute symlink", archive_with(&[("link", Symlink, Some("/etc"))])),
        ("hard link out", archive_with(&[("hl", Link, Some("../../etc/passwd"))])),
        ("device", archive_with(&[("dev", tar::EntryType::Char, None)])),
    ];
    for (what, bytes) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let archive = tmp.path().join("bad.tar");
        std::fs::write(&archive, &bytes).unwrap();
        let dir = tmp.path().join("out");
        let err = extract_tar(&archive, &dir).unwrap_err();
        assert!(matches!(err, DataError::UnsafeArchive { .. }), "{what}: {err}");
        assert!(
            !dir.exists() || list_all(&dir).is_empty(),
            "{what}: something was written"
        );
        let mut top: Vec<_> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        top.sort();
        assert_eq!(
            top,
            vec![std::ffi::OsString::from("bad.tar")],
            "{what}: written outside DIR"
        );
    }
    assert!(!Path::new("/tmp/brats-ldm-evil.txt").exists());
    // through the whole download path too: verified, then refused at extraction
    let bytes = archive_with(&[("../evil.txt", Regular, None)]);
    let (url, _log) = serve(bytes.clone(), vec![], None, 1);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    let err = download_dataset(&dir, &opts(&url, &md5_hex(&bytes), 0)).unwrap_err();
    assert!(err.to_string().contains("unsafe archive entry"), "{err}");
    assert!(!tmp.path().join("evil.txt").exists());
    assert!(!dir.join(".brats-ldm-download.json").exists());
}

#[test]
fn links_inside_the_folder_are_extracted() {
    use tar::EntryType::{Link, Regular, Symlink};
    let bytes = archive_with(&[
        ("d/f.txt", Regular, None),
        ("d/s", Symlink, Some("f.txt")),
        ("h.txt", Link, Some("ok.txt")),
    ]);
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("good.tar");
    std::fs::write(&archive, &bytes).unwrap();
    let dir = tmp.path().join("out");
    assert_eq!(extract_tar(&archive, &dir).unwrap(), 4);
    assert_eq!(std::fs::read(dir.join("d/s")).unwrap(), b"evil");
    assert_eq!(std::fs::read(dir.join("h.txt")).unwrap(), b"fine");
}

#[test]
fn download_command_end_to_end() {
    let body = good_archive();
    let (url, _log) = serve(body.clone(), vec![], None, 1);
    let tmp = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_brats-ldm");
    // a custom URL needs an md5 (or --no-verify)
    let o = std::process::Command::new(bin)
        .args(["download", "--dir"])
        .arg(tmp.path())
        .args(["--url", &url])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--md5"));
    let o = std::process::Command::new(bin)
        .args(["download", "--dir"])
        .arg(tmp.path())
        .args(["--url", &url, "--md5", &md5_hex(&body), "--remove-archive"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("Task01_Test"));
    assert!(tmp.path().join("Task01_Test/dataset.json").is_file());
    assert!(!tmp.path().join("Task01_Test.tar").exists());
}
