//! Tests of the channel namespaces: the default from the flags, `[[namespace]]` tables
//! (longest prefix wins, unset fields inherit), their errors, and the `user` rule.

use super::*;

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
