//! Configuration loading and the command line, end to end through the real `gateway`
//! binary: every problem is printed as `file:line: message`, `check` exits 1 on any
//! problem and 0 with a one-line summary otherwise.

// Test code: a failed unwrap is a failed run, as in a unit test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

// The harness re-exports its upstream server, which these tests do not need.
mod common;

use common::line_of;

use common::{bin, free_port, output_pipes, ConfigDir};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// One route list item, `match` on a single line, with `body` (unindented YAML lines)
/// appended under it. Quoted so that `{param}` paths stay plain strings.
fn route_with(name: &str, path: &str, body: &str) -> String {
    let mut s = format!("  - name: {name}\n    match: {{ path: \"{path}\" }}\n");
    for line in body.lines() {
        s.push_str("    ");
        s.push_str(line);
        s.push('\n');
    }
    s
}

/// A minimal valid public route to upstream `users`.
fn route(name: &str, path: &str) -> String {
    route_with(name, path, "auth: none\nupstream: users")
}

/// A policy file: each upstream with one (never contacted) target, then the routes.
fn policy(upstreams: &[&str], routes: &[String]) -> String {
    let mut s = String::new();
    if !upstreams.is_empty() {
        s.push_str("upstreams:\n");
        for u in upstreams {
            s.push_str(&format!("  {u}:\n    targets: [\"127.0.0.1:9\"]\n"));
        }
    }
    if !routes.is_empty() {
        s.push_str("routes:\n");
        for r in routes {
            s.push_str(r);
        }
    }
    s
}

/// The line of `needle` in the gateway.yaml the harness wrote (with the `extra` part).
fn gateway_line(c: &ConfigDir, needle: &str) -> usize {
    let text = std::fs::read_to_string(c.gateway_yaml()).expect("read gateway.yaml");
    line_of(&text, needle)
}

/// The path under which problems in policy file `name` are reported.
fn policy_path(c: &ConfigDir, name: &str) -> PathBuf {
    c.path().join("policies").join(name)
}

/// The message of the problem printed as `file:line: message`; panics with the whole
/// output when there is none.
fn problem_at(out: &str, file: &Path, line: usize) -> String {
    let prefix = format!("{}:{line}: ", file.display());
    out.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no problem reported as {prefix:?}; output:\n{out}"))
}

/// Asserts that `check` failed and reported `file:line: ` with a message containing
/// every one of `parts`; returns the message.
fn assert_problem(ok: bool, out: &str, file: &Path, line: usize, parts: &[&str]) -> String {
    assert!(!ok, "check should have failed; output:\n{out}");
    let msg = problem_at(out, file, line);
    for p in parts {
        assert!(
            msg.contains(p),
            "message {msg:?} should contain {p:?}; output:\n{out}"
        );
    }
    msg
}

/// Checks `text` as the only policy file, `routes.yaml`, and asserts that it failed with
/// a problem on the line of `needle` whose message contains every one of `parts`; returns
/// the whole output.
fn assert_routes_problem(text: &str, needle: &str, parts: &[&str]) -> String {
    let c = ConfigDir::new("", &[("routes.yaml", text)]);
    let (ok, out) = c.check();
    assert_problem(
        ok,
        &out,
        &policy_path(&c, "routes.yaml"),
        line_of(text, needle),
        parts,
    );
    out
}

/// The `N problem(s) found` trailer of a failed check.
fn problem_count(out: &str) -> usize {
    out.lines()
        .find_map(|l| l.strip_suffix(" problem(s) found"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no problem count; output:\n{out}"))
}

/// Replaces the harness's gateway.yaml.
fn write_gateway(c: &ConfigDir, text: &str) {
    std::fs::write(c.gateway_yaml(), text).expect("write gateway.yaml");
}

/// Runs the binary with `args`, feeding `stdin` if given; kills it after `limit`.
/// Returns the exit status (None when it had to be killed) and stdout + stderr.
fn run_bin(args: &[&str], stdin: Option<&str>, limit: Duration) -> (Option<ExitStatus>, String) {
    let mut child = Command::new(bin())
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn gateway");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin");
        pipe.write_all(input.as_bytes()).expect("write stdin");
    }
    let readers: Vec<_> = output_pipes(&mut child)
        .into_iter()
        .map(|mut pipe| {
            std::thread::spawn(move || {
                let mut s = String::new();
                let _ = pipe.read_to_string(&mut s);
                s
            })
        })
        .collect();
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = readers
        .into_iter()
        .map(|r| r.join().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("");
    (status, out)
}

const DEMO_ACME_HASH: &str =
    "sha256:a2fb8545fcd457204e9fee11be92013aa3240b1b146fe262ba608fdfc159041c";

// ---------------------------------------------------------------------------------------
// gateway check: valid configurations
// ---------------------------------------------------------------------------------------

#[test]
fn check_valid_config_prints_one_line_summary() {
    let c = ConfigDir::new(
        "limits:\n  max_body: 64KiB\n",
        &[
            (
                "a.yaml",
                &policy(&["users"], &[route("get-user", "/v1/users/{id}")]),
            ),
            (
                "b.yml",
                &policy(
                    &["orders"],
                    &[
                        route_with("orders", "/v1/orders/*", "auth: none\nupstream: orders"),
                        route_with(
                            "rewritten",
                            "/v2/users/{id}",
                            "auth: none\nupstream: users\nrewrite: { path: \"/users/{path.id}?q={query.q}\" }\nrequest: { max_body: 1MiB, headers: { set: { X-Gateway: \"1\" }, remove: [Cookie] } }",
                        ),
                    ],
                ),
            ),
        ],
    );
    let (ok, out) = c.check();
    assert!(ok, "check failed:\n{out}");
    assert_eq!(
        out.trim_end(),
        "ok: 1 listener(s), 2 policy file(s), 2 upstream(s), 3 route(s)",
        "the summary is exactly one line"
    );
}

#[test]
fn check_without_c_reads_gateway_yaml_in_the_current_directory() {
    let c = ConfigDir::new(
        "listners: []\n",
        &[("a.yaml", &policy(&["users"], &[route("a", "/a")]))],
    );
    let line = gateway_line(&c, "listners");
    let out = Command::new(bin())
        .arg("check")
        .current_dir(c.path())
        .output()
        .expect("run gateway check");
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stderr);
    // The file is named as it was given: relative to where the command ran.
    assert!(
        text.lines()
            .any(|l| l.starts_with(&format!("gateway.yaml:{line}: unknown field `listners`"))),
        "{text}"
    );
}

#[test]
fn check_missing_config_file_fails() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("nope.yaml");
    let (status, out) = run_bin(
        &["check", "-c", missing.to_str().unwrap()],
        None,
        Duration::from_secs(20),
    );
    assert_eq!(status.and_then(|s| s.code()), Some(1), "{out}");
    assert!(
        out.contains(&format!("{}: cannot read file", missing.display())),
        "{out}"
    );
}

// ---------------------------------------------------------------------------------------
// Unknown keys
// ---------------------------------------------------------------------------------------

#[test]
fn unknown_top_level_key_in_gateway_yaml() {
    let c = ConfigDir::new(
        "listners:\n  - name: typo\n",
        &[("a.yaml", &policy(&["users"], &[route("a", "/a")]))],
    );
    let (ok, out) = c.check();
    let line = gateway_line(&c, "listners:");
    assert_eq!(line, 9, "the harness writes 8 lines before `extra`");
    assert_problem(
        ok,
        &out,
        &c.gateway_yaml(),
        line,
        &["unknown field `listners`", "expected one of `listeners`"],
    );
}

#[test]
fn unknown_key_inside_limits() {
    let c = ConfigDir::new(
        "limits:\n  max_body: 1MiB\n  max_bdy: 2MiB\n",
        &[("a.yaml", &policy(&["users"], &[route("a", "/a")]))],
    );
    let (ok, out) = c.check();
    let line = gateway_line(&c, "max_bdy");
    assert_problem(
        ok,
        &out,
        &c.gateway_yaml(),
        line,
        &["limits: unknown field `max_bdy`", "`max_body`"],
    );
}

#[test]
fn unknown_key_inside_route_match() {
    let text = "upstreams:\n  users:\n    targets: [\"127.0.0.1:9\"]\nroutes:\n  - name: a\n    match:\n      path: /a\n      mehtods: [GET]\n    auth: none\n    upstream: users\n";
    let c = ConfigDir::new("", &[("routes.yaml", text)]);
    let (ok, out) = c.check();
    assert_eq!(line_of(text, "mehtods"), 8);
    assert_problem(
        ok,
        &out,
        &policy_path(&c, "routes.yaml"),
        8,
        &["routes[0].match: unknown field `mehtods`", "`methods`"],
    );
    assert_eq!(problem_count(&out), 1, "{out}");
}

#[test]
fn unknown_key_inside_upstream_and_top_level_of_policy() {
    let a = "upstreams:\n  users:\n    targets: [\"127.0.0.1:9\"]\n    balanse: random\n";
    let b = format!("{}route: []\n", policy(&[], &[route("a", "/a")]));
    let c = ConfigDir::new("", &[("a.yaml", a), ("b.yaml", &b)]);
    let (ok, out) = c.check();
    assert_problem(
        ok,
        &out,
        &policy_path(&c, "a.yaml"),
        4,
        &["unknown field `balanse`"],
    );
    assert_problem(
        ok,
        &out,
        &policy_path(&c, "b.yaml"),
        line_of(&b, "route: []"),
        &["unknown field `route`", "`routes`"],
    );
}

// ---------------------------------------------------------------------------------------
// Names defined twice, references
// ---------------------------------------------------------------------------------------

#[test]
fn duplicate_route_name_across_files_names_both_files() {
    let a = policy(&["users"], &[route("orders", "/a")]);
    let b = policy(&[], &[route("other", "/o"), route("orders", "/b")]);
    let c = ConfigDir::new("", &[("a.yaml", &a), ("b.yaml", &b)]);
    let (ok, out) = c.check();
    let first = policy_path(&c, "a.yaml").display().to_string();
    assert_problem(
        ok,
        &out,
        &policy_path(&c, "b.yaml"),
        line_of(&b, "name: orders"),
        &["route name \"orders\" is defined twice", &first],
    );
    assert_eq!(problem_count(&out), 1, "{out}");
}

#[test]
fn duplicate_upstream_name_across_files_names_both_files() {
    let a = policy(&["users"], &[route("a", "/a")]);
    let b = policy(&["orders", "users"], &[]);
    let c = ConfigDir::new("", &[("a.yaml", &a), ("b.yaml", &b)]);
    let (ok, out) = c.check();
    let first = policy_path(&c, "a.yaml").display().to_string();
    assert_problem(
        ok,
        &out,
        &policy_path(&c, "b.yaml"),
        line_of(&b, "  users:"),
        &["upstream \"users\" is defined twice", &first],
    );
}

#[test]
fn route_to_unknown_upstream() {
    let text = policy(
        &["users"],
        &[
            route("fine", "/fine"),
            route_with("lost", "/lost", "auth: none\nupstream: userz"),
        ],
    );
    assert_routes_problem(
        &text,
        "upstream: userz",
        &["route \"lost\"", "unknown upstream \"userz\""],
    );
}

// ---------------------------------------------------------------------------------------
// Templates, durations, sizes
// ---------------------------------------------------------------------------------------

#[test]
fn bad_rewrite_templates() {
    let text = policy(
        &["users"],
        &[
            route_with(
                "unknown-param",
                "/a/{id}",
                "auth: none\nupstream: users\nrewrite: { path: \"/u/{path.nope}\" }",
            ),
            route_with(
                "unclosed",
                "/b/{id}",
                "auth: none\nupstream: users\nrewrite:\n  path: \"/u/{path.id\"",
            ),
            route_with(
                "namespace",
                "/c/{id}",
                "auth: none\nupstream: users\nrewrite: { path: \"/u/{cookie.id}\" }",
            ),
            route_with(
                "stray",
                "/d/{id}",
                "auth: none\nupstream: users\nrewrite: { path: \"/u/path.id}\" }",
            ),
        ],
    );
    let c = ConfigDir::new("", &[("routes.yaml", &text)]);
    let (ok, out) = c.check();
    let file = policy_path(&c, "routes.yaml");
    assert_problem(
        ok,
        &out,
        &file,
        line_of(&text, "{path.nope}"),
        &[
            "route \"unknown-param\"",
            "{path.nope} is not a parameter of the route's path",
        ],
    );
    assert_problem(
        ok,
        &out,
        &file,
        line_of(&text, "\"/u/{path.id\""),
        &["route \"unclosed\"", "unclosed `{`"],
    );
    assert_problem(
        ok,
        &out,
        &file,
        line_of(&text, "{cookie.id}"),
        &[
            "route \"namespace\"",
            "unknown template variable {cookie.id}",
        ],
    );
    assert_problem(
        ok,
        &out,
        &file,
        line_of(&text, "/u/path.id}"),
        &["route \"stray\"", "unmatched `}`"],
    );
    assert_eq!(problem_count(&out), 4, "{out}");
}

#[test]
fn bad_duration_in_upstream_timeouts() {
    let text =
        "upstreams:\n  users:\n    targets: [\"127.0.0.1:9\"]\n    timeouts: { connect: soon }\n";
    let c = ConfigDir::new("", &[("up.yaml", text)]);
    let (ok, out) = c.check();
    assert_problem(
        ok,
        &out,
        &policy_path(&c, "up.yaml"),
        4,
        &[
            "upstreams.users.timeouts.connect",
            "invalid duration \"soon\"",
            "250ms",
        ],
    );
}

#[test]
fn bad_size_in_route_max_body() {
    let text = policy(
        &["users"],
        &[route_with(
            "a",
            "/a",
            "auth: none\nupstream: users\nrequest:\n  max_body: lots",
        )],
    );
    assert_routes_problem(
        &text,
        "max_body: lots",
        &["routes[0].request.max_body", "invalid size \"lots\""],
    );
}

#[test]
fn bad_size_and_duration_in_gateway_yaml() {
    let c = ConfigDir::new(
        "limits: { max_body: lots }\n",
        &[("a.yaml", &policy(&["users"], &[route("a", "/a")]))],
    );
    let (ok, out) = c.check();
    assert_problem(
        ok,
        &out,
        &c.gateway_yaml(),
        gateway_line(&c, "max_body: lots"),
        &["limits.max_body", "invalid size \"lots\""],
    );

    let c = ConfigDir::new("", &[("a.yaml", &policy(&["users"], &[route("a", "/a")]))]);
    let gw = std::fs::read_to_string(c.gateway_yaml())
        .unwrap()
        .replace("shutdown_grace: 1s", "shutdown_grace: 0s");
    write_gateway(&c, &gw);
    let (ok, out) = c.check();
    assert_problem(
        ok,
        &out,
        &c.gateway_yaml(),
        line_of(&gw, "shutdown_grace"),
        &[
            "shutdown_grace: invalid duration \"0s\"",
            "greater than zero",
        ],
    );
}

#[test]
fn bad_scalar_values_are_reported_on_their_own_line() {
    // Values parsed from strings (durations, methods, keys) point at themselves, not at
    // the mapping that holds them.
    let a = "upstreams:\n  users:\n    targets: [\"127.0.0.1:9\"]\n    balance: consistent_hash\n    hash_key: cookie\n";
    let b = policy(
        &["orders"],
        &["  - name: a\n    match:\n      path: /a\n      methods:\n        - GET\n        - \"GE T\"\n    auth: none\n    upstream: orders\n".to_string()],
    );
    let c = ConfigDir::new("", &[("a.yaml", a), ("b.yaml", &b)]);
    let (ok, out) = c.check();
    assert_problem(
        ok,
        &out,
        &policy_path(&c, "a.yaml"),
        5,
        &["upstreams.users.hash_key", "invalid key \"cookie\""],
    );
    assert_problem(
        ok,
        &out,
        &policy_path(&c, "b.yaml"),
        line_of(&b, "\"GE T\""),
        &["routes[0].match.methods[1]", "invalid HTTP method \"GE T\""],
    );
}

// ---------------------------------------------------------------------------------------
// auth, upstream / aggregate
// ---------------------------------------------------------------------------------------

#[test]
fn route_without_auth_says_how_to_make_it_public() {
    let text = policy(
        &["users"],
        &[
            route("ok", "/ok"),
            route_with("open", "/open", "upstream: users"),
        ],
    );
    let out = assert_routes_problem(
        &text,
        "name: open",
        &["route \"open\"", "`auth` is required", "`auth: none`"],
    );
    assert_eq!(problem_count(&out), 1, "{out}");
}

#[test]
fn route_with_both_upstream_and_aggregate() {
    let text = policy(
        &["users"],
        &[route_with(
            "both",
            "/both",
            "auth: none\nupstream: users\naggregate:\n  timeout: 1s\n  calls: [ { name: u, upstream: users, path: /u } ]",
        )],
    );
    assert_routes_problem(
        &text,
        "name: both",
        &[
            "route \"both\"",
            "exactly one of `upstream`, `aggregate` and `deliver`",
        ],
    );
}

#[test]
fn route_with_neither_upstream_nor_aggregate() {
    let text = policy(
        &["users"],
        &[route_with("neither", "/neither", "auth: none")],
    );
    let out = assert_routes_problem(
        &text,
        "name: neither",
        &[
            "route \"neither\"",
            "exactly one of `upstream`, `aggregate` and `deliver`",
        ],
    );
    assert_eq!(problem_count(&out), 1, "{out}");
}

#[test]
fn invalid_auth_value() {
    let text = policy(
        &["users"],
        &[route_with("a", "/a", "auth: [password]\nupstream: users")],
    );
    assert_routes_problem(
        &text,
        "auth: [password]",
        &[
            "routes[0].auth",
            "invalid auth method \"password\"",
            "auth: none",
        ],
    );

    let text = policy(
        &["users"],
        &[route_with("a", "/a", "auth: []\nupstream: users")],
    );
    assert_routes_problem(&text, "auth: []", &["auth list is empty", "`auth: none`"]);
}

// ---------------------------------------------------------------------------------------
// Plans, limits, aggregates, TLS and upstream settings
// ---------------------------------------------------------------------------------------

#[test]
fn consumer_plan_must_exist() {
    let text = format!(
        "{}consumers:\n  acme:\n    api_keys: [\"sha256:a2fb8545fcd457204e9fee11be92013aa3240b1b146fe262ba608fdfc159041c\"]\n    plan: partner-basic\n",
        policy(&["users"], &[route("a", "/a")])
    );
    assert_routes_problem(
        &text,
        "plan: partner-basic",
        &["unknown plan \"partner-basic\""],
    );
}

#[test]
fn jwt_route_naming_an_unknown_provider() {
    let text = policy(
        &["users"],
        &[
            route("public", "/public"),
            route_with("private", "/private", "auth: [jwt:corp]\nupstream: users"),
        ],
    );
    assert_routes_problem(
        &text,
        "auth: [jwt:corp]",
        &["unknown jwt provider \"corp\""],
    );
}

#[test]
fn route_rate_limit_values_are_checked() {
    let text = policy(
        &["users"],
        &[route_with(
            "limited",
            "/limited",
            "auth: none\nupstream: users\nrate_limit:\n  key: client_ip\n  limits:\n    - { requests: 5, per: 1s }\n    - { requests: 0, per: 1s }",
        )],
    );
    let out = assert_routes_problem(&text, "requests: 0", &["requests must be between 1 and"]);
    assert_eq!(problem_count(&out), 1, "{out}");
}

#[test]
fn aggregate_call_naming_an_unknown_upstream() {
    let text = policy(
        &["users"],
        &[route_with(
            "bff",
            "/bff",
            "auth: none\naggregate:\n  timeout: 2s\n  calls:\n    - { name: a, upstream: users, path: /a }\n    - { name: b, upstream: nope, path: /b }",
        )],
    );
    let out = assert_routes_problem(&text, "upstream: nope", &["unknown upstream \"nope\""]);
    assert_eq!(problem_count(&out), 1, "{out}");
}

#[test]
fn upstream_tls_needs_https() {
    let text = format!(
        "upstreams:\n  users:\n    targets: [\"127.0.0.1:9\"]\n    tls: {{ sni: users.internal }}\n{}",
        policy(&[], &[route("a", "/a")])
    );
    // The route naming the refused upstream is reported too.
    let out = assert_routes_problem(&text, "targets:", &["`tls` needs `scheme: https`"]);
    assert_eq!(problem_count(&out), 2, "{out}");
}

#[test]
fn listener_tls_with_a_missing_certificate() {
    let c = ConfigDir::new("", &[("a.yaml", &policy(&["users"], &[route("a", "/a")]))]);
    let gw = format!(
        "listeners:\n  - name: public\n    bind: 127.0.0.1:{}\n  - name: public-tls\n    bind: 127.0.0.1:{}\n    tls:\n      certs:\n        - {{ cert: certs/api.pem, key: certs/api.key }}\npolicies: policies/\n",
        c.port,
        free_port()
    );
    write_gateway(&c, &gw);
    let (ok, out) = c.check();
    assert_problem(
        ok,
        &out,
        &c.gateway_yaml(),
        line_of(&gw, "- { cert: certs/api.pem"),
        &["cannot read", "api.pem"],
    );
    assert_eq!(problem_count(&out), 1, "{out}");
}

// ---------------------------------------------------------------------------------------
// YAML syntax, empty files, the policies directory
// ---------------------------------------------------------------------------------------

#[test]
fn malformed_yaml_reports_a_line() {
    // The bracket opened on line 3 is never closed; the parser notices on line 4.
    let text = "upstreams:\n  users:\n    targets: [\"127.0.0.1:9\"\nroutes: []\n";
    let c = ConfigDir::new("", &[("broken.yaml", text)]);
    let (ok, out) = c.check();
    assert_problem(
        ok,
        &out,
        &policy_path(&c, "broken.yaml"),
        4,
        &[
            "did not find expected ',' or ']'",
            "flow sequence at line 3",
        ],
    );
    assert_eq!(problem_count(&out), 1, "{out}");
}

#[test]
fn malformed_yaml_at_end_of_file_reports_an_existing_line() {
    // Nothing follows the unclosed bracket: the error is on the last line, not past it.
    let text = "upstreams:\n  users:\n    targets: [\"127.0.0.1:9\"\n";
    let c = ConfigDir::new("", &[("broken.yaml", text)]);
    let (ok, out) = c.check();
    assert_problem(
        ok,
        &out,
        &policy_path(&c, "broken.yaml"),
        3,
        &["did not find expected ',' or ']'"],
    );
}

#[test]
fn malformed_gateway_yaml_reports_a_line() {
    let c = ConfigDir::new(
        "limits: { max_body: 1MiB\n",
        &[("a.yaml", &policy(&["users"], &[route("a", "/a")]))],
    );
    let (ok, out) = c.check();
    assert_problem(
        ok,
        &out,
        &c.gateway_yaml(),
        gateway_line(&c, "limits:"),
        &[
            "did not find expected ',' or '}'",
            &format!("flow mapping at line {}", gateway_line(&c, "limits:")),
        ],
    );
}

#[test]
fn empty_and_comment_only_policy_files_are_fine() {
    let c = ConfigDir::new(
        "",
        &[
            ("a.yaml", &policy(&["users"], &[route("a", "/a")])),
            ("empty.yaml", ""),
            ("blank.yaml", "\n  \n"),
            ("comment.yml", "# nothing here yet\n"),
        ],
    );
    let (ok, out) = c.check();
    assert!(ok, "{out}");
    assert_eq!(
        out.trim_end(),
        "ok: 1 listener(s), 4 policy file(s), 1 upstream(s), 1 route(s)"
    );
}

#[test]
fn policies_directory_skips_other_files_and_hidden_entries() {
    let c = ConfigDir::new(
        "",
        &[
            ("a.yaml", &policy(&["users"], &[route("a", "/a")])),
            ("b.yml", &policy(&[], &[route("b", "/b")])),
            ("README.md", "routes: [ this is not yaml"),
            ("a.yaml.bak", "routes: [ this is not yaml"),
            (".hidden.yaml", "routes: [ this is not yaml"),
        ],
    );
    // A Kubernetes ConfigMap mount: `..data` and `..2024_01_01` directories of real files.
    let data = c.path().join("policies").join("..2024_01_01");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("a.yaml"), "routes: [ this is not yaml").unwrap();
    std::os::unix::fs::symlink("..2024_01_01", c.path().join("policies").join("..data")).unwrap();
    // A directory named like a policy file is not a file.
    std::fs::create_dir(c.path().join("policies").join("dir.yaml")).unwrap();
    let (ok, out) = c.check();
    assert!(ok, "{out}");
    assert_eq!(
        out.trim_end(),
        "ok: 1 listener(s), 2 policy file(s), 1 upstream(s), 2 route(s)"
    );

    // Sanity: the same garbage in a visible .yaml file is a problem.
    c.write_policy("c.yaml", "routes: [ this is not yaml");
    let (ok, out) = c.check();
    assert_problem(
        ok,
        &out,
        &policy_path(&c, "c.yaml"),
        1,
        &["routes[0]: invalid type: string \"this is not yaml\""],
    );
}

#[test]
fn policies_may_be_a_single_file() {
    let c = ConfigDir::new("", &[]);
    let text = policy(&["users"], &[route("a", "/a"), route("b", "/b")]);
    std::fs::write(c.path().join("all.yaml"), &text).unwrap();
    let gw = std::fs::read_to_string(c.gateway_yaml())
        .unwrap()
        .replace("policies: policies/", "policies: all.yaml");
    write_gateway(&c, &gw);
    let (ok, out) = c.check();
    assert!(ok, "{out}");
    assert_eq!(
        out.trim_end(),
        "ok: 1 listener(s), 1 policy file(s), 1 upstream(s), 2 route(s)"
    );
}

// ---------------------------------------------------------------------------------------
// All problems in one run
// ---------------------------------------------------------------------------------------

#[test]
fn problems_in_several_files_are_all_reported() {
    let a = policy(
        &["users"],
        &[route_with("a", "/a", "auth: none\nupstream: nope")],
    );
    let b = policy(&[], &[route_with("b", "/b", "upstream: users")]);
    let c = ConfigDir::new(
        "limits: { max_headers: 0 }\n",
        &[("a.yaml", &a), ("b.yaml", &b)],
    );
    let (ok, out) = c.check();
    assert_problem(
        ok,
        &out,
        &c.gateway_yaml(),
        gateway_line(&c, "max_headers"),
        &["limits.max_headers must be between 1 and 255"],
    );
    assert_problem(
        ok,
        &out,
        &policy_path(&c, "a.yaml"),
        line_of(&a, "upstream: nope"),
        &["unknown upstream \"nope\""],
    );
    assert_problem(
        ok,
        &out,
        &policy_path(&c, "b.yaml"),
        line_of(&b, "name: b"),
        &["`auth` is required"],
    );
    assert_eq!(problem_count(&out), 3, "{out}");
}

#[test]
fn parse_problems_in_several_files_are_all_reported() {
    let a = "routes:\n  - name: a\n    match: { path: /a, method: [GET] }\n";
    let b = "upstreams:\n  users: { targets: [\"127.0.0.1:9\"] }}\n";
    let c = ConfigDir::new("", &[("a.yaml", a), ("b.yaml", b)]);
    let (ok, out) = c.check();
    assert_problem(
        ok,
        &out,
        &policy_path(&c, "a.yaml"),
        3,
        &["unknown field `method`"],
    );
    assert_problem(
        ok,
        &out,
        &policy_path(&c, "b.yaml"),
        2,
        &["did not find expected key"],
    );
    assert_eq!(problem_count(&out), 2, "{out}");
}

// ---------------------------------------------------------------------------------------
// Routes matching the same requests
// ---------------------------------------------------------------------------------------

#[test]
fn same_host_and_path_with_overlapping_methods_is_refused() {
    let text = policy(
        &["users"],
        &[
            route("read", "/v1/items"),
            "  - name: write\n    match: { host: api.example.com, path: /v1/items, methods: [GET, POST] }\n    auth: none\n    upstream: users\n".to_string(),
            "  - name: change\n    match: { host: API.example.com, path: /v1/items, methods: [put, post] }\n    auth: none\n    upstream: users\n".to_string(),
        ],
    );
    // "read" has no host: a different host pattern, so it conflicts with neither.
    let out = assert_routes_problem(
        &text,
        "methods: [put, post]",
        &["route \"change\" matches the same requests as route \"write\""],
    );
    assert_eq!(problem_count(&out), 1, "{out}");
}

#[test]
fn same_path_with_disjoint_methods_is_accepted() {
    let text = policy(
        &["users"],
        &[
            "  - name: get\n    match: { path: \"/v1/items/{id}\", methods: [GET, HEAD] }\n    auth: none\n    upstream: users\n".to_string(),
            "  - name: put\n    match: { path: \"/v1/items/{id}\", methods: [PUT, DELETE] }\n    auth: none\n    upstream: users\n".to_string(),
            "  - name: other-host\n    match: { host: \"*.example.com\", path: \"/v1/items/{id}\" }\n    auth: none\n    upstream: users\n".to_string(),
        ],
    );
    let c = ConfigDir::new("", &[("routes.yaml", &text)]);
    let (ok, out) = c.check();
    assert!(ok, "{out}");
    assert!(out.contains("3 route(s)"), "{out}");
}

#[test]
fn same_path_with_different_parameter_names_is_the_same_path() {
    let a = policy(
        &["users"],
        &["  - name: by-id\n    match: { path: \"/v1/users/{id}\", methods: [GET] }\n    auth: none\n    upstream: users\n".to_string()],
    );
    let b = policy(&[], &[route("by-uid", "/v1/users/{uid}")]);
    let c = ConfigDir::new("", &[("a.yaml", &a), ("b.yaml", &b)]);
    let (ok, out) = c.check();
    assert_problem(
        ok,
        &out,
        &policy_path(&c, "b.yaml"),
        line_of(&b, "/v1/users/{uid}"),
        &["route \"by-uid\" matches the same requests as route \"by-id\""],
    );
}

// ---------------------------------------------------------------------------------------
// gateway run
// ---------------------------------------------------------------------------------------

#[test]
fn run_with_broken_config_exits_quickly_with_the_problem() {
    let text = policy(
        &["users"],
        &[route_with("open", "/open", "upstream: users")],
    );
    let c = ConfigDir::new("", &[("routes.yaml", &text)]);
    let started = Instant::now();
    let (status, out) = run_bin(
        &["run", "-c", c.gateway_yaml().to_str().unwrap()],
        None,
        Duration::from_secs(20),
    );
    let status = status.unwrap_or_else(|| panic!("gateway run kept running; output:\n{out}"));
    assert!(!status.success(), "{out}");
    assert!(started.elapsed() < Duration::from_secs(10));
    let msg = problem_at(
        &out,
        &policy_path(&c, "routes.yaml"),
        line_of(&text, "name: open"),
    );
    assert!(msg.contains("`auth` is required"), "{out}");
    // Nothing was started: the listener port is still free.
    TcpListener::bind(("127.0.0.1", c.port)).expect("listener port must still be free");
}

#[test]
fn run_with_missing_policies_directory_fails() {
    let c = ConfigDir::new("", &[]);
    std::fs::remove_dir(c.path().join("policies")).unwrap();
    let (status, out) = run_bin(
        &["run", "-c", c.gateway_yaml().to_str().unwrap()],
        None,
        Duration::from_secs(20),
    );
    let status = status.unwrap_or_else(|| panic!("gateway run kept running; output:\n{out}"));
    assert!(!status.success(), "{out}");
    assert!(out.contains("cannot read policies"), "{out}");
}

#[test]
fn run_when_the_listener_port_is_taken_names_the_address() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().unwrap();
    let c = ConfigDir::new("", &[("a.yaml", &policy(&["users"], &[route("a", "/a")]))]);
    let gw = format!(
        "listeners:\n  - name: public\n    bind: {addr}\nadmin:\n  bind: 127.0.0.1:{}\npolicies: policies/\nthreads: 1\n",
        c.admin
    );
    write_gateway(&c, &gw);
    let (status, out) = run_bin(
        &["run", "-c", c.gateway_yaml().to_str().unwrap()],
        None,
        Duration::from_secs(20),
    );
    let status = status.unwrap_or_else(|| panic!("gateway run kept running; output:\n{out}"));
    assert!(!status.success(), "{out}");
    assert!(
        out.contains(&format!("cannot listen on {addr}")),
        "the message names the address; output:\n{out}"
    );
    drop(taken);
}

#[test]
fn run_when_the_admin_port_is_taken_names_the_address() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().unwrap();
    let c = ConfigDir::new("", &[("a.yaml", &policy(&["users"], &[route("a", "/a")]))]);
    let gw = format!(
        "listeners:\n  - name: public\n    bind: 127.0.0.1:{}\nadmin:\n  bind: {addr}\npolicies: policies/\nthreads: 1\n",
        c.port
    );
    write_gateway(&c, &gw);
    let (status, out) = run_bin(
        &["run", "-c", c.gateway_yaml().to_str().unwrap()],
        None,
        Duration::from_secs(20),
    );
    let status = status.unwrap_or_else(|| panic!("gateway run kept running; output:\n{out}"));
    assert!(!status.success(), "{out}");
    assert!(out.contains(&format!("cannot listen on {addr}")), "{out}");
    drop(taken);
}

// ---------------------------------------------------------------------------------------
// gateway hash-key
// ---------------------------------------------------------------------------------------

#[test]
fn hash_key_from_argument() {
    let (status, out) = run_bin(
        &["hash-key", "demo-acme-key"],
        None,
        Duration::from_secs(20),
    );
    assert!(status.is_some_and(|s| s.success()), "{out}");
    assert_eq!(out, format!("{DEMO_ACME_HASH}\n"));
}

#[test]
fn hash_key_from_stdin() {
    for input in ["demo-acme-key\n", "demo-acme-key", "demo-acme-key\r\n"] {
        let (status, out) = run_bin(&["hash-key"], Some(input), Duration::from_secs(20));
        assert!(status.is_some_and(|s| s.success()), "{input:?}: {out}");
        assert_eq!(out, format!("{DEMO_ACME_HASH}\n"), "input {input:?}");
    }
}

#[test]
fn hash_key_empty_fails() {
    let (status, out) = run_bin(&["hash-key", ""], None, Duration::from_secs(20));
    let status = status.expect("exited");
    assert!(!status.success(), "{out}");
    assert!(out.contains("the key is empty"), "{out}");
    assert!(!out.contains("sha256:"), "{out}");

    let (status, out) = run_bin(&["hash-key"], Some("\n"), Duration::from_secs(20));
    let status = status.expect("exited");
    assert!(!status.success(), "{out}");
    assert!(out.contains("the key is empty"), "{out}");
}

#[test]
fn store_is_the_new_name_of_rate_limit_store_and_not_both() {
    let p = policy(&["users"], &[route("a", "/a")]);
    let c = ConfigDir::new(
        "store:\n  backend: redis\n  redis: { url: \"redis://127.0.0.1:1\", on_error: deny }\n",
        &[("a.yaml", &p)],
    );
    let (ok, out) = c.check();
    assert!(ok, "{out}");
    let c = ConfigDir::new("store:\n  backend: redis\n", &[("a.yaml", &p)]);
    let (ok, out) = c.check();
    let line = gateway_line(&c, "backend: redis");
    assert_problem(
        ok,
        &out,
        &c.gateway_yaml(),
        line,
        &["needs a `redis` mapping"],
    );
    let c = ConfigDir::new(
        "store:\n  backend: memory\nrate_limit_store:\n  backend: memory\n",
        &[("a.yaml", &p)],
    );
    let (ok, out) = c.check();
    let line = gateway_line(&c, "rate_limit_store:");
    assert_problem(ok, &out, &c.gateway_yaml(), line, &["both set"]);
}
