//! The deployment files under deploy/ (issue 11): the Dockerfile, the Compose file, the
//! Kubernetes manifests, the Grafana dashboard and the Prometheus alert rules.
//!
//! Nothing here needs Docker, a cluster or the network. The files are parsed and checked
//! against each other (a COPY source exists and is in the build context, a probe points at
//! the admin port that the mounted gateway.yaml declares, a Secret provides every
//! `secret_env`...), every example configuration goes through the real `gateway check`, and
//! every PromQL expression may name only the gateway's own metrics.
//!
//! The example configurations use host names that only resolve inside Compose or Kubernetes
//! (`users:8080`, `redis://gateway-redis:6379`). `gateway check` resolves no name (the
//! gateway does, in the background, at run time), so each example is checked as it is, where
//! it is, with every `secret_env` variable set to a dummy value: warnings naming the host
//! names are expected, a failure is not. No example needs a file that only exists at run
//! time (the Kubernetes TLS listener is commented out until its Secret exists).

// Test code: a failed unwrap is a failed run, as in a unit test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value as Json;
use serde_yaml::Value as Yaml;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

// ---------------------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------------------

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn deploy() -> PathBuf {
    repo().join("deploy")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Every file under `dir` (recursively) whose name ends with one of `exts`, sorted.
fn files_under(dir: &Path, exts: &[&str]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if let Some(name) = path.file_name().and_then(|n| n.to_str()) {
                if exts.iter().any(|e| name.ends_with(e)) {
                    out.push(path);
                }
            }
        }
    }
    out.sort();
    out
}

/// Every YAML document of a file (multi-document files too); empty documents are left out.
fn yaml_docs(path: &Path) -> Vec<Yaml> {
    let text = read(path);
    let mut docs = Vec::new();
    for (i, de) in serde_yaml::Deserializer::from_str(&text).enumerate() {
        let mut v = <Yaml as serde::Deserialize>::deserialize(de)
            .unwrap_or_else(|e| panic!("{} (document {}): {e}", path.display(), i + 1));
        v.apply_merge()
            .unwrap_or_else(|e| panic!("{}: merge keys: {e}", path.display()));
        if !v.is_null() {
            docs.push(v);
        }
    }
    docs
}

/// The single YAML document of a file.
fn yaml(path: &Path) -> Yaml {
    let mut docs = yaml_docs(path);
    assert_eq!(docs.len(), 1, "{}: expected one document", path.display());
    docs.remove(0)
}

/// `v` at a dotted path (`spec.template.spec`); panics naming `what` when it is missing.
fn at<'a>(v: &'a Yaml, path: &str, what: &str) -> &'a Yaml {
    let mut cur = v;
    for key in path.split('.') {
        cur = cur
            .get(key)
            .unwrap_or_else(|| panic!("{what}: no {path} (missing {key:?})"));
    }
    cur
}

fn s<'a>(v: &'a Yaml, path: &str, what: &str) -> &'a str {
    at(v, path, what)
        .as_str()
        .unwrap_or_else(|| panic!("{what}: {path} is not a string"))
}

fn seq<'a>(v: &'a Yaml, path: &str, what: &str) -> &'a [Yaml] {
    at(v, path, what)
        .as_sequence()
        .map(Vec::as_slice)
        .unwrap_or_else(|| panic!("{what}: {path} is not a list"))
}

fn opt_seq<'a>(v: &'a Yaml, key: &str) -> &'a [Yaml] {
    v.get(key)
        .and_then(Yaml::as_sequence)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn dur(text: &str) -> Duration {
    humantime::parse_duration(text).unwrap_or_else(|e| panic!("duration {text:?}: {e}"))
}

// ---------------------------------------------------------------------------------------
// The example configurations (gateway.yaml + policies)
// ---------------------------------------------------------------------------------------

/// A gateway.yaml under deploy/ and the policy files it loads.
struct Example {
    gateway_yaml: PathBuf,
    gateway: Yaml,
    policies: Vec<(PathBuf, Yaml)>,
}

impl Example {
    fn load(gateway_yaml: &Path) -> Example {
        let gateway = yaml(gateway_yaml);
        let dir = gateway_yaml.parent().unwrap();
        let rel = gateway
            .get("policies")
            .and_then(Yaml::as_str)
            .unwrap_or("policies/");
        let p = dir.join(rel);
        let files = if p.is_dir() {
            let mut f = files_under(&p, &[".yaml", ".yml"]);
            // The gateway skips hidden entries and does not descend.
            f.retain(|x| x.parent() == Some(p.as_path()));
            f
        } else {
            vec![p]
        };
        assert!(
            !files.is_empty(),
            "{}: no policy files",
            gateway_yaml.display()
        );
        let policies = files
            .into_iter()
            .map(|f| {
                let v = yaml(&f);
                (f, v)
            })
            .collect();
        Example {
            gateway_yaml: gateway_yaml.to_path_buf(),
            gateway,
            policies,
        }
    }

    fn what(&self) -> String {
        self.gateway_yaml.display().to_string()
    }

    fn admin_port(&self) -> u16 {
        let bind = s(&self.gateway, "admin.bind", &self.what());
        bind.parse::<SocketAddr>()
            .unwrap_or_else(|e| panic!("{}: admin.bind {bind:?}: {e}", self.what()))
            .port()
    }

    fn listener_binds(&self) -> Vec<SocketAddr> {
        seq(&self.gateway, "listeners", &self.what())
            .iter()
            .map(|l| s(l, "bind", &self.what()).parse().unwrap())
            .collect()
    }

    fn shutdown_grace(&self) -> Duration {
        self.gateway
            .get("shutdown_grace")
            .and_then(Yaml::as_str)
            .map_or(Duration::from_secs(10), dur)
    }

    fn redis_url(&self) -> Option<&str> {
        self.gateway
            .get("rate_limit_store")
            .and_then(|r| r.get("redis"))
            .and_then(|r| r.get("url"))
            .and_then(Yaml::as_str)
    }

    /// Every `secret_env` of every JWT provider key.
    fn secret_envs(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for (_, p) in &self.policies {
            let Some(providers) = p.get("jwt_providers").and_then(Yaml::as_mapping) else {
                continue;
            };
            for (_, provider) in providers {
                for k in opt_seq(provider, "keys") {
                    if let Some(v) = k.get("secret_env").and_then(Yaml::as_str) {
                        out.insert(v.to_string());
                    }
                }
            }
        }
        out
    }

    /// Every upstream target as (host, port).
    fn targets(&self) -> Vec<(String, u16)> {
        let mut out = Vec::new();
        for (f, p) in &self.policies {
            let Some(ups) = p.get("upstreams").and_then(Yaml::as_mapping) else {
                continue;
            };
            for (_, u) in ups {
                for t in seq(u, "targets", &f.display().to_string()) {
                    let t = t.as_str().expect("a target is a string");
                    let (host, port) = t.rsplit_once(':').expect("a target is host:port");
                    out.push((host.to_string(), port.parse().expect("a target's port")));
                }
            }
        }
        out
    }
}

/// Every gateway.yaml under deploy/.
fn examples() -> Vec<Example> {
    let all: Vec<Example> = files_under(&deploy(), &["gateway.yaml"])
        .iter()
        .filter(|p| p.file_name().unwrap() == "gateway.yaml")
        .map(|p| Example::load(p))
        .collect();
    assert!(
        all.len() >= 3,
        "expected the docker, compose and kubernetes examples"
    );
    all
}

fn example(rel: &str) -> Example {
    Example::load(&deploy().join(rel))
}

/// Where the host is in a `redis://[user:pass@]host:port[/db]` URL.
fn url_host_range(url: &str) -> std::ops::Range<usize> {
    let start = url.find("://").map_or(0, |i| i + 3);
    let authority_end = url[start..].find('/').map_or(url.len(), |i| start + i);
    let start = url[start..authority_end]
        .rfind('@')
        .map_or(start, |i| start + i + 1);
    let end = url[start..authority_end]
        .find(':')
        .map_or(authority_end, |i| start + i);
    start..end
}

fn url_host(url: &str) -> &str {
    &url[url_host_range(url)]
}

/// Runs `gateway check` on the example as it is, with `env` set (and every secret_env
/// removed first). Returns (success, stdout followed by stderr).
fn check_example(ex: &Example, env: &[(String, String)]) -> (bool, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gateway"));
    cmd.arg("check").arg("-c").arg(&ex.gateway_yaml);
    for var in ex.secret_envs() {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run gateway check");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Every `secret_env` of the example set to a dummy value.
fn dummy_secrets(ex: &Example) -> Vec<(String, String)> {
    ex.secret_envs()
        .into_iter()
        .map(|v| (v, "test-only-secret-0123456789abcdef0123456789".to_string()))
        .collect()
}

#[test]
fn url_host_self_test() {
    assert_eq!(url_host("redis://redis:6379"), "redis");
    assert_eq!(
        url_host("redis://user:pw@cache.internal:6380/2"),
        "cache.internal"
    );
    assert_eq!(url_host("redis://10.0.0.7"), "10.0.0.7");
}

#[test]
fn every_example_configuration_passes_gateway_check() {
    for ex in examples() {
        let (ok, out) = check_example(&ex, &dummy_secrets(&ex));
        assert!(
            ok && out.starts_with("ok:"),
            "gateway check failed for {}:\n{out}",
            ex.what()
        );
    }
}

/// Issue 17: the Compose and Kubernetes configurations pass `gateway check` outside their
/// cluster, their upstream host names unresolved (a warning names each upstream), without
/// any file that only a running pod has.
#[test]
fn compose_and_kubernetes_configs_pass_gateway_check_as_they_are() {
    for rel in ["compose/gateway.yaml", "kubernetes/config/gateway.yaml"] {
        let ex = example(rel);
        let (ok, out) = check_example(&ex, &dummy_secrets(&ex));
        assert!(ok, "{rel}: gateway check failed:\n{out}");
        let names: Vec<(String, u16)> = ex
            .targets()
            .into_iter()
            .filter(|(h, _)| h.parse::<IpAddr>().is_err())
            .collect();
        assert!(!names.is_empty(), "{rel}: no host name to check against");
        for (host, port) in names {
            assert!(
                out.contains("warning") && out.contains(&format!("{host}:{port}")),
                "{rel}: no warning for {host}:{port}:\n{out}"
            );
        }
        for l in seq(&ex.gateway, "listeners", rel) {
            assert!(
                l.get("tls").is_none(),
                "{rel}: a TLS listener needs files only a running pod has"
            );
        }
    }
}

/// The other side of the tests above: the check really runs, and the secrets the examples
/// read from the environment are required.
#[test]
fn gateway_check_refuses_an_example_without_its_secret() {
    let with_secret: Vec<Example> = examples()
        .into_iter()
        .filter(|e| !e.secret_envs().is_empty())
        .collect();
    assert!(!with_secret.is_empty(), "no example uses secret_env");
    for ex in with_secret {
        let (ok, out) = check_example(&ex, &[]);
        assert!(
            !ok,
            "{}: check passed without its secrets:\n{out}",
            ex.what()
        );
        for var in ex.secret_envs() {
            assert!(
                out.contains(&var),
                "{}: {var} not reported:\n{out}",
                ex.what()
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// Every file parses
// ---------------------------------------------------------------------------------------

#[test]
fn every_yaml_file_under_deploy_parses() {
    let files = files_under(&deploy(), &[".yaml", ".yml"]);
    assert!(
        files.len() >= 15,
        "only {} YAML files: {files:?}",
        files.len()
    );
    let mut docs = 0;
    for f in &files {
        let d = yaml_docs(f);
        assert!(!d.is_empty(), "{}: no YAML document", f.display());
        docs += d.len();
    }
    assert!(
        docs > files.len(),
        "the multi-document manifests were read as one"
    );
}

#[test]
fn every_json_file_under_deploy_parses() {
    let files = files_under(&deploy(), &[".json"]);
    assert!(!files.is_empty(), "no JSON file under deploy/");
    for f in files {
        serde_json::from_str::<Json>(&read(&f)).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
    }
}

// ---------------------------------------------------------------------------------------
// Dockerfile
// ---------------------------------------------------------------------------------------

/// The Dockerfile's instructions (keyword upper-cased, arguments), with continuation lines
/// joined and comments dropped.
fn dockerfile() -> Vec<(String, String)> {
    let text = read(&deploy().join("Dockerfile"));
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('#') || (t.is_empty() && cur.is_empty()) {
            continue;
        }
        if let Some(part) = t.strip_suffix('\\') {
            cur.push_str(part);
            cur.push(' ');
            continue;
        }
        cur.push_str(t);
        let full = std::mem::take(&mut cur);
        let (kw, args) = full.split_once(char::is_whitespace).unwrap_or((&full, ""));
        out.push((kw.to_ascii_uppercase(), args.trim().to_string()));
    }
    assert!(cur.is_empty(), "the Dockerfile ends in a continuation");
    out
}

/// Words of an instruction: the JSON form (`["a", "b"]`) or whitespace-separated.
fn words(args: &str) -> Vec<String> {
    if args.starts_with('[') {
        serde_json::from_str(args).unwrap_or_else(|e| panic!("{args}: {e}"))
    } else {
        args.split_whitespace().map(str::to_string).collect()
    }
}

/// Stages: (FROM image with global ARGs substituted, stage name, instructions).
type Stage = (String, Option<String>, Vec<(String, String)>);

fn stages() -> Vec<Stage> {
    let mut args = BTreeMap::new();
    let mut stages: Vec<Stage> = Vec::new();
    for (kw, a) in dockerfile() {
        match kw.as_str() {
            "ARG" if stages.is_empty() => {
                let (k, v) = a.split_once('=').unwrap_or((&a, ""));
                args.insert(k.to_string(), v.to_string());
            }
            "FROM" => {
                let w = words(&a);
                let mut image = w[0].clone();
                for (k, v) in &args {
                    image = image.replace(&format!("${{{k}}}"), v);
                }
                let name = match w.get(1).map(|x| x.to_ascii_uppercase()) {
                    Some(x) if x == "AS" => Some(w[2].clone()),
                    _ => None,
                };
                stages.push((image, name, Vec::new()));
            }
            _ => stages
                .last_mut()
                .expect("an instruction before FROM")
                .2
                .push((kw, a)),
        }
    }
    stages
}

/// The patterns of deploy/Dockerfile.dockerignore: (pattern, is an exception).
fn dockerignore() -> Vec<(String, bool)> {
    read(&deploy().join("Dockerfile.dockerignore"))
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| match l.strip_prefix('!') {
            Some(p) => (p.trim_end_matches('/').to_string(), true),
            None => (l.trim_end_matches('/').to_string(), false),
        })
        .collect()
}

/// Whether `path` (relative to the context) is left out of the build context. Supports the
/// patterns the file uses: `*` and literal paths (a directory covers what is under it).
fn ignored(path: &str, patterns: &[(String, bool)]) -> bool {
    let mut out = false;
    for (p, exception) in patterns {
        assert!(
            p == "*" || !p.contains(['*', '?', '[']),
            "pattern {p:?}: not understood by this test"
        );
        let matches = p == "*" || path == p || path.starts_with(&format!("{p}/"));
        if matches {
            out = !exception;
        }
    }
    out
}

#[test]
fn dockerignore_matcher_self_test() {
    let p = dockerignore();
    assert!(ignored("target", &p));
    assert!(ignored("target/release/gateway", &p));
    assert!(ignored(".git", &p));
    assert!(ignored("deploy/kubernetes/deployment.yaml", &p));
    assert!(!ignored("src/main.rs", &p));
    assert!(!ignored("Cargo.lock", &p));
}

#[test]
fn dockerfile_copy_sources_exist_and_are_in_the_build_context() {
    let patterns = dockerignore();
    let stage_names: Vec<Option<String>> = stages().into_iter().map(|s| s.1).collect();
    let mut checked = 0;
    for (i, (_, _, instructions)) in stages().iter().enumerate() {
        for (kw, a) in instructions {
            if kw != "COPY" && kw != "ADD" {
                continue;
            }
            let w = words(a);
            let from = w.iter().find_map(|x| x.strip_prefix("--from="));
            let rest: Vec<&String> = w.iter().filter(|x| !x.starts_with("--")).collect();
            assert!(rest.len() >= 2, "{kw} {a}: no source or destination");
            if let Some(from) = from {
                assert!(
                    stage_names[..i].contains(&Some(from.to_string())),
                    "{kw} {a}: --from={from} is not an earlier stage"
                );
                continue;
            }
            for src in &rest[..rest.len() - 1] {
                let rel = src.trim_end_matches('/');
                let rel = rel.strip_prefix("./").unwrap_or(rel);
                assert!(
                    repo().join(rel).exists(),
                    "{kw} {a}: {src} does not exist in the context (the repository root)"
                );
                assert!(
                    !ignored(rel, &patterns),
                    "{kw} {a}: {src} is excluded by deploy/Dockerfile.dockerignore"
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 4, "only {checked} COPY sources checked");
}

#[test]
fn dockerfile_is_multi_stage_non_root_with_a_health_check() {
    let st = stages();
    assert!(st.len() >= 2, "not a multi-stage build");
    let (build_image, build_name, build) = &st[0];
    assert_eq!(build_image, "rust:1.95-bookworm");
    assert!(build_name.is_some(), "the build stage has no name");
    assert!(
        build.iter().any(|(k, a)| k == "RUN" && a.contains("cmake")),
        "the build stage does not install cmake (Pingora's zlib-ng)"
    );
    assert!(
        build
            .iter()
            .any(|(k, a)| k == "RUN" && a.contains("cargo build --release")),
        "the build stage does not build the release binary"
    );

    let (image, _, run) = st.last().unwrap();
    assert!(
        image.starts_with("debian:bookworm-slim") || image.starts_with("gcr.io/distroless/cc"),
        "runtime image {image}"
    );
    let last = |kw: &str| {
        run.iter()
            .rev()
            .find(|(k, _)| k == kw)
            .map(|(_, a)| a.clone())
            .unwrap_or_else(|| panic!("the runtime stage has no {kw}"))
    };
    let user = last("USER");
    let uid = user.split(':').next().unwrap();
    assert!(uid != "root" && uid != "0", "runs as {user}");
    assert!(
        uid.parse::<u32>().is_ok(),
        "USER {user}: numeric, for runAsNonRoot"
    );

    // The image's example configuration: copied to the path the default command reads.
    let ex = example("docker/gateway.yaml");
    let copied_to = |src: &str| {
        run.iter().find_map(|(k, a)| {
            let w = words(a);
            (k == "COPY" && w.len() == 2 && w[0] == src).then(|| w[1].clone())
        })
    };
    let config_path = copied_to("deploy/docker/gateway.yaml").expect("gateway.yaml not copied");
    let policies_path = copied_to("deploy/docker/policies/").expect("policies/ not copied");
    assert_eq!(
        Path::new(&config_path).parent().unwrap().join("policies"),
        Path::new(policies_path.trim_end_matches('/'))
    );
    let mut command = words(&last("ENTRYPOINT"));
    if let Some((_, cmd)) = run.iter().rev().find(|(k, _)| k == "CMD") {
        command.extend(words(cmd));
    }
    assert_eq!(
        command,
        ["/usr/local/bin/gateway", "run", "-c", config_path.as_str()],
        "the default command"
    );
    assert!(run.iter().any(|(k, a)| k == "COPY"
        && a.contains("--from=")
        && a.contains("/usr/local/bin/gateway")));

    // Every port of the example is exposed.
    let exposed: BTreeSet<u16> = run
        .iter()
        .filter(|(k, _)| k == "EXPOSE")
        .flat_map(|(_, a)| words(a))
        .map(|p| p.trim_end_matches("/tcp").parse().unwrap())
        .collect();
    for port in ex
        .listener_binds()
        .iter()
        .map(SocketAddr::port)
        .chain([ex.admin_port()])
    {
        assert!(
            exposed.contains(&port),
            "port {port} not exposed: {exposed:?}"
        );
    }
    for b in ex.listener_binds() {
        assert!(
            b.ip().is_unspecified(),
            "{b}: unreachable from outside the container"
        );
    }

    // HEALTHCHECK: curl (installed in this stage) on /healthz of the admin port.
    let hc = last("HEALTHCHECK");
    assert!(
        hc.contains("curl") && hc.contains("/healthz"),
        "HEALTHCHECK {hc}"
    );
    assert!(
        run.iter()
            .any(|(k, a)| k == "RUN" && a.contains("apt-get install") && a.contains("curl")),
        "curl is not installed in the runtime stage"
    );
    let env = last("ENV");
    assert!(hc.contains("${GATEWAY_HEALTH_PORT}"), "HEALTHCHECK {hc}");
    assert_eq!(
        env,
        format!("GATEWAY_HEALTH_PORT={}", ex.admin_port()),
        "the health check's port is the example's admin port"
    );
}

// ---------------------------------------------------------------------------------------
// docker-compose.yaml
// ---------------------------------------------------------------------------------------

fn compose() -> Yaml {
    yaml(&deploy().join("docker-compose.yaml"))
}

/// Bind-mount (source, target) pairs of a service; sources relative to deploy/.
fn binds(service: &Yaml) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for v in opt_seq(service, "volumes") {
        match v {
            Yaml::String(short) => {
                let parts: Vec<&str> = short.split(':').collect();
                if parts.len() >= 2 && (parts[0].starts_with('.') || parts[0].starts_with('/')) {
                    out.push((parts[0].to_string(), parts[1].to_string()));
                }
            }
            long => {
                if long.get("type").and_then(Yaml::as_str) == Some("bind") {
                    out.push((
                        s(long, "source", "volume").to_string(),
                        s(long, "target", "volume").to_string(),
                    ));
                }
            }
        }
    }
    out
}

fn environment(service: &Yaml) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    match service.get("environment") {
        Some(Yaml::Mapping(m)) => {
            for (k, v) in m {
                let v = match v {
                    Yaml::String(s) => s.clone(),
                    other => serde_yaml::to_string(other).unwrap().trim().to_string(),
                };
                out.insert(k.as_str().unwrap().to_string(), v);
            }
        }
        Some(Yaml::Sequence(l)) => {
            for e in l {
                let (k, v) = e
                    .as_str()
                    .unwrap()
                    .split_once('=')
                    .unwrap_or((e.as_str().unwrap(), ""));
                out.insert(k.to_string(), v.to_string());
            }
        }
        _ => {}
    }
    out
}

#[test]
fn compose_build_context_and_bind_sources_exist() {
    let c = compose();
    let services = at(&c, "services", "compose").as_mapping().unwrap();
    let mut sources = 0;
    let mut builds = 0;
    for (name, svc) in services {
        let what = format!("compose service {}", name.as_str().unwrap());
        if let Some(build) = svc.get("build") {
            let (context, dockerfile) = match build {
                Yaml::String(c) => (c.as_str(), "Dockerfile"),
                b => (
                    s(b, "context", &what),
                    b.get("dockerfile")
                        .and_then(Yaml::as_str)
                        .unwrap_or("Dockerfile"),
                ),
            };
            let ctx = deploy().join(context);
            assert!(
                ctx.is_dir(),
                "{what}: build context {context} is not a directory"
            );
            assert!(
                ctx.join(dockerfile).is_file(),
                "{what}: {dockerfile} not in the context"
            );
            assert_eq!(
                ctx.join(dockerfile).canonicalize().unwrap(),
                deploy().join("Dockerfile").canonicalize().unwrap(),
                "{what}: builds another Dockerfile"
            );
            builds += 1;
        }
        for (src, target) in binds(svc) {
            assert!(
                deploy().join(&src).exists(),
                "{what}: bind source {src} (for {target}) does not exist"
            );
            sources += 1;
        }
    }
    assert!(builds >= 1, "nothing is built");
    assert!(sources >= 5, "only {sources} bind mounts checked");
}

#[test]
fn compose_runs_two_gateway_replicas_sharing_redis() {
    let c = compose();
    let services = at(&c, "services", "compose").as_mapping().unwrap();
    let names: BTreeSet<&str> = services.keys().map(|k| k.as_str().unwrap()).collect();
    let gateways: Vec<(&str, &Yaml)> = services
        .iter()
        .filter(|(_, v)| v.get("build").is_some())
        .map(|(k, v)| (k.as_str().unwrap(), v))
        .collect();
    assert!(gateways.len() >= 2, "fewer than two gateway replicas");
    let first = gateways[0].1;
    for (name, g) in &gateways[1..] {
        for key in ["image", "build", "volumes", "environment", "command"] {
            assert_eq!(g.get(key), first.get(key), "replica {name}: another {key}");
        }
    }
    let ports: Vec<&str> = gateways
        .iter()
        .flat_map(|(_, g)| opt_seq(g, "ports"))
        .map(|p| p.as_str().expect("ports as strings"))
        .collect();
    let host_ports: BTreeSet<&str> = ports.iter().copied().collect();
    assert_eq!(
        host_ports.len(),
        ports.len(),
        "replicas publish the same port"
    );

    // The configuration mounted at /etc/gateway/gateway.yaml, and its policies.
    let b = binds(first);
    let conf = b
        .iter()
        .find(|(_, t)| t == "/etc/gateway/gateway.yaml")
        .expect("no gateway.yaml mounted at /etc/gateway/gateway.yaml");
    let pol = b
        .iter()
        .find(|(_, t)| t == "/etc/gateway/policies")
        .expect("no policies mounted at /etc/gateway/policies");
    let ex = Example::load(&deploy().join(&conf.0));
    assert_eq!(
        deploy().join(&conf.0).parent().unwrap().join("policies"),
        deploy().join(pol.0.trim_end_matches('/')),
        "the mounted policies are not the ones next to the mounted gateway.yaml"
    );
    let command = words(&serde_json::to_string(at(first, "command", "gateway")).unwrap());
    assert_eq!(command, ["run", "-c", "/etc/gateway/gateway.yaml"]);

    for bind in ex.listener_binds() {
        assert!(
            bind.ip().is_unspecified(),
            "listener {bind} is not on 0.0.0.0"
        );
    }
    let what = ex.what();
    assert_eq!(s(&ex.gateway, "rate_limit_store.backend", &what), "redis");
    assert_eq!(
        s(&ex.gateway, "rate_limit_store.redis.on_error", &what),
        "allow"
    );
    let redis_host = url_host(ex.redis_url().unwrap());
    assert!(
        names.contains(redis_host),
        "redis host {redis_host} is not a service"
    );
    for (name, _) in &gateways {
        let deps = at(services.get(*name).unwrap(), "depends_on", name);
        assert!(
            deps.get(redis_host).is_some(),
            "{name} does not depend on {redis_host}"
        );
    }
    let targets = ex.targets();
    assert!(!targets.is_empty());
    for (host, _) in targets {
        assert!(
            names.contains(host.as_str()),
            "upstream host {host} is not a service"
        );
    }
    let env = environment(first);
    for var in ex.secret_envs() {
        let v = env
            .get(&var)
            .unwrap_or_else(|| panic!("{var} (secret_env) is not set"));
        assert!(!v.is_empty(), "{var} is empty");
    }
    let grace = dur(s(first, "stop_grace_period", "gateway"));
    assert!(
        grace >= ex.shutdown_grace() + Duration::from_secs(2),
        "stop_grace_period {grace:?} is not longer than shutdown_grace"
    );

    // Prometheus scrapes every replica's admin port and loads the alert rules.
    let prom = services.get("prometheus").expect("no prometheus service");
    let pb = binds(prom);
    let conf = pb
        .iter()
        .find(|(_, t)| t == "/etc/prometheus/prometheus.yml")
        .expect("no prometheus.yml mounted");
    let p = yaml(&deploy().join(&conf.0));
    let scraped: BTreeSet<String> = seq(&p, "scrape_configs", "prometheus.yml")
        .iter()
        .flat_map(|sc| opt_seq(sc, "static_configs"))
        .flat_map(|sc| opt_seq(sc, "targets"))
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    let expected: BTreeSet<String> = gateways
        .iter()
        .map(|(n, _)| format!("{n}:{}", ex.admin_port()))
        .collect();
    assert_eq!(
        scraped, expected,
        "Prometheus does not scrape every replica"
    );
    for rule_file in seq(&p, "rule_files", "prometheus.yml") {
        let rule_file = rule_file.as_str().unwrap();
        let (src, _) = pb
            .iter()
            .find(|(_, t)| t == rule_file)
            .unwrap_or_else(|| panic!("rule file {rule_file} is not mounted"));
        assert_eq!(
            deploy().join(src).canonicalize().unwrap(),
            deploy()
                .join("prometheus/alerts.yaml")
                .canonicalize()
                .unwrap()
        );
    }
}

// ---------------------------------------------------------------------------------------
// Kubernetes
// ---------------------------------------------------------------------------------------

fn k8s() -> PathBuf {
    deploy().join("kubernetes")
}

fn kustomization() -> Yaml {
    yaml(&k8s().join("kustomization.yaml"))
}

/// Every object of every resource file of the kustomization.
fn objects() -> Vec<Yaml> {
    seq(&kustomization(), "resources", "kustomization")
        .iter()
        .flat_map(|r| yaml_docs(&k8s().join(r.as_str().unwrap())))
        .collect()
}

fn of_kind(objs: &[Yaml], kind: &str) -> Vec<Yaml> {
    objs.iter()
        .filter(|o| o.get("kind").and_then(Yaml::as_str) == Some(kind))
        .cloned()
        .collect()
}

fn name(o: &Yaml) -> &str {
    s(o, "metadata.name", "object")
}

fn is_dns_label(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 63
        && n.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !n.starts_with('-')
        && !n.ends_with('-')
}

/// The configMapGenerator entry called `name`.
fn generator(name: &str) -> Yaml {
    seq(&kustomization(), "configMapGenerator", "kustomization")
        .iter()
        .find(|g| g.get("name").and_then(Yaml::as_str) == Some(name))
        .unwrap_or_else(|| panic!("no configMapGenerator {name}"))
        .clone()
}

/// The Deployment that mounts the gateway.yaml ConfigMap, and its gateway container.
fn gateway_deployment() -> (Yaml, Yaml) {
    let d = of_kind(&objects(), "Deployment")
        .into_iter()
        .find(|d| {
            opt_seq(at(d, "spec.template.spec", "deployment"), "volumes")
                .iter()
                .any(|v| {
                    v.get("configMap")
                        .and_then(|c| c.get("name"))
                        .and_then(Yaml::as_str)
                        == Some("gateway-config")
                })
        })
        .expect("no Deployment mounts ConfigMap gateway-config");
    let c = seq(&d, "spec.template.spec.containers", "gateway deployment")
        .iter()
        .find(|c| {
            opt_seq(c, "volumeMounts").iter().any(|m| {
                m.get("mountPath").and_then(Yaml::as_str) == Some("/etc/gateway/gateway.yaml")
            })
        })
        .expect("no container mounts /etc/gateway/gateway.yaml")
        .clone();
    (d, c)
}

/// A container port by name or number.
fn container_port(c: &Yaml, port: &Yaml) -> u16 {
    if let Some(n) = port.as_u64() {
        return n as u16;
    }
    let want = port.as_str().unwrap();
    seq(c, "ports", "container")
        .iter()
        .find(|p| p.get("name").and_then(Yaml::as_str) == Some(want))
        .and_then(|p| p.get("containerPort"))
        .and_then(Yaml::as_u64)
        .unwrap_or_else(|| panic!("no container port named {want}")) as u16
}

/// The volume (of the pod spec) mounted at `path`, with the mount.
fn volume_at(pod: &Yaml, c: &Yaml, path: &str) -> (Yaml, Yaml) {
    let m = opt_seq(c, "volumeMounts")
        .iter()
        .find(|m| m.get("mountPath").and_then(Yaml::as_str) == Some(path))
        .unwrap_or_else(|| panic!("nothing mounted at {path}"))
        .clone();
    let vname = s(&m, "name", path);
    let v = seq(pod, "volumes", "pod")
        .iter()
        .find(|v| v.get("name").and_then(Yaml::as_str) == Some(vname))
        .unwrap_or_else(|| panic!("no volume {vname}"))
        .clone();
    (v, m)
}

fn labels_match(selector: &Yaml, labels: &Yaml) -> bool {
    selector
        .as_mapping()
        .is_some_and(|m| !m.is_empty() && m.iter().all(|(k, v)| labels.get(k) == Some(v)))
}

#[test]
fn kubernetes_objects_are_complete_and_namespace_agnostic() {
    let objs = objects();
    assert!(objs.len() >= 8, "only {} objects", objs.len());
    let mut seen = BTreeSet::new();
    for o in &objs {
        let kind = s(o, "kind", "object");
        let api = s(o, "apiVersion", kind);
        let n = name(o);
        assert!(is_dns_label(n), "{kind} {n}: not a DNS label");
        assert!(
            o["metadata"].get("namespace").is_none(),
            "{kind} {n}: names a namespace"
        );
        assert!(
            seen.insert((kind.to_string(), n.to_string())),
            "{kind} {n} twice"
        );
        let expected_api = match kind {
            "Deployment" => Some("apps/v1"),
            "Service" => Some("v1"),
            "PodDisruptionBudget" => Some("policy/v1"),
            "HorizontalPodAutoscaler" => Some("autoscaling/v2"),
            _ => None,
        };
        if let Some(e) = expected_api {
            assert_eq!(api, e, "{kind} {n}");
        }
    }
    for kind in [
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
    ] {
        assert!(!of_kind(&objs, kind).is_empty(), "no {kind}");
    }
    assert!(
        kustomization().get("namespace").is_none(),
        "the kustomization sets a namespace"
    );
}

#[test]
fn kustomization_lists_every_resource_and_generates_the_configmaps() {
    let k = kustomization();
    let listed: BTreeSet<String> = seq(&k, "resources", "kustomization")
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect();
    for r in &listed {
        assert!(k8s().join(r).is_file(), "resource {r} does not exist");
    }
    for f in files_under(&k8s(), &[".yaml", ".yml"]) {
        let rel = f.strip_prefix(k8s()).unwrap().to_str().unwrap().to_string();
        if rel == "kustomization.yaml" || rel.starts_with("config/") {
            continue;
        }
        assert!(
            listed.contains(&rel),
            "{rel} is not in the kustomization's resources"
        );
    }
    for g in seq(&k, "configMapGenerator", "kustomization") {
        for f in seq(g, "files", "configMapGenerator") {
            let f = f.as_str().unwrap();
            let path = f.split_once('=').map_or(f, |(_, p)| p);
            assert!(
                k8s().join(path).is_file(),
                "generator file {path} does not exist"
            );
        }
    }
    // Every policy file is in the policies ConfigMap, which keeps its name (hot reload);
    // gateway.yaml's ConfigMap has the hash suffix (a change rolls the pods).
    let policies = generator("gateway-policies");
    let in_cm: BTreeSet<String> = seq(&policies, "files", "gateway-policies")
        .iter()
        .map(|f| f.as_str().unwrap().to_string())
        .collect();
    for f in std::fs::read_dir(k8s().join("config/policies")).unwrap() {
        let f = f.unwrap().path();
        let rel = f.strip_prefix(k8s()).unwrap().to_str().unwrap().to_string();
        assert!(
            in_cm.contains(&rel),
            "{rel} is not in ConfigMap gateway-policies"
        );
    }
    assert_eq!(
        policies
            .get("options")
            .and_then(|o| o.get("disableNameSuffixHash")),
        Some(&Yaml::Bool(true)),
        "the policies ConfigMap must keep its name so that updates reach running pods"
    );
    let config = generator("gateway-config");
    let files = seq(&config, "files", "gateway-config");
    assert_eq!(files, [Yaml::String("config/gateway.yaml".into())]);
    assert!(
        config.get("options").is_none()
            && k.get("generatorOptions")
                .and_then(|o| o.get("disableNameSuffixHash"))
                .is_none(),
        "gateway.yaml's ConfigMap should keep the hash suffix"
    );
}

/// `KEY=VALUE` pairs of a kustomize env file (blank lines and `#` comments left out).
fn env_file(path: &Path) -> BTreeMap<String, String> {
    read(path)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l
                .split_once('=')
                .unwrap_or_else(|| panic!("{}: {l:?} is not KEY=VALUE", path.display()));
            (k.trim().to_string(), v.trim().to_string())
        })
        .collect()
}

/// Every Secret the kustomization defines (generated, or a Secret resource), with its keys.
fn defined_secrets() -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for g in opt_seq(&kustomization(), "secretGenerator") {
        let n = s(g, "name", "secretGenerator").to_string();
        let keys = out.entry(n.clone()).or_default();
        for e in opt_seq(g, "envs") {
            let path = k8s().join(e.as_str().unwrap());
            assert!(
                path.is_file(),
                "secretGenerator {n}: {} is missing",
                path.display()
            );
            for (k, v) in env_file(&path) {
                assert!(!v.is_empty(), "secretGenerator {n}: {k} is empty");
                keys.insert(k);
            }
        }
        for l in opt_seq(g, "literals") {
            let (k, _) = l
                .as_str()
                .unwrap()
                .split_once('=')
                .expect("a literal is k=v");
            keys.insert(k.to_string());
        }
        for f in opt_seq(g, "files") {
            let f = f.as_str().unwrap();
            let (k, path) = f
                .split_once('=')
                .unwrap_or_else(|| (Path::new(f).file_name().unwrap().to_str().unwrap(), f));
            assert!(
                k8s().join(path).is_file(),
                "secretGenerator {n}: {path} is missing"
            );
            keys.insert(k.to_string());
        }
    }
    for o in of_kind(&objects(), "Secret") {
        let keys = out.entry(name(&o).to_string()).or_default();
        for field in ["data", "stringData"] {
            if let Some(m) = o.get(field).and_then(Yaml::as_mapping) {
                keys.extend(m.keys().map(|k| k.as_str().unwrap().to_string()));
            }
        }
    }
    out
}

/// A pod spec's references to Secrets: (secret, key, optional, where).
fn secret_refs(pod: &Yaml) -> Vec<(String, Option<String>, bool, String)> {
    let optional = |v: &Yaml| v.get("optional").and_then(Yaml::as_bool) == Some(true);
    let mut out = Vec::new();
    for c in opt_seq(pod, "containers")
        .iter()
        .chain(opt_seq(pod, "initContainers"))
    {
        let cname = s(c, "name", "container");
        for e in opt_seq(c, "env") {
            if let Some(r) = e.get("valueFrom").and_then(|v| v.get("secretKeyRef")) {
                out.push((
                    s(r, "name", "secretKeyRef").to_string(),
                    Some(s(r, "key", "secretKeyRef").to_string()),
                    optional(r),
                    format!("container {cname} env {}", s(e, "name", "env")),
                ));
            }
        }
        for e in opt_seq(c, "envFrom") {
            if let Some(r) = e.get("secretRef") {
                let n = s(r, "name", "secretRef").to_string();
                out.push((n, None, optional(r), format!("container {cname} envFrom")));
            }
        }
    }
    for v in opt_seq(pod, "volumes") {
        let vname = s(v, "name", "volume");
        let mut sources: Vec<(&Yaml, &str)> = Vec::new();
        if let Some(sec) = v.get("secret") {
            sources.push((sec, "secretName"));
        }
        if let Some(p) = v.get("projected") {
            for src in opt_seq(p, "sources") {
                if let Some(sec) = src.get("secret") {
                    sources.push((sec, "name"));
                }
            }
        }
        for (sec, field) in sources {
            let n = s(sec, field, "secret volume").to_string();
            let items = opt_seq(sec, "items");
            if items.is_empty() {
                out.push((n.clone(), None, optional(sec), format!("volume {vname}")));
            }
            for i in items {
                let key = s(i, "key", "secret volume item").to_string();
                out.push((
                    n.clone(),
                    Some(key),
                    optional(sec),
                    format!("volume {vname}"),
                ));
            }
        }
    }
    for r in opt_seq(pod, "imagePullSecrets") {
        let n = s(r, "name", "imagePullSecrets").to_string();
        out.push((n, None, false, "imagePullSecrets".to_string()));
    }
    out
}

/// `kubectl kustomize` output applies as it is: every Secret a workload refers to is defined
/// by the kustomization, with every key that is not optional. (No kubectl here: the
/// kustomization and the manifests are read as YAML.)
#[test]
fn every_secret_the_kubernetes_workloads_reference_is_defined() {
    let defined = defined_secrets();
    let mut checked = 0;
    for o in objects() {
        let Some(pod) = o
            .get("spec")
            .and_then(|s| s.get("template"))
            .and_then(|t| t.get("spec"))
        else {
            continue;
        };
        let what = format!("{} {}", s(&o, "kind", "object"), name(&o));
        for (secret, key, optional, at) in secret_refs(pod) {
            let keys = defined.get(&secret).unwrap_or_else(|| {
                panic!("{what} {at}: Secret {secret} is not defined by the kustomization (defined: {defined:?})")
            });
            if let (Some(k), false) = (&key, optional) {
                assert!(
                    keys.contains(k),
                    "{what} {at}: Secret {secret} has no key {k} (keys: {keys:?})"
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 2, "only {checked} Secret references found");
    // The secret_env of the mounted configuration is among them (see the test below).
    assert!(defined
        .get("gateway-secrets")
        .is_some_and(|k| k.contains("jwt-secret")));
}

#[test]
fn deployment_probes_use_the_admin_port_of_the_configmap() {
    let ex = example("kubernetes/config/gateway.yaml");
    let (d, c) = gateway_deployment();
    let pod = at(&d, "spec.template.spec", "deployment");
    let ready = at(&c, "readinessProbe.httpGet", "readinessProbe");
    let live = at(&c, "livenessProbe.httpGet", "livenessProbe");
    assert_eq!(s(ready, "path", "readinessProbe"), "/readyz");
    assert_eq!(s(live, "path", "livenessProbe"), "/healthz");
    for probe in [ready, live] {
        assert_eq!(
            container_port(&c, at(probe, "port", "probe")),
            ex.admin_port(),
            "a probe is not on admin.bind's port"
        );
    }
    let ports: BTreeSet<u16> = seq(&c, "ports", "container")
        .iter()
        .map(|p| p["containerPort"].as_u64().unwrap() as u16)
        .collect();
    for b in ex.listener_binds() {
        assert!(b.ip().is_unspecified(), "listener {b} is not on 0.0.0.0");
        assert!(
            ports.contains(&b.port()),
            "listener port {} not declared",
            b.port()
        );
    }
    assert!(ports.contains(&ex.admin_port()));
    let annotations = at(&d, "spec.template.metadata.annotations", "pod");
    assert_eq!(
        annotations.get("prometheus.io/port").and_then(Yaml::as_str),
        Some(ex.admin_port().to_string().as_str()),
        "the scrape annotation is not on the admin port"
    );
    assert!(d["spec"]["replicas"].as_u64().unwrap() >= 2);

    // gateway.yaml and the policies come from the two ConfigMaps, where the command and
    // gateway.yaml look for them.
    let (v, m) = volume_at(pod, &c, "/etc/gateway/gateway.yaml");
    assert_eq!(s(&v, "configMap.name", "config volume"), "gateway-config");
    assert_eq!(s(&m, "subPath", "config mount"), "gateway.yaml");
    let args: Vec<&str> = seq(&c, "args", "container")
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(args, ["run", "-c", "/etc/gateway/gateway.yaml"]);
    let policies_dir = Path::new("/etc/gateway").join(s(&ex.gateway, "policies", "gateway.yaml"));
    let (v, m) = volume_at(
        pod,
        &c,
        policies_dir.to_str().unwrap().trim_end_matches('/'),
    );
    assert_eq!(
        s(&v, "configMap.name", "policies volume"),
        "gateway-policies"
    );
    assert!(
        m.get("subPath").is_none(),
        "policies mounted with subPath never update"
    );

    // TLS files: keys of a kubernetes.io/tls Secret, in a Secret volume.
    for l in seq(&ex.gateway, "listeners", "gateway.yaml") {
        let Some(tls) = l.get("tls") else { continue };
        for pair in seq(tls, "certs", "tls") {
            for (key, file) in [("cert", "tls.crt"), ("key", "tls.key")] {
                let p = Path::new("/etc/gateway").join(s(pair, key, "tls"));
                assert_eq!(p.file_name().unwrap(), file);
                let (v, _) = volume_at(pod, &c, p.parent().unwrap().to_str().unwrap());
                assert!(
                    v.get("secret").is_some(),
                    "{} is not from a Secret",
                    p.display()
                );
            }
        }
    }

    // Every secret_env of the policies comes from a Secret.
    let secrets = ex.secret_envs();
    assert!(!secrets.is_empty());
    for var in secrets
        .iter()
        .chain([&s(&ex.gateway, "admin.token_env", "admin").to_string()])
    {
        let e = opt_seq(&c, "env")
            .iter()
            .find(|e| e.get("name").and_then(Yaml::as_str) == Some(var))
            .unwrap_or_else(|| panic!("{var} is not in the container's env"));
        assert!(
            e.get("valueFrom")
                .and_then(|v| v.get("secretKeyRef"))
                .is_some(),
            "{var} is not from a Secret"
        );
    }

    // SIGTERM comes after preStop; then the gateway drains for shutdown_grace and exits
    // about 2 s later (Pingora waits the whole grace period): all of it within
    // terminationGracePeriodSeconds.
    let pre_stop = seq(&c, "lifecycle.preStop.exec.command", "preStop");
    assert_eq!(pre_stop[0].as_str(), Some("sleep"));
    let sleep = Duration::from_secs(pre_stop[1].as_str().unwrap().parse().unwrap());
    let tgps = Duration::from_secs(pod["terminationGracePeriodSeconds"].as_u64().unwrap());
    let needed = sleep + ex.shutdown_grace() + Duration::from_secs(2);
    assert!(
        tgps >= needed,
        "terminationGracePeriodSeconds {tgps:?} < {needed:?}"
    );
}

#[test]
fn kubernetes_workloads_are_hardened() {
    let deployments = of_kind(&objects(), "Deployment");
    assert!(deployments.len() >= 2);
    for d in deployments {
        let n = name(&d).to_string();
        let pod = at(&d, "spec.template.spec", &n);
        assert_eq!(
            pod["automountServiceAccountToken"],
            Yaml::Bool(false),
            "{n}"
        );
        for c in seq(pod, "containers", &n) {
            let what = format!("{n}/{}", s(c, "name", &n));
            for r in [
                "requests.cpu",
                "requests.memory",
                "limits.cpu",
                "limits.memory",
            ] {
                at(at(c, "resources", &what), r, &what);
            }
            let sc = at(c, "securityContext", &what);
            assert_eq!(sc["readOnlyRootFilesystem"], Yaml::Bool(true), "{what}");
            assert_eq!(sc["allowPrivilegeEscalation"], Yaml::Bool(false), "{what}");
            let non_root = sc.get("runAsNonRoot").or(pod
                .get("securityContext")
                .and_then(|p| p.get("runAsNonRoot")));
            assert_eq!(non_root, Some(&Yaml::Bool(true)), "{what}: runAsNonRoot");
            let user = sc
                .get("runAsUser")
                .or(pod.get("securityContext").and_then(|p| p.get("runAsUser")));
            assert!(
                user.and_then(Yaml::as_u64).is_some_and(|u| u > 0),
                "{what}: runAsUser"
            );
            at(c, "readinessProbe", &what);
            at(c, "livenessProbe", &what);
        }
    }
}

#[test]
fn services_pdb_and_hpa_select_the_right_pods() {
    let objs = objects();
    let deployments = of_kind(&objs, "Deployment");
    let (gw, _) = gateway_deployment();
    let gw_labels = at(&gw, "spec.template.metadata.labels", "gateway");
    assert!(labels_match(
        at(&gw, "spec.selector.matchLabels", "gateway"),
        gw_labels
    ));

    let services = of_kind(&objs, "Service");
    for svc in &services {
        let n = name(svc);
        let sel = at(svc, "spec.selector", n);
        let d = deployments
            .iter()
            .find(|d| labels_match(sel, &d["spec"]["template"]["metadata"]["labels"]))
            .unwrap_or_else(|| panic!("Service {n} selects no Deployment's pods"));
        let containers = seq(d, "spec.template.spec.containers", n);
        for p in seq(svc, "spec.ports", n) {
            let target = at(p, "targetPort", n);
            let found = containers.iter().any(|c| {
                opt_seq(c, "ports").iter().any(|cp| {
                    cp.get("name") == Some(target) || cp.get("containerPort") == Some(target)
                })
            });
            assert!(
                found,
                "Service {n}: targetPort {target:?} is no container port"
            );
        }
    }
    // The service that the gateway's clients use.
    let public = services
        .iter()
        .find(|s| name(s) == "gateway")
        .expect("no Service gateway");
    assert!(labels_match(&public["spec"]["selector"], gw_labels));

    for pdb in of_kind(&objs, "PodDisruptionBudget") {
        assert!(
            labels_match(at(&pdb, "spec.selector.matchLabels", "pdb"), gw_labels),
            "the PodDisruptionBudget does not select the gateway pods"
        );
        assert!(
            pdb["spec"].get("maxUnavailable").is_some()
                || pdb["spec"].get("minAvailable").is_some()
        );
    }
    let hpa = of_kind(&objs, "HorizontalPodAutoscaler");
    assert_eq!(hpa.len(), 1);
    let h = &hpa[0];
    assert_eq!(s(h, "spec.scaleTargetRef.kind", "hpa"), "Deployment");
    assert_eq!(s(h, "spec.scaleTargetRef.name", "hpa"), name(&gw));
    let min = h["spec"]["minReplicas"].as_u64().unwrap();
    let max = h["spec"]["maxReplicas"].as_u64().unwrap();
    assert!(min >= 2 && max > min, "replicas {min}..{max}");
    assert!(
        seq(h, "spec.metrics", "hpa")
            .iter()
            .any(|m| m["resource"]["name"].as_str() == Some("cpu")),
        "the HPA does not scale on CPU"
    );

    // The host names in the configuration are Services of the kustomization.
    let ex = example("kubernetes/config/gateway.yaml");
    let service_ports = |host: &str| -> Vec<u16> {
        let svc = services
            .iter()
            .find(|s| name(s) == host)
            .unwrap_or_else(|| panic!("{host} is not a Service of the kustomization"));
        seq(svc, "spec.ports", host)
            .iter()
            .map(|p| p["port"].as_u64().unwrap() as u16)
            .collect()
    };
    let redis = ex.redis_url().expect("no redis url");
    let port: u16 = redis
        .rsplit_once(':')
        .unwrap()
        .1
        .trim_end_matches('/')
        .parse()
        .unwrap();
    assert!(service_ports(url_host(redis)).contains(&port), "{redis}");
    for (host, port) in ex.targets() {
        assert!(
            service_ports(&host).contains(&port),
            "upstream {host}:{port}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// PromQL: metric names, labels, functions
// ---------------------------------------------------------------------------------------

/// The gateway's metrics (the contract) and their labels.
const METRICS: &[(&str, &[&str])] = &[
    ("gateway_requests_total", &["route", "method", "status"]),
    ("gateway_request_duration_seconds", &["route"]),
    ("gateway_upstream_duration_seconds", &["upstream"]),
    ("gateway_upstream_errors_total", &["upstream", "kind"]),
    ("gateway_auth_failures_total", &["route", "reason"]),
    ("gateway_rate_limited_total", &["route"]),
    ("gateway_rate_limit_store_errors_total", &["kind"]),
    ("gateway_validation_failures_total", &["route"]),
    (
        "gateway_aggregate_calls_total",
        &["route", "call", "outcome"],
    ),
    ("gateway_circuit_state", &["upstream", "target"]),
    ("gateway_config_reloads_total", &["result"]),
    ("gateway_config_generation", &[]),
    ("gateway_jwks_fetches_total", &["provider", "result"]),
    ("gateway_upstream_retries_total", &["upstream"]),
];

const HISTOGRAMS: &[&str] = &[
    "gateway_request_duration_seconds",
    "gateway_upstream_duration_seconds",
];

/// Labels Prometheus adds to every scraped series.
const TARGET_LABELS: &[&str] = &["job", "instance"];

/// Functions and aggregation operators an expression may use.
const FUNCTIONS: &[&str] = &[
    "abs",
    "absent",
    "avg",
    "avg_over_time",
    "ceil",
    "changes",
    "clamp_max",
    "clamp_min",
    "count",
    "count_over_time",
    "delta",
    "deriv",
    "floor",
    "histogram_quantile",
    "increase",
    "irate",
    "label_replace",
    "last_over_time",
    "max",
    "max_over_time",
    "min",
    "min_over_time",
    "quantile",
    "rate",
    "resets",
    "round",
    "scalar",
    "sort",
    "sort_desc",
    "stddev",
    "sum",
    "sum_over_time",
    "topk",
    "bottomk",
    "vector",
];

const KEYWORDS: &[&str] = &["and", "or", "unless", "bool", "offset"];
const GROUPING: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// What an expression refers to.
#[derive(Debug, Default)]
struct Refs {
    /// Series names with the label names of their matchers.
    series: Vec<(String, Vec<String>)>,
    /// Labels of by/without/on/ignoring/group_* clauses.
    grouping: Vec<String>,
    /// `$name` and `${name}` (Grafana variables).
    variables: BTreeSet<String>,
}

fn ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// A small PromQL scanner: enough to find every series name, matcher label, grouping label,
/// function and Grafana variable, and to refuse unknown functions and unbalanced brackets.
fn scan_promql(expr: &str) -> Result<Refs, String> {
    let b: Vec<char> = expr.chars().collect();
    let mut refs = Refs::default();
    let mut i = 0;
    let mut parens = 0i32;
    let skip_ws = |mut j: usize| {
        while j < b.len() && b[j].is_whitespace() {
            j += 1;
        }
        j
    };
    let string_end = |j: usize, refs: &mut Refs| -> Result<usize, String> {
        let q = b[j];
        let mut k = j + 1;
        while k < b.len() && b[k] != q {
            if b[k] == '\\' {
                k += 1;
            } else if b[k] == '$' {
                let name: String = b[k + 1..]
                    .iter()
                    .skip_while(|c| **c == '{')
                    .take_while(|c| ident_char(**c))
                    .collect();
                refs.variables.insert(name);
            }
            k += 1;
        }
        if k >= b.len() {
            return Err(format!("unterminated string at {j}"));
        }
        Ok(k + 1)
    };
    while i < b.len() {
        let c = b[i];
        if c == '"' || c == '\'' || c == '`' {
            i = string_end(i, &mut refs)?;
        } else if c == '{' {
            return Err(format!("a selector without a metric name at {i}"));
        } else if c == '[' {
            let end = b[i..].iter().position(|c| *c == ']').ok_or("unclosed [")?;
            let inner: String = b[i + 1..i + end].iter().collect();
            for part in inner.split('$').skip(1) {
                let name: String = part.chars().take_while(|c| ident_char(*c)).collect();
                refs.variables.insert(name);
            }
            i += end + 1;
        } else if c == '(' {
            parens += 1;
            i += 1;
        } else if c == ')' {
            parens -= 1;
            if parens < 0 {
                return Err(format!("unbalanced ) at {i}"));
            }
            i += 1;
        } else if c == ']' || c == '}' {
            return Err(format!("unbalanced {c} at {i}"));
        } else if c == '$' {
            let name: String = b[i + 1..]
                .iter()
                .skip_while(|c| **c == '{')
                .take_while(|c| ident_char(**c))
                .collect();
            return Err(format!("variable ${name} outside a string or range"));
        } else if c.is_ascii_digit() || c == '.' {
            while i < b.len() && (ident_char(b[i]) || b[i] == '.') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < b.len() && ident_char(b[i]) {
                i += 1;
            }
            let ident: String = b[start..i].iter().collect();
            let next = skip_ws(i);
            if GROUPING.contains(&ident.as_str()) {
                if next < b.len() && b[next] == '(' {
                    let end = b[next..]
                        .iter()
                        .position(|c| *c == ')')
                        .ok_or("unclosed (")?;
                    let inner: String = b[next + 1..next + end].iter().collect();
                    refs.grouping.extend(
                        inner
                            .split(',')
                            .map(str::trim)
                            .filter(|l| !l.is_empty())
                            .map(str::to_string),
                    );
                    i = next + end + 1;
                }
            } else if KEYWORDS.contains(&ident.as_str()) || FUNCTIONS.contains(&ident.as_str()) {
                // An operator keyword, or a function / aggregation: nothing to record.
            } else if next < b.len() && b[next] == '(' {
                return Err(format!("unknown function {ident}"));
            } else {
                let mut labels = Vec::new();
                if next < b.len() && b[next] == '{' {
                    let mut k = next + 1;
                    loop {
                        k = skip_ws(k);
                        if k < b.len() && b[k] == ',' {
                            k = skip_ws(k + 1);
                        }
                        if k >= b.len() {
                            return Err("unclosed {".into());
                        }
                        if b[k] == '}' {
                            k += 1;
                            break;
                        }
                        let ls = k;
                        while k < b.len() && ident_char(b[k]) {
                            k += 1;
                        }
                        if ls == k {
                            return Err(format!("a label name expected at {k}"));
                        }
                        labels.push(b[ls..k].iter().collect());
                        k = skip_ws(k);
                        let op: String = b[k..].iter().take(2).collect();
                        k += if op == "=~" || op == "!~" || op == "!=" {
                            2
                        } else if op.starts_with('=') {
                            1
                        } else {
                            return Err(format!("a matcher operator expected at {k}"));
                        };
                        k = skip_ws(k);
                        if k >= b.len() || !matches!(b[k], '"' | '\'' | '`') {
                            return Err(format!("a quoted label value expected at {k}"));
                        }
                        k = string_end(k, &mut refs)?;
                    }
                    i = k;
                }
                refs.series.push((ident, labels));
            }
        } else {
            i += 1;
        }
    }
    if parens != 0 {
        return Err("unbalanced (".into());
    }
    Ok(refs)
}

/// The labels a series may be matched or grouped on; None for a name that is not one of
/// the gateway's series.
fn series_labels(series: &str) -> Option<Vec<&'static str>> {
    for (m, labels) in METRICS {
        let mut out: Vec<&str> = labels.to_vec();
        out.extend(TARGET_LABELS);
        if HISTOGRAMS.contains(m) {
            if series == format!("{m}_bucket") {
                out.push("le");
                return Some(out);
            }
            if series == format!("{m}_sum") || series == format!("{m}_count") {
                return Some(out);
            }
        } else if series == *m {
            return Some(out);
        }
    }
    None
}

/// The metric (family) name of a series.
fn family(series: &str) -> &str {
    for h in HISTOGRAMS {
        if series.starts_with(h) {
            return h;
        }
    }
    series
}

/// Checks an expression: only the gateway's series, their labels, known functions, and
/// only the Grafana variables in `vars`. Returns the metric families it uses.
fn check_expr(expr: &str, vars: &BTreeSet<String>) -> Result<BTreeSet<String>, String> {
    let refs = scan_promql(expr)?;
    if refs.series.is_empty() {
        return Err("no metric".into());
    }
    let mut families = BTreeSet::new();
    let mut allowed_grouping: BTreeSet<&str> = BTreeSet::new();
    for (series, labels) in &refs.series {
        let allowed =
            series_labels(series).ok_or_else(|| format!("{series} is not a gateway metric"))?;
        for l in labels {
            if !allowed.contains(&l.as_str()) {
                return Err(format!("{series} has no label {l}"));
            }
        }
        allowed_grouping.extend(allowed);
        families.insert(family(series).to_string());
    }
    for l in &refs.grouping {
        if !allowed_grouping.contains(l.as_str()) {
            return Err(format!("no metric of the expression has label {l}"));
        }
    }
    for v in &refs.variables {
        if !v.starts_with("__") && !vars.contains(v) {
            return Err(format!("undefined variable ${v}"));
        }
    }
    Ok(families)
}

#[test]
fn promql_scanner_self_test() {
    let none = BTreeSet::new();
    let ok = check_expr(
        r#"sum by (job, route) (rate(gateway_requests_total{status=~"5.."}[5m])) / ignoring(status) sum(rate(gateway_requests_total[5m]))"#,
        &none,
    )
    .unwrap();
    assert_eq!(ok, BTreeSet::from(["gateway_requests_total".to_string()]));
    let h = check_expr(
        "histogram_quantile(0.99, sum by (le) (rate(gateway_request_duration_seconds_bucket[5m])))",
        &none,
    )
    .unwrap();
    assert_eq!(
        h,
        BTreeSet::from(["gateway_request_duration_seconds".to_string()])
    );
    for (bad, why) in [
        ("rate(gateway_requets_total[5m])", "not a gateway metric"),
        ("rate(http_requests_total[5m])", "not a gateway metric"),
        (
            "gateway_request_duration_seconds > 1",
            "not a gateway metric",
        ),
        ("gateway_circuit_state_bucket", "not a gateway metric"),
        (r#"gateway_requests_total{code="500"}"#, "no label code"),
        (
            "sum by (reason) (gateway_requests_total)",
            "no metric of the expression has label reason",
        ),
        ("rated(gateway_requests_total[5m])", "unknown function"),
        ("sum(rate(gateway_requests_total[5m])", "unbalanced"),
        ("sum(rate(gateway_requests_total[5m])))", "unbalanced"),
        (
            r#"gateway_requests_total{route=~"$nope"}"#,
            "undefined variable",
        ),
        ("1 + 1", "no metric"),
    ] {
        let e = check_expr(bad, &none).expect_err(bad);
        assert!(e.contains(why), "{bad}: {e}");
    }
}

// ---------------------------------------------------------------------------------------
// Prometheus alert rules
// ---------------------------------------------------------------------------------------

#[test]
fn alert_rules_are_well_formed_and_use_only_gateway_metrics() {
    let rules = yaml(&deploy().join("prometheus/alerts.yaml"));
    let groups = seq(&rules, "groups", "alerts.yaml");
    assert!(!groups.is_empty());
    let mut group_names = BTreeSet::new();
    let mut alert_names = BTreeSet::new();
    let mut used = BTreeSet::new();
    for g in groups {
        let gname = s(g, "name", "group");
        assert!(group_names.insert(gname), "group {gname} twice");
        let rs = seq(g, "rules", gname);
        assert!(!rs.is_empty(), "group {gname} has no rule");
        for r in rs {
            let alert = s(r, "alert", gname);
            assert!(alert_names.insert(alert), "alert {alert} twice");
            let expr = s(r, "expr", alert);
            let families = check_expr(expr, &BTreeSet::new())
                .unwrap_or_else(|e| panic!("alert {alert}: {e}\n{expr}"));
            used.extend(families);
            if let Some(f) = r.get("for") {
                dur(f.as_str().unwrap());
            }
            let sev = s(r, "labels.severity", alert);
            assert!(
                ["critical", "warning", "info"].contains(&sev),
                "{alert}: severity {sev}"
            );
            assert!(!s(r, "annotations.summary", alert).is_empty());
            let keys: BTreeSet<&str> = r
                .as_mapping()
                .unwrap()
                .keys()
                .map(|k| k.as_str().unwrap())
                .collect();
            let known = BTreeSet::from([
                "alert",
                "expr",
                "for",
                "labels",
                "annotations",
                "keep_firing_for",
            ]);
            assert!(keys.is_subset(&known), "{alert}: unknown keys {keys:?}");
        }
    }
    for required in [
        "gateway_requests_total",                // 5xx ratio
        "gateway_rate_limited_total",            // 429 surge
        "gateway_config_reloads_total",          // reload failures
        "gateway_circuit_state",                 // open circuits
        "gateway_jwks_fetches_total",            // JWKS fetch failures
        "gateway_rate_limit_store_errors_total", // rate-limit store errors
    ] {
        assert!(used.contains(required), "no alert on {required}");
    }
}

// ---------------------------------------------------------------------------------------
// Grafana dashboard
// ---------------------------------------------------------------------------------------

#[test]
fn dashboard_is_well_formed_and_queries_only_gateway_metrics() {
    let path = deploy().join("grafana/gateway-dashboard.json");
    let d: Json = serde_json::from_str(&read(&path)).unwrap();
    for key in ["title", "uid"] {
        assert!(d[key].as_str().is_some_and(|s| !s.is_empty()), "no {key}");
    }
    assert!(d["schemaVersion"].as_u64().is_some());

    // Variables; the queries of query variables name gateway metrics too.
    let mut vars = BTreeSet::new();
    let templating = d["templating"]["list"].as_array().expect("templating.list");
    for v in templating {
        vars.insert(v["name"].as_str().unwrap().to_string());
    }
    let mut used = BTreeSet::new();
    for v in templating {
        if v["type"] != "query" {
            continue;
        }
        let q = v["query"]["query"]
            .as_str()
            .or(v["query"].as_str())
            .unwrap();
        let inner = q
            .strip_prefix("label_values(")
            .and_then(|r| r.strip_suffix(')'))
            .unwrap_or_else(|| panic!("variable query {q}"));
        let (selector, label) = inner.rsplit_once(',').unwrap();
        check_expr(selector, &vars).unwrap_or_else(|e| panic!("variable query {q}: {e}"));
        let series = scan_promql(selector).unwrap().series.remove(0).0;
        assert!(
            series_labels(&series).unwrap().contains(&label.trim()),
            "{q}: {series} has no label {label}"
        );
    }

    // Panels: unique ids, inside the 24-column grid, no overlap, data source a variable.
    let mut panels: Vec<&Json> = Vec::new();
    for p in d["panels"].as_array().expect("panels") {
        panels.push(p);
        panels.extend(p["panels"].as_array().into_iter().flatten());
    }
    assert!(panels.len() >= 10, "only {} panels", panels.len());
    let mut ids = BTreeSet::new();
    let mut boxes: Vec<(u64, u64, u64, u64, String)> = Vec::new();
    let mut exprs = 0;
    for p in &panels {
        let title = p["title"].as_str().unwrap_or_default().to_string();
        assert!(
            ids.insert(p["id"].as_u64().expect("panel id")),
            "panel id twice: {title}"
        );
        let g = &p["gridPos"];
        let (x, y, w, h) = (
            g["x"].as_u64().unwrap(),
            g["y"].as_u64().unwrap(),
            g["w"].as_u64().unwrap(),
            g["h"].as_u64().unwrap(),
        );
        assert!(w > 0 && h > 0 && x + w <= 24, "{title}: gridPos {g}");
        for (bx, by, bw, bh, other) in &boxes {
            let overlap = x < bx + bw && *bx < x + w && y < by + bh && *by < y + h;
            assert!(!overlap, "panels {title:?} and {other:?} overlap");
        }
        boxes.push((x, y, w, h, title.clone()));
        if p["type"] == "row" {
            continue;
        }
        let uid = p["datasource"]["uid"].as_str().expect("panel datasource");
        let var = uid.trim_start_matches("${").trim_end_matches('}');
        assert!(
            vars.contains(var),
            "{title}: data source {uid} is not a variable"
        );
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no query");
        let mut ref_ids = BTreeSet::new();
        for t in targets {
            assert!(
                ref_ids.insert(t["refId"].as_str().unwrap()),
                "{title}: refId twice"
            );
            let expr = t["expr"].as_str().expect("expr");
            let families =
                check_expr(expr, &vars).unwrap_or_else(|e| panic!("panel {title}: {e}\n{expr}"));
            used.extend(families);
            exprs += 1;
        }
    }
    assert!(exprs >= 10);
    for required in [
        "gateway_requests_total",
        "gateway_request_duration_seconds",
        "gateway_upstream_errors_total",
        "gateway_rate_limited_total",
        "gateway_auth_failures_total",
        "gateway_circuit_state",
        "gateway_config_reloads_total",
        "gateway_config_generation",
    ] {
        assert!(used.contains(required), "no panel on {required}");
    }
}
