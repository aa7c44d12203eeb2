//! Authorization settings of `fastrelay run` (`--auth-*`) and the
//! token-minting subcommand `fastrelay token` (see docs/auth.md).

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{bail, Context};
use relay::auth::{
    mint, AuthConfig, Authorizer, Claims, SigningKey, VerifyKey, DEFAULT_LEEWAY_SECS,
    DEFAULT_MAX_TOKEN_BYTES,
};

#[derive(clap::Args, Debug, Clone)]
pub struct AuthArgs {
    /// Key that verifies authorization tokens (JWTs), repeatable: an HMAC
    /// secret file (HS256/384/512, at least 32 bytes) or a PEM public key
    /// (EC: ES256/ES384, Ed25519: EdDSA, RSA: RS*/PS*). With any key, every
    /// publish and subscribe needs a valid token; with none, nothing is
    /// checked.
    #[arg(long, value_name = "FILE")]
    pub auth_key: Vec<PathBuf>,
    /// Longest authorization token accepted (bytes); longer ones are
    /// refused (MALFORMED_AUTH_TOKEN) unread.
    #[arg(long, default_value_t = DEFAULT_MAX_TOKEN_BYTES)]
    pub auth_max_token_bytes: usize,
    /// Clock skew tolerated on a token's exp and nbf (seconds).
    #[arg(long, default_value_t = DEFAULT_LEEWAY_SECS)]
    pub auth_leeway_secs: u64,
}

impl AuthArgs {
    /// The keys of --auth-key, read from their files.
    pub fn keys(&self) -> anyhow::Result<Vec<VerifyKey>> {
        self.auth_key
            .iter()
            .map(|path| {
                VerifyKey::from_bytes(&read(path)?)
                    .with_context(|| format!("--auth-key {}", path.display()))
            })
            .collect()
    }

    /// The relay's authorizer; `None` when no key is configured.
    pub fn authorizer(&self) -> anyhow::Result<Option<Arc<Authorizer>>> {
        if self.auth_key.is_empty() {
            return Ok(None);
        }
        let keys = self.keys()?;
        let config = AuthConfig {
            max_token_bytes: self.auth_max_token_bytes,
            leeway_secs: self.auth_leeway_secs,
        };
        let authorizer = Authorizer::new(keys, config).context("--auth-max-token-bytes")?;
        tracing::info!(
            keys = self.auth_key.len(),
            "authorization on: every publish and subscribe needs a token"
        );
        Ok(Some(Arc::new(authorizer)))
    }
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading key file {}", path.display()))
}

/// `fastrelay token`: prints a signed token.
#[derive(clap::Args, Debug)]
pub struct TokenArgs {
    /// Signing key: the HMAC secret file the relay verifies with (HS256),
    /// or a PKCS#8 PEM private key (EC P-256: ES256, Ed25519: EdDSA, RSA:
    /// RS256) whose public key the relay has.
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// Namespace prefix the holder may publish under, fields separated by
    /// `/` (`live/cam1`); repeatable; an empty value grants every namespace.
    #[arg(long = "pub", value_name = "PREFIX")]
    pub publish: Vec<String>,
    /// Namespace prefix the holder may subscribe under (as --pub).
    #[arg(long = "sub", value_name = "PREFIX")]
    pub subscribe: Vec<String>,
    /// Lifetime: seconds, or with a unit (`90s`, `10m`, `1h`, `7d`).
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub ttl: Duration,
    /// Valid only from this long after now (same form as --ttl).
    #[arg(long, value_parser = parse_duration)]
    pub not_before: Option<Duration>,
}

pub fn token(args: &TokenArgs) -> anyhow::Result<()> {
    let key = SigningKey::from_bytes(&read(&args.key)?)
        .with_context(|| format!("--key {}", args.key.display()))?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("the clock is before 1970")?
        .as_secs();
    let claims = Claims {
        publish: prefixes(&args.publish).context("--pub")?,
        subscribe: prefixes(&args.subscribe).context("--sub")?,
        exp: now + args.ttl.as_secs(),
        nbf: args.not_before.map(|d| now + d.as_secs()),
        iat: Some(now),
    };
    if claims.publish.is_empty() && claims.subscribe.is_empty() {
        bail!("the token would grant nothing: give --pub and/or --sub");
    }
    println!("{}", mint(&key, &claims)?);
    Ok(())
}

fn prefixes(args: &[String]) -> anyhow::Result<Vec<Vec<String>>> {
    args.iter()
        .map(|a| {
            if a.is_empty() {
                return Ok(Vec::new());
            }
            let fields: Vec<String> = a.split('/').map(str::to_string).collect();
            if fields.iter().any(String::is_empty) {
                bail!("{a:?}: an empty namespace field");
            }
            Ok(fields)
        })
        .collect()
}

fn parse_duration(s: &str) -> anyhow::Result<Duration> {
    let (number, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = number
        .parse()
        .with_context(|| format!("{s:?}: not a duration"))?;
    let scale = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => bail!("{s:?}: unit must be s, m, h or d"),
    };
    Ok(Duration::from_secs(n.saturating_mul(scale)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_prefixes_parse() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("2d").unwrap(), Duration::from_secs(172_800));
        assert!(parse_duration("1w").is_err());
        assert!(parse_duration("h").is_err());
        let p = prefixes(&["live/cam1".into(), String::new()]).unwrap();
        assert_eq!(p, vec![vec!["live".to_string(), "cam1".into()], vec![]]);
        assert!(prefixes(&["live//x".into()]).is_err());
    }
}
