//! The systemd unit and the container file in `tools/service/`, and the
//! readiness notification the unit's `Type=notify` relies on.

use std::io::Read;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_cryptomem");

fn service_file(name: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/service").join(name)).unwrap()
}

#[test]
fn the_unit_has_the_hardening_and_systemd_accepts_it() {
    let unit = service_file("cryptomem.service");
    let lines: Vec<&str> = unit.lines().map(str::trim).collect();
    for required in [
        "Type=notify",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/cryptomem",
        "PrivateTmp=yes",
        "User=cryptomem",
        "Restart=on-failure",
        "UMask=0077",
    ] {
        assert!(lines.contains(&required), "the unit lacks {required}");
    }
    assert!(lines.iter().any(|l| l.starts_with("ExecStart=/usr/local/bin/cryptomem serve --data /var/lib/cryptomem/")));
    // systemd's own parser, where this machine has it: any warning fails.
    let Ok(status) = Command::new("systemd-analyze").arg("--version").stdout(Stdio::null()).status() else {
        eprintln!("systemd-analyze is not installed: checked the required lines only");
        return;
    };
    assert!(status.success());
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("cryptomem.service");
    std::fs::write(&copy, unit.replace("/usr/local/bin/cryptomem", BIN)).unwrap();
    let out = Command::new("systemd-analyze").arg("verify").arg(&copy).output().unwrap();
    let complaints = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && complaints.trim().is_empty(), "systemd-analyze verify: {complaints}");
}

#[test]
fn the_container_file_builds_in_two_stages_and_runs_as_a_user_with_a_data_volume() {
    let file = service_file("Containerfile");
    assert_eq!(file.lines().filter(|l| l.starts_with("FROM ")).count(), 2, "multi-stage");
    assert!(file.lines().any(|l| l.starts_with("USER ") && !l.contains("root")), "non-root");
    assert!(file.contains("VOLUME [\"/data\"]"));
    assert!(file.contains("\"--data\", \"/data/data\""), "the data dir is on the volume");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn ready_is_sent_once_the_keyspace_is_loaded_and_the_listener_is_up() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let port = free_port();
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data"])
        .arg(dir.path().join("data"))
        .env("NOTIFY_SOCKET", &socket_path)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut messages = Vec::new();
    let mut buf = [0u8; 4096];
    while !messages.iter().any(|m: &String| m.lines().any(|l| l == "READY=1")) {
        assert!(Instant::now() < deadline, "no READY=1 within 30 s: {messages:?}");
        if let Ok(n) = socket.recv(&mut buf) {
            messages.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    // Ready means ready: the port takes connections now.
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    assert!(messages[0].contains("STATUS=loading the keyspace"), "{messages:?}");
    assert!(messages.iter().any(|m| m.contains("STATUS=loaded 0 keys")), "{messages:?}");
    assert!(messages.last().unwrap().contains("STATUS=serving 0 keys"), "{messages:?}");
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let _ = child.wait();
    let mut log = String::new();
    let _ = child.stderr.take().map(|mut e| e.read_to_string(&mut log));
}
