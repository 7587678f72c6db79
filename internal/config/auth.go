package config

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/registry-edge/registry-edge/internal/errdef"
)

// redacted replaces a secret wherever an Auth is printed, logged or encoded.
const redacted = "REDACTED"

// maxSecretFileSize bounds passwordFile and dockerConfig reads; real files
// are a few KiB at most, so anything larger is a mistake (a wrong path).
const maxSecretFileSize = 1 << 20

// Auth holds the credentials registry-edge presents to one upstream. At most
// one source is used: Username with Password or PasswordFile, or
// DockerConfig. With none set, the upstream is accessed anonymously.
//
// Auth never reveals Password when printed with any fmt verb, logged with
// slog, or encoded as YAML or JSON: the value is rendered as "REDACTED".
type Auth struct {
	// Username is the account name for HTTP basic auth or the token server.
	Username string `yaml:"username,omitempty"`
	// Password is the secret inline in the file. Prefer PasswordFile.
	Password string `yaml:"password,omitempty"`
	// PasswordFile is the path of a file whose content, with surrounding
	// whitespace trimmed, is the secret. It is read by Secret, not at load
	// time (check-config does not read it); serve calls Secret once, at
	// start, so a rotated secret takes a restart (docs/operations.md).
	PasswordFile string `yaml:"passwordFile,omitempty"`
	// DockerConfig is the path of a Docker config.json; the entry for the
	// upstream's registry in its "auths" map is used.
	DockerConfig string `yaml:"dockerConfig,omitempty"`
}

// IsZero reports whether no credentials are configured.
func (a Auth) IsZero() bool { return a == Auth{} }

// Secret returns Password, or the trimmed content of PasswordFile, or "" when
// neither is set. It does not consult DockerConfig: the upstream client reads that file.
func (a Auth) Secret() (string, error) {
	if a.PasswordFile == "" {
		return a.Password, nil
	}
	secret, err := readSecretFile(a.PasswordFile)
	if err != nil {
		return "", fmt.Errorf("read passwordFile: %w", err)
	}
	return secret, nil
}

// String renders a with Password replaced by "REDACTED".
func (a Auth) String() string {
	return fmt.Sprintf("{Username:%s Password:%s PasswordFile:%s DockerConfig:%s}",
		a.Username, redact(a.Password), a.PasswordFile, a.DockerConfig)
}

// GoString renders a as Go syntax with Password replaced by "REDACTED".
func (a Auth) GoString() string {
	return fmt.Sprintf("config.Auth{Username:%q, Password:%q, PasswordFile:%q, DockerConfig:%q}",
		a.Username, redact(a.Password), a.PasswordFile, a.DockerConfig)
}

// Format implements fmt.Formatter so that no verb (%v, %+v, %#v, %s, %q,
// %x, %d, ...) prints Password, including when a is a field of a larger
// value such as Config.
func (a Auth) Format(f fmt.State, verb rune) {
	if verb == 'v' && f.Flag('#') {
		_, _ = io.WriteString(f, a.GoString())
		return
	}
	_, _ = io.WriteString(f, a.String())
}

// LogValue implements slog.LogValuer with Password replaced by "REDACTED".
func (a Auth) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("username", a.Username),
		slog.String("password", redact(a.Password)),
		slog.String("passwordFile", a.PasswordFile),
		slog.String("dockerConfig", a.DockerConfig),
	)
}

// MarshalYAML implements yaml.Marshaler with Password replaced by
// "REDACTED". A rendered config is therefore not a usable config when it had
// an inline password; use passwordFile.
func (a Auth) MarshalYAML() (any, error) {
	type plain Auth // no methods: stops the recursion
	p := plain(a)
	p.Password = redact(p.Password)
	return p, nil
}

// MarshalJSON implements json.Marshaler with Password replaced by
// "REDACTED"; slog's JSON handler uses it when a Config is logged.
func (a Auth) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Username     string `json:"username,omitempty"`
		Password     string `json:"password,omitempty"`
		PasswordFile string `json:"passwordFile,omitempty"`
		DockerConfig string `json:"dockerConfig,omitempty"`
	}{a.Username, redact(a.Password), a.PasswordFile, a.DockerConfig})
}

func redact(s string) string {
	if s == "" {
		return ""
	}
	return redacted
}

// validate reports the rules of Auth under the field path prefix.
func (a Auth) validate(prefix string) []error {
	var errs []error
	if a.Password != "" && a.PasswordFile != "" {
		errs = append(errs, fieldErr(prefix+".password", "password and passwordFile are mutually exclusive"))
	}
	if a.DockerConfig != "" {
		if a.Username != "" || a.Password != "" || a.PasswordFile != "" {
			errs = append(errs, fieldErr(prefix+".dockerConfig", "dockerConfig excludes username, password and passwordFile"))
		}
		return errs
	}
	if a.Username != "" && a.Password == "" && a.PasswordFile == "" {
		errs = append(errs, fieldErr(prefix+".username", "requires password or passwordFile"))
	}
	if a.Username == "" && (a.Password != "" || a.PasswordFile != "") {
		errs = append(errs, fieldErr(prefix+".username", "required when password or passwordFile is set"))
	}
	return errs
}

// readSecretFile returns the content of a secret file without surrounding
// whitespace. An empty one is an error: it is a secret mount that was not
// populated, and sending an empty secret would only fail later, and less
// clearly.
func readSecretFile(path string) (string, error) {
	b, err := readSmallFile(path)
	if err != nil {
		return "", err
	}
	secret := strings.TrimSpace(string(b))
	if secret == "" {
		return "", fmt.Errorf("%s is empty: %w", path, errdef.ErrInvalid)
	}
	return secret, nil
}

func readSmallFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxSecretFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(b) > maxSecretFileSize {
		return nil, fmt.Errorf("read %s: larger than %s: %w", path, ByteSize(maxSecretFileSize), errdef.ErrTooLarge)
	}
	return b, nil
}

// isDockerHubHost reports whether host is one of the names Docker Hub's
// registry API is reached under.
func isDockerHubHost(host string) bool {
	switch strings.ToLower(host) {
	case "docker.io", "index.docker.io", "registry-1.docker.io":
		return true
	}
	return false
}

// dockerHub is the registry name of Docker Hub, as containerd's ?ns= and
// image references spell it.
const dockerHub = "docker.io"
