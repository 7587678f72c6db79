package config

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"strings"
)

// Blob storage drivers.
const (
	BlobsFilesystem = "filesystem"
	BlobsS3         = "s3"
)

// minS3ChunkSize is S3's smallest multipart part (the last part excepted).
const minS3ChunkSize = 5 << 20

// Blobs selects where blobs and manifests are stored. Metadata (meta.db),
// the local staging of fills and temporary files stay under Storage.Root
// either way.
type Blobs struct {
	// Driver is "filesystem" (the default: files under Storage.Root) or
	// "s3" (S3 and compatible servers, through distribution's s3-aws
	// storage driver).
	Driver string `yaml:"driver,omitempty"`
	// S3 configures the s3 driver.
	S3 S3 `yaml:"s3,omitempty"`
	// Replica describes this process among the registry-edge replicas
	// that share the bucket (s3 only; a single mirror is a set of one).
	Replica Replica `yaml:"replica,omitempty"`
}

// Replica is one of the registry-edge processes sharing a bucket. They
// share the content and its metadata records in the bucket; exactly one of
// them should evict (docs/storage.md, ADR 0014).
type Replica struct {
	// ID names this replica among those of the bucket; it keys the access
	// times it publishes for the evicting replica. Empty means the host
	// name. Letters, digits, '.', '_' and '-'.
	ID string `yaml:"id,omitempty"`
	// Evict says whether this replica enforces storage.maxSize and
	// storage.maxAge on the bucket (and pre-stages, since pins only hold
	// against its eviction); nil means true.
	Evict *bool `yaml:"evict,omitempty"`
}

// Evicts reports whether the replica evicts (Evict, default true).
func (r Replica) Evicts() bool { return r.Evict == nil || *r.Evict }

// maxReplicaID bounds Replica.ID.
const maxReplicaID = 128

// S3 is the bucket of the s3 blob driver.
//
// S3 never reveals SecretKey when printed with any fmt verb, logged with
// slog, or encoded as YAML or JSON: the value is rendered as "REDACTED".
type S3 struct {
	Bucket string `yaml:"bucket,omitempty"`
	Region string `yaml:"region,omitempty"`
	// RegionEndpoint is the URL of an S3-compatible server (MinIO,
	// versitygw, Ceph RGW, ...); empty means AWS. Its scheme decides TLS.
	RegionEndpoint string `yaml:"regionEndpoint,omitempty"`
	// ForcePathStyle addresses the bucket in the path instead of the host
	// name, as most S3-compatible servers need.
	ForcePathStyle bool `yaml:"forcePathStyle,omitempty"`
	// AccessKey and SecretKey (or SecretKeyFile) are static credentials;
	// without them the AWS SDK's default chain is used (AWS_ACCESS_KEY_ID
	// and AWS_SECRET_ACCESS_KEY, shared credentials files, instance roles).
	AccessKey     string `yaml:"accessKey,omitempty"`
	SecretKey     string `yaml:"secretKey,omitempty"`
	SecretKeyFile string `yaml:"secretKeyFile,omitempty"`
	// RootDirectory is the key prefix under which registry-edge stores its
	// objects ("/site-a"), so that several deployments share a bucket.
	RootDirectory string `yaml:"rootDirectory,omitempty"`
	// ChunkSize is the size of multipart upload parts; zero means the
	// driver's default (10 MiB). At least 5 MiB.
	ChunkSize ByteSize `yaml:"chunkSize,omitempty"`
	// Redirect answers GETs of stored blobs (above 64 KiB) with a 307 to a
	// presigned URL of the object (valid 20 minutes) instead of streaming
	// them: clients then download from the bucket directly, so they must
	// reach it.
	Redirect bool `yaml:"redirect,omitempty"`
	// RedirectEndpoint replaces scheme and host of those URLs (a public
	// name of the S3 server); empty means RegionEndpoint's.
	RedirectEndpoint string `yaml:"redirectEndpoint,omitempty"`
}

// IsZero reports whether nothing is configured.
func (s S3) IsZero() bool { return s == S3{} }

// Secret returns SecretKey, or the trimmed content of SecretKeyFile. It reads
// the file on every call, so that a rotated secret is picked up on restart.
func (s S3) Secret() (string, error) {
	if s.SecretKeyFile == "" {
		return s.SecretKey, nil
	}
	secret, err := readSecretFile(s.SecretKeyFile)
	if err != nil {
		return "", fmt.Errorf("read secretKeyFile: %w", err)
	}
	return secret, nil
}

// DriverParameters returns the parameters of distribution's s3-aws storage
// driver for s.
func (s S3) DriverParameters() (map[string]any, error) {
	secret, err := s.Secret()
	if err != nil {
		return nil, err
	}
	p := map[string]any{
		"bucket":         s.Bucket,
		"region":         s.Region,
		"forcepathstyle": s.ForcePathStyle,
	}
	if s.RegionEndpoint != "" {
		p["regionendpoint"] = s.RegionEndpoint
		u, err := url.Parse(s.RegionEndpoint)
		if err != nil {
			return nil, fmt.Errorf("regionEndpoint: %w", err)
		}
		p["secure"] = u.Scheme == "https"
	}
	if s.AccessKey != "" {
		p["accesskey"] = s.AccessKey
		p["secretkey"] = secret
	}
	if s.RootDirectory != "" {
		p["rootdirectory"] = s.RootDirectory
	}
	if s.ChunkSize > 0 {
		p["chunksize"] = int64(s.ChunkSize)
	}
	if s.RedirectEndpoint != "" {
		p["redirectendpoint"] = s.RedirectEndpoint
	}
	return p, nil
}

func (s S3) redacted() S3 {
	s.SecretKey = redact(s.SecretKey)
	return s
}

// String renders s with SecretKey replaced by "REDACTED".
func (s S3) String() string {
	type plain S3
	return fmt.Sprintf("%+v", plain(s.redacted()))
}

// GoString renders s as Go syntax with SecretKey replaced by "REDACTED".
func (s S3) GoString() string {
	type plain S3
	return fmt.Sprintf("config.S3%+v", plain(s.redacted()))
}

// Format implements fmt.Formatter so that no verb prints SecretKey,
// including when s is a field of a larger value such as Config.
func (s S3) Format(f fmt.State, verb rune) {
	if verb == 'v' && f.Flag('#') {
		_, _ = io.WriteString(f, s.GoString())
		return
	}
	_, _ = io.WriteString(f, s.String())
}

// LogValue implements slog.LogValuer with SecretKey replaced by "REDACTED".
func (s S3) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("bucket", s.Bucket),
		slog.String("region", s.Region),
		slog.String("regionEndpoint", s.RegionEndpoint),
		slog.Bool("forcePathStyle", s.ForcePathStyle),
		slog.String("accessKey", s.AccessKey),
		slog.String("secretKey", redact(s.SecretKey)),
		slog.String("secretKeyFile", s.SecretKeyFile),
		slog.String("rootDirectory", s.RootDirectory),
		slog.Bool("redirect", s.Redirect),
		slog.String("redirectEndpoint", s.RedirectEndpoint),
	)
}

// MarshalYAML implements yaml.Marshaler with SecretKey replaced by
// "REDACTED".
func (s S3) MarshalYAML() (any, error) {
	type plain S3 // no methods: stops the recursion
	return plain(s.redacted()), nil
}

// MarshalJSON implements json.Marshaler with SecretKey replaced by
// "REDACTED".
func (s S3) MarshalJSON() ([]byte, error) {
	type plain S3
	return json.Marshal(plain(s.redacted()))
}

// validate reports the rules of Blobs under the field path prefix.
func (b Blobs) validate(prefix string) []error {
	var errs []error
	add := func(field, format string, args ...any) {
		errs = append(errs, fieldErr(prefix+"."+field, fmt.Sprintf(format, args...)))
	}
	switch b.Driver {
	case "", BlobsFilesystem:
		if !b.S3.IsZero() {
			add("s3", "set, but driver is %q (want driver: s3)", b.driverName())
		}
		if b.Replica != (Replica{}) {
			add("replica", "set, but driver is %q: only replicas on a shared bucket (driver: s3) have one", b.driverName())
		}
	case BlobsS3:
		s := b.S3
		if strings.TrimSpace(s.Bucket) == "" {
			add("s3.bucket", "required with driver s3")
		}
		if strings.TrimSpace(s.Region) == "" {
			add("s3.region", "required with driver s3 (any value, e.g. us-east-1, for S3-compatible servers)")
		}
		if s.RegionEndpoint != "" {
			if msg := checkEndpoint(s.RegionEndpoint); msg != "" {
				add("s3.regionEndpoint", "%s", msg)
			}
		}
		if s.SecretKey != "" && s.SecretKeyFile != "" {
			add("s3.secretKeyFile", "set together with secretKey; use one")
		}
		hasSecret := s.SecretKey != "" || s.SecretKeyFile != ""
		if (s.AccessKey != "") != hasSecret {
			add("s3.accessKey", "accessKey and secretKey (or secretKeyFile) go together; set both or neither")
		}
		if s.RootDirectory != "" && !strings.HasPrefix(s.RootDirectory, "/") {
			add("s3.rootDirectory", "must start with /, got %q", s.RootDirectory)
		}
		if s.ChunkSize != 0 && s.ChunkSize < minS3ChunkSize {
			add("s3.chunkSize", "must be at least 5MiB (S3's smallest multipart part), got %d", int64(s.ChunkSize))
		}
		if s.RedirectEndpoint != "" {
			if msg := checkEndpoint(s.RedirectEndpoint); msg != "" {
				add("s3.redirectEndpoint", "%s", msg)
			} else if !s.Redirect {
				add("s3.redirectEndpoint", "set, but redirect is false")
			}
		}
		if id := b.Replica.ID; id != "" && (len(id) > maxReplicaID || !validReplicaID(id)) {
			add("replica.id", "must be 1-%d letters, digits, '.', '_' or '-', got %q", maxReplicaID, id)
		}
	default:
		add("driver", "must be %s or %s, got %q", BlobsFilesystem, BlobsS3, b.Driver)
	}
	return errs
}

// checkEndpoint validates an S3 endpoint URL and returns what is wrong
// with it, or "". Credentials are refused, and the message never echoes a
// value that holds any: it goes to the log and to check-config's output,
// and the endpoint itself is logged at start.
func checkEndpoint(s string) string {
	u, err := url.Parse(s)
	switch {
	case err != nil && strings.Contains(s, "@"):
		// url.Parse's own message quotes pieces of the input (a password
		// with a '/' in it is read as a port).
		return "is not a valid URL, and holds credentials, which are not allowed here; use accessKey with secretKeyFile"
	case err == nil && u.User != nil:
		return "credentials in the URL are not allowed; use accessKey with secretKeyFile"
	case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
		return fmt.Sprintf("must be an http:// or https:// URL, got %q", s)
	}
	return ""
}

func (b Blobs) driverName() string {
	if b.Driver == "" {
		return BlobsFilesystem
	}
	return b.Driver
}

func validReplicaID(id string) bool {
	if id == "." || id == ".." {
		return false
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// ReplicaID returns Replica.ID, or the host name made valid as an id.
func (b Blobs) ReplicaID() (string, error) {
	if b.Replica.ID != "" {
		return b.Replica.ID, nil
	}
	h, err := os.Hostname()
	if err != nil {
		return "", fmt.Errorf("storage.blobs.replica.id: not set, and no host name: %w", err)
	}
	id := strings.Map(func(c rune) rune {
		if c < 0x80 && validReplicaID(string(c)) {
			return c
		}
		return '_'
	}, h)
	if id == "" || !validReplicaID(id) || len(id) > maxReplicaID {
		return "", fmt.Errorf("storage.blobs.replica.id: not set, and the host name %q is no valid id", h)
	}
	return id, nil
}
