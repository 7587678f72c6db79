package ociapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/registry-edge/registry-edge/internal/errdef"
)

// Code is an error code of the distribution-spec error envelope.
//
// References:
//   - https://github.com/opencontainers/distribution-spec/blob/v1.1.0/spec.md#error-codes
type Code string

// Error codes. The first group is defined by the distribution-spec; the
// second group is used by distribution (registry/api/errcode) and understood
// by every client, which treats unknown codes as opaque strings anyway.
const (
	CodeBlobUnknown         Code = "BLOB_UNKNOWN"
	CodeBlobUploadInvalid   Code = "BLOB_UPLOAD_INVALID"
	CodeBlobUploadUnknown   Code = "BLOB_UPLOAD_UNKNOWN"
	CodeDigestInvalid       Code = "DIGEST_INVALID"
	CodeManifestBlobUnknown Code = "MANIFEST_BLOB_UNKNOWN"
	CodeManifestInvalid     Code = "MANIFEST_INVALID"
	CodeManifestUnknown     Code = "MANIFEST_UNKNOWN"
	CodeNameInvalid         Code = "NAME_INVALID"
	CodeNameUnknown         Code = "NAME_UNKNOWN"
	CodeSizeInvalid         Code = "SIZE_INVALID"
	CodeUnauthorized        Code = "UNAUTHORIZED"
	CodeDenied              Code = "DENIED"
	CodeUnsupported         Code = "UNSUPPORTED"
	CodeTooManyRequests     Code = "TOOMANYREQUESTS"

	CodeUnknown             Code = "UNKNOWN"
	CodeUnavailable         Code = "UNAVAILABLE"
	CodeRangeNotSatisfiable Code = "RANGE_NOT_SATISFIABLE"
)

// Error is one entry of the error envelope. Handlers may return an *Error
// directly when they know the exact code; otherwise FromError derives one
// from the error's category.
type Error struct {
	Status  int    `json:"-"`
	Code    Code   `json:"code"`
	Message string `json:"message"`
	Detail  any    `json:"detail,omitempty"`
	// RetryAfter, when positive, is sent as a Retry-After header.
	RetryAfter time.Duration `json:"-"`
	// Local marks a failure of this mirror itself (its disk), not of its
	// upstream: a tier below may retry it.
	Local bool `json:"-"`
}

// NewError returns an *Error with the given status, code and message.
func NewError(status int, code Code, msg string) *Error {
	return &Error{Status: status, Code: code, Message: msg}
}

func (e *Error) Error() string { return string(e.Code) + ": " + e.Message }

// Is makes an *Error match the category its status stands for, so that code
// which only knows categories can still test a typed error.
func (e *Error) Is(target error) bool {
	switch e.Status {
	case http.StatusNotFound:
		return target == errdef.ErrNotFound
	case http.StatusBadRequest:
		return target == errdef.ErrInvalid
	case http.StatusMethodNotAllowed:
		return target == errdef.ErrUnsupported
	case http.StatusRequestedRangeNotSatisfiable:
		return target == errdef.ErrRangeNotSatisfiable
	}
	return false
}

// Envelope is the JSON body of every error response.
type Envelope struct {
	Errors []*Error `json:"errors"`
}

// Kind-specific codes for "not found" and "invalid".
func notFoundCode(k Kind) Code {
	switch k {
	case KindBlob:
		return CodeBlobUnknown
	case KindManifest:
		return CodeManifestUnknown
	default:
		return CodeNameUnknown
	}
}

// FromError maps err to the status and envelope entry a client sees. The
// mapping is the single table of the project: a typed *Error is used as it
// is, a category sentinel is mapped by the table below, and anything else is
// a 500 UNKNOWN with a generic message (the full error is logged, never
// echoed, because it may name paths or upstream hosts).
func FromError(err error, k Kind) *Error {
	var oe *Error
	if errors.As(err, &oe) {
		return oe
	}
	var ra interface{ RetryAfterDuration() time.Duration }
	retryAfter := time.Duration(0)
	if errors.As(err, &ra) {
		retryAfter = ra.RetryAfterDuration()
	}
	if oe := fromUpstreamStatus(err); oe != nil {
		return oe
	}
	switch {
	case errors.Is(err, errdef.ErrNotFound):
		return &Error{Status: http.StatusNotFound, Code: notFoundCode(k), Message: message(err, "not found")}
	case errors.Is(err, errdef.ErrRangeNotSatisfiable):
		return &Error{Status: http.StatusRequestedRangeNotSatisfiable, Code: CodeRangeNotSatisfiable, Message: "requested range not satisfiable"}
	case errors.Is(err, errdef.ErrDigestMismatch), errors.Is(err, errdef.ErrSizeMismatch):
		return &Error{Status: http.StatusBadGateway, Code: CodeUnknown, Message: "upstream content failed verification"}
	case errors.Is(err, errdef.ErrTooLarge):
		return &Error{Status: http.StatusBadGateway, Code: CodeManifestInvalid, Message: "upstream content exceeds the size limit"}
	case errors.Is(err, errdef.ErrInvalid):
		code := CodeNameInvalid
		if k == KindManifest {
			code = CodeManifestInvalid
		}
		return &Error{Status: http.StatusBadRequest, Code: code, Message: message(err, "invalid request")}
	case errors.Is(err, errdef.ErrUnauthorized):
		return &Error{Status: http.StatusUnauthorized, Code: CodeUnauthorized, Message: "authentication required"}
	case errors.Is(err, errdef.ErrDenied):
		return &Error{Status: http.StatusForbidden, Code: CodeDenied, Message: message(err, "access denied")}
	case errors.Is(err, errdef.ErrTooManyRequests):
		return &Error{Status: http.StatusTooManyRequests, Code: CodeTooManyRequests, Message: "upstream rate limit reached", RetryAfter: retryAfter}
	case errors.Is(err, errdef.ErrUnavailable):
		return &Error{Status: http.StatusServiceUnavailable, Code: CodeUnavailable, Message: "upstream registry unreachable", RetryAfter: retryAfter}
	case errors.Is(err, errdef.ErrDamaged):
		// The mirror's fault, not the device's, and one the device can
		// route around (another mirror, the registry itself): 503, and
		// the log has the file and what to do.
		return &Error{Status: http.StatusServiceUnavailable, Code: CodeUnavailable, Message: "the mirror's metadata database is damaged (see the mirror's log)"}
	case errors.Is(err, errdef.ErrUnsupported):
		return &Error{Status: http.StatusMethodNotAllowed, Code: CodeUnsupported, Message: message(err, "operation not supported by this read-only mirror")}
	}
	return &Error{Status: http.StatusInternalServerError, Code: CodeUnknown, Message: "internal error"}
}

// fromUpstreamStatus words the upstream answers (an error with an
// UpstreamStatus method, as *upstream.Error has) that the category table
// would blame on the device, or call unreachable:
//   - 401 or 403: the mirror's own upstream credentials were refused (or
//     the repository does not exist there, which some registries answer
//     so). The device can do nothing about it, and a 401 without a
//     challenge of ours, or a 403 like a local rule's, would send its
//     operator to the wrong configuration: 502 DENIED.
//   - 400, 405 or 422 (after the mirror checked the request itself): 502.
//   - 500: still 503 (a device falls back to another host), but the
//     upstream answered; it was not unreachable.
func fromUpstreamStatus(err error) *Error {
	var us interface{ UpstreamStatus() int }
	if !errors.As(err, &us) {
		return nil
	}
	switch s := us.UpstreamStatus(); s {
	case http.StatusUnauthorized, http.StatusForbidden:
		return &Error{Status: http.StatusBadGateway, Code: CodeDenied,
			Message: fmt.Sprintf("the upstream registry refused registry-edge access to this repository (HTTP %d): the mirror's credentials for it (upstreams[].auth) are missing, wrong or not allowed there; a repository that does not exist upstream may be answered so too", s)}
	case http.StatusBadRequest, http.StatusMethodNotAllowed, http.StatusUnprocessableEntity:
		return &Error{Status: http.StatusBadGateway, Code: CodeUnknown,
			Message: fmt.Sprintf("the upstream registry rejected registry-edge's request (HTTP %d)", s)}
	case http.StatusInternalServerError:
		return &Error{Status: http.StatusServiceUnavailable, Code: CodeUnavailable,
			Message: "the upstream registry answered with an internal error (HTTP 500)"}
	}
	return nil
}

// PublicError marks an error whose message is safe to show to a client.
// Lower layers use it for messages built only from the client's own input.
type PublicError struct {
	Msg string
	Err error
}

func (e *PublicError) Error() string { return e.Msg }
func (e *PublicError) Unwrap() error { return e.Err }

// Public wraps category err with a message that may be shown to clients.
func Public(err error, msg string) error { return &PublicError{Msg: msg, Err: err} }

func message(err error, fallback string) string {
	var pe *PublicError
	if errors.As(err, &pe) {
		return pe.Msg
	}
	return fallback
}

// WriteError renders e as the distribution-spec error envelope. For HEAD
// requests only the status line and headers are written.
func WriteError(w http.ResponseWriter, r *http.Request, e *Error) {
	h := w.Header()
	h.Del("Content-Length")
	if e.Status != http.StatusRequestedRangeNotSatisfiable {
		h.Del("Content-Range") // a 416 keeps "bytes */size" (RFC 9110 section 15.5.17)
	}
	h.Del("Docker-Content-Digest")
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	if e.RetryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(int((e.RetryAfter+time.Second-1)/time.Second)))
	}
	body, _ := json.Marshal(Envelope{Errors: []*Error{e}})
	body = append(body, '\n')
	if r != nil && r.Method == http.MethodHead {
		h.Set("Content-Length", strconv.Itoa(len(body)))
		w.WriteHeader(e.Status)
		return
	}
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(e.Status)
	_, _ = w.Write(body)
}
