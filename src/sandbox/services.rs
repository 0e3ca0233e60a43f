//! Demo services: real HTTP servers that answer JSON naming their version, with a
//! realistic (log-normal) latency and faults that can be switched on while they run.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Faults a service version can be given.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Faults {
    /// Share of requests answered 500, 0.0 to 1.0.
    #[serde(default)]
    pub error_rate: f64,
    /// Added to every answer.
    #[serde(default)]
    pub latency_ms: u64,
    /// `/readyz` answers 503.
    #[serde(default)]
    pub not_ready: bool,
    /// The port refuses connections.
    #[serde(default)]
    pub down: bool,
}

impl Faults {
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.error_rate) || self.error_rate.is_nan() {
            return Err(format!(
                "error_rate must be between 0 and 1, not {}",
                self.error_rate
            ));
        }
        if self.latency_ms > 60_000 {
            return Err("latency_ms is capped at 60000".into());
        }
        Ok(())
    }
}

/// One version of one demo service.
pub struct DemoService {
    pub service: String,
    pub version: String,
    pub addr: SocketAddr,
    /// Median latency; the spread is log-normal around it.
    median_ms: f64,
    faults: Mutex<Faults>,
    /// Cancels the accept loop while the service is "down".
    accepting: Mutex<Option<CancellationToken>>,
}

impl DemoService {
    /// Binds now, so a taken port fails the sandbox at start-up.
    pub async fn bind(
        service: &str,
        version: &str,
        addr: SocketAddr,
        median_ms: f64,
    ) -> Result<(Arc<Self>, TcpListener), String> {
        let listener = TcpListener::bind(addr).await.map_err(|e| {
            format!(
                "port {} ({service} {version}) is not free: {e}",
                addr.port()
            )
        })?;
        let s = Arc::new(Self {
            service: service.into(),
            version: version.into(),
            addr,
            median_ms,
            faults: Mutex::default(),
            accepting: Mutex::new(None),
        });
        Ok((s, listener))
    }

    pub fn faults(&self) -> Faults {
        self.faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Applies faults; `down` closes or reopens the port.
    pub async fn set_faults(
        self: &Arc<Self>,
        f: Faults,
        shutdown: &CancellationToken,
    ) -> Result<(), String> {
        f.validate()?;
        let was_down = self.faults().down;
        *self.faults.lock().unwrap_or_else(|e| e.into_inner()) = f.clone();
        if f.down && !was_down {
            if let Some(t) = self
                .accepting
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
            {
                t.cancel();
            }
        } else if !f.down && was_down {
            let listener = TcpListener::bind(self.addr)
                .await
                .map_err(|e| format!("cannot reopen {}: {e}", self.addr))?;
            self.clone().serve(listener, shutdown.clone());
        }
        Ok(())
    }

    pub fn serve(self: Arc<Self>, listener: TcpListener, shutdown: CancellationToken) {
        let stop = shutdown.child_token();
        *self.accepting.lock().unwrap_or_else(|e| e.into_inner()) = Some(stop.clone());
        tokio::spawn(async move {
            loop {
                let stream = tokio::select! {
                    r = listener.accept() => match r { Ok((s, _)) => s, Err(_) => continue },
                    _ = stop.cancelled() => return,
                };
                let me = self.clone();
                let stop = stop.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let me = me.clone();
                        async move { Ok::<_, Infallible>(me.answer(req).await) }
                    });
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    let conn = builder.serve_connection(TokioIo::new(stream), svc);
                    tokio::select! {
                        _ = conn => {}
                        _ = stop.cancelled() => {}
                    }
                });
            }
        });
    }

    async fn answer(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let f = self.faults();
        let path = req.uri().path().to_string();
        match path.as_str() {
            "/healthz" => return json(StatusCode::OK, serde_json::json!({"status": "ok"})),
            "/readyz" if f.not_ready => {
                return json(
                    StatusCode::SERVICE_UNAVAILABLE,
                    serde_json::json!({"status": "not ready"}),
                );
            }
            "/readyz" => return json(StatusCode::OK, serde_json::json!({"status": "ready"})),
            _ => {}
        }
        let delay = sample_latency_ms(self.median_ms) + f.latency_ms as f64;
        tokio::time::sleep(Duration::from_micros((delay * 1000.0) as u64)).await;
        if f.error_rate > 0.0 && fastrand::f64() < f.error_rate {
            return json(
                StatusCode::INTERNAL_SERVER_ERROR,
                serde_json::json!({"error": "injected fault", "service": self.service, "version": self.version}),
            );
        }
        json(
            StatusCode::OK,
            serde_json::json!({
                "service": self.service,
                "version": self.version,
                "method": req.method().as_str(),
                "path": path,
                "consumer": req.headers().get("x-consumer").and_then(|v| v.to_str().ok()),
            }),
        )
    }
}

fn json(status: StatusCode, v: serde_json::Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

/// Log-normal around `median` with a long right tail (sigma 0.5), as real services are.
pub fn sample_latency_ms(median: f64) -> f64 {
    let (u1, u2) = (fastrand::f64().max(f64::MIN_POSITIVE), fastrand::f64());
    let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
    (median * (0.5 * z).exp()).min(median * 20.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_is_spread_around_its_median() {
        let mut v: Vec<f64> = (0..4000).map(|_| sample_latency_ms(20.0)).collect();
        v.sort_by(f64::total_cmp);
        let (p50, p95) = (v[2000], v[3800]);
        assert!((15.0..25.0).contains(&p50), "p50 {p50}");
        assert!(p95 > p50 * 1.8, "a tail: p95 {p95}");
    }

    #[test]
    fn fault_validation() {
        assert!(
            Faults {
                error_rate: 1.5,
                ..Default::default()
            }
            .validate()
            .is_err()
        );
        assert!(
            Faults {
                error_rate: 0.3,
                latency_ms: 200,
                ..Default::default()
            }
            .validate()
            .is_ok()
        );
    }
}
