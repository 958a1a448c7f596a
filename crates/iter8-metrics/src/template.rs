//! Query templates: `{{labels}}`, `{{label "name"}}`, `{{namespace}}`, `{{elapsed}}`,
//! `{{start}}` and `{{now}}`, rendered so that no value can change the query's structure.
//!
//! Every substituted value is first escaped as the inside of a double-quoted PromQL string
//! (backslash, quotes, newline and other control characters), then encoded for where the
//! template is used: percent-encoded in URLs, JSON-escaped in request bodies, and refused in
//! headers if it holds a control character. Label names must match `[a-zA-Z_][a-zA-Z0-9_]*`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Why a template could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// `{{` without a closing `}}`.
    #[error("unterminated `{{{{` at byte {0}")]
    Unterminated(usize),
    /// A variable the renderer does not know.
    #[error(
        "unknown template variable `{0}`; known: labels, label \"<name>\", namespace, elapsed, start, now (and token, username, password in headers)"
    )]
    UnknownVariable(String),
    /// `{{label ...}}` without a double-quoted label name.
    #[error("malformed `{{{{label ...}}}}`: expected {{{{label \"<name>\"}}}}, got `{0}`")]
    MalformedLabel(String),
    /// A label name that is not a valid Prometheus label name.
    #[error("invalid label name `{0}`: must match [a-zA-Z_][a-zA-Z0-9_]*")]
    InvalidLabelName(String),
    /// `{{label "x"}}` for a label the version does not have.
    #[error("the version has no label `{0}`")]
    MissingLabel(String),
    /// `{{labels}}` for a version with no labels, which would select every version.
    #[error("the version has no labels, so `{{{{labels}}}}` would select every version")]
    NoLabels,
    /// A credential variable outside an HTTP header, or without the credential.
    #[error("`{0}` is only available in HTTP headers, from the metric's Secret")]
    SecretNotAvailable(String),
    /// A value that cannot be placed in an HTTP header.
    #[error("a value for a header contains a control character")]
    ControlCharacterInHeader,
}

/// Where a rendered template is used, which decides how substituted values are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carrier {
    /// A PromQL query: values are escaped as PromQL string contents.
    PromQl,
    /// A URL: PromQL-escaped values are then percent-encoded.
    Url,
    /// A JSON request body: PromQL-escaped values are then escaped as JSON string contents.
    Json,
    /// An HTTP header value: PromQL-escaped values must not contain control characters.
    Header,
}

/// The values a template can refer to.
#[derive(Debug, Clone)]
pub struct Context<'a> {
    /// The version's labels.
    pub labels: &'a BTreeMap<String, String>,
    /// The experiment's namespace.
    pub namespace: &'a str,
    /// The experiment's start, in Unix seconds.
    pub start: u64,
    /// The end of the window, in Unix seconds.
    pub now: u64,
    /// Credentials from the metric's Secret, for `{{token}}`, `{{username}}` and `{{password}}`
    /// in HTTP headers (and nowhere else, so they never reach a URL or a log).
    pub secrets: Option<&'a crate::Credentials>,
}

impl Context<'_> {
    /// Whole seconds from start to now, at least 1 (a zero-length PromQL range is invalid).
    pub fn elapsed(&self) -> u64 {
        self.now.saturating_sub(self.start).max(1)
    }
}

/// Whether `name` is a valid Prometheus label name.
pub fn is_valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Escapes `value` as the contents of a double-quoted PromQL string.
///
/// Backslash, double quote and the common control characters get their backslash escapes;
/// the single quote and backtick become `\x27` and `\x60`, which are valid in both quote styles,
/// and other control characters become `\xHH`. The result can never end the string early.
pub fn escape_promql(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\'' => out.push_str("\\x27"),
            '`' => out.push_str("\\x60"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                // Writing to a String cannot fail.
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// The version's label matchers, `a="x",b="y"`, with escaped values, in name order.
pub fn label_matchers(labels: &BTreeMap<String, String>) -> Result<String, TemplateError> {
    if labels.is_empty() {
        return Err(TemplateError::NoLabels);
    }
    let mut parts = Vec::with_capacity(labels.len());
    for (name, value) in labels {
        if !is_valid_label_name(name) {
            return Err(TemplateError::InvalidLabelName(name.clone()));
        }
        parts.push(format!("{name}=\"{}\"", escape_promql(value)));
    }
    Ok(parts.join(","))
}

fn encode(value: &str, carrier: Carrier) -> Result<String, TemplateError> {
    match carrier {
        Carrier::PromQl => Ok(value.to_owned()),
        Carrier::Url => {
            let mut out = String::with_capacity(value.len());
            for b in value.bytes() {
                if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                    out.push(b as char);
                } else {
                    let _ = write!(out, "%{b:02X}");
                }
            }
            Ok(out)
        }
        Carrier::Json => {
            let quoted = serde_json::Value::String(value.to_owned()).to_string();
            Ok(quoted[1..quoted.len() - 1].to_owned())
        }
        Carrier::Header => {
            if value.chars().any(char::is_control) {
                Err(TemplateError::ControlCharacterInHeader)
            } else {
                Ok(value.to_owned())
            }
        }
    }
}

fn evaluate(directive: &str, ctx: &Context<'_>, carrier: Carrier) -> Result<String, TemplateError> {
    let directive = directive.trim();
    if matches!(directive, "token" | "username" | "password") {
        let secret = ctx.secrets.and_then(|c| match directive {
            "token" => c.token.as_deref(),
            "username" => c.username.as_deref(),
            _ => c.password.as_deref(),
        });
        return match (carrier, secret) {
            // A secret is inserted as it is: escaping would corrupt it; control characters
            // are still refused by the header encoding.
            (Carrier::Header, Some(s)) => Ok(s.trim().to_owned()),
            _ => Err(TemplateError::SecretNotAvailable(directive.to_owned())),
        };
    }
    match directive {
        "labels" => return label_matchers(ctx.labels),
        "namespace" => return Ok(escape_promql(ctx.namespace)),
        "elapsed" => return Ok(ctx.elapsed().to_string()),
        "start" => return Ok(ctx.start.to_string()),
        "now" => return Ok(ctx.now.to_string()),
        _ => {}
    }
    if let Some(rest) = directive.strip_prefix("label")
        && rest.starts_with(char::is_whitespace)
    {
        let arg = rest.trim();
        let name = arg
            .strip_prefix('"')
            .and_then(|a| a.strip_suffix('"'))
            .filter(|n| !n.contains('"'))
            .ok_or_else(|| TemplateError::MalformedLabel(directive.to_owned()))?;
        if !is_valid_label_name(name) {
            return Err(TemplateError::InvalidLabelName(name.to_owned()));
        }
        let value = ctx
            .labels
            .get(name)
            .ok_or_else(|| TemplateError::MissingLabel(name.to_owned()))?;
        return Ok(escape_promql(value));
    }
    Err(TemplateError::UnknownVariable(directive.to_owned()))
}

/// Renders `template` for `carrier`.
///
/// A directive starts at the last `{{` of a run of braces, so `x{{{labels}}}` renders as
/// `x{` + matchers + `}`; text outside directives is copied unchanged.
pub fn render(
    template: &str,
    ctx: &Context<'_>,
    carrier: Carrier,
) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    let mut offset = 0;
    while let Some(open) = rest.find("{{") {
        // Extra opening braces before the directive are literal text.
        let extra = rest[open + 2..].bytes().take_while(|&b| b == b'{').count();
        let start = open + extra;
        out.push_str(&rest[..start]);
        let body = &rest[start + 2..];
        let close = body
            .find("}}")
            .ok_or(TemplateError::Unterminated(offset + start))?;
        let value = evaluate(&body[..close], ctx, carrier)?;
        out.push_str(&encode(&value, carrier)?);
        let consumed = start + 2 + close + 2;
        offset += consumed;
        rest = &rest[consumed..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn ctx(labels: &BTreeMap<String, String>) -> Context<'_> {
        Context {
            labels,
            namespace: "default",
            start: 1_700_000_000,
            now: 1_700_000_300,
            secrets: None,
        }
    }

    #[test]
    fn labels_render_as_sorted_matchers() {
        let l = labels(&[("version", "v1"), ("app", "reviews")]);
        let q = render(
            "sum(increase(x{ {{labels}} }[{{elapsed}}s]))",
            &ctx(&l),
            Carrier::PromQl,
        );
        assert_eq!(
            q.as_deref(),
            Ok("sum(increase(x{ app=\"reviews\",version=\"v1\" }[300s]))")
        );
    }

    #[test]
    fn triple_braces_keep_the_selector_braces() {
        let l = labels(&[("version", "v1")]);
        let q = render("x{{{labels}}}", &ctx(&l), Carrier::PromQl);
        assert_eq!(q.as_deref(), Ok("x{version=\"v1\"}"));
    }

    #[test]
    fn single_label_namespace_start_and_now_render() {
        let l = labels(&[("version", "v2")]);
        let q = render(
            "{{ label \"version\" }}|{{namespace}}|{{start}}|{{now}}|{{elapsed}}",
            &ctx(&l),
            Carrier::PromQl,
        );
        assert_eq!(q.as_deref(), Ok("v2|default|1700000000|1700000300|300"));
    }

    #[test]
    fn elapsed_is_at_least_one_second() {
        let l = labels(&[("version", "v1")]);
        let mut c = ctx(&l);
        c.now = c.start;
        assert_eq!(
            render("{{elapsed}}", &c, Carrier::PromQl).as_deref(),
            Ok("1")
        );
        c.now = c.start - 10;
        assert_eq!(
            render("{{elapsed}}", &c, Carrier::PromQl).as_deref(),
            Ok("1")
        );
    }

    #[test]
    fn injection_through_a_label_value_stays_inside_the_string() {
        let l = labels(&[("version", "v1\"} or vector(1) #")]);
        let q = render("sum(x{ {{labels}} })", &ctx(&l), Carrier::PromQl);
        assert_eq!(
            q.as_deref(),
            Ok("sum(x{ version=\"v1\\\"} or vector(1) #\" })")
        );
    }

    #[test]
    fn backslash_cannot_unescape_the_closing_quote() {
        let l = labels(&[("version", "v1\\")]);
        let q = render(
            "x{version=\"{{label \"version\"}}\"}",
            &ctx(&l),
            Carrier::PromQl,
        );
        assert_eq!(q.as_deref(), Ok("x{version=\"v1\\\\\"}"));
    }

    #[test]
    fn newlines_quotes_and_control_characters_are_escaped() {
        assert_eq!(escape_promql("a\nb\rc\td"), "a\\nb\\rc\\td");
        assert_eq!(escape_promql("it's `x`"), "it\\x27s \\x60x\\x60");
        assert_eq!(escape_promql("\u{0}\u{7f}"), "\\x00\\x7f");
        assert_eq!(escape_promql("ünïcode"), "ünïcode");
    }

    #[test]
    fn single_quoted_templates_are_safe_too() {
        let l = labels(&[("version", "v1'} or vector(1) #")]);
        let q = render(
            "x{version='{{label \"version\"}}'}",
            &ctx(&l),
            Carrier::PromQl,
        );
        assert_eq!(q.as_deref(), Ok("x{version='v1\\x27} or vector(1) #'}"));
    }

    #[test]
    fn invalid_label_names_are_rejected() {
        let l = labels(&[("version\"} or vector(1) #", "v1")]);
        assert!(matches!(
            render("{{labels}}", &ctx(&l), Carrier::PromQl),
            Err(TemplateError::InvalidLabelName(_))
        ));
        let l = labels(&[("1abc", "v1")]);
        assert!(matches!(
            render("{{labels}}", &ctx(&l), Carrier::PromQl),
            Err(TemplateError::InvalidLabelName(_))
        ));
        let l = labels(&[("version", "v1")]);
        assert!(matches!(
            render("{{label \"a-b\"}}", &ctx(&l), Carrier::PromQl),
            Err(TemplateError::InvalidLabelName(_))
        ));
        assert!(is_valid_label_name("_a1"));
        assert!(is_valid_label_name("__name__"));
        assert!(!is_valid_label_name(""));
        assert!(!is_valid_label_name("ä"));
    }

    #[test]
    fn unknown_variables_are_rejected_by_name() {
        let l = labels(&[("version", "v1")]);
        let err = render("x{{{lables}}}", &ctx(&l), Carrier::PromQl);
        assert_eq!(err, Err(TemplateError::UnknownVariable("lables".into())));
        assert!(
            err.err()
                .map(|e| e.to_string())
                .unwrap_or_default()
                .contains("unknown template variable `lables`")
        );
        assert_eq!(
            render("{{.Name}}", &ctx(&l), Carrier::PromQl),
            Err(TemplateError::UnknownVariable(".Name".into()))
        );
    }

    #[test]
    fn malformed_and_missing_labels_are_rejected() {
        let l = labels(&[("version", "v1")]);
        assert!(matches!(
            render("{{label version}}", &ctx(&l), Carrier::PromQl),
            Err(TemplateError::MalformedLabel(_))
        ));
        assert!(matches!(
            render("{{label \"a\" \"b\"}}", &ctx(&l), Carrier::PromQl),
            Err(TemplateError::MalformedLabel(_))
        ));
        assert_eq!(
            render("{{label \"app\"}}", &ctx(&l), Carrier::PromQl),
            Err(TemplateError::MissingLabel("app".into()))
        );
    }

    #[test]
    fn unterminated_directives_are_rejected() {
        let l = labels(&[("version", "v1")]);
        assert_eq!(
            render("abc{{labels", &ctx(&l), Carrier::PromQl),
            Err(TemplateError::Unterminated(3))
        );
    }

    #[test]
    fn empty_labels_would_select_everything_and_are_rejected() {
        let l = BTreeMap::new();
        assert_eq!(
            render("x{ {{labels}} }", &ctx(&l), Carrier::PromQl),
            Err(TemplateError::NoLabels)
        );
    }

    #[test]
    fn text_without_directives_is_unchanged() {
        let l = BTreeMap::new();
        let t = "sum(rate(x{a=\"b\"}[5m])) by (le) { }";
        assert_eq!(render(t, &ctx(&l), Carrier::PromQl).as_deref(), Ok(t));
    }

    #[test]
    fn urls_percent_encode_substituted_values_only() {
        let l = labels(&[("version", "v1&x=1 #")]);
        let q = render(
            "https://h/api?query=x{{{labels}}}&from={{start}}",
            &ctx(&l),
            Carrier::Url,
        );
        assert_eq!(
            q.as_deref(),
            Ok("https://h/api?query=x{version%3D%22v1%26x%3D1%20%23%22}&from=1700000000")
        );
    }

    #[test]
    fn json_bodies_escape_substituted_values() {
        let l = labels(&[("version", "v1\"}, \"evil\": {\"")]);
        let body = render("{\"q\": \"x{ {{labels}} }\"}", &ctx(&l), Carrier::Json);
        let body = body.unwrap_or_default();
        let parsed: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        assert_eq!(
            parsed["q"].as_str(),
            Some("x{ version=\"v1\\\"}, \\\"evil\\\": {\\\"\" }")
        );
        assert_eq!(parsed.as_object().map(|o| o.len()), Some(1));
    }

    #[test]
    fn headers_refuse_control_characters_after_escaping() {
        let l = labels(&[("version", "v1")]);
        assert_eq!(
            render("Bearer {{label \"version\"}}", &ctx(&l), Carrier::Header).as_deref(),
            Ok("Bearer v1")
        );
        // Newlines are escaped to `\n` first, so even they cannot split a header.
        let l = labels(&[("version", "v1\r\nX-Evil: 1")]);
        assert_eq!(
            render("{{label \"version\"}}", &ctx(&l), Carrier::Header).as_deref(),
            Ok("v1\\r\\nX-Evil: 1")
        );
        let l = labels(&[("version", "v1\u{85}")]);
        assert_eq!(
            render("{{label \"version\"}}", &ctx(&l), Carrier::Header),
            Err(TemplateError::ControlCharacterInHeader)
        );
    }

    #[test]
    fn secrets_render_only_in_headers() {
        let l = labels(&[("version", "v1")]);
        let creds = crate::Credentials {
            token: Some("s3cr3t".into()),
            ..crate::Credentials::default()
        };
        let mut c = ctx(&l);
        c.secrets = Some(&creds);
        assert_eq!(
            render("Key {{token}}", &c, Carrier::Header).as_deref(),
            Ok("Key s3cr3t")
        );
        assert_eq!(
            render("q={{token}}", &c, Carrier::Url),
            Err(TemplateError::SecretNotAvailable("token".into()))
        );
        assert_eq!(
            render("{{password}}", &c, Carrier::Header),
            Err(TemplateError::SecretNotAvailable("password".into()))
        );
    }
}
