//! `/v1/admin/…`: the registry, for callers with role `admin` (docs/identity.md).
//!
//! `POST` on a collection creates a row and answers 201 with it; `POST …/{id}/{action}`
//! changes a status and answers the row after. Every change is audited by the store, in the
//! same transaction, with the admin as its author.

use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::keys::random_bytes;
use crate::auth::{Caller, now_millis};
use crate::error::{ApiError, ApiJson, ErrorBody};
use crate::registry::{
    Agency, AgencyKind, AuditEntry, Certificate, CertificateStatus, Device, Entrustment,
    EntrustmentItem, EntrustmentStatus, Matter, Officer, Role, timestamp,
};
use crate::routes::enroll::{ADMIN_CODE_LIFETIME_MS, enrollment_code_hash, new_enrollment_code};
use crate::routes::openapi::Binary;
use crate::routes::run_blocking;
use crate::state::AppState;
use crate::store::registry::{self, Author};
use crate::store::{Store, StoreError, devices};

/// The admin routes.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/admin/agencies", get(list_agencies).post(create_agency))
        .route("/v1/admin/matters", get(list_matters).post(create_matter))
        .route("/v1/admin/entrustments", get(list_entrustments).post(create_entrustment))
        .route("/v1/admin/entrustments/{id}/{action}", post(change_entrustment))
        .route("/v1/admin/officers", get(list_officers).post(create_officer))
        .route("/v1/admin/officers/{id}/move", post(move_officer))
        .route("/v1/admin/certificates", get(list_certificates).post(create_certificate))
        .route("/v1/admin/certificates/{cert_no}/{action}", post(change_certificate))
        .route("/v1/admin/devices", get(list_devices))
        .route("/v1/admin/devices/{id}/{action}", post(change_device))
        .route("/v1/admin/enroll-codes", post(issue_enrollment_code))
        .route("/v1/admin/audit", get(list_audit))
}

/// A caller with role `admin`; anyone else gets 403 `forbidden`.
struct Admin(Caller);

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = Caller::from_request_parts(parts, state).await?;
        caller.require(Role::Admin)?;
        Ok(Self(caller))
    }
}

/// Runs store work on a blocking thread.
async fn with_store<T: Send + 'static>(
    state: &AppState,
    work: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    let store = state.store().clone();
    run_blocking(move || Ok(work(&store)?)).await
}

/// Runs one audited registry change in a write transaction, authored by the admin.
async fn change_registry<T: Send + 'static>(
    state: &AppState,
    admin: &Admin,
    work: impl FnOnce(&rusqlite::Connection, &Author<'_>) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    let who = admin.0.officer.clone();
    with_store(state, move |store| {
        store.write(move |tx| work(tx, &Author { who: &who, now: now_millis() }))
    })
    .await
}

fn created<T: Serialize>(row: T) -> (StatusCode, Json<T>) {
    (StatusCode::CREATED, Json(row))
}

fn generated_id(prefix: &str) -> String {
    format!("{prefix}-{}", hex::encode(random_bytes::<4>()))
}

fn path_segments(
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<(String, String), ApiError> {
    path.map(|Path(segments)| segments).map_err(|_| ApiError::NotFound)
}

fn parse_time(text: &str, end_of_day: bool, field: &str) -> Result<i64, ApiError> {
    let parsed = if end_of_day { timestamp::parse_end(text) } else { timestamp::parse_start(text) };
    parsed.ok_or_else(|| {
        ApiError::MalformedJson(format!("{field} {text:?} is not an RFC 3339 time or a date"))
    })
}

fn parse_term(valid_from: &str, valid_to: &str) -> Result<(i64, i64), ApiError> {
    let from = parse_time(valid_from, false, "valid_from")?;
    let to = parse_time(valid_to, true, "valid_to")?;
    if to < from {
        return Err(ApiError::MalformedJson("valid_to is before valid_from".to_owned()));
    }
    Ok((from, to))
}

// ---- agencies ---------------------------------------------------------------------------------

/// `POST /v1/admin/agencies`.
#[derive(Debug, Deserialize, ToSchema)]
struct NewAgency {
    /// Generated as `a-…` when absent.
    id: Option<String>,
    /// The agency's name.
    name: String,
    /// The agency's code (代字), used in document numbers.
    code: String,
    /// `county_dept`, `township` or `justice_bureau`.
    #[schema(value_type = String, example = "township")]
    kind: AgencyKind,
    /// The agency above it, if any.
    parent: Option<String>,
    /// Its complaint hotline, published.
    hotline: Option<String>,
}

#[utoipa::path(
    get,
    path = "/v1/admin/agencies",
    tag = "admin",
    responses(
        (status = 200, description = "Every agency", body = Vec<Agency>),
        (status = 401, description = "Missing, bad or expired token or proof", body = ErrorBody),
        (status = 403, description = "`forbidden`: the caller is not an admin", body = ErrorBody),
        (status = "5XX", description = "A server fault", body = ErrorBody),
    )
)]
async fn list_agencies(
    State(state): State<AppState>,
    _: Admin,
) -> Result<Json<Vec<Agency>>, ApiError> {
    Ok(Json(with_store(&state, |store| store.read(|tx| registry::list_agencies(tx))).await?))
}

#[utoipa::path(
    post,
    path = "/v1/admin/agencies",
    tag = "admin",
    request_body(content = NewAgency, description = "The agency; `id` is generated when absent"),
    responses(
        (status = 201, description = "The new agency", body = Agency),
        (status = 401, description = "Missing, bad or expired token or proof", body = ErrorBody),
        (status = 403, description = "`forbidden`: the caller is not an admin", body = ErrorBody),
        (status = 400, description = "`malformed_json`", body = ErrorBody),
        (status = 409, description = "`already_exists`", body = ErrorBody),
        (status = 422, description = "`unknown_reference`", body = ErrorBody),
        (status = "5XX", description = "A server fault", body = ErrorBody),
    )
)]
async fn create_agency(
    State(state): State<AppState>,
    admin: Admin,
    ApiJson(new): ApiJson<NewAgency>,
) -> Result<(StatusCode, Json<Agency>), ApiError> {
    let agency = Agency {
        id: new.id.unwrap_or_else(|| generated_id("a")),
        name: new.name,
        code: new.code,
        kind: new.kind,
        parent: new.parent,
        hotline: new.hotline,
    };
    let row = change_registry(&state, &admin, move |tx, change| {
        registry::insert_agency(tx, change, &agency)
    })
    .await?;
    Ok(created(row))
}

// ---- matters ----------------------------------------------------------------------------------

#[utoipa::path(
    get,
    path = "/v1/admin/matters",
    tag = "admin",
    responses(
        (status = 200, description = "Every matter", body = Vec<Matter>),
        (status = 401, description = "Missing, bad or expired token or proof", body = ErrorBody),
        (status = 403, description = "`forbidden`: the caller is not an admin", body = ErrorBody),
        (status = "5XX", description = "A server fault", body = ErrorBody),
    )
)]
async fn list_matters(
    State(state): State<AppState>,
    _: Admin,
) -> Result<Json<Vec<Matter>>, ApiError> {
    Ok(Json(with_store(&state, |store| store.read(|tx| registry::list_matters(tx))).await?))
}

#[utoipa::path(
    post,
    path = "/v1/admin/matters",
    tag = "admin",
    request_body(content = Matter, description = "The matter"),
    responses(
        (status = 201, description = "The new matter", body = Matter),
        (status = 401, description = "Missing, bad or expired token or proof", body = ErrorBody),
        (status = 403, description = "`forbidden`: the caller is not an admin", body = ErrorBody),
        (status = 400, description = "`malformed_json`", body = ErrorBody),
        (status = 409, description = "`already_exists`", body = ErrorBody),
        (status = "5XX", description = "A server fault", body = ErrorBody),
    )
)]
async fn create_matter(
    State(state): State<AppState>,
    admin: Admin,
    ApiJson(matter): ApiJson<Matter>,
) -> Result<(StatusCode, Json<Matter>), ApiError> {
    let row = change_registry(&state, &admin, move |tx, change| {
        registry::insert_matter(tx, change, &matter)
    })
    .await?;
    Ok(created(row))
}

// ---- entrustments -----------------------------------------------------------------------------

/// `POST /v1/admin/entrustments`.
#[derive(Debug, Deserialize, ToSchema)]
struct NewEntrustment {
    /// Generated when absent.
    id: Option<String>,
    /// The county department that entrusts.
    entrusting_agency: String,
    /// The township entrusted.
    township: String,
    /// The legal basis of the agreement.
    legal_basis: String,
    /// Start of the term: RFC 3339 or a date.
    valid_from: String,
    /// End of the term: RFC 3339 or a date (inclusive).
    valid_to: String,
    /// `draft`, `signed`, `filed`, `published`, `active`, …; `registry::EntrustmentStatus`.
    status: Option<EntrustmentStatus>,
    /// The matters entrusted, each `{"matter", "actions": [...]}`.
    items: Vec<EntrustmentItem>,
}

#[utoipa::path(
    get,
    path = "/v1/admin/entrustments",
    tag = "admin",
    responses(
        (status = 200, description = "Every entrustment agreement", body = Vec<Entrustment>),
        (status = 401, description = "Missing, bad or expired token or proof", body = ErrorBody),
        (status = 403, description = "`forbidden`: the caller is not an admin", body = ErrorBody),
        (status = "5XX", description = "A server fault", body = ErrorBody),
    )
)]
async fn list_entrustments(
    State(state): State<AppState>,
    _: Admin,
) -> Result<Json<Vec<Entrustment>>, ApiError> {
    Ok(Json(with_store(&state, |store| store.read(|tx| registry::list_entrustments(tx))).await?))
}

#[utoipa::path(
    post,
    path = "/v1/admin/entrustments",
    tag = "admin",
    request_body(content = NewEntrustment, description = "The agreement; `id` is generated when absent"),
    responses(
        (status = 201, description = "The new agreement", body = Entrustment),
        (status = 401, description = "Missing, bad or expired token or proof", body = ErrorBody),
        (status = 403, description = "`forbidden`: the caller is not an admin", body = ErrorBody),
        (status = 400, description = "`malformed_json`", body = ErrorBody),
        (status = 409, description = "`already_exists`", body = ErrorBody),
        (status = 422, description = "`unknown_reference`, or `not_entrustable`: an item grants an action that is never entrusted", body = ErrorBody),
        (status = "5XX", description = "A server fault", body = ErrorBody),
    )
)]
async fn create_entrustment(
    State(state): State<AppState>,
    admin: Admin,
    ApiJson(new): ApiJson<NewEntrustment>,
) -> Result<(StatusCode, Json<Entrustment>), ApiError> {
    if let Some(action) = new
        .items
        .iter()
        .flat_map(|item| item.actions.iter())
        .find(|action| !action.is_entrustable())
    {
        return Err(ApiError::NotEntrustable(action.as_str().to_owned()));
    }
    let (valid_from, valid_to) = parse_term(&new.valid_from, &new.valid_to)?;
    let entrustment = Entrustment {
        id: new.id.unwrap_or_else(|| generated_id("e")),
        entrusting_agency: new.entrusting_agency,
        township: new.township,
        legal_basis: new.legal_basis,
        valid_from,
        valid_to,
        status: new.status.unwrap_or(EntrustmentStatus::Draft),
        items: new.items,
    };
    let row = change_registry(&state, &admin, move |tx, change| {
        registry::insert_entrustment(tx, change, &entrustment)
    })
    .await?;
    Ok(created(row))
}

#[utoipa::path(
    post,
    path = "/v1/admin/entrustments/{id}/{action}",
    tag = "admin",
    request_body(
        content = Option<Binary>,
        content_type = "application/octet-stream",
        description = "Ignored; may be empty"
    ),
    params(
        ("id" = String, Path, description = "The agreement id"),
        ("action" = String, Path, description = "`suspend`, `revoke` or `activate`"),
    ),
    responses(
        (status = 200, description = "The agreement after the change", body = Entrustment),
        (status = 401, description = "Missing, bad or expired token or proof", body = ErrorBody),
        (status = 403, description = "`forbidden`: the caller is not an admin", body = ErrorBody),
        (status = 404, description = "`not_found`: no such object, or no such action", body = ErrorBody),
        (status = "5XX", description = "A server fault", body = ErrorBody),
    )
)]
async fn change_entrustment(
    State(state): State<AppState>,
    admin: Admin,
    path: Result<Path<(String, String)>, PathRejection>,
    // Unused, but read: an answer that left a request body unread would close the connection
    // under a client about to reuse it.
    _body: axum::body::Bytes,
) -> Result<Json<Entrustment>, ApiError> {
    let (id, action) = path_segments(path)?;
    let status = match action.as_str() {
        "suspend" => EntrustmentStatus::Suspended,
        "revoke" => EntrustmentStatus::Revoked,
        "activate" => EntrustmentStatus::Active,
        _ => return Err(ApiError::NotFound),
    };
    let row = change_registry(&state, &admin, move |tx, change| {
        registry::set_entrustment_status(tx, change, &id, status)
    })
    .await?;
    Ok(Json(row))
}

// ---- officers ---------------------------------------------------------------------------------

/// `POST /v1/admin/officers`.
#[derive(Debug, Deserialize, ToSchema)]
struct NewOfficer {
    /// Generated when absent.
    id: Option<String>,
    /// The officer's name.
    name: String,
    /// The township the officer belongs to; none for county staff.
    township: Option<String>,
    /// `officer`, `supervisor` or `admin`.
    #[schema(value_type = String, example = "officer")]
    role: Role,
}

#[utoipa::path(
    get,
    path = "/v1/admin/officers",
    tag = "admin",
    responses(
        (status = 200, description = "Every officer", body = Vec<Officer>),
        (status = 401, description = "Missing, bad or expired token or proof", body = ErrorBody),
        (status = 403, description = "`forbidden`: the caller is not an admin", body = ErrorBody),
        (status = "5XX", description = "A server fault", body = ErrorBody),
    )
)]
async fn list_officers(
    State(state): State<AppState>,
    _: Admin,
) -> Result<Json<Vec<Officer>>, ApiError> {
    Ok(Json(with_store(&state, |store| store.read(|tx| registry::list_officers(tx))).await?))
}

#[utoipa::path(
    post,
    path = "/v1/admin/officers",
    tag = "admin",
    request_body(content = NewOfficer, description = "The officer; `id` is generated when absent"),
    responses(
        (status = 201, description = "The new officer", body = Officer),
        (status = 401, description = "Missing, bad or expired token or proof", body = ErrorBody),
        (status = 403, description = "`forbidden`: the caller is not an admin", body = ErrorBody),
        (status = 400, description = "`malformed_json`", body = ErrorBody),
        (status = 409, description = "`already_exists`", body = ErrorBody),
        (status = 422, description = "`unknown_reference`", body = ErrorBody),
        (status = "5XX", description = "A server fault", body = ErrorBody),
    )
)]
async fn create_officer(
    State(state): State<AppState>,
    admin: Admin,
    ApiJson(new): ApiJson<NewOfficer>,
) -> Result<(StatusCode, Json<Officer>), ApiError> {
    let officer = Officer {
        id: new.id.unwrap_or_else(|| generated_id("o")),
        name: new.name,
        township: new.township,
        role: new.role,
    };
    let row = change_registry(&state, &admin, move |tx, change| {
        registry::insert_officer(tx, change, &officer)
    })
    .await?;
    Ok(created(row))
}

/// `POST /v1/admin/officers/{id}/move`.
#[derive(Debug, Deserialize, ToSchema)]
struct OfficerMove {
    /// The officer's new township.
    township: String,
}

/// Moves an officer to another township; their devices evict the old township's documents
/// on their next sync.
#[utoipa::path(
    post,
    path = "/v1/admin/officers/{id}/move",
    tag = "admin",
    params(
        ("id" = String, Path, description = "The officer id"),
    ),
    request_body(content = OfficerMove, description = "The township to move to"),
    responses(
        (status = 200, description = "The officer after the move", body = Officer),
        (status = 401, description = "Missing, bad or expired token or proof", body = ErrorBody),
        (status = 403, description = "`forbidden`: the caller is not an admin", body = ErrorBody),
        (status = 400, description = "`malformed_json`", body = ErrorBody),
        (status = 404, description = "`not_found`: no such object, or no such action", body = ErrorBody),
        (status = 422, description = "`unknown_reference`", body = ErrorBody),
        (status = "5XX", description = "A server fault", body = ErrorBody),
    )
)]
async fn move_officer(
    State(state): State<AppState>,
    admin: Admin,
    id: Result<Path<String>, PathRejection>,
    ApiJson(request): ApiJson<OfficerMove>,
) -> Result<Json<Officer>, ApiError> {
    let Path(id) = id.map_err(|_| ApiError::NotFound)?;
    let row = change_registry(&state, &admin, move |tx, change| {
        registry::move_officer(tx, change, &id, &request.township)
    })
    .await?;
    Ok(Json(row))
}

// ---- certificates -----------------------------------------------------------------------------

/// `POST /v1/admin/certificates`.
#[derive(Debug, Deserialize, ToSchema)]
struct NewCertificate {
    /// The certificate number (执法证号).
    cert_no: String,
    /// The officer who holds it.
    officer: String,
    /// Who issued it.
    issuer: String,
    /// The enforcement sectors it covers, e.g. `work_safety`.
    sectors: Vec<String>,
    /// Where it is valid.
    territory: String,
    /// Start of validity: RFC 3339 or a date.
    valid_from: String,
    /// End of validity: RFC 3339 or a date (inclusive).
    valid_to: String,
}

#[utoipa::path(
    get,
    path = "/v1/admin/certificates",
    tag = "admin",
    responses(
        (status = 200, description = "Every certificate", body = Vec<Certificate>),
        (status = 401, description = "Missing, bad or expired token or proof", body = ErrorBody),
        (status = 403, description = "`forbidden`: the caller is not an admin", body = ErrorBody),
        (status = "5XX", description = "A server fault", body = ErrorBody),
    )
)]
async fn list_certificates(
    State(state): State<AppState>,
    _: Admin,
) -> Result<Json<Vec<Certificate>>, ApiError> {
    Ok(Json(with_store(&state, |store| store.read(|tx| registry::list_certificates(tx))).await?))
}

#[utoipa::path(
    post,
    path = "/v1/admin/certificates",
    tag = "admin",
    request_body(content = NewCertificate, description = "The certificate"),
    responses(
        (status = 201, description = "The new certificate", body = Certificate),
        (status = 401, description = "Missing, bad or expired token or proof", body = ErrorBody),
        (status = 403, description = "`forbidden`: the caller is not an admin", body = ErrorBody),
        (status = 400, description = "`malformed_json`", body = ErrorBody),
        (status = 409, description = "`already_exists`", body = ErrorBody),
        (status = 422, description = "`unknown_reference`", body = ErrorBody),
        (status = "5XX", description = "A server fault", body = ErrorBody),
    )
)]
async fn create_certificate(
    State(state): State<AppState>,
    admin: Admin,
    ApiJson(new): ApiJson<NewCertificate>,
) -> Result<(StatusCode, Json<Certificate>), ApiError> {
    let (valid_from, valid_to) = parse_term(&new.valid_from, &new.valid_to)?;
    let certificate = Certificate {
        cert_no: new.cert_no,
        officer: new.officer,
        issuer: new.issuer,
        sectors: new.sectors,
        territory: new.territory,
        valid_from,
        valid_to,
        status: CertificateStatus::Active,
        rev: 1,
    };
    let row = change_registry(&state, &admin, move |tx, change| {
        registry::insert_certificate(tx, change, &certificate)
    })
    .await?;
    Ok(created(row))
}

#[utoipa::path(
    post,
    path = "/v1/admin/certificates/{cert_no}/{action}",
    tag = "admin",
    request_body(
        content = Option<Binary>,
        content_type = "application/octet-stream",
        description = "Ignored; may be empty"
    ),
    params(
        ("cert_no" = String, Path, description = "The certificate number"),
        ("action" = String, Path, description = "`suspend`, `revoke` or `reinstate`"),
    ),
    responses(
        (status = 200, description = "The certificate after the change", body = Certificate),
        (status = 401, description = "Missing, bad or expired token or proof", body = ErrorBody),
        (status = 403, description = "`forbidden`: the caller is not an admin", body = ErrorBody),
        (status = 404, description = "`not_found`: no such object, or no such action", body = ErrorBody),
        (status = "5XX", description = "A server fault", body = ErrorBody),
    )
)]
async fn change_certificate(
    State(state): State<AppState>,
    admin: Admin,
    path: Result<Path<(String, String)>, PathRejection>,
    // Unused, but read: an answer that left a request body unread would close the connection
    // under a client about to reuse it.
    _body: axum::body::Bytes,
) -> Result<Json<Certificate>, ApiError> {
    let (cert_no, action) = path_segments(path)?;
    let status = match action.as_str() {
        "suspend" => CertificateStatus::Suspended,
        "revoke" => CertificateStatus::Revoked,
        "reinstate" => CertificateStatus::Active,
        _ => return Err(ApiError::NotFound),
    };
    let row = change_registry(&state, &admin, move |tx, change| {
        registry::set_certificate_status(tx, change, &cert_no, status, &action)
    })
    .await?;
    Ok(Json(row))
}

// ---- devices, codes, audit --------------------------------------------------------------------

#[utoipa::path(
    get,
    path = "/v1/admin/devices",
    tag = "admin",
    responses(
        (status = 200, description = "Every enrolled device", body = Vec<Device>),
        (status = 401, description = "Missing, bad or expired token or proof", body = ErrorBody),
        (status = 403, description = "`forbidden`: the caller is not an admin", body = ErrorBody),
        (status = "5XX", description = "A server fault", body = ErrorBody),
    )
)]
async fn list_devices(
    State(state): State<AppState>,
    _: Admin,
) -> Result<Json<Vec<Device>>, ApiError> {
    Ok(Json(with_store(&state, |store| store.read(|tx| devices::list_devices(tx))).await?))
}

#[utoipa::path(
    post,
    path = "/v1/admin/devices/{id}/{action}",
    tag = "admin",
    request_body(
        content = Option<Binary>,
        content_type = "application/octet-stream",
        description = "Ignored; may be empty"
    ),
    params(
        ("id" = String, Path, description = "The device id"),
        ("action" = String, Path, description = "`revoke`"),
    ),
    responses(
        (status = 200, description = "The device after the change", body = Device),
        (status = 401, description = "Missing, bad or expired token or proof", body = ErrorBody),
        (status = 403, description = "`forbidden`: the caller is not an admin", body = ErrorBody),
        (status = 404, description = "`not_found`: no such object, or no such action", body = ErrorBody),
        (status = "5XX", description = "A server fault", body = ErrorBody),
    )
)]
async fn change_device(
    State(state): State<AppState>,
    admin: Admin,
    path: Result<Path<(String, String)>, PathRejection>,
    // Unused, but read: an answer that left a request body unread would close the connection
    // under a client about to reuse it.
    _body: axum::body::Bytes,
) -> Result<Json<Device>, ApiError> {
    let (id, action) = path_segments(path)?;
    if action != "revoke" {
        return Err(ApiError::NotFound);
    }
    let row =
        change_registry(&state, &admin, move |tx, change| devices::revoke_device(tx, change, &id))
            .await?;
    Ok(Json(row))
}

/// `POST /v1/admin/enroll-codes`.
#[derive(Debug, Deserialize, ToSchema)]
struct NewEnrollmentCode {
    /// The officer whose next device the code enrolls.
    officer: String,
}

/// A one-time enrollment code, shown once: the server keeps only its hash.
#[derive(Debug, Serialize, ToSchema)]
struct EnrollmentCode {
    /// 26 base32 characters.
    code: String,
    /// The officer it enrolls a device for.
    officer: String,
    /// When it stops working, RFC 3339.
    expires_at: String,
}

#[utoipa::path(
    post,
    path = "/v1/admin/enroll-codes",
    tag = "admin",
    request_body(content = NewEnrollmentCode, description = "The officer the code enrolls a device for"),
    responses(
        (status = 201, description = "A one-time code for the officer's next device", body = EnrollmentCode),
        (status = 401, description = "Missing, bad or expired token or proof", body = ErrorBody),
        (status = 403, description = "`forbidden`: the caller is not an admin", body = ErrorBody),
        (status = 400, description = "`malformed_json`", body = ErrorBody),
        (status = 422, description = "`unknown_reference`", body = ErrorBody),
        (status = "5XX", description = "A server fault", body = ErrorBody),
    )
)]
async fn issue_enrollment_code(
    State(state): State<AppState>,
    admin: Admin,
    ApiJson(new): ApiJson<NewEnrollmentCode>,
) -> Result<(StatusCode, Json<EnrollmentCode>), ApiError> {
    let code = new_enrollment_code();
    let code_hash = enrollment_code_hash(&code);
    let expires_at = now_millis() + ADMIN_CODE_LIFETIME_MS;
    let officer = new.officer.clone();
    change_registry(&state, &admin, move |tx, change| {
        devices::insert_enrollment_code(tx, change, &code_hash, &officer, expires_at)
    })
    .await?;
    Ok(created(EnrollmentCode {
        code,
        officer: new.officer,
        expires_at: timestamp::format(expires_at),
    }))
}

#[utoipa::path(
    get,
    path = "/v1/admin/audit",
    tag = "admin",
    responses(
        (status = 200, description = "The audit log", body = Vec<AuditEntry>),
        (status = 401, description = "Missing, bad or expired token or proof", body = ErrorBody),
        (status = 403, description = "`forbidden`: the caller is not an admin", body = ErrorBody),
        (status = "5XX", description = "A server fault", body = ErrorBody),
    )
)]
async fn list_audit(
    State(state): State<AppState>,
    _: Admin,
) -> Result<Json<Vec<AuditEntry>>, ApiError> {
    Ok(Json(with_store(&state, |store| store.read(|tx| registry::list_audit(tx))).await?))
}
