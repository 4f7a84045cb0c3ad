//! Text written into Markdown (post-mortem notes, the morning market, the
//! notices that carry them) as the words that were typed. What a
//! participant, a report or a peer wrote is hostile: it must not turn into
//! a link, an image, HTML or a heading in a reader's client.

/// Text for Markdown, read as the words that were typed: no HTML, no
/// link or image (a URL stays plain text), no emphasis or code, and no
/// line that starts a heading, a list, a quote, a rule or a link
/// definition. Only what could be read as markup is escaped, so that a
/// resource title such as `Exec[fetch-code]` or a path such as
/// `/etc/my_app` reads the same in a client that shows the Markdown raw.
pub fn text(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + s.len() / 8);
    for (i, line) in s.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let body = line.trim_start_matches([' ', '\t']);
        out.push_str(&line[..line.len() - body.len()]);
        let chars: Vec<char> = body.chars().collect();
        let digits = chars.iter().take_while(|c| c.is_ascii_digit()).count();
        for (at, &c) in chars.iter().enumerate() {
            let prev = at.checked_sub(1).map(|p| chars[p]);
            let next = chars.get(at + 1).copied();
            let word = |c: Option<char>| c.is_some_and(char::is_alphanumeric);
            let escape = match c {
                // Marks that count only where a line starts.
                '#' | '-' | '+' | '=' | '>' | '[' if at == 0 => true,
                '.' | ')' => digits > 0 && at == digits,
                // A link, an image or a reference needs `](`, `][` or `![`
                // (a definition, `[x]: url`, a `[` where the line starts);
                // a lone bracket is a word.
                ']' => matches!(next, Some('(' | '[')),
                '!' => next == Some('['),
                // Emphasis by `_` needs a word boundary on one side.
                '_' => !(word(prev) && word(next)),
                // An entity or a character reference.
                '&' => next.is_some_and(|n| n.is_alphanumeric() || n == '#'),
                '\\' | '`' | '*' | '<' | '|' | '~' => true,
                _ => false,
            };
            if escape {
                out.push('\\');
            }
            out.push(c);
        }
    }
    out
}

/// Text for a Markdown table cell: one line (`|` is escaped by [`text`]).
pub fn cell(s: &str) -> String {
    text(&s.replace(['\n', '\r'], " "))
}

/// Text under a list item: continuation lines indented.
pub fn item(s: &str) -> String {
    text(&s.replace("\r\n", "\n")).replace('\n', "\n  ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_characters_are_escaped_for_markdown_not_html() {
        let got = text("*_[]()<>& ams-1 -> nyc-1");
        assert_eq!(got, "\\*\\_[\\]()\\<>& ams-1 -> nyc-1");
        for entity in ["&lt;", "&gt;", "&amp;"] {
            assert!(!got.contains(entity), "{got}");
        }
    }

    #[test]
    fn links_images_and_html_stay_plain_text() {
        assert_eq!(
            text("[x](javascript:alert(1))"),
            "\\[x\\](javascript:alert(1))"
        );
        assert_eq!(text("see [x][1] or [y]: z"), "see [x\\][1] or [y]: z");
        assert_eq!(
            text("![](https://tracker.example/p.png)"),
            "\\![\\](https://tracker.example/p.png)"
        );
        assert_eq!(
            text("<img src=x> &amp; &#60; R&D & co"),
            "\\<img src=x> \\&amp; \\&#60; R\\&D & co"
        );
        assert_eq!(
            text("*bold* _it_ `code` ~x~ a|b"),
            "\\*bold\\* \\_it\\_ \\`code\\` \\~x\\~ a\\|b"
        );
        assert_eq!(text("a \\ b"), "a \\\\ b");
        // What is not markup reads as typed.
        assert_eq!(
            text("Exec[fetch-code] failed in /etc/my_app (v2.3.1)!"),
            "Exec[fetch-code] failed in /etc/my_app (v2.3.1)!"
        );
    }

    #[test]
    fn a_line_cannot_start_a_heading_a_list_a_quote_or_a_definition() {
        assert_eq!(
            text("fine\n# Forged heading\n  - item\n+ x\n===\n12. twelve\n3) three\n> quote\n[a]: http://x"),
            "fine\n\\# Forged heading\n  \\- item\n\\+ x\n\\===\n12\\. twelve\n3\\) three\n\\> quote\n\\[a]: http://x"
        );
        // Inside a line the same characters are words.
        assert_eq!(
            text("v2.3.1 - a #tag + 1 = 2 > 1"),
            "v2.3.1 - a #tag + 1 = 2 > 1"
        );
        assert_eq!(item("one\n# two"), "one\n  \\# two");
        assert_eq!(cell("a\n# b | c"), "a # b \\| c");
    }
}
