//! The hop from the gateway to an `https://` upstream: which certificate
//! authorities the upstream's certificate must chain to. rustls (with
//! `ring`) verifies the chain and that the certificate names the
//! upstream's host; TLS 1.2 and 1.3 only.

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::{ClientConfig, RootCertStore};
use std::sync::Arc;

/// The TLS settings of the gateway's client. Cheap to clone.
#[derive(Clone)]
pub struct UpstreamTls {
    config: Arc<ClientConfig>,
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls").finish_non_exhaustive()
    }
}

impl UpstreamTls {
    /// Trusts the operating system's certificate authorities (the system
    /// bundle, or the file `SSL_CERT_FILE` names). Fails when there are
    /// none, rather than refusing every upstream certificate later.
    pub fn system() -> Result<Self, String> {
        let found = rustls_native_certs::load_native_certs();
        let mut roots = RootCertStore::empty();
        let (added, _unparsable) = roots.add_parsable_certificates(found.certs);
        if added == 0 {
            return Err(format!(
                "no trusted certificate authority found on this system ({} errors reading it)",
                found.errors.len()
            ));
        }
        Self::trusting(roots)
    }

    /// Trusts only the certificate authorities in `pem` (an operator's
    /// private CA, say), not the system's.
    pub fn trusting_pem(pem: &[u8]) -> Result<Self, String> {
        let mut roots = RootCertStore::empty();
        for certificate in CertificateDer::pem_slice_iter(pem) {
            let certificate = certificate.map_err(|e| format!("not a PEM certificate: {e}"))?;
            roots
                .add(certificate)
                .map_err(|e| format!("not a usable CA certificate: {e}"))?;
        }
        if roots.is_empty() {
            return Err("holds no PEM certificate".into());
        }
        Self::trusting(roots)
    }

    /// Trusts no authority: for an `http://` upstream, where no TLS is made.
    pub fn trusting_nobody() -> Result<Self, String> {
        Self::trusting(RootCertStore::empty())
    }

    fn trusting(roots: RootCertStore) -> Result<Self, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS set-up: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self {
            config: Arc::new(config),
        })
    }

    pub(crate) fn client_config(&self) -> ClientConfig {
        ClientConfig::clone(&self.config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_must_hold_certificates() {
        assert!(UpstreamTls::trusting_pem(b"").is_err());
        assert!(UpstreamTls::trusting_pem(b"just text").is_err());
        let bogus =
            b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n";
        let refused = UpstreamTls::trusting_pem(bogus).unwrap_err();
        assert!(refused.contains("CA certificate"), "{refused}");
    }
}
