//! `cargo xtask fetch-data`: the book's cats-vs-dogs split from a public copy of the Asirra
//! images (Microsoft's `kagglecatsanddogs_5340.zip`, the 25,000 pictures Kaggle's "Dogs vs.
//! Cats" used), downloaded resumably and checksum-verified, then split the book's way: per class,
//! in file-number order, the first 1000 readable images for train, the next 500 for validation
//! and the next 500 for test.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Microsoft's download of the Asirra images (PetImages/Cat/N.jpg, PetImages/Dog/N.jpg, 787 MiB).
pub const PINNED_URL: &str = "https://download.microsoft.com/download/3/E/1/3E1C3F21-ECDB-4869-8368-6DEBA77B919F/kagglecatsanddogs_5340.zip";
/// Its sha256, as GoMLX's dogsvscats example pins it.
pub const PINNED_SHA256: &str = "b7974bd00a84a99921f36ee4403f089853777b5ae8d151c76a86e64900334af9";

/// Images per class in each split.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Split {
    pub train: usize,
    pub validation: usize,
    pub test: usize,
}

impl Split {
    /// "1000,500,500".
    pub fn parse(s: &str) -> Result<Split, String> {
        let parts: Vec<usize> = s
            .split(',')
            .map(|p| p.trim().parse::<usize>())
            .collect::<Result<_, _>>()
            .map_err(|_| format!("--split {s:?}: expected TRAIN,VALIDATION,TEST counts per class, e.g. 1000,500,500"))?;
        match parts[..] {
            [train, validation, test] if train > 0 && validation > 0 && test > 0 => Ok(Split {
                train,
                validation,
                test,
            }),
            _ => Err(format!(
                "--split {s:?}: expected three counts per class above 0, e.g. 1000,500,500"
            )),
        }
    }

    fn splits(self) -> [(&'static str, usize); 3] {
        [
            ("train", self.train),
            ("validation", self.validation),
            ("test", self.test),
        ]
    }

    fn total(self) -> usize {
        self.train + self.validation + self.test
    }
}

/// The archive's folder per class, the split's folder and the file prefix (Kaggle's names).
const CLASSES: [(&str, &str, &str); 2] = [("Cat", "cats", "cat"), ("Dog", "dogs", "dog")];

pub struct FetchData {
    pub url: String,
    pub sha256: String,
    /// The prepared split's folder.
    pub to: PathBuf,
    pub split: Split,
    /// Keep the downloaded archive after the split is made.
    pub keep_download: bool,
}

/// Downloads (or resumes) the archive beside `to`, makes the split in `to.partial` and renames
/// it to `to` once complete, so `to` is never half made. A complete `to` is left as it is; any
/// other `to` is never touched.
pub fn fetch_data(f: &FetchData) -> Result<(), String> {
    if f.to.exists() {
        return match check_split(&f.to, f.split) {
            Ok(()) => {
                eprintln!("{} already holds the split", f.to.display());
                Ok(())
            }
            Err(e) => Err(format!(
                "{} exists but is not the split this makes ({e}); nothing was changed: remove it or choose another --to",
                f.to.display()
            )),
        };
    }
    let zip =
        f.to.parent()
            .unwrap_or(Path::new("."))
            .join("downloads")
            .join(
                f.url
                    .rsplit('/')
                    .next()
                    .filter(|n| !n.is_empty())
                    .unwrap_or("cats-and-dogs.zip"),
            );
    crate::fetch::fetch(&f.url, &f.sha256, &zip)?;
    let partial = f.to.with_extension("partial");
    if partial.exists() {
        // A split made by a run that was stopped: it is quicker to make it again than to check it.
        std::fs::remove_dir_all(&partial).map_err(|e| format!("{}: {e}", partial.display()))?;
    }
    let skipped = split_archive(&zip, &partial, f.split)?;
    std::fs::rename(&partial, &f.to).map_err(|e| format!("{}: {e}", f.to.display()))?;
    for s in &skipped {
        eprintln!("skipped {s}");
    }
    eprintln!(
        "{}: train/validation/test with {}/{}/{} images per class ({} unreadable skipped)",
        f.to.display(),
        f.split.train,
        f.split.validation,
        f.split.test,
        skipped.len()
    );
    if f.keep_download {
        eprintln!("the archive stays in {}", zip.display());
    } else {
        std::fs::remove_file(&zip).map_err(|e| format!("{}: {e}", zip.display()))?;
        eprintln!("removed {} (--keep-download keeps it)", zip.display());
    }
    Ok(())
}

/// Ok where `dir` holds exactly the split's counts in each class folder.
fn check_split(dir: &Path, split: Split) -> Result<(), String> {
    for (name, n) in split.splits() {
        for (_, class, _) in CLASSES {
            let d = dir.join(name).join(class);
            let found = std::fs::read_dir(&d)
                .map_err(|e| format!("{}: {e}", d.display()))?
                .count();
            if found != n {
                return Err(format!("{} holds {found} files, not {n}", d.display()));
            }
        }
    }
    Ok(())
}

/// Writes the split of the archive's images into `to`; returns the archive entries skipped as
/// unreadable (the archive has a few: empty files, files that are not JPEGs).
fn split_archive(zip: &Path, to: &Path, split: Split) -> Result<Vec<String>, String> {
    let file = std::fs::File::open(zip).map_err(|e| format!("{}: {e}", zip.display()))?;
    let mut archive = zip::ZipArchive::new(std::io::BufReader::new(file))
        .map_err(|e| format!("{}: not a readable zip archive: {e}", zip.display()))?;
    // Per class, the entries PetImages/<Class>/<N>.jpg by N.
    let mut entries: BTreeMap<&str, BTreeMap<u64, usize>> = BTreeMap::new();
    for i in 0..archive.len() {
        let name = archive
            .name_for_index(i)
            .ok_or_else(|| format!("{}: entry {i} has no name", zip.display()))?
            .map_err(|e| format!("{}: entry {i}: {e}", zip.display()))?
            .to_string();
        let parts: Vec<&str> = name.split('/').collect();
        if let [_, folder, file] = parts[..] {
            if let Some((class, _, _)) = CLASSES.iter().find(|(c, _, _)| *c == folder) {
                if let Some(n) = file.strip_suffix(".jpg").and_then(|n| n.parse().ok()) {
                    entries.entry(*class).or_default().insert(n, i);
                }
            }
        }
    }
    let bar = indicatif::ProgressBar::new((2 * split.total()) as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("splitting [{bar:30}] {pos}/{len} ({eta})")
            .expect("template")
            .progress_chars("=> "),
    );
    let mut skipped = Vec::new();
    for (folder, class, prefix) in CLASSES {
        let found = entries.get(folder).cloned().unwrap_or_default();
        let mut targets = split
            .splits()
            .into_iter()
            .flat_map(|(name, n)| std::iter::repeat_n(name, n));
        let mut next = targets.next();
        let mut placed = 0;
        for (n, i) in found {
            let Some(split_name) = next else { break };
            let mut entry = archive
                .by_index(i)
                .map_err(|e| format!("{}: entry {i}: {e}", zip.display()))?;
            let entry_name = entry
                .name()
                .map_err(|e| format!("{}: entry {i}: {e}", zip.display()))?
                .to_string();
            let mut bytes = Vec::with_capacity(entry.size() as usize);
            entry
                .read_to_end(&mut bytes)
                .map_err(|e| format!("{}: {entry_name}: {e}", zip.display()))?;
            if let Err(e) = image::load_from_memory_with_format(&bytes, image::ImageFormat::Jpeg) {
                skipped.push(format!("{entry_name}: {}", reason(&bytes, &e)));
                continue;
            }
            let dir = to.join(split_name).join(class);
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            let out = dir.join(format!("{prefix}.{n}.jpg"));
            std::fs::write(&out, &bytes).map_err(|e| format!("{}: {e}", out.display()))?;
            bar.inc(1);
            placed += 1;
            next = targets.next();
        }
        if next.is_some() {
            return Err(format!(
                "{}: only {placed} readable {folder} images; the split needs {} per class",
                zip.display(),
                split.total()
            ));
        }
    }
    bar.finish_and_clear();
    Ok(skipped)
}

fn reason(bytes: &[u8], e: &image::ImageError) -> String {
    if bytes.is_empty() {
        "empty file".into()
    } else {
        format!("not a readable JPEG ({e})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fetch::loopback::serve;
    use sha2::{Digest, Sha256};
    use std::io::Write;

    /// A small archive laid out like Microsoft's: `per_class` JPEGs per class, Cat/2.jpg empty
    /// and Dog/5.jpg not a JPEG (as the real one has a few), plus a file that is no image.
    fn archive(per_class: u64) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        w.start_file("PetImages/Cat/Thumbs.db", opts).unwrap();
        w.write_all(b"not an image").unwrap();
        for (folder, shade) in [("Cat", 40u8), ("Dog", 200u8)] {
            for n in 0..per_class {
                w.start_file(format!("PetImages/{folder}/{n}.jpg"), opts)
                    .unwrap();
                match (folder, n) {
                    ("Cat", 2) => {}
                    ("Dog", 5) => w.write_all(b"\xff\xd8 truncated").unwrap(),
                    _ => w.write_all(&jpeg(shade, n as u8)).unwrap(),
                }
            }
        }
        w.finish().unwrap().into_inner()
    }

    fn jpeg(shade: u8, n: u8) -> Vec<u8> {
        let img = image::RgbImage::from_fn(9, 7, |x, y| {
            image::Rgb([shade, n.wrapping_mul(17), (x * 20 + y) as u8])
        });
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Jpeg).unwrap();
        out.into_inner()
    }

    fn files(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort_by_key(|n| n.split('.').nth(1).and_then(|n| n.parse::<u32>().ok()));
        v
    }

    #[test]
    fn fetch_data_downloads_resumes_verifies_and_splits_the_books_way() {
        let zip = archive(12);
        let sha = crate::fetch::hex(&Sha256::digest(&zip));
        // The first connection drops half-way; the second run resumes it.
        let (base, ranges) = serve(zip.clone(), 2, vec![Some(zip.len() / 2)]);
        let root = std::env::temp_dir().join(format!("xtask-fetch-data-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let f = FetchData {
            url: format!("{base}/file"),
            sha256: sha.clone(),
            to: root.join("cats_and_dogs_small"),
            split: Split::parse("3,2,2").unwrap(),
            keep_download: false,
        };
        let err = fetch_data(&f).unwrap_err();
        assert!(err.contains("run the same command again"), "{err}");
        assert!(!f.to.exists(), "no split from half an archive");
        fetch_data(&f).unwrap();
        assert_eq!(
            ranges.lock().unwrap()[1],
            Some(format!("bytes={}-", zip.len() / 2))
        );

        // Per class in number order, the unreadable ones skipped: cats 0,1,3,4,5,6,7 and dogs
        // 0,1,2,3,4,6,7.
        let want = [
            ("train/cats", vec!["cat.0.jpg", "cat.1.jpg", "cat.3.jpg"]),
            ("validation/cats", vec!["cat.4.jpg", "cat.5.jpg"]),
            ("test/cats", vec!["cat.6.jpg", "cat.7.jpg"]),
            ("train/dogs", vec!["dog.0.jpg", "dog.1.jpg", "dog.2.jpg"]),
            ("validation/dogs", vec!["dog.3.jpg", "dog.4.jpg"]),
            ("test/dogs", vec!["dog.6.jpg", "dog.7.jpg"]),
        ];
        for (dir, names) in want {
            assert_eq!(files(&f.to.join(dir)), names, "{dir}");
        }
        // The bytes are the archive's.
        let mut a = zip::ZipArchive::new(std::io::Cursor::new(&zip)).unwrap();
        let mut original = Vec::new();
        a.by_name("PetImages/Dog/6.jpg")
            .unwrap()
            .read_to_end(&mut original)
            .unwrap();
        assert_eq!(
            std::fs::read(f.to.join("test/dogs/dog.6.jpg")).unwrap(),
            original
        );
        assert!(
            !root.join("downloads").join("file").exists()
                && !f.to.with_extension("partial").exists(),
            "the archive and the partial split are gone"
        );

        // Done already: no request (the server has served its two).
        fetch_data(&f).unwrap();
        // A folder that is something else is never touched.
        std::fs::remove_file(f.to.join("test/dogs/dog.6.jpg")).unwrap();
        let err = fetch_data(&f).unwrap_err();
        assert!(
            err.contains("nothing was changed") && err.contains("holds 1 files"),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn too_few_images_and_bad_checksums_are_errors() {
        let zip = archive(6);
        let sha = crate::fetch::hex(&Sha256::digest(&zip));
        let (base, _) = serve(zip.clone(), 2, vec![]);
        let root = std::env::temp_dir().join(format!("xtask-fetch-few-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let mut f = FetchData {
            url: format!("{base}/file"),
            sha256: "0".repeat(64),
            to: root.join("split"),
            split: Split::parse("3,2,2").unwrap(),
            keep_download: true,
        };
        let err = fetch_data(&f).unwrap_err();
        assert!(err.contains("checksum mismatch"), "{err}");
        f.sha256 = sha;
        let err = fetch_data(&f).unwrap_err();
        assert!(
            err.contains("only 5 readable Cat images") && err.contains("needs 7"),
            "{err}"
        );
        assert!(!f.to.exists());
        for bad in ["1000,500", "0,1,1", "a,b,c", ""] {
            assert!(Split::parse(bad).unwrap_err().contains("--split"), "{bad}");
        }
        let _ = std::fs::remove_dir_all(&root);
    }
}
