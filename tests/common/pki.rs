//! Test certificates, made with the `openssl` command (as
//! `deploy/` documents for users): a CA, server certificates for
//! 127.0.0.1/localhost and client certificates it signs, as PEM files in
//! a directory.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A certificate authority in `dir`: `<name>.pem` and `<name>.key`.
pub struct Ca {
    pub dir: PathBuf,
    pub name: String,
}

/// A certificate and its key, as files, and both in one PEM file (a Kafka
/// PEM keystore: the key, then the chain).
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub keystore: PathBuf,
}

/// A new P-256 key, unencrypted (the `req` arguments).
const NEW_KEY: &[&str] = &[
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
];

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("run openssl (apt-get install openssl): {e}"));
    assert!(
        out.status.success(),
        "openssl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Ca {
    /// A new self-signed CA, `subject` such as `/CN=Runnel test CA`.
    pub fn new(dir: &Path, name: &str, subject: &str) -> Ca {
        let key = format!("{name}.key");
        let pem = format!("{name}.pem");
        openssl(
            dir,
            &[
                &["req", "-x509"][..],
                NEW_KEY,
                &[
                    "-keyout",
                    &key,
                    "-out",
                    &pem,
                    "-days",
                    "2",
                    "-subj",
                    subject,
                    "-addext",
                    "basicConstraints=critical,CA:TRUE",
                    "-addext",
                    "keyUsage=critical,keyCertSign,cRLSign",
                ][..],
            ]
            .concat(),
        );
        Ca {
            dir: dir.to_path_buf(),
            name: name.to_string(),
        }
    }

    pub fn pem(&self) -> PathBuf {
        self.dir.join(format!("{}.pem", self.name))
    }

    /// A server certificate for 127.0.0.1 and localhost.
    pub fn server(&self, name: &str) -> Issued {
        self.issue(
            name,
            "/CN=localhost",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        )
    }

    /// A client certificate with `subject` such as `/O=Acme/OU=eng/CN=alice`.
    pub fn client(&self, name: &str, subject: &str) -> Issued {
        self.issue(name, subject, "extendedKeyUsage=clientAuth\n")
    }

    fn issue(&self, name: &str, subject: &str, ext: &str) -> Issued {
        let dir = &self.dir;
        let (key, csr, cert, extfile) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
            format!("{name}.ext"),
        );
        std::fs::write(
            dir.join(&extfile),
            format!("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n{ext}"),
        )
        .expect("write extfile");
        openssl(
            dir,
            &[
                &["req"][..],
                NEW_KEY,
                &["-keyout", &key, "-out", &csr, "-subj", subject][..],
            ]
            .concat(),
        );
        let ca_pem = format!("{}.pem", self.name);
        let ca_key = format!("{}.key", self.name);
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &ca_pem,
                "-CAkey",
                &ca_key,
                "-CAcreateserial",
                "-out",
                &cert,
                "-days",
                "2",
                "-extfile",
                &extfile,
            ],
        );
        let keystore = dir.join(format!("{name}-keystore.pem"));
        let both = [
            std::fs::read_to_string(dir.join(&key)).expect("read key"),
            std::fs::read_to_string(dir.join(&cert)).expect("read cert"),
        ]
        .concat();
        std::fs::write(&keystore, both).expect("write keystore");
        Issued {
            cert: dir.join(cert),
            key: dir.join(key),
            keystore,
        }
    }
}
