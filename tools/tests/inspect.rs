//! `cryptomem-tool inspect` on a real data dir.

use std::process::Command;

use cryptomem_server::auth::HashParams;
use cryptomem_server::server::DataDir;

const BIN: &str = env!("CARGO_BIN_EXE_cryptomem-tool");

#[test]
fn inspect_shows_identity_and_tokens_but_no_secrets() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, report) = DataDir::open_or_init(tmp.path(), HashParams { m_cost_kib: 64, t_cost: 1, p_cost: 1 }).unwrap();
    let token = report.unwrap().admin_token;
    let out = Command::new(BIN).args(["inspect", "--data"]).arg(tmp.path()).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{text}");
    assert!(text.contains(&dir.identity().public_hex()));
    assert!(text.contains(token.id()));
    assert!(text.contains("admin"));
    assert!(!text.contains(token.secret()));
    assert!(!text.contains("$argon2id"));

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(tmp.path().join("server.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
        let out = Command::new(BIN).args(["inspect", "--data"]).arg(tmp.path()).output().unwrap();
        assert_eq!(out.status.code(), Some(2));
        assert!(String::from_utf8(out.stdout).unwrap().contains("WARNING"));
    }
}

#[test]
fn inspect_of_a_missing_dir_fails_clearly() {
    let out = Command::new(BIN).args(["inspect", "--data", "/nonexistent/cryptomem"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a directory"));
}
