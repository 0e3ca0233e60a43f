//! Live error and latency: scrape a gateway's `/metrics`, or query Prometheus.
