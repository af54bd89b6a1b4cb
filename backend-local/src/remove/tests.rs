//! Removal against trees a hostile job leaves: links to a directory outside, directories it
//! locked (mode 0000), and a process still swapping directories for links while removal runs.
//! The outside directory belongs to the remover's own user, so a followed link would succeed
//! in changing it: the checks see any link that was followed.

use std::fs::{self, Permissions};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::unistd::{Uid, User};

use super::*;

/// Set in the child process that removes a tree as an unprivileged user.
const CHILD_TREE: &str = "OPENSHELL_TEST_REMOVE_TREE";

/// Entries the racer swaps between a locked directory and a link to the outside.
const RACED: usize = 24;

/// Swaps per raced entry before the racer stops.
const ROUNDS: usize = 400;

/// A directory outside the tree, with what it held and its modes before.
struct Outside {
    dir: PathBuf,
    before: Vec<(PathBuf, u32, Vec<u8>)>,
}

impl Outside {
    fn plant(base: &Path) -> Self {
        let dir = base.join("outside");
        fs::create_dir_all(dir.join("sub")).unwrap();
        fs::write(dir.join("secret"), b"keep me").unwrap();
        fs::write(dir.join("sub/inner"), b"me too").unwrap();
        for (path, mode) in [
            (dir.join("sub/inner"), 0o644),
            (dir.join("secret"), 0o640),
            (dir.join("sub"), 0o755),
            (dir.clone(), 0o751),
        ] {
            fs::set_permissions(path, Permissions::from_mode(mode)).unwrap();
        }
        let before = Self::snapshot(&dir);
        Self { dir, before }
    }

    fn snapshot(dir: &Path) -> Vec<(PathBuf, u32, Vec<u8>)> {
        ["", "sub", "secret", "sub/inner"]
            .iter()
            .map(|name| {
                let path = dir.join(name);
                let metadata = fs::symlink_metadata(&path)
                    .unwrap_or_else(|error| panic!("{} is gone: {error}", path.display()));
                let content = if metadata.is_file() {
                    fs::read(&path).unwrap()
                } else {
                    Vec::new()
                };
                (path, metadata.permissions().mode() & 0o7777, content)
            })
            .collect()
    }

    fn assert_unchanged(&self) {
        assert_eq!(
            Self::snapshot(&self.dir),
            self.before,
            "the outside changed"
        );
    }

    fn chown_to(&self, owner: Option<(u32, u32)>) {
        for (path, _, _) in &self.before {
            give(path, owner);
        }
    }
}

fn give(path: &Path, owner: Option<(u32, u32)>) {
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::lchown(path, Some(uid), Some(gid)).unwrap();
    }
}

/// A tree like a hostile job's: links to `outside` at several depths, inside directories
/// and files locked to mode 0000, and [`RACED`] locked directories for the racer.
fn plant_tree(tree: &Path, outside: &Path, owner: Option<(u32, u32)>) {
    let locked = tree.join("locked");
    let deeper = locked.join("deeper");
    fs::create_dir_all(&deeper).unwrap();
    symlink(outside, tree.join("link")).unwrap();
    symlink(outside, locked.join("link")).unwrap();
    symlink(outside.join("sub"), deeper.join("link")).unwrap();
    symlink(outside.join("secret"), deeper.join("file-link")).unwrap();
    fs::write(deeper.join("file"), b"x").unwrap();
    for index in 0..RACED {
        let raced = tree.join(format!("race-{index}"));
        fs::create_dir(&raced).unwrap();
        fs::write(raced.join("file"), b"x").unwrap();
    }
    let mut all = vec![tree.to_path_buf()];
    let mut at = 0;
    while at < all.len() {
        let path = all[at].clone();
        at += 1;
        if fs::symlink_metadata(&path).unwrap().is_dir() {
            all.extend(
                fs::read_dir(&path)
                    .unwrap()
                    .map(|entry| entry.unwrap().path()),
            );
        }
    }
    // Deepest first, so each chmod 0000 comes after what is inside was handed over.
    for path in all.iter().rev() {
        give(path, owner);
        if !fs::symlink_metadata(path).unwrap().is_symlink() && path != tree {
            fs::set_permissions(path, Permissions::from_mode(0o000)).unwrap();
        }
    }
}

/// Turns each `race-N` directory of `tree` into a link to `outside` and back, in turns, as a
/// process of the job that escaped would, until `stop`, [`ROUNDS`] turns, or the tree is gone.
fn race(tree: PathBuf, outside: PathBuf, stop: Arc<AtomicBool>) {
    for round in 0..ROUNDS {
        for index in 0..RACED {
            if stop.load(Ordering::Relaxed) || !tree.exists() {
                return;
            }
            let raced = tree.join(format!("race-{index}"));
            let held = tree.join(format!("held-{index}"));
            if round % 2 == 0 {
                if fs::rename(&raced, &held).is_ok() {
                    let _ = symlink(&outside, &raced);
                }
            } else if fs::remove_file(&raced).is_ok() {
                let _ = fs::rename(&held, &raced);
            }
        }
    }
}

/// The tree and the outside directory under a fresh base the remover's user can enter.
fn setup(owner: Option<(u32, u32)>) -> (tempfile::TempDir, PathBuf, Outside) {
    let base = tempfile::tempdir().unwrap();
    fs::set_permissions(base.path(), Permissions::from_mode(0o755)).unwrap();
    // The remover unlinks the tree from here, as a worker does from its work root.
    give(base.path(), owner);
    let outside = Outside::plant(base.path());
    outside.chown_to(owner);
    let tree = base.path().join("openshell-job-test");
    fs::create_dir(&tree).unwrap();
    plant_tree(&tree, &outside.dir, owner);
    (base, tree, outside)
}

#[test]
fn links_are_unlinked_never_followed() {
    // As whoever runs the tests: root needs no unlocking, another user unlocks the tree.
    let owner = Some((
        Uid::effective().as_raw(),
        nix::unistd::Gid::effective().as_raw(),
    ));
    let (_base, tree, outside) = setup(owner);
    remove_tree(&tree).unwrap();
    assert!(!tree.exists(), "the tree stayed");
    outside.assert_unchanged();
}

#[test]
fn a_link_as_the_tree_itself_is_unlinked() {
    let base = tempfile::tempdir().unwrap();
    let outside = Outside::plant(base.path());
    let tree = base.path().join("openshell-job-link");
    symlink(&outside.dir, &tree).unwrap();
    remove_tree(&tree).unwrap();
    assert!(fs::symlink_metadata(&tree).is_err());
    outside.assert_unchanged();
}

/// The regression test for the symlink race: an unprivileged remover, which must unlock the
/// locked directories, while a racer swaps them for links to a directory it could change.
#[test]
fn a_racing_process_cannot_redirect_removal() {
    let unprivileged = !Uid::effective().is_root();
    let owner = if unprivileged {
        None
    } else {
        let nobody = User::from_name("nobody").unwrap().expect("user nobody");
        Some((nobody.uid.as_raw(), nobody.gid.as_raw()))
    };
    let (_base, tree, outside) = setup(owner);
    let stop = Arc::new(AtomicBool::new(false));
    let racer = std::thread::spawn({
        let (tree, outside, stop) = (tree.clone(), outside.dir.clone(), Arc::clone(&stop));
        move || race(tree, outside, stop)
    });
    let removed = if unprivileged {
        remove_tree(&tree).map_err(|error| error.to_string())
    } else {
        remove_as(&tree, owner.unwrap())
    };
    stop.store(true, Ordering::Relaxed);
    racer.join().unwrap();
    outside.assert_unchanged();
    removed.unwrap();
    assert!(!tree.exists(), "the tree stayed");
}

/// Runs [`child_removes_the_tree`] in a child process of this test binary as `uid`/`gid`.
fn remove_as(tree: &Path, (uid, gid): (u32, u32)) -> Result<(), String> {
    use std::os::unix::process::CommandExt;
    let name = format!(
        "{}::child_removes_the_tree",
        module_path!().split_once("::").unwrap().1
    );
    let output = Command::new(std::env::current_exe().unwrap())
        .args([
            &name,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_TREE, tree)
        .current_dir("/")
        .uid(uid)
        .gid(gid)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stdout.contains("running 1 test"),
        "the child test did not run: {stdout}\n{stderr}"
    );
    if output.status.success() {
        Ok(())
    } else {
        Err(format!("{stdout}\n{stderr}"))
    }
}

#[test]
#[ignore = "run by a_racing_process_cannot_redirect_removal as an unprivileged user"]
fn child_removes_the_tree() {
    let tree =
        std::env::var_os(CHILD_TREE).expect("run by a_racing_process_cannot_redirect_removal");
    assert!(!Uid::effective().is_root(), "the child must not be root");
    remove_tree(Path::new(&tree)).unwrap();
}

#[test]
fn errors_name_the_entry_and_the_step() {
    let error = remove_tree(Path::new("/")).unwrap_err();
    assert!(matches!(error, RemoveError::NotATree(_)), "{error}");
    let missing = remove_tree(Path::new("/nonexistent-openshell/x")).unwrap_err();
    let text = missing.to_string();
    assert!(
        text.contains("opening the work root") && text.contains("/nonexistent-openshell"),
        "{text}"
    );
}
