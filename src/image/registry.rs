//! Talking to registries: which endpoints to try for an image (mirrors, then the registry
//! itself unless `mirrors_only`), with which protocol and credentials, and fetching
//! manifests and blobs from one of them.
//!
//! The distribution protocol itself — the `/v2/` API, the `WWW-Authenticate` Basic and
//! Bearer token flows, redirects, TLS — is `oci-client`'s. This module decides what to ask
//! whom and turns its errors into ones that name the registry or endpoint involved.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{DigestError, OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;

use super::reference::Reference;
use crate::config::RegistryConfig;

/// Manifest media types crius understands, in order of preference.
pub const MANIFEST_MEDIA_TYPES: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

/// How long connecting to an endpoint may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Registry credentials, from the CRI request or the registry's config entry.
#[derive(Clone, Default)]
pub struct Credentials {
    pub username: String,
    pub password: String,
    /// base64 of `username:password`, as in Docker's config.json.
    pub auth: String,
    /// OAuth2 refresh token; sent as the password of Basic authentication to the token
    /// service, which is how registries that issue them accept them.
    pub identity_token: String,
    /// A bearer token for the registry itself.
    pub registry_token: String,
}

impl fmt::Debug for Credentials {
    // Never print secrets, even at trace level.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    fn is_empty(&self) -> bool {
        self.username.is_empty()
            && self.password.is_empty()
            && self.auth.is_empty()
            && self.identity_token.is_empty()
            && self.registry_token.is_empty()
    }

    fn to_registry_auth(&self) -> Result<RegistryAuth, String> {
        if !self.registry_token.is_empty() {
            return Ok(RegistryAuth::Bearer(self.registry_token.clone()));
        }
        if !self.identity_token.is_empty() {
            let username = if self.username.is_empty() {
                "<token>"
            } else {
                &self.username
            };
            return Ok(RegistryAuth::Basic(
                username.to_string(),
                self.identity_token.clone(),
            ));
        }
        if !self.auth.is_empty() {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(self.auth.trim())
                .map_err(|_| "auth is not base64".to_string())?;
            let decoded =
                String::from_utf8(decoded).map_err(|_| "auth is not UTF-8".to_string())?;
            let (username, password) = decoded
                .split_once(':')
                .ok_or_else(|| "auth is not base64 of username:password".to_string())?;
            return Ok(RegistryAuth::Basic(
                username.to_string(),
                password.to_string(),
            ));
        }
        if !self.username.is_empty() {
            return Ok(RegistryAuth::Basic(
                self.username.clone(),
                self.password.clone(),
            ));
        }
        Ok(RegistryAuth::Anonymous)
    }
}

/// One place to fetch an image from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `host[:port]` to connect to.
    pub host: String,
    pub plain_http: bool,
    /// Accept any TLS certificate (an `insecure` registry over HTTPS).
    pub skip_verify: bool,
    pub mirror: bool,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.plain_http { "http" } else { "https" };
        write!(f, "{scheme}://{}", self.host)
    }
}

/// Why fetching from one endpoint failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{what} not found at {endpoint}")]
    NotFound { what: String, endpoint: String },
    #[error("not authorized by registry {registry}: {detail}")]
    Unauthorized { registry: String, detail: String },
    #[error("cannot reach {endpoint}: {detail}")]
    Unreachable { endpoint: String, detail: String },
    #[error("no data from {endpoint} for {after:?}: download stalled")]
    Stalled { endpoint: String, after: Duration },
    #[error("bad response from {endpoint}: {detail}")]
    Protocol { endpoint: String, detail: String },
    #[error("{endpoint} served content that does not match its digest: {detail}")]
    Corrupt { endpoint: String, detail: String },
    #[error("bad credentials for registry {registry}: {detail}")]
    Credentials { registry: String, detail: String },
}

/// The node's registry settings.
pub struct Registries {
    hosts: BTreeMap<String, RegistryConfig>,
    progress_timeout: Duration,
}

impl Registries {
    pub fn new(hosts: &BTreeMap<String, RegistryConfig>, progress_timeout: Duration) -> Registries {
        // reqwest is built without a default TLS crypto provider; install ring once.
        let _ = rustls::crypto::ring::default_provider().install_default();
        Registries {
            hosts: hosts.clone(),
            progress_timeout,
        }
    }

    /// Endpoints to try for `reference`, in order: the configured mirrors, then the
    /// registry itself (over HTTPS, and for an `insecure` registry also plain HTTP)
    /// unless the registry is `mirrors_only`.
    pub fn endpoints(&self, reference: &Reference) -> Vec<Endpoint> {
        let registry = reference.registry();
        let config = self.hosts.get(registry).cloned().unwrap_or_default();
        let mut endpoints: Vec<Endpoint> = config
            .mirrors
            .iter()
            .filter_map(|mirror| {
                let uri: http::Uri = mirror.parse().ok()?;
                let host = uri.authority()?.to_string();
                let insecure = self.hosts.get(&host).is_some_and(|c| c.insecure);
                Some(Endpoint {
                    host,
                    plain_http: uri.scheme_str() == Some("http"),
                    skip_verify: insecure,
                    mirror: true,
                })
            })
            .collect();
        if !config.mirrors_only {
            // Docker Hub's API lives on a different host than its image names say.
            let host = if registry == "docker.io" {
                "registry-1.docker.io"
            } else {
                registry
            };
            endpoints.push(Endpoint {
                host: host.to_string(),
                plain_http: false,
                skip_verify: config.insecure,
                mirror: false,
            });
            if config.insecure {
                endpoints.push(Endpoint {
                    host: host.to_string(),
                    plain_http: true,
                    skip_verify: true,
                    mirror: false,
                });
            }
        }
        endpoints
    }

    /// A session with one endpoint for one repository; `credentials` from the request win
    /// over the registry's configured ones.
    pub fn connect(
        &self,
        endpoint: &Endpoint,
        reference: &Reference,
        credentials: &Credentials,
    ) -> Result<RemoteRepository, FetchError> {
        let configured = self.hosts.get(reference.registry());
        let credentials = if credentials.is_empty() {
            configured
                .map(|c| Credentials {
                    username: c.username.clone(),
                    password: c.password.clone(),
                    ..Credentials::default()
                })
                .unwrap_or_default()
        } else {
            credentials.clone()
        };
        let auth = credentials
            .to_registry_auth()
            .map_err(|detail| FetchError::Credentials {
                registry: reference.registry().to_string(),
                detail,
            })?;
        let config = ClientConfig {
            protocol: if endpoint.plain_http {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            accept_invalid_certificates: endpoint.skip_verify,
            // crius picks the platform itself from the raw index.
            platform_resolver: None,
            connect_timeout: Some(CONNECT_TIMEOUT),
            // reqwest's read timeout restarts with every chunk: it is a no-progress timeout.
            read_timeout: Some(self.progress_timeout),
            user_agent: concat!("crius/", env!("CARGO_PKG_VERSION")),
            ..ClientConfig::default()
        };
        let mut remote = oci_client::Reference::with_tag(
            reference.registry().to_string(),
            reference.repository().to_string(),
            reference.manifest_reference().to_string(),
        );
        remote.set_mirror_registry(endpoint.host.clone());
        Ok(RemoteRepository {
            client: oci_client::Client::new(config),
            remote,
            auth,
            endpoint: endpoint.clone(),
            registry: reference.registry().to_string(),
            progress_timeout: self.progress_timeout,
        })
    }
}

/// One repository at one endpoint, with its authentication state.
pub struct RemoteRepository {
    client: oci_client::Client,
    /// The image's repository, pointed at the endpoint's host.
    remote: oci_client::Reference,
    auth: RegistryAuth,
    endpoint: Endpoint,
    registry: String,
    progress_timeout: Duration,
}

impl RemoteRepository {
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Fetches the manifest (or index) for a tag or digest: its bytes and digest. When
    /// asked by digest, oci-client has checked the bytes against it.
    pub async fn manifest(&self, tag_or_digest: &str) -> Result<(Bytes, String), FetchError> {
        let reference = if tag_or_digest.contains(':') {
            self.remote.clone_with_digest(tag_or_digest.to_string())
        } else {
            oci_client::Reference::with_tag(
                self.remote.registry().to_string(),
                self.remote.repository().to_string(),
                tag_or_digest.to_string(),
            )
        };
        let mut reference = reference;
        reference.set_mirror_registry(self.endpoint.host.clone());
        self.client
            .pull_manifest_raw(&reference, &self.auth, MANIFEST_MEDIA_TYPES)
            .await
            .map_err(|err| {
                self.fetch_error(
                    err,
                    format!("manifest {}:{tag_or_digest}", self.remote.repository()),
                )
            })
    }

    /// Streams the blob `digest`; the caller verifies what it receives.
    pub async fn blob(
        &self,
        digest: &str,
    ) -> Result<BoxStream<'static, Result<Bytes, FetchError>>, FetchError> {
        use futures_util::StreamExt;
        // Authentication is established by the manifest request that always comes first.
        let sized = self
            .client
            .pull_blob_stream(&self.remote, digest)
            .await
            .map_err(|err| self.fetch_error(err, format!("blob {digest}")))?;
        let endpoint = self.endpoint.to_string();
        let after = self.progress_timeout;
        Ok(sized
            .stream
            .map(move |chunk| chunk.map_err(|err| stream_error(err, &endpoint, after)))
            .boxed())
    }

    fn fetch_error(&self, err: OciDistributionError, what: String) -> FetchError {
        let endpoint = self.endpoint.to_string();
        match err {
            OciDistributionError::AuthenticationFailure(detail) => FetchError::Unauthorized {
                registry: self.registry.clone(),
                detail,
            },
            OciDistributionError::UnauthorizedError { url } => FetchError::Unauthorized {
                registry: self.registry.clone(),
                detail: format!("401 Unauthorized for {url}"),
            },
            OciDistributionError::ImageManifestNotFoundError(_) => {
                FetchError::NotFound { what, endpoint }
            }
            OciDistributionError::RegistryError { envelope, .. } => {
                let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
                let not_found = codes.iter().any(|code| {
                    matches!(
                        code,
                        OciErrorCode::ManifestUnknown
                            | OciErrorCode::NameUnknown
                            | OciErrorCode::BlobUnknown
                            | OciErrorCode::NotFound
                    )
                });
                let denied = codes
                    .iter()
                    .any(|code| matches!(code, OciErrorCode::Unauthorized | OciErrorCode::Denied));
                let detail = envelope
                    .errors
                    .iter()
                    .map(|e| e.message.clone())
                    .collect::<Vec<_>>()
                    .join("; ");
                if not_found {
                    FetchError::NotFound { what, endpoint }
                } else if denied {
                    FetchError::Unauthorized {
                        registry: self.registry.clone(),
                        detail,
                    }
                } else {
                    FetchError::Protocol { endpoint, detail }
                }
            }
            OciDistributionError::ServerError { code: 404, .. } => {
                FetchError::NotFound { what, endpoint }
            }
            OciDistributionError::ServerError {
                code: 401 | 403,
                message,
                ..
            } => FetchError::Unauthorized {
                registry: self.registry.clone(),
                detail: message,
            },
            OciDistributionError::RequestError(err) => {
                request_error(&err, &endpoint, self.progress_timeout)
            }
            other => FetchError::Protocol {
                endpoint,
                detail: other.to_string(),
            },
        }
    }
}

fn request_error(err: &reqwest::Error, endpoint: &str, after: Duration) -> FetchError {
    if err.is_timeout() && !err.is_connect() {
        return FetchError::Stalled {
            endpoint: endpoint.to_string(),
            after,
        };
    }
    FetchError::Unreachable {
        endpoint: endpoint.to_string(),
        detail: error_chain(err),
    }
}

/// Errors inside a blob stream arrive as `io::Error`s wrapping (possibly more than once)
/// reqwest's errors or oci-client's digest verification's.
fn stream_error(err: std::io::Error, endpoint: &str, after: Duration) -> FetchError {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&err);
    while let Some(current) = cause {
        if let Some(request) = current.downcast_ref::<reqwest::Error>() {
            return request_error(request, endpoint, after);
        }
        if let Some(digest) = current.downcast_ref::<DigestError>() {
            return FetchError::Corrupt {
                endpoint: endpoint.to_string(),
                detail: digest.to_string(),
            };
        }
        // An io::Error's `source()` skips its payload; look inside it explicitly.
        cause = match current.downcast_ref::<std::io::Error>() {
            Some(io) => io
                .get_ref()
                .map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => current.source(),
        };
    }
    FetchError::Protocol {
        endpoint: endpoint.to_string(),
        detail: err.to_string(),
    }
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message = format!("{message}: {text}");
        }
        source = cause.source();
    }
    message
}
