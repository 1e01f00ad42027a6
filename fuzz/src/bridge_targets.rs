//! The bridge's fuzz targets as plain functions: `fuzz_targets/` hands them
//! libFuzzer's input, `bridge/tests/smime_sample.rs` runs them over the seed
//! corpus and the crash regressions on every test run. Mail comes from the
//! KIM side, which the bridge does not control: nothing may panic on it.

use kim_bridge::{kim::incoming, smime};

/// A received mail (POP3 `RETR`): parsed and classified, or refused.
pub fn kim_mail(data: &[u8]) {
    if let Ok(mail) = incoming::parse(data) {
        let _ = mail.from.as_ref().and_then(|from| from.kim_address());
    }
}

/// A KOM-LE mail for `mailbox`: the outer mail, then the CMS
/// AuthEnvelopedData inside it, or the input taken as that DER directly.
pub fn smime_decode(data: &[u8], mailbox: &smime::MailboxKey) {
    if let Ok(outer) = smime::mail::parse_outer(data) {
        let _ = smime::decrypt::decrypt(outer.encrypted_der(), &mailbox.key, &mailbox.cert);
    }
    let _ = smime::decrypt::decrypt(data, &mailbox.key, &mailbox.cert);
}
