//! The OpenID Connect relying party for insured persons' login (TI-M ePA:
//! the insurer's sectoral IdP vouches for the KVNR): the authorization code
//! flow with PKCE, sent as a pushed authorization request (RFC 9126) where
//! the IdP advertises `pushed_authorization_request_endpoint`.
//!
//! The `openidconnect` crate does discovery, PKCE, the code exchange and
//! every id_token check (signature against the IdP's JWKS, `iss`, `aud`,
//! `exp`, `nonce`); this module only wires it to our HTTP client and adds
//! PAR, which the crate lacks. Metadata and keys are fetched for every
//! login: logins are rare, and a key rollover at the IdP then needs no
//! cache invalidation. What a login must remember between its two requests
//! is the caller's to store (`client_api/sso.rs`, in PostgreSQL), since the
//! callback may reach another worker.

use std::{pin::Pin, time::Duration};

use base64::{Engine as _, engine::general_purpose::STANDARD};
use http::StatusCode;
use openidconnect::{
    AdditionalClaims, AdditionalProviderMetadata, AsyncHttpClient, AuthorizationCode, Client, ClientId, ClientSecret, CsrfToken, EmptyExtraTokenFields,
    EndpointMaybeSet, EndpointNotSet, EndpointSet, HttpRequest, HttpResponse, IdTokenFields, IssuerUrl, Nonce, PkceCodeChallenge,
    PkceCodeVerifier, ProviderMetadata, RedirectUrl, Scope, StandardErrorResponse, StandardTokenResponse, TokenResponse as _,
    core::{
        CoreAuthDisplay, CoreAuthPrompt, CoreAuthenticationFlow, CoreClaimName, CoreClaimType, CoreClientAuthMethod, CoreErrorResponseType,
        CoreGenderClaim, CoreGrantType, CoreJsonWebKey, CoreJweContentEncryptionAlgorithm, CoreJweKeyManagementAlgorithm,
        CoreJwsSigningAlgorithm, CoreResponseMode, CoreResponseType, CoreRevocableToken, CoreRevocationErrorResponse,
        CoreSubjectIdentifierType, CoreTokenIntrospectionResponse, CoreTokenType,
    },
};
use ruma::api::error::ErrorKind;
use serde::{Deserialize, Serialize};
use url::Url;

use crate::{
    config::OidcProviderConfig,
    http::{ApiError, ApiResult},
    tim::accounts::Kvnr,
};

/// How long a request to the IdP may take.
const IDP_TIMEOUT: Duration = Duration::from_secs(10);

/// The `pushed_authorization_request_endpoint` of the discovery document,
/// which `openidconnect` does not know.
#[derive(Clone, Debug, Deserialize, Serialize)]
struct ParEndpoint {
    pushed_authorization_request_endpoint: Option<Url>,
}

impl AdditionalProviderMetadata for ParEndpoint {}

type Metadata = ProviderMetadata<
    ParEndpoint,
    CoreAuthDisplay,
    CoreClientAuthMethod,
    CoreClaimName,
    CoreClaimType,
    CoreGrantType,
    CoreJweContentEncryptionAlgorithm,
    CoreJweKeyManagementAlgorithm,
    CoreJsonWebKey,
    CoreResponseMode,
    CoreResponseType,
    CoreSubjectIdentifierType,
>;

/// The id_token's claims beyond the standard ones, kept by name: which
/// claim carries the KVNR is configured.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(transparent)]
struct OtherClaims(serde_json::Map<String, serde_json::Value>);

impl AdditionalClaims for OtherClaims {}

type TokenResponse = StandardTokenResponse<
    IdTokenFields<OtherClaims, EmptyExtraTokenFields, CoreGenderClaim, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm>,
    CoreTokenType,
>;

type OidcClient = Client<
    OtherClaims,
    CoreAuthDisplay,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJsonWebKey,
    CoreAuthPrompt,
    StandardErrorResponse<CoreErrorResponseType>,
    TokenResponse,
    CoreTokenIntrospectionResponse,
    CoreRevocableToken,
    CoreRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// Where to send the browser, and the secrets the callback needs back.
pub struct Authorization {
    /// The IdP's authorization endpoint with the request (or its PAR
    /// `request_uri`).
    pub location: Url,
    pub state: String,
    pub nonce: String,
    pub pkce_verifier: String,
}

/// Who the IdP says logged in.
#[derive(Debug)]
pub struct Identity {
    pub kvnr: Kvnr,
    pub display_name: Option<String>,
}

/// This worker's client of the configured IdPs.
#[derive(Clone, Debug)]
pub struct RelyingParty {
    http: HttpClient,
}

impl RelyingParty {
    pub fn new() -> anyhow::Result<Self> {
        // No redirects: OAuth endpoints answer directly, and a redirect must
        // not carry the client secret elsewhere.
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).timeout(IDP_TIMEOUT).build()?;
        Ok(Self { http: HttpClient(http) })
    }

    /// Starts a login at `provider`: a fresh state, nonce and PKCE
    /// verifier, pushed to the IdP when it offers PAR. `callback` is the
    /// redirect URI registered at the IdP.
    pub async fn authorize(&self, provider: &OidcProviderConfig, callback: &Url) -> ApiResult<Authorization> {
        let metadata = self.discover(provider).await?;
        let par_endpoint = metadata.additional_metadata().pushed_authorization_request_endpoint.clone();
        let authorization_endpoint = metadata.authorization_endpoint().url().clone();
        let client = self.client(provider, metadata, callback);
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let scopes = provider.scopes.iter().filter(|scope| *scope != "openid").map(|scope| Scope::new(scope.clone()));
        let (url, state, nonce) = client
            .authorize_url(CoreAuthenticationFlow::AuthorizationCode, CsrfToken::new_random, Nonce::new_random)
            .add_scopes(scopes)
            .set_pkce_challenge(challenge)
            .url();
        let location = match par_endpoint {
            Some(endpoint) => self.push(provider, endpoint, &url, authorization_endpoint).await?,
            None => url,
        };
        Ok(Authorization { location, state: state.into_secret(), nonce: nonce.secret().clone(), pkce_verifier: verifier.into_secret() })
    }

    /// Finishes a login: exchanges the code (with the PKCE verifier), checks
    /// the id_token and reads the KVNR and display name from it.
    pub async fn identify(&self, provider: &OidcProviderConfig, callback: &Url, code: &str, pkce_verifier: &str, nonce: &str) -> ApiResult<Identity> {
        let metadata = self.discover(provider).await?;
        let client = self.client(provider, metadata, callback);
        let response = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|err| unavailable(provider, err))?
            .set_pkce_verifier(PkceCodeVerifier::new(pkce_verifier.to_owned()))
            .request_async(&self.http)
            .await
            .map_err(|err| match err {
                // The IdP refused the code (used, expired, not for us).
                openidconnect::RequestTokenError::ServerResponse(refusal) => {
                    tracing::info!(provider = provider.id, error = %refusal, "code exchange refused");
                    ApiError::forbidden("The identity provider refused the login")
                }
                other => unavailable(provider, other),
            })?;
        let refused = |reason: String| {
            tracing::warn!(provider = provider.id, %reason, "id_token refused");
            ApiError::forbidden("The identity provider's answer did not verify")
        };
        let id_token = response.id_token().ok_or_else(|| refused("no id_token".to_owned()))?;
        let claims = id_token.claims(&client.id_token_verifier(), &Nonce::new(nonce.to_owned())).map_err(|err| refused(err.to_string()))?;
        // Standard and other claims alike, so either kind may be configured.
        let claims = serde_json::to_value(claims)?;
        let claim = |name: &str| claims.get(name).and_then(|value| value.as_str()).map(str::to_owned);
        let kvnr = claim(&provider.kvnr_claim).ok_or_else(|| refused(format!("no {} claim", provider.kvnr_claim)))?;
        let kvnr = Kvnr::parse(&kvnr).map_err(|_| refused(format!("{} is not a KVNR", provider.kvnr_claim)))?;
        let display_name = claim(&provider.display_name_claim).filter(|name| !name.trim().is_empty());
        Ok(Identity { kvnr, display_name })
    }

    async fn discover(&self, provider: &OidcProviderConfig) -> ApiResult<Metadata> {
        let issuer = IssuerUrl::new(provider.issuer.clone()).map_err(|err| unavailable(provider, err))?;
        Metadata::discover_async(issuer, &self.http).await.map_err(|err| unavailable(provider, err))
    }

    fn client(&self, provider: &OidcProviderConfig, metadata: Metadata, callback: &Url) -> OidcClient {
        let secret = ClientSecret::new(provider.client_secret.clone());
        OidcClient::from_provider_metadata(metadata, ClientId::new(provider.client_id.clone()), Some(secret)).set_redirect_uri(RedirectUrl::from_url(callback.clone()))
    }

    /// Pushes the authorization request's parameters to the IdP (RFC 9126,
    /// with the client's credentials as at the token endpoint) and returns
    /// the authorization URL that only names the pushed request.
    async fn push(&self, provider: &OidcProviderConfig, endpoint: Url, request: &Url, mut authorization_endpoint: Url) -> ApiResult<Url> {
        #[derive(Deserialize)]
        struct Pushed {
            request_uri: String,
        }
        let body = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(request.query_pairs()).finish();
        let response = self
            .http
            .0
            .post(endpoint)
            .header(http::header::AUTHORIZATION, basic_auth(&provider.client_id, &provider.client_secret))
            .header(http::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .map_err(|err| unavailable(provider, err))?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            return Err(unavailable(provider, format!("pushed authorization request: {status} {text}")));
        }
        let pushed: Pushed = response.json().await.map_err(|err| unavailable(provider, err))?;
        authorization_endpoint.query_pairs_mut().append_pair("client_id", &provider.client_id).append_pair("request_uri", &pushed.request_uri);
        Ok(authorization_endpoint)
    }
}

/// `client_secret_basic` (RFC 6749 2.3.1: both parts form-encoded first).
fn basic_auth(client_id: &str, secret: &str) -> String {
    let encode = |text: &str| url::form_urlencoded::byte_serialize(text.as_bytes()).collect::<String>();
    format!("Basic {}", STANDARD.encode(format!("{}:{}", encode(client_id), encode(secret))))
}

/// The IdP could not be asked (down, misconfigured, answering nonsense):
/// 502, logged with the cause, not the client's fault.
fn unavailable(provider: &OidcProviderConfig, err: impl std::fmt::Display) -> ApiError {
    tracing::error!(provider = provider.id, error = %err, "identity provider unavailable");
    ApiError::new(StatusCode::BAD_GATEWAY, ErrorKind::Unknown, "The identity provider is unavailable")
}

/// `openidconnect`'s HTTP requests through our reqwest (the crate's own
/// reqwest feature would pull an older reqwest).
#[derive(Clone, Debug)]
struct HttpClient(reqwest::Client);

impl<'c> AsyncHttpClient<'c> for HttpClient {
    type Error = reqwest::Error;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, reqwest::Error>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(send(&self.0, request))
    }
}

async fn send(http: &reqwest::Client, request: HttpRequest) -> Result<HttpResponse, reqwest::Error> {
    let response = http.execute(request.try_into()?).await?;
    let status = response.status();
    let headers = response.headers().clone();
    let mut answer = HttpResponse::new(response.bytes().await?.to_vec());
    *answer.status_mut() = status;
    *answer.headers_mut() = headers;
    Ok(answer)
}
