//! The CMS calls the `openssl` crate does not wrap (STACK.md): choosing
//! RSA-OAEP / RSASSA-PSS / the ECDH KDF hash per recipient or signer needs
//! the RecipientInfo's and SignerInfo's key contexts, which only exist
//! between `CMS_PARTIAL` creation and `CMS_final`. Raw pointers stay in this
//! file, each in an owning or borrowing wrapper.

use std::ffi::{c_int, c_long, c_uchar, c_uint, c_void};
use std::marker::PhantomData;
use std::ptr;

use foreign_types::{ForeignType, ForeignTypeRef};
use openssl::asn1::Asn1ObjectRef;
use openssl::cms::CmsContentInfo;
use openssl::error::ErrorStack;
use openssl::hash::MessageDigest;
use openssl::pkey::{HasPrivate, PKeyRef};
use openssl::pkey_ctx::PkeyCtxRef;
use openssl::x509::{X509, X509Ref};
use openssl_sys::{
    ASN1_OBJECT, BIO, CMS_ContentInfo, EVP_MD, EVP_PKEY, EVP_PKEY_CTX, OPENSSL_STACK,
    X509 as RawX509, X509_ATTRIBUTE,
};

/// `CMS_CADES`: have OpenSSL add the ESS signingCertificateV2 attribute.
pub(crate) const CMS_CADES: c_uint = 0x10_0000;

#[allow(non_camel_case_types)]
enum CMS_SignerInfo {}
#[allow(non_camel_case_types)]
enum CMS_RecipientInfo {}

unsafe extern "C" {
    fn CMS_final(
        cms: *mut CMS_ContentInfo,
        data: *mut BIO,
        dcont: *mut BIO,
        flags: c_uint,
    ) -> c_int;
    fn CMS_add1_signer(
        cms: *mut CMS_ContentInfo,
        signer: *mut RawX509,
        pk: *mut EVP_PKEY,
        md: *const EVP_MD,
        flags: c_uint,
    ) -> *mut CMS_SignerInfo;
    fn CMS_SignerInfo_get0_pkey_ctx(si: *mut CMS_SignerInfo) -> *mut EVP_PKEY_CTX;
    fn CMS_SignerInfo_get0_algs(
        si: *mut CMS_SignerInfo,
        pk: *mut *mut EVP_PKEY,
        signer: *mut *mut RawX509,
        pdig: *mut *mut c_void,
        psig: *mut *mut c_void,
    );
    fn CMS_get0_SignerInfos(cms: *mut CMS_ContentInfo) -> *mut OPENSSL_STACK;
    fn CMS_signed_add1_attr(si: *mut CMS_SignerInfo, attr: *mut X509_ATTRIBUTE) -> c_int;
    fn CMS_signed_get_attr_by_OBJ(
        si: *const CMS_SignerInfo,
        obj: *const ASN1_OBJECT,
        lastpos: c_int,
    ) -> c_int;
    fn CMS_signed_get_attr(si: *const CMS_SignerInfo, loc: c_int) -> *mut X509_ATTRIBUTE;
    fn CMS_add1_recipient_cert(
        cms: *mut CMS_ContentInfo,
        recip: *mut RawX509,
        flags: c_uint,
    ) -> *mut CMS_RecipientInfo;
    fn CMS_RecipientInfo_get0_pkey_ctx(ri: *mut CMS_RecipientInfo) -> *mut EVP_PKEY_CTX;
    fn EVP_PKEY_CTX_set_ecdh_kdf_md(ctx: *mut EVP_PKEY_CTX, md: *const EVP_MD) -> c_int;
    fn d2i_X509_ATTRIBUTE(
        a: *mut *mut X509_ATTRIBUTE,
        pp: *mut *const c_uchar,
        len: c_long,
    ) -> *mut X509_ATTRIBUTE;
    fn i2d_X509_ATTRIBUTE(a: *const X509_ATTRIBUTE, pp: *mut *mut c_uchar) -> c_int;
}

/// Turns a C status (1 ok) into a Result with OpenSSL's error queue.
fn check(status: c_int) -> Result<(), ErrorStack> {
    if status > 0 {
        Ok(())
    } else {
        Err(ErrorStack::get())
    }
}

fn non_null<T>(p: *mut T) -> Result<*mut T, ErrorStack> {
    if p.is_null() {
        Err(ErrorStack::get())
    } else {
        Ok(p)
    }
}

/// A read-only memory BIO over a borrowed slice.
pub(crate) struct MemBio<'a>(*mut BIO, PhantomData<&'a [u8]>);

impl<'a> MemBio<'a> {
    pub(crate) fn from_slice(data: &'a [u8]) -> Result<Self, ErrorStack> {
        let len = c_int::try_from(data.len()).map_err(|_| ErrorStack::get())?;
        // SAFETY: the BIO reads `data` without copying; the PhantomData ties
        // it to `data`'s lifetime, and `len` is the slice's length.
        let bio = non_null(unsafe { openssl_sys::BIO_new_mem_buf(data.as_ptr().cast(), len) })?;
        Ok(Self(bio, PhantomData))
    }

    fn as_ptr(&self) -> *mut BIO {
        self.0
    }
}

impl Drop for MemBio<'_> {
    fn drop(&mut self) {
        // SAFETY: we own the BIO and drop it once.
        unsafe { openssl_sys::BIO_free_all(self.0) };
    }
}

/// An owned X509_ATTRIBUTE, built from our own DER.
struct Attribute(*mut X509_ATTRIBUTE);

impl Attribute {
    fn from_der(der: &[u8]) -> Result<Self, ErrorStack> {
        let len = c_long::try_from(der.len()).map_err(|_| ErrorStack::get())?;
        let mut p = der.as_ptr();
        // SAFETY: d2i reads at most `len` bytes from `p` and returns a new
        // attribute (owned by us) or null.
        let attr = non_null(unsafe { d2i_X509_ATTRIBUTE(ptr::null_mut(), &mut p, len) })?;
        Ok(Self(attr))
    }
}

impl Drop for Attribute {
    fn drop(&mut self) {
        // SAFETY: we own the attribute and drop it once.
        unsafe { openssl_sys::X509_ATTRIBUTE_free(self.0) };
    }
}

/// A SignerInfo inside a CmsContentInfo; borrowing the message keeps the
/// pointer valid.
pub(crate) struct SignerInfo<'a>(*mut CMS_SignerInfo, PhantomData<&'a CmsContentInfo>);

/// A RecipientInfo inside a CmsContentInfo being built.
pub(crate) struct RecipientInfo<'a>(*mut CMS_RecipientInfo, PhantomData<&'a CmsContentInfo>);

/// An empty SignedData (`CMS_sign` with `CMS_PARTIAL`) to add a signer to.
pub(crate) fn partial_signed_data(flags: c_uint) -> Result<CmsContentInfo, ErrorStack> {
    // SAFETY: all-null inputs are allowed with CMS_PARTIAL; the result is
    // owned by the returned CmsContentInfo.
    let cms = non_null(unsafe {
        openssl_sys::CMS_sign(
            ptr::null_mut(),
            ptr::null_mut(),
            ptr::null_mut(),
            ptr::null_mut(),
            flags,
        )
    })?;
    // SAFETY: cms is a fresh, owned CMS_ContentInfo.
    Ok(unsafe { CmsContentInfo::from_ptr(cms) })
}

/// An empty AuthEnvelopedData/EnvelopedData (`CMS_encrypt` with
/// `CMS_PARTIAL`; OpenSSL picks AuthEnvelopedData for an AEAD cipher).
pub(crate) fn partial_enveloped_data(
    cipher: openssl::symm::Cipher,
    flags: c_uint,
) -> Result<CmsContentInfo, ErrorStack> {
    // SAFETY: null certs and data are allowed with CMS_PARTIAL; the cipher
    // pointer is static; the result is owned by the returned CmsContentInfo.
    let cms = non_null(unsafe {
        openssl_sys::CMS_encrypt(ptr::null_mut(), ptr::null_mut(), cipher.as_ptr(), flags)
    })?;
    // SAFETY: cms is a fresh, owned CMS_ContentInfo.
    Ok(unsafe { CmsContentInfo::from_ptr(cms) })
}

/// Adds a signer; `CMS_KEY_PARAM` in `flags` keeps its key context open so
/// the caller can choose the padding.
pub(crate) fn add_signer<'a, T: HasPrivate>(
    cms: &'a mut CmsContentInfo,
    cert: &X509Ref,
    key: &PKeyRef<T>,
    md: MessageDigest,
    flags: c_uint,
) -> Result<SignerInfo<'a>, ErrorStack> {
    // SAFETY: all pointers are live; OpenSSL takes its own references to the
    // certificate and key; the SignerInfo is owned by `cms`.
    let si = non_null(unsafe {
        CMS_add1_signer(
            cms.as_ptr(),
            cert.as_ptr(),
            key.as_ptr(),
            md.as_ptr(),
            flags,
        )
    })?;
    Ok(SignerInfo(si, PhantomData))
}

/// Adds a recipient for `cert` (key transport for RSA, key agreement for EC).
pub(crate) fn add_recipient<'a>(
    cms: &'a mut CmsContentInfo,
    cert: &X509Ref,
    flags: c_uint,
) -> Result<RecipientInfo<'a>, ErrorStack> {
    // SAFETY: both pointers are live; OpenSSL up-refs the certificate; the
    // RecipientInfo is owned by `cms`.
    let ri = non_null(unsafe { CMS_add1_recipient_cert(cms.as_ptr(), cert.as_ptr(), flags) })?;
    Ok(RecipientInfo(ri, PhantomData))
}

/// Encodes the content into a partial message (signs or encrypts).
pub(crate) fn finalize(
    cms: &mut CmsContentInfo,
    content: &[u8],
    flags: c_uint,
) -> Result<(), ErrorStack> {
    let data = MemBio::from_slice(content)?;
    // SAFETY: cms and the BIO are live for the call; no detached content.
    check(unsafe { CMS_final(cms.as_ptr(), data.as_ptr(), ptr::null_mut(), flags) })
}

/// The one SignerInfo of a SignedData; errors when there is not exactly one.
pub(crate) fn single_signer(cms: &CmsContentInfo) -> Result<SignerInfo<'_>, String> {
    // SAFETY: cms is live; the stack (null for non-SignedData) is owned by cms.
    let infos = unsafe { CMS_get0_SignerInfos(cms.as_ptr()) };
    if infos.is_null() {
        return Err("not a SignedData".into());
    }
    // SAFETY: infos is a live stack owned by cms.
    let count = unsafe { openssl_sys::OPENSSL_sk_num(infos) };
    if count != 1 {
        return Err(format!("KIM requires exactly one signer, found {count}"));
    }
    // SAFETY: index 0 exists; the element is a CMS_SignerInfo owned by cms.
    let si = unsafe { openssl_sys::OPENSSL_sk_value(infos, 0) }.cast::<CMS_SignerInfo>();
    Ok(SignerInfo(si, PhantomData))
}

impl SignerInfo<'_> {
    /// The signer's key context (only with `CMS_KEY_PARAM`, before signing).
    pub(crate) fn pkey_ctx(&mut self) -> Result<&mut PkeyCtxRef<()>, ErrorStack> {
        // SAFETY: self.0 is a live SignerInfo.
        let ctx = non_null(unsafe { CMS_SignerInfo_get0_pkey_ctx(self.0) })?;
        // SAFETY: the context is owned by the SignerInfo, which outlives the
        // returned borrow of self.
        Ok(unsafe { PkeyCtxRef::from_ptr_mut(ctx) })
    }

    /// Adds a signed attribute given as a DER `Attribute`.
    pub(crate) fn add_signed_attribute(&mut self, der: &[u8]) -> Result<(), ErrorStack> {
        let attr = Attribute::from_der(der)?;
        // SAFETY: both live; OpenSSL copies the attribute ("add1").
        check(unsafe { CMS_signed_add1_attr(self.0, attr.0) })
    }

    /// The DER `Attribute` with type `oid` among the signed attributes.
    pub(crate) fn signed_attribute(&self, oid: &Asn1ObjectRef) -> Option<Vec<u8>> {
        // SAFETY: both live; -1 searches from the start.
        let loc = unsafe { CMS_signed_get_attr_by_OBJ(self.0, oid.as_ptr(), -1) };
        if loc < 0 {
            return None;
        }
        // SAFETY: loc is a valid index; the attribute is owned by the SignerInfo.
        let attr = unsafe { CMS_signed_get_attr(self.0, loc) };
        if attr.is_null() {
            return None;
        }
        // SAFETY: a null output pointer asks for the length only.
        let len = usize::try_from(unsafe { i2d_X509_ATTRIBUTE(attr, ptr::null_mut()) }).ok()?;
        let mut out = vec![0u8; len];
        let mut p = out.as_mut_ptr();
        // SAFETY: `out` has exactly the `len` bytes i2d reported it writes.
        let written = unsafe { i2d_X509_ATTRIBUTE(attr, &mut p) };
        (usize::try_from(written).ok() == Some(len)).then_some(out)
    }

    /// The signer's certificate, once `CMS_verify` has matched it.
    pub(crate) fn signer_cert(&self) -> Option<X509> {
        let mut cert: *mut RawX509 = ptr::null_mut();
        // SAFETY: self.0 is live; only the signer out-pointer is requested.
        unsafe {
            CMS_SignerInfo_get0_algs(
                self.0,
                ptr::null_mut(),
                &mut cert,
                ptr::null_mut(),
                ptr::null_mut(),
            );
        }
        // SAFETY: a non-null cert is owned by the SignerInfo; to_owned up-refs it.
        (!cert.is_null()).then(|| unsafe { X509Ref::from_ptr(cert) }.to_owned())
    }
}

impl RecipientInfo<'_> {
    /// The key context used to wrap the content key (`CMS_KEY_PARAM`).
    pub(crate) fn pkey_ctx(&mut self) -> Result<&mut PkeyCtxRef<()>, ErrorStack> {
        // SAFETY: self.0 is a live RecipientInfo.
        let ctx = non_null(unsafe { CMS_RecipientInfo_get0_pkey_ctx(self.0) })?;
        // SAFETY: the context is owned by the RecipientInfo, which outlives
        // the returned borrow of self.
        Ok(unsafe { PkeyCtxRef::from_ptr_mut(ctx) })
    }
}

/// Sets the X9.63 KDF hash of an ECDH key agreement context (OpenSSL's
/// default is SHA-1).
pub(crate) fn set_ecdh_kdf_md(
    ctx: &mut PkeyCtxRef<()>,
    md: MessageDigest,
) -> Result<(), ErrorStack> {
    // SAFETY: ctx is a live EVP_PKEY_CTX; the digest is static.
    check(unsafe { EVP_PKEY_CTX_set_ecdh_kdf_md(ctx.as_ptr(), md.as_ptr()) })
}
