// Package s3test runs a real S3 server, versitygw with its posix backend over
// a temporary directory, on a loopback port for integration tests.
//
// The binary is found in $REGISTRY_EDGE_TEST_VERSITYGW, then on PATH, then
// under $REGISTRY_EDGE_TOOLS/versitygw-*/versitygw and
// $HOME/.cache/registry-edge/tools/versitygw-*/versitygw (as .ci/test
// builds it). A test that cannot find it is skipped, unless
// REGISTRY_EDGE_REQUIRE_TOOLS=1, in which case it fails.
package s3test

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go/aws"
	"github.com/aws/aws-sdk-go/aws/credentials"
	"github.com/aws/aws-sdk-go/aws/session"
	"github.com/aws/aws-sdk-go/service/s3"

	"github.com/registry-edge/registry-edge/internal/testutil/syncbuf"
)

const (
	// Bucket is the bucket Start creates.
	Bucket = "registry-edge-test"
	// Region is the region versitygw serves (its default).
	Region    = "us-east-1"
	accessKey = "registryedgetest"
	secretKey = "registry-edge-test-secret"
)

// Server is a running versitygw.
type Server struct {
	Endpoint  string // http://127.0.0.1:<port>
	Bucket    string
	AccessKey string
	SecretKey string
	// Dir is the posix backend's root; the bucket is the directory Dir/Bucket.
	Dir string

	t    testing.TB
	bin  string
	addr string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	out  *syncbuf.Buffer
}

// Start starts versitygw with a fresh bucket and returns its endpoint, the
// bucket and the root credentials. It is stopped in t.Cleanup.
func Start(t testing.TB) (endpoint, bucket, accessKey, secretKey string) {
	s := StartServer(t)
	return s.Endpoint, s.Bucket, s.AccessKey, s.SecretKey
}

// StartServer is Start returning the Server, for tests that kill and
// restart it.
func StartServer(t testing.TB) *Server {
	t.Helper()
	bin := findBinary(t)
	s := &Server{Bucket: Bucket, AccessKey: accessKey, SecretKey: secretKey, Dir: t.TempDir(), t: t, bin: bin}
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		s.addr, err = freeAddr()
		if err != nil {
			t.Fatal(err)
		}
		s.Endpoint = "http://" + s.addr
		if err = s.start(); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("s3test: starting versitygw: %v", err)
	}
	t.Cleanup(s.Kill)
	if err := s.createBucket(); err != nil {
		t.Fatalf("s3test: create bucket: %v\nversitygw log:\n%s", err, s.Log())
	}
	return s
}

func findBinary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("REGISTRY_EDGE_TEST_VERSITYGW"); p != "" {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("s3test: REGISTRY_EDGE_TEST_VERSITYGW=%s: %v", p, err)
		}
		return p
	}
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p
	}
	var dirs []string
	if d := os.Getenv("REGISTRY_EDGE_TOOLS"); d != "" {
		dirs = append(dirs, d)
	}
	if home, err := os.UserHomeDir(); err == nil {
		dirs = append(dirs, filepath.Join(home, ".cache", "registry-edge", "tools"))
	}
	for _, dir := range dirs {
		matches, _ := filepath.Glob(filepath.Join(dir, "versitygw-*", "versitygw"))
		sort.Strings(matches)
		for i := len(matches) - 1; i >= 0; i-- { // the highest version first
			if fi, err := os.Stat(matches[i]); err == nil && fi.Mode()&0o111 != 0 {
				return matches[i]
			}
		}
	}
	if os.Getenv("REGISTRY_EDGE_REQUIRE_TOOLS") == "1" {
		t.Fatal("s3test: versitygw not found (REGISTRY_EDGE_TEST_VERSITYGW, PATH, $REGISTRY_EDGE_TOOLS or ~/.cache/registry-edge/tools/versitygw-*/) and REGISTRY_EDGE_REQUIRE_TOOLS=1")
	}
	t.Skip("s3test: versitygw not found; set REGISTRY_EDGE_TEST_VERSITYGW or run ./.ci/test --tools-only")
	return ""
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// start runs versitygw on s.addr over s.Dir and waits until it answers.
func (s *Server) start() error {
	out := &syncbuf.Buffer{}
	cmd := exec.Command(s.bin,
		"--port", s.addr,
		"--access", s.AccessKey,
		"--secret", s.SecretKey,
		"--region", Region,
		"--quiet",
		"posix", s.Dir)
	cmd.Stdout = out
	cmd.Stderr = cmd.Stdout
	// Keep the environment from configuring the gateway behind our back.
	cmd.Env = []string{"HOME=" + s.Dir, "PATH=" + os.Getenv("PATH")}
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	s.mu.Lock()
	s.cmd, s.done, s.out = cmd, done, out
	s.mu.Unlock()

	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-done:
			return fmt.Errorf("versitygw exited: %s", s.Log())
		default:
		}
		// Any HTTP answer (403 without credentials) means it serves.
		if resp, err := client.Get(s.Endpoint + "/"); err == nil {
			resp.Body.Close()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.Kill()
	return fmt.Errorf("versitygw did not answer on %s within 15s: %s", s.addr, s.Log())
}

// Kill kills the server process (SIGKILL, no shutdown) and waits for it to
// exit. It is safe to call more than once.
func (s *Server) Kill() {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-done
}

// Restart starts the server again on the same address and directory, after
// Kill.
func (s *Server) Restart() {
	s.t.Helper()
	s.Kill()
	var err error
	for attempt := 0; attempt < 20; attempt++ {
		if err = s.start(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond) // the port may linger briefly
	}
	s.t.Fatalf("s3test: restarting versitygw: %v", err)
}

// Log returns what the server printed so far.
func (s *Server) Log() string {
	s.mu.Lock()
	out := s.out
	s.mu.Unlock()
	if out == nil {
		return ""
	}
	return out.String()
}

// Client returns an S3 client for the server (path-style, root credentials).
// It has its own http.Client: given none, the SDK uses http.DefaultClient
// and, when AWS_CA_BUNDLE is set, replaces that shared client's Transport,
// a data race between tests that create clients in parallel.
func (s *Server) Client() *s3.S3 {
	sess := session.Must(session.NewSession(&aws.Config{
		HTTPClient:       &http.Client{},
		Endpoint:         aws.String(s.Endpoint),
		Region:           aws.String(Region),
		S3ForcePathStyle: aws.Bool(true),
		DisableSSL:       aws.Bool(true),
		Credentials:      credentials.NewStaticCredentials(s.AccessKey, s.SecretKey, ""),
		MaxRetries:       aws.Int(0),
	}))
	return s3.New(sess)
}

// PendingUploads returns the keys of the bucket's incomplete multipart
// uploads under prefix ("" for all), sorted: uploads started and neither
// completed nor aborted, whose parts the server keeps.
func (s *Server) PendingUploads(prefix string) ([]string, error) {
	var keys []string
	err := s.Client().ListMultipartUploadsPages(&s3.ListMultipartUploadsInput{
		Bucket: aws.String(s.Bucket),
		Prefix: aws.String(prefix),
	}, func(page *s3.ListMultipartUploadsOutput, _ bool) bool {
		for _, u := range page.Uploads {
			keys = append(keys, aws.StringValue(u.Key))
		}
		return true
	})
	if err != nil {
		return nil, fmt.Errorf("s3test: list multipart uploads: %w", err)
	}
	sort.Strings(keys)
	return keys, nil
}

func (s *Server) createBucket() error {
	_, err := s.Client().CreateBucket(&s3.CreateBucketInput{Bucket: aws.String(s.Bucket)})
	return err
}

// DriverParameters returns parameters for distribution's s3 storage driver
// (factory name "s3aws") pointed at the server.
func (s *Server) DriverParameters(rootDirectory string, chunkSize int) map[string]any {
	return map[string]any{
		"accesskey":      s.AccessKey,
		"secretkey":      s.SecretKey,
		"region":         Region,
		"regionendpoint": s.Endpoint,
		"bucket":         s.Bucket,
		"forcepathstyle": true,
		"secure":         false,
		"v4auth":         true,
		"chunksize":      strconv.Itoa(chunkSize),
		"rootdirectory":  rootDirectory,
		"loglevel":       "off",
	}
}
