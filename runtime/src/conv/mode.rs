//! Which algorithm the CPU's 3x3x3 convolutions use: `LDM_CPU_CONV` (`winograd`, the default, or
//! `direct`), read once per process; `winograd::applies` then decides per convolution shape.

use std::sync::OnceLock;

use crate::error::RuntimeError;

/// The environment variable that chooses the convolution algorithm.
pub const CONV_ENV: &str = "LDM_CPU_CONV";

/// How 3x3x3 stride-1 convolutions run on the CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConvMode {
    /// Implicit GEMM for every convolution.
    Direct,
    /// Winograd F(2x2x2, 3x3x3) where `applies` says so, implicit GEMM elsewhere.
    Winograd,
}

impl ConvMode {
    pub const ALL: [ConvMode; 2] = [ConvMode::Direct, ConvMode::Winograd];

    /// The name `LDM_CPU_CONV` takes.
    pub fn name(self) -> &'static str {
        match self {
            ConvMode::Direct => "direct",
            ConvMode::Winograd => "winograd",
        }
    }

    pub fn parse(s: &str) -> Option<ConvMode> {
        ConvMode::ALL
            .into_iter()
            .find(|m| m.name() == s.trim().to_ascii_lowercase())
    }
}

impl std::fmt::Display for ConvMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

fn resolve(var: Option<&std::ffi::OsStr>) -> Result<ConvMode, String> {
    let Some(v) = var else {
        return Ok(ConvMode::Winograd);
    };
    let Some(s) = v.to_str() else {
        return Err(format!("{CONV_ENV} is not valid UTF-8"));
    };
    if s.trim().is_empty() {
        return Ok(ConvMode::Winograd);
    }
    ConvMode::parse(s).ok_or_else(|| {
        format!("{CONV_ENV}={s:?} names no convolution algorithm (direct or winograd)")
    })
}

static SELECTED: OnceLock<Result<ConvMode, String>> = OnceLock::new();

/// Reads `LDM_CPU_CONV` once (default `winograd`); an unknown value is an `InvalidOption` error.
pub fn init() -> Result<ConvMode, RuntimeError> {
    SELECTED
        .get_or_init(|| resolve(std::env::var_os(CONV_ENV).as_deref()))
        .clone()
        .map_err(RuntimeError::InvalidOption)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conv_mode_names_parse() {
        assert_eq!(resolve(None), Ok(ConvMode::Winograd));
        assert_eq!(resolve(Some("direct".as_ref())), Ok(ConvMode::Direct));
        assert_eq!(resolve(Some(" Winograd ".as_ref())), Ok(ConvMode::Winograd));
        let e = resolve(Some("fft".as_ref())).unwrap_err();
        assert!(e.contains(CONV_ENV) && e.contains("fft"), "{e}");
    }
}
