// Package errdef defines the error categories shared by every registry-edge
// package. Lower layers wrap one of these sentinels with context using %w;
// callers test for a category with errors.Is only. The HTTP layer maps a
// category to a distribution-spec status and code in exactly one place
// (ociapi.FromError).
//
// This package is a leaf: it imports nothing but the standard library.
package errdef

import "errors"

// Error categories. Wrap them with context:
//
//	fmt.Errorf("blob %s: %w", d, errdef.ErrNotFound)
var (
	// ErrNotFound means the content or reference does not exist.
	ErrNotFound = errors.New("not found")
	// ErrInvalid means the input (a name, digest, header or document) is malformed.
	ErrInvalid = errors.New("invalid")
	// ErrDigestMismatch means content did not hash to the digest it was expected to have.
	ErrDigestMismatch = errors.New("digest mismatch")
	// ErrSizeMismatch means content did not have the size it was expected to have.
	ErrSizeMismatch = errors.New("size mismatch")
	// ErrTooLarge means content exceeds a configured or protocol limit.
	ErrTooLarge = errors.New("too large")
	// ErrUnauthorized means credentials are missing or were rejected.
	ErrUnauthorized = errors.New("unauthorized")
	// ErrDenied means the caller is authenticated but not allowed.
	ErrDenied = errors.New("denied")
	// ErrTooManyRequests means a rate limit was hit.
	ErrTooManyRequests = errors.New("too many requests")
	// ErrUnavailable means a dependency (usually the upstream registry) cannot
	// be reached or answered with a server error.
	ErrUnavailable = errors.New("unavailable")
	// ErrUnsupported means the operation is not supported by registry-edge.
	ErrUnsupported = errors.New("unsupported")
	// ErrAlreadyExists means the content is already present.
	ErrAlreadyExists = errors.New("already exists")
	// ErrDamaged means the mirror's own local data (its metadata database)
	// cannot be read: it was damaged on disk. Only the site admin can
	// repair it; the request may succeed elsewhere.
	ErrDamaged = errors.New("local data damaged")
	// ErrRangeNotSatisfiable means a requested byte range lies outside the content.
	ErrRangeNotSatisfiable = errors.New("range not satisfiable")
)
