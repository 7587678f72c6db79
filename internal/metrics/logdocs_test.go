package metrics

import (
	"go/scanner"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// The log messages docs/operations.md tells admins to look for (and alert
// on). Each must be on that page and begin a string literal of the code
// outside tests, so that renaming a message fails here rather than
// silencing someone's alert.
var operationsLogMessages = []string{
	"the store's disk is full",
	"upstream answers",
	"upstream does not answer at start",
	"upstream accepts the mirror's credentials",
	"upstream refuses the mirror's credentials",
	"upstream does not ask for credentials on /v2/",
	"upstream asks for credentials and none are configured",
	"upstream token server over plain HTTP on another host",
	"upstream token server does not take the identity token",
	"upstream unreachable, circuit breaker open",
	"upstream reachable again, circuit breaker closed",
	"serving stale tag",
	"cached tag beyond max staleness",
	"serving cached tag list",
	"cannot record access times",
	"replica of a shared bucket",
	"manifest denied by the signature policy",
	"manifest denied: its signatures cannot be verified",
	"signature verification failed",
	"TLS client certificate refused",
}

// sourceStrings returns the string literals of the Go files under dirs,
// tests excluded.
func sourceStrings(t *testing.T, dirs ...string) []string {
	t.Helper()
	var lits []string
	for _, dir := range dirs {
		err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return err
			}
			src, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			fset := token.NewFileSet()
			var s scanner.Scanner
			s.Init(fset.AddFile(path, -1, len(src)), src, nil, 0)
			for {
				_, tok, lit := s.Scan()
				if tok == token.EOF {
					break
				}
				if tok == token.STRING {
					if v, err := strconv.Unquote(lit); err == nil {
						lits = append(lits, v)
					}
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return lits
}

// The log messages other pages tell admins to look for.
var otherLogMessages = map[string][]string{
	"docs/config.md": {
		"store still over its budget",
		"delta setting without effect",
		"upstream token server over plain HTTP on another host",
		"upstream token server does not take the identity token",
		"TLS client certificate refused",
		"TLS client refused the mirror's certificate",
	},
	"docs/deltas.md": {
		"layer rebuilt from a delta",
		"computed a delta for a lower tier",
		"no delta worth sending",
		"no delta worth sending: none of the offered bases is held here; fetching one for the next request",
	},
}

func TestOperationsLogMessagesExist(t *testing.T) {
	lits := sourceStrings(t, "../../internal", "../../cmd")
	checkLogMessages(t, "docs/operations.md", operationsLogMessages, lits)
	for doc, msgs := range otherLogMessages {
		checkLogMessages(t, doc, msgs, lits)
	}
}

// checkLogMessages fails for each of msgs that the page docPath does not
// quote, or that begins no string literal of lits.
func checkLogMessages(t *testing.T, docPath string, msgs, lits []string) {
	t.Helper()
	doc, err := os.ReadFile("../../" + docPath)
	if err != nil {
		t.Fatal(err)
	}
	// The page wraps lines: compare with its whitespace collapsed.
	page := strings.Join(strings.Fields(string(doc)), " ")
	for _, msg := range msgs {
		if !strings.Contains(page, "`"+msg+"`") && !strings.Contains(page, `"`+msg+`"`) {
			t.Errorf("%s no longer quotes the log message %q: drop it here, or quote it there", docPath, msg)
		}
		found := false
		for _, l := range lits {
			if strings.HasPrefix(l, msg) {
				found = true
				break
			}
		}
		if !found {
			t.Errorf("%s quotes the log message %q, which no code logs", docPath, msg)
		}
	}
}
