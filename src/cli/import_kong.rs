//! `signalbox config import-kong FILE [--secrets-out PATH]`: the native YAML on stdout,
//! warnings on stderr, credentials into a 0600 env file (or only their names on stderr).

use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow};

use crate::domain::Secret;
use crate::gateway::config::kong::{self, KongError, KongImport};
use crate::gateway::config::{GatewayConfig, parse_str};

/// Runs the import. Exit code 0 on success, 1 when the Kong file cannot be converted;
/// I/O failures (unreadable input, unwritable secrets file) are errors.
pub fn run_import(file: &Path, secrets_out: Option<&Path>) -> anyhow::Result<i32> {
    run_import_to(
        file,
        secrets_out,
        &mut io::stdout().lock(),
        &mut io::stderr().lock(),
    )
}

/// [`run_import`] with the output streams given.
pub fn run_import_to(
    file: &Path,
    secrets_out: Option<&Path>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<i32> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let mut imported = match kong::import(&text) {
        Ok(i) => i,
        Err(KongError::NothingToServe { warnings }) => {
            for w in &warnings {
                writeln!(err, "warning: {w}")?;
            }
            writeln!(
                err,
                "error: {}: {}",
                file.display(),
                KongError::NothingToServe {
                    warnings: Vec::new()
                }
            )?;
            return Ok(1);
        }
        Err(e) => {
            writeln!(err, "error: {}: {e}", file.display())?;
            return Ok(1);
        }
    };
    for w in &imported.warnings {
        writeln!(err, "warning: {w}")?;
    }
    if !imported.external_env.is_empty() {
        writeln!(
            err,
            "secrets: set these environment variables yourself (the Kong file refers to them \
             through its env vault, so it holds no values to import): {}",
            imported.external_env.join(" ")
        )?;
    }
    match secrets_out {
        Some(path) => {
            write_secrets(path, &imported.secrets)
                .with_context(|| format!("cannot write secrets to {}", path.display()))?;
            let dir = key_dir(path)?;
            place_public_keys(&mut imported, &dir)?;
            writeln!(
                err,
                "wrote {} secret(s) to {} (mode 0600); load them with: set -a; . {}; set +a",
                imported.secrets.len(),
                path.display(),
                dot_path(path)
            )?;
        }
        None => {
            if !imported.secrets.is_empty() {
                let names: Vec<&str> = imported.secrets.iter().map(|(n, _)| n.as_str()).collect();
                writeln!(
                    err,
                    "secrets: the config reads these environment variables (the values are in \
                     the Kong file; --secrets-out PATH writes them): {}",
                    names.join(" ")
                )?;
            }
            for k in &mut imported.public_keys {
                writeln!(
                    err,
                    "public key: the config reads {} (a consumer's rsa_public_key in the Kong \
                     file; --secrets-out PATH writes it next to PATH)",
                    k.path.display()
                )?;
            }
        }
    }
    let yaml = render(&imported.config, file)?;
    out.write_all(yaml.as_bytes())?;
    out.flush()?;
    Ok(0)
}

/// The native YAML, checked to load: a config the gateway would refuse is never printed.
pub fn render(config: &GatewayConfig, source: &Path) -> anyhow::Result<String> {
    let body = serde_saphyr::to_string(config).context("cannot serialize the config")?;
    parse_str(&body, "<imported>")
        .map_err(|e| anyhow!("internal error: the converted config does not load: {e}"))?;
    Ok(format!(
        "# Imported from Kong declarative config {} by `signalbox config import-kong`.\n\
         # Credentials are environment variable references; the warnings on stderr list\n\
         # everything that did not carry over exactly.\n{body}",
        source.display()
    ))
}

/// The path as `.` must be given it: sh and dash search PATH for a name without a slash,
/// so `s2.env` becomes `./s2.env`; quoted when the shell would split or expand it.
fn dot_path(path: &Path) -> String {
    let text = path.display().to_string();
    let text = if text.contains('/') {
        text
    } else {
        format!("./{text}")
    };
    let plain = |c: char| c.is_ascii_alphanumeric() || "._-/+,:@%".contains(c);
    if text.chars().all(plain) {
        text
    } else {
        shell_quote(&text)
    }
}

/// `'...'` with `'` written as `'\''`: one literal word for sh, bash and dash.
fn shell_quote(v: &str) -> String {
    format!("'{}'", v.replace('\'', r"'\''"))
}

/// Writes `NAME='value'` lines. The file is created with mode 0600 from the start (a
/// temporary file in the same directory, renamed into place), so the values are never
/// readable by others, not even for a moment, and an existing file is replaced whole.
pub fn write_secrets(path: &Path, secrets: &[(String, Secret)]) -> io::Result<()> {
    let mut body =
        String::from("# signalbox: credentials imported from Kong. Keep this file private.\n");
    for (name, value) in secrets {
        body.push_str(name);
        body.push('=');
        body.push_str(&shell_quote(value.expose()));
        body.push('\n');
    }
    write_atomic(path, body.as_bytes(), 0o600)
}

fn write_atomic(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".signalbox-import")
        .permissions(std::fs::Permissions::from_mode(mode))
        .tempfile_in(dir)?;
    tmp.write_all(data)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Public keys go next to the secrets file, by absolute path, so the config loads from
/// wherever it is saved.
fn key_dir(secrets_out: &Path) -> anyhow::Result<PathBuf> {
    let dir = match secrets_out.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    dir.canonicalize()
        .with_context(|| format!("cannot resolve {}", dir.display()))
}

fn place_public_keys(imported: &mut KongImport, dir: &Path) -> anyhow::Result<()> {
    for k in &mut imported.public_keys {
        let target = dir.join(&k.path);
        write_atomic(&target, k.pem.as_bytes(), 0o644)
            .with_context(|| format!("cannot write {}", target.display()))?;
        let jwts = imported
            .config
            .routes
            .iter_mut()
            .filter_map(|r| r.plugins.jwt.as_mut())
            .chain(imported.config.defaults.jwt.as_mut());
        for j in jwts {
            if j.public_key_file.as_deref() == Some(k.path.as_path()) {
                j.public_key_file = Some(target.clone());
            }
        }
        k.path.clone_from(&target);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_file_is_private_and_sources_in_sh() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kong.env");
        // A stale, world-readable file must be replaced, not reused with its mode.
        std::fs::write(&path, "OLD=1\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let tricky = "it's $HOME `x` \"q\" \\ ;";
        let secrets = vec![
            ("KONG_KEY_ALICE_1".to_string(), Secret::new("alice-key")),
            ("KONG_JWT_SECRET_BOB_1".to_string(), Secret::new(tricky)),
        ];
        write_secrets(&path, &secrets).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(lines[0], "KONG_KEY_ALICE_1='alice-key'");
        assert!(
            lines[1].starts_with("KONG_JWT_SECRET_BOB_1='"),
            "{}",
            lines[1]
        );
        assert!(!text.contains("OLD=1"));
        // The shell reads back exactly the values.
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                ". '{}'; printf '%s\\n%s' \"$KONG_KEY_ALICE_1\" \"$KONG_JWT_SECRET_BOB_1\"",
                path.display()
            ))
            .env_clear()
            .output()
            .unwrap();
        assert!(out.status.success());
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            format!("alice-key\n{tricky}")
        );
    }

    #[test]
    fn run_import_writes_config_secrets_and_keys() {
        let dir = tempfile::tempdir().unwrap();
        let kong = dir.path().join("kong.yaml");
        std::fs::write(
            &kong,
            r#"_format_version: "3.0"
consumers:
  - username: alice
    keyauth_credentials: [{ key: alice-secret-key }]
    jwt_secrets:
      - key: alice-iss
        algorithm: RS256
        rsa_public_key: "-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----"
services:
  - name: users
    url: http://127.0.0.1:9001
    routes: [{ name: users, paths: [/users] }]
    plugins: [{ name: jwt, config: { uri_param_names: [], claims_to_verify: [exp, nbf] } }]
"#,
        )
        .unwrap();
        let env = dir.path().join("out/kong.env");
        std::fs::create_dir(dir.path().join("out")).unwrap();
        let run = |secrets: Option<&Path>| {
            let (mut out, mut err) = (Vec::new(), Vec::new());
            let code = run_import_to(&kong, secrets, &mut out, &mut err).unwrap();
            (
                code,
                String::from_utf8(out).unwrap(),
                String::from_utf8(err).unwrap(),
            )
        };

        let (code, yaml, err) = run(Some(&env));
        assert_eq!(code, 0, "{err}");
        let text = std::fs::read_to_string(&env).unwrap();
        assert!(
            text.contains("KONG_KEY_ALICE_1='alice-secret-key'"),
            "{text}"
        );
        assert!(err.contains("wrote 1 secret(s)"), "{err}");
        let pem = dir
            .path()
            .join("out/kong-jwt-alice-1.pem")
            .canonicalize()
            .unwrap();
        assert!(
            std::fs::read_to_string(&pem)
                .unwrap()
                .starts_with("-----BEGIN PUBLIC KEY-----\nMIIB\n")
        );
        // The printed config refers to the written key by absolute path and loads.
        let config = parse_str(&yaml, "out.yaml").unwrap();
        let jwt = config.routes[0].plugins.jwt.as_ref().unwrap();
        assert_eq!(jwt.public_key_file.as_deref(), Some(pem.as_path()));
        assert_eq!(
            config.consumers[0].keys,
            [crate::gateway::config::SecretRef::Env(
                "KONG_KEY_ALICE_1".into()
            )]
        );

        // Without --secrets-out: names on stderr, values nowhere.
        let (code, yaml, err) = run(None);
        assert_eq!(code, 0);
        assert!(err.contains("KONG_KEY_ALICE_1"), "{err}");
        assert!(err.contains("kong-jwt-alice-1.pem"), "{err}");
        for s in [&yaml, &err] {
            assert!(!s.contains("alice-secret-key"), "a secret leaked: {s}");
        }

        std::fs::write(&kong, "_format_version: \"1.1\"\n").unwrap();
        let (code, yaml, err) = run(None);
        assert_eq!((code, yaml.as_str()), (1, ""));
        assert!(err.contains("_format_version: found \"1.1\""), "{err}");
        assert!(run_import(&dir.path().join("missing.yaml"), None).is_err());
    }

    #[test]
    fn the_load_hint_dots_a_bare_name_and_vault_variables_are_named() {
        assert_eq!(dot_path(Path::new("s2.env")), "./s2.env");
        assert_eq!(dot_path(Path::new("out/kong.env")), "out/kong.env");
        assert_eq!(dot_path(Path::new("/tmp/k.env")), "/tmp/k.env");
        assert_eq!(dot_path(Path::new("my kong.env")), "'./my kong.env'");

        let dir = tempfile::tempdir().unwrap();
        let kong = dir.path().join("kong.yaml");
        std::fs::write(
            &kong,
            r#"_format_version: "3.0"
consumers:
  - username: alice
    keyauth_credentials: [{ key: alice-secret-key }]
  - username: gold
    keyauth_credentials: [{ key: "{vault://env/gold-key}" }]
services:
  - name: users
    url: http://127.0.0.1:9001
    routes: [{ name: users, paths: [/users] }]
    plugins: [{ name: key-auth, config: { key_names: [X-API-Key] } }]
"#,
        )
        .unwrap();
        let run = |secrets: Option<&Path>| {
            let (mut out, mut err) = (Vec::new(), Vec::new());
            let code = run_import_to(&kong, secrets, &mut out, &mut err).unwrap();
            assert_eq!(code, 0);
            String::from_utf8(err).unwrap()
        };
        let file = dir.path().join("s2.env");
        let err = run(Some(&file));
        // The variable the Kong vault supplied is named: nobody else will set it.
        assert!(
            err.contains("set these environment variables yourself") && err.contains("GOLD_KEY"),
            "{err}"
        );
        assert!(run(None).contains("GOLD_KEY"));

        let hint = format!("set -a; . {}; set +a", dot_path(&file));
        assert!(err.contains(&hint), "{err}");
    }
}
