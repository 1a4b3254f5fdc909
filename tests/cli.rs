//! The `cryptomem` binary as a user runs it: serve a fresh data dir, keygen,
//! every client command, restart, shutdown on SIGTERM.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_cryptomem");

/// Kills the server if a test fails before stopping it.
struct ServerProcess(Option<Child>);

impl ServerProcess {
    fn start(data: &Path) -> Self {
        Self::start_logging(data, "info")
    }

    fn start_logging(data: &Path, level: &str) -> Self {
        let child = Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--log", level, "--data"])
            .arg(data)
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Self(Some(child))
    }

    fn pid(&self) -> u32 {
        self.0.as_ref().unwrap().id()
    }

    /// SIGTERM, then wait (bounded) for a clean exit.
    fn terminate(mut self) -> Output {
        let status = Command::new("kill").args(["-TERM", &self.pid().to_string()]).status().unwrap();
        assert!(status.success());
        let mut child = self.0.take().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "server did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
        child.wait_with_output().unwrap()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn wait_for(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !path.exists() {
        assert!(Instant::now() < deadline, "{} never appeared", path.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

struct Cli {
    credentials: PathBuf,
    key: PathBuf,
}

impl Cli {
    fn run(&self, args: &[&str]) -> Output {
        self.run_as(None, args)
    }

    /// Runs with `token` (if any) in CRYPTOMEM_TOKEN, overriding the credentials file's.
    fn run_as(&self, token: Option<&str>, args: &[&str]) -> Output {
        let env: Vec<(&str, &str)> = token.map(|t| ("CRYPTOMEM_TOKEN", t)).into_iter().collect();
        self.run_env(&env, args)
    }

    /// Runs with extra environment variables.
    fn run_env(&self, env: &[(&str, &str)], args: &[&str]) -> Output {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env("CRYPTOMEM_CREDENTIALS", &self.credentials)
            .env("CRYPTOMEM_VALUE_KEY_FILE", &self.key)
            .env_remove("CRYPTOMEM_PASSPHRASE")
            .env_remove("CRYPTOMEM_TOKEN");
        cmd.envs(env.iter().copied());
        cmd.output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(!out.status.success(), "{args:?} should fail");
        String::from_utf8(out.stderr).unwrap()
    }
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn serve_keygen_and_every_command() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let server = ServerProcess::start(&data);
    let credentials = data.join("credentials.toml");
    wait_for(&credentials);
    let cli = Cli { credentials: credentials.clone(), key: tmp.path().join("value.key") };

    #[cfg(unix)]
    for (file, want) in [
        ("server.key", 0o600),
        ("tokens.toml", 0o600),
        ("credentials.toml", 0o600),
        ("server.pub", 0o644),
        ("LOCK", 0o600),
    ] {
        assert_eq!(mode(&data.join(file)), want, "{file}");
    }

    assert!(cli.fails(&["get", "k"]).contains("cryptomem keygen"), "missing value key names the fix");
    assert!(cli.ok(&["keygen", "--out", cli.key.to_str().unwrap()]).contains("wrote value key"));
    assert!(cli.fails(&["keygen", "--out", cli.key.to_str().unwrap()]).contains("refusing to overwrite"));

    assert_eq!(cli.ok(&["ping"]), "PONG\n");
    assert_eq!(cli.ok(&["set", "greeting", "hello world"]), "OK\n");
    assert_eq!(cli.ok(&["get", "greeting"]), "hello world\n");
    assert_eq!(cli.ok(&["get", "nothing"]), "(nil)\n");
    assert_eq!(cli.ok(&["set", "greeting", "again", "--nx"]), "(nil)\n");
    assert_eq!(cli.ok(&["exists", "greeting"]), "(integer) 1\n");
    assert_eq!(cli.ok(&["ttl", "greeting"]), "(no expiry)\n");
    assert_eq!(cli.ok(&["expire", "greeting", "1h"]), "(integer) 1\n");
    assert!(cli.ok(&["ttl", "greeting"]).ends_with("s\n"));
    assert!(cli.ok(&["ttl", "greeting", "--raw"]).trim().parse::<u64>().unwrap() > 3_590_000);
    assert_eq!(cli.ok(&["persist", "greeting"]), "(integer) 1\n");
    assert_eq!(cli.ok(&["ttl", "greeting", "--raw"]), "-1\n");
    assert_eq!(cli.ok(&["mset", "a", "1", "b", "2"]), "OK\n");
    assert_eq!(cli.ok(&["mget", "a", "zz", "b"]), "1) 1\n2) (nil)\n3) 2\n");
    // Control bytes never reach the terminal unless --raw asks for the bytes.
    assert_eq!(cli.ok(&["set", "red", "a\x1b[31mred"]), "OK\n");
    assert_eq!(cli.ok(&["get", "red"]), "\"a\\x1b[31mred\"\n");
    assert_eq!(cli.ok(&["mget", "red"]), "1) \"a\\x1b[31mred\"\n");
    assert_eq!(cli.ok(&["get", "red", "--raw"]), "a\x1b[31mred\n");
    assert_eq!(cli.ok(&["del", "red"]), "(integer) 1\n");
    // --raw tells a missing key (exit 1, nothing printed) from an empty value.
    assert_eq!(cli.ok(&["set", "empty", ""]), "OK\n");
    assert_eq!(cli.ok(&["get", "empty"]), "\"\"\n");
    assert_eq!(cli.ok(&["get", "empty", "--raw"]), "\n");
    let missing = cli.run(&["get", "nothing", "--raw"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(missing.stdout.is_empty());
    assert_eq!(cli.ok(&["del", "empty"]), "(integer) 1\n");
    assert_eq!(cli.ok(&["dbsize"]), "(integer) 3\n");
    let mut listed: Vec<String> = cli.ok(&["scan", "--count", "2"]).lines().map(String::from).collect();
    listed.sort();
    assert_eq!(listed, ["a", "b", "greeting"]);
    assert_eq!(cli.ok(&["scan", "--prefix", "gr"]), "greeting\n");
    // Compare-and-set from the shell.
    let created: u64 = cli.ok(&["set", "cas", "one", "--if-version", "0", "--raw"]).trim().parse().unwrap();
    let refused = cli.run(&["set", "cas", "two", "--if-version", "0"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("version conflict"), "{refused:?}");
    assert_eq!(cli.ok(&["getv", "cas", "--raw"]), format!("{created}\none\n"));
    assert_eq!(cli.ok(&["getv", "cas"]), format!("(version {created}) one\n"));
    assert_eq!(cli.ok(&["del", "cas", "--if-version", &created.to_string()]), "(integer) 1\n");
    assert_eq!(cli.ok(&["del", "a", "b", "zz"]), "(integer) 2\n");
    assert_eq!(cli.ok(&["set", "short", "v", "--ttl", "50ms"]), "OK\n");
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(cli.ok(&["get", "short"]), "(nil)\n");
    assert!(cli.ok(&["info"]).contains("connected_clients:"));
    assert_eq!(cli.ok(&["save"]), "OK\n");
    assert!(cli.ok(&["info"]).contains("snapshots_taken:1"));

    let wrong_key = tmp.path().join("other.key");
    cli.ok(&["keygen", "--out", wrong_key.to_str().unwrap()]);
    let other = Cli { credentials: credentials.clone(), key: wrong_key };
    assert!(other.fails(&["get", "greeting"]).contains("wrong value key"));

    let public_key = std::fs::read_to_string(data.join("server.pub")).unwrap();
    let first = server.terminate();
    assert!(first.status.success(), "clean exit on SIGTERM");
    let banner = String::from_utf8(first.stdout).unwrap();
    let log = String::from_utf8(first.stderr).unwrap();
    let token_line = banner.lines().find(|l| l.contains("admin token:")).expect("token printed once at init");
    let token = token_line.split_whitespace().last().unwrap();
    assert!(token.starts_with("cmt_"));
    assert!(!log.contains(token), "the token never appears in the log");
    assert!(log.contains("shutdown complete"));

    // A restart reuses the data dir: same key, no new token, no banner.
    let again = ServerProcess::start(&data);
    std::thread::sleep(Duration::from_millis(300));
    let out = again.terminate();
    assert!(String::from_utf8(out.stdout).unwrap().is_empty());
    assert_eq!(std::fs::read_to_string(data.join("server.pub")).unwrap(), public_key);
}

#[test]
fn helpful_errors_without_a_server_or_credentials() {
    let tmp = tempfile::tempdir().unwrap();
    let cli = Cli { credentials: tmp.path().join("missing.toml"), key: tmp.path().join("k") };
    assert!(cli.fails(&["ping"]).contains("cryptomem serve"));
    let bad_config = tmp.path().join("bad.toml");
    std::fs::write(&bad_config, "listen = 5").unwrap();
    let out = Command::new(BIN).args(["serve", "--config"]).arg(&bad_config).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad.toml"));
}

#[test]
fn token_management_online_and_offline_and_no_secret_in_the_log() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let server = ServerProcess::start_logging(&data, "debug");
    let credentials = data.join("credentials.toml");
    wait_for(&credentials);
    let cli = Cli { credentials: credentials.clone(), key: tmp.path().join("value.key") };

    let online = cli
        .ok(&["token", "add", "--role", "read", "--prefix", "app:", "--label", "cli test", "--raw"])
        .trim()
        .to_string();
    assert!(online.starts_with("cmt_"));
    let online_id = online.split('_').nth(1).unwrap().to_string();
    let listed = cli.ok(&["token", "list"]);
    assert!(
        listed.contains(&online_id)
            && listed.contains("read")
            && listed.contains("app:")
            && listed.contains("cli test"),
        "{listed}"
    );
    assert!(!listed.contains(online.split('_').nth(2).unwrap()), "list never shows a secret");

    // Offline, straight into the data dir: the running server picks it up.
    let offline =
        cli.ok(&["token", "add", "--data", data.to_str().unwrap(), "--role", "write", "--raw"]).trim().to_string();
    let mut ok = false;
    for _ in 0..50 {
        if cli.run_as(Some(&offline), &["ping"]).status.success() {
            ok = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(ok, "an offline-added token works without a restart");
    assert!(cli.ok(&["token", "list", "--data", data.to_str().unwrap()]).contains(&online_id));

    // A read token cannot write; a wrong secret for a known id is refused.
    let refused = cli.run_as(Some(&online), &["del", "app:x"]);
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("NOPERM"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let forged = format!("cmt_{online_id}_{}", "0".repeat(64));
    let wrong = cli.run_as(Some(&forged), &["ping"]);
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("WRONGPASS"));

    assert_eq!(cli.ok(&["token", "revoke", &online_id]), format!("revoked {online_id}\n"));
    assert!(!cli.run_as(Some(&online), &["ping"]).status.success());
    assert!(!cli.run(&["token", "revoke", &online_id]).status.success(), "a second revoke reports the missing id");

    let out = server.terminate();
    let log = String::from_utf8(out.stderr).unwrap();
    let admin = std::fs::read_to_string(&credentials).unwrap();
    let admin_secret = admin
        .lines()
        .find(|l| l.starts_with("token"))
        .unwrap()
        .rsplit('_')
        .next()
        .unwrap()
        .trim_end_matches('"')
        .to_string();
    assert!(log.contains("token added") && log.contains("auth_failure"), "the debug log has the events");
    for secret in [online.rsplit('_').next().unwrap(), offline.rsplit('_').next().unwrap(), admin_secret.as_str()] {
        assert_eq!(secret.len(), 64);
        assert!(!log.contains(secret), "a token secret appeared in the log");
    }
}

#[test]
fn environment_variables_configure_the_server_and_flags_override_them() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(tmp.path().join("data"))
        .env("CRYPTOMEM_MAX_KEY_SIZE", "70000")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("max-key-size"), "the variable was read");

    let data = tmp.path().join("data2");
    let child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--max-key-size", "1KiB", "--data"])
        .arg(&data)
        .env("CRYPTOMEM_MAX_KEY_SIZE", "70000")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let server = ServerProcess(Some(child));
    wait_for(&data.join("credentials.toml"));
    assert!(server.terminate().status.success(), "the flag won over the bad variable");
}

#[test]
fn passphrase_keys_and_key_rotation_from_the_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let server = ServerProcess::start(&data);
    let credentials = data.join("credentials.toml");
    wait_for(&credentials);
    let path = |name: &str| tmp.path().join(name).to_str().unwrap().to_string();
    let cli = Cli { credentials, key: tmp.path().join("old.key") };

    // A passphrase-derived key: same passphrase and salt open, another passphrase does not.
    assert!(cli.ok(&["keygen", "--passphrase", "--out", &path("value.salt")]).contains("salt"));
    let salt = path("value.salt");
    let right = [("CRYPTOMEM_PASSPHRASE", "correct horse battery"), ("CRYPTOMEM_SALT_FILE", salt.as_str())];
    let wrong = [("CRYPTOMEM_PASSPHRASE", "wrong horse"), ("CRYPTOMEM_SALT_FILE", salt.as_str())];
    assert!(cli.run_env(&right, &["set", "p", "from a passphrase"]).status.success());
    assert_eq!(String::from_utf8(cli.run_env(&right, &["get", "p"]).stdout).unwrap(), "from a passphrase\n");
    assert!(String::from_utf8_lossy(&cli.run_env(&wrong, &["get", "p"]).stderr).contains("wrong value key"));

    // Rotation: the new key seals, the old one passed as previous still opens old values.
    cli.ok(&["keygen", "--out", &path("old.key")]);
    cli.ok(&["set", "k", "sealed with the old key"]);
    cli.ok(&["keygen", "--out", &path("new.key")]);
    let with_new = ["--value-key-file", &path("new.key")];
    assert!(!cli.run(&["get", "k", with_new[0], with_new[1]]).status.success());
    let rotated = ["get", "k", with_new[0], with_new[1], "--previous-value-key-file", &path("old.key")];
    assert_eq!(cli.ok(&rotated), "sealed with the old key\n");
    cli.ok(&["set", "k2", "sealed with the new key", with_new[0], with_new[1]]);
    assert!(!cli.run(&["get", "k2"]).status.success(), "the old key alone cannot open new values");
    drop(server);
}

/// The client crate as an application uses it: only `cryptomem_client`'s
/// public API, against the real binary started as a user starts it.
#[tokio::test]
async fn an_application_uses_the_client_crate_against_the_binary() {
    use cryptomem_client::value_crypto::{Keyring, ValueKey};
    use cryptomem_client::{Client, KeyTtl, PipelineReply, SetOptions};

    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let server = ServerProcess::start(&data);
    let credentials = data.join("credentials.toml");
    wait_for(&credentials);
    let keyring = Keyring::new(ValueKey::generate().unwrap());
    let client = Client::from_credentials_file(&credentials, Some(keyring)).await.unwrap();

    client.set("app:user:1", b"alice").await.unwrap();
    assert_eq!(client.get("app:user:1").await.unwrap().as_deref(), Some(&b"alice"[..]));
    let sealed = client.get_raw("app:user:1").await.unwrap().unwrap();
    assert!(!sealed.windows(5).any(|w| w == b"alice"), "the server holds ciphertext only");
    client.set_with("app:session", b"s", SetOptions::ttl(Duration::from_secs(60))).await.unwrap();
    assert!(matches!(client.ttl("app:session").await.unwrap(), KeyTtl::ExpiresIn(_)));
    let mut pipeline = client.pipeline();
    pipeline.set("app:a", b"1").unwrap().get("app:a").unwrap().delete("app:user:1").unwrap();
    let replies = pipeline.execute().await.unwrap();
    assert_eq!(replies[1].as_ref().ok(), Some(&PipelineReply::Value(Some(b"1".to_vec()))));
    assert_eq!(client.mget(&["app:a", "app:user:1"]).await.unwrap(), vec![Some(b"1".to_vec()), None]);
    assert_eq!(client.dbsize().await.unwrap(), 2);
    drop(client);
    server.terminate();
}

/// A new data dir whose credentials file cannot be written (a full disk; here
/// a directory in its place) still shows the admin token, whose hash is
/// already stored: before, the start failed and the token was lost.
#[test]
fn the_admin_token_is_shown_when_the_credentials_file_cannot_be_written() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(data.join("credentials.toml")).unwrap();
    let server = ServerProcess::start(&data);
    wait_for(&data.join("tokens.toml"));
    std::thread::sleep(Duration::from_millis(500));
    let out = server.terminate();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "the server keeps serving: {}", String::from_utf8_lossy(&out.stderr));
    let token = stdout.lines().find_map(|l| l.trim().strip_prefix("admin token:")).map(str::trim);
    assert!(token.is_some_and(|t| t.starts_with("cmt_")), "{stdout}");
    assert!(stdout.contains("NOT written"), "{stdout}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot write"));
}

/// Hidden key names end to end against the binary at debug log level: every
/// command works, prefix ACLs still apply, and no name reaches the data dir
/// or the server's log.
#[tokio::test]
async fn hidden_key_names_never_reach_the_server_files_or_log() {
    use cryptomem_client::value_crypto::{Keyring, ValueKey};
    use cryptomem_client::{Client, ClientConfig, Credentials, Error, HiddenNames, Role, SetOptions};

    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let server = ServerProcess::start_logging(&data, "debug");
    let credentials = data.join("credentials.toml");
    wait_for(&credentials);
    let value_key = ValueKey::generate().unwrap();
    let config = ClientConfig::from_credentials(Credentials::load(&credentials).unwrap())
        .with_keyring(Keyring::new(value_key.clone()))
        .with_hidden_names(HiddenNames::new(&value_key, b':'));
    let c = Client::connect(config.clone()).await.unwrap();
    let name = |i: u32| format!("tenant:zebra-unicorn-{i}");

    for i in 0..10 {
        c.set(name(i), format!("value {i}")).await.unwrap();
    }
    assert_eq!(c.get(name(3)).await.unwrap().unwrap(), b"value 3");
    c.mset(&[(name(10), "ten"), (name(11), "eleven")], None).await.unwrap();
    assert_eq!(c.mget(&[name(10), name(99)]).await.unwrap(), vec![Some(b"ten".to_vec()), None]);
    let mut p = c.pipeline();
    p.set(name(12), b"twelve").unwrap().get(name(12)).unwrap();
    let replies = p.execute().await.unwrap();
    assert!(matches!(&replies[1], Ok(cryptomem_client::PipelineReply::Value(Some(v))) if v == b"twelve"));
    let v = c.set_if_version(name(13), b"x", 0, SetOptions::default()).await.unwrap();
    assert!(c.delete_if_version(name(13), v).await.unwrap());
    c.update(name(14), |_| Some(b"updated".to_vec())).await.unwrap();
    assert!(c.delete(name(0)).await.unwrap());
    let listed = c.scan("tenant:").collect().await.unwrap();
    assert_eq!(listed.len(), 13, "keys 1..=12 and 14");
    assert!(listed.iter().all(|k| k.len() == "tenant:".len() + 32 && k.starts_with(b"tenant:")), "{listed:?}");
    assert!(matches!(c.scan("tenant:zebra").next().await, Err(Error::InvalidArgument(_))));

    // A token limited to `tenant:` still works, and still cannot leave it.
    let token = c.token_add(Role::Read, vec!["tenant:".into()], "tenant").await.unwrap();
    let limited = Client::connect(ClientConfig { token, ..config.clone() }).await.unwrap();
    assert_eq!(limited.get(name(5)).await.unwrap().unwrap(), b"value 5");
    let refused = limited.get("other:zebra-unicorn").await.unwrap_err();
    assert!(matches!(&refused, Error::Server { code, .. } if code == "NOPERM"), "{refused}");
    // The CLI hides names the same way: what one writes the other finds.
    let key_file = tmp.path().join("value.key");
    std::fs::write(&key_file, value_key.to_key_file().as_bytes()).unwrap();
    let cli = Cli { credentials: credentials.clone(), key: key_file };
    assert_eq!(cli.ok(&["get", "--hide-key-names", &name(5)]), "value 5\n");
    assert_eq!(cli.ok(&["get", &name(5)]), "(nil)\n", "without the flag the name is another key");
    assert_eq!(cli.ok(&["set", "--hide-key-names", &name(20), "from the cli"]), "OK\n");
    assert_eq!(c.get(name(20)).await.unwrap().unwrap(), b"from the cli");
    assert_eq!(cli.ok(&["scan", "--hide-key-names", "--prefix", "tenant:"]).lines().count(), 14);
    // The documented rotation: a new value key, names still derived from the first.
    let new_key = tmp.path().join("new.key");
    std::fs::write(&new_key, ValueKey::generate().unwrap().to_key_file().as_bytes()).unwrap();
    let first = cli.key.display().to_string();
    let rotated = [
        "get",
        "--hide-key-names",
        "--value-key-file",
        new_key.to_str().unwrap(),
        "--previous-value-key-file",
        &first,
        "--names-key-file",
        &first,
    ];
    assert_eq!(cli.ok(&[&rotated[..], &[name(5).as_str()]].concat()), "value 5\n");
    c.save().await.unwrap();
    drop((c, limited));

    let out = server.terminate();
    let log = [out.stdout, out.stderr].concat();
    assert!(String::from_utf8_lossy(&log).contains("DEBUG"), "the log ran at debug level");
    assert!(!log.windows(5).any(|w| w == b"zebra"), "a key name reached the server's log");
    for entry in std::fs::read_dir(&data).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        assert!(!bytes.windows(5).any(|w| w == b"zebra"), "a key name is in {}", path.display());
    }
}

/// The auth-failure line is in the documented format, and the fail2ban
/// filter shipped in `tools/service/` finds the address in it.
#[tokio::test]
async fn the_fail2ban_filter_matches_the_auth_failure_line() {
    use cryptomem_client::{Client, ClientConfig, Credentials, Error, Token};

    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let server = ServerProcess::start(&data);
    let credentials = data.join("credentials.toml");
    wait_for(&credentials);
    let mut config = ClientConfig::from_credentials(Credentials::load(&credentials).unwrap());
    config.token = Token::generate().unwrap();
    let secret = config.token.expose().to_string();
    assert!(matches!(Client::connect(config).await.unwrap_err(), Error::Auth(_)));
    let out = server.terminate();
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    let line =
        log.lines().find(|l| l.contains("auth_failure")).unwrap_or_else(|| panic!("no auth_failure line: {log}"));
    assert!(!line.contains(&secret[4..]), "the token never reaches the log: {line}");

    let filter =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/service/fail2ban-cryptomem.conf"))
            .unwrap();
    let failregex = filter.lines().find_map(|l| l.strip_prefix("failregex = ")).unwrap();
    // fail2ban's <HOST> stands for an address; Python and Rust regex agree on the rest.
    let re = regex::Regex::new(&failregex.replace("<HOST>", r"(?P<host>[0-9a-fA-F:.]+)")).unwrap();
    let caught = re.captures(line).unwrap_or_else(|| panic!("the filter misses {line:?}"));
    assert_eq!(&caught["host"], "127.0.0.1");
    assert!(!re.is_match(&line.replace("invalid_token", "overloaded")), "overload is not the client's fault");
}

/// The credentials file follows the server to a new listen address, and a
/// refused connection names the address tried and where it came from.
#[test]
fn the_credentials_file_follows_the_listen_address() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let credentials = data.join("credentials.toml");
    let server = ServerProcess::start(&data);
    wait_for(&credentials);
    let first = cryptomem_client::Credentials::load(&credentials).unwrap();
    let cli = Cli { credentials: credentials.clone(), key: tmp.path().join("value.key") };
    assert_eq!(cli.ok(&["ping"]), "PONG\n");
    server.terminate();
    let refused = cli.fails(&["ping"]);
    assert!(refused.contains(&first.server) && refused.contains("the address from"), "{refused}");

    // Port 0 again: another port, which the file must now name.
    let server = ServerProcess::start(&data);
    let deadline = Instant::now() + Duration::from_secs(30);
    let moved = loop {
        let now = cryptomem_client::Credentials::load(&credentials).unwrap();
        if now.server != first.server {
            break now;
        }
        assert!(Instant::now() < deadline, "the credentials file still names {}", first.server);
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(moved.token.expose().as_str(), first.token.expose().as_str(), "the token is kept");
    assert_eq!(mode(&credentials), 0o600);
    assert_eq!(cli.ok(&["ping"]), "PONG\n");
    server.terminate();
}

#[test]
fn server_key_rotate_from_the_cli_keeps_old_credentials_working_for_the_grace() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let credentials = data.join("credentials.toml");
    let server = ServerProcess::start(&data);
    wait_for(&credentials);
    let old_copy = tmp.path().join("old-credentials.toml");
    std::fs::copy(&credentials, &old_copy).unwrap();
    let old = Cli { credentials: old_copy, key: tmp.path().join("value.key") };
    let cli = Cli { credentials: credentials.clone(), key: tmp.path().join("value.key") };
    let before = cryptomem_client::Credentials::load(&credentials).unwrap();

    let data_arg = data.to_str().unwrap();
    let rotated = cli.ok(&["server-key", "rotate", "--data", data_arg, "--grace", "1h"]);
    assert!(rotated.contains("new server key") && rotated.contains("accepted for 1h"), "{rotated}");
    let after = cryptomem_client::Credentials::load(&credentials).unwrap();
    assert_ne!(after.server_public_key.as_bytes(), before.server_public_key.as_bytes());
    assert_eq!(after.previous_server_public_keys.len(), 1);
    assert_eq!(after.previous_server_public_keys[0].as_bytes(), before.server_public_key.as_bytes());
    assert_eq!(mode(&credentials), 0o600);
    assert_eq!(mode(&data.join("server-retired.key")), 0o600);
    let listed = cli.ok(&["server-key", "list", "--data", data_arg]);
    assert_eq!(listed.lines().count(), 2, "{listed}");
    assert!(listed.contains("accepted for 59m") || listed.contains("accepted for 1h"), "{listed}");

    // Both credentials work; the new file pins the new key first, so a
    // connection that succeeds on it proves the server took the key up.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cli
        .run(&["ping", "--server-key", &cryptomem_wire::secure::public_key_hex(&after.server_public_key)])
        .status
        .success()
    {
        assert!(Instant::now() < deadline, "the server never accepted the new key");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(old.ok(&["ping"]), "PONG\n");
    assert_eq!(cli.ok(&["ping"]), "PONG\n");

    // A second rotation with --grace 0 (after a key compromise) ends every
    // old key's acceptance at once; old credentials are then refused.
    cli.ok(&["server-key", "rotate", "--data", data_arg, "--grace", "0"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let refused = loop {
        let out = old.run(&["ping"]);
        if !out.status.success() {
            break String::from_utf8(out.stderr).unwrap();
        }
        assert!(Instant::now() < deadline, "the old key is still accepted");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(refused.contains("pinned") && refused.contains("server-key list"), "{refused}");
    server.terminate();
}

#[test]
fn cluster_file_spreads_cli_commands_over_two_servers() {
    let tmp = tempfile::tempdir().unwrap();
    let (a_data, b_data) = (tmp.path().join("a"), tmp.path().join("b"));
    let (a, b) = (ServerProcess::start(&a_data), ServerProcess::start(&b_data));
    wait_for(&a_data.join("credentials.toml"));
    wait_for(&b_data.join("credentials.toml"));
    let cluster = tmp.path().join("cluster.toml");
    std::fs::write(
        &cluster,
        "format = \"cryptomem-cluster\"\nversion = 1\n\
         [[server]]\nname = \"a\"\ncredentials = \"a/credentials.toml\"\n\
         [[server]]\nname = \"b\"\ncredentials = \"b/credentials.toml\"\n",
    )
    .unwrap();
    let key = tmp.path().join("value.key");
    let single = |data: &Path| Cli { credentials: data.join("credentials.toml"), key: key.clone() };
    single(&a_data).ok(&["keygen", "--out", key.to_str().unwrap()]);
    let c = cluster.to_str().unwrap();
    let cli = single(&a_data);
    let on_cluster = |args: &[&str]| cli.ok(&[args, &["--cluster", c]].concat());

    assert_eq!(on_cluster(&["ping"]), "PONG\n");
    let keys: Vec<String> = (0..20).map(|i| format!("k{i}")).collect();
    let mut mset = vec!["mset"];
    for k in &keys {
        mset.extend([k.as_str(), k.as_str()]);
    }
    assert_eq!(on_cluster(&mset), "OK\n");
    assert_eq!(on_cluster(&["dbsize"]), "(integer) 20\n");
    let (on_a, on_b) = (single(&a_data).ok(&["dbsize", "--raw"]), single(&b_data).ok(&["dbsize", "--raw"]));
    let (on_a, on_b): (u64, u64) = (on_a.trim().parse().unwrap(), on_b.trim().parse().unwrap());
    assert!(on_a > 0 && on_b > 0 && on_a + on_b == 20, "both servers hold keys: {on_a} + {on_b}");
    assert_eq!(on_cluster(&["mget", "k3", "nope", "k17"]), "1) k3\n2) (nil)\n3) k17\n");
    for k in &keys {
        assert_eq!(on_cluster(&["get", k]), format!("{k}\n"));
    }
    assert_eq!(on_cluster(&["del", "k1", "k2", "nope"]), "(integer) 2\n");
    assert_eq!(on_cluster(&["scan"]).lines().count(), 18);
    let info = on_cluster(&["info"]);
    assert!(
        info.starts_with("# Server a\n") && info.contains("\n# Server b\n") && info.contains("used_memory"),
        "{info}"
    );
    assert_eq!(on_cluster(&["save"]), "a: OK\nb: OK\n");
    assert_eq!(cli.ok(&["config", "--cluster", c, "set", "maxmemory-policy", "allkeys-lru"]), "a: OK\nb: OK\n");
    assert_eq!(cli.ok(&["config", "--cluster", c, "get", "maxmemory-policy"]), "a: allkeys-lru\nb: allkeys-lru\n");
    assert!(cli.fails(&["token", "list", "--cluster", c]).contains("one server"));

    // One server down: its keys fail naming it, the other's still work.
    drop(b);
    let mut failed = 0;
    for k in keys.iter().skip(3) {
        let out = cli.run(&["get", k, "--cluster", c]);
        if out.status.success() {
            assert_eq!(String::from_utf8(out.stdout).unwrap(), format!("{k}\n"));
        } else {
            let err = String::from_utf8(out.stderr).unwrap();
            assert!(err.contains("server b is unavailable"), "{err}");
            failed += 1;
        }
    }
    assert!(failed > 0 && failed < 17, "{failed} of 17 gets failed");
    drop(a);
}
