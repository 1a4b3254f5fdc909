//! Small utilities every cryptomem package may use and none owns: durable
//! atomic file writes with private modes ([`files`]), the time source
//! ([`clock`]), human units for flags
//! and config files ([`units`]), and [`error_text`] for the binaries' edges.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod clock;
pub mod files;
pub mod units;

/// An error and its causes for a person to read, each cause once: our error
/// messages already include their cause's text, which printing the whole
/// chain (anyhow's `{:#}`) would repeat.
pub fn error_text(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = String::new();
    let mut next = Some(error);
    while let Some(cause) = next {
        let line = cause.to_string();
        if !text.contains(&line) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&line);
        }
        next = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    #[derive(Debug, thiserror::Error)]
    #[error("cannot recover the data dir: {0}")]
    struct Top(#[source] Inner);

    #[derive(Debug, thiserror::Error)]
    #[error("/data/log-5.cml: {source}")]
    struct Inner {
        source: std::io::Error,
    }

    #[test]
    fn error_text_prints_each_cause_once() {
        let top = Top(Inner { source: std::io::Error::other("No space left on device") });
        assert_eq!(super::error_text(&top), "cannot recover the data dir: /data/log-5.cml: No space left on device");
    }
}
