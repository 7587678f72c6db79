package config

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

const testPassword = "s3cr3t-Pa55w0rd"

func configWithPassword(t *testing.T) Config {
	t.Helper()
	c, err := Load(strings.NewReader(`
upstreams:
  - registry: ghcr.io
    url: https://ghcr.io
    auth:
      username: bot
      password: ` + testPassword + `
`))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestAuthNeverPrintsPassword(t *testing.T) {
	t.Parallel()
	c := configWithPassword(t)
	a := c.Upstreams[0].Auth
	pa := &c.Upstreams[0].Auth

	var jsonLog, textLog bytes.Buffer
	slog.New(slog.NewJSONHandler(&jsonLog, nil)).Info("config", "config", c, "auth", a, "upstream", c.Upstreams[0])
	slog.New(slog.NewTextHandler(&textLog, nil)).Info("config", "config", c, "auth", a, "authp", pa, "upstream", c.Upstreams[0])

	yamlCfg, err := yaml.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	jsonCfg, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}

	outputs := map[string]string{
		"Print auth":  fmt.Sprint(a),
		"Println cfg": fmt.Sprintln(c),
		"String":      a.String(),
		"slog json":   jsonLog.String(),
		"slog text":   textLog.String(),
		"yaml":        string(yamlCfg),
		"json":        string(jsonCfg),
	}
	// Every verb, on the Config, an Upstream, the Auth and a *Auth. The
	// format is a variable so that vet lets the odd verbs through.
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%10.3v"} {
		for name, v := range map[string]any{"config": c, "upstream": c.Upstreams[0], "auth": a, "*auth": pa} {
			outputs[verb+" "+name] = fmt.Sprintf(verb, v)
		}
	}
	for name, out := range outputs {
		if strings.Contains(out, testPassword) || strings.Contains(strings.ToLower(out), hex.EncodeToString([]byte(testPassword))) {
			t.Errorf("%s output reveals the password:\n%s", name, out)
		}
		if !strings.Contains(out, redacted) {
			t.Errorf("%s output = %s, want it to contain %s", name, out, redacted)
		}
	}
	// The password is still there for the code that needs it.
	if s, err := a.Secret(); err != nil || s != testPassword {
		t.Errorf("Auth.Secret() = %q, %v, want the password", s, err)
	}
}

func TestAuthRedactionKeepsOtherFields(t *testing.T) {
	t.Parallel()
	a := Auth{Username: "bot", PasswordFile: "/run/secrets/p"}
	got := fmt.Sprintf("%+v", a)
	want := "{Username:bot Password: PasswordFile:/run/secrets/p DockerConfig:}"
	if got != want {
		t.Errorf("Sprintf(%%+v, Auth) = %q, want %q", got, want)
	}
}

func TestAuthSecret(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := filepath.Join(dir, "token")
	if err := os.WriteFile(file, []byte("  tok3n\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	blank := filepath.Join(dir, "blank")
	if err := os.WriteFile(blank, []byte(" \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(dir, "big")
	if err := os.WriteFile(big, bytes.Repeat([]byte("x"), maxSecretFileSize+1), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		a       Auth
		want    string
		wantErr string
	}{
		{"none", Auth{}, "", ""},
		{"inline", Auth{Username: "u", Password: "p"}, "p", ""},
		{"file is trimmed", Auth{Username: "u", PasswordFile: file}, "tok3n", ""},
		{"missing file", Auth{Username: "u", PasswordFile: filepath.Join(dir, "nope")}, "", "read passwordFile"},
		{"file too large", Auth{Username: "u", PasswordFile: big}, "", "larger than 1MiB"},
		{"blank file", Auth{Username: "u", PasswordFile: blank}, "", "blank is empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := tt.a.Secret()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Auth.Secret() error = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("Auth.Secret() = %q, %v, want %q", got, err, tt.want)
			}
		})
	}
}
