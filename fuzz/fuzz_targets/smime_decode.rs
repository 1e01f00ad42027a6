#![no_main]

use std::sync::LazyLock;

use kim_bridge::smime::MailboxKey;
use openssl::{pkey::PKey, x509::X509};

/// gematik's sample mailbox A (`bridge/tests/smime_sample.rs`).
static MAILBOX: LazyLock<MailboxKey> = LazyLock::new(|| {
    let sample = |name: &str| std::fs::read(format!("{}/../bridge/tests/data/smime-profil/recipientA/{name}", env!("CARGO_MANIFEST_DIR"))).expect("reading the sample key");
    MailboxKey {
        email: "mustersender@komle.de".into(),
        cert: X509::from_pem(&sample("hci-enc-2-kim-bsp.pem")).expect("the sample certificate"),
        key: PKey::private_key_from_pem(&sample("hci-enc-2-kim-bsp.prv.pem")).expect("the sample key"),
    }
});

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz::bridge_targets::smime_decode(data, &MAILBOX));
