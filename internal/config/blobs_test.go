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

	"github.com/google/go-cmp/cmp"
	"go.yaml.in/yaml/v3"
)

const testS3Secret = "s3-secret-never-printed"

const s3Config = `
storage:
  root: /var/lib/registry-edge
  blobs:
    driver: s3
    s3:
      bucket: edge
      region: us-east-1
      regionEndpoint: http://127.0.0.1:7070
      forcePathStyle: true
      accessKey: AKIA1
      secretKey: ` + testS3Secret + `
      rootDirectory: /site-a
      chunkSize: 8MiB
`

func TestLoadS3Blobs(t *testing.T) {
	t.Parallel()
	c, err := Load(strings.NewReader(s3Config))
	if err != nil {
		t.Fatalf("Load() error = %v", err)
	}
	got, err := c.Storage.Blobs.S3.DriverParameters()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"bucket": "edge", "region": "us-east-1", "regionendpoint": "http://127.0.0.1:7070", "secure": false,
		"forcepathstyle": true, "accesskey": "AKIA1", "secretkey": testS3Secret, "rootdirectory": "/site-a",
		"chunksize": int64(8 << 20),
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("DriverParameters() mismatch (-want +got):\n%s", diff)
	}
}

func TestS3SecretKeyFile(t *testing.T) {
	t.Parallel()
	f := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(f, []byte(testS3Secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := S3{Bucket: "b", Region: "r", AccessKey: "a", SecretKeyFile: f}
	p, err := s.DriverParameters()
	if err != nil || p["secretkey"] != testS3Secret {
		t.Errorf("DriverParameters() secretkey = %v, %v; want the file's trimmed content", p["secretkey"], err)
	}
	// No static credentials: the SDK's default chain, and no key at all.
	p, err = S3{Bucket: "b", Region: "r", RegionEndpoint: "https://s3.example"}.DriverParameters()
	if _, ok := p["secretkey"]; err != nil || ok || p["secure"] != true {
		t.Errorf("DriverParameters() = %v, %v; want no credentials and secure", p, err)
	}
}

func TestLoadS3BlobsInvalid(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, in string
		want     []string
	}{
		{"unknown driver", "storage:\n  blobs: {driver: gcs}\n", []string{"storage.blobs.driver", "filesystem or s3"}},
		{"no bucket", "storage:\n  blobs: {driver: s3, s3: {region: r}}\n", []string{"storage.blobs.s3.bucket", "required"}},
		{"no region", "storage:\n  blobs: {driver: s3, s3: {bucket: b}}\n", []string{"storage.blobs.s3.region"}},
		{"bad endpoint", "storage:\n  blobs: {driver: s3, s3: {bucket: b, region: r, regionEndpoint: 127.0.0.1:9000}}\n", []string{"storage.blobs.s3.regionEndpoint", "http:// or https://"}},
		{"key without secret", "storage:\n  blobs: {driver: s3, s3: {bucket: b, region: r, accessKey: a}}\n", []string{"storage.blobs.s3.accessKey"}},
		{"two secrets", "storage:\n  blobs: {driver: s3, s3: {bucket: b, region: r, accessKey: a, secretKey: s, secretKeyFile: f}}\n", []string{"storage.blobs.s3.secretKeyFile"}},
		{"relative root", "storage:\n  blobs: {driver: s3, s3: {bucket: b, region: r, rootDirectory: site}}\n", []string{"storage.blobs.s3.rootDirectory"}},
		{"small chunks", "storage:\n  blobs: {driver: s3, s3: {bucket: b, region: r, chunkSize: 1MiB}}\n", []string{"storage.blobs.s3.chunkSize", "5MiB"}},
		{"s3 without driver", "storage:\n  blobs: {s3: {bucket: b}}\n", []string{"storage.blobs.s3", "driver: s3"}},
		{"unknown s3 key", "storage:\n  blobs: {driver: s3, s3: {bucket: b, region: r, endpoint: x}}\n", []string{`unknown key "endpoint" (the keys here: `, "regionEndpoint"}},
		{"redirect endpoint without redirect", "storage:\n  blobs: {driver: s3, s3: {bucket: b, region: r, redirectEndpoint: https://s3.example.com}}\n", []string{"storage.blobs.s3.redirectEndpoint", "redirect is false"}},
		{"bad redirect endpoint", "storage:\n  blobs: {driver: s3, s3: {bucket: b, region: r, redirect: true, redirectEndpoint: s3.example.com}}\n", []string{"storage.blobs.s3.redirectEndpoint", "http:// or https://"}},
		{"replica without s3", "storage:\n  blobs: {replica: {id: a}}\n", []string{"storage.blobs.replica", "driver: s3"}},
		{"bad replica id", "storage:\n  blobs: {driver: s3, s3: {bucket: b, region: r}, replica: {id: eu/1}}\n", []string{"storage.blobs.replica.id", `"eu/1"`}},
		{"budget on a replica that does not evict", "storage:\n  maxSize: 10GiB\n  maxAge: 720h\n  blobs: {driver: s3, s3: {bucket: b, region: r}, replica: {evict: false}}\n",
			[]string{"storage.maxSize: set on a replica that does not evict", "storage.maxAge: set on a replica"}},
		{"prefetch on a replica that does not evict", "storage:\n  blobs: {driver: s3, s3: {bucket: b, region: r}, replica: {evict: false}}\nprefetch:\n  images: [{ref: docker.io/library/alpine:3}]\n",
			[]string{"prefetch.images: set on a replica that does not evict"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := Load(strings.NewReader(tt.in))
			if err == nil {
				t.Fatalf("Load() error = nil, want %v", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Load() error = %v, want it to contain %q", err, w)
				}
			}
		})
	}
}

func TestReplica(t *testing.T) {
	t.Parallel()
	c, err := Load(strings.NewReader("storage:\n  maxSize: 10GiB\n  blobs: {driver: s3, s3: {bucket: b, region: r}, replica: {id: eu-1.a}}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if id, err := c.Storage.Blobs.ReplicaID(); id != "eu-1.a" || err != nil {
		t.Errorf("ReplicaID() = %q, %v; want eu-1.a", id, err)
	}
	if !c.Storage.Blobs.Replica.Evicts() {
		t.Error("a replica evicts unless told not to")
	}
	c, err = Load(strings.NewReader("storage:\n  blobs: {driver: s3, s3: {bucket: b, region: r}, replica: {evict: false}}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Storage.Blobs.Replica.Evicts() {
		t.Error("evict: false still evicts")
	}
	// Without an id, the host name.
	host, err := os.Hostname()
	if err != nil {
		t.Skip(err)
	}
	if id, err := c.Storage.Blobs.ReplicaID(); err != nil || id == "" || (validReplicaID(host) && id != host) {
		t.Errorf("ReplicaID() = %q, %v; want the host name %q", id, err, host)
	}
}

func TestS3NeverPrintsSecretKey(t *testing.T) {
	t.Parallel()
	c, err := Load(strings.NewReader(s3Config))
	if err != nil {
		t.Fatal(err)
	}
	s := c.Storage.Blobs.S3
	var jsonLog, textLog bytes.Buffer
	slog.New(slog.NewJSONHandler(&jsonLog, nil)).Info("config", "config", c, "s3", s)
	slog.New(slog.NewTextHandler(&textLog, nil)).Info("config", "config", c, "s3", s, "s3p", &s)
	yamlCfg, err := yaml.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	jsonCfg, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	outputs := map[string]string{
		"slog json": jsonLog.String(),
		"slog text": textLog.String(),
		"yaml":      string(yamlCfg),
		"json":      string(jsonCfg),
	}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%d"} {
		for name, v := range map[string]any{"config": c, "storage": c.Storage, "s3": s, "*s3": &s} {
			outputs[verb+" "+name] = fmt.Sprintf(verb, v)
		}
	}
	for name, out := range outputs {
		if strings.Contains(out, testS3Secret) || strings.Contains(strings.ToLower(out), hex.EncodeToString([]byte(testS3Secret))) {
			t.Errorf("%s output reveals the secret key:\n%s", name, out)
		}
		if !strings.Contains(out, redacted) {
			t.Errorf("%s output = %s, want it to contain %s", name, out, redacted)
		}
		if !strings.Contains(out, "edge") {
			t.Errorf("%s output = %s, want the other fields (bucket) kept", name, out)
		}
	}
}

// A URL that holds credentials is refused, and the refusal (shown by
// check-config and logged by serve) never repeats them, not even the
// pieces url.Parse quotes in its own errors (a password with a '/' is read
// as a port).
func TestEndpointCredentialsNeverEchoed(t *testing.T) {
	t.Parallel()
	tests := []struct{ name, in, field string }{
		{"regionEndpoint https", "storage:\n  blobs: {driver: s3, s3: {bucket: b, region: r, regionEndpoint: 'https://admin:SecretS3Key@minio:9000'}}\n", "storage.blobs.s3.regionEndpoint"},
		{"regionEndpoint other scheme", "storage:\n  blobs: {driver: s3, s3: {bucket: b, region: r, regionEndpoint: 'minio://admin:SecretS3Key@minio:9000'}}\n", "storage.blobs.s3.regionEndpoint"},
		{"regionEndpoint unparsable", "storage:\n  blobs: {driver: s3, s3: {bucket: b, region: r, regionEndpoint: 'https://admin:Sec/retS3Key@minio:9000'}}\n", "storage.blobs.s3.regionEndpoint"},
		{"redirectEndpoint", "storage:\n  blobs: {driver: s3, s3: {bucket: b, region: r, redirect: true, redirectEndpoint: 'https://admin:SecretS3Key@s3.example.com'}}\n", "storage.blobs.s3.redirectEndpoint"},
		{"upstream url unparsable", "upstreams:\n  - {registry: r.example, url: 'https://bot:Sec/retS3Key@r.example'}\n", "upstreams[0].url"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := Load(strings.NewReader(tt.in))
			if err == nil {
				t.Fatal("Load() error = nil, want the URL refused")
			}
			if !strings.Contains(err.Error(), tt.field) || !strings.Contains(err.Error(), "credentials") {
				t.Errorf("Load() error = %v, want %s refused for its credentials", err, tt.field)
			}
			for _, piece := range []string{"Sec", "S3Key"} {
				if strings.Contains(err.Error(), piece) {
					t.Errorf("Load() error = %v: it shows a piece of the secret (%q)", err, piece)
				}
			}
		})
	}
}
