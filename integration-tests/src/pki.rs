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

        let mut server = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])?;
        server
            .distinguished_name
            .push(DnType::CommonName, "iter8-analytics");
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_key = KeyPair::generate()?;
        pki.write("server.pem", &server.signed_by(&server_key, &ca)?.pem())?;
        pki.write("server-key.pem", &server_key.serialize_pem())?;

        let mut client = CertificateParams::new(Vec::<String>::new())?;
        client
            .distinguished_name
            .push(DnType::CommonName, "iter8-controller");
        client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client_key = KeyPair::generate()?;
        pki.write("client.pem", &client.signed_by(&client_key, &ca)?.pem())?;
        pki.write("client-key.pem", &client_key.serialize_pem())?;
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

    fn write(&self, file: &str, pem: &str) -> Result<()> {
        std::fs::write(self.path(file), pem).with_context(|| format!("writing {file}"))
    }
}
