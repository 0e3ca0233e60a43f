//! The one shape of every error the gateway answers itself:
//! `{"error": {"status": 404, "code": "route_not_found", "message": "...", "request_id": "..."}}`.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;

pub fn json_error(
    status: StatusCode,
    code: &str,
    message: &str,
    request_id: &str,
) -> Response<Full<Bytes>> {
    let body = serde_json::json!({
        "error": {
            "status": status.as_u16(),
            "code": code,
            "message": message,
            "request_id": request_id,
        }
    });
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn stable_shape() {
        let r = json_error(
            StatusCode::NOT_FOUND,
            "route_not_found",
            "no route",
            "rid-1",
        );
        assert_eq!(r.status(), 404);
        assert_eq!(r.headers()["content-type"], "application/json");
        let b = r.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["error"]["code"], "route_not_found");
        assert_eq!(v["error"]["status"], 404);
        assert_eq!(v["error"]["request_id"], "rid-1");
    }
}
