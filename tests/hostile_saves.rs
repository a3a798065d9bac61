//! Saving is atomic and durable: concurrent saves to one path never expose a torn or empty file,
//! no temporary file is left behind (a killed save's is removed by the next), a replaced file keeps its permissions, a read-only file is
//! not replaced, and long file names work.

use backprop::prelude::*;
use std::path::PathBuf;

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("backprop-saves-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn model(seed: u64) -> Sequential {
    Sequential::builder(&[64])
        .add(Dense::new(64, 256))
        .add(Relu::new())
        .add(Dense::new(256, 8))
        .seed(seed)
        .build()
        .unwrap()
}

fn entries(d: &PathBuf) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn concurrent_saves_never_expose_a_partial_file() {
    let d = dir("concurrent");
    let path = d.join("model.safetensors");
    let expected: Vec<Vec<(String, Tensor)>> = (0..4).map(|seed| model(seed).state_dict()).collect();
    model(0).save(&path).unwrap();
    std::thread::scope(|s| {
        for seed in 0..4 {
            let path = &path;
            s.spawn(move || {
                let m = model(seed); // layers are Send, not Sync: one model per thread
                for _ in 0..40 {
                    m.save(path).unwrap();
                }
            });
        }
        s.spawn(|| {
            let mut reader = model(9);
            for _ in 0..400 {
                let bytes = std::fs::read(&path).unwrap();
                reader.load_safetensors(&bytes, &path).unwrap();
                assert!(expected.contains(&reader.state_dict()), "a load gave a mix of two saves");
            }
        });
    });
    assert_eq!(entries(&d), ["model.safetensors"], "no temporary file is left");
    std::fs::remove_dir_all(&d).unwrap();
}

#[cfg(unix)]
#[test]
fn a_replaced_file_keeps_its_permissions_and_a_read_only_one_is_kept() {
    use std::os::unix::fs::PermissionsExt;
    let d = dir("permissions");
    let path = d.join("model.safetensors");
    model(1).save(&path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    model(2).save(&path).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444)).unwrap();
    let before = std::fs::read(&path).unwrap();
    let err = model(3).save(&path).unwrap_err().to_string();
    assert!(err.contains("model.safetensors") && err.contains("read-only"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), before);
    assert_eq!(entries(&d), ["model.safetensors"]);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn long_names_and_failed_saves() {
    let d = dir("names");
    let long = format!("{}.safetensors", "m".repeat(240)); // 252 bytes: near the usual 255 limit
    model(1).save(d.join(&long)).unwrap();
    let mut back = model(2);
    back.load(d.join(&long)).unwrap();
    assert_eq!(back.state_dict(), model(1).state_dict());
    // A folder that does not exist: an error naming the path, nothing created.
    let err = model(1).save(d.join("missing/model.safetensors")).unwrap_err().to_string();
    assert!(err.contains("missing/model.safetensors"), "{err}");
    assert!(model(1).save(&d).is_err(), "a folder is not a file");
    assert_eq!(entries(&d), [long]);
    std::fs::remove_dir_all(&d).unwrap();
}

/// Not a test on its own: with `BACKPROP_SAVE_FOREVER=<folder>` it saves a large model into that
/// folder until killed (the child process of `a_killed_saves_temporary_is_removed_by_the_next_save`).
#[test]
fn helper_saving_forever() {
    let Some(folder) = std::env::var_os("BACKPROP_SAVE_FOREVER") else { return };
    let big = Sequential::builder(&[1024]).add(Dense::new(1024, 4096)).build().unwrap();
    let path = PathBuf::from(folder).join("big.safetensors");
    loop {
        big.save(&path).unwrap();
    }
}

/// A save killed with SIGKILL leaves its temporary file behind; the next save into the folder
/// removes it once nobody holds its lock and it is old enough — and leaves alone a temporary that
/// a live save holds, a young one (a save that is just starting) and every other file.
#[cfg(unix)]
#[test]
fn a_killed_saves_temporary_is_removed_by_the_next_save() {
    use std::time::{Duration, SystemTime};
    let d = dir("killed");
    let age = |name: &str, seconds: u64| {
        let f = std::fs::File::options().write(true).open(d.join(name)).unwrap();
        f.set_modified(SystemTime::now() - Duration::from_secs(seconds)).unwrap();
    };
    // Kill a saving process until it leaves a temporary file (a 16 MB model: most of each save's
    // time is spent writing its temporary).
    let mut left = Vec::new();
    for attempt in 0..20 {
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "helper_saving_forever", "--test-threads", "1"])
            .env("BACKPROP_SAVE_FOREVER", &d)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(300 + 37 * attempt));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        left = entries(&d).into_iter().filter(|n| n.ends_with(".tmp")).collect();
        if !left.is_empty() {
            break;
        }
    }
    assert!(!left.is_empty(), "no save was caught in the middle in 20 attempts");
    for name in &left {
        age(name, 3600);
    }
    // A live save's temporary (locked), a young one, an unrelated old file.
    std::fs::write(d.join(".backprop-save-live.tmp"), b"x").unwrap();
    let live = std::fs::File::options().write(true).open(d.join(".backprop-save-live.tmp")).unwrap();
    live.lock().unwrap();
    age(".backprop-save-live.tmp", 3600);
    std::fs::write(d.join(".backprop-save-young.tmp"), b"x").unwrap();
    std::fs::write(d.join("notes.tmp"), b"x").unwrap();
    age("notes.tmp", 3600);

    model(1).save(d.join("small.safetensors")).unwrap();
    let now = entries(&d);
    for name in &left {
        assert!(!now.contains(name), "{name} should have been removed: {now:?}");
    }
    for kept in [".backprop-save-live.tmp", ".backprop-save-young.tmp", "notes.tmp", "small.safetensors"] {
        assert!(now.contains(&kept.to_string()), "{kept} should be kept: {now:?}");
    }
    drop(live);
    let _ = std::fs::remove_dir_all(&d);
}
