//! A throw-away PKI for TLS tests: a CA, a serving certificate for `localhost`/`127.0.0.1`,
//! and a client certificate, made with rcgen when the test runs and written as PEM files.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};

/// PEM files of one CA and the certificates it signed, in a temporary directory removed on
/// drop.
pub struct TestPki {
    dir: tempfile::TempDir,
}

impl TestPki {
    /// Makes a CA named `name`, a server certificate and a client certificate signed by it.
    pub fn new(name: &str) -> Result<Self> {
        let dir = tempfile::tempdir().context("temp dir for certificates")?;
        let pki = Self { dir };
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, name);
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate()?)?;
        pki.write("ca.pem", &ca.pem())?;

        pki.issue(
            &ca,
            "server",
            "iter8-analytics",
            ExtendedKeyUsagePurpose::ServerAuth,
        )?;
        pki.issue(
            &ca,
            "client",
            "iter8-controller",
            ExtendedKeyUsagePurpose::ClientAuth,
        )?;
        Ok(pki)
    }

    /// The CA certificate.
    pub fn ca(&self) -> PathBuf {
        self.path("ca.pem")
    }

    /// The serving certificate (for `localhost` and `127.0.0.1`).
    pub fn server_cert(&self) -> PathBuf {
        self.path("server.pem")
    }

    /// The serving certificate's key.
    pub fn server_key(&self) -> PathBuf {
        self.path("server-key.pem")
    }

    /// The client certificate.
    pub fn client_cert(&self) -> PathBuf {
        self.path("client.pem")
    }

    /// The client certificate's key.
    pub fn client_key(&self) -> PathBuf {
        self.path("client-key.pem")
    }

    /// The client certificate and key in one PEM document, as reqwest's `Identity` wants.
    pub fn client_identity_pem(&self) -> Result<Vec<u8>> {
        let mut pem = std::fs::read(self.client_cert())?;
        pem.extend(std::fs::read(self.client_key())?);
        Ok(pem)
    }

    /// The directory holding the files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    /// Writes `<file>.pem` and `<file>-key.pem`: a certificate for `localhost` and `127.0.0.1`
    /// named `common_name`, for `usage`, signed by `ca`.
    fn issue(
        &self,
        ca: &CertifiedIssuer<'_, KeyPair>,
        file: &str,
        common_name: &str,
        usage: ExtendedKeyUsagePurpose,
    ) -> Result<()> {
        let mut params = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate()?;
        self.write(&format!("{file}.pem"), &params.signed_by(&key, ca)?.pem())?;
        self.write(&format!("{file}-key.pem"), &key.serialize_pem())
    }

    fn write(&self, file: &str, pem: &str) -> Result<()> {
        std::fs::write(self.path(file), pem).with_context(|| format!("writing {file}"))
    }
}
