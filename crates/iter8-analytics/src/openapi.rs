//! The OpenAPI 3.1 description of the service, generated from the wire types so it cannot lag
//! behind them; checked in at `api/openapi.json`.

use iter8_api::{AssessmentRequest, AssessmentResponse, ErrorResponse};
use schemars::generate::SchemaSettings;
use serde_json::{Value, json};

/// Where the checked-in copy lives, relative to the workspace root.
pub const CHECKED_IN_PATH: &str = "api/openapi.json";

/// The request shown in the document, which API fuzzers (schemathesis) also replay: without a
/// valid example, generated bodies almost never satisfy the cross-field rules and the 200
/// answer would go unchecked.
const EXAMPLE_REQUEST: &str = include_str!("../../../docs/examples/assessment-request.json");

/// The OpenAPI document served at `GET /openapi.json`.
pub fn document() -> Value {
    let mut generator = SchemaSettings::draft2020_12()
        .with(|s| {
            // OpenAPI 3.1 speaks JSON Schema 2020-12 but keeps reusable schemas here.
            s.definitions_path = "/components/schemas".into();
            s.meta_schema = None;
        })
        .into_generator();
    let request = generator.subschema_for::<AssessmentRequest>();
    let response = generator.subschema_for::<AssessmentResponse>();
    let error = generator.subschema_for::<ErrorResponse>();
    let schemas = generator.take_definitions(true);

    let error_body = |description: &str| {
        json!({
            "description": description,
            "content": {"application/json": {"schema": error}}
        })
    };
    let retry_after = json!({
        "description": "Seconds to wait before retrying.",
        "schema": {"type": "integer", "minimum": 0}
    });
    let text = |description: &str, content_type: &str| {
        json!({
            "description": description,
            "content": {content_type: {"schema": {"type": "string"}}}
        })
    };

    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "iter8 analytics",
            "version": env!("CARGO_PKG_VERSION"),
            "summary": "Bayesian assessment of versions for progressive delivery.",
            "description": "The stateless analytics service of iter8. Each request carries the \
                cumulative observations of every version since the start of an experiment; the \
                answer holds per-version estimates, the probability of meeting each criterion, \
                the winner, the decision and the next traffic split. The same request always \
                gets the same answer. Every error body, 4xx or 5xx, is an ErrorResponse naming \
                the field at fault: 404 and 405 too.",
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"}
        },
        "servers": [
            {"url": "http://127.0.0.1:8080", "description": "A local server on the default port."}
        ],
        "paths": {
            "/v1/assessments": {
                "post": {
                    "operationId": "assess",
                    "summary": "Assess one iteration of an experiment.",
                    // No credentials unless the service was started with --token-file.
                    "security": [{}, {"bearerToken": []}],
                    "requestBody": {
                        "required": true,
                        "content": {"application/json": {
                            "schema": request,
                            "examples": {"canary": {
                                "summary": "A canary at its third iteration.",
                                "value": example_request()
                            }}
                        }}
                    },
                    "responses": {
                        "200": {
                            "description": "The assessment, decision and next split.",
                            "content": {"application/json": {"schema": response}}
                        },
                        "400": error_body("The body is not well-formed JSON."),
                        "401": {
                            "description": "The service requires a bearer token (--token-file) \
                                and none or a wrong one was sent, or it requires a TLS client \
                                certificate and the connection has none.",
                            "headers": {"WWW-Authenticate": {
                                "description": "`Bearer`, or `Bearer error=\"invalid_token\"`.",
                                "schema": {"type": "string"}
                            }},
                            "content": {"application/json": {"schema": error}}
                        },
                        "413": error_body("The body is larger than the configured limit."),
                        "415": error_body("The body is not declared as application/json."),
                        "422": error_body(
                            "The body is JSON but not a valid assessment request; \
                             `error.field` names the offending field."
                        ),
                        "500": error_body("A bug; the details are in the service's log."),
                        "503": {
                            "description": "Too many assessments in flight, the request timed \
                                out, or the service is shutting down.",
                            "headers": {"Retry-After": retry_after},
                            "content": {"application/json": {"schema": error}}
                        }
                    }
                }
            },
            "/healthz": {
                "get": {
                    "operationId": "healthz",
                    "summary": "Liveness: the process serves HTTP.",
                    "responses": {"200": text("Alive.", "text/plain")}
                }
            },
            "/readyz": {
                "get": {
                    "operationId": "readyz",
                    "summary": "Readiness: the service takes new assessments.",
                    "responses": {
                        "200": text("Ready.", "text/plain"),
                        "503": error_body("Shutting down; send no more traffic.")
                    }
                }
            },
            "/metrics": {
                "get": {
                    "operationId": "metrics",
                    "summary": "The service's own metrics, in the Prometheus text format.",
                    "responses": {
                        "200": text("The metrics.", "text/plain; version=0.0.4")
                    }
                }
            },
            "/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "summary": "This document.",
                    "responses": {
                        "200": {
                            "description": "The OpenAPI 3.1 document.",
                            "content": {"application/json": {"schema": {"type": "object"}}}
                        }
                    }
                }
            }
        },
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearerToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The token in the service's --token-file (see docs/security.md)."
                }
            }
        }
    })
}

/// The example request; a test checks that it parses and is assessed.
fn example_request() -> Value {
    serde_json::from_str(EXAMPLE_REQUEST).unwrap_or_default()
}

/// The document as checked in: pretty JSON with a trailing newline.
pub fn pretty() -> String {
    // Serializing a `Value` cannot fail: its map keys are strings.
    let mut text = serde_json::to_string_pretty(&document()).unwrap_or_default();
    text.push('\n');
    text
}
