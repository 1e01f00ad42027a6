//! Just enough BER/DER for what OpenSSL 3.0's CMS cannot do itself: it
//! declares AuthEnvelopedData's `unauthAttrs` with the wrong tag ([3] instead
//! of RFC 5083's [2]; openssl issues #26101, #31635), so it neither parses
//! KIM's recipient-emails attribute nor writes it. We cut the attribute out
//! before OpenSSL parses and splice it in after OpenSSL encodes.

use super::error::SmimeError;

/// `id-smime-ct-authEnvelopedData` (1.2.840.113549.1.9.16.1.23), DER.
const OID_AUTH_ENVELOPED_DATA: &[u8] = &[
    0x06, 0x0b, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x10, 0x01, 0x17,
];

pub(crate) const TAG_INTEGER: u8 = 0x02;
pub(crate) const TAG_OID: u8 = 0x06;
pub(crate) const TAG_IA5STRING: u8 = 0x16;
pub(crate) const TAG_SEQUENCE: u8 = 0x30;
pub(crate) const TAG_SET: u8 = 0x31;
/// `[0]` constructed: ContentInfo's explicit content.
const TAG_CONTENT: u8 = 0xa0;
/// `[1] IMPLICIT` constructed: AuthEnvelopedData's authAttrs, and the
/// KeyAgreeRecipientInfo choice of RecipientInfo.
const TAG_AUTH_ATTRS: u8 = 0xa1;
/// `[2] IMPLICIT` constructed: AuthEnvelopedData's unauthAttrs.
const TAG_UNAUTH_ATTRS: u8 = 0xa2;

/// One BER element: its tag, its content (without an indefinite length's
/// end-of-contents octets) and all its bytes.
#[derive(Clone, Copy)]
pub(crate) struct Tlv<'a> {
    pub tag: u8,
    pub content: &'a [u8],
    pub raw: &'a [u8],
}

fn malformed(what: &str) -> SmimeError {
    SmimeError::EncryptedFormat(format!("BER: {what}"))
}

/// Reads the element at the start of `input`; returns it and the rest.
pub(crate) fn read_tlv(input: &[u8]) -> Result<(Tlv<'_>, &[u8]), SmimeError> {
    let (&tag, rest) = input
        .split_first()
        .ok_or_else(|| malformed("truncated tag"))?;
    if tag & 0x1f == 0x1f {
        return Err(malformed("high tag numbers are not used in CMS"));
    }
    let (&first, rest) = rest
        .split_first()
        .ok_or_else(|| malformed("truncated length"))?;
    let header = input.len() - rest.len();
    if first == 0x80 {
        if tag & 0x20 == 0 {
            return Err(malformed("indefinite length on a primitive element"));
        }
        // Indefinite length: children up to the end-of-contents octets.
        let mut cursor = rest;
        loop {
            if let [0, 0, after @ ..] = cursor {
                let content_len = rest.len() - cursor.len();
                let total = header + content_len + 2;
                let element = Tlv {
                    tag,
                    content: &rest[..content_len],
                    raw: &input[..total],
                };
                return Ok((element, after));
            }
            cursor = read_tlv(cursor)?.1;
        }
    }
    let (len, rest) = if first & 0x80 == 0 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n > 4 || rest.len() < n {
            return Err(malformed("bad length"));
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return Err(malformed("element longer than its input"));
    }
    let header = input.len() - rest.len();
    let element = Tlv {
        tag,
        content: &rest[..len],
        raw: &input[..header + len],
    };
    Ok((element, &rest[len..]))
}

/// Reads exactly one element filling `input`, with tag `tag`.
pub(crate) fn read_one(input: &[u8], tag: u8) -> Result<Tlv<'_>, SmimeError> {
    let (element, rest) = read_tlv(input)?;
    if element.tag != tag || !rest.is_empty() {
        return Err(malformed(&format!(
            "expected one element with tag {tag:#04x}"
        )));
    }
    Ok(element)
}

/// The elements of a constructed element's content.
pub(crate) fn children(mut content: &[u8]) -> Result<Vec<Tlv<'_>>, SmimeError> {
    let mut out = Vec::new();
    while !content.is_empty() {
        let (element, rest) = read_tlv(content)?;
        out.push(element);
        content = rest;
    }
    Ok(out)
}

/// Encodes one DER element.
pub(crate) fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let len = content.len();
    let mut out = Vec::with_capacity(len + 6);
    out.push(tag);
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

/// Rewrites the element list of an AuthEnvelopedData ContentInfo with `edit`
/// and re-encodes the three enclosing headers with definite lengths (the
/// children keep their encoding, so the MAC'd bytes do not change).
fn rewrite_auth_enveloped<'a, R>(
    der: &'a [u8],
    edit: impl FnOnce(&mut Vec<Tlv<'a>>) -> Result<R, SmimeError>,
) -> Result<(Vec<u8>, R), SmimeError> {
    let content_info = children(read_one(der, TAG_SEQUENCE)?.content)?;
    let [oid, explicit] = content_info.as_slice() else {
        return Err(malformed("ContentInfo is not { contentType, [0] content }"));
    };
    if oid.raw != OID_AUTH_ENVELOPED_DATA || explicit.tag != TAG_CONTENT {
        return Err(SmimeError::EncryptedFormat(
            "not an AuthEnvelopedData (KIM 1.5 needs AES-GCM)".into(),
        ));
    }
    let mut elements = children(read_one(explicit.content, TAG_SEQUENCE)?.content)?;
    let result = edit(&mut elements)?;
    let body: Vec<u8> = elements
        .iter()
        .flat_map(|e| e.raw.iter().copied())
        .collect();
    let explicit = tlv(TAG_CONTENT, &tlv(TAG_SEQUENCE, &body));
    let rebuilt = tlv(TAG_SEQUENCE, &[oid.raw, &explicit].concat());
    Ok((rebuilt, result))
}

/// An AuthEnvelopedData split for OpenSSL 3.0.
pub(crate) struct SplitEnvelope {
    /// The DER without `unauthAttrs`.
    pub cleaned: Vec<u8>,
    /// The content of the removed SET OF Attribute, if any.
    pub unauth_attrs: Option<Vec<u8>>,
    /// Every recipient's IssuerAndSerialNumber (key transport and key
    /// agreement), DER.
    pub recipient_ids: Vec<Vec<u8>>,
}

/// Removes `unauthAttrs` so OpenSSL 3.0 can parse the rest, and lists the
/// recipients (OpenSSL does not always say "not for this key" distinctly).
pub(crate) fn split_envelope(der: &[u8]) -> Result<SplitEnvelope, SmimeError> {
    let (cleaned, (unauth_attrs, recipient_ids)) = rewrite_auth_enveloped(der, |elements| {
        if elements.iter().any(|e| e.tag == TAG_AUTH_ATTRS) {
            // OpenSSL 3.0 would neither parse nor authenticate them; KIM sends none.
            return Err(SmimeError::EncryptedFormat(
                "authAttrs are not supported".into(),
            ));
        }
        let infos = elements
            .iter()
            .find(|e| e.tag == TAG_SET)
            .ok_or_else(|| malformed("no recipientInfos"))?;
        let recipient_ids = recipient_ids(infos.content)?;
        let unauth = elements
            .iter()
            .find(|e| e.tag == TAG_UNAUTH_ATTRS)
            .map(|e| e.content.to_vec());
        elements.retain(|e| e.tag != TAG_UNAUTH_ATTRS);
        Ok((unauth, recipient_ids))
    })?;
    Ok(SplitEnvelope {
        cleaned,
        unauth_attrs,
        recipient_ids,
    })
}

/// IssuerAndSerialNumbers of KeyTransRecipientInfos (SEQUENCE) and of the
/// RecipientEncryptedKeys of KeyAgreeRecipientInfos (`[1]`, whose last field
/// they are). Subject-key-identifier rids and other kinds are skipped.
fn recipient_ids(infos: &[u8]) -> Result<Vec<Vec<u8>>, SmimeError> {
    let mut ids = Vec::new();
    for info in children(infos)? {
        let fields = children(info.content)?;
        match (info.tag, fields.as_slice()) {
            (TAG_SEQUENCE, [_version, rid, ..]) if rid.tag == TAG_SEQUENCE => {
                ids.push(rid.raw.to_vec())
            }
            (TAG_AUTH_ATTRS, [.., keys]) => {
                for key in children(keys.content)? {
                    if let Some(rid) = children(key.content)?
                        .first()
                        .filter(|rid| rid.tag == TAG_SEQUENCE)
                    {
                        ids.push(rid.raw.to_vec());
                    }
                }
            }
            _ => {}
        }
    }
    Ok(ids)
}

/// Appends `unauthAttrs` (the content of a SET OF Attribute) to an
/// AuthEnvelopedData that has none.
pub(crate) fn append_unauth_attrs(der: &[u8], attributes: &[u8]) -> Result<Vec<u8>, SmimeError> {
    let field = tlv(TAG_UNAUTH_ATTRS, attributes);
    let (out, ()) = rewrite_auth_enveloped(der, |elements| {
        if elements.iter().any(|e| e.tag == TAG_UNAUTH_ATTRS) {
            return Err(malformed("unauthAttrs already present"));
        }
        elements.push(Tlv {
            tag: TAG_UNAUTH_ATTRS,
            content: attributes,
            raw: &field,
        });
        Ok(())
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lengths_round_trip() {
        for len in [0, 1, 127, 128, 255, 256, 70_000] {
            let content = vec![7u8; len];
            let encoded = tlv(0x04, &content);
            let (element, rest) = read_tlv(&encoded).unwrap();
            assert!(rest.is_empty());
            assert_eq!(element.content.len(), len);
        }
    }

    #[test]
    fn indefinite_lengths_and_truncation() {
        let indefinite = [0x30, 0x80, 0x02, 0x01, 0x05, 0x00, 0x00, 0xff];
        let (element, rest) = read_tlv(&indefinite).unwrap();
        assert_eq!(element.content, &[0x02, 0x01, 0x05]);
        assert_eq!(rest, &[0xff]);
        assert!(read_tlv(&[0x30, 0x80, 0x02, 0x01]).is_err());
        assert!(read_tlv(&[0x04, 0x84, 0xff, 0xff, 0xff, 0xff]).is_err());
    }
}
