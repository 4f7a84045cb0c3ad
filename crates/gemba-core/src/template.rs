//! `{node}`-style templates in check and action arguments.
//!
//! A template is filled argument by argument: a value never becomes shell
//! text, so a node name cannot inject a command. `{{` and `}}` are literal
//! braces.

/// Checks that `text` is well formed and uses only `allowed` variables.
pub fn check(text: &str, allowed: &[&str]) -> Result<(), String> {
    let mut bad = Vec::new();
    walk(text, |piece| {
        if let Piece::Var(v) = piece {
            if !allowed.contains(&v) {
                bad.push(v.to_string());
            }
        }
    })?;
    match bad.first() {
        None => Ok(()),
        Some(v) => Err(format!("bad template variable {{{v}}} in {text:?}")),
    }
}

/// Fills `text` with `vars`; an unknown variable is left as written.
pub fn render(text: &str, vars: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(text.len());
    let r = walk(text, |piece| match piece {
        Piece::Text(t) => out.push_str(t),
        Piece::Var(v) => match vars.iter().find(|(k, _)| *k == v) {
            Some((_, val)) => out.push_str(val),
            None => {
                out.push('{');
                out.push_str(v);
                out.push('}');
            }
        },
    });
    if r.is_err() {
        return text.to_string();
    }
    out
}

enum Piece<'a> {
    Text(&'a str),
    Var(&'a str),
}

fn walk<'a>(text: &'a str, mut f: impl FnMut(Piece<'a>)) -> Result<(), String> {
    let mut rest = text;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix("{{") {
            f(Piece::Text("{"));
            rest = r;
        } else if let Some(r) = rest.strip_prefix("}}") {
            f(Piece::Text("}"));
            rest = r;
        } else if let Some(r) = rest.strip_prefix('{') {
            let end = r
                .find('}')
                .ok_or_else(|| format!("unclosed '{{' in {text:?}"))?;
            let name = &r[..end];
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("bad template variable {{{name}}} in {text:?}"));
            }
            f(Piece::Var(name));
            rest = &r[end + 1..];
        } else if rest.starts_with('}') {
            return Err(format!("unmatched '}}' in {text:?}"));
        } else {
            let end = rest.find(['{', '}']).unwrap_or(rest.len());
            f(Piece::Text(&rest[..end]));
            rest = &rest[end..];
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_known_variables_and_keeps_literal_braces() {
        let s = render("{node}:{{x}}-{tier}", &[("node", "web-1"), ("tier", "app")]);
        assert_eq!(s, "web-1:{x}-app");
    }

    #[test]
    fn names_the_bad_variable() {
        let e = check("/opt/x {nodes}", &["node"]).unwrap_err();
        assert!(e.contains("{nodes}"), "{e}");
        assert!(check("{node", &["node"]).unwrap_err().contains("unclosed"));
        assert!(check("a}b", &["node"]).is_err());
        assert!(check("{node_addr}", &["node", "node_addr"]).is_ok());
    }

    #[test]
    fn a_value_is_one_argument_whatever_it_holds() {
        let s = render("{node}", &[("node", "a; rm -rf /")]);
        assert_eq!(s, "a; rm -rf /");
    }
}
