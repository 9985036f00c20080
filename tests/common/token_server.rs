//! A registry token service for tests: the `WWW-Authenticate: Bearer` flow of the
//! distribution spec, with tokens the real registry verifies.
//!
//! Debian's docker-registry, configured with `auth.token`, sends clients here; this
//! server checks their Basic credentials and answers with a JWT signed (by `openssl`)
//! with a throwaway key whose self-signed certificate is the registry's trusted root.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use serde_json::json;

/// The `service` and `issuer` the registry is configured to expect.
pub const SERVICE: &str = "crius-test-registry";
pub const ISSUER: &str = "crius-test-token-service";

pub struct TokenServer {
    addr: String,
    key: PathBuf,
    certificate: PathBuf,
    stop: Arc<AtomicBool>,
}

impl TokenServer {
    /// Makes a key and certificate in `dir` and serves `GET /token` on a free port,
    /// granting tokens to `user`/`password` only.
    pub fn start(dir: &Path, user: &str, password: &str) -> TokenServer {
        let key = dir.join("token.key");
        let certificate = dir.join("token.crt");
        let status = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=crius-test-token",
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&certificate)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run openssl");
        assert!(
            status.success(),
            "openssl could not make a key and certificate"
        );
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the token service");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let addr = listener
            .local_addr()
            .expect("token service address")
            .to_string();
        let server = TokenServer {
            addr,
            key,
            certificate,
            stop: Arc::new(AtomicBool::new(false)),
        };
        let (stop, expected, signer) = (
            server.stop.clone(),
            format!("Basic {}", STANDARD.encode(format!("{user}:{password}"))),
            server.signer(),
        );
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => serve(stream, &expected, &signer),
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        server
    }

    /// The `realm` the registry sends clients to.
    pub fn realm(&self) -> String {
        format!("http://{}/token", self.addr)
    }

    pub fn certificate(&self) -> &Path {
        &self.certificate
    }

    /// A token for pulling `repository`, as a client would get from the service.
    pub fn token_for(&self, repository: &str) -> String {
        self.signer()
            .token(&[format!("repository:{repository}:pull")])
    }

    fn signer(&self) -> Signer {
        Signer {
            key: self.key.clone(),
            certificate: self.certificate.clone(),
        }
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Mints registry JWTs with the service's key.
struct Signer {
    key: PathBuf,
    certificate: PathBuf,
}

impl Signer {
    /// A token granting each `repository:NAME:ACTIONS` scope.
    fn token(&self, scopes: &[String]) -> String {
        let der = Command::new("openssl")
            .args(["x509", "-outform", "DER", "-in"])
            .arg(&self.certificate)
            .output()
            .expect("run openssl x509");
        let header = json!({ "typ": "JWT", "alg": "RS256", "x5c": [STANDARD.encode(&der.stdout)] });
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        let access: Vec<_> = scopes
            .iter()
            .filter_map(|scope| {
                let mut parts = scope.splitn(3, ':');
                let (kind, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
                Some(json!({ "type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>() }))
            })
            .collect();
        let claims = json!({
            "iss": ISSUER, "sub": "crius-test", "aud": SERVICE,
            "exp": now + 3600, "nbf": now - 60, "iat": now - 60, "jti": format!("{now}-{}", scopes.len()),
            "access": access,
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut openssl = Command::new("openssl")
            .args(["dgst", "-sha256", "-sign"])
            .arg(&self.key)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run openssl dgst");
        openssl
            .stdin
            .take()
            .expect("openssl stdin")
            .write_all(signing_input.as_bytes())
            .expect("feed openssl");
        let signature = openssl.wait_with_output().expect("openssl signature");
        format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature.stdout)
        )
    }
}

/// Answers one HTTP/1.x request: a token for the requested scopes when the Basic
/// credentials match, else 401.
fn serve(stream: TcpStream, expected_authorization: &str, signer: &Signer) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(clone) => clone,
        Err(_) => return,
    });
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let mut authorized = false;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("authorization") && value.trim() == expected_authorization
            {
                authorized = true;
            }
        }
    }
    let path = request_line.split_whitespace().nth(1).unwrap_or_default();
    let scopes: Vec<String> = path
        .split_once('?')
        .map(|(_, query)| query)
        .unwrap_or_default()
        .split('&')
        .filter_map(|pair| pair.strip_prefix("scope="))
        .map(|scope| {
            scope
                .replace("%3A", ":")
                .replace("%2F", "/")
                .replace("%2C", ",")
        })
        .collect();
    let (status, body) = if authorized {
        let token = signer.token(&scopes);
        (
            "200 OK",
            json!({ "token": token, "access_token": token, "expires_in": 3600 }).to_string(),
        )
    } else {
        (
            "401 Unauthorized",
            r#"{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}"#.to_string(),
        )
    };
    let mut stream = stream;
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}
