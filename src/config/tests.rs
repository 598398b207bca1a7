//! Config parsing: flags, environment, TOML, precedence and bounds.

use super::*;

#[test]
fn defaults_and_port_env() {
    let c = Config::resolve(Args::default(), None).unwrap();
    assert_eq!(c.listen.to_string(), "127.0.0.1:3000");
    assert!(c.redis.is_none());
    assert_eq!(c.limits, Limits::default());
    let c = Config::resolve(Args::default(), Some("4000".into())).unwrap();
    assert_eq!(c.listen.to_string(), "127.0.0.1:4000");
    assert!(Config::resolve(Args::default(), Some("x".into())).is_err());
}

#[test]
fn file_then_flags() {
    let dir = std::env::temp_dir().join(format!("fanout-cfg-{}", std::process::id()));
    std::fs::write(&dir, "max_message = 1000\nshards = 3\n").unwrap();
    let args = Args {
        config: Some(dir.clone()),
        shards: Some(2),
        ..Args::default()
    };
    let c = Config::resolve(args, None).unwrap();
    assert_eq!(c.limits.max_message, 1000);
    assert_eq!(c.shards, 2);
    std::fs::write(&dir, "nonsense = 1\n").unwrap();
    let args = Args {
        config: Some(dir.clone()),
        ..Args::default()
    };
    assert!(Config::resolve(args, None).is_err());
    let _ = std::fs::remove_file(dir);
}

#[test]
fn rejects_bad_limits() {
    let bad = Args {
        shards: Some(0),
        ..Args::default()
    };
    assert!(Config::resolve(bad, None).is_err());
    let bad = Args {
        max_message: Some(0),
        ..Args::default()
    };
    assert!(Config::resolve(bad, None).is_err());
}

#[test]
fn origins_api_key_and_presence() {
    let args = Args {
        allowed_origins: Some(" https://A.example/ ,https://b.example".into()),
        api_key: Some(String::new()),
        presence: Some(OnOff::Off),
        presence_heartbeat: Some(2),
        presence_ttl: Some(10),
        ..Args::default()
    };
    let c = Config::resolve(args, None).unwrap();
    assert_eq!(
        c.allowed_origins,
        ["https://a.example", "https://b.example"]
    );
    assert_eq!(c.api_key, None);
    assert!(!c.presence.enabled);
    assert_eq!(c.presence.heartbeat, Duration::from_secs(2));
    let any = Args {
        allowed_origins: Some("*".into()),
        ..Args::default()
    };
    assert!(Config::resolve(any, None)
        .unwrap()
        .allowed_origins
        .is_empty());
    let bad = Args {
        presence_heartbeat: Some(200),
        ..Args::default()
    };
    assert!(Config::resolve(bad, None).is_err());
}

/// `Args` with one numeric flag set by name.
fn with_flag(name: &str, v: u64) -> Args {
    let mut a = Args::default();
    let n = usize::try_from(v).unwrap_or(usize::MAX);
    match name {
        "max-message" => a.max_message = Some(n),
        "max-subscriptions" => a.max_subscriptions = Some(n),
        "max-channel-len" => a.max_channel_len = Some(n),
        "outbound-limit" => a.outbound_limit = Some(n),
        "shards" => a.shards = Some(n),
        "ping-interval" => a.ping_interval = Some(v),
        "handshake-timeout" => a.handshake_timeout = Some(v),
        "shutdown-timeout" => a.shutdown_timeout = Some(v),
        "flush-interval" => a.flush_interval = Some(v),
        "presence-heartbeat" => {
            a.presence_heartbeat = Some(v);
            a.presence_ttl = Some(86_400);
        }
        "presence-ttl" => a.presence_ttl = Some(v),
        _ => unreachable!("{name}"),
    }
    a
}

#[test]
fn every_numeric_flag_has_an_upper_bound_with_a_clear_message() {
    let flags: [(&str, u64); 11] = [
        ("max-message", *MAX_MESSAGE.end() as u64),
        ("max-subscriptions", *MAX_SUBSCRIPTIONS.end() as u64),
        ("max-channel-len", *MAX_CHANNEL_LEN.end() as u64),
        ("outbound-limit", *OUTBOUND_LIMIT.end() as u64),
        ("shards", *SHARDS.end() as u64),
        ("ping-interval", *SECONDS.end()),
        ("handshake-timeout", *SECONDS.end()),
        ("shutdown-timeout", *SECONDS.end()),
        ("flush-interval", *FLUSH_MICROS.end()),
        ("presence-heartbeat", *HEARTBEAT_SECONDS.end()),
        ("presence-ttl", *SECONDS.end()),
    ];
    for (name, max) in flags {
        assert!(
            Config::resolve(with_flag(name, max), None).is_ok(),
            "--{name} {max}"
        );
        for v in [max + 1, u64::MAX] {
            let e = Config::resolve(with_flag(name, v), None).unwrap_err();
            assert!(e.contains(&format!("--{name} must be between")), "{e}");
            assert!(e.contains(&max.to_string()), "{e}");
        }
    }
    let c = Config::resolve(with_flag("presence-ttl", 86_400), None).unwrap();
    // The store's largest product: TTL in ms plus 3 heartbeats.
    assert!(c
        .presence
        .ttl_secs
        .checked_mul(1000)
        .and_then(|ms| ms.checked_add(3 * 3_600_000))
        .is_some());
}

#[test]
fn toml_lists_and_log_format() {
    let path = std::env::temp_dir().join(format!("fanout-cfg-list-{}", std::process::id()));
    let resolve = |text: &str| {
        std::fs::write(&path, text).unwrap();
        let args = Args {
            config: Some(path.clone()),
            ..Args::default()
        };
        Config::resolve(args, None)
    };
    let c = resolve(
        "allowed_origins = [\"https://a.example/\", \"https://B.example\"]\nlog_format = \"json\"\n",
    )
    .unwrap();
    assert_eq!(
        c.allowed_origins,
        ["https://a.example", "https://b.example"]
    );
    assert_eq!(c.log_format, LogFormat::Json);
    let c = resolve("allowed_origins = \"https://a.example, https://c.example\"\n").unwrap();
    assert_eq!(
        c.allowed_origins,
        ["https://a.example", "https://c.example"]
    );
    assert_eq!(c.log_format, LogFormat::Text);
    assert!(resolve("allowed_origins = [\"*\"]\n")
        .unwrap()
        .allowed_origins
        .is_empty());
    let e = resolve("allowed_origins = [1]\n").unwrap_err();
    assert!(e.contains("allowed_origins") || e.contains("string"), "{e}");
    let _ = std::fs::remove_file(&path);
}

#[test]
fn backoff_is_capped() {
    assert_eq!(backoff(0), Duration::from_millis(100));
    assert_eq!(backoff(3), Duration::from_millis(800));
    assert_eq!(backoff(30), Duration::from_millis(5000));
}

#[test]
fn jwt_flags_and_file() {
    let c = Config::resolve(Args::default(), None).unwrap();
    assert!(c.jwt.is_none(), "auth off by default");
    let args = Args {
        jwt_secret: Some("s".into()),
        jwt_audience: Some("app".into()),
        ..Args::default()
    };
    let jwt = Config::resolve(args, None).unwrap().jwt.unwrap();
    assert!(jwt.key == JwtKey::Secret(b"s".to_vec()));
    assert_eq!(jwt.audience.as_deref(), Some("app"));
    assert!(
        !format!("{jwt:?}").contains("[115]"),
        "the secret's bytes are not printed"
    );
    let pem = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/rsa_public.pem");
    let both = Args {
        jwt_secret: Some("s".into()),
        jwt_public_key: Some(pem.into()),
        ..Args::default()
    };
    assert!(Config::resolve(both, None).is_err(), "both keys");
    let alone = Args {
        jwt_audience: Some("app".into()),
        ..Args::default()
    };
    assert!(
        Config::resolve(alone, None).is_err(),
        "an audience without a key"
    );
    let dir = std::env::temp_dir().join(format!("fanout-cfg-jwt-{}", std::process::id()));
    std::fs::write(&dir, format!("jwt_public_key = {pem:?}\n")).unwrap();
    let args = Args {
        config: Some(dir.clone()),
        ..Args::default()
    };
    let jwt = Config::resolve(args, None).unwrap().jwt.unwrap();
    assert!(matches!(jwt.key, JwtKey::PublicKeyPem(ref p) if p.starts_with(b"-----BEGIN")));
    let _ = std::fs::remove_file(dir);
}

#[test]
fn redis_cluster_seeds_become_a_cluster_url() {
    let args = Args {
        redis_cluster: Some("h1:7000,h2:7001".into()),
        ..Args::default()
    };
    let c = Config::resolve(args, None).unwrap();
    assert_eq!(c.redis.as_deref(), Some("redis+cluster://h1:7000,h2:7001"));
    assert!(c.is_cluster());
    let args = Args {
        redis_cluster: Some("rediss+cluster://u:p@h1:7000".into()),
        redis_insecure: true,
        ..Args::default()
    };
    let c = Config::resolve(args, None).unwrap();
    assert!(c.is_cluster() && c.redis_tls.insecure);
    let args = Args {
        redis: Some("redis+cluster://h1:7000".into()),
        ..Args::default()
    };
    assert!(Config::resolve(args, None).unwrap().is_cluster());
    let both = Args {
        redis: Some("redis://h".into()),
        redis_cluster: Some("h1:7000".into()),
        ..Args::default()
    };
    let e = Config::resolve(both, None).unwrap_err();
    assert!(e.contains("--redis-cluster"), "{e}");
    let one = Args {
        redis: Some("redis://h".into()),
        ..Args::default()
    };
    assert!(!Config::resolve(one, None).unwrap().is_cluster());
}

#[test]
fn compression_is_off_unless_asked_by_flag_or_file() {
    assert!(!Config::resolve(Args::default(), None).unwrap().compression);
    let on = Args {
        compression: Some(OnOff::On),
        ..Args::default()
    };
    assert!(Config::resolve(on, None).unwrap().compression);
    let path = std::env::temp_dir().join(format!("fanout-cfg-z-{}", std::process::id()));
    std::fs::write(&path, "compression = \"on\"\n").unwrap();
    let from_file = |flag| {
        let args = Args {
            config: Some(path.clone()),
            compression: flag,
            ..Args::default()
        };
        Config::resolve(args, None).unwrap().compression
    };
    assert!(from_file(None));
    assert!(!from_file(Some(OnOff::Off)), "the flag wins over the file");
    let _ = std::fs::remove_file(path);
}
