//! Conformance of `kim_bridge::smime` with gematik's KIM S/MIME sample
//! (tests/data/smime-profil, see its README) and interoperability with the
//! `openssl cms` command line.

use std::path::{Path, PathBuf};
use std::process::Command;

use kim_bridge::smime::{
    self, EncodeOptions, IntegrityCheck, MailboxKey, RecipientCert, SignerIdentity, SmimeError,
    decrypt, mail, verify, wrap,
};
use openssl::pkey::{PKey, Private};
use openssl::x509::X509;

const SENDER: &str = "mustersender@komle.de";
const RECIPIENT: &str = "musterempfaenger@komle.de";

fn data(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/smime-profil")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn cert(path: &Path) -> X509 {
    X509::from_pem(&std::fs::read(path).unwrap()).unwrap()
}

fn key(path: &Path) -> PKey<Private> {
    PKey::private_key_from_pem(&std::fs::read(path).unwrap()).unwrap()
}

fn sample(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/smime-profil")
        .join(name)
}

/// Recipient A of the sample: the sender's encryption certificate.
fn mailbox_a() -> MailboxKey {
    MailboxKey {
        email: SENDER.into(),
        cert: cert(&sample("recipientA/hci-enc-2-kim-bsp.pem")),
        key: key(&sample("recipientA/hci-enc-2-kim-bsp.prv.pem")),
    }
}

/// Recipient B of the sample.
fn mailbox_b() -> MailboxKey {
    MailboxKey {
        email: RECIPIENT.into(),
        cert: cert(&sample("recipientB/hci-enc-3-kim-bsp.pem")),
        key: key(&sample("recipientB/hci-enc-3-kim-bsp.prv.pem")),
    }
}

fn sample_trust() -> Vec<X509> {
    [
        "recipientA/GEM.RCA2-TEST-ONLY.pem",
        "recipientA/GEM.KOMP-CA24-TEST-ONLY.pem",
    ]
    .into_iter()
    .map(|p| cert(&sample(p)))
    .collect()
}

/// Runs the `openssl` command line in `dir`; panics with its stderr on failure.
fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl CLI");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The sample's line-ending rewrite: every CR or LF not part of a CRLF
/// becomes CRLF. gematik's tool applied it to the binary DER inside
/// `.03`/`.04`, which is why only `.02` parses as DER.
fn canonicalize_line_ends(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], bytes.get(i + 1)) {
            (b'\r', Some(b'\n')) => {
                out.extend_from_slice(b"\r\n");
                i += 2;
            }
            (b'\r' | b'\n', _) => {
                out.extend_from_slice(b"\r\n");
                i += 1;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

#[test]
fn rfc822_wrap_reproduces_the_sample() {
    assert_eq!(
        wrap::rfc822_wrap(&data("inputEmail.txt")),
        data("inputEmail.txt.01.rfc822wrap")
    );
}

#[test]
fn sample_decrypts_with_both_recipients_keys() {
    let encrypted = data("inputEmail.txt.04.encryptedcms");
    let outer = data("inputEmail.txt.05.encryptedwrap");
    let signed_wrap = data("inputEmail.txt.03.signedwrap");
    for mailbox in [mailbox_a(), mailbox_b()] {
        let decrypted = decrypt::decrypt(&encrypted, &mailbox.key, &mailbox.cert).unwrap();
        assert_eq!(decrypted.content, signed_wrap, "{}", mailbox.email);
        let emails: Vec<&str> = decrypted
            .recipient_emails
            .iter()
            .map(|e| e.email.as_str())
            .collect();
        assert_eq!(emails, [SENDER, RECIPIENT]);
        let mine = decrypted
            .recipient_emails
            .iter()
            .find(|e| e.email == mailbox.email)
            .unwrap();
        assert!(mine.names(&mailbox.cert));

        // The whole outer mail: decryption works; the signed layer is the
        // sample's line-end-damaged DER, so it is reported as bad format (04).
        let error = smime::decode_kim_mail(&outer, &mailbox, &sample_trust()).unwrap_err();
        assert!(matches!(error, SmimeError::SignedFormat(_)), "{error:?}");
        assert_eq!(error.integrity_check_result(), Some("04"));
    }
    // The documented rewrite, undone in the only direction that is
    // unambiguous: the sample's SignedData with line ends canonicalized is
    // exactly the body of the decrypted signed wrap.
    let body = wrap::signed_unwrap(&signed_wrap).unwrap();
    assert_eq!(
        body,
        canonicalize_line_ends(&data("inputEmail.txt.02.signedcms"))
    );
    assert_eq!(
        mail::parse_outer(&outer).unwrap().encrypted_der(),
        encrypted.as_slice()
    );
}

#[test]
fn sample_signature_verifies_and_yields_the_rfc822_wrap() {
    let verified = verify::verify(&data("inputEmail.txt.02.signedcms"), &sample_trust()).unwrap();
    assert_eq!(verified.content, data("inputEmail.txt.01.rfc822wrap"));
    let cn = verified
        .signer
        .subject_name()
        .entries_by_nid(openssl::nid::Nid::COMMONNAME)
        .next()
        .unwrap();
    assert_eq!(
        cn.data().to_string().unwrap(),
        "Asclepios ApothekeTEST-ONLY"
    );
    // The signer's CA (GEM.SMCB-CA24) is not in the sample and the
    // certificate expired in 2023.
    assert!(!verified.cert_path_valid);
    let (a, b) = (mailbox_a(), mailbox_b());
    assert_eq!(verified.recipient_emails.len(), 2);
    assert!(
        verified
            .recipient_emails
            .iter()
            .any(|e| e.email == SENDER && e.names(&a.cert))
    );
    assert!(
        verified
            .recipient_emails
            .iter()
            .any(|e| e.email == RECIPIENT && e.names(&b.cert))
    );
    let inner = wrap::rfc822_unwrap(&verified.content).unwrap();
    assert!(inner.starts_with(b"MIME-Version: 1.0\r\nFrom: Karl Mustersender"));
}

#[test]
fn flipped_ciphertext_or_tag_fails_as_manipulated() {
    let encrypted = data("inputEmail.txt.04.encryptedcms");
    // 1500 lies in the first encryptedContent chunk, 4420 in the GCM tag
    // (`openssl asn1parse -inform DER -in inputEmail.txt.04.encryptedcms`).
    for offset in [1500, 4420] {
        let mut tampered = encrypted.clone();
        tampered[offset] ^= 0x01;
        let a = mailbox_a();
        let error = decrypt::decrypt(&tampered, &a.key, &a.cert).unwrap_err();
        assert!(
            matches!(error, SmimeError::Manipulated(_)),
            "offset {offset}: {error:?}"
        );
        assert_eq!(error.fehlermeldung(), Some(4014));
    }
}

#[test]
fn content_changed_after_signing_fails_verification() {
    let mut signed = data("inputEmail.txt.02.signedcms");
    let at = signed.windows(5).position(|w| w == b"hello").unwrap();
    signed[at] = b'j';
    let error = verify::verify(&signed, &sample_trust()).unwrap_err();
    assert!(
        matches!(error, SmimeError::SignatureInvalid(_)),
        "{error:?}"
    );
    assert_eq!(error.integrity_check_result(), Some("02"));
}

/// A scratch directory with a test CA and a sender signature certificate.
struct TestPki {
    dir: tempfile::TempDir,
}

impl TestPki {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        openssl(
            d,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-subj",
                "/CN=KIM test CA",
                "-days",
                "2",
            ],
        );
        openssl(
            d,
            &[
                "req",
                "-new",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "osig.key",
                "-out",
                "osig.csr",
                "-subj",
                "/CN=Karl Mustersender OSIG",
            ],
        );
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                "osig.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "osig.pem",
                "-days",
                "2",
            ],
        );
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn sender(&self) -> SignerIdentity {
        SignerIdentity {
            email: SENDER.into(),
            cert: cert(&self.path("osig.pem")),
            key: key(&self.path("osig.key")),
            encryption_cert: mailbox_a().cert,
        }
    }

    /// A brainpoolP256r1 mailbox with a self-signed encryption certificate.
    fn ecc_mailbox(&self, email: &str) -> MailboxKey {
        openssl(
            self.dir.path(),
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:brainpoolP256r1",
                "-nodes",
                "-keyout",
                "ecc.key",
                "-out",
                "ecc.pem",
                "-subj",
                "/CN=ECC KIM test",
                "-days",
                "2",
            ],
        );
        MailboxKey {
            email: email.into(),
            cert: cert(&self.path("ecc.pem")),
            key: key(&self.path("ecc.key")),
        }
    }
}

/// The client mail as it comes out of the rfc822 wrap (CRLF, service id).
fn expected_inner() -> Vec<u8> {
    let wrapped = data("inputEmail.txt.01.rfc822wrap");
    wrapped[b"Content-Type: message/rfc822\r\n\r\n".len()..].to_vec()
}

/// Checks a mail of ours with the `openssl cms` command line: decrypt (after
/// removing the unauthAttrs OpenSSL 3.0 cannot parse), then verify.
fn openssl_cli_accepts(pki: &TestPki, outer: &[u8], key_file: &Path, cert_file: &Path) {
    let parsed = mail::parse_outer(outer).unwrap();
    let der = decrypt::without_unauth_attrs(parsed.encrypted_der()).unwrap();
    let d = pki.dir.path();
    std::fs::write(d.join("mail.p7m"), der).unwrap();
    openssl(
        d,
        &[
            "cms",
            "-decrypt",
            "-inform",
            "DER",
            "-in",
            "mail.p7m",
            "-inkey",
            key_file.to_str().unwrap(),
            "-recip",
            cert_file.to_str().unwrap(),
            "-out",
            "signedwrap",
        ],
    );
    let signed = wrap::signed_unwrap(&std::fs::read(d.join("signedwrap")).unwrap()).unwrap();
    assert_profile_oids(&signed);
    std::fs::write(d.join("signed.der"), signed).unwrap();
    openssl(
        d,
        &[
            "cms",
            "-verify",
            "-inform",
            "DER",
            "-in",
            "signed.der",
            "-binary",
            "-CAfile",
            "ca.pem",
            "-out",
            "content",
        ],
    );
    assert_eq!(
        std::fs::read(d.join("content")).unwrap(),
        data("inputEmail.txt.01.rfc822wrap")
    );
}

/// The SignedData carries KIM's signed attributes and PSS, and no
/// SMIMECapabilities.
fn assert_profile_oids(signed: &[u8]) {
    let has = |oid: &[u8]| signed.windows(oid.len()).any(|w| w == oid);
    let pkcs9 =
        |last: &[u8]| [&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09][..], last].concat();
    assert!(has(&pkcs9(&[0x34])), "CMSAlgorithmProtection");
    assert!(has(&pkcs9(&[0x10, 0x02, 0x2f])), "signingCertificateV2");
    assert!(has(&pkcs9(&[0x05])), "signingTime");
    assert!(!has(&pkcs9(&[0x0f])), "no SMIMECapabilities");
    assert!(
        has(&[0x2a, 0x82, 0x14, 0x00, 0x4c, 0x04, 0x81, 0x2d]),
        "recipient-emails"
    );
    assert!(
        has(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a]),
        "RSASSA-PSS"
    );
}

#[test]
fn our_mail_decodes_for_both_recipients_and_with_the_openssl_cli() {
    let pki = TestPki::new();
    let sender = pki.sender();
    let b = mailbox_b();
    let recipients = [RecipientCert {
        email: RECIPIENT.into(),
        cert: b.cert.clone(),
    }];
    let options = EncodeOptions {
        expires: Some("Sat, 20 Sep 2025 12:58:26 +0200".into()),
        ..Default::default()
    };
    let outer =
        smime::encode_kim_mail(&data("inputEmail.txt"), &sender, &recipients, &options).unwrap();

    let text = String::from_utf8(outer.clone()).unwrap();
    let headers = &text[..text.find("\r\n\r\n").unwrap()];
    for expected in [
        "From: Karl Mustersender <mustersender@komle.de>",
        "To: Steffi Musterempfaenger <musterempfaenger@komle.de>",
        "Message-ID: <Mime4j.0.81c65006d0c27d68.1641cd879c4>",
        "Date: Wed, 20 Jun 2020 12:58:26 +0200",
        "Subject: KOM-LE-Nachricht",
        "Content-Type: application/pkcs7-mime; smime-type=authenticated-enveloped-data; name=smime.p7m",
        "Content-Transfer-Encoding: base64",
        "X-KOM-LE-Version: 1.5",
        "X-KIM-CMVersion: 1.5.0",
        "X-KIM-PTVersion: 1.5.0",
        "Expires: Sat, 20 Sep 2025 12:58:26 +0200",
    ] {
        assert!(
            headers.lines().any(|l| l == expected),
            "missing {expected:?} in\n{headers}"
        );
    }
    assert!(
        !headers.contains("Saying Hello"),
        "the real subject must stay inside"
    );

    let der = mail::parse_outer(&outer).unwrap().encrypted_der().to_vec();
    let has = |oid: &[u8]| der.windows(oid.len()).any(|w| w == oid);
    assert!(
        has(&[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x2e]),
        "AES-256-GCM"
    );
    assert!(
        has(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x07]),
        "RSAES-OAEP"
    );

    let trust = [cert(&pki.path("ca.pem"))];
    for mailbox in [mailbox_a(), mailbox_b()] {
        let decoded = smime::decode_kim_mail(&outer, &mailbox, &trust).unwrap();
        assert_eq!(decoded.mail, expected_inner());
        assert_eq!(
            decoded.integrity,
            IntegrityCheck::ValidStatusUnknown,
            "{}",
            mailbox.email
        );
        assert_eq!(decoded.integrity.code(), "07");
        assert_eq!(
            decoded.signer.to_der().unwrap(),
            sender.cert.to_der().unwrap()
        );
        assert_eq!(decoded.recipient_emails.len(), 2);
    }
    // Untrusted signer: intact, but flagged.
    let decoded = smime::decode_kim_mail(&outer, &mailbox_b(), &[]).unwrap();
    assert_eq!(decoded.integrity, IntegrityCheck::CertPathInvalid);
    // A mailbox holding B's key under another address is not a signed recipient.
    let impostor = MailboxKey {
        email: "someone@komle.de".into(),
        ..mailbox_b()
    };
    let decoded = smime::decode_kim_mail(&outer, &impostor, &trust).unwrap();
    assert_eq!(decoded.integrity, IntegrityCheck::RecipientEmailsMismatch);
    // Outer To rewritten: headers differ from the signed inner mail.
    let redirected = text.replacen(
        "To: Steffi Musterempfaenger <musterempfaenger@komle.de>",
        "To: <x@komle.de>",
        1,
    );
    let decoded = smime::decode_kim_mail(redirected.as_bytes(), &mailbox_b(), &trust).unwrap();
    assert_eq!(decoded.integrity, IntegrityCheck::HeadersDiffer);

    openssl_cli_accepts(
        &pki,
        &outer,
        &sample("recipientA/hci-enc-2-kim-bsp.prv.pem"),
        &sample("recipientA/hci-enc-2-kim-bsp.pem"),
    );
    openssl_cli_accepts(
        &pki,
        &outer,
        &sample("recipientB/hci-enc-3-kim-bsp.prv.pem"),
        &sample("recipientB/hci-enc-3-kim-bsp.pem"),
    );
}

#[test]
fn brainpool_recipient_round_trip() {
    let pki = TestPki::new();
    let ecc = pki.ecc_mailbox("ecc@komle.de");
    let recipients = [RecipientCert {
        email: ecc.email.clone(),
        cert: ecc.cert.clone(),
    }];
    let outer = smime::encode_kim_mail(
        &data("inputEmail.txt"),
        &pki.sender(),
        &recipients,
        &Default::default(),
    )
    .unwrap();

    let der = mail::parse_outer(&outer).unwrap().encrypted_der().to_vec();
    // dhSinglePass-stdDH-sha256kdf-scheme (1.3.132.1.11.1), not OpenSSL's SHA-1 default.
    let sha256_kdf = [0x06, 0x06, 0x2b, 0x81, 0x04, 0x01, 0x0b, 0x01];
    assert!(der.windows(sha256_kdf.len()).any(|w| w == sha256_kdf));

    let trust = [cert(&pki.path("ca.pem"))];
    let decoded = smime::decode_kim_mail(&outer, &ecc, &trust).unwrap();
    assert_eq!(decoded.mail, expected_inner());
    assert_eq!(decoded.integrity, IntegrityCheck::ValidStatusUnknown);
    // The sender (RSA, recipient A) reads its own copy too.
    assert!(smime::decode_kim_mail(&outer, &mailbox_a(), &trust).is_ok());
    openssl_cli_accepts(&pki, &outer, &pki.path("ecc.key"), &pki.path("ecc.pem"));

    // Not encrypted for B at all.
    let error = smime::decode_kim_mail(&outer, &mailbox_b(), &trust).unwrap_err();
    assert!(matches!(error, SmimeError::KeyNotAvailable), "{error:?}");
    assert_eq!(error.decryption_result(), Some("01"));
}

#[rustfmt::skip]
#[path = "../../fuzz/src/bridge_targets.rs"]
mod bridge_targets;
#[rustfmt::skip]
#[path = "../../fuzz/src/corpus.rs"]
mod corpus;

/// The fuzz targets (`scripts/fuzz`) over their seeds (gematik's samples
/// among them) and every crash they once found, so each run of the suite
/// repeats them without libFuzzer.
#[test]
fn the_fuzz_targets_pass_their_corpus_and_regressions() {
    let mailbox = mailbox_a();
    for (path, input) in corpus::inputs("kim_mail", &["bridge/tests/data/kim-samples"]) {
        let outcome = std::panic::catch_unwind(|| bridge_targets::kim_mail(&input));
        assert!(
            outcome.is_ok(),
            "fuzz target kim_mail panics on {}",
            path.display()
        );
    }
    for (path, input) in corpus::inputs("smime_decode", &["bridge/tests/data/smime-profil"]) {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            bridge_targets::smime_decode(&input, &mailbox)
        }));
        assert!(
            outcome.is_ok(),
            "fuzz target smime_decode panics on {}",
            path.display()
        );
    }
}
