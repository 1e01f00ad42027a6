//! gematik's recipient-emails attribute (OID 1.2.276.0.76.4.173): which
//! certificate belongs to which mail address. It is signed (so a recipient
//! can check that it was an intended one) and repeated as an unauthenticated
//! attribute of the AuthEnvelopedData.
//!
//! `SET OF SEQUENCE { emailAddress IA5String, rid IssuerAndSerialNumber }`,
//! each entry one attribute value.

use openssl::asn1::Asn1Object;
use openssl::x509::X509Ref;

use super::der::{self, TAG_IA5STRING, TAG_INTEGER, TAG_OID, TAG_SEQUENCE, TAG_SET};
use super::error::SmimeError;

/// The attribute's OID, dotted.
pub(crate) const OID: &str = "1.2.276.0.76.4.173";
/// The attribute's OID, DER.
const OID_DER: &[u8] = &[0x06, 0x08, 0x2a, 0x82, 0x14, 0x00, 0x4c, 0x04, 0x81, 0x2d];

/// One entry: a mail address and the certificate (issuer and serial) used
/// for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientEmail {
    /// The mail address, as written in the attribute.
    pub email: String,
    /// DER of the certificate's issuer Name.
    pub issuer: Vec<u8>,
    /// Content octets of the certificate's serial number INTEGER.
    pub serial: Vec<u8>,
}

impl RecipientEmail {
    /// The entry for `email` using certificate `cert`.
    pub fn new(email: &str, cert: &X509Ref) -> Result<Self, SmimeError> {
        if !email.is_ascii() {
            return Err(SmimeError::InvalidMail(format!(
                "address {email:?} is not ASCII"
            )));
        }
        let (issuer, serial) = issuer_and_serial(cert)?;
        Ok(Self {
            email: email.to_owned(),
            issuer,
            serial,
        })
    }

    /// Whether this entry names `cert` (issuer and serial number).
    pub fn names(&self, cert: &X509Ref) -> bool {
        Self::new(&self.email, cert).is_ok_and(|other| other == *self)
    }

    fn to_der(&self) -> Vec<u8> {
        let rid = issuer_and_serial_der(&self.issuer, &self.serial);
        der::tlv(
            TAG_SEQUENCE,
            &[der::tlv(TAG_IA5STRING, self.email.as_bytes()), rid].concat(),
        )
    }

    fn from_der(value: &der::Tlv<'_>) -> Result<Self, SmimeError> {
        let bad = || SmimeError::SignedFormat("malformed recipient-emails entry".into());
        if value.tag != TAG_SEQUENCE {
            return Err(bad());
        }
        let fields = der::children(value.content)?;
        let [email, rid] = fields.as_slice() else {
            return Err(bad());
        };
        let rid = der::children(rid.content)?;
        let [issuer, serial] = rid.as_slice() else {
            return Err(bad());
        };
        if email.tag != TAG_IA5STRING || issuer.tag != TAG_SEQUENCE || serial.tag != TAG_INTEGER {
            return Err(bad());
        }
        let email = std::str::from_utf8(email.content)
            .ok()
            .filter(|e| e.is_ascii())
            .ok_or_else(bad)?;
        Ok(Self {
            email: email.to_owned(),
            issuer: issuer.raw.to_vec(),
            serial: serial.content.to_vec(),
        })
    }
}

/// A certificate's issuer Name (DER) and serial number (INTEGER content).
fn issuer_and_serial(cert: &X509Ref) -> Result<(Vec<u8>, Vec<u8>), SmimeError> {
    let serial = cert.serial_number().to_bn()?;
    if serial.is_negative() {
        return Err(SmimeError::InvalidMail(
            "negative certificate serial number".into(),
        ));
    }
    let mut serial = serial.to_vec();
    if serial.first().is_none_or(|&b| b & 0x80 != 0) {
        serial.insert(0, 0);
    }
    Ok((cert.issuer_name().to_der()?, serial))
}

fn issuer_and_serial_der(issuer: &[u8], serial: &[u8]) -> Vec<u8> {
    der::tlv(
        TAG_SEQUENCE,
        &[issuer, &der::tlv(TAG_INTEGER, serial)].concat(),
    )
}

/// DER `IssuerAndSerialNumber` of `cert`, as RecipientInfos name it.
pub(crate) fn rid_of(cert: &X509Ref) -> Result<Vec<u8>, SmimeError> {
    let (issuer, serial) = issuer_and_serial(cert)?;
    Ok(issuer_and_serial_der(&issuer, &serial))
}

/// The attribute type as an OpenSSL object, for looking it up.
pub(crate) fn oid() -> Result<Asn1Object, SmimeError> {
    Ok(Asn1Object::from_str(OID)?)
}

/// DER of the whole `Attribute { type, values }`. The values are sorted by
/// encoding, as DER's SET OF requires.
pub(crate) fn attribute_der(entries: &[RecipientEmail]) -> Vec<u8> {
    let mut values: Vec<Vec<u8>> = entries.iter().map(RecipientEmail::to_der).collect();
    values.sort();
    der::tlv(
        TAG_SEQUENCE,
        &[OID_DER.to_vec(), der::tlv(TAG_SET, &values.concat())].concat(),
    )
}

/// Parses one DER `Attribute`; `None` when it is another attribute type.
pub(crate) fn parse_attribute(
    attribute: &der::Tlv<'_>,
) -> Result<Option<Vec<RecipientEmail>>, SmimeError> {
    let fields = der::children(attribute.content)?;
    let [kind, values] = fields.as_slice() else {
        return Err(SmimeError::SignedFormat("malformed Attribute".into()));
    };
    if kind.tag != TAG_OID || kind.raw != OID_DER {
        return Ok(None);
    }
    let entries = der::children(values.content)?
        .iter()
        .map(RecipientEmail::from_der)
        .collect::<Result<_, _>>()?;
    Ok(Some(entries))
}

/// Finds the attribute in the content of a `SET OF Attribute`.
pub(crate) fn find_in_attributes(
    set_content: &[u8],
) -> Result<Option<Vec<RecipientEmail>>, SmimeError> {
    for attribute in der::children(set_content)? {
        if let Some(entries) = parse_attribute(&attribute)? {
            return Ok(Some(entries));
        }
    }
    Ok(None)
}
