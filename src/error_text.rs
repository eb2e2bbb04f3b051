//! The text of an error chain as the CLI prints it, each cause said once; `ldm_io::escape`
//! then makes it terminal-safe.

/// An error and its causes joined by ": ", leaving out a cause whose text the message before it
/// already quotes (an error type that both prints and chains its source would repeat it).
pub fn chain_text(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if parts.last().is_some_and(|p| p.contains(&text)) {
            continue;
        }
        parts.push(text);
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("field x is zero")]
    struct Inner;

    #[derive(Debug, thiserror::Error)]
    enum Outer {
        #[error("invalid model config: {0}")]
        Config(#[from] Inner),
    }

    #[test]
    fn a_cause_is_said_once() {
        let e = anyhow::Error::new(Outer::from(Inner)).context("cannot load model m.blob");
        assert_eq!(
            format!("{e:#}"),
            "cannot load model m.blob: invalid model config: field x is zero: field x is zero"
        );
        assert_eq!(
            chain_text(&e),
            "cannot load model m.blob: invalid model config: field x is zero"
        );
        let plain = anyhow::anyhow!("inner").context("outer");
        assert_eq!(chain_text(&plain), "outer: inner");
    }
}
