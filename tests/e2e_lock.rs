//! Real host: one apply per stack at a time. A second apply of a locked
//! stack says so and waits; it then runs. Cleans up its bridge.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn a_locked_stack_waits_for_the_lock() {
    let pid = std::process::id();
    let bridge = format!("vflk{:x}", pid % 0xfffff);
    let stack = format!("e2e-lock-{pid}");
    let cfg = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    std::fs::write(
        cfg.path().join("main.vf.hcl"),
        format!("network \"lan\" {{\n  bridge  = \"{bridge}\"\n  address = \"10.{}.{}.1/24\"\n}}\n", 230 + pid % 20, pid % 250),
    )
    .unwrap();
    struct Cleanup(String, String, std::path::PathBuf, std::path::PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = Command::new(env!("CARGO_BIN_EXE_virtform"))
                .args(["--state-dir", self.2.to_str().unwrap(), "--stack", &self.1, "destroy", "--auto-approve", self.3.to_str().unwrap()])
                .output();
            let _ = Command::new("ip").args(["link", "del", "dev", &self.0]).output();
        }
    }
    let _guard = Cleanup(bridge.clone(), stack.clone(), state.path().to_path_buf(), cfg.path().to_path_buf());

    // Hold the stack's lock as another apply would.
    let dir = state.path().join(&stack);
    std::fs::create_dir_all(&dir).unwrap();
    let lock = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(dir.join(".lock")).unwrap();
    lock.lock().unwrap();

    let mut child = Command::new(env!("CARGO_BIN_EXE_virtform"))
        .args(["--no-color", "--state-dir", state.path().to_str().unwrap(), "--stack", &stack, "apply", "--auto-approve", cfg.path().to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run virtform");
    std::thread::sleep(Duration::from_millis(1500));
    assert!(child.try_wait().unwrap().is_none(), "apply did not wait for the lock");
    let out = Command::new("ip").args(["-o", "link", "show", "dev", &bridge]).output().unwrap();
    assert!(!out.status.success(), "apply acted while the stack was locked");

    lock.unlock().unwrap();
    drop(lock);
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "apply did not finish after the lock was released");
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains(&format!("holds the lock of stack \"{stack}\"")), "no message about the lock:\n{stderr}");
    let out = Command::new("ip").args(["-o", "link", "show", "dev", &bridge]).output().unwrap();
    assert!(out.status.success(), "the bridge was not created after the lock was released");
}
