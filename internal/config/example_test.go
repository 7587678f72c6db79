package config

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.yaml.in/yaml/v3"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

const (
	examplePath       = "../../config/registry-edge.example.yaml"
	docsPath          = "../../docs/config.md"
	defaultGoldenPath = "testdata/default.golden"
)

// render encodes c as YAML the way a human would write it.
func render(c Config) (string, error) {
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(c); err != nil {
		return "", err
	}
	if err := enc.Close(); err != nil {
		return "", err
	}
	return buf.String(), nil
}

// TestExample keeps config/registry-edge.example.yaml loadable and equal to
// Default except for its documented difference: a second upstream, ghcr.io,
// with passwordFile auth and a longer maxRetryAfter.
func TestExample(t *testing.T) {
	t.Parallel()
	got, err := LoadFile(examplePath)
	if err != nil {
		t.Fatalf("LoadFile(example) error = %v", err)
	}
	want := Default()
	ghcr := newUpstream("ghcr.io", "https://ghcr.io")
	ghcr.Auth = Auth{Username: "mirror-bot", PasswordFile: "/run/secrets/ghcr-token"}
	ghcr.Retry.MaxRetryAfter = Duration(30 * time.Second)
	want.Upstreams = append(want.Upstreams, ghcr)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("example differs from Default() beyond the ghcr.io upstream (-want +got):\n%s", diff)
	}

	// Round trip: rendering the loaded example and loading it again is lossless.
	out, err := render(got)
	if err != nil {
		t.Fatalf("render(example) error = %v", err)
	}
	again, err := Load(strings.NewReader(out))
	if err != nil {
		t.Fatalf("Load(render(example)) error = %v\n%s", err, out)
	}
	if diff := cmp.Diff(got, again); diff != "" {
		t.Errorf("example round trip mismatch (-loaded +reloaded):\n%s", diff)
	}
}

// TestDefaultGolden pins the rendering of Default(); run with -update after
// an intended change, and update the example and docs/config.md with it.
func TestDefaultGolden(t *testing.T) {
	t.Parallel()
	got, err := render(Default())
	if err != nil {
		t.Fatal(err)
	}
	if *update {
		if err := os.WriteFile(defaultGoldenPath, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(defaultGoldenPath)
	if err != nil {
		t.Fatalf("read golden (run go test -update): %v", err)
	}
	if diff := cmp.Diff(string(want), got); diff != "" {
		t.Errorf("render(Default()) mismatch (-golden +got), run go test -update if intended:\n%s", diff)
	}
	c, err := Load(strings.NewReader(got))
	if err != nil {
		t.Fatalf("Load(golden) error = %v", err)
	}
	if diff := cmp.Diff(Default(), c); diff != "" {
		t.Errorf("Load(render(Default())) mismatch (-want +got):\n%s", diff)
	}
}

// keyPaths lists every YAML key path of t: "storage.root",
// "upstreams[].auth.passwordFile", ... Untagged fields count under the
// name yaml.v3 gives them, inline ones under their parent, and the values
// of a map of structs under "map.*.".
func keyPaths(t reflect.Type, prefix string) []string {
	var out []string
	for i := range t.NumField() {
		f := t.Field(i)
		name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		ft := f.Type
		if ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		if slices.Contains(strings.Split(opts, ","), "inline") {
			out = append(out, keyPaths(ft, prefix)...) // its keys are this struct's
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name) // what yaml.v3 reads an untagged field as
		}
		p := prefix + name
		switch {
		case ft.Kind() == reflect.Struct:
			out = append(out, keyPaths(ft, p+".")...)
		case (ft.Kind() == reflect.Slice || ft.Kind() == reflect.Map) && ft.Elem().Kind() == reflect.Struct:
			sub := "[]."
			if ft.Kind() == reflect.Map {
				sub = ".*."
			}
			out = append(out, keyPaths(ft.Elem(), p+sub)...)
		default:
			out = append(out, p)
		}
	}
	return out
}

// TestEveryKeyIsDocumented fails when a field is added without showing it in
// the example (as a key or a commented-out key) and in docs/config.md.
func TestEveryKeyIsDocumented(t *testing.T) {
	t.Parallel()
	example, err := os.ReadFile(examplePath)
	if err != nil {
		t.Fatal(err)
	}
	docs, err := os.ReadFile(docsPath)
	if err != nil {
		t.Fatal(err)
	}
	paths := keyPaths(reflect.TypeFor[Config](), "")
	if len(paths) < 25 {
		t.Fatalf("keyPaths(Config) = %d paths, want at least 25: %v", len(paths), paths)
	}
	for _, p := range paths {
		leaf := p[strings.LastIndexAny(p, ".]")+1:]
		if !hasKeyLine(example, leaf) {
			t.Errorf("%s: key %q does not appear in %s", p, leaf, examplePath)
		}
		if !bytes.Contains(docs, []byte("`"+p+"`")) {
			t.Errorf("%s: not documented in %s (want `%s`)", p, docsPath, p)
		}
	}
	// And the other way: every key a reference table documents exists
	// (a renamed or removed field leaves its row behind).
	rows := docsKeyRow.FindAllSubmatch(docs, -1)
	if len(rows) < len(paths) {
		t.Fatalf("%s: %d key rows found, want at least %d", docsPath, len(rows), len(paths))
	}
	for _, m := range rows {
		if p := string(m[1]); !slices.Contains(paths, p) {
			t.Errorf("%s documents `%s`, which is no key of Config", docsPath, p)
		}
	}
}

// docsKeyRow is the first cell of a row of a key table in docs/config.md:
// "| `upstreams[].retry.max` |".
var docsKeyRow = regexp.MustCompile("(?m)^\\| `([a-zA-Z][a-zA-Z0-9.\\[\\]]*)` \\|")

// hasKeyLine reports whether some line of yamlText, once leading spaces,
// comment marks and list dashes are removed, starts with "key:".
func hasKeyLine(yamlText []byte, key string) bool {
	for line := range strings.Lines(string(yamlText)) {
		if strings.HasPrefix(strings.TrimLeft(line, " #-"), key+":") {
			return true
		}
	}
	return false
}

// TestDocsYAMLBlocksLoad keeps the YAML snippets of the docs valid: every
// ```yaml block of README.md and docs/ (docs/deploy/ too) is a whole
// configuration that Load accepts, apart from key files it names on a
// site's disk (/etc/registry-edge/cosign.pub), which are the admin's. A
// snippet that is only part of a configuration says so in its fence,
// ```yaml fragment, and must still be YAML.
func TestDocsYAMLBlocksLoad(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob("../../docs/*.md")
	if err != nil {
		t.Fatal(err)
	}
	more, err := filepath.Glob("../../docs/deploy/*.md")
	if err != nil {
		t.Fatal(err)
	}
	files = append(append(files, more...), "../../README.md")
	blocks := map[string]int{}
	for _, name := range files {
		docs, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		rest := string(docs)
		for {
			_, after, ok := strings.Cut(rest, "\n```yaml") // a fence opens a line
			if !ok {
				break
			}
			info, after, _ := strings.Cut(after, "\n")
			block, tail, _ := strings.Cut(after, "\n```")
			rest = tail
			n++
			switch strings.TrimSpace(info) {
			case "fragment":
				var v any
				if err := yaml.Unmarshal([]byte(block), &v); err != nil {
					t.Errorf("%s: yaml fragment %d: %v\n%s", name, n, err, block)
				}
			case "":
				if _, err := Load(strings.NewReader(block)); err != nil && !onlyUnreadableKeyFiles(err) {
					t.Errorf("%s: yaml block %d: Load() error = %v\n%s", name, n, err, block)
				}
			default:
				t.Errorf("%s: yaml block %d: fence ```yaml%s, want ```yaml or ```yaml fragment", name, n, info)
			}
		}
		blocks[filepath.Base(name)] += n
	}
	if blocks["config.md"] == 0 {
		t.Errorf("no yaml blocks found in %s", docsPath)
	}
}

// onlyUnreadableKeyFiles reports whether every error joined in err is a
// signature key file that cannot be read here.
func onlyUnreadableKeyFiles(err error) bool {
	j, ok := err.(interface{ Unwrap() []error })
	if !ok {
		return false
	}
	for _, e := range j.Unwrap() {
		var fe *FieldError
		if !errors.As(e, &fe) || !strings.HasPrefix(fe.Path, "signatures.rules[") ||
			!strings.HasPrefix(fe.Msg, "neither PEM nor a readable file") {
			return false
		}
	}
	return true
}
