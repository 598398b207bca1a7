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

/// Resolves a TOML file (and `args`) into a config.
fn with_file(name: &str, text: &str, args: Args) -> Result<Config, String> {
    let path = std::env::temp_dir().join(format!("fanout-cfg-{name}-{}", std::process::id()));
    std::fs::write(&path, text).unwrap();
    let r = Config::resolve(
        Args {
            config: Some(path.clone()),
            ..args
        },
        None,
    );
    let _ = std::fs::remove_file(path);
    r
}

fn auth_on() -> Args {
    Args {
        jwt_secret: Some("s".into()),
        ..Args::default()
    }
}

#[test]
fn namespaces_default_to_no_history_and_follow_auth() {
    let c = Config::resolve(Args::default(), None).unwrap();
    assert_eq!(c.namespaces, Namespaces::default());
    assert!(!c.namespaces.any_history());
    let ns = c.namespaces.lookup("anything");
    assert_eq!((ns.history_size, ns.history_ttl_secs), (0, 0));
    assert_eq!(ns.subscribe, SubscribeRule::Public);
    assert_eq!(ns.publish, PublishRule::Public);
    let c = Config::resolve(auth_on(), None).unwrap();
    let ns = c.namespaces.lookup("anything");
    assert_eq!(ns.subscribe, SubscribeRule::Token);
    assert_eq!(ns.publish, PublishRule::Token);
}

#[test]
fn history_flags_set_the_default_namespace() {
    let args = Args {
        history_size: Some(100),
        history_ttl: Some(60),
        ..Args::default()
    };
    let c = Config::resolve(args, None).unwrap();
    assert!(c.namespaces.any_history());
    let ns = c.namespaces.lookup("x");
    assert_eq!((ns.history_size, ns.history_ttl_secs), (100, 60));
    // The file's top-level keys, overridden by the flags.
    let c = with_file(
        "hist",
        "history_size = 5\nhistory_ttl = 7\n",
        Args {
            history_size: Some(9),
            ..Args::default()
        },
    )
    .unwrap();
    let ns = c.namespaces.lookup("x");
    assert_eq!((ns.history_size, ns.history_ttl_secs), (9, 7));
    for (flag, max) in [
        ("history-size", *HISTORY_SIZE.end()),
        ("history-ttl", *HISTORY_TTL.end()),
    ] {
        let set = |v: u64| {
            let mut a = Args::default();
            if flag == "history-size" {
                a.history_size = Some(v);
            } else {
                a.history_ttl = Some(v);
            }
            a
        };
        assert!(Config::resolve(set(max), None).is_ok(), "--{flag} {max}");
        for v in [max + 1, u64::MAX] {
            let e = Config::resolve(set(v), None).unwrap_err();
            assert!(e.contains(&format!("--{flag} must be between")), "{e}");
        }
    }
}

#[test]
fn namespace_tables_longest_prefix_wins_and_inherit() {
    let text = r#"
history_size = 10
history_ttl = 300

[[namespace]]
prefix = "chat:"
history_size = 100

[[namespace]]
prefix = "chat:vip:"
history_ttl = 0
subscribe = "public"
publish = "none"

[[namespace]]
prefix = "user:"
subscribe = "user"
publish = "public"
"#;
    let c = with_file("ns", text, auth_on()).unwrap();
    let n = &c.namespaces;
    assert!(n.any_history());
    let chat = n.lookup("chat:general");
    assert_eq!(chat.prefix, "chat:");
    assert_eq!((chat.history_size, chat.history_ttl_secs), (100, 300));
    assert_eq!(chat.subscribe, SubscribeRule::Token, "inherited (auth on)");
    assert_eq!(chat.publish, PublishRule::Token);
    let vip = n.lookup("chat:vip:lounge");
    assert_eq!(vip.prefix, "chat:vip:", "the longest prefix wins");
    assert_eq!((vip.history_size, vip.history_ttl_secs), (10, 0));
    assert_eq!(vip.subscribe, SubscribeRule::Public);
    assert_eq!(vip.publish, PublishRule::None);
    assert_eq!(n.lookup("user:42").subscribe, SubscribeRule::User);
    assert_eq!(n.lookup("user:42").publish, PublishRule::Public);
    let other = n.lookup("news");
    assert_eq!(other.prefix, "");
    assert_eq!((other.history_size, other.history_ttl_secs), (10, 300));
    assert_eq!(n.lookup("chat").prefix, "", "a prefix is a prefix");
    assert_eq!(n.tables().len(), 3);
    // Only size turns history on.
    let c = with_file(
        "ns-off",
        "[[namespace]]\nprefix = \"a\"\nhistory_ttl = 5\n",
        Args::default(),
    )
    .unwrap();
    assert!(!c.namespaces.any_history());
    let c = with_file(
        "ns-on",
        "[[namespace]]\nprefix = \"a\"\nhistory_size = 1\n",
        Args::default(),
    )
    .unwrap();
    assert!(c.namespaces.any_history());
    assert_eq!(c.namespaces.lookup("b").history_size, 0);
}

#[test]
fn namespace_errors_are_clear() {
    let cases: &[(&str, bool, &str)] = &[
        (
            "[[namespace]]\nhistory_size = 1\n",
            true,
            "prefix is required",
        ),
        ("[[namespace]]\nprefix = \"\"\n", true, "prefix is required"),
        (
            "[[namespace]]\nprefix = \"a\"\n[[namespace]]\nprefix = \"a\"\n",
            true,
            "given twice",
        ),
        (
            "[[namespace]]\nprefix = \"a\"\ncolour = 1\n",
            true,
            "colour",
        ),
        (
            "[[namespace]]\nprefix = \"a\"\nsubscribe = \"all\"\n",
            true,
            "all",
        ),
        (
            "[[namespace]]\nprefix = \"a\"\npublish = \"yes\"\n",
            true,
            "yes",
        ),
        (
            "[[namespace]]\nprefix = \"a\"\nhistory_size = -1\n",
            true,
            "history_size",
        ),
        (
            "[[namespace]]\nprefix = \"a\"\nhistory_size = 1000001\n",
            true,
            "--history-size must be between",
        ),
        (
            "[[namespace]]\nprefix = \"a\"\nhistory_ttl = 2592001\n",
            true,
            "--history-ttl must be between",
        ),
        ("[[namespace]]\nprefix = \"__fanout:x\"\n", true, "reserved"),
        ("[[namespace]]\nprefix = \"__fan\"\n", true, "reserved"),
        ("[[namespace]]\nprefix = \"a\\nb\"\n", true, "control"),
        ("namespace = 3\n", true, "namespace"),
        // Rules that need a token, without auth.
        (
            "[[namespace]]\nprefix = \"a\"\nsubscribe = \"user\"\n",
            false,
            "needs auth",
        ),
        (
            "[[namespace]]\nprefix = \"a\"\nsubscribe = \"token\"\n",
            false,
            "needs auth",
        ),
        (
            "[[namespace]]\nprefix = \"a\"\npublish = \"token\"\n",
            false,
            "needs auth",
        ),
    ];
    for (i, (text, auth, want)) in cases.iter().enumerate() {
        let args = if *auth { auth_on() } else { Args::default() };
        let e = with_file(&format!("nserr{i}"), text, args).unwrap_err();
        assert!(e.contains(want), "{text:?}: {e}");
    }
    let long = format!("[[namespace]]\nprefix = \"{}\"\n", "a".repeat(257));
    let e = with_file("nslong", &long, auth_on()).unwrap_err();
    assert!(e.contains("longer than"), "{e}");
    let many: String = (0..=MAX_NAMESPACES)
        .map(|i| format!("[[namespace]]\nprefix = \"p{i}:\"\n"))
        .collect();
    let e = with_file("nsmany", &many, auth_on()).unwrap_err();
    assert!(e.contains("at most"), "{e}");
    // Public and none need no token.
    let c = with_file(
        "nsnoauth",
        "[[namespace]]\nprefix = \"a\"\nsubscribe = \"public\"\npublish = \"none\"\n",
        Args::default(),
    )
    .unwrap();
    assert_eq!(c.namespaces.lookup("ab").publish, PublishRule::None);
}

#[test]
fn a_users_own_channels() {
    let ns = Namespace {
        prefix: "user:".into(),
        history_size: 0,
        history_ttl_secs: 0,
        subscribe: SubscribeRule::User,
        publish: PublishRule::Token,
    };
    assert!(ns.is_users_own("user:42", "42"));
    assert!(ns.is_users_own("user:42:inbox", "42"));
    assert!(!ns.is_users_own("user:421", "42"), "another user");
    assert!(!ns.is_users_own("user:4", "42"));
    assert!(!ns.is_users_own("user:", ""), "no empty user");
    assert!(!ns.is_users_own("users:42", "42"));
    assert!(!ns.is_users_own("x:user:42", "42"));
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
