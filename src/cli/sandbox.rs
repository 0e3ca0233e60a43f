//! `signalbox sandbox [--no-tui] [--port-base N] [--rps N] [--state-dir DIR] [--keep-state]`
//! and `signalbox sandbox fault ...` against a running sandbox.

use std::io::Write;
use std::path::PathBuf;

use tokio::signal::unix::{SignalKind, signal};

use crate::control::envfile;
use crate::sandbox::services::Faults;
use crate::sandbox::{DEFAULT_PORT_BASE, DEFAULT_RPS, RunningSandbox, SandboxOptions};

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct SandboxArgs {
    #[command(subcommand)]
    pub command: Option<SandboxCommand>,
    /// Print `READY {json}` with every endpoint and run until SIGINT/SIGTERM.
    #[arg(long)]
    pub no_tui: bool,
    /// First port of the fixed layout (see the README); each environment takes 100.
    #[arg(long, default_value_t = DEFAULT_PORT_BASE)]
    pub port_base: u16,
    /// Requests per second of generated traffic, per environment.
    #[arg(long, default_value_t = DEFAULT_RPS)]
    pub rps: u32,
    /// Keep configs, revisions, keys and the audit journal here (default: a fresh temp dir).
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Do not delete the temporary state dir on exit.
    #[arg(long)]
    pub keep_state: bool,
    /// Also start a real Prometheus (if installed) and read the panels through PromQL.
    #[arg(long)]
    pub prometheus: bool,
}

#[derive(Debug, clap::Subcommand)]
pub enum SandboxCommand {
    /// Inject (or clear) a fault in one service version of a running sandbox.
    Fault(FaultArgs),
}

#[derive(Debug, clap::Args)]
pub struct FaultArgs {
    /// The sandbox's environments file (as printed at start); default ./signalbox.toml.
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[arg(long)]
    pub env: String,
    /// users, payments, search or orders.
    #[arg(long)]
    pub service: String,
    /// blue/green for users, v1/v2 for the others.
    #[arg(long)]
    pub version: String,
    /// Share of requests answered 500: a fraction (0.3) or a percentage (30%), as the
    /// cockpit's `fault UPSTREAM 5xx 30` takes it.
    #[arg(long, default_value = "0", value_parser = parse_rate)]
    pub error_rate: f64,
    /// Added latency, e.g. 300ms.
    #[arg(long, value_parser = crate::gateway::config::units::parse_duration)]
    pub latency: Option<std::time::Duration>,
    #[arg(long)]
    pub not_ready: bool,
    #[arg(long)]
    pub down: bool,
    /// Remove every fault from this service version.
    #[arg(long)]
    pub clear: bool,
}

pub async fn run(args: SandboxArgs) -> anyhow::Result<i32> {
    if let Some(SandboxCommand::Fault(f)) = args.command {
        return fault(f).await;
    }
    let (state_dir, temp) = match &args.state_dir {
        Some(d) => (d.clone(), None),
        None => {
            let t = tempfile::Builder::new()
                .prefix("signalbox-sandbox-")
                .tempdir()?;
            (t.path().to_path_buf(), Some(t))
        }
    };
    std::fs::create_dir_all(&state_dir)?;
    // Logs go to a file: the terminal belongs to the READY line (or the cockpit).
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(state_dir.join("sandbox.log"))?;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(std::sync::Mutex::new(log))
        .try_init();

    let started = std::time::Instant::now();
    let sandbox = match RunningSandbox::start(SandboxOptions {
        port_base: args.port_base,
        rps: args.rps,
        state_dir: state_dir.clone(),
        prometheus: args.prometheus,
    })
    .await
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("signalbox sandbox: {e}");
            return Ok(1);
        }
    };
    tracing::info!(elapsed = ?started.elapsed(), "sandbox ready");
    if args.no_tui {
        let mut out = std::io::stdout().lock();
        writeln!(out, "READY {}", serde_json::to_string(&sandbox.endpoints)?)?;
        out.flush()?;
        drop(out);
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    } else {
        // The cockpit on the sandbox's own environments; quitting it stops the sandbox.
        let config = std::path::Path::new(&sandbox.endpoints.config);
        let cfg = envfile::load(config).map_err(|e| anyhow::anyhow!(e))?;
        // The cockpit covers the screen, so other terminals find the sandbox by this link.
        let link = envfile::SandboxLink::create(config)
            .inspect_err(|e| tracing::warn!(error = %e, "cannot link the environments file for other terminals"))
            .ok();
        let opts = crate::tui::TuiOptions {
            env: None,
            read_only: false,
            theme: None,
            walk: None,
        };
        if let Err(e) = crate::tui::run(cfg, opts).await {
            eprintln!("signalbox: {e:#}");
        }
        drop(link);
        let kept = temp.is_none() || args.keep_state;
        let mut out = std::io::stdout().lock();
        print_goodbye(&mut out, &sandbox, kept)?;
    }
    sandbox.shutdown().await;
    match temp {
        Some(t) if args.keep_state => {
            let kept = t.keep();
            eprintln!("state kept in {}", kept.display());
        }
        Some(t) => drop(t),
        None => {}
    }
    Ok(0)
}

fn print_goodbye(out: &mut impl Write, s: &RunningSandbox, kept: bool) -> std::io::Result<()> {
    let e = &s.endpoints;
    writeln!(
        out,
        "signalbox sandbox: three environments with live traffic\n"
    )?;
    writeln!(out, "{:<6} {:<24} {:<24}", "ENV", "GATEWAY", "ADMIN API")?;
    // In the order of their ports (dev, stage, prod), not by name.
    let mut envs: Vec<_> = e.envs.iter().collect();
    envs.sort_by_key(|(_, env)| {
        env.gateway
            .rsplit(':')
            .next()
            .and_then(|p| p.parse::<u16>().ok())
    });
    for (name, env) in envs {
        writeln!(out, "{:<6} {:<24} {:<24}", name, env.gateway, env.admin)?;
    }
    if kept {
        writeln!(out, "\nenvironments file: {}", e.config)?;
    } else {
        writeln!(
            out,
            "\nenvironments file: removed with the sandbox's temporary state (keep it with --state-dir DIR or --keep-state)"
        )?;
    }
    writeln!(
        out,
        "\nNext time, from another terminal while it runs (no --config needed: they find the\nrunning sandbox, unless ./signalbox.toml exists):"
    )?;
    writeln!(out, "  signalbox ctl --env stage status")?;
    writeln!(out, "  signalbox ctl --env dev flip users")?;
    writeln!(
        out,
        "  signalbox sandbox fault --env dev --service payments --version v2 --error-rate 0.3"
    )?;
    writeln!(
        out,
        "  curl -s {}/api/users/1",
        e.envs.get("dev").map(|d| d.gateway.as_str()).unwrap_or("")
    )?;
    writeln!(
        out,
        "\nRun `signalbox sandbox --no-tui` to keep it running without the cockpit."
    )
}

/// `0.3` or `30%`, from 0 to 1 (100%).
fn parse_rate(s: &str) -> Result<f64, String> {
    let (number, scale) = match s.trim().strip_suffix('%') {
        Some(p) => (p.trim(), 100.0),
        None => (s.trim(), 1.0),
    };
    let rate = number
        .parse::<f64>()
        .map_err(|_| format!("{s:?} is not a rate: write 0.3 or 30%"))?
        / scale;
    if (0.0..=1.0).contains(&rate) {
        Ok(rate)
    } else {
        Err(format!("{s:?} is out of range: 0 to 1, or 0% to 100%"))
    }
}

async fn fault(a: FaultArgs) -> anyhow::Result<i32> {
    let path = envfile::find(a.config.as_deref()).ok_or_else(|| {
        anyhow::anyhow!(
            "no environments file: pass --config with the path `signalbox sandbox --no-tui` printed, or start `signalbox sandbox` (its cockpit is found without --config)"
        )
    })?;
    let cfg = envfile::load(&path).map_err(|e| anyhow::anyhow!(e))?;
    let Some(sb) = cfg.sandbox else {
        anyhow::bail!(
            "{} does not describe a sandbox (no [sandbox] section)",
            path.display()
        );
    };
    let url = format!(
        "{}/sandbox/faults/{}/{}/{}",
        sb.control_url.trim_end_matches('/'),
        a.env,
        a.service,
        a.version
    );
    let c = reqwest::Client::builder()
        .no_proxy()
        .timeout(std::time::Duration::from_secs(5))
        .build()?;
    let req = if a.clear {
        c.delete(&url)
    } else {
        let f = Faults {
            error_rate: a.error_rate,
            latency_ms: a.latency.map_or(0, |d| d.as_millis() as u64),
            not_ready: a.not_ready,
            down: a.down,
        };
        c.put(&url).json(&f)
    };
    let resp = req
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach the sandbox at {}: {e}", sb.control_url))?;
    let status = resp.status();
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    if status.is_success() {
        println!("{} {} {}: {}", a.env, a.service, a.version, body);
        Ok(0)
    } else {
        eprintln!(
            "signalbox sandbox fault: {}",
            body["error"]["message"].as_str().unwrap_or("failed")
        );
        Ok(1)
    }
}

#[cfg(test)]
mod tests {
    use super::parse_rate;

    #[test]
    fn an_error_rate_is_a_fraction_or_a_percentage() {
        assert_eq!(parse_rate("0.3"), Ok(0.3));
        assert_eq!(parse_rate("30%"), Ok(0.3));
        assert_eq!(parse_rate("100%"), Ok(1.0));
        assert_eq!(parse_rate("0"), Ok(0.0));
        assert!(parse_rate("50").unwrap_err().contains("out of range"));
        assert!(parse_rate("-1%").unwrap_err().contains("out of range"));
        assert!(parse_rate("lots").unwrap_err().contains("write 0.3 or 30%"));
    }
}
