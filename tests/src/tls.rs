//! A certificate authority made for one test (with the `openssl` command line, a tool we
//! did not write), and certificates it signs for `127.0.0.1`/`localhost`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};
use tempfile::TempDir;

/// A test CA in its own directory; [`TestCa::issue`] signs server certificates.
pub struct TestCa {
    dir: TempDir,
}

/// A server certificate and its key, as PEM files.
#[derive(Debug, Clone)]
pub struct ServerCert {
    /// The certificate (leaf only).
    pub cert: PathBuf,
    /// Its private key (PKCS#8).
    pub key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .context("running openssl (Debian package `openssl`)")?;
    if !out.status.success() {
        bail!(
            "openssl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

impl TestCa {
    /// A new CA (P-256, valid two days).
    pub fn new() -> anyhow::Result<TestCa> {
        let dir = tempfile::Builder::new().prefix("obs-ca-").tempdir()?;
        openssl(
            dir.path(),
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=obs test CA",
            ],
        )?;
        Ok(TestCa { dir })
    }

    /// The CA certificate clients trust.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Signs a new server certificate for `127.0.0.1` and `localhost` whose subject CN is
    /// `name` (files `name.pem`, `name.key`).
    pub fn issue(&self, name: &str) -> anyhow::Result<ServerCert> {
        let d = self.dir.path();
        let (key, csr, pem, ext) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
            format!("{name}.ext"),
        );
        std::fs::write(
            d.join(&ext),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
        )?;
        openssl(
            d,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                &key,
                "-out",
                &csr,
                "-subj",
                &format!("/CN={name}"),
            ],
        )?;
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "2",
                "-extfile",
                &ext,
            ],
        )?;
        Ok(ServerCert {
            cert: d.join(pem),
            key: d.join(key),
        })
    }

    /// An HTTP client trusting only this CA, failing after `secs`.
    pub fn client(&self, secs: u64) -> reqwest::Client {
        let pem = std::fs::read(self.ca_file()).expect("the CA file");
        reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(&pem).expect("PEM")])
            .timeout(Duration::from_secs(secs))
            .build()
            .expect("HTTP client")
    }
}
