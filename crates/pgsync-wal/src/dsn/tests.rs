use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt as _;

use super::*;

fn no_env(_: &str) -> Option<String> {
    None
}

fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    move |k| map.get(k).cloned()
}

fn parse(dsn: &str) -> ConnInfo {
    ConnInfo::parse_with_env(dsn, no_env).unwrap_or_else(|e| panic!("{dsn}: {e}"))
}

fn refused(dsn: &str) -> DsnError {
    match ConnInfo::parse_with_env(dsn, no_env) {
        Ok(c) => panic!("{dsn} parsed: {c:?}"),
        Err(e) => e,
    }
}

#[test]
fn key_value_strings_keep_quoting_and_escapes() {
    let c = parse(
        r"host=db.example port = 6543 user='app user' password='p w\'x\\' dbname=sh\ op sslmode=verify-full sslrootcert=/etc/ca.pem replication=database",
    );
    assert_eq!(
        c.endpoint,
        Endpoint::Tcp {
            host: "db.example".into(),
            hostaddr: None
        }
    );
    assert_eq!(c.port, 6543);
    assert_eq!(c.user, "app user");
    assert_eq!(c.password.as_deref(), Some(&br"p w'x\"[..]));
    assert_eq!(c.dbname(), "sh op");
    assert_eq!(c.ssl_mode, SslMode::VerifyFull);
    assert_eq!(c.ssl_root_cert.as_deref(), Some(Path::new("/etc/ca.pem")));
    assert_eq!(
        parse("dbname='' user=u").dbname(),
        "u",
        "empty means not given"
    );
}

#[test]
fn uris_decode_every_part_and_take_keys_from_the_query() {
    let c = parse(
        "postgresql://rep%40x:s%3Acret@localhost:5433/sh%20op?sslmode=verify-ca&sslrootcert=%2Ftmp%2Fca.pem&application_name=x",
    );
    assert_eq!(c.user, "rep@x");
    assert_eq!(c.password.as_deref(), Some(&b"s:cret"[..]));
    assert_eq!(c.port, 5433);
    assert_eq!(c.dbname(), "sh op");
    assert_eq!(c.ssl_mode, SslMode::VerifyCa);
    assert_eq!(c.ssl_root_cert.as_deref(), Some(Path::new("/tmp/ca.pem")));
    assert_eq!(c.get_application_name(), Some("x"));

    let v6 = parse("postgres://[::1]:6000/db");
    assert_eq!(v6.target(), "[::1]:6000");
    let socket = parse("postgres://%2Fvar%2Frun%2Fpostgresql/db");
    assert_eq!(
        socket.endpoint,
        Endpoint::Unix("/var/run/postgresql".into())
    );
    let query_host = parse("postgresql:///db?host=/tmp&port=5499");
    assert_eq!(query_host.endpoint, Endpoint::Unix("/tmp".into()));
    assert_eq!(query_host.port, 5499);
    let bare = parse("postgres://");
    assert_eq!(bare.target(), "localhost:5432");
}

#[test]
fn hostaddr_is_where_we_connect_and_host_what_the_certificate_names() {
    let c = parse("host=db.example hostaddr=192.0.2.7 dbname=x");
    assert_eq!(
        c.endpoint,
        Endpoint::Tcp {
            host: "db.example".into(),
            hostaddr: Some("192.0.2.7".parse().unwrap())
        }
    );
    assert!(c.is_remote());
    assert!(!parse("host=127.0.0.1").is_remote());
    assert!(!parse("host=localhost").is_remote());
    assert!(!parse("host=/tmp").is_remote());
    let e = refused("hostaddr=db.example");
    assert_eq!(e.key(), Some("hostaddr"));
    assert!(e.to_string().contains("host="), "{e}");
}

#[test]
fn the_environment_fills_in_keys_the_dsn_leaves_out() {
    let vars = [
        ("PGHOST", "envhost"),
        ("PGPORT", "6000"),
        ("PGUSER", "envuser"),
        ("PGDATABASE", "envdb"),
        ("PGSSLMODE", "require"),
        ("PGSSLROOTCERT", "/env/ca.pem"),
        ("PGPASSWORD", "envpw"),
    ];
    let c = ConnInfo::parse_with_env("", env(&vars)).unwrap();
    assert_eq!(c.describe(), "envuser@envhost:6000/envdb");
    assert_eq!(c.ssl_mode, SslMode::Require);
    assert_eq!(c.ssl_root_cert.as_deref(), Some(Path::new("/env/ca.pem")));
    assert_eq!(c.password.as_deref(), Some(&b"envpw"[..]));
    assert!(c.has_dbname());

    let c = ConnInfo::parse_with_env(
        "host=h port=1 user=u dbname=d sslmode=disable sslrootcert=/dsn.pem password=p",
        env(&vars),
    )
    .unwrap();
    assert_eq!(c.describe(), "u@h:1/d", "the DSN wins over the environment");
    assert_eq!(c.ssl_mode, SslMode::Disable);
    assert_eq!(c.ssl_root_cert.as_deref(), Some(Path::new("/dsn.pem")));
    assert_eq!(c.password.as_deref(), Some(&b"p"[..]));

    let bad = ConnInfo::parse_with_env("host=h", env(&[("PGSSLMODE", "on")])).unwrap_err();
    assert!(bad.to_string().contains("PGSSLMODE"), "{bad}");
    let bad = ConnInfo::parse_with_env("host=h", env(&[("PGPORT", "x")])).unwrap_err();
    assert!(bad.to_string().contains("PGPORT=\"x\""), "{bad}");
    let c = ConnInfo::parse_with_env("host=h", env(&[("USER", "osuser")])).unwrap();
    assert_eq!(c.user(), "osuser");
    assert!(!c.has_dbname());
    assert_eq!(c.dbname(), "osuser");
}

#[test]
fn the_password_comes_from_the_dsn_then_pgpassword_then_a_private_password_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pgpass");
    std::fs::write(
        &file,
        "# comment\nother:5432:*:*:nope\nh:5433:shop:app:se\\:cr\\\\et\nlocalhost:*:*:*:sock\n*:*:*:*:fallback\n",
    )
    .unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let path = file.to_str().unwrap();
    let pw = |dsn: &str, vars: &[(&str, &str)]| {
        ConnInfo::parse_with_env(dsn, env(vars))
            .unwrap()
            .password
            .map(|p| String::from_utf8(p).unwrap())
    };
    let passfile = [("PGPASSFILE", path)];
    let both = [("PGPASSFILE", path), ("PGPASSWORD", "fromenv")];
    let dsn = "host=h port=5433 user=app dbname=shop";
    assert_eq!(pw(dsn, &passfile).as_deref(), Some("se:cr\\et"));
    assert_eq!(pw(dsn, &both).as_deref(), Some("fromenv"));
    assert_eq!(
        pw(&format!("{dsn} password=indsn"), &both).as_deref(),
        Some("indsn")
    );
    assert_eq!(
        pw("host=h port=9 user=app dbname=shop", &passfile).as_deref(),
        Some("fallback")
    );
    assert_eq!(pw("host=/tmp user=app", &passfile).as_deref(), Some("sock"));
    // passfile= in the DSN, and ~/.pgpass through HOME.
    assert_eq!(
        pw(&format!("{dsn} passfile={path}"), &[]).as_deref(),
        Some("se:cr\\et")
    );
    std::fs::copy(&file, dir.path().join(".pgpass")).unwrap();
    let home = [("HOME", dir.path().to_str().unwrap())];
    assert_eq!(pw(dsn, &home).as_deref(), Some("se:cr\\et"));

    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert_eq!(
        pw(dsn, &passfile),
        None,
        "a readable password file is ignored"
    );
}

#[test]
fn unknown_keys_and_bad_values_name_the_key_and_the_fix() {
    for (dsn, key, fix) in [
        ("host=h sslmode=sometimes", Some("sslmode"), "verify-full"),
        ("host=h port=notaport", Some("port"), "port=5432"),
        ("host=h port=0", Some("port"), "65535"),
        ("host=a,b", Some("host"), "one server"),
        ("postgres://a:1,b:2/db", Some("host"), "one server"),
        ("host=h frobnicate=1", Some("frobnicate"), "sslrootcert"),
        ("host=h sslcert=/c.pem", Some("sslcert"), "scram-sha-256"),
        (
            "host=h connect_timeout=soon",
            Some("connect_timeout"),
            "connect_timeout=10",
        ),
        (
            "host=h replication=true",
            Some("replication"),
            "leave replication out",
        ),
        (
            "host=h channel_binding=require",
            Some("channel_binding"),
            "prefer",
        ),
        (
            "host=h target_session_attrs=standby",
            Some("target_session_attrs"),
            "read-write",
        ),
        ("host=h user", None, "missing \"=\""),
        ("host='h", None, "closing quote"),
        ("postgres://h/db?sslmode", None, "=value"),
        ("postgres://h/d%zzb", None, "percent-escape"),
    ] {
        let e = refused(dsn);
        assert_eq!(e.key(), key, "{dsn}: {e}");
        assert!(e.to_string().starts_with("invalid DSN: "), "{dsn}: {e}");
        assert!(e.to_string().contains(fix), "{dsn}: {e}");
    }
    let syntax = refused("host=h user");
    assert!(
        syntax.to_string().contains("dbname=shop"),
        "an example: {syntax}"
    );
}

#[test]
fn every_sslmode_parses_and_later_keys_win() {
    for mode in [
        SslMode::Disable,
        SslMode::Allow,
        SslMode::Prefer,
        SslMode::Require,
        SslMode::VerifyCa,
        SslMode::VerifyFull,
    ] {
        assert_eq!(parse(&format!("sslmode={mode}")).ssl_mode, mode);
    }
    assert_eq!(parse("").ssl_mode, SslMode::Prefer, "libpq's default");
    assert_eq!(parse("port=1 port=2").port, 2);
    let c = parse("fallback_application_name=fb connect_timeout=0 keepalives_idle=30");
    assert_eq!(c.get_application_name(), Some("fb"));
    assert_eq!(c.connect_timeout, None);
    assert_eq!(c.keepalives.idle, Some(Duration::from_secs(30)));
}

#[test]
fn debug_and_errors_never_show_the_password() {
    let c = parse("host=h user=u password=hunter2");
    let shown = format!("{c:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("<redacted>"), "{shown}");
    assert!(!c.describe().contains("hunter2"));
    assert!(!format!("{:?}", c.tls()).contains("hunter2"));
    for dsn in [
        "host=h port=x password=hunter2",
        "password='hunter2",
        "postgres://u:hunter2%zz@h/db",
        "postgres://u:hunter2@h/db?port=x",
    ] {
        let e = refused(dsn);
        assert!(!e.to_string().contains("hunter2"), "{dsn}: {e}");
        assert!(!format!("{e:?}").contains("hunter2"), "{dsn}: {e:?}");
    }
}
