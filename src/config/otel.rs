//! The `OTEL_*` settings of span export, as the OpenTelemetry specification
//! names them: off unless an OTLP endpoint is set.
//!
//! OTLP over HTTP is spoken (`http/protobuf` or `http/json`), to an
//! `http://` endpoint (a collector next to the service) or an `https://`
//! one, checked against the system's CAs or `OTEL_EXPORTER_OTLP_CERTIFICATE`,
//! with a client certificate if one is given.

use std::path::PathBuf;
use std::time::Duration;

use axum::http::Uri;
use clap::builder::BoolishValueParser;
use clap::{Args, ValueEnum};
use secrecy::{ExposeSecret, SecretString};

use crate::config::error::{ConfigError, both_or_neither};
use crate::config::parse::secret;

/// The default `service.name`.
const SERVICE_NAME: &str = "highload";

/// What the environment says about tracing. Its doc comments are `--help`.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Tracing (OpenTelemetry)")]
pub(super) struct TracingArgs {
    /// Base URL of an OTLP/HTTP receiver; spans go to <URL>/v1/traces. Unset (with OTEL_EXPORTER_OTLP_TRACES_ENDPOINT): no spans are exported
    #[arg(
        long,
        env = "OTEL_EXPORTER_OTLP_ENDPOINT",
        value_name = "OTEL_EXPORTER_OTLP_ENDPOINT"
    )]
    otel_exporter_otlp_endpoint: Option<String>,

    /// URL that receives the spans, used as it is (overrides OTEL_EXPORTER_OTLP_ENDPOINT)
    #[arg(
        long,
        env = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        value_name = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    )]
    otel_exporter_otlp_traces_endpoint: Option<String>,

    /// How spans are encoded
    #[arg(long, env = "OTEL_EXPORTER_OTLP_PROTOCOL", value_name = "OTEL_EXPORTER_OTLP_PROTOCOL", value_enum, default_value_t = Protocol::HttpProtobuf)]
    otel_exporter_otlp_protocol: Protocol,

    /// How spans are encoded (overrides OTEL_EXPORTER_OTLP_PROTOCOL)
    #[arg(
        long,
        env = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        value_name = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        value_enum
    )]
    otel_exporter_otlp_traces_protocol: Option<Protocol>,

    /// Headers of each export request, as key=value pairs separated by commas, values URL-encoded (such as an API key)
    #[arg(long, env = "OTEL_EXPORTER_OTLP_HEADERS", value_name = "OTEL_EXPORTER_OTLP_HEADERS", hide_env_values = true, value_parser = secret)]
    otel_exporter_otlp_headers: Option<SecretString>,

    /// Headers of each export request (added to OTEL_EXPORTER_OTLP_HEADERS, replacing those of the same name)
    #[arg(long, env = "OTEL_EXPORTER_OTLP_TRACES_HEADERS", value_name = "OTEL_EXPORTER_OTLP_TRACES_HEADERS", hide_env_values = true, value_parser = secret)]
    otel_exporter_otlp_traces_headers: Option<SecretString>,

    /// PEM file of the CA certificates an https:// endpoint is checked against, instead of the system's
    #[arg(
        long,
        env = "OTEL_EXPORTER_OTLP_CERTIFICATE",
        value_name = "OTEL_EXPORTER_OTLP_CERTIFICATE"
    )]
    otel_exporter_otlp_certificate: Option<PathBuf>,

    /// PEM file of CA certificates (overrides OTEL_EXPORTER_OTLP_CERTIFICATE)
    #[arg(
        long,
        env = "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
        value_name = "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE"
    )]
    otel_exporter_otlp_traces_certificate: Option<PathBuf>,

    /// PEM file of the client certificate shown to an https:// endpoint (with OTEL_EXPORTER_OTLP_CLIENT_KEY)
    #[arg(
        long,
        env = "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
        value_name = "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE"
    )]
    otel_exporter_otlp_client_certificate: Option<PathBuf>,

    /// PEM file of the client certificate's private key
    #[arg(
        long,
        env = "OTEL_EXPORTER_OTLP_CLIENT_KEY",
        value_name = "OTEL_EXPORTER_OTLP_CLIENT_KEY"
    )]
    otel_exporter_otlp_client_key: Option<PathBuf>,

    /// Time limit of one export request, in milliseconds
    #[arg(long, env = "OTEL_EXPORTER_OTLP_TIMEOUT", value_name = "OTEL_EXPORTER_OTLP_TIMEOUT", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    otel_exporter_otlp_timeout: u64,

    /// Time limit of one export request, in milliseconds (overrides OTEL_EXPORTER_OTLP_TIMEOUT)
    #[arg(long, env = "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", value_name = "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
          value_parser = clap::value_parser!(u64).range(1..))]
    otel_exporter_otlp_traces_timeout: Option<u64>,

    /// `service.name` of the exported spans [default: service.name of OTEL_RESOURCE_ATTRIBUTES, else highload]
    #[arg(long, env = "OTEL_SERVICE_NAME", value_name = "OTEL_SERVICE_NAME")]
    otel_service_name: Option<String>,

    /// More attributes of the exported spans' resource, as key=value pairs separated by commas, values URL-encoded
    #[arg(
        long,
        env = "OTEL_RESOURCE_ATTRIBUTES",
        value_name = "OTEL_RESOURCE_ATTRIBUTES"
    )]
    otel_resource_attributes: Option<String>,

    /// Which traces are recorded; parentbased_*: as the caller decided when it sent a traceparent
    #[arg(long, env = "OTEL_TRACES_SAMPLER", value_name = "OTEL_TRACES_SAMPLER", value_enum, default_value_t = SamplerName::ParentbasedAlwaysOn)]
    otel_traces_sampler: SamplerName,

    /// The share of traces recorded by the traceidratio samplers, 0 to 1 [default: 1]
    #[arg(
        long,
        env = "OTEL_TRACES_SAMPLER_ARG",
        value_name = "OTEL_TRACES_SAMPLER_ARG"
    )]
    otel_traces_sampler_arg: Option<String>,

    /// `otlp` exports spans (when an endpoint is set); `none` exports none
    #[arg(long, env = "OTEL_TRACES_EXPORTER", value_name = "OTEL_TRACES_EXPORTER", value_enum, default_value_t = ExporterName::Otlp)]
    otel_traces_exporter: ExporterName,

    /// Turns span export off, whatever else is set
    #[arg(long, env = "OTEL_SDK_DISABLED", value_name = "OTEL_SDK_DISABLED", default_value_t = false,
          value_parser = BoolishValueParser::new(), action = clap::ArgAction::Set)]
    otel_sdk_disabled: bool,
}

/// OTLP encodings over HTTP (gRPC is not spoken).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Protocol {
    /// Protocol buffers
    #[value(name = "http/protobuf")]
    HttpProtobuf,
    /// JSON
    #[value(name = "http/json")]
    HttpJson,
}

/// The samplers of the specification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum SamplerName {
    #[value(name = "always_on")]
    AlwaysOn,
    #[value(name = "always_off")]
    AlwaysOff,
    #[value(name = "traceidratio")]
    TraceIdRatio,
    #[value(name = "parentbased_always_on")]
    ParentbasedAlwaysOn,
    #[value(name = "parentbased_always_off")]
    ParentbasedAlwaysOff,
    #[value(name = "parentbased_traceidratio")]
    ParentbasedTraceIdRatio,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ExporterName {
    Otlp,
    None,
}

/// Span export, resolved.
#[derive(Debug, Clone, Default)]
pub struct TracingConfig {
    /// `None`: spans are not exported (incoming trace contexts are still
    /// passed on and logged).
    pub export: Option<OtlpExport>,
}

/// Where and how spans are exported.
#[derive(Debug, Clone)]
pub struct OtlpExport {
    /// The full URL spans are posted to (`…/v1/traces`).
    pub endpoint: Uri,
    pub protocol: Protocol,
    /// Request headers; values may hold credentials.
    pub headers: Vec<(String, SecretString)>,
    /// The CAs an `https://` endpoint is checked against (PEM, read from
    /// their file); `None`: the system's.
    pub ca_certificates: Option<Vec<u8>>,
    /// The client certificate shown to an `https://` endpoint, and its
    /// key (PEM, read from their files).
    pub client_identity: Option<SecretString>,
    pub timeout: Duration,
    pub service_name: String,
    /// The resource's other attributes.
    pub resource_attributes: Vec<(String, String)>,
    pub sampler: Sampler,
}

/// Which traces are recorded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sampler {
    AlwaysOn,
    AlwaysOff,
    TraceIdRatio(f64),
    /// As the parent span decided; a root span as the inner sampler does.
    ParentBased(RootSampler),
}

/// How a parent-based sampler decides for a new trace.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RootSampler {
    AlwaysOn,
    AlwaysOff,
    TraceIdRatio(f64),
}

impl TracingArgs {
    pub(super) fn resolve(self) -> Result<TracingConfig, ConfigError> {
        let endpoint = match (
            &self.otel_exporter_otlp_traces_endpoint,
            &self.otel_exporter_otlp_endpoint,
        ) {
            (Some(url), _) => Some(endpoint("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", url, "")?),
            (None, Some(base)) => Some(endpoint("OTEL_EXPORTER_OTLP_ENDPOINT", base, "v1/traces")?),
            (None, None) => None,
        };
        let sampler = self.sampler()?;
        let mut resource_attributes = match &self.otel_resource_attributes {
            Some(raw) => pairs("OTEL_RESOURCE_ATTRIBUTES", raw)?,
            None => Vec::new(),
        };
        let named = resource_attributes
            .iter()
            .position(|(key, _)| key == "service.name")
            .map(|i| resource_attributes.remove(i).1);
        let service_name = self
            .otel_service_name
            .clone()
            .or(named)
            .unwrap_or_else(|| SERVICE_NAME.to_owned());
        let mut headers = Vec::new();
        for (variable, raw) in [
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                &self.otel_exporter_otlp_headers,
            ),
            (
                "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
                &self.otel_exporter_otlp_traces_headers,
            ),
        ] {
            let Some(raw) = raw else { continue };
            for (name, value) in pairs(variable, raw.expose_secret())? {
                let valid = axum::http::HeaderName::try_from(name.as_str()).is_ok()
                    && axum::http::HeaderValue::try_from(value.as_str()).is_ok();
                if !valid {
                    return Err(ConfigError::Invalid {
                        variable,
                        reason: format!("header {name:?} is not a valid HTTP header"),
                    });
                }
                let name = name.to_ascii_lowercase();
                headers.retain(|(other, _)| *other != name);
                headers.push((name, SecretString::from(value)));
            }
        }
        let invalid = |variable| move |reason| ConfigError::Invalid { variable, reason };
        let ca_certificates = match (
            self.otel_exporter_otlp_traces_certificate,
            self.otel_exporter_otlp_certificate,
        ) {
            (Some(path), _) => Some(
                crate::tls::read_certificates(&path)
                    .map_err(invalid("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE"))?,
            ),
            (None, Some(path)) => Some(
                crate::tls::read_certificates(&path)
                    .map_err(invalid("OTEL_EXPORTER_OTLP_CERTIFICATE"))?,
            ),
            (None, None) => None,
        };
        let client_identity = match both_or_neither(
            (
                "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
                self.otel_exporter_otlp_client_certificate,
            ),
            (
                "OTEL_EXPORTER_OTLP_CLIENT_KEY",
                self.otel_exporter_otlp_client_key,
            ),
        )? {
            Some((certificate, key)) => {
                let mut pem = crate::tls::read_certificates(&certificate)
                    .map_err(invalid("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE"))?;
                pem.push(b'\n');
                pem.extend(
                    crate::tls::read_private_key(&key)
                        .map_err(invalid("OTEL_EXPORTER_OTLP_CLIENT_KEY"))?,
                );
                // PEM is ASCII.
                Some(SecretString::from(
                    String::from_utf8_lossy(&pem).into_owned(),
                ))
            }
            None => None,
        };
        let enabled = !self.otel_sdk_disabled && self.otel_traces_exporter == ExporterName::Otlp;
        Ok(TracingConfig {
            export: endpoint.filter(|_| enabled).map(|endpoint| OtlpExport {
                endpoint,
                protocol: self
                    .otel_exporter_otlp_traces_protocol
                    .unwrap_or(self.otel_exporter_otlp_protocol),
                headers,
                ca_certificates,
                client_identity,
                timeout: Duration::from_millis(
                    self.otel_exporter_otlp_traces_timeout
                        .unwrap_or(self.otel_exporter_otlp_timeout),
                ),
                service_name,
                resource_attributes,
                sampler,
            }),
        })
    }

    fn sampler(&self) -> Result<Sampler, ConfigError> {
        const VARIABLE: &str = "OTEL_TRACES_SAMPLER_ARG";
        let ratio = match &self.otel_traces_sampler_arg {
            None => 1.0,
            Some(raw) => match raw.trim().parse::<f64>() {
                Ok(ratio) if (0.0..=1.0).contains(&ratio) => ratio,
                _ => {
                    return Err(ConfigError::Invalid {
                        variable: VARIABLE,
                        reason: "must be a number from 0 to 1".into(),
                    });
                }
            },
        };
        Ok(match self.otel_traces_sampler {
            SamplerName::AlwaysOn => Sampler::AlwaysOn,
            SamplerName::AlwaysOff => Sampler::AlwaysOff,
            SamplerName::TraceIdRatio => Sampler::TraceIdRatio(ratio),
            SamplerName::ParentbasedAlwaysOn => Sampler::ParentBased(RootSampler::AlwaysOn),
            SamplerName::ParentbasedAlwaysOff => Sampler::ParentBased(RootSampler::AlwaysOff),
            SamplerName::ParentbasedTraceIdRatio => {
                Sampler::ParentBased(RootSampler::TraceIdRatio(ratio))
            }
        })
    }
}

/// An `http://` or `https://` URL, with `path` appended to a base URL's
/// path.
fn endpoint(variable: &'static str, raw: &str, path: &str) -> Result<Uri, ConfigError> {
    let raw = raw.trim();
    if !raw.starts_with("http://") && !raw.starts_with("https://") {
        return Err(ConfigError::Scheme {
            variable,
            expected: "http:// or https://",
        });
    }
    let url = if path.is_empty() {
        raw.to_owned()
    } else {
        format!("{}/{path}", raw.trim_end_matches('/'))
    };
    let uri: Uri = url.parse().map_err(|err| ConfigError::Invalid {
        variable,
        reason: format!("{err}"),
    })?;
    if uri.host().is_none_or(str::is_empty) {
        return Err(ConfigError::Invalid {
            variable,
            reason: "the URL names no host".into(),
        });
    }
    Ok(uri)
}

/// `key=value,key=value` with URL-encoded values, as the `OTEL_*` lists
/// are written; blank entries are skipped.
fn pairs(variable: &'static str, raw: &str) -> Result<Vec<(String, String)>, ConfigError> {
    let mut pairs = Vec::new();
    for entry in raw.split(',').filter(|e| !e.trim().is_empty()) {
        let invalid = |reason: &str| ConfigError::Invalid {
            variable,
            reason: reason.to_owned(),
        };
        let (key, value) = entry
            .split_once('=')
            .ok_or_else(|| invalid("each entry must be key=value"))?;
        let key = key.trim();
        if key.is_empty() {
            return Err(invalid("an entry has no key"));
        }
        let value = percent_decode(value.trim())
            .ok_or_else(|| invalid("a value is not valid URL-encoded UTF-8"))?;
        pairs.push((key.to_owned(), value));
    }
    Ok(pairs)
}

/// Decodes `%XX` escapes.
fn percent_decode(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            decoded.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            decoded.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(decoded).ok()
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        tracing: TracingArgs,
    }

    fn resolve(args: &[&str]) -> Result<TracingConfig, ConfigError> {
        let args = std::iter::once("highload").chain(args.iter().copied());
        Cli::try_parse_from(args)
            .expect("the flags parse")
            .tracing
            .resolve()
    }

    #[test]
    fn export_is_off_without_an_endpoint() {
        let config = resolve(&["--otel-service-name", "x"]).unwrap();
        assert!(config.export.is_none());
    }

    #[test]
    fn a_base_endpoint_gets_the_traces_path_and_the_defaults() {
        let config = resolve(&["--otel-exporter-otlp-endpoint", "http://collector:4318/"]).unwrap();
        let export = config.export.expect("export on");
        assert_eq!(export.endpoint, "http://collector:4318/v1/traces");
        assert_eq!(export.protocol, Protocol::HttpProtobuf);
        assert_eq!(export.service_name, "highload");
        assert_eq!(export.timeout, Duration::from_secs(10));
        assert_eq!(export.sampler, Sampler::ParentBased(RootSampler::AlwaysOn));
    }

    #[test]
    fn the_traces_settings_override_the_general_ones() {
        let config = resolve(&[
            "--otel-exporter-otlp-endpoint",
            "http://ignored:4318",
            "--otel-exporter-otlp-traces-endpoint",
            "http://collector:9999/custom",
            "--otel-exporter-otlp-traces-protocol",
            "http/json",
            "--otel-exporter-otlp-headers",
            "Authorization=Basic%20abc,x-team=a",
            "--otel-exporter-otlp-traces-headers",
            "x-team=b",
            "--otel-resource-attributes",
            "service.name=from-resource,deployment.environment=prod",
            "--otel-traces-sampler",
            "parentbased_traceidratio",
            "--otel-traces-sampler-arg",
            "0.25",
        ])
        .unwrap();
        let export = config.export.expect("export on");
        assert_eq!(export.endpoint, "http://collector:9999/custom");
        assert_eq!(export.protocol, Protocol::HttpJson);
        let headers: Vec<_> = export
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.expose_secret()))
            .collect();
        assert_eq!(headers, [("authorization", "Basic abc"), ("x-team", "b")]);
        assert_eq!(export.service_name, "from-resource");
        assert_eq!(
            export.resource_attributes,
            [("deployment.environment".to_owned(), "prod".to_owned())]
        );
        assert_eq!(
            export.sampler,
            Sampler::ParentBased(RootSampler::TraceIdRatio(0.25))
        );
    }

    #[test]
    fn disabling_wins_over_an_endpoint() {
        for off in [
            ["--otel-sdk-disabled", "true"],
            ["--otel-traces-exporter", "none"],
        ] {
            let mut args = vec!["--otel-exporter-otlp-endpoint", "http://collector:4318"];
            args.extend(off);
            assert!(resolve(&args).unwrap().export.is_none(), "{off:?}");
        }
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (args, variable) in [
            (
                &["--otel-exporter-otlp-endpoint", "grpc://collector"][..],
                "OTEL_EXPORTER_OTLP_ENDPOINT",
            ),
            (
                &[
                    "--otel-exporter-otlp-endpoint",
                    "https://collector",
                    "--otel-exporter-otlp-client-certificate",
                    "client.pem",
                ][..],
                "OTEL_EXPORTER_OTLP_CLIENT_KEY",
            ),
            (
                &["--otel-exporter-otlp-traces-endpoint", "collector:4318"][..],
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            ),
            (
                &["--otel-traces-sampler-arg", "1.5"][..],
                "OTEL_TRACES_SAMPLER_ARG",
            ),
            (
                &["--otel-exporter-otlp-headers", "novalue"][..],
                "OTEL_EXPORTER_OTLP_HEADERS",
            ),
            (
                &["--otel-resource-attributes", "a=%zz"][..],
                "OTEL_RESOURCE_ATTRIBUTES",
            ),
        ] {
            let err = resolve(args).expect_err("refused");
            assert_eq!(err.variable(), variable, "{args:?}");
        }
    }
}
