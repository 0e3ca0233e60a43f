//! Reads secrets from where a config points: an environment variable or a file.

use crate::domain::Secret;

use super::config::SecretRef;

/// The secret a reference names. Errors name the variable or file, never a value.
pub fn resolve(r: &SecretRef) -> Result<Secret, String> {
    match r {
        SecretRef::Env(name) => match std::env::var(name) {
            Ok(v) if !v.is_empty() => Ok(Secret::new(v)),
            Ok(_) => Err(format!("environment variable {name} is empty")),
            Err(_) => Err(format!("environment variable {name} is not set")),
        },
        SecretRef::File(path) => match std::fs::read_to_string(path) {
            // Kubernetes-mounted secrets and `echo` both leave a trailing newline.
            Ok(v) if !v.trim_end_matches(['\n', '\r']).is_empty() => {
                Ok(Secret::new(v.trim_end_matches(['\n', '\r'])))
            }
            Ok(_) => Err(format!("secret file {} is empty", path.display())),
            Err(e) => Err(format!("cannot read secret file {}: {e}", path.display())),
        },
        // A config holding one never validates; refuse rather than guess.
        SecretRef::Inline => Err("a secret written inline is refused".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_secret_drops_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("key");
        std::fs::write(&p, "abc123\n").unwrap();
        assert_eq!(resolve(&SecretRef::File(p)).unwrap().expose(), "abc123");
    }

    #[test]
    fn missing_env_names_the_variable() {
        let e = resolve(&SecretRef::Env("SIGNALBOX_TEST_SURELY_UNSET".into())).unwrap_err();
        assert!(e.contains("SIGNALBOX_TEST_SURELY_UNSET"));
    }
}
