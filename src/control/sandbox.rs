//! The sandbox control API (fault injection), as `control` reaches it. Only a
//! `signalbox sandbox` has one; its environments file names it under `[sandbox]`.

use crate::domain::FaultSpec;
use crate::sandbox::services::Faults;

pub struct SandboxClient {
    base: String,
    http: reqwest::Client,
}

/// `payments-v2` → (`payments`, `v2`): sandbox upstreams are named `service-version`.
pub fn split_upstream(upstream: &str) -> Result<(&str, &str), String> {
    match upstream.rsplit_once('-') {
        Some((s, v)) if !s.is_empty() && !v.is_empty() => Ok((s, v)),
        _ => Err(format!(
            "{upstream:?} is not a sandbox upstream (they are named service-version, e.g. payments-v2)"
        )),
    }
}

pub fn to_faults(spec: &FaultSpec) -> Faults {
    Faults {
        error_rate: f64::from(spec.error_percent.min(100)) / 100.0,
        latency_ms: spec.latency_ms,
        not_ready: false,
        down: spec.down,
    }
}

pub fn from_faults(f: &Faults) -> FaultSpec {
    FaultSpec {
        error_percent: (f.error_rate * 100.0).round().clamp(0.0, 100.0) as u32,
        latency_ms: f.latency_ms,
        down: f.down,
    }
}

impl SandboxClient {
    pub fn new(control_url: &str) -> Self {
        Self {
            base: control_url.trim_end_matches('/').to_string(),
            http: super::backend::control_client(),
        }
    }

    pub fn address(&self) -> &str {
        &self.base
    }

    fn url(&self, env: &str, upstream: &str) -> Result<String, String> {
        let (service, version) = split_upstream(upstream)?;
        Ok(format!(
            "{}/sandbox/faults/{env}/{service}/{version}",
            self.base
        ))
    }

    async fn answer(&self, rb: reqwest::RequestBuilder) -> Result<FaultSpec, String> {
        let resp = rb
            .send()
            .await
            .map_err(|e| format!("cannot reach the sandbox at {}: {e}", self.base))?;
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .map_err(|e| format!("sandbox at {}: {e}", self.base))?;
        if !status.is_success() {
            let msg = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["error"]["message"].as_str().map(String::from))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
            return Err(format!("sandbox answered {status}: {msg}"));
        }
        let f: Faults = serde_json::from_slice(&body)
            .map_err(|e| format!("unreadable answer from the sandbox at {}: {e}", self.base))?;
        Ok(from_faults(&f))
    }

    pub async fn get(&self, env: &str, upstream: &str) -> Result<FaultSpec, String> {
        let url = self.url(env, upstream)?;
        self.answer(self.http.get(url)).await
    }

    pub async fn set(
        &self,
        env: &str,
        upstream: &str,
        spec: &FaultSpec,
    ) -> Result<FaultSpec, String> {
        let url = self.url(env, upstream)?;
        let rb = if spec.is_clear() {
            self.http.delete(url)
        } else {
            self.http.put(url).json(&to_faults(spec))
        };
        self.answer(rb).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_names_split_at_the_last_dash() {
        assert_eq!(split_upstream("payments-v2"), Ok(("payments", "v2")));
        assert_eq!(split_upstream("my-svc-blue"), Ok(("my-svc", "blue")));
        assert!(split_upstream("orders").is_err());
        assert!(split_upstream("-v1").is_err());
    }

    #[test]
    fn fault_specs_round_trip_through_the_sandbox_type() {
        let s = FaultSpec {
            error_percent: 35,
            latency_ms: 250,
            down: false,
        };
        assert_eq!(from_faults(&to_faults(&s)), s);
        assert!((to_faults(&s).error_rate - 0.35).abs() < 1e-9);
    }
}
