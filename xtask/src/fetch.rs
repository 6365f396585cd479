//! Downloads for `cargo xtask fetch-weights` and `fetch-data`: a progress bar, the sha256
//! verified before the file is moved into place, and resumable: an interrupted download keeps
//! its `.partial` file and the next run asks the server for the rest (HTTP Range). A download
//! whose checksum does not match leaves nothing behind.

use std::io::{Read, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

/// Downloads `url` to `out`, requiring the content's sha256 to be `sha256` (hex).
pub fn fetch(url: &str, sha256: &str, out: &Path) -> Result<(), String> {
    let want = sha256.trim().to_ascii_lowercase();
    if want.len() != 64 || !want.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!("--sha256 {sha256:?} is not 64 hex digits"));
    }
    if out.is_file() && hash_file(out)?.0 == want {
        eprintln!("{} is already there with the right checksum", out.display());
        return Ok(());
    }
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let partial = out.with_extension("partial");
    let got = download(url, &partial)?;
    if got != want {
        let _ = std::fs::remove_file(&partial);
        return Err(format!(
            "checksum mismatch for {url}: expected sha256 {want}, got {got}; nothing was saved"
        ));
    }
    std::fs::rename(&partial, out).map_err(|e| format!("{}: {e}", out.display()))?;
    eprintln!("saved {} (sha256 {got})", out.display());
    Ok(())
}

/// The sha256 (hex) and hasher state of a file's bytes, and its length.
fn hash_file(path: &Path) -> Result<(String, Sha256, u64), String> {
    let mut f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        len += n as u64;
    }
    Ok((hex(&h.clone().finalize()), h, len))
}

/// Brings `partial` to the whole of `url`'s content, continuing from what it holds; returns the
/// content's sha256. On a failure mid-way the bytes so far stay in `partial` for the next run.
fn download(url: &str, partial: &Path) -> Result<String, String> {
    let (mut hasher, mut have) = match partial.is_file() {
        true => {
            let (_, h, n) = hash_file(partial)?;
            (h, n)
        }
        false => (Sha256::new(), 0),
    };
    let mut request = ureq::get(url);
    if have > 0 {
        request = request.header("Range", &format!("bytes={have}-"));
    }
    let response = match request.call() {
        Ok(r) => r,
        // Everything was already there.
        Err(ureq::Error::StatusCode(416)) if have > 0 => return Ok(hex(&hasher.finalize())),
        Err(e) => return Err(format!("GET {url}: {e}")),
    };
    let resumed = have > 0 && response.status().as_u16() == 206;
    if have > 0 && !resumed {
        eprintln!("the server does not resume downloads; starting {url} again");
        (hasher, have) = (Sha256::new(), 0);
    }
    if resumed {
        eprintln!("resuming after {have} bytes");
    }
    let length = response
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let bar = match length {
        Some(n) => indicatif::ProgressBar::new(have + n),
        None => indicatif::ProgressBar::new_spinner(),
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec}, eta {eta})",
        )
        .expect("template")
        .progress_chars("=> "),
    );
    bar.set_message(
        partial
            .file_stem()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    );
    bar.set_position(have);
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(resumed)
        .truncate(!resumed)
        .open(partial)
        .map_err(|e| format!("{}: {e}", partial.display()))?;
    let mut body = response.into_body().into_reader();
    let mut buf = vec![0u8; 1 << 16];
    let mut received = 0u64;
    let interrupted = |e: String, received: u64| {
        format!(
            "{e}; the {} bytes so far are kept in {}: run the same command again to resume",
            have + received,
            partial.display()
        )
    };
    loop {
        let n = match body.read(&mut buf) {
            Ok(n) => n,
            Err(e) => return Err(interrupted(format!("reading {url}: {e}"), received)),
        };
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        if let Err(e) = file.write_all(&buf[..n]) {
            return Err(interrupted(format!("{}: {e}", partial.display()), received));
        }
        received += n as u64;
        bar.inc(n as u64);
    }
    bar.finish_and_clear();
    if let Some(n) = length.filter(|n| received < *n) {
        return Err(interrupted(
            format!("{url} ended after {received} of {n} bytes"),
            received,
        ));
    }
    file.sync_all()
        .map_err(|e| format!("{}: {e}", partial.display()))?;
    Ok(hex(&hasher.finalize()))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A loopback HTTP server for the download tests.
#[cfg(test)]
pub(crate) mod loopback {
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::sync::{Arc, Mutex};

    /// Serves `body` at /file for `requests` requests (a `Range: bytes=N-` request gets 206
    /// and the rest), 404 elsewhere. `cut[i]`, where given, drops the i-th connection after that
    /// many body bytes. Returns the base URL and each request's Range header.
    pub fn serve(
        body: Vec<u8>,
        requests: usize,
        cut: Vec<Option<usize>>,
    ) -> (String, Arc<Mutex<Vec<Option<String>>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let addr = listener.local_addr().expect("address");
        let ranges = Arc::new(Mutex::new(Vec::new()));
        let seen = ranges.clone();
        std::thread::spawn(move || {
            for (i, stream) in listener.incoming().take(requests).enumerate() {
                let mut s = stream.expect("connection");
                let mut req = Vec::new();
                let mut chunk = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => req.extend_from_slice(&chunk[..n]),
                    }
                }
                let req = String::from_utf8_lossy(&req).into_owned();
                let range = req.lines().find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("range")
                        .then(|| v.trim().to_string())
                });
                seen.lock().unwrap().push(range.clone());
                if !req.starts_with("GET /file ") {
                    let _ = write!(
                        s,
                        "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    );
                    continue;
                }
                let from = range
                    .as_deref()
                    .and_then(|r| r.strip_prefix("bytes="))
                    .and_then(|r| r.strip_suffix('-'))
                    .and_then(|r| r.parse::<usize>().ok());
                let (status, rest) = match from {
                    Some(f) => ("206 Partial Content", &body[f.min(body.len())..]),
                    None => ("200 OK", &body[..]),
                };
                let _ = write!(
                    s,
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    rest.len()
                );
                let n = cut.get(i).copied().flatten().unwrap_or(rest.len());
                let _ = s.write_all(&rest[..n.min(rest.len())]);
            }
        });
        (format!("http://{addr}"), ranges)
    }
}

#[cfg(test)]
mod tests {
    use super::loopback::serve;
    use super::*;

    fn tmp_dir(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("xtask-fetch-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn downloads_verifies_and_refuses_bad_checksums() {
        let body: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let good = hex(&Sha256::digest(&body));
        let (base, _) = serve(body.clone(), 3, vec![]);
        let dir = tmp_dir("ok");
        let out = dir.join("w.safetensors");

        fetch(&format!("{base}/file"), &good, &out).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), body);

        let bad = "0".repeat(64);
        let other = dir.join("x.safetensors");
        let err = fetch(&format!("{base}/file"), &bad, &other).unwrap_err();
        assert!(
            err.contains("checksum mismatch") && err.contains(&good),
            "{err}"
        );
        assert!(
            !other.exists() && !other.with_extension("partial").exists(),
            "nothing is left behind"
        );

        let err = fetch(&format!("{base}/missing"), &good, &other).unwrap_err();
        assert!(err.contains("404") || err.contains("missing"), "{err}");

        // Already there with the right checksum: no request needed (the server is done).
        fetch(&format!("{base}/file"), &good, &out).unwrap();
        assert!(fetch("http://127.0.0.1:9/file", "xyz", &out)
            .unwrap_err()
            .contains("64 hex digits"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_interrupted_download_resumes_where_it_stopped() {
        let body: Vec<u8> = (0..300_000u32).map(|i| (i * 13 % 253) as u8).collect();
        let good = hex(&Sha256::digest(&body));
        // The first connection drops after 120,000 bytes, the second after 50,000 more.
        let (base, ranges) = serve(body.clone(), 3, vec![Some(120_000), Some(50_000)]);
        let dir = tmp_dir("resume");
        let out = dir.join("d.zip");
        let partial = out.with_extension("partial");
        for kept in [120_000, 170_000] {
            let err = fetch(&format!("{base}/file"), &good, &out).unwrap_err();
            assert!(err.contains("run the same command again"), "{err}");
            assert!(
                !out.exists(),
                "nothing is in place before the checksum is checked"
            );
            assert_eq!(std::fs::read(&partial).unwrap(), body[..kept]);
        }
        fetch(&format!("{base}/file"), &good, &out).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), body);
        assert!(!partial.exists());
        assert_eq!(
            *ranges.lock().unwrap(),
            [
                None,
                Some("bytes=120000-".into()),
                Some("bytes=170000-".into())
            ],
            "each run asks for the rest only"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
