//! `cargo xtask fetch-weights`: download a weights file with a progress bar, verify its sha256,
//! and only then move it into place. A failed or mismatching download leaves nothing behind.

use std::io::{Read, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

/// Downloads `url` to `out`, requiring the content's sha256 to be `sha256` (hex).
pub fn fetch(url: &str, sha256: &str, out: &Path) -> Result<(), String> {
    let want = sha256.trim().to_ascii_lowercase();
    if want.len() != 64 || !want.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!("--sha256 {sha256:?} is not 64 hex digits"));
    }
    if out.is_file()
        && hex(&Sha256::digest(
            std::fs::read(out).map_err(|e| format!("{}: {e}", out.display()))?,
        )) == want
    {
        eprintln!("{} is already there with the right checksum", out.display());
        return Ok(());
    }
    let response = ureq::get(url)
        .call()
        .map_err(|e| format!("GET {url}: {e}"))?;
    let total = response
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let bar = match total {
        Some(n) => indicatif::ProgressBar::new(n),
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
        out.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    );
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let partial = out.with_extension("partial");
    let result = (|| -> Result<String, String> {
        let mut file =
            std::fs::File::create(&partial).map_err(|e| format!("{}: {e}", partial.display()))?;
        let mut body = response.into_body().into_reader();
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = body
                .read(&mut buf)
                .map_err(|e| format!("reading {url}: {e}"))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            file.write_all(&buf[..n])
                .map_err(|e| format!("{}: {e}", partial.display()))?;
            bar.inc(n as u64);
        }
        file.sync_all()
            .map_err(|e| format!("{}: {e}", partial.display()))?;
        Ok(hex(&hasher.finalize()))
    })();
    bar.finish_and_clear();
    let got = match result {
        Ok(h) => h,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    };
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

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A one-request-at-a-time HTTP server on loopback serving `body` at /file, 404 elsewhere.
    fn serve(body: Vec<u8>, requests: usize) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let addr = listener.local_addr().expect("address");
        std::thread::spawn(move || {
            for stream in listener.incoming().take(requests) {
                let mut s = stream.expect("connection");
                let mut req = [0u8; 2048];
                let n = s.read(&mut req).unwrap_or(0);
                let line = String::from_utf8_lossy(&req[..n])
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_string();
                if line.starts_with("GET /file ") {
                    let _ = write!(
                        s,
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = s.write_all(&body);
                } else {
                    let _ = write!(
                        s,
                        "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    );
                }
            }
        });
        format!("http://{addr}")
    }

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
        let base = serve(body.clone(), 3);
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
}
